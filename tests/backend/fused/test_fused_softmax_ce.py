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
from gradlab.backend import cpu_backend, cpu_threads, get_backend
from gradlab.backend.fused import softmax_ce as fused_ce
from gradlab.backend.fused.softmax_ce import reference
from tests.backend.fused.numba_tier import numba_tier

numba_softmax_ce = numba_tier("softmax_ce")

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


def _both(logits, target, weight=None, ignore_index=-100, smoothing=0.0, reduction="none"):
    got = numba_softmax_ce.softmax_cross_entropy(logits, target, weight, ignore_index,
                                                   smoothing, reduction)
    want = reference.softmax_cross_entropy(logits, target, weight, ignore_index, smoothing,
                                           reduction)
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


PARALLEL_ROWS = numba_softmax_ce.PARALLEL_MIN // 10 + 3     # 10 classes: split into parts


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reductions_match_reference_to_rounding(dtype, weighted, smoothing, reduction):
    """'sum' and 'mean' (the kernel's compensated float64 sums against NumPy's pairwise
    ones): a 0-d loss of the logits' dtype, and for 'mean' the gradient divided by the
    weight of the kept rows."""
    for n, c in [(1, 1), (7, 3), (64, 3), (64, 10), (4096, 10), (33, WIDE),
                 (PARALLEL_ROWS, 10)]:
        x, y, w = _case(n, c, dtype, seed=n + c + 1)
        y[1::5] = -100                                     # some ignored rows, not all
        weight = w if weighted else None
        (loss, grad), (loss_r, grad_r) = _both(x, y, weight, smoothing=smoothing,
                                               reduction=reduction)
        assert isinstance(loss, np.ndarray) and loss.shape == () and loss.dtype == dtype
        _close(loss, loss_r)
        _close(grad, grad_r)
        rows, rows_grad = reference.softmax_cross_entropy(x, y, weight, -100, smoothing)
        kept = (w[y[y != -100]] if weighted else np.ones(int((y != -100).sum()))).sum()
        scale = kept if reduction == "mean" else 1.0
        assert float(loss) == pytest.approx(rows.astype(np.float64).sum() / scale,
                                            rel=1e-5 if dtype == np.float32 else 1e-12)
        np.testing.assert_allclose(grad, rows_grad / scale, rtol=1e-5,
                                   atol=8 * np.finfo(dtype).eps / scale)
        assert not grad[1::5].any()


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the reference
@pytest.mark.parametrize("n", [5, PARALLEL_ROWS])
def test_mean_of_all_ignored_rows_is_nan(n):
    """0 / 0, as the reference (and PyTorch): the loss nan, the gradient PyTorch's zeros;
    'sum' gives 0."""
    x, _, w = _case(n, 10, np.float32)
    y = np.full(n, -100)
    for weight in (None, w):
        (loss, grad), (loss_r, grad_r) = _both(x, y, weight, reduction="mean")
        assert np.isnan(loss) and not grad.any()
        _close(loss, loss_r)
        _close(grad, grad_r)
        (loss, grad), _ = _both(x, y, weight, reduction="sum")
        assert loss == 0 and not grad.any()


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the reference
def test_reductions_of_non_finite_rows():
    # row 0 with target 1: loss inf (m - x_y = inf); rows 2 and 3: nan
    x = np.array([[0.0, -np.inf, 1.0], [0.0, 1.0, 2.0], [-np.inf] * 3, [np.nan, 0.0, 1.0]],
                 np.float32)
    for y in ([1, 0, -100, -100], [1, 0, 2, -100], [1, 0, -100, 0]):
        for reduction in ("sum", "mean"):
            (loss, grad), (loss_r, grad_r) = _both(x, np.array(y), reduction=reduction)
            _close(loss, loss_r)
            _close(grad, grad_r)
    (loss, _), _ = _both(x[:2], np.array([1, 0]), reduction="sum")
    assert loss == np.inf                                  # inf stays inf, not inf - inf


def test_empty_inputs_reduced():
    for n, c in ((0, 5), (0, 0), (3, 0)):
        y = np.full(n, -100)
        with np.errstate(invalid="ignore"):
            for reduction in ("sum", "mean"):
                (loss, grad), (loss_r, grad_r) = _both(np.zeros((n, c), np.float32), y,
                                                       reduction=reduction)
                assert loss.shape == () and grad.shape == (n, c)
                _close(loss, loss_r)
                assert np.isnan(loss) if reduction == "mean" else loss == 0


def test_unknown_reduction_same_error_as_reference():
    x, y, _ = _case(4, 3, np.float32)
    errors = []
    for impl in (reference, numba_softmax_ce):
        with pytest.raises(ValueError) as info:
            impl.softmax_cross_entropy(x, y, None, -100, 0.0, "avg")
        errors.append(str(info.value))
    assert errors[0] == errors[1] and "'avg'" in errors[0]


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


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("target,ignore_index", [([0, 5, 7, 1], -100), ([0, -1, 2, 1], -100),
                                                 ([-100, 3, -7, 1], -100), ([0, 1, 2, 9], 2),
                                                 ([0, 1, 2, 2], 2**70), ([0, 1, 2, -2**63], 2**70),
                                                 ([0, 1, -2**63, 7], -2**63)])
def test_bad_targets_same_error_as_reference(target, ignore_index, reduction):
    x = np.zeros((4, 3), np.float32)
    target = np.array(target)
    errors = []
    for impl in (reference, numba_softmax_ce):
        try:
            impl.softmax_cross_entropy(x, target, None, ignore_index, 0.0, reduction)
            errors.append(None)
        except IndexError as e:
            errors.append(str(e))
    assert errors[0] == errors[1]
    if target.tolist() == [0, 1, 2, 2]:                    # huge ignore_index: no row ignored
        assert errors[0] is None
    else:
        assert errors[0] is not None


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_bad_targets_in_the_parallel_split_name_the_first(reduction):
    """The parts report their first bad rows; the error names the first in row order, a
    bad row in a later part included, whatever the thread count."""
    x, y, w = _case(PARALLEL_ROWS, 10, np.float32, seed=3)
    threads = cpu_threads.get_num_threads()
    try:
        for t in (2, 3):
            cpu_threads.set_num_threads(t)
            last, mid = PARALLEL_ROWS - 1, PARALLEL_ROWS // 2
            for bad in ([(last, 10)], [(last - 4, -3), (last - 1, 11)],
                        [(10, 12), (mid, -1), (last, 99)], [(mid + 1, 13), (mid + 2, -9)]):
                yb = y.copy()
                for row, value in bad:
                    yb[row] = value
                with pytest.raises(IndexError, match=f"^Target {bad[0][1]} is out of bounds"):
                    numba_softmax_ce.softmax_cross_entropy(x, yb, w, -100, 0.1, reduction)
                with pytest.raises(IndexError, match=f"^Target {bad[0][1]} is out of bounds"):
                    reference.softmax_cross_entropy(x, yb, w, -100, 0.1, reduction)
    finally:
        cpu_threads.set_num_threads(threads)


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
    """Rows are independent and the reductions sum in row order on one thread: any thread
    count (and any cut into parts) gives the same bits."""
    x, y, w = _case(numba_softmax_ce.PARALLEL_MIN // 10 + 3, 10, np.float32, seed=4)
    y[::7] = -100
    want = {r: numba_softmax_ce.softmax_cross_entropy(x, y, w, -100, smoothing, r)
            for r in ("none", "sum", "mean")}
    threads = cpu_threads.get_num_threads()
    try:
        for t in (1, 2, 3):
            cpu_threads.set_num_threads(t)
            for r in ("none", "sum", "mean"):
                got = numba_softmax_ce.softmax_cross_entropy(x, y, w, -100, smoothing, r)
                assert got[0].tobytes() == want[r][0].tobytes()
                assert got[1].tobytes() == want[r][1].tobytes()
    finally:
        cpu_threads.set_num_threads(threads)
    xs, ys = x[:50], y[:50]                                # more parts than rows, too
    loss_ref, grad_ref = numba_softmax_ce.softmax_cross_entropy(xs, ys, w, -100, smoothing)
    mean_ref, mgrad_ref = numba_softmax_ce.softmax_cross_entropy(xs, ys, w, -100, smoothing,
                                                                 "mean")
    for nparts in (2, 3, 64):
        loss = np.full(50, np.nan, np.float32)
        grad = np.full((50, 10), np.nan, np.float32)
        bad = np.full(nparts, -1, np.int64)
        for k in range(nparts):
            numba_softmax_ce._part_kernel(k, nparts, xs, ys, w, -100, smoothing, loss, grad,
                                          bad)
        assert loss.tobytes() == loss_ref.tobytes() and grad.tobytes() == grad_ref.tobytes()
        assert (bad == 50).all()
        out, denom = np.full((), np.nan, np.float32), np.full(1, np.nan, np.float32)
        numba_softmax_ce._reduction(loss, ys, w, -100, True, out, denom)
        for k in range(nparts):
            numba_softmax_ce._scale_part_kernel(k, nparts, grad, denom)
        assert out.tobytes() == mean_ref.tobytes() and grad.tobytes() == mgrad_ref.tobytes()


def test_kernel_is_serial_nogil_numba():
    """The threads are cpu_threads' own: no numba parallel=True (an OpenMP pool). Division
    by zero ('mean' of no rows) follows NumPy: the "numpy" error model."""
    for kernel in (numba_softmax_ce._part_kernel, numba_softmax_ce._reduction,
                   numba_softmax_ce._scale_part_kernel, numba_softmax_ce._whole):
        options = kernel.targetoptions
        assert options.get("nogil") is True and not options.get("parallel")
        assert options.get("error_model") == "numpy"


def test_cpu_backend_and_loss_use_the_kernel(monkeypatch):
    monkeypatch.delenv("GRADLAB_NO_JIT", raising=False)
    op, bk = fused_ce.softmax_cross_entropy, cpu_backend()
    y4 = np.zeros(4, np.int64)
    assert op.tier_for(bk, np.zeros((4, WIDE), np.float32), y4, None, -100, 0.0) == "numba"
    assert op.tier_for(bk, np.zeros((4, WIDE + 1), np.float32), y4, None, -100, 0.0) == "numpy"
    calls = []
    kernel = numba_softmax_ce._call  # every call of the numba tier's kernels passes here

    def counted(*args):
        calls.append(args[0].shape)
        return kernel(*args)
    monkeypatch.setattr(numba_softmax_ce, "_call", counted)
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


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # 1 x 1: 0 / 0
@pytest.mark.parametrize("tier", ["numba", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_tier_matches_the_reference(dtype, smoothing, tier):
    """The numba kernel and the CUDA one (emulated device here, the real one on a GPU) on
    the reference's inputs, rows narrow and wide, every reduction (the 1 x 1 case's one row
    is ignored: 'mean' is nan in every tier)."""
    impls = fused_ce.softmax_cross_entropy.implementations()
    if tier not in impls:
        pytest.skip(f"no {tier} tier in this process: {gl.cuda.unavailable_reason()}")
    be = get_backend("cuda") if tier == "cuda" else cpu_backend()
    for n, c in [(1, 1), (7, 3), (64, 10), (33, WIDE), (5, 300)]:
        x, y, w = _case(n, c, dtype, seed=n + c)
        y[::3] = -100
        for reduction in ("none", "sum", "mean"):
            want = impls["numpy"](cpu_backend(), x, y, w, -100, smoothing, reduction)
            got = impls[tier](be, be.asarray(x), be.asarray(y), be.asarray(w), -100,
                              smoothing, reduction)
            for a, b in zip(got, want):
                _close(be.to_numpy(a), b)


# -- the prepared form (FusedOp.prepare), which a compiled step's replay calls ---------------
def _counting_kernel(monkeypatch):
    calls = []
    kernel = numba_softmax_ce._call
    monkeypatch.setattr(numba_softmax_ce, "_call", lambda *a: calls.append(1) or kernel(*a))
    return calls


@pytest.mark.parametrize("weighted", [False, True])
def test_the_prepared_form_is_the_plain_call(weighted, monkeypatch):
    be = cpu_backend()
    x, y, w = _case(64, 10, np.float32, seed=4)
    weight = w if weighted else None
    settings = (-100, 0.1, "mean")
    run = be.prepare_softmax_cross_entropy(x, y, weight, *settings)
    calls = _counting_kernel(monkeypatch)
    for seed in range(3):
        x, y, _ = _case(64, 10, np.float32, seed=seed)
        got = run(x, y, weight, *settings)
        want = be.softmax_cross_entropy(x, y, weight, *settings)
        for a, b in zip(got, want):
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    assert len(calls) == 6
    if weighted:
        weight *= 2   # changed in place: the prepared form reads the array, never a copy
        got = run(x, y, weight, *settings)
        want = reference.softmax_cross_entropy(x, y, weight, *settings)
        _close(got[0], want[0])
        _close(got[1], want[1])


def test_the_prepared_form_makes_the_plain_call_for_anything_else(monkeypatch):
    be = cpu_backend()
    x, y, w = _case(64, 10, np.float32, seed=4)
    run = be.prepare_softmax_cross_entropy(x, y, None, -100, 0.0, "mean")
    plain = []
    op = fused_ce.softmax_cross_entropy
    real_call = type(op).__call__
    monkeypatch.setattr(type(op), "__call__",
                        lambda self, *a, **k: plain.append(a[1].shape) or real_call(self, *a, **k))
    others = [(x[:32], y[:32], None, -100, 0.0, "mean"),          # another shape
              (x.astype(np.float64), y, None, -100, 0.0, "mean"),  # another dtype
              (np.asfortranarray(x), y, None, -100, 0.0, "mean"),  # another layout
              (x, y, w, -100, 0.0, "mean"),                         # a weight
              (x, y, None, 3, 0.0, "mean"),                         # other settings
              (x, y, None, -100, 0.5, "mean"), (x, y, None, -100, 0.0, "sum")]
    for args in others:
        got = run(*args)
        want = reference.softmax_cross_entropy(*args)
        _close(got[0], want[0])
        _close(got[1], want[1])
    assert len(plain) == len(others)
    with pytest.raises(IndexError, match="Target 10 is out of bounds"):
        y_bad = y.copy()
        y_bad[5] = 10
        run(x, y_bad, None, -100, 0.0, "mean")
    monkeypatch.setenv("GRADLAB_NO_JIT", "1")   # read at every call, as the plain call does
    calls = _counting_kernel(monkeypatch)
    run(x, y, None, -100, 0.0, "mean")
    assert calls == []


def test_a_prepared_form_is_the_plain_dispatch_where_numba_does_not_run():
    be = cpu_backend()
    x, y, _ = _case(8, WIDE + 1, np.float32)       # rows the numba tier leaves to NumPy
    run = be.prepare_softmax_cross_entropy(x, y, None, -100, 0.0, "none")
    assert run.func is fused_ce.softmax_cross_entropy     # functools.partial(op, backend)


# -- the kernel's own exp (numba_cpu._exp), which replaces libm's so that its loop vectorizes --
def _exp_of(z):
    import numba
    exp = numba_softmax_ce._exp

    @numba.njit(error_model="numpy")
    def run(a, out):
        for i in range(a.size):
            out[i] = exp(a[i])
    out = np.empty_like(z)
    run(z, out)
    return out


def _exp_arguments(dtype):
    rng = np.random.default_rng(11)
    return np.concatenate([-rng.random(200_000) * 40, -rng.random(20_000) * 800,
                           rng.random(1000) * 700]).astype(dtype)


def test_exp_is_within_one_ulp_of_libm_in_float64():
    import math
    z = _exp_arguments(np.float64)
    got = _exp_of(z)
    want = np.array([math.exp(v) for v in z])
    normal = want >= np.finfo(np.float64).tiny
    ulps = np.abs(got[normal] - want[normal]) / np.spacing(want[normal])
    assert ulps.max() <= 1.0
    # below the smallest normal number: one rounding into the subnormals, so within one of
    # their steps (5e-324)
    assert np.abs(got[~normal] - want[~normal]).max() <= 5e-324


def test_exp_in_float32_is_the_rounded_float64_value_nearly_always():
    # Computed in float64 and rounded once: libm's expf's bits but in rare near-ties.
    import math
    z = _exp_arguments(np.float32)
    got = _exp_of(z)
    with np.errstate(over="ignore"):                            # (inf where float32 ends)
        want = np.array([math.exp(float(v)) for v in z]).astype(np.float32)
    fin = np.isfinite(want) & (want > 0)
    ulps = np.abs(got[fin].astype(np.float64) - want[fin]) / np.spacing(want[fin])
    assert ulps.max() <= 1.0 and (ulps == 0).mean() > 0.999
    assert np.array_equal(got[~fin], want[~fin])                 # 0 and inf where libm's are


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_at_the_edges(dtype):
    z = np.array([0.0, -0.0, -np.inf, np.inf, np.nan, -745.0, -745.2, -1e-30, 1e-30, 709.7,
                  709.79, 1e300 if dtype == np.float64 else 3e38], dtype=dtype)
    got = _exp_of(z)
    assert got[0] == 1 and got[1] == 1 and got[2] == 0 and got[3] == np.inf
    assert np.isnan(got[4])
    assert got[7] == 1 and got[8] == 1 and got[10] == np.inf and got[11] == np.inf
    if dtype == np.float64:
        assert got[5] == 5e-324 and got[6] == 0               # the last subnormal, then 0
        assert np.isfinite(got[9]) and abs(got[9] / np.exp(709.7) - 1) < 4e-16
    else:
        assert got[5] == 0 and got[9] == np.inf               # float32's range ends sooner
