"""Every implementation of softmax cross-entropy held to the reference tier
(backend/fused/softmax_ce/reference.py) in one process: numba (the CPU backend's choice for
rows of up to MAX_CLASSES classes) and the CUDA kernel (emulated device or GPU).

Agreement is to rounding, not bitwise: the numba kernel's exp is libm's and its row sums run
left to right, where NumPy has its own SIMD exp and sums pairwise (CUDA's exp and log are
libdevice's). Every loss and gradient element must lie within 8 ulps of the reference's,
measured against max(1, |value|): |got - ref| <= 8 eps max(1, |ref|). (Observed: at most
~3 eps.)"""
import numpy as np
import pytest

import gradlab as gl
from gradlab.backend import cpu_backend, cpu_threads, fused, get_backend
from gradlab.backend.fused import softmax_ce as fused_ce
from gradlab.backend.fused.softmax_ce import reference

numba_softmax_ce = pytest.importorskip("gradlab.backend.fused.softmax_ce.numba_cpu",
                                         reason="numba is not installed")
if not fused.AVAILABLE:
    pytest.skip("the numba tier is off (GRADLAB_NO_JIT is set)", allow_module_level=True)

WIDE = fused_ce.MAX_CLASSES


def _close(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    eps = np.finfo(want.dtype).eps
    both_nan = np.isnan(got) & np.isnan(want)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    g, w = got[~both_nan], want[~both_nan]
    assert np.array_equal(np.isinf(g), np.isinf(w)) and np.array_equal(g[np.isinf(g)],
                                                                      w[np.isinf(w)])
    fin = np.isfinite(w)
    err = np.abs(g[fin].astype(np.float64) - w[fin]) / np.maximum(1.0, np.abs(w[fin]))
    assert err.size == 0 or err.max() <= 8 * eps, err.max() / eps


def _both(logits, target, weight=None, ignore_index=-100, smoothing=0.0):
    got = numba_softmax_ce.softmax_cross_entropy(logits, target, weight, ignore_index,
                                                   smoothing)
    want = reference.softmax_cross_entropy(logits, target, weight, ignore_index, smoothing)
    return got, want


def _case(n, c, dtype, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, c)) * scale).astype(dtype)
    y = rng.integers(0, max(c, 1), n)
    return x, y, (rng.random(c) + 0.5).astype(dtype)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_reference_to_rounding(dtype, weighted, smoothing):
    shapes = [(1, 1), (1, 2), (7, 3), (64, 10), (4096, 10), (33, WIDE),
              (numba_softmax_ce.PARALLEL_MIN // 10 + 3, 10)]  # the last runs in parallel
    for n, c in shapes:
        for scale in (1.0, 30.0):
            x, y, w = _case(n, c, dtype, seed=n + c, scale=scale)
            y[::5] = -100                                  # some ignored rows
            (loss, grad), (loss_r, grad_r) = _both(x, y, w if weighted else None,
                                                   smoothing=smoothing)
            _close(loss, loss_r)
            _close(grad, grad_r)
            assert not loss[::5].any() and not grad[::5].any()   # ignored rows: exact zeros


def test_ignore_index_inside_the_class_range_and_int32_targets():
    x, y, _ = _case(200, 7, np.float32)
    (loss, grad), (loss_r, grad_r) = _both(x, y.astype(np.int32), ignore_index=3)
    _close(loss, loss_r)
    _close(grad, grad_r)
    assert not loss[y == 3].any() and not grad[y == 3].any() and loss[y != 3].all()


def test_layouts():
    x, y, _ = _case(30, 12, np.float64)
    for logits in (x.T.copy().T, np.asfortranarray(x), x[:, ::2], x[::3]):
        (loss, grad), (loss_r, grad_r) = _both(logits, y[:logits.shape[0]] % logits.shape[1])
        _close(loss, loss_r)
        _close(grad, grad_r)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the reference
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_and_non_finite_logits(dtype):
    x = np.array([[1e8, 0.0, -1e8]] * 3 + [[np.nan, 0.0, 1.0], [np.inf, 0.0, 1.0],
                                           [-np.inf, 0.0, 1.0], [-np.inf] * 3], dtype=dtype)
    y = np.array([0, 1, 2, 1, 1, 2, 0])
    (loss, grad), (loss_r, grad_r) = _both(x, y)
    np.testing.assert_array_equal(loss[:3], [0.0, 1e8, 2e8])             # exact, as the ref
    np.testing.assert_array_equal(grad[:3], [[0, 0, 0], [1, -1, 0], [1, 0, -1]])
    _close(loss, loss_r)
    _close(grad, grad_r)
    y[3:] = -100                                           # ignored non-finite rows are zeros
    (loss, grad), _ = _both(x, y)
    assert not loss[3:].any() and not grad[3:].any()


def test_wide_rows_go_to_the_reference_through_the_backend():
    """The table's rule: the CPU backend runs rows wider than MAX_CLASSES on the reference
    (bitwise), though the kernel itself takes them (to rounding)."""
    x, y, w = _case(16, WIDE + 1, np.float32)
    (loss, grad), (loss_r, grad_r) = _both(x, y, w, smoothing=0.2)
    _close(loss, loss_r)
    _close(grad, grad_r)
    loss_b, grad_b = cpu_backend().softmax_cross_entropy(x, y, w, -100, 0.2)
    assert loss_b.tobytes() == loss_r.tobytes() and grad_b.tobytes() == grad_r.tobytes()


def test_empty_inputs():
    for n, c in ((0, 5), (0, 0)):
        (loss, grad), (loss_r, grad_r) = _both(np.zeros((n, c), np.float32),
                                               np.zeros(n, np.int64))
        assert loss.shape == loss_r.shape and grad.shape == grad_r.shape
    (loss, grad), _ = _both(np.zeros((3, 0), np.float32), np.full(3, -100))  # all ignored
    assert loss.tolist() == [0, 0, 0] and grad.shape == (3, 0)


@pytest.mark.parametrize("target,ignore_index", [([0, 5, 7, 1], -100), ([0, -1, 2, 1], -100),
                                                 ([-100, 3, -7, 1], -100), ([0, 1, 2, 9], 2),
                                                 ([0, 1, 2, 2], 2**70)])
def test_bad_targets_same_error_as_reference(target, ignore_index):
    x = np.zeros((4, 3), np.float32)
    target = np.array(target)
    errors = []
    for impl in (reference, numba_softmax_ce):
        try:
            impl.softmax_cross_entropy(x, target, None, ignore_index, 0.0)
            errors.append(None)
        except IndexError as e:
            errors.append(str(e))
    assert errors[0] == errors[1]
    if ignore_index == 2**70:                              # huge ignore_index: no row ignored
        assert errors[0] is None


def test_bad_arguments_same_error_as_reference():
    x = np.zeros((4, 3), np.float32)
    for args in ((x[0], np.zeros(3, np.int64)), (x, np.zeros(4)), (x, np.zeros(5, np.int64))):
        errors = []
        for impl in (reference, numba_softmax_ce):
            with pytest.raises((ValueError, TypeError)) as info:
                impl.softmax_cross_entropy(*args, None, -100, 0.0)
            errors.append((type(info.value), str(info.value)))
        assert errors[0] == errors[1]


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_results_thread_independent(smoothing):
    """Rows are independent: any thread count (and any cut into parts) gives the same bits."""
    x, y, w = _case(numba_softmax_ce.PARALLEL_MIN // 10 + 3, 10, np.float32, seed=4)
    y[::7] = -100
    want = numba_softmax_ce.softmax_cross_entropy(x, y, w, -100, smoothing)
    threads = cpu_threads.get_num_threads()
    try:
        for t in (1, 2, 3):
            cpu_threads.set_num_threads(t)
            got = numba_softmax_ce.softmax_cross_entropy(x, y, w, -100, smoothing)
            assert got[0].tobytes() == want[0].tobytes()
            assert got[1].tobytes() == want[1].tobytes()
    finally:
        cpu_threads.set_num_threads(threads)
    xs, ys = x[:50], y[:50]                                # more parts than rows, too
    loss_ref, grad_ref = numba_softmax_ce.softmax_cross_entropy(xs, ys, w, -100, smoothing)
    args = (w, np.float32(w.sum()), np.int64(-100), np.float32(1 - smoothing),
            np.float32(smoothing / 10), bool(smoothing), np.float32(0))
    for nparts in (2, 3, 64):
        loss = np.full(50, np.nan, np.float32)
        grad = np.full((50, 10), np.nan, np.float32)
        for k in range(nparts):
            numba_softmax_ce._part_kernel(k, nparts, xs, ys, *args, loss, grad)
        assert loss.tobytes() == loss_ref.tobytes() and grad.tobytes() == grad_ref.tobytes()


def test_kernel_is_serial_nogil_numba():
    """The threads are cpu_threads' own: no numba parallel=True (an OpenMP pool)."""
    options = numba_softmax_ce._part_kernel.targetoptions
    assert options.get("nogil") is True and not options.get("parallel")


def test_cpu_backend_and_loss_use_the_kernel(monkeypatch):
    monkeypatch.delenv("GRADLAB_NO_JIT", raising=False)
    op, bk = fused_ce.softmax_cross_entropy, cpu_backend()
    y4 = np.zeros(4, np.int64)
    assert op.tier_for(bk, np.zeros((4, WIDE), np.float32), y4, None, -100, 0.0) == "numba"
    assert op.tier_for(bk, np.zeros((4, WIDE + 1), np.float32), y4, None, -100, 0.0) == "numpy"
    calls = []
    kernel = numba_softmax_ce._kernel

    def counted(*args):
        calls.append(args[0].shape)
        return kernel(*args)
    monkeypatch.setattr(numba_softmax_ce, "_kernel", counted)
    x, y, _ = _case(64, 10, np.float32)
    t = gl.tensor(x, requires_grad=True)
    gl.nn.functional.cross_entropy(t, gl.tensor(y)).backward()
    loss_r, grad_r = reference.softmax_cross_entropy(x, y, None, -100, 0.0)
    _close(t.grad.numpy(), grad_r / np.float32(64))
    assert calls == [(64, 10)]
    gl.nn.CrossEntropyLoss()(gl.tensor(_case(8, WIDE + 5, np.float32)[0]),
                             gl.tensor(np.zeros(8, np.int64)))
    assert calls == [(64, 10)]                             # wide rows: the reference


    monkeypatch.setenv("GRADLAB_NO_JIT", "1")            # read at each call
    gl.nn.functional.cross_entropy(gl.tensor(x), gl.tensor(y))
    assert calls == [(64, 10)]


@pytest.mark.parametrize("tier", ["numba", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_tier_matches_the_reference(dtype, smoothing, tier):
    """The numba kernel and the CUDA one (emulated device here, the real one on a GPU) on
    the reference's inputs, rows narrow and wide."""
    impls = fused_ce.softmax_cross_entropy.implementations()
    if tier not in impls:
        pytest.skip(f"no {tier} tier in this process: {gl.cuda.unavailable_reason()}")
    be = get_backend("cuda") if tier == "cuda" else cpu_backend()
    for n, c in [(1, 1), (7, 3), (64, 10), (33, WIDE), (5, 300)]:
        x, y, w = _case(n, c, dtype, seed=n + c)
        y[::3] = -100
        want = impls["numpy"](cpu_backend(), x, y, w, -100, smoothing)
        got = impls[tier](be, be.asarray(x), be.asarray(y), be.asarray(w), -100, smoothing)
        for a, b in zip(got, want):
            _close(be.to_numpy(a), b)
