"""Random compiled steps against eager ones: seeded random MLPs (every activation, batch
and layer norm, dropout), losses, optimizers, clipping, a scheduler, a short last batch and
a switch to eval, each trained compiled and eagerly from the same seed; they must end bit
for bit equal. The first two batches of each signature carry the same data, so the check
that compares two recordings cannot hide an array frozen at the first batch's values.

On CUDA (a GPU, or the emulated device) the compiled side replays as CUDA graphs from a
signature's fourth call, so the same configurations hold the capture to eager too, RReLU's
slopes and gl.randn_like's noise included (they draw from the Philox stream, which a graph
replays with fresh draws)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import gradlab as gl
from gradlab.nn import functional as F
from gradlab.train import compile_step
from tests.train.compiled_runs import assert_compiled_run_is_eager, end_state

ACTIVATIONS = ["ArcTan", "BinaryStep", "BipolarReLU", "ELU", "GELU", "ISRLU", "ISRU",
               "Identity", "LeakyReLU", "PReLU", "RReLU", "ReLU", "SELU", "SQNL", "SiLU",
               "Sigmoid", "Softplus", "Softsign", "Tanh"]
OPTIMIZERS = {
    "sgd": lambda p: gl.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3),
    "adam": lambda p: gl.optim.Adam(p, lr=1e-2, amsgrad=True, weight_decay=1e-2),
    "adamw": lambda p: gl.optim.AdamW(p, lr=1e-2),
    "rmsprop": lambda p: gl.optim.RMSprop(p, lr=1e-2, centered=True, momentum=0.3),
    "adagrad": lambda p: gl.optim.Adagrad(p, lr=0.05),
    "adadelta": lambda p: gl.optim.Adadelta(p),
    "adamax": lambda p: gl.optim.Adamax(p, lr=1e-2),
    "nadam": lambda p: gl.optim.NAdam(p, lr=1e-2),
    "radam": lambda p: gl.optim.RAdam(p, lr=1e-2),
}
CLASS_LOSSES = {  # (output, class indices) -> loss
    "cross_entropy": lambda: gl.nn.CrossEntropyLoss(label_smoothing=0.1),
    "weighted_ce": lambda: gl.nn.CrossEntropyLoss(weight=gl.tensor([0.5, 1.0, 2.0]),
                                                  ignore_index=1),
    "nll": lambda: lambda o, y: F.nll_loss(F.log_softmax(o, dim=1), y),
    "multi_margin": lambda: gl.nn.MultiMarginLoss(p=2, weight=gl.tensor([0.5, 1.0, 2.0])),
    # (the rows on the CPU, as torch.arange makes them: on CUDA, a move a replay folds)
    "picked": lambda: lambda o, y: -F.log_softmax(o, dim=1)[gl.arange(o.shape[0]), y].mean(),
    "masked": lambda: lambda o, y: (F.cross_entropy(o, y, reduction="none")
                                    * (1.0 + (o.argmax(1) != y).float())).mean(),
    "one_hot_mse": lambda: lambda o, y: F.mse_loss(o, F.one_hot(y, 3).float()),
    "hinge": lambda: lambda o, y: F.hinge_embedding_loss(o[:, 0], (y > 0).float() * 2 - 1),
}
REGRESSION_LOSSES = {  # (output, float targets) -> loss
    "mse": gl.nn.MSELoss, "l1": gl.nn.L1Loss, "huber": gl.nn.HuberLoss,
    "smooth_l1": gl.nn.SmoothL1Loss, "bce_logits": lambda: lambda o, y: (
        F.binary_cross_entropy_with_logits(o, (y > 0).float())),
    "gaussian_nll": lambda: lambda o, y: F.gaussian_nll_loss(o, y, F.softplus(o) + 0.1),
    "noisy_mse": lambda: lambda o, y: F.mse_loss(o + 0.01 * gl.randn_like(o), y),
}


def _config(seed):
    r = np.random.default_rng(seed)
    losses = sorted(CLASS_LOSSES) + sorted(REGRESSION_LOSSES)
    return {
        "seed": seed, "features": int(r.integers(1, 9)),
        "hidden": [(int(r.integers(2, 20)), str(r.choice(ACTIVATIONS)), bool(r.random() < 0.3),
                    bool(r.random() < 0.2), float(r.choice([0.0, 0.0, 0.3])))
                   for _ in range(int(r.integers(1, 4)))],
        "loss": str(r.choice(losses)), "optimizer": str(r.choice(sorted(OPTIMIZERS))),
        "dtype": str(r.choice(["float32", "float32", "float64"])),
        "rows": [[16], [16, 16, 7], [8, 3]][int(r.integers(3))],
        "schedule": bool(r.random() < 0.3), "clip": str(r.choice(["", "", "norm", "value"])),
        "steps": int(r.integers(12, 20)), "eval_after": int(r.integers(8, 30)),
    }


def _batches(cfg, device):
    r = np.random.default_rng(cfg["seed"] + 1)
    regression = cfg["loss"] in REGRESSION_LOSSES
    out, first = [], {}
    for i in range(cfg["steps"]):
        n = cfg["rows"][i % len(cfg["rows"])]
        x = r.standard_normal((n, cfg["features"])).astype(cfg["dtype"])
        y = r.standard_normal((n, 3)).astype(cfg["dtype"]) if regression else \
            r.integers(0, 3, n)
        seen = first.setdefault(n, [])
        if len(seen) == 1:  # a signature's second batch: its first one's data again
            x, y = seen[0][0].copy(), seen[0][1].copy()
        seen.append((x, y))
        out.append((gl.tensor(x, device=device), gl.tensor(y, device=device)))
    return out


def _train(cfg, compiled, device):
    gl.manual_seed(cfg["seed"])
    layers, width = [], cfg["features"]
    for size, activation, batchnorm, layernorm, dropout in cfg["hidden"]:
        layers.append(gl.nn.Linear(width, size))
        layers += [gl.nn.BatchNorm1d(size)] if batchnorm else []
        layers += [gl.nn.LayerNorm(size)] if layernorm else []
        layers.append(getattr(gl.nn, activation)())
        layers += [gl.nn.Dropout(dropout)] if dropout else []
        width = size
    model = gl.nn.Sequential(*layers, gl.nn.Linear(width, 3)).to(device)
    if cfg["dtype"] == "float64":
        model = model.double()
    opt = OPTIMIZERS[cfg["optimizer"]](model.parameters())
    loss_fn = {**CLASS_LOSSES, **REGRESSION_LOSSES}[cfg["loss"]]()
    if isinstance(loss_fn, gl.nn.Module):  # (its class weights)
        loss_fn = loss_fn.to(device)
    sched = gl.optim.lr_scheduler.StepLR(opt, 2, 0.7) if cfg["schedule"] else None
    clip = {"norm": {"clip_grad_norm": 0.5}, "value": {"clip_grad_value": 0.05}}.get(
        cfg["clip"], {})

    def eager_step(x, y):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        if clip:  # as compile_step clips: between backward and the optimizer step
            (gl.nn.utils.clip_grad_norm_ if "clip_grad_norm" in clip else
             gl.nn.utils.clip_grad_value_)(model.parameters(), *clip.values())
        opt.step()
        return loss

    step = compile_step(model, loss_fn, opt, **clip) if compiled else eager_step
    losses = []
    for i, (x, y) in enumerate(_batches(cfg, device)):
        if i == cfg["eval_after"]:
            model.eval()
        loss = step(x, y)
        losses.append(loss.item())
        if sched is not None:
            sched.step()
    return losses, end_state(model), step


@pytest.mark.parametrize("seed", range(150))
def test_a_random_compiled_step_equals_eager(seed, device):
    cfg = _config(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing here may fall back to eager or ungraph
        eager = _train(cfg, False, device)
        compiled = _train(cfg, True, device)
    assert_compiled_run_is_eager(eager, compiled, cfg, graphs=device == "cuda")
