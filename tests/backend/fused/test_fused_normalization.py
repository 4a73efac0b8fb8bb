"""Every implementation of the normalization op held to the reference tier
(backend/fused/normalization/reference.py, the formulas eager ran before the op existed):
the same bytes for y, xhat, invstd, the running statistics and the three gradients. Where
a NaN enters a column, the NaN positions must agree and the other bytes be the same (LLVM
may commute an addition, which changes which NaN's sign and payload survive)."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradlab.backend import cpu_backend, cpu_threads
from gradlab.backend.fused import normalization as fused_norm
from gradlab.backend.fused.normalization import reference
from tests.backend.fused.numba_tier import numba_tier

numba_norm = numba_tier("normalization")

pytestmark = [
    # NaN and inf inputs, eps = 0 on a constant column: both tiers give NumPy's IEEE results
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:divide by zero encountered:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
]

BIG_ROWS = cpu_threads.PARALLEL_MIN // 64 + 5  # (BIG_ROWS, 64) is cut into parts by columns
# one row, C == 2 (the fewest columns the numba tier takes), ragged, the CLI's and the
# benchmarks' MLP widths, and one large enough to be split across the threads
SHAPES = [(1, 2), (2, 2), (7, 3), (64, 10), (64, 128), (65, 64), (256, 512), (BIG_ROWS, 64)]
# (weight, bias, batch statistics, running statistics)
MODES = {"train": (True, True, True, True), "train, no running": (True, True, True, False),
         "eval": (True, True, False, False), "no affine": (False, False, True, True),
         "weight only": (True, False, True, False), "bias only": (False, True, False, False)}


def _case(shape, dtype, mode, seed=0, special=False):
    rng = np.random.default_rng(seed)
    n, c = shape
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    x[:, 1] = 0.5  # a constant column: variance 0
    if special:
        x[:, 2] = -0.0  # its mean is +0.0 (NumPy's sums start from +0.0), so xhat is -0.0
        flat = x.reshape(-1)
        flat[:4] = [np.nan, np.inf, -0.0, np.finfo(dtype).max]
    has_w, has_b, batch, running = MODES[mode]
    vec = lambda: rng.standard_normal(c).astype(dtype)  # noqa: E731
    weight = vec() if has_w else None
    bias = vec() if has_b else None
    mean, var = (None, None) if batch else (vec(), rng.random(c).astype(dtype))
    stats = (vec(), rng.random(c).astype(dtype)) if running and n > 1 else (None, None)
    return x, weight, bias, mean, var, stats


def _same(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    assert got[~nan].tobytes() == want[~nan].tobytes()


def _forward(impl, x, weight, bias, mean, var, stats, eps=1e-5, momentum=0.1, relu=False):
    rm, rv = (None, None) if stats[0] is None else (stats[0].copy(), stats[1].copy())
    out = impl.normalize_forward(x, weight, bias, mean, var, eps, (0,), (1, x.shape[1]), rm,
                                 rv, momentum, relu)
    return out, (rm, rv)


def _both_tiers(x, weight, bias, mean, var, stats, eps=1e-5, momentum=0.1, relu=False,
                seed=1):
    """Forward and backward in the numba tier and the reference, every output compared;
    the numba tier's forward outputs."""
    got, got_stats = _forward(numba_norm, x, weight, bias, mean, var, stats, eps, momentum,
                              relu)
    want, want_stats = _forward(reference, x, weight, bias, mean, var, stats, eps, momentum,
                                relu)
    for g, w in zip(got + got_stats, want + want_stats):
        assert (g is None) == (w is None)
        if w is not None:
            _same(g, w)
    grad = np.random.default_rng(seed).standard_normal(x.shape).astype(x.dtype)
    y, xhat, invstd = want
    args = (grad, xhat, invstd, weight, (0,), (1, x.shape[1]), mean is None, True, True, True,
            y if relu else None)
    for g, w in zip(numba_norm.normalize_backward(*args), reference.normalize_backward(*args)):
        _same(g, w)
    return got


def _check(shape, dtype, mode, special=False, eps=1e-5, momentum=0.1, relu=False):
    x, weight, bias, mean, var, stats = _case(shape, dtype, mode, seed=sum(shape),
                                              special=special)
    return _both_tiers(x, weight, bias, mean, var, stats, eps, momentum, relu)


@pytest.mark.parametrize("relu", [False, True], ids=["", "relu"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_numba_is_the_reference(shape, dtype, mode, relu):
    _check(shape, dtype, mode, relu=relu)


def test_the_relu_is_the_relu_functions():
    # the op's ReLU gives the Relu Function's bits (np.maximum(y, 0); grad * (y > 0))
    x, weight, bias, mean, var, stats = _case((9, 5), np.float32, "train", special=True)
    y, *_ = reference.normalize_forward(x, weight, bias, None, None, 1e-5, (0,), (1, 5))
    out, *_ = numba_norm.normalize_forward(x, weight, bias, None, None, 1e-5, (0,), (1, 5),
                                           relu=True)
    _same(out, np.maximum(y, 0))
    assert not np.signbit(out[out == 0]).any()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 300), c=st.integers(2, 70), dtype=st.sampled_from([np.float32,
                                                                             np.float64]),
       mode=st.sampled_from(sorted(MODES)), scale=st.sampled_from([1e-3, 1.0, 1e4]),
       offset=st.sampled_from([0.0, 1.0, -1e3]), eps=st.sampled_from([1e-5, 1e-3, 0.1]),
       momentum=st.floats(0.0, 1.0), relu=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_random_batches_give_the_references_bits(n, c, dtype, mode, scale, offset, eps,
                                                 momentum, relu, seed):
    # random shapes and magnitudes (large offsets make the centring cancel digits), eps,
    # momentum and the ReLU: every output byte-equal to the reference's
    x, weight, bias, mean, var, stats = _case((n, c), dtype, mode, seed=seed)
    x = (x * dtype(scale) + dtype(offset)).astype(dtype)
    _both_tiers(x, weight, bias, mean, var, stats, eps, momentum, relu, seed=seed + 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7, 3), (BIG_ROWS, 64)], ids=str)
def test_special_values_and_a_zero_eps(shape, dtype):
    # NaN, inf, -0.0 and the largest float in x; eps = 0 on the constant column gives
    # invstd = inf and NaN there (0 * inf), never an exception
    _check(shape, dtype, "train", special=True)
    y, xhat, invstd = _check(shape, dtype, "train", eps=0)
    assert np.isinf(invstd[0, 1]) and np.isnan(xhat[:, 1]).all()


@pytest.mark.parametrize("momentum", [0.0, 1.0, 1.0 / 3, 0, 1])
def test_every_momentum_moves_the_running_statistics_as_the_reference(momentum):
    _check((9, 4), np.float32, "train", momentum=momentum)


def test_the_affine_map_off_gives_xhat_itself_as_y_but_never_the_relus_output():
    x, *_ = _case((5, 3), np.float32, "no affine")
    for impl in (numba_norm, reference):
        y, xhat, _ = impl.normalize_forward(x, None, None, None, None, 1e-5, (0,), (1, 3))
        assert y is xhat
        y, xhat, _ = impl.normalize_forward(x, None, None, None, None, 1e-5, (0,), (1, 3),
                                            relu=True)
        assert y is not xhat and (xhat < 0).any()


def test_means_and_sums_are_numpys_row_order_not_pairwise():
    # Rows whose pairwise and row-by-row float32 sums differ: the numba tier must sum as
    # the reference (row by row, as NumPy sums a C-contiguous (N, C >= 2) array over axis 0)
    x = np.full((1000, 2), 0.1, dtype=np.float32)
    x[0] = 3e4
    got = numba_norm.normalize_forward(x, None, None, None, None, 1e-5, (0,), (1, 2))
    want = reference.normalize_forward(x, None, None, None, None, 1e-5, (0,), (1, 2))
    for g, w in zip(got, want):
        _same(g, w)
    pairwise = (np.float32(3e4) + np.sum(x[1:, 0].copy())) / np.float32(1000)
    assert pairwise != x.mean(axis=0)[0]       # (another order: other bits)
    args = (x, want[1], want[2], None, (0,), (1, 2), True, True, True, True)
    for g, w in zip(numba_norm.normalize_backward(*args), reference.normalize_backward(*args)):
        _same(g, w)


def test_one_row_with_running_statistics_raises_before_writing_them():
    x = np.ones((1, 3), np.float32)
    for impl in (numba_norm, reference):
        rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
        with pytest.raises(ZeroDivisionError):
            impl.normalize_forward(x, None, None, None, None, 1e-5, (0,), (1, 3), rm, rv, 0.1)
        assert (rm == 0).all() and (rv == 1).all()


def test_each_call_picks_numba_only_where_its_bits_are_the_references():
    be = cpu_backend()
    op_f, op_b = fused_norm.normalize_forward, fused_norm.normalize_backward
    x = np.ones((8, 3), np.float32)
    v = np.ones(3, np.float32)
    inv = np.ones((1, 3), np.float32)

    def fwd(x, *, axes=(0,), pshape=None, eps=1e-5, momentum=0.1, w=v, rm=v):
        return op_f.tier_for(be, x, w, v, None, None, eps, axes,
                             pshape or (1, x.shape[1]), rm, rm, momentum)

    def bwd(g, xhat=None, invstd=inv, w=v, axes=(0,)):
        return op_b.tier_for(be, g, g if xhat is None else xhat, invstd, w, axes,
                             (1, g.shape[1]), True, True, True, True)

    assert fwd(x) == "numba" and bwd(x) == "numba"
    one_col = np.ones((8, 1), np.float32)
    assert fwd(one_col, w=None, rm=None) == "numpy"       # NumPy sums one column pairwise
    assert bwd(one_col, invstd=np.ones((1, 1), np.float32), w=None) == "numpy"
    assert fwd(np.ones((0, 3), np.float32)) == "numpy"
    assert fwd(np.ones((8, 6), np.float32)[:, ::2]) == "numpy"
    assert bwd(np.ones((8, 6), np.float32)[:, ::2]) == "numpy"
    assert fwd(x, axes=(1,)) == "numpy"                    # LayerNorm's axes
    assert bwd(x, axes=(1,)) == "numpy"
    assert fwd(np.ones((2, 3, 4), np.float32), axes=(0, 2), pshape=(1, 3, 1)) == "numpy"
    assert fwd(x, eps=np.float64(1e-5)) == "numpy"         # not a weak Python scalar
    assert fwd(x, momentum=np.float32(0.1)) == "numpy"
    assert fwd(x, rm=np.ones(3, np.float64)) == "numpy"    # statistics of another dtype
    assert fwd(x.astype(np.float16), w=None, rm=None) == "numpy"
    assert fwd(x.astype(">f4"), w=None, rm=None) == "numpy"
    assert bwd(x, w=np.ones(3, np.float64)) == "numpy"
    relu_out = op_b.tier_for(be, x, x, inv, v, (0,), (1, 3), True, True, True, True,
                             np.ones((8, 6), np.float32)[:, ::2])
    assert relu_out == "numpy"                             # a strided ReLU output


@pytest.mark.parametrize("shape, axes, pshape", [((40, 1), (0,), (1, 1)),
                                                 ((2, 5, 3), (0, 2), (1, 5, 1)),
                                                 ((6, 4), (1,), (1, 4))], ids=str)
def test_the_backend_gives_the_reference_on_every_shape(shape, axes, pshape):
    be = cpu_backend()
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape)
    w = rng.standard_normal(pshape).reshape(-1)
    got = be.normalize_forward(x, w, w, None, None, 1e-5, axes, pshape)
    want = reference.normalize_forward(x, w, w, None, None, 1e-5, axes, pshape)
    for g, wa in zip(got, want):
        _same(g, wa)
    args = (x, want[1], want[2], w, axes, pshape, True, True, True, True)
    for g, wa in zip(be.normalize_backward(*args), reference.normalize_backward(*args)):
        _same(g, wa)


@pytest.mark.cuda
@pytest.mark.parametrize("relu", [False, True], ids=["", "relu"])
@pytest.mark.parametrize("mode", ["train", "eval", "no affine"])
def test_the_cuda_tier_is_the_reference_with_cupy(mode, relu):
    """The CUDA tier runs the reference's formulas with CuPy: on the emulated device those are
    NumPy's calls (the same bytes); on a GPU, CuPy's reductions sum in another order (within
    rounding). The running statistics move on the device, in place."""
    import devices
    import gradlab as gl
    from gradlab.backend import get_backend
    if not gl.cuda.is_available():
        pytest.skip(f"no CUDA device: {gl.cuda.unavailable_reason()}")
    be = get_backend("cuda")
    x, weight, bias, mean, var, stats = _case((64, 128), np.float32, mode)
    want, want_stats = _forward(reference, x, weight, bias, mean, var, stats, relu=relu)
    dev = [None if a is None else be.asarray(a) for a in (x, weight, bias, mean, var) + stats]
    got = be.normalize_forward(*dev[:5], 1e-5, (0,), (1, 128), *dev[5:], 0.1, relu)
    grad = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    args = (want[1], want[2], weight, (0,), (1, 128), mean is None, True, True, True)
    relu_out = want[0] if relu else None
    got_b = be.normalize_backward(be.asarray(grad), *[None if a is None else be.asarray(a)
                                                      for a in args[:3]], *args[3:],
                                  None if relu_out is None else be.asarray(relu_out))
    pairs = list(zip(got + tuple(dev[5:]) + got_b,
                     want + want_stats + reference.normalize_backward(grad, *args, relu_out)))
    for g, w in pairs:
        if w is None:
            assert g is None
        elif devices.EMULATED:
            _same(be.to_numpy(g), w)
        else:
            np.testing.assert_allclose(be.to_numpy(g), w, rtol=1e-4, atol=1e-5)


# -- the prepared forms (FusedOp.prepare), which a compiled step's replay of BatchNorm then
# ReLU calls -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(32, 128), (BIG_ROWS, 64)], ids=str)
def test_the_prepared_forms_are_the_plain_calls(shape, mode, monkeypatch):
    be = cpu_backend()
    x, weight, bias, mean, var, stats = _case(shape, np.float32, mode, seed=3)
    rm, rv = stats
    pshape = (1, shape[1])

    def fwd_args(x, rm, rv, momentum=0.1, eps=1e-5, w=weight):
        return (x, w, bias, mean, var, eps, (0,), pshape, rm, rv, momentum, True)
    forward = be.prepare_normalize_forward(*fwd_args(x, rm, rv))
    y, xhat, invstd = reference.normalize_forward(*fwd_args(x, None, None))
    grad = np.random.default_rng(4).standard_normal(shape).astype(np.float32)

    def bwd_args(g, xhat=xhat, invstd=invstd, w=weight):
        return (g, xhat, invstd, w, (0,), pshape, mean is None, True, True, True, y)
    backward = be.prepare_normalize_backward(*bwd_args(grad))
    for seed, momentum in ((0, 0.1), (1, 0.25), (2, 1 / 3)):  # momentum=None's new numbers
        x2 = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
        stats_got = [None if a is None else a for a in (rm, rv)]
        stats_want = [None if a is None else a.copy() for a in (rm, rv)]
        got = forward(*fwd_args(x2, *stats_got, momentum))
        want = reference.normalize_forward(*fwd_args(x2, *stats_want, momentum))
        for g, w in zip(list(got) + stats_got, list(want) + stats_want):
            if w is not None:
                _same(g, w)
        for g, w in zip(backward(*bwd_args(grad)), reference.normalize_backward(*bwd_args(grad))):
            _same(g, w)
    # like the prepared call: no rule of the op table runs (the point of preparing)
    rules = []
    for op in (fused_norm.normalize_forward, fused_norm.normalize_backward):
        monkeypatch.setattr(op, "use_numba",
                            lambda *a, rule=op.use_numba, **k: rules.append(1) or rule(*a, **k))
    forward(*fwd_args(x, rm, rv))
    backward(*bwd_args(grad))
    assert rules == []
    # unlike the prepared call: another x shape, a strided x, another weight array (float64,
    # which the rule sends to the reference), a NumPy eps (not a weak Python number) -- the
    # plain dispatch, whose bits are the reference's too
    other_w = None if weight is None else weight.astype(np.float64)
    strided = np.ones((shape[0], 2 * shape[1]), np.float32)[:, ::2]
    unlike = [fwd_args(x[:-1].copy(), None, None), fwd_args(strided, None, None),
              fwd_args(x, None, None, eps=np.float64(1e-5))]
    if weight is not None:
        unlike.append(fwd_args(x, None, None, w=other_w))
    for args in unlike:
        rules.clear()
        got, want = forward(*args), reference.normalize_forward(*args)
        for g, w in zip(got, want):
            _same(g, w)
        assert rules, "an unlike call must take the plain dispatch"
    for args in (bwd_args(strided), bwd_args(grad, xhat=xhat[:, ::1].T.copy().T)):
        rules.clear()
        for g, w in zip(backward(*args), reference.normalize_backward(*args)):
            _same(g, w)
        assert rules, "an unlike call must take the plain dispatch"
    if weight is not None:  # a weight of another length: the reference's error, not a kernel
        with pytest.raises(ValueError):
            forward(*fwd_args(x, rm, rv, w=np.ones(shape[1] + 1, np.float32)))
    # GRADLAB_NO_JIT is read at every call, as the plain call reads it
    calls = []
    kernel = numba_norm._forward_part
    monkeypatch.setattr(numba_norm, "_forward_part", lambda *a: calls.append(1) or kernel(*a))
    if shape[0] * shape[1] < cpu_threads.PARALLEL_MIN:
        forward(*fwd_args(x, rm, rv))
        assert calls == [1]
        monkeypatch.setenv("GRADLAB_NO_JIT", "1")
        want_stats = [None if a is None else a.copy() for a in (rm, rv)]
        for g, w in zip(forward(*fwd_args(x, rm, rv)),
                        reference.normalize_forward(*fwd_args(x, *want_stats))):
            _same(g, w)
        assert calls == [1]
