"""Benchmark cases, each built for gradlab and (when installed) PyTorch from the same data."""
from __future__ import annotations

import numpy as np

import gradlab as gl
from gradlab.functional import linear

from .harness import torch

MLP_SHAPES = {
    "tiny": ((2, 16, 16, 3), 64),
    "small": ((64, 64, 64, 10), 64),
    "mnist": ((784, 512, 256, 10), 256),
    "wide": ((784, 1024, 1024, 10), 512),
}


def mlp_data(sizes, batch, seed=0):
    rng = np.random.default_rng(seed)
    weights = [(rng.standard_normal((o, i)) / np.sqrt(i)).astype(np.float32)
               for i, o in zip(sizes[:-1], sizes[1:])]
    biases = [np.zeros(o, np.float32) for o in sizes[1:]]
    x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], batch)
    return weights, biases, x, y


def _gl_cross_entropy(logits, y_onehot, y):
    nn = getattr(gl, "nn", None)
    if nn is not None and hasattr(nn, "functional") and hasattr(nn.functional, "cross_entropy"):
        return nn.functional.cross_entropy(logits, y)
    return -(logits.log_softmax(1) * y_onehot).sum() * (1.0 / logits.shape[0])


def mlp_forward_backward(sizes, batch):
    """Forward + backward of a ReLU MLP with cross-entropy (no optimizer step)."""
    weights, biases, x, y = mlp_data(sizes, batch)
    params = []
    for w, b in zip(weights, biases):
        params += [gl.tensor(w, requires_grad=True), gl.tensor(b, requires_grad=True)]
    gx, gy = gl.tensor(x), gl.tensor(y)
    onehot = gl.tensor(np.eye(sizes[-1], dtype=np.float32)[y])
    n_layers = len(weights)

    def gl_step():
        h = gx
        for k in range(n_layers):
            h = linear(h, params[2 * k], params[2 * k + 1])
            if k < n_layers - 1:
                h = h.relu()
        _gl_cross_entropy(h, onehot, gy).backward()
        for p in params:
            p.grad = None

    torch_step = None
    if torch is not None:
        tparams = []
        for w, b in zip(weights, biases):
            tparams += [torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True)]
        tx, ty = torch.tensor(x), torch.tensor(y)
        F = torch.nn.functional

        def torch_step():
            h = tx
            for k in range(n_layers):
                h = F.linear(h, tparams[2 * k], tparams[2 * k + 1])
                if k < n_layers - 1:
                    h = h.relu()
            F.cross_entropy(h, ty).backward()
            for p in tparams:
                p.grad = None

    return gl_step, torch_step


# -- issue 6: the full suite --------------------------------------------------------------------
def mlp_train_step(sizes, batch, device="cpu"):
    """One training step: forward, backward, Adam step (ReLU MLP, cross-entropy, float32), with
    the model and the batch on ``device`` ("cpu" or "cuda") in both libraries."""
    weights, biases, x, y = mlp_data(sizes, batch)
    nn = gl.nn

    def build_gl():
        layers = []
        for k, (w, b) in enumerate(zip(weights, biases)):
            lin = nn.Linear(w.shape[1], w.shape[0])
            with gl.no_grad():
                lin.weight.copy_(gl.tensor(w))
                lin.bias.copy_(gl.tensor(b))
            layers.append(lin)
            if k < len(weights) - 1:
                layers.append(nn.ReLU())
        return nn.Sequential(*layers)

    model = build_gl().to(device)
    opt = gl.optim.Adam(model.parameters(), lr=1e-3)
    gx, gy = gl.tensor(x, device=device), gl.tensor(y, device=device)
    loss_fn = nn.CrossEntropyLoss()

    def gl_step():
        opt.zero_grad()
        loss = loss_fn(model(gx), gy)
        loss.backward()
        opt.step()
        return loss

    torch_step = None
    if torch is not None:
        layers = []
        for k, (w, b) in enumerate(zip(weights, biases)):
            lin = torch.nn.Linear(w.shape[1], w.shape[0])
            with torch.no_grad():
                lin.weight.copy_(torch.tensor(w))
                lin.bias.copy_(torch.tensor(b))
            layers.append(lin)
            if k < len(weights) - 1:
                layers.append(torch.nn.ReLU())
        tmodel = torch.nn.Sequential(*layers).to(device)
        topt = torch.optim.Adam(tmodel.parameters(), lr=1e-3)
        tx, ty = torch.tensor(x, device=device), torch.tensor(y, device=device)
        tloss = torch.nn.CrossEntropyLoss()

        def torch_step():
            topt.zero_grad()
            tloss(tmodel(tx), ty).backward()
            topt.step()

    return gl_step, torch_step, training_flops(sizes, batch)


def _training_gemms(sizes, batch):
    """(m, k, n) of every GEMM a training step runs: per layer forward and dW, and dx for all
    but the first layer (the input needs no gradient; neither library computes it)."""
    gemms = []
    for layer, (i, o) in enumerate(zip(sizes[:-1], sizes[1:])):
        gemms += [(batch, i, o), (o, batch, i)]  # forward, dW
        if layer > 0:
            gemms.append((batch, o, i))  # dx
    return gemms


def training_flops(sizes, batch):
    return sum(2 * m * k * n for m, k, n in _training_gemms(sizes, batch))


OPTIMIZERS = {
    "SGD": (dict(lr=0.01, momentum=0.9), 12),       # bytes/param moved (fp32): p r/w, g, buf r/w
    "Adam": (dict(lr=1e-3), 28),
    "AdamW": (dict(lr=1e-3, weight_decay=0.01), 28),
    "RMSprop": (dict(lr=1e-3), 20),
    "Adagrad": (dict(lr=1e-2), 20),
    "Adadelta": (dict(lr=1.0), 28),
}


def optimizer_step(name, total, n_tensors, seed=0):
    """``optimizer.step()`` alone on ``total`` float32 parameters in ``n_tensors`` tensors."""
    kwargs, _ = OPTIMIZERS[name]
    rng = np.random.default_rng(seed)
    sizes = [total // n_tensors] * n_tensors
    data = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    grads = [rng.standard_normal(n).astype(np.float32) * 1e-3 for n in sizes]
    params = [gl.nn.Parameter(gl.tensor(d)) for d in data]
    for p, g in zip(params, grads):
        p.grad = gl.tensor(g)
    opt = getattr(gl.optim, name)(params, **kwargs)
    torch_step = None
    if torch is not None:
        tparams = [torch.tensor(d, requires_grad=True) for d in data]
        for p, g in zip(tparams, grads):
            p.grad = torch.tensor(g)
        extra = {"fused": True} if name in ("Adam", "AdamW", "SGD", "Adagrad") else \
            {"foreach": True}
        topt = getattr(torch.optim, name)(tparams, **kwargs, **extra)
        torch_step = topt.step
    return opt.step, torch_step


def softmax_ce(batch, classes, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, classes)).astype(np.float32)
    y = rng.integers(0, classes, batch)
    gx = gl.tensor(x, requires_grad=True)
    gy = gl.tensor(y)
    F = gl.nn.functional

    def gl_fn():
        F.cross_entropy(gx, gy).backward()
        gx.grad = None

    torch_fn = None
    if torch is not None:
        tx = torch.tensor(x, requires_grad=True)
        ty = torch.tensor(y)

        def torch_fn():
            torch.nn.functional.cross_entropy(tx, ty).backward()
            tx.grad = None

    return gl_fn, torch_fn, 2 * x.nbytes  # read logits, write the gradient


def dropout_fwd_bwd(n, p=0.5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n).astype(np.float32)
    gx = gl.tensor(x, requires_grad=True)
    F = gl.nn.functional

    def gl_fn():
        F.dropout(gx, p, training=True).sum().backward()
        gx.grad = None

    torch_fn = None
    if torch is not None:
        tx = torch.tensor(x, requires_grad=True)

        def torch_fn():
            torch.nn.functional.dropout(tx, p, training=True).sum().backward()
            tx.grad = None

    return gl_fn, torch_fn


def elementwise_chain(n=16, length=10, requires_grad=False):
    """A chain of small elementwise ops: the per-op overhead, against bare NumPy. With
    ``requires_grad`` every op also records its graph node (what training pays)."""
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    gx = gl.tensor(x, requires_grad=requires_grad)

    def gl_fn():
        y = gx
        for _ in range(length):
            y = y * 1.0001
        return y

    def numpy_fn():
        y = x
        for _ in range(length):
            y = y * 1.0001
        return y

    torch_fn = None
    if torch is not None:  # the same chain in torch eager, for context
        tx = torch.tensor(x, requires_grad=requires_grad)

        def torch_fn():
            y = tx
            for _ in range(length):
                y = y * 1.0001
            return y

    return gl_fn, numpy_fn, torch_fn


def gemm_roofline(m, k, n):
    """NumPy's float32 GEMM rate at one shape, in FLOP/s (what the training step can reach)."""
    import time
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    a @ b
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(5):
            a @ b
        best = min(best, (time.perf_counter() - t0) / 5)
    return 2 * m * k * n / best


def copy_bandwidth(nbytes=256 << 20):
    """Bytes per second moved by a large copy (read + write): the best of NumPy's copy (one
    thread) and, when installed, torch's (all threads), so the 2-thread kernels are held to
    what the memory system gives to every core."""
    import time
    src = np.ones(nbytes // 4, np.float32)
    dst = np.empty_like(src)
    copies = [lambda: np.copyto(dst, src)]
    if torch is not None:
        tsrc, tdst = torch.from_numpy(src), torch.from_numpy(dst)
        copies.append(lambda: tdst.copy_(tsrc))
    best = float("inf")
    for copy in copies:
        copy()
        for _ in range(5):
            t0 = time.perf_counter()
            copy()
            best = min(best, time.perf_counter() - t0)
    return 2 * nbytes / best


def training_flop_rate(sizes, batch):
    """The GEMM roofline of one training step: its FLOPs at NumPy's rate for each GEMM."""
    total_time = sum(2 * m * k * n / gemm_roofline(m, k, n)
                     for m, k, n in _training_gemms(sizes, batch))
    return training_flops(sizes, batch) / total_time
