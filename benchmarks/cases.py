"""Benchmark cases, each built for gradlab and (when installed) PyTorch from the same data."""
from __future__ import annotations

import functools

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
# The CLI's default model (`gradlab train`: 64 digits features, hidden 128,64, BatchNorm1d
# after each hidden Linear, batch 32): timed by `benchmarks/isolated.py --compiled cli`.
BATCHNORM_SHAPES = {
    "cli": ((64, 128, 64, 10), 32),
}


def shape_of(name):
    """(sizes, batch, batchnorm) of a named shape of MLP_SHAPES or BATCHNORM_SHAPES."""
    if name in BATCHNORM_SHAPES:
        return (*BATCHNORM_SHAPES[name], True)
    return (*MLP_SHAPES[name], False)


def mlp_data(sizes, batch, seed=0):
    rng = np.random.default_rng(seed)
    weights = [(rng.standard_normal((o, i)) / np.sqrt(i)).astype(np.float32)
               for i, o in zip(sizes[:-1], sizes[1:])]
    biases = [np.zeros(o, np.float32) for o in sizes[1:]]
    x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], batch)
    return weights, biases, x, y


# -- the references each case's result is checked against once, before it is timed -----------
def _close(what, got, want, rtol=2e-4, atol=1e-6):
    """A benchmark that times a wrong result is not worth its number: stop with the case."""
    got = np.asarray(got, dtype=np.float64)
    if got.shape != np.shape(want) or not np.allclose(got, want, rtol=rtol, atol=atol):
        err = np.max(np.abs(got - want)) if got.shape == np.shape(want) else "shape"
        raise AssertionError(f"benchmark case {what}: result differs from the reference "
                             f"(max abs error {err})")


def _host(t):
    return t.detach().cpu().numpy()


def mlp_reference(weights, biases, x, y):
    """Mean cross-entropy of the ReLU MLP and its parameter gradients [dW1, db1, ...], by
    hand in float64."""
    hs, h = [], x.astype(np.float64)
    for k, (w, b) in enumerate(zip(weights, biases)):
        hs.append(h)
        h = h @ w.T.astype(np.float64) + b
        if k < len(weights) - 1:
            h = np.maximum(h, 0)
    z = h - h.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    n = len(y)
    loss = -np.log(p[np.arange(n), y]).mean()
    d = p
    d[np.arange(n), y] -= 1
    d /= n
    grads = []
    for k in range(len(weights) - 1, -1, -1):
        grads[:0] = [d.T @ hs[k], d.sum(0)]
        if k:
            d = (d @ weights[k].astype(np.float64)) * (hs[k] > 0)
    return loss, grads


def _gl_cross_entropy(logits, y_onehot, y):
    nn = getattr(gl, "nn", None)
    if nn is not None and hasattr(nn, "functional") and hasattr(nn.functional, "cross_entropy"):
        return nn.functional.cross_entropy(logits, y)
    return -(logits.log_softmax(1) * y_onehot).sum() * (1.0 / logits.shape[0])


def mlp_forward_backward(sizes, batch, check=False):
    """Forward + backward of a ReLU MLP with cross-entropy (no optimizer step). ``check``:
    first compare one pass's gradients with :func:`mlp_reference`."""
    weights, biases, x, y = mlp_data(sizes, batch)
    params = []
    for w, b in zip(weights, biases):
        params += [gl.tensor(w, requires_grad=True), gl.tensor(b, requires_grad=True)]
    gx, gy = gl.tensor(x), gl.tensor(y)
    onehot = gl.tensor(np.eye(sizes[-1], dtype=np.float32)[y])
    n_layers = len(weights)

    def forward_backward():
        h = gx
        for k in range(n_layers):
            h = linear(h, params[2 * k], params[2 * k + 1])
            if k < n_layers - 1:
                h = h.relu()
        _gl_cross_entropy(h, onehot, gy).backward()

    def gl_step():
        forward_backward()
        for p in params:
            p.grad = None

    if check:
        forward_backward()
        for k, (p, want) in enumerate(zip(params, mlp_reference(weights, biases, x, y)[1])):
            _close(f"mlp fwd+bwd {sizes} gradient {k}", _host(p.grad), want)
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
def build_mlp(lib, weights, biases, device="cpu", batchnorm=False):
    """The ReLU MLP of ``mlp_data``'s weights and biases (Linear, ReLU, ..., Linear) in
    ``lib`` (gradlab or torch: the same names), on ``device``; with ``batchnorm``, a
    BatchNorm1d (both libraries' defaults) between each hidden Linear and its ReLU."""
    layers = []
    for k, (w, b) in enumerate(zip(weights, biases)):
        lin = lib.nn.Linear(w.shape[1], w.shape[0])
        with lib.no_grad():
            lin.weight.copy_(lib.tensor(w))
            lin.bias.copy_(lib.tensor(b))
        layers.append(lin)
        if k < len(weights) - 1:
            if batchnorm:
                layers.append(lib.nn.BatchNorm1d(w.shape[0]))
            layers.append(lib.nn.ReLU())
    return lib.nn.Sequential(*layers).to(device)


def mlp_train_step(sizes, batch, device="cpu", check=False, compiled=False, batchnorm=False):
    """One training step: forward, backward, Adam step (ReLU MLP, cross-entropy, float32), with
    the model and the batch on ``device`` ("cpu" or "cuda") in both libraries. ``check``:
    first compare one step's loss and new weights with the reference (Adam's first step from
    zero state moves each weight by lr * g / (|g| + eps)). ``compiled``: gradlab's step is
    ``gl.train.compile_step``'s, already recorded (its two eager recording steps are run
    here, before the timing); with ``check``, its third step (the first replay) must also
    equal an eager step's, bit for bit on the CPU. ``batchnorm``: the MLP has a BatchNorm1d
    before each hidden ReLU (``check`` then compares only the compiled step with eager)."""
    weights, biases, x, y = mlp_data(sizes, batch)
    nn = gl.nn
    model = build_mlp(gl, weights, biases, device, batchnorm)
    opt = gl.optim.Adam(model.parameters(), lr=1e-3)
    gx, gy = gl.tensor(x, device=device), gl.tensor(y, device=device)
    loss_fn = nn.CrossEntropyLoss()

    def gl_step():
        opt.zero_grad()
        loss = loss_fn(model(gx), gy)
        loss.backward()
        opt.step()
        return loss

    if compiled:
        eager_step = gl_step
        gl_step = functools.partial(gl.train.compile_step(model, loss_fn, opt), gx, gy)
        if check:
            twin = build_mlp(gl, weights, biases, device, batchnorm)
            twin_opt = gl.optim.Adam(twin.parameters(), lr=1e-3)
            twin_step = gl.train.compile_step(twin, loss_fn, twin_opt)
            for _ in range(3):  # 2 recordings, then the first replay
                twin_step(gx, gy)
                opt.zero_grad()
                loss_fn(model(gx), gy).backward()
                opt.step()
            exact = device == "cpu"
            for k, (a, b) in enumerate(zip(twin.parameters(), model.parameters())):
                _close(f"compiled train step {sizes} replay, parameter {k}", _host(a),
                       _host(b).astype(np.float64), rtol=0 if exact else 1e-5,
                       atol=0 if exact else 1e-7)
            if twin_step.info()["replayed"] != 1:
                raise AssertionError(f"compiled train step {sizes}: not replayed "
                                     f"({twin_step.info()})")
            check = False  # the eager step was checked against the reference by other cases
        for _ in range(2):
            gl_step()  # the two recordings
        del eager_step

    if check and not batchnorm:  # (the reference is the plain MLP's)
        ref_loss, grads = mlp_reference(weights, biases, x, y)
        start = [p for wb in zip(weights, biases) for p in wb]
        _close(f"train step {sizes} loss", gl_step().item(), ref_loss)
        for k, (p, p0, g) in enumerate(zip(model.parameters(), start, grads)):
            # On the step, not the weight: a wrong step is a tiny change of a weight. Where
            # |g| is near float32's rounding of the sums that make it, g / |g| is noise: there
            # only the step's bound lr is checked.
            step = (_host(p).astype(np.float64) - p0).reshape(-1)
            g = g.reshape(-1)
            sure = np.abs(g) > 1e-5
            _close(f"train step {sizes} update {k}", step[sure],
                   -1e-3 * g[sure] / (np.abs(g[sure]) + 1e-8), rtol=1e-3, atol=1e-7)
            _close(f"train step {sizes} update bound {k}", np.abs(step).max() <= 1.001e-3, True)

    torch_step = None
    # (a CPU build of torch has no CUDA: the GPU benchmark's gradlab steps run without it)
    if torch is not None and (device == "cpu" or torch.cuda.is_available()):
        tmodel = build_mlp(torch, weights, biases, device, batchnorm)
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


def step_gemms(sizes, batch, seed=0):
    """A callable that runs only the GEMMs of one training step of the plain ReLU MLP, in the
    layouts gradlab's step runs them (LinearFn: x W^T forward; dW = g^T x and dx = g W
    backward), each into a fresh array as the step allocates it: the arithmetic floor of a
    compiled step on the CPU, below which no removal of Python overhead can take it."""
    weights, _, x, _ = mlp_data(sizes, batch, seed)
    rng = np.random.default_rng(seed + 1)
    acts = [x] + [rng.standard_normal((batch, w.shape[0])).astype(np.float32)
                  for w in weights]

    def gemms():
        for layer, w in enumerate(weights):
            acts[layer] @ w.T
            g = acts[layer + 1]
            g.T @ acts[layer]
            if layer > 0:
                g @ w
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


def first_step_reference(name, p, g):
    """Each optimizer's first step from zero state with OPTIMIZERS' settings (PyTorch's
    defaults otherwise), in closed form."""
    p, g = p.astype(np.float64), g.astype(np.float64)
    kw = OPTIMIZERS[name][0]
    if name == "SGD":  # the momentum buffer starts as g
        return p - kw["lr"] * g
    if name in ("Adam", "AdamW"):  # bias-corrected m = g, v = g^2
        decayed = p * (1 - kw["lr"] * kw.get("weight_decay", 0.0))
        return decayed - kw["lr"] * g / (np.abs(g) + 1e-8)
    if name == "RMSprop":  # v = (1 - alpha) g^2, alpha = 0.99
        return p - kw["lr"] * g / (np.sqrt(0.01 * g * g) + 1e-8)
    if name == "Adagrad":  # sum = g^2
        return p - kw["lr"] * g / (np.abs(g) + 1e-10)
    if name == "Adadelta":  # v = (1 - rho) g^2, no accumulated delta yet; rho 0.9, eps 1e-6
        return p - kw["lr"] * np.sqrt(1e-6) / np.sqrt(0.1 * g * g + 1e-6) * g
    raise KeyError(name)


def optimizer_step(name, total, n_tensors, seed=0, check=False):
    """``optimizer.step()`` alone on ``total`` float32 parameters in ``n_tensors`` tensors.
    ``check``: first compare one step with :func:`first_step_reference`."""
    kwargs, _ = OPTIMIZERS[name]
    rng = np.random.default_rng(seed)
    sizes = [total // n_tensors] * n_tensors
    data = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    grads = [rng.standard_normal(n).astype(np.float32) * 1e-3 for n in sizes]
    params = [gl.nn.Parameter(gl.tensor(d)) for d in data]
    for p, g in zip(params, grads):
        p.grad = gl.tensor(g)
    opt = getattr(gl.optim, name)(params, **kwargs)
    if check:
        opt.step()
        for p, d, g in zip(params, data, grads):
            # Within 0.1% of the step, plus the float32 rounding of the new weight (2 ulp).
            want = first_step_reference(name, d, g)
            slack = 1e-3 * np.abs(want - d) + 2 * np.spacing(np.abs(want).astype(np.float32))
            _close(f"{name} step", bool((np.abs(_host(p) - want) <= slack).all()), True)
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


def softmax_ce(batch, classes, seed=0, check=False):
    """Mean cross-entropy forward + backward on logits. ``check``: first compare the
    gradient with (softmax(x) - onehot(y)) / batch."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, classes)).astype(np.float32)
    y = rng.integers(0, classes, batch)
    gx = gl.tensor(x, requires_grad=True)
    gy = gl.tensor(y)
    F = gl.nn.functional

    def gl_fn():
        F.cross_entropy(gx, gy).backward()
        gx.grad = None

    if check:
        F.cross_entropy(gx, gy).backward()
        z = x.astype(np.float64) - x.max(1, keepdims=True)
        want = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        want[np.arange(batch), y] -= 1
        _close(f"softmax-CE {batch}x{classes}", _host(gx.grad), want / batch, atol=1e-9)
        gx.grad = None

    torch_fn = None
    if torch is not None:
        tx = torch.tensor(x, requires_grad=True)
        ty = torch.tensor(y)

        def torch_fn():
            torch.nn.functional.cross_entropy(tx, ty).backward()
            tx.grad = None

    return gl_fn, torch_fn, 2 * x.nbytes  # read logits, write the gradient


def dropout_fwd_bwd(n, p=0.5, seed=0, check=False):
    """Dropout forward + backward. ``check``: first hold one pass to the definition: every
    output is 0 or x / (1 - p), the gradient is the same mask, and about p of it is 0."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n).astype(np.float32)
    gx = gl.tensor(x, requires_grad=True)
    F = gl.nn.functional

    def gl_fn():
        F.dropout(gx, p, training=True).sum().backward()
        gx.grad = None

    if check:
        y = F.dropout(gx, p, training=True)
        y.sum().backward()
        mask = _host(gx.grad)
        kept = mask != 0
        _close("dropout gradient", mask[kept], np.full(kept.sum(), 1 / (1 - p)))
        _close("dropout output", _host(y), np.where(kept, x / (1 - p), 0.0))
        # binomial: 6 standard deviations of the dropped fraction
        _close("dropout rate", 1 - kept.mean(), p, rtol=0, atol=6 * np.sqrt(p * (1 - p) / n))
        gx.grad = None

    torch_fn = None
    if torch is not None:
        tx = torch.tensor(x, requires_grad=True)

        def torch_fn():
            torch.nn.functional.dropout(tx, p, training=True).sum().backward()
            tx.grad = None

    return gl_fn, torch_fn


def elementwise_chain(n=16, length=10, requires_grad=False, check=False):
    """A chain of small elementwise ops: the per-op overhead, against bare NumPy. With
    ``requires_grad`` every op also records its graph node (what training pays). ``check``:
    first compare gradlab's result with NumPy's (the same float32 ops: bitwise)."""
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

    if check:
        _close("elementwise chain", _host(gl_fn()), numpy_fn(), rtol=0, atol=0)

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
