"""Eager ops where a comparison with PyTorch 2.13 found gradlab apart (session 13): the
gradient of a 'mean' loss with no weight left, nll_loss on (N, C, d1, ...), integer
division by zero, rrelu's slope at 0, multi_margin_loss's 'none' shape, reductions over
dim=(). References are hand-derived numbers or NumPy; the last tests compare with torch
where it is installed (skipped otherwise)."""
import math

import numpy as np
import pytest

import gradlab as gl
import gradlab.nn as nn
import gradlab.nn.functional as F
from gradlab.autograd import gradcheck
from gradlab.backend.fused.softmax_ce import MAX_CLASSES
from tests.conftest import to_numpy

# 0 / 0 and x / 0 are what the degenerate 'mean' cases compute
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

# Class counts that send the CPU backend's fused softmax-CE to each of its tiers: numba up to
# MAX_CLASSES, the NumPy reference above (the CUDA device runs its own tier for both).
NARROW, WIDE = 4, MAX_CLASSES + 6
# Rows x 10 classes past cpu_threads.PARALLEL_MIN: the numba kernel's parallel path.
PARALLEL_ROWS = (1 << 16) // 10 + 3


def _t(a, device, dtype=gl.float32, grad=False):
    return gl.tensor(np.asarray(a), dtype=dtype, device=device, requires_grad=grad)


def _logits(n, c, seed=0):
    return np.random.default_rng(seed).standard_normal((n, c)).astype(np.float32)


def _ce_grad(device, x, y, **kw):
    xt = _t(x, device, grad=True)
    loss = F.cross_entropy(xt, gl.tensor(y, device=device), **kw)
    loss.backward()
    return to_numpy(loss), to_numpy(xt.grad)


# -- 1. 'mean' over no weight ------------------------------------------------------------------
@pytest.mark.parametrize("n,c", [(3, NARROW), (3, WIDE), (PARALLEL_ROWS, 10)])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_mean_of_all_ignored_targets_has_zero_gradient(device, n, c, smoothing,
                                                                     weighted):
    # PyTorch: the loss is 0 / 0 = nan, the gradient exactly 0 (its backward writes no row)
    x = _logits(n, c)
    w = _t(np.linspace(0.5, 2.0, c), device) if weighted else None
    loss, grad = _ce_grad(device, x, np.full(n, -100), weight=w, label_smoothing=smoothing)
    assert np.isnan(loss) and grad.shape == x.shape
    assert not np.isnan(grad).any() and not grad.any()


@pytest.mark.parametrize("n,c", [(3, NARROW), (3, WIDE), (PARALLEL_ROWS, 10)])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_mean_over_targets_of_weight_zero(device, n, c, smoothing):
    # Only classes of weight 0 among the kept targets: PyTorch's loss is nan (its NLL term is
    # 0 / 0) and its gradient nan on the kept rows, 0 on the ignored ones, with or without
    # label smoothing (where x / 0 would give +-inf)
    x = _logits(n, c)
    w = np.ones(c)
    w[:2] = 0
    y = np.arange(n) % 2
    y[::3] = -100
    loss, grad = _ce_grad(device, x, y, weight=_t(w, device), label_smoothing=smoothing)
    kept = y != -100
    assert np.isnan(loss)
    assert np.isnan(grad[kept]).all()
    assert not np.isnan(grad[~kept]).any() and not grad[~kept].any()


@pytest.mark.parametrize("c", [NARROW, WIDE])
def test_cross_entropy_mean_elsewhere_is_the_sum_over_the_count(device, c):
    # The fix leaves every other 'mean' alone: its gradient is the 'sum' one divided by the
    # number of kept rows, bit for bit, and ignored rows are +0
    x = _logits(6, c)
    y = np.array([0, -100, 1, 2, -100, 3])
    _, g_sum = _ce_grad(device, x, y, reduction="sum")
    _, g_mean = _ce_grad(device, x, y)
    assert g_mean.tobytes() == (g_sum / np.float32(4)).tobytes()
    assert not np.signbit(g_mean[[1, 4]]).any()


def test_cross_entropy_sum_and_none_of_all_ignored_targets_are_zeros(device):
    x, y = _logits(3, NARROW), np.full(3, -100)
    loss, grad = _ce_grad(device, x, y, reduction="sum")
    assert loss == 0 and not grad.any()
    xt = _t(x, device, grad=True)
    out = F.cross_entropy(xt, gl.tensor(y, device=device), reduction="none")
    out.sum().backward()
    assert not to_numpy(out).any() and not to_numpy(xt.grad).any()


def test_cross_entropy_mean_all_ignored_in_other_layouts(device):
    # one row (C,) with a 0-d target, and (N, C, d) with (N, d) targets
    x = _t(_logits(1, 5)[0], device, grad=True)
    loss = F.cross_entropy(x, gl.tensor(-100, device=device))
    loss.backward()
    assert np.isnan(to_numpy(loss)) and not to_numpy(x.grad).any()
    x3 = _t(_logits(2, 12).reshape(2, 3, 4), device, grad=True)
    loss = F.cross_entropy(x3, gl.tensor(np.full((2, 4), 7), device=device), ignore_index=7)
    loss.backward()
    assert np.isnan(to_numpy(loss)) and not to_numpy(x3.grad).any()


@pytest.mark.parametrize("weighted", [False, True])
def test_nll_loss_mean_of_all_ignored_targets_has_zero_gradient(device, weighted):
    lp = _t(np.log(np.full((3, 4), 0.25)), device, grad=True)
    w = _t([1.0, 2.0, 3.0, 4.0], device) if weighted else None
    loss = F.nll_loss(lp, gl.tensor([-100, -100, -100], device=device), weight=w)
    loss.backward()
    assert np.isnan(to_numpy(loss))
    grad = to_numpy(lp.grad)
    assert not np.isnan(grad).any() and not grad.any()


def test_nll_loss_mean_over_targets_of_weight_zero(device):
    # PyTorch: -w_y / total = -0 / 0 = nan at each kept row's target, 0 everywhere else
    lp = _t(np.log(np.full((3, 4), 0.25)), device, grad=True)
    loss = F.nll_loss(lp, gl.tensor([0, 1, -100], device=device),
                      weight=_t([0.0, 0.0, 3.0, 4.0], device))
    loss.backward()
    assert np.isnan(to_numpy(loss))
    grad = to_numpy(lp.grad)
    want_nan = np.zeros((3, 4), bool)
    want_nan[0, 0] = want_nan[1, 1] = True
    np.testing.assert_array_equal(np.isnan(grad), want_nan)
    assert not grad[~want_nan].any()


# -- 2. nll_loss on (N, C, d1, ...) ----------------------------------------------------------
def _nll_nd_reference(lp, y, w, ignore_index):
    """-w[y] lp[n, y, d...] per position (0 where ignored) and the weight of each position,
    from NumPy indexing on the class dim 1."""
    c = lp.shape[1]
    kept = y != ignore_index
    safe = np.where(kept, y, 0)
    picked = np.take_along_axis(lp, safe[:, None], axis=1)[:, 0]
    wy = (np.ones(c) if w is None else w)[safe] * kept
    return -picked * wy, wy


@pytest.mark.parametrize("shape", [(2, 3, 4), (2, 3, 2, 3), (1, 4, 2, 1, 3)])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True])
def test_nll_loss_takes_spatial_targets(device, shape, reduction, weighted):
    rng = np.random.default_rng(sum(shape))
    lp = rng.standard_normal(shape)
    c = shape[1]
    y = rng.integers(0, c, (shape[0],) + shape[2:])
    y.reshape(-1)[::4] = -1
    w = rng.random(c) + 0.5 if weighted else None
    per, wy = _nll_nd_reference(lp, y, w, -1)
    want = {"none": per, "sum": per.sum(), "mean": per.sum() / wy.sum()}[reduction]
    wt = _t(w, device, gl.float64) if weighted else None
    yt = gl.tensor(y, device=device)
    got = F.nll_loss(_t(lp, device, gl.float64), yt, weight=wt, ignore_index=-1,
                     reduction=reduction)
    assert got.shape == np.shape(want)
    np.testing.assert_allclose(to_numpy(got), want, rtol=1e-12)
    mod = nn.NLLLoss(weight=wt, ignore_index=-1, reduction=reduction)
    np.testing.assert_allclose(to_numpy(mod(_t(lp, device, gl.float64), yt)), want,
                               rtol=1e-12)
    assert gradcheck(lambda a: F.nll_loss(a, yt, weight=wt, ignore_index=-1,
                                          reduction=reduction),
                     [_t(lp, device, gl.float64, grad=True)])


def test_nll_loss_spatial_gradient_by_hand(device):
    # 'mean' of 3 kept positions of weight 1, 2, 2: d/d lp[n, y, d] = -w_y / 5 there, else 0
    lp = _t(np.zeros((1, 3, 4)), device, gl.float64, grad=True)
    y = gl.tensor([[0, 2, -100, 2]], device=device)
    F.nll_loss(lp, y, weight=_t([1.0, 5.0, 2.0], device, gl.float64)).backward()
    want = np.zeros((1, 3, 4))
    want[0, 0, 0], want[0, 2, 1], want[0, 2, 3] = -1 / 5, -2 / 5, -2 / 5
    np.testing.assert_allclose(to_numpy(lp.grad), want, rtol=1e-15)


def test_spatial_nll_loss_equals_cross_entropy_of_logits(device):
    # (N, C, H, W): cross_entropy(x) == nll_loss(log_softmax(x, 1)), as modules too
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 3, 2))
    y = gl.tensor(rng.integers(0, 5, (2, 3, 2)), device=device)
    xt = _t(x, device, gl.float64)
    for reduction in ("none", "mean", "sum"):
        ce = nn.CrossEntropyLoss(reduction=reduction)(xt, y)
        nll = nn.NLLLoss(reduction=reduction)(F.log_softmax(xt, 1), y)
        np.testing.assert_allclose(to_numpy(nll), to_numpy(ce), rtol=1e-12)


def test_nll_loss_spatial_target_errors(device):
    lp = _t(np.zeros((2, 3, 4)), device)
    with pytest.raises(ValueError, match=r"^nll_loss: target shape \(2, 3\) does not match "
                                         r"input shape \(2, 3, 4\): expected \(2, 4\) \(the "
                                         r"input without its class dim 1\)$"):
        F.nll_loss(lp, gl.zeros(2, 3, dtype=gl.int64, device=device))
    with pytest.raises(ValueError, match=r"target shape \(2,\) does not match input shape "
                                         r"\(2, 3, 4\): expected \(2, 4\)"):
        F.nll_loss(lp, gl.zeros(2, dtype=gl.int64, device=device))
    with pytest.raises(ValueError, match=r"target shape \(2, 4, 1\) does not match"):
        nn.NLLLoss()(lp, gl.zeros(2, 4, 1, dtype=gl.int64, device=device))
    with pytest.raises(IndexError, match=r"^nll_loss: target 3 is out of bounds for 3 "
                                         r"classes"):
        F.nll_loss(lp, gl.full((2, 4), 3, dtype=gl.int64, device=device))
    with pytest.raises(TypeError, match=r"^nll_loss: target has dtype float32"):
        F.nll_loss(lp, gl.zeros(2, 4, device=device))
    with pytest.raises(ValueError, match=r"^nll_loss: input must be .* got a 0-d tensor"):
        F.nll_loss(_t(0.0, device), gl.tensor(0, device=device))


def test_nll_loss_spatial_with_no_positions(device):
    lp = _t(np.zeros((2, 3, 0)), device)
    y = gl.zeros(2, 0, dtype=gl.int64, device=device)
    assert F.nll_loss(lp, y, reduction="none").shape == (2, 0)
    assert np.isnan(to_numpy(F.nll_loss(lp, y)))
    assert to_numpy(F.nll_loss(lp, y, reduction="sum")) == 0


# -- 3. integer division by zero ---------------------------------------------------------------
@pytest.mark.parametrize("dtype", [gl.int64, gl.int32, gl.uint8])
def test_integer_floor_divide_and_remainder_by_zero_raise(device, dtype):
    a = gl.tensor([5, 7, 0], dtype=dtype, device=device)
    zero_at_1 = gl.tensor([2, 0, 3], dtype=dtype, device=device)
    cases = [lambda: a // 0, lambda: a % 0, lambda: gl.floor_divide(a, zero_at_1),
             lambda: gl.remainder(a, zero_at_1), lambda: 5 // a, lambda: 5 % a,
             lambda: a // gl.tensor(0, dtype=dtype, device=device)]
    for case in cases:
        with pytest.raises(RuntimeError, match=r"^ZeroDivisionError: (floor_divide|remainder) "
                                               rf"of {np.dtype(dtype).name} tensors by 0"):
            case()
    with pytest.raises(RuntimeError, match=r"\(element 1 of the divisor\).*\.float\(\)"):
        a // zero_at_1


def test_integer_floor_divide_and_remainder_elsewhere_unchanged(device):
    a = gl.tensor([7, -7, 0, 6], device=device)
    b = gl.tensor([2, 2, -3, -4], device=device)
    assert to_numpy(a // b).tolist() == [3, -4, 0, -2]
    assert to_numpy(a % b).tolist() == [1, 1, 0, -2]
    assert to_numpy(a // 3).tolist() == [2, -3, 0, 2]


def test_float_division_by_zero_keeps_inf_and_nan(device):
    a = _t([5.0, -7.0, 0.0], device)
    np.testing.assert_array_equal(to_numpy(a // 0), [np.inf, -np.inf, np.nan])
    assert np.isnan(to_numpy(a % 0)).all()
    # an integer tensor by a float zero is float division (int64 // 0.0 is float32)
    q = gl.tensor([5, -7, 0], device=device) // 0.0
    assert q.dtype == gl.float32
    np.testing.assert_array_equal(to_numpy(q), [np.inf, -np.inf, np.nan])


# -- 4. rrelu's slope at 0 ---------------------------------------------------------------------
@pytest.mark.parametrize("lower,upper", [(1 / 8, 1 / 3), (0.1, 0.3)])
def test_rrelu_eval_gradient_at_zero_is_the_slope(device, lower, upper):
    # PyTorch takes the negative branch for x <= 0: the gradient at +-0 is (lower + upper)/2
    x = _t([-1.0, 0.0, -0.0, 2.0], device, gl.float64, grad=True)
    y = F.rrelu(x, lower, upper, training=False)
    y.sum().backward()
    slope = (lower + upper) / 2
    np.testing.assert_array_equal(to_numpy(y), [-slope, 0.0, 0.0, 2.0])
    np.testing.assert_allclose(to_numpy(x.grad), [slope, slope, slope, 1.0], rtol=1e-15)
    m = nn.RReLU(lower, upper).eval()
    x.grad = None
    m(x).sum().backward()
    np.testing.assert_allclose(to_numpy(x.grad), [slope, slope, slope, 1.0], rtol=1e-15)


def test_rrelu_training_gradient_at_zero_is_a_drawn_slope(device):
    x = _t(np.zeros(200), device, gl.float64, grad=True)
    y = F.rrelu(x, 0.1, 0.3, training=True)
    y.sum().backward()
    g = to_numpy(x.grad)
    assert not to_numpy(y).any()
    assert (g >= 0.1).all() and (g <= 0.3).all() and len(np.unique(g)) > 100


# -- 5. multi_margin_loss's shapes ---------------------------------------------------------------
def test_multi_margin_loss_none_takes_the_targets_shape(device):
    # x = (0.1, 0.5, -0.3, 0.2), y = 1: sum_{j != 1} max(0, 1 - 0.5 + x_j) / 4
    # = (0.6 + 0.2 + 0.7) / 4 = 0.375
    x = _t([0.1, 0.5, -0.3, 0.2], device, gl.float64)
    for target, shape in ((gl.tensor(1, device=device), ()),
                          (gl.tensor([1], device=device), (1,))):
        out = F.multi_margin_loss(x, target, reduction="none")
        assert out.shape == shape
        np.testing.assert_allclose(to_numpy(out), np.full(shape, 0.375), rtol=1e-15)
        for reduction in ("mean", "sum"):
            out = F.multi_margin_loss(x, target, reduction=reduction)
            assert out.shape == () and to_numpy(out) == pytest.approx(0.375, rel=1e-15)
    # one sample as a (1, C) batch with a 0-d target: (), as PyTorch
    batch = x.reshape(1, 4)
    out = F.multi_margin_loss(batch, gl.tensor(1, device=device), reduction="none")
    assert out.shape == () and to_numpy(out) == pytest.approx(0.375, rel=1e-15)
    out = nn.MultiMarginLoss(reduction="none")(batch, gl.tensor([1], device=device))
    assert out.shape == (1,)


def test_multi_margin_loss_one_sample_gradient(device):
    # d/dx_j = 1/4 for the active j != y (all three here), d/dx_y = -3/4
    x = _t([0.1, 0.5, -0.3, 0.2], device, gl.float64, grad=True)
    out = F.multi_margin_loss(x, gl.tensor([1], device=device), reduction="none")
    out.backward(gl.ones(1, dtype=gl.float64, device=device))
    np.testing.assert_allclose(to_numpy(x.grad), [0.25, -0.75, 0.25, 0.25], rtol=1e-15)


def test_multi_margin_loss_of_a_0d_input_is_one_class(device):
    # C = 1: no j != y, the loss is 0
    for target, shape in ((gl.tensor(0, device=device), ()), (gl.tensor([0], device=device),
                                                               (1,))):
        out = F.multi_margin_loss(_t(0.5, device), target, reduction="none")
        assert out.shape == shape and not to_numpy(out).any()


def test_multi_margin_loss_target_shape_errors(device):
    with pytest.raises(ValueError, match=r"^multi_margin_loss: target shape \(\) must be "
                                         r"\(2,\)$"):
        F.multi_margin_loss(_t(np.zeros((2, 3)), device), gl.tensor(0, device=device))
    with pytest.raises(ValueError, match=r"^multi_margin_loss: target shape \(1, 1\) must be "
                                         r"\(1,\) or \(\) \(one sample\)$"):
        F.multi_margin_loss(_t(np.zeros(3), device), gl.tensor([[1]], device=device))
    with pytest.raises(ValueError, match=r"^multi_margin_loss: input of shape \(2, 0\) has no "
                                         r"classes$"):
        F.multi_margin_loss(_t(np.zeros((2, 0)), device), gl.tensor([0, 0], device=device))


# -- 6. reductions over dim=() -------------------------------------------------------------------
A = np.array([[0.0, 1.0, 2.0], [3.0, 0.0, 5.0]])
DIM_ALL = {
    "sum": (gl.sum, lambda a: a.sum()),
    "mean": (gl.mean, lambda a: a.mean()),
    "var": (gl.var, lambda a: a.var(ddof=1)),
    "std": (gl.std, lambda a: a.std(ddof=1)),
    "norm": (gl.norm, lambda a: np.sqrt((a * a).sum())),
    "norm1": (lambda t, **kw: gl.norm(t, 1, **kw), lambda a: np.abs(a).sum()),
    "norm3": (lambda t, **kw: gl.norm(t, 3, **kw), lambda a: (np.abs(a) ** 3).sum() ** (1 / 3)),
    "norm_inf": (lambda t, **kw: gl.norm(t, math.inf, **kw), lambda a: np.abs(a).max()),
    "amax": (gl.amax, lambda a: a.max()),
    "amin": (gl.amin, lambda a: a.min()),
}


@pytest.mark.parametrize("name", sorted(DIM_ALL))
@pytest.mark.parametrize("empty", [(), []])
def test_reductions_over_empty_dims_reduce_every_dim(device, name, empty):
    fn, ref = DIM_ALL[name]
    t = _t(A, device, gl.float64)
    out = fn(t, dim=empty)
    assert out.shape == ()
    np.testing.assert_allclose(to_numpy(out), ref(A), rtol=1e-14)
    kept = fn(t, dim=empty, keepdim=True)
    assert kept.shape == (1, 1)
    np.testing.assert_allclose(to_numpy(kept), [[ref(A)]], rtol=1e-14)
    np.testing.assert_array_equal(to_numpy(out), to_numpy(fn(t, dim=None)))


def test_reductions_over_empty_dims_as_methods_and_gradients(device):
    t = _t(A, device, gl.float64, grad=True)
    assert to_numpy(t.sum(())) == 11 and to_numpy(t.mean(())) == pytest.approx(11 / 6)
    assert to_numpy(t.amax(())) == 5
    (t.sum(()) + t.mean(dim=())).backward()
    np.testing.assert_allclose(to_numpy(t.grad), np.full((2, 3), 1 + 1 / 6), rtol=1e-15)
    t.grad = None
    gl.amin(t, dim=()).backward()  # two zeros tie for the minimum: half each
    np.testing.assert_array_equal(to_numpy(t.grad), [[0.5, 0, 0], [0, 0.5, 0]])
    assert gradcheck(lambda a: gl.std(a, dim=()) + gl.norm(a, dim=(), keepdim=True).sum(),
                     [_t(A + 1, device, gl.float64, grad=True)])


def test_reductions_over_empty_dims_of_other_tensors(device):
    # integers sum as int64; a 0-d tensor is its own sum; var of one element is nan (N - 1 = 0)
    ints = gl.tensor([1, 2, 3], dtype=gl.int32, device=device)
    s = gl.sum(ints, dim=())
    assert s.dtype == gl.int64 and to_numpy(s) == 6
    assert gl.sum(_t(2.0, device), dim=(), keepdim=True).shape == ()
    assert np.isnan(to_numpy(gl.var(_t([2.0], device), dim=())))
    assert to_numpy(gl.sum(_t(np.zeros((0, 3)), device), dim=())) == 0
    assert np.isnan(to_numpy(gl.mean(_t(np.zeros((0, 3)), device), dim=())))
    with pytest.raises(RuntimeError, match=r"no elements"):
        gl.amax(_t(np.zeros((0, 3)), device), dim=())


def test_normalize_over_empty_dims_uses_the_whole_norm(device):
    t = _t(A, device, gl.float64)
    np.testing.assert_allclose(to_numpy(F.normalize(t, dim=())), A / np.sqrt((A * A).sum()),
                               rtol=1e-15)


def test_logsumexp_over_empty_dims(device):
    # PyTorch 2.13: every dim with keepdim=True; an error without it (for an input with dims)
    t = _t(A, device, gl.float64)
    kept = gl.logsumexp(t, dim=(), keepdim=True)
    assert kept.shape == (1, 1)
    np.testing.assert_allclose(to_numpy(kept), [[np.log(np.exp(A).sum())]], rtol=1e-14)
    for empty in ((), []):
        with pytest.raises(RuntimeError, match=r"^logsumexp\(\): dim=\(\) with keepdim=False"):
            gl.logsumexp(t, dim=empty)
    assert to_numpy(gl.logsumexp(_t(3.0, device), dim=())) == 3.0


def test_all_and_any_over_empty_dims_reduce_nothing(device):
    # PyTorch's all/any(dim=()) give the elementwise truth, shape kept
    t = _t(A, device)
    want = A != 0
    for op in (gl.all, gl.any):
        out = op(t, dim=())
        assert out.dtype == gl.bool
        np.testing.assert_array_equal(to_numpy(out), want)
        np.testing.assert_array_equal(to_numpy(op(t, dim=(), keepdim=True)), want)


@pytest.mark.parametrize("op", ["max", "min", "argmax", "argmin", "prod", "cumsum"])
@pytest.mark.parametrize("dim", [(), (1,), [0]])
def test_one_dim_ops_refuse_tuples(device, op, dim):
    # PyTorch: TypeError ("argument 'dim' must be int, not tuple"), on 0-d inputs too
    for t in (_t(A, device), _t(2.0, device)):
        with pytest.raises(TypeError, match=rf"^{op}\(\): dim must be an int, got "):
            getattr(gl, op)(t, dim=dim)
        with pytest.raises(TypeError, match=rf"^{op}\(\): dim must be an int"):
            getattr(t, op)(dim)


def test_softmax_refuses_tuple_dims(device):
    t = _t(A, device)
    for fn in (F.softmax, F.log_softmax):
        for dim in ((), (1,)):
            with pytest.raises(TypeError, match=r"softmax\(\): dim must be an int, got"):
                fn(t, dim=dim)
    np.testing.assert_allclose(to_numpy(F.softmax(t, dim=1)).sum(1), [1, 1], rtol=1e-6)


# -- against torch itself, where it is installed -----------------------------------------------
def _torch():
    return pytest.importorskip("torch")


def _same(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7, equal_nan=True)


@pytest.mark.parametrize("c", [NARROW, WIDE])
def test_degenerate_means_against_torch(c):
    torch = _torch()
    x = _logits(5, c, seed=c)
    cases = []
    w0 = np.ones(c, np.float32)
    w0[:2] = 0
    for s in (0.0, 0.2):
        cases.append((np.full(5, -100), None, s))
        cases.append((np.full(5, -100), np.linspace(0.5, 2, c).astype(np.float32), s))
        cases.append((np.array([0, 1, -100, 1, 0]), w0, s))
    for y, w, s in cases:
        xt = _t(x, "cpu", grad=True)
        loss = F.cross_entropy(xt, gl.tensor(y), weight=None if w is None else _t(w, "cpu"),
                               label_smoothing=s)
        loss.backward()
        xr = torch.tensor(x, requires_grad=True)
        ref = torch.nn.functional.cross_entropy(
            xr, torch.tensor(y), weight=None if w is None else torch.tensor(w),
            label_smoothing=s)
        ref.backward()
        _same(to_numpy(loss), ref.detach().numpy())
        _same(to_numpy(xt.grad), xr.grad.numpy())
        if s == 0.0:
            lp = _t(x, "cpu", grad=True)
            out = F.nll_loss(lp, gl.tensor(y), weight=None if w is None else _t(w, "cpu"))
            out.backward()
            lr = torch.tensor(x, requires_grad=True)
            torch.nn.functional.nll_loss(
                lr, torch.tensor(y), weight=None if w is None else torch.tensor(w)).backward()
            _same(to_numpy(lp.grad), lr.grad.numpy())


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_spatial_nll_loss_against_torch(reduction):
    torch = _torch()
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 4, 3, 2))
    y = rng.integers(0, 4, (2, 3, 2))
    y[0, 1] = -100
    w = rng.random(4) + 0.5
    lp = _t(x, "cpu", gl.float64, grad=True)
    out = F.nll_loss(lp, gl.tensor(y), weight=_t(w, "cpu", gl.float64), reduction=reduction)
    out.sum().backward()
    lr = torch.tensor(x, requires_grad=True)
    ref = torch.nn.functional.nll_loss(lr, torch.tensor(y), weight=torch.tensor(w),
                                       reduction=reduction)
    ref.sum().backward()
    assert out.shape == tuple(ref.shape)
    np.testing.assert_allclose(to_numpy(out), ref.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(to_numpy(lp.grad), lr.grad.numpy(), rtol=1e-12)


def test_reductions_over_empty_dims_against_torch():
    torch = _torch()
    t, r = _t(A, "cpu", gl.float64), torch.tensor(A)
    for name in ("sum", "mean", "var", "std", "amax", "amin", "norm"):
        for keepdim in (False, True):
            got = getattr(gl, name)(t, dim=(), keepdim=keepdim)
            want = getattr(torch, name)(r, dim=(), keepdim=keepdim)
            assert got.shape == tuple(want.shape)
            np.testing.assert_allclose(to_numpy(got), want.numpy(), rtol=1e-14)
    want = torch.logsumexp(r, dim=(), keepdim=True)
    np.testing.assert_allclose(to_numpy(gl.logsumexp(t, dim=(), keepdim=True)), want.numpy(),
                               rtol=1e-14)
    with pytest.raises(RuntimeError):
        torch.logsumexp(r, dim=())
    np.testing.assert_array_equal(to_numpy(gl.all(t, dim=())), torch.all(r, dim=()).numpy())
