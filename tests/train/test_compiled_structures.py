"""Random compiled steps over model and loss structures that test_compiled_random's chains do
not have: a residual branch, a layer applied twice (its gradients summed), a frozen weight,
two parameter groups, an L1/L2 penalty over the parameters inside the loss, a tuple loss, a
detached branch and a mix of tensor ops (cat, softmax weighting, std normalization, clamp,
where, maximum, pow, logsumexp, stack, ...). Each is trained compiled and eagerly from the
same seed, with a short batch every third step; they must end bit for bit equal, and on CUDA
every one must replay as CUDA graphs."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import gradlab as gl
from gradlab.nn import functional as F
from gradlab.train import compile_step
from tests.train.compiled_runs import assert_compiled_run_is_eager, end_state

OPS = {
    "cat_halves": lambda h: gl.cat([h[:, : h.shape[1] // 2] * 2, h[:, h.shape[1] // 2:]], 1),
    "softmax_weighting": lambda h: h * F.softmax(h, dim=1),
    "std_normalization": lambda h: (h - h.mean(1, keepdim=True)) /
    (h.std(1, keepdim=True) + 1e-3),
    "plus_batch_variance": lambda h: h + h.var(0, keepdim=True),
    "clamp": lambda h: gl.clamp(h, -0.5, 0.7),
    "where": lambda h: gl.where(h > 0, h, 0.1 * h),
    "signed_power": lambda h: h.abs().pow(1.5) * h.sign(),
    "sqrt": lambda h: (h * h + 1).sqrt(),
    "double_transpose": lambda h: h.t().t() * 1.0,
    "minus_logsumexp": lambda h: h - gl.logsumexp(h, dim=1, keepdim=True),
    "detached_branch": lambda h: h + 0.1 * h.detach() ** 2,
    "maximum": lambda h: gl.maximum(h, h * 0.3),
    "stack_mean": lambda h: gl.stack([h, 2 * h]).mean(0),
    "unsqueeze_squeeze": lambda h: h.unsqueeze(1).squeeze(1),
    "sin_plus_cos": lambda h: gl.sin(h) + gl.cos(h),
    "log_exp": lambda h: gl.log(gl.exp(h.clamp(-5, 5)) + 1),
}
OPTIMIZERS = {
    "sgd": lambda g: gl.optim.SGD(g, lr=0.05, momentum=0.5, nesterov=True),
    "adam": lambda g: gl.optim.Adam(g, lr=0.01),
    "rmsprop": lambda g: gl.optim.RMSprop(g, lr=0.01),
}


class _Net(gl.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        width = cfg["width"]
        self.inp = gl.nn.Linear(cfg["features"], width)
        self.hid = gl.nn.Linear(width, width)
        self.out = gl.nn.Linear(width, 3)
        self.norm = gl.nn.BatchNorm1d(width) if cfg["batchnorm"] else None
        self.ops, self.residual, self.shared = cfg["ops"], cfg["residual"], cfg["shared"]

    def forward(self, x):
        h = gl.tanh(self.inp(x))
        if self.norm is not None:
            h = self.norm(h)
        for name in self.ops:
            h = OPS[name](h)
        if self.residual:
            h = h + gl.relu(self.hid(h))
        if self.shared:  # (with the residual: self.hid runs twice, its gradients summed)
            h = gl.relu(self.hid(h))
        return self.out(h)


def _config(seed):
    r = np.random.default_rng(seed)
    return {"seed": seed, "features": int(r.integers(2, 7)), "width": int(r.integers(4, 12)),
            "ops": [str(o) for o in r.choice(sorted(OPS), int(r.integers(0, 4)))],
            "residual": bool(r.random() < 0.5), "shared": bool(r.random() < 0.5),
            "batchnorm": bool(r.random() < 0.3), "groups": bool(r.random() < 0.5),
            "freeze": bool(r.random() < 0.3), "penalty": str(r.choice(["", "l2", "l1"])),
            "optimizer": str(r.choice(sorted(OPTIMIZERS))),
            "loss": str(r.choice(["cross_entropy", "one_hot_mse", "tuple"])),
            "steps": int(r.integers(8, 14))}


def _train(cfg, compiled, device):
    gl.manual_seed(cfg["seed"])
    model = _Net(cfg).to(device)
    if cfg["freeze"]:
        model.inp.weight.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = params
    if cfg["groups"]:
        last = list(model.out.parameters())
        groups = [{"params": [p for p in params if all(p is not q for q in last)]},
                  {"params": last, "lr": 0.003}]
    opt = OPTIMIZERS[cfg["optimizer"]](groups)

    def loss_fn(out, y):
        if cfg["loss"] == "one_hot_mse":
            loss = F.mse_loss(out, F.one_hot(y, 3).float())
        else:
            loss = F.cross_entropy(out, y)
        if cfg["penalty"]:
            penalty = sum(p.pow(2).sum() if cfg["penalty"] == "l2" else p.abs().sum()
                          for p in model.parameters())
            loss = loss + 1e-3 * penalty
        return (loss, out.pow(2).mean()) if cfg["loss"] == "tuple" else loss

    def eager_step(x, y):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss = loss[0] if isinstance(loss, tuple) else loss
        loss.backward()
        opt.step()
        return loss

    step = compile_step(model, loss_fn, opt) if compiled else eager_step
    r = np.random.default_rng(cfg["seed"] + 7)
    losses = []
    for i in range(cfg["steps"]):
        n = (12, 12, 5)[i % 3]
        x = gl.tensor(r.standard_normal((n, cfg["features"])).astype(np.float32),
                      device=device)
        losses.append(step(x, gl.tensor(r.integers(0, 3, n), device=device)).item())
    return losses, end_state(model), step


@pytest.mark.parametrize("seed", range(100))
def test_a_random_structure_compiles_to_the_eager_bits(seed, device):
    cfg = _config(seed)
    with warnings.catch_warnings():
        # nothing may fall back to eager or run ungraphed (NumPy's own warnings, such as a
        # 0/0 in std's gradient, are the eager step's too)
        warnings.filterwarnings("error", message="compiled step")
        eager = _train(cfg, False, device)
        compiled = _train(cfg, True, device)
    assert_compiled_run_is_eager(eager, compiled, cfg, graphs=device == "cuda")
