"""Achieved bandwidth of gradlab's CUDA kernels next to a device-to-device copy and PyTorch,
and the training step of the four MLP shapes (eager, and compiled: replayed as a CUDA graph)
against torch eager, on the same GPU; and gradlab's small-GEMM kernel against cuBLAS around
the size where compiled steps stop being CUDA graphs (CupyBackend.SMALL_GEMM_MAX).

    PYTHONPATH=src python -m pytest benchmarks/test_kernels_gpu.py --benchmark-json=out.json

``make gpu-check`` (tools/gpu_check.py) runs this file and turns the JSON into
benchmarks/results/<gpu>-<date>.{json,md}. Each benchmark first checks the result of what
it times against the NumPy reference (a wrong fast kernel is no result), then times with CUDA
events after a warm-up and records in extra_info the time per call, the bytes the operation
must move and the resulting GB/s. Skipped without a real GPU (the emulated device of the
tests has no meaningful timing); the torch rows are skipped without torch+CUDA.
"""
import numpy as np
import pytest

import gradlab as gl
from benchmarks import cases
from gradlab.backend.fused.dropout import reference as dropout_ref
from gradlab.backend.fused.optim import reference as optim_ref
from gradlab.backend.fused.random import reference as random_ref
from gradlab.backend.fused.softmax_ce import reference as softmax_ce_ref

pytestmark = pytest.mark.skipif(not gl.cuda.is_available(),
                                reason=f"no CUDA device: {gl.cuda.unavailable_reason()}")

ADAM_PARAMS = 50 * (1 << 20)
ADAM_TENSORS = 128
CE_SHAPES = [(4096, 10), (512, 32000)]
DROPOUT_N = 16 * (1 << 20)
RANDN_N = 16 * (1 << 20)


def _time_ms(fn, iters=20, warmup=3):
    import cupy
    for _ in range(warmup):
        fn()
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    for _ in range(iters):
        fn()
    stop.record()
    stop.synchronize()
    return cupy.cuda.get_elapsed_time(start, stop) / iters


def _record(benchmark, fn, nbytes=None, iters=20, **info):
    """Event timing for the figure; pytest-benchmark's own rounds for its table."""
    import cupy
    ms = _time_ms(fn, iters)
    benchmark.extra_info.update(ms=ms, **info)
    if nbytes:
        benchmark.extra_info.update(bytes=nbytes, gb_per_s=nbytes / ms / 1e6)

    def synced():
        fn()
        cupy.cuda.get_current_stream().synchronize()

    benchmark.pedantic(synced, rounds=5, iterations=1, warmup_rounds=1)
    return ms


def _torch_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    return torch


def _split(total, parts):
    rng = np.random.default_rng(0)
    w = rng.random(parts) + 0.5
    sizes = np.floor(w / w.sum() * total).astype(np.int64)
    sizes[-1] += total - sizes.sum()
    return [int(s) for s in sizes]


def test_copy_bandwidth(benchmark):
    import cupy
    n = 64 * (1 << 20)
    src = cupy.arange(n, dtype=cupy.float32)
    dst = cupy.empty_like(src)
    dst[...] = src
    assert bool((dst == src).all())
    _record(benchmark, lambda: dst.__setitem__(Ellipsis, src), 2 * src.nbytes)


ADAM_KW = dict(step=10, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
               decoupled_weight_decay=False, amsgrad=False, maximize=False)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gradlab_adam(benchmark, dtype):
    import cupy
    bk = gl.backend.get_backend("cuda")
    sizes = _split(ADAM_PARAMS, ADAM_TENSORS)
    rng = np.random.default_rng(0)
    host = [[rng.standard_normal(sizes[0]).astype(dtype)] for _ in range(4)]
    host[3][0] = np.abs(host[3][0])
    dev = [[cupy.asarray(a[0])] for a in host]
    optim_ref.adam_step(*host, None, **ADAM_KW)
    bk.adam_step(*dev, None, **ADAM_KW)
    for want, got in zip(host, dev):
        np.testing.assert_array_equal(cupy.asnumpy(got[0]), want[0])
    make = lambda: [cupy.full(n, 0.5, dtype=dtype) for n in sizes]   # noqa: E731
    p, g, m, v = make(), make(), make(), make()
    itemsize = np.dtype(dtype).itemsize
    # reads p, g, m, v and writes p, m, v: 7 words per parameter (28 B in float32)
    _record(benchmark, lambda: bk.adam_step(p, g, m, v, None, **ADAM_KW),
            7 * itemsize * ADAM_PARAMS, params=ADAM_PARAMS, tensors=ADAM_TENSORS)


def test_torch_adam_fused(benchmark):
    torch = _torch_cuda()
    params = [torch.full((n,), 0.5, device="cuda", requires_grad=True)
              for n in _split(ADAM_PARAMS, ADAM_TENSORS)]
    for q in params:
        q.grad = torch.full_like(q, 0.5)
    opt = torch.optim.Adam(params, lr=1e-3, fused=True)
    _record(benchmark, opt.step, 28 * ADAM_PARAMS, params=ADAM_PARAMS, tensors=ADAM_TENSORS)


@pytest.mark.parametrize("shape", CE_SHAPES, ids=str)
def test_gradlab_softmax_ce(benchmark, shape):
    import cupy
    bk = gl.backend.get_backend("cuda")
    rng = np.random.default_rng(0)
    hx = rng.standard_normal(shape).astype(np.float32)
    hy = rng.integers(0, shape[1], size=shape[0])
    x, y = cupy.asarray(hx), cupy.asarray(hy)
    loss, grad = bk.softmax_cross_entropy(x, y, None, -100, 0.0)
    want_loss, want_grad = softmax_ce_ref.softmax_cross_entropy(hx, hy, None, -100, 0.0)
    np.testing.assert_allclose(cupy.asnumpy(loss), want_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cupy.asnumpy(grad), want_grad, rtol=1e-5, atol=1e-6)
    # reads the logits, writes the gradient (targets and row losses are negligible)
    _record(benchmark, lambda: bk.softmax_cross_entropy(x, y, None, -100, 0.0), 2 * x.nbytes)


@pytest.mark.parametrize("shape", CE_SHAPES, ids=str)
def test_torch_cross_entropy(benchmark, shape):
    torch = _torch_cuda()
    x = torch.randn(shape, device="cuda", requires_grad=True)
    y = torch.randint(0, shape[1], (shape[0],), device="cuda")

    def step():
        x.grad = None
        torch.nn.functional.cross_entropy(x, y).backward()

    _record(benchmark, step, 2 * x.numel() * 4)


def test_gradlab_dropout(benchmark):
    import cupy
    bk = gl.backend.get_backend("cuda")
    hx = np.random.default_rng(0).standard_normal(DROPOUT_N).astype(np.float32)
    x = cupy.asarray(hx)
    y, mask = bk.dropout_forward(x, 0.5, 1, 0)
    want_y, want_mask = dropout_ref.dropout_forward(hx, 0.5, 1, 0)
    np.testing.assert_array_equal(cupy.asnumpy(mask), want_mask)
    np.testing.assert_array_equal(cupy.asnumpy(y), want_y)

    def step():
        y, mask = bk.dropout_forward(x, 0.5, 1, 0)
        bk.dropout_backward(y, mask, 0.5)

    # forward: read x, write y and the 1-bit mask; backward: read grad and mask, write out
    _record(benchmark, step, DROPOUT_N * (4 + 4 + 4 + 4) + 2 * DROPOUT_N // 8)


def test_torch_dropout(benchmark):
    torch = _torch_cuda()
    x = torch.ones(DROPOUT_N, device="cuda", requires_grad=True)

    def step():
        x.grad = None
        torch.nn.functional.dropout(x, 0.5, training=True).backward(x.detach())

    # torch keeps a byte mask: forward writes it, backward reads it
    _record(benchmark, step, DROPOUT_N * (4 + 4 + 4 + 4) + 2 * DROPOUT_N)


def test_gradlab_randn(benchmark):
    # kernels/random.cu's normal draws (gl.randn on a GPU): the first 4096 against the
    # reference (log, cos and sin round differently on the device: a few ulp), then timed
    from gradlab.backend.fused.random import cuda as random_cuda
    bk = gl.backend.get_backend("cuda")
    z = random_cuda.normal(bk, (RANDN_N,), np.float32, 3, 0)
    want = random_ref.normal((4096,), np.float32, 3, 0)
    np.testing.assert_allclose(bk.to_numpy(z[:4096]), want, rtol=1e-5, atol=1e-5)
    _record(benchmark, lambda: random_cuda.normal(bk, (RANDN_N,), np.float32, 3, 0),
            RANDN_N * 4)


def test_torch_randn(benchmark):
    torch = _torch_cuda()
    _record(benchmark, lambda: torch.randn(RANDN_N, device="cuda"), RANDN_N * 4)


# (m, k, n) around CupyBackend.SMALL_GEMM_MAX (2^22 multiply-adds) and SMALL_GEMM_K_MAX
# (1024 terms a sum): where gradlab's own GEMM kernel, the one a CUDA graph can hold, stops
# keeping up with cuBLAS. (10, 4096, 64): a classifier's weight gradient at batch 4096.
GEMM_SHAPES = [(64, 64, 64), (256, 64, 64), (128, 128, 128), (256, 128, 128), (256, 256, 64),
               (256, 256, 256), (512, 512, 512), (64, 1024, 64), (10, 4096, 64)]


def _gemm_operands(mkn):
    import cupy
    m, k, n = mkn
    rng = np.random.default_rng(0)
    ha = rng.standard_normal((m, k)).astype(np.float32)
    hw = rng.standard_normal((n, k)).astype(np.float32)
    return ha, hw, cupy.asarray(ha), cupy.asarray(hw).T  # x and W^T, as a Linear multiplies


@pytest.mark.parametrize("mkn", GEMM_SHAPES, ids=str)
def test_gradlab_gemm(benchmark, mkn, monkeypatch):
    import cupy
    bk = gl.backend.get_backend("cuda")
    monkeypatch.setattr(type(bk), "SMALL_GEMM_MAX", 1 << 62)  # the kernel at every size
    monkeypatch.setattr(type(bk), "SMALL_GEMM_K_MAX", 1 << 62)
    ha, hw, a, b = _gemm_operands(mkn)
    np.testing.assert_allclose(cupy.asnumpy(bk.matrix_product(a, b)), ha @ hw.T, rtol=1e-4,
                               atol=1e-4 * mkn[1] ** 0.5)
    _record(benchmark, lambda: bk.matrix_product(a, b), iters=50, flops=2 * np.prod(mkn))


@pytest.mark.parametrize("mkn", GEMM_SHAPES, ids=str)
def test_cublas_gemm(benchmark, mkn):
    _, _, a, b = _gemm_operands(mkn)
    _record(benchmark, lambda: a.dot(b), iters=50, flops=2 * np.prod(mkn))


@pytest.mark.parametrize("shape", list(cases.MLP_SHAPES))
def test_gradlab_train_step(benchmark, shape):
    sizes, batch = cases.MLP_SHAPES[shape]
    gl_step, _, flops = cases.mlp_train_step(sizes, batch, device="cuda")
    model_loss = _train_loss_drops(gl_step)
    _record(benchmark, gl_step, iters=50, shape="-".join(map(str, sizes)), batch=batch,
            flops=flops, loss_first_last=model_loss)


def compiled_mlp_train_step(sizes, batch, device="cuda", steps=6):
    """The train step of ``cases.mlp_train_step`` (ReLU MLP, cross-entropy, Adam lr=1e-3, the
    same weights and batch) as ``gl.train.compile_step``, which on CUDA replays it as one CUDA
    graph launch from its fourth call on. Checked once before it is timed: the eager step
    loss against the float64 reference, then ``steps`` compiled steps against as many eager
    steps (whose first update ``cases.mlp_train_step(check=True)`` holds to the reference in
    the eager benchmark), and at least three of them must have been graph launches. Returns
    (step, info after the check)."""
    weights, biases, x, y = cases.mlp_data(sizes, batch)
    ref_loss, _ = cases.mlp_reference(weights, biases, x, y)
    gx, gy = gl.tensor(x, device=device), gl.tensor(y, device=device)

    def build():
        model = cases.build_mlp(gl, weights, biases, device)
        return model, gl.optim.Adam(model.parameters(), lr=1e-3)

    loss_fn = gl.nn.CrossEntropyLoss()
    eager, eager_opt = build()
    for k in range(steps):
        eager_opt.zero_grad()
        loss = loss_fn(eager(gx), gy)
        if k == 0:
            cases._close(f"train step {sizes} loss", loss.item(), ref_loss)
        loss.backward()
        eager_opt.step()
    model, opt = build()
    step = gl.train.compile_step(model, loss_fn, opt)
    for _ in range(steps):
        step(gx, gy)
    info = step.info()
    # Each layer's three products have batch * in * out multiply-adds and sum over in, out
    # and batch terms; above SMALL_GEMM_MAX / SMALL_GEMM_K_MAX they are cuBLAS's, which CuPy
    # cannot capture: such a step replays without a graph.
    bk = gl.backend.get_backend(device)
    gemm = batch * max(i * o for i, o in zip(sizes[:-1], sizes[1:]))
    if gemm <= bk.SMALL_GEMM_MAX and max(batch, *sizes) <= bk.SMALL_GEMM_K_MAX:
        if info["graphed"] < steps - 3:
            raise AssertionError(f"compiled train step {sizes}: not replayed as a CUDA graph "
                                 f"({info})")
    elif info["graphed"] or not any("SMALL_GEMM" in r for r in info["ungraphed_reasons"]):
        raise AssertionError(f"compiled train step {sizes}: a GEMM for cuBLAS should keep it "
                             f"ungraphed, saying why ({info})")
    for k, (p, q) in enumerate(zip(model.parameters(), eager.parameters())):
        cases._close(f"compiled train step {sizes} weights {k} after {steps} steps",
                     cases._host(p), cases._host(q).astype(np.float64), rtol=1e-5, atol=1e-7)
    return (lambda: step(gx, gy)), info


@pytest.mark.parametrize("shape", list(cases.MLP_SHAPES))
def test_gradlab_compiled_train_step(benchmark, shape):
    sizes, batch = cases.MLP_SHAPES[shape]
    gl_step, info = compiled_mlp_train_step(sizes, batch)
    model_loss = _train_loss_drops(gl_step)
    _record(benchmark, gl_step, iters=50, shape="-".join(map(str, sizes)), batch=batch,
            flops=cases.training_flops(sizes, batch), loss_first_last=model_loss,
            graph_held_bytes=info["graph_held_bytes"], record_seconds=info["record_seconds"])


@pytest.mark.parametrize("shape", list(cases.MLP_SHAPES))
def test_torch_train_step(benchmark, shape):
    _torch_cuda()
    sizes, batch = cases.MLP_SHAPES[shape]
    _, torch_step, flops = cases.mlp_train_step(sizes, batch, device="cuda")
    _record(benchmark, torch_step, iters=50, shape="-".join(map(str, sizes)), batch=batch,
            flops=flops)


def _train_loss_drops(step):
    """Run a few steps; the loss the step's closure reports must fall (a broken step that is
    fast would otherwise count). Returns (first, last)."""
    losses = [float(step()) for _ in range(20)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    return losses[0], losses[-1]
