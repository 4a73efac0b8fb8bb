"""Achieved bandwidth of gradlab's CUDA kernels next to a device-to-device copy and PyTorch.

    PYTHONPATH=src python -m pytest benchmarks/test_kernels_gpu.py --benchmark-json=out.json

Each benchmark times with CUDA events after a warm-up and records in extra_info the time per
call, the bytes the operation must move and the resulting GB/s (plus the copy bandwidth for
comparison). Skipped without a GPU; the torch rows are skipped without torch+CUDA.
"""
import numpy as np
import pytest

import gradlab as gl

pytestmark = pytest.mark.skipif(not gl.cuda.is_available(),
                                reason=f"no CUDA device: {gl.cuda.unavailable_reason()}")

ADAM_PARAMS = 50 * (1 << 20)
ADAM_TENSORS = 128
CE_SHAPES = [(4096, 10), (512, 32000)]
DROPOUT_N = 16 * (1 << 20)


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


def _record(benchmark, fn, nbytes, iters=20):
    """Event timing for the bandwidth figure; pytest-benchmark's own rounds for its table."""
    import cupy
    ms = _time_ms(fn, iters)
    benchmark.extra_info.update(ms=ms, bytes=nbytes, gb_per_s=nbytes / ms / 1e6)

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
    src = cupy.ones(n, dtype=cupy.float32)
    dst = cupy.empty_like(src)
    _record(benchmark, lambda: dst.__setitem__(Ellipsis, src), 2 * src.nbytes)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gradlab_adam(benchmark, dtype):
    import cupy
    bk = gl.backend.get_backend("cuda")
    sizes = _split(ADAM_PARAMS, ADAM_TENSORS)
    make = lambda: [cupy.full(n, 0.5, dtype=dtype) for n in sizes]   # noqa: E731
    p, g, m, v = make(), make(), make(), make()
    kw = dict(step=10, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
              decoupled_weight_decay=False, amsgrad=False, maximize=False)
    itemsize = np.dtype(dtype).itemsize
    # reads p, g, m, v and writes p, m, v: 7 words per parameter (28 B in float32)
    _record(benchmark, lambda: bk.adam_step(p, g, m, v, None, **kw),
            7 * itemsize * ADAM_PARAMS)


def test_torch_adam_fused(benchmark):
    torch = _torch_cuda()
    params = [torch.full((n,), 0.5, device="cuda", requires_grad=True)
              for n in _split(ADAM_PARAMS, ADAM_TENSORS)]
    for q in params:
        q.grad = torch.full_like(q, 0.5)
    opt = torch.optim.Adam(params, lr=1e-3, fused=True)
    _record(benchmark, opt.step, 28 * ADAM_PARAMS)


@pytest.mark.parametrize("shape", CE_SHAPES, ids=str)
def test_gradlab_softmax_ce(benchmark, shape):
    import cupy
    bk = gl.backend.get_backend("cuda")
    x = cupy.random.standard_normal(shape, dtype=cupy.float32)
    y = cupy.random.randint(0, shape[1], size=shape[0]).astype(cupy.int64)
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
    x = cupy.ones(DROPOUT_N, dtype=cupy.float32)

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
