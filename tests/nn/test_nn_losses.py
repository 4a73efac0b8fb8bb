"""Losses: values against NumPy formulas (hand-written here), every reduction, gradients by
gradcheck (float64), the bad-target errors, stability for extreme logits."""
import math

import numpy as np
import pytest

import gradlab as gl
import gradlab.nn as nn
import gradlab.nn.functional as F
from gradlab.autograd import gradcheck


def _np(t):
    return t.detach().cpu().numpy()


def _t(a, device, grad=False, dtype=gl.float64):
    return gl.tensor(np.asarray(a), dtype=dtype, device=device, requires_grad=grad)


def _reduce(v, reduction):
    return {"none": v, "mean": v.mean(), "sum": v.sum()}[reduction]


def _log_softmax(x):
    z = x - x.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


REDUCTIONS = ["none", "mean", "sum"]


# -- cross-entropy / NLL ---------------------------------------------------------------------
def test_cross_entropy_hand_value(device):
    # logits (0, ln 3): p = (1/4, 3/4); -log p[1] = log(4/3)
    x = _t([[0.0, math.log(3.0)]], device)
    y = gl.tensor([1], device=device)
    assert F.cross_entropy(x, y).item() == pytest.approx(math.log(4 / 3), rel=1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_matches_formula(device, reduction, rng):
    x = rng.normal(size=(6, 4)) * 3
    y = np.array([0, 3, 1, 1, 2, -100])
    w = np.array([0.5, 1.0, 2.0, 1.5])
    logp = _log_softmax(x)
    rows = np.arange(5)
    s = 0.1
    # (1-s) w_y (-log p_y) + s/C sum_c w_c (-log p_c), ignored row -> 0
    per = (1 - s) * w[y[:5]] * -logp[rows, y[:5]] + s / 4 * (w * -logp[:5]).sum(1)
    per = np.append(per, 0.0)
    expected = {"none": per, "sum": per.sum(), "mean": per.sum() / w[y[:5]].sum()}[reduction]
    got = F.cross_entropy(_t(x, device), gl.tensor(y, device=device), weight=_t(w, device),
                          reduction=reduction, label_smoothing=s)
    np.testing.assert_allclose(_np(got), expected, rtol=1e-10)
    mod = nn.CrossEntropyLoss(weight=_t(w, device), reduction=reduction, label_smoothing=s)
    np.testing.assert_allclose(_np(mod(_t(x, device), gl.tensor(y, device=device))), expected,
                               rtol=1e-10)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_gradcheck(device, reduction, rng):
    x = _t(rng.normal(size=(5, 3)), device, grad=True)
    y = gl.tensor([0, 2, 1, -100, 2], device=device)
    w = _t([1.0, 2.0, 0.5], device)
    assert gradcheck(lambda a: F.cross_entropy(a, y, weight=w, reduction=reduction,
                                               label_smoothing=0.2), [x])
    assert gradcheck(lambda a: F.cross_entropy(a, y, reduction=reduction), [x])


def test_cross_entropy_spatial_and_1d_inputs(device, rng):
    x = rng.normal(size=(2, 3, 4))  # (N, C, d)
    y = rng.integers(0, 3, size=(2, 4))
    expected = -_log_softmax(x.transpose(0, 2, 1).reshape(-1, 3))[np.arange(8),
                                                                    y.reshape(-1)]
    got = F.cross_entropy(_t(x, device), gl.tensor(y, device=device), reduction="none")
    assert got.shape == (2, 4)
    np.testing.assert_allclose(_np(got).reshape(-1), expected, rtol=1e-10)
    one = F.cross_entropy(_t(x[0, :, 0], device), gl.tensor(int(y[0, 0]), device=device))
    assert one.item() == pytest.approx(expected[0], rel=1e-10)


def test_cross_entropy_probability_targets(device, rng):
    x = rng.normal(size=(4, 3))
    t = rng.dirichlet(np.ones(3), size=4)
    expected = -(t * _log_softmax(x)).sum(1).mean()
    got = F.cross_entropy(_t(x, device), _t(t, device))
    assert got.item() == pytest.approx(expected, rel=1e-10)
    xt = _t(x, device, grad=True)
    assert gradcheck(lambda a: F.cross_entropy(a, _t(t, device)), [xt])


def test_cross_entropy_extreme_logits_are_finite(device):
    x = gl.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 3e4]], device=device, requires_grad=True)
    y = gl.tensor([1, 0], device=device)
    loss = F.cross_entropy(x, y)
    loss.backward()
    # row 0: -log p_1 = 2e4; row 1: -log p_0 = 4e4
    assert loss.item() == pytest.approx(3e4, rel=1e-6)
    assert np.all(np.isfinite(_np(x.grad)))


def test_cross_entropy_float_class_target_names_dtype(device):
    x = gl.randn(3, 4, device=device)
    with pytest.raises(TypeError, match="float32.*target.long()"):
        F.cross_entropy(x, gl.tensor([0.0, 1.0, 2.0], device=device))


def test_cross_entropy_target_out_of_range_names_value(device):
    x = gl.randn(3, 4, device=device)
    with pytest.raises(IndexError, match="7"):
        F.cross_entropy(x, gl.tensor([0, 7, 1], device=device))
    with pytest.raises(IndexError, match="-3"):
        F.cross_entropy(x, gl.tensor([0, -3, 1], device=device))


def test_cross_entropy_shape_errors(device):
    x = gl.randn(3, 4, device=device)
    with pytest.raises(ValueError, match=r"target shape \(2,\)"):
        F.cross_entropy(x, gl.tensor([0, 1], device=device))
    with pytest.raises(ValueError, match="weight must have shape"):
        F.cross_entropy(x, gl.tensor([0, 1, 2], device=device), weight=gl.ones(3))
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(x, gl.tensor([0, 1, 2], device=device), reduction="avg")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss(device, reduction, rng):
    logp = _log_softmax(rng.normal(size=(5, 3)))
    y = np.array([2, 0, -100, 1, 1])
    w = np.array([1.0, 3.0, 0.5])
    keep = y != -100
    per = np.where(keep, -w[np.where(keep, y, 0)] * logp[np.arange(5), np.where(keep, y, 0)],
                   0)
    expected = {"none": per, "sum": per.sum(),
                "mean": per.sum() / w[y[keep]].sum()}[reduction]
    got = F.nll_loss(_t(logp, device), gl.tensor(y, device=device), weight=_t(w, device),
                     reduction=reduction)
    np.testing.assert_allclose(_np(got), expected, rtol=1e-12)
    x = _t(logp, device, grad=True)
    assert gradcheck(lambda a: nn.NLLLoss(weight=_t(w, device), reduction=reduction)(
        a, gl.tensor(y, device=device)), [x])
    with pytest.raises(IndexError, match="target 5 is out of bounds"):
        F.nll_loss(_t(logp, device), gl.tensor([0, 5, 1, 1, 1], device=device))


def test_log_softmax_plus_nll_equals_cross_entropy(device, rng):
    x = _t(rng.normal(size=(4, 5)), device)
    y = gl.tensor([4, 0, 2, 2], device=device)
    assert F.nll_loss(F.log_softmax(x, dim=1), y).item() == \
        pytest.approx(F.cross_entropy(x, y).item(), rel=1e-12)


# -- binary ----------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce(device, reduction, rng):
    p = rng.uniform(0.05, 0.95, size=(4, 3))
    y = rng.uniform(0, 1, size=(4, 3))
    w = rng.uniform(0.5, 2, size=(3,))
    per = -w * (y * np.log(p) + (1 - y) * np.log(1 - p))
    got = F.binary_cross_entropy(_t(p, device), _t(y, device), _t(w, device), reduction)
    np.testing.assert_allclose(_np(got), _reduce(per, reduction), rtol=1e-12)
    assert gradcheck(lambda a, b: F.binary_cross_entropy(a, b, _t(w, device), reduction),
                     [_t(p, device, True), _t(y, device, True)])


def test_bce_clamps_log_at_minus_100(device):
    got = F.binary_cross_entropy(_t([0.0, 1.0], device), _t([1.0, 0.0], device), reduction="none")
    np.testing.assert_allclose(_np(got), [100.0, 100.0])
    with pytest.raises(ValueError, match="probabilities in \\[0, 1\\], found 1.5"):
        F.binary_cross_entropy(_t([0.5, 1.5], device), _t([1.0, 0.0], device))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits(device, reduction, rng):
    x = rng.normal(size=(4, 3)) * 3
    y = rng.uniform(0, 1, size=(4, 3))
    pw = np.array([1.0, 2.0, 0.5])
    w = rng.uniform(0.5, 2, size=(4, 3))
    s = 1 / (1 + np.exp(-x))
    per = -w * (pw * y * np.log(s) + (1 - y) * np.log(1 - s))
    got = F.binary_cross_entropy_with_logits(_t(x, device), _t(y, device), _t(w, device),
                                             reduction, pos_weight=_t(pw, device))
    np.testing.assert_allclose(_np(got), _reduce(per, reduction), rtol=1e-10)
    mod = nn.BCEWithLogitsLoss(weight=_t(w, device), reduction=reduction,
                               pos_weight=_t(pw, device))
    np.testing.assert_allclose(_np(mod(_t(x, device), _t(y, device))), _reduce(per, reduction),
                               rtol=1e-10)
    assert gradcheck(lambda a, b: F.binary_cross_entropy_with_logits(
        a, b, reduction=reduction, pos_weight=_t(pw, device)),
        [_t(x, device, True), _t(y, device, True)])
    assert gradcheck(lambda a, b: F.binary_cross_entropy_with_logits(a, b, _t(w, device),
                                                                     reduction),
                     [_t(x, device, True), _t(y, device, True)])


def test_bce_with_logits_extreme_logits(device):
    x = gl.tensor([1e4, -1e4, 100.0], device=device, requires_grad=True)
    y = gl.tensor([0.0, 1.0, 1.0], device=device)
    loss = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    np.testing.assert_allclose(_np(loss), [1e4, 1e4, 0.0], atol=1e-6)
    loss.sum().backward()
    np.testing.assert_allclose(_np(x.grad), [1.0, -1.0, 0.0], atol=1e-6)


# -- regression ------------------------------------------------------------------------------
def _pair(device, rng, shape=(3, 4)):
    x = rng.normal(size=shape) * 2
    y = rng.normal(size=shape) * 2
    return x, y


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", ["mse", "l1", "huber", "smooth_l1"])
def test_regression_losses(device, rng, reduction, name):
    x, y = _pair(device, rng)
    d = x - y
    a = np.abs(d)
    ref = {"mse": d * d, "l1": a,
           "huber": np.where(a < 1.5, 0.5 * d * d, 1.5 * (a - 0.75)),
           "smooth_l1": np.where(a < 0.5, 0.5 * d * d / 0.5, a - 0.25)}[name]
    fn = {"mse": lambda a_, b_: F.mse_loss(a_, b_, reduction),
          "l1": lambda a_, b_: F.l1_loss(a_, b_, reduction),
          "huber": lambda a_, b_: F.huber_loss(a_, b_, reduction, delta=1.5),
          "smooth_l1": lambda a_, b_: F.smooth_l1_loss(a_, b_, reduction, beta=0.5)}[name]
    mod = {"mse": nn.MSELoss(reduction), "l1": nn.L1Loss(reduction),
           "huber": nn.HuberLoss(reduction, delta=1.5),
           "smooth_l1": nn.SmoothL1Loss(reduction, beta=0.5)}[name]
    np.testing.assert_allclose(_np(fn(_t(x, device), _t(y, device))), _reduce(ref, reduction),
                               rtol=1e-12)
    np.testing.assert_allclose(_np(mod(_t(x, device), _t(y, device))), _reduce(ref, reduction),
                               rtol=1e-12)
    assert gradcheck(fn, [_t(x, device, True), _t(y, device, True)])


def test_regression_shape_mismatch_is_an_error(device):
    with pytest.raises(ValueError, match=r"input shape \(3,\) and target shape \(3, 1\)"):
        F.mse_loss(gl.ones(3, device=device), gl.ones(3, 1, device=device))


# -- distributions ---------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", REDUCTIONS + ["batchmean"])
def test_kl_div(device, rng, reduction):
    logq = _log_softmax(rng.normal(size=(3, 4)))
    p = rng.dirichlet(np.ones(4), size=3)
    p[0, 1] = 0.0  # 0 log 0 = 0
    per = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1)) - logq), 0)
    expected = per.sum() / 3 if reduction == "batchmean" else _reduce(per, reduction)
    got = F.kl_div(_t(logq, device), _t(p, device), reduction=reduction)
    np.testing.assert_allclose(_np(got), expected, rtol=1e-12)
    got_log = nn.KLDivLoss(reduction=reduction, log_target=True)(
        _t(logq, device), _t(np.log(np.where(p > 0, p, 1e-300)), device))
    np.testing.assert_allclose(_np(got_log), expected, rtol=1e-9, atol=1e-12)
    assert gradcheck(lambda a: F.kl_div(a, _t(p, device), reduction=reduction),
                     [_t(logq, device, True)])
    assert gradcheck(lambda a, b: F.kl_div(a, b, reduction=reduction, log_target=True),
                     [_t(logq, device, True), _t(_log_softmax(rng.normal(size=(3, 4))),
                                                 device, True)])


@pytest.mark.parametrize("log_input", [True, False])
@pytest.mark.parametrize("full", [False, True])
def test_poisson_nll(device, rng, log_input, full):
    x = rng.uniform(0.2, 2.0, size=(3, 4))
    y = rng.integers(0, 5, size=(3, 4)).astype(float)
    per = np.exp(x) - y * x if log_input else x - y * np.log(x + 1e-8)
    if full:
        ys = np.where(y > 1, y, 1)
        per = per + np.where(y > 1, ys * np.log(ys) - ys + 0.5 * np.log(2 * np.pi * ys), 0)
    got = nn.PoissonNLLLoss(log_input=log_input, full=full)(_t(x, device), _t(y, device))
    assert got.item() == pytest.approx(per.mean(), rel=1e-12)
    assert gradcheck(lambda a: F.poisson_nll_loss(a, _t(y, device), log_input, full),
                     [_t(x, device, True)])


@pytest.mark.parametrize("full", [False, True])
def test_gaussian_nll(device, rng, full):
    x, y = _pair(device, rng, (4, 3))
    var = rng.uniform(0.1, 2, size=(4, 3))
    var[0, 0] = 1e-9  # clamped to eps
    v = np.maximum(var, 1e-6)
    per = 0.5 * (np.log(v) + (x - y) ** 2 / v) + (0.5 * math.log(2 * math.pi) if full else 0)
    got = nn.GaussianNLLLoss(full=full, reduction="sum")(_t(x, device), _t(y, device),
                                                          _t(var, device))
    assert got.item() == pytest.approx(per.sum(), rel=1e-12)
    var1 = rng.uniform(0.5, 2, size=(4,))  # homoscedastic: one variance per sample
    per1 = 0.5 * (np.log(var1)[:, None] + (x - y) ** 2 / var1[:, None])
    assert F.gaussian_nll_loss(_t(x, device), _t(y, device), _t(var1, device)).item() == \
        pytest.approx(per1.mean(), rel=1e-12)
    assert gradcheck(lambda a, b, c: F.gaussian_nll_loss(a, b, c),
                     [_t(x, device, True), _t(y, device, True), _t(var1, device, True)])
    with pytest.raises(ValueError, match="negative"):
        F.gaussian_nll_loss(_t(x, device), _t(y, device), _t(-np.ones((4, 3)), device))
    # A Python number is one variance for every expectation, whatever the input's shape
    per0 = 0.5 * (math.log(0.25) + (x - y) ** 2 / 0.25)
    for var0 in (0.25, np.float64(0.25)):
        assert F.gaussian_nll_loss(_t(x, device), _t(y, device), var0).item() == \
            pytest.approx(per0.mean(), rel=1e-12)
    with pytest.raises(ValueError, match="negative"):
        F.gaussian_nll_loss(_t(x, device), _t(y, device), -1.0)
    with pytest.raises(TypeError, match="positive number"):
        F.gaussian_nll_loss(_t(x, device), _t(y, device), True)


# -- margins ---------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_multi_margin(device, rng, p, reduction):
    x = rng.normal(size=(4, 3))
    y = np.array([0, 2, 1, 2])
    w = np.array([1.0, 2.0, 0.5])
    per = np.zeros(4)
    for i in range(4):
        for j in range(3):
            if j != y[i]:
                per[i] += w[y[i]] * max(0.0, 0.7 - x[i, y[i]] + x[i, j]) ** p / 3
    got = nn.MultiMarginLoss(p=p, margin=0.7, weight=_t(w, device), reduction=reduction)(
        _t(x, device), gl.tensor(y, device=device))
    np.testing.assert_allclose(_np(got), _reduce(per, reduction), rtol=1e-12)
    assert gradcheck(lambda a: F.multi_margin_loss(a, gl.tensor(y, device=device), p, 0.7,
                                                   _t(w, device), reduction),
                     [_t(x, device, True)])
    with pytest.raises(IndexError, match="target 3 is out of bounds"):
        F.multi_margin_loss(_t(x, device), gl.tensor([0, 3, 1, 1], device=device))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_hinge_embedding(device, rng, reduction):
    x = rng.normal(size=(5,))
    y = np.array([1.0, -1.0, 1.0, -1.0, -1.0])
    per = np.where(y == 1, x, np.maximum(0, 1.5 - x))
    got = nn.HingeEmbeddingLoss(margin=1.5, reduction=reduction)(_t(x, device), _t(y, device))
    np.testing.assert_allclose(_np(got), _reduce(per, reduction), rtol=1e-12)
    assert gradcheck(lambda a: F.hinge_embedding_loss(a, _t(y, device), 1.5, reduction),
                     [_t(x, device, True)])


def test_loss_module_rejects_unknown_reduction():
    with pytest.raises(ValueError, match="reduction must be one of"):
        nn.MSELoss(reduction="average")
    with pytest.raises(ValueError, match="'batchmean'"):
        nn.KLDivLoss(reduction="avg")
