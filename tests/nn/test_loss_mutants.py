"""Loss details that `make mutate` found unchecked in gradlab/functional/loss.py: defaults,
the argument errors and the function they name, weights, label smoothing with probability
targets, and the shapes gaussian_nll_loss accepts for var."""
import math

import numpy as np
import pytest
from grad_dtype_probe import GradDtype

import gradlab as gl
import gradlab.nn.functional as F


def _t(values, dtype=np.float64, grad=False):
    return gl.tensor(np.asarray(values, dtype=dtype), requires_grad=grad)


def _v(t):
    return t.detach().numpy()


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    z = x - x.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_probability_targets_with_weight_and_label_smoothing():
    x = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    p = np.array([[0.2, 0.5, 0.3], [1.0, 0.0, 0.0]])
    w = np.array([0.5, 1.0, 2.0])
    s = 0.1
    t = p * (1 - s) + s / 3
    rows = -(w * t * _log_softmax(x)).sum(-1)
    for reduction, ref in [("none", rows), ("sum", rows.sum()), ("mean", rows.mean())]:
        got = F.cross_entropy(_t(x), _t(p), weight=_t(w), label_smoothing=s,
                              reduction=reduction)
        assert np.allclose(_v(got), ref, rtol=1e-12), reduction
    plain = -(p * _log_softmax(x)).sum(-1)
    assert np.allclose(_v(F.cross_entropy(_t(x), _t(p))), plain.mean(), rtol=1e-12)


X23 = [[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]]
Y23 = [[1.0, 0.0, 0.5], [0.0, 2.0, -1.0]]
P23 = [[0.2, 0.9, 0.5], [0.0, 1.0, 0.7]]
HINGE_T = [[1.0, -1.0, 1.0], [-1.0, -1.0, 1.0]]

# name -> (function, input, target): every loss taking two same-shaped tensors
PAIRS = {
    "mse_loss": (F.mse_loss, X23, Y23),
    "l1_loss": (F.l1_loss, X23, Y23),
    "huber_loss": (F.huber_loss, X23, Y23),
    "smooth_l1_loss": (F.smooth_l1_loss, X23, Y23),
    "kl_div": (F.kl_div, X23, P23),
    "poisson_nll_loss": (F.poisson_nll_loss, X23, Y23),
    "binary_cross_entropy": (F.binary_cross_entropy, P23, P23),
    "binary_cross_entropy_with_logits": (F.binary_cross_entropy_with_logits, X23, P23),
    "hinge_embedding_loss": (F.hinge_embedding_loss, X23, HINGE_T),
}


@pytest.mark.parametrize("name", list(PAIRS) + ["gaussian_nll_loss"])
def test_every_loss_names_itself_in_its_argument_errors(name):
    fn, x, y = PAIRS.get(name, (F.gaussian_nll_loss, X23, Y23))
    extra = (_t(np.ones((2, 3))),) if name == "gaussian_nll_loss" else ()
    allowed = "'none', 'mean', 'sum'" + (", 'batchmean'" if name == "kl_div" else "")
    with pytest.raises(ValueError, match=rf"^{name}: reduction must be one of {allowed}, got "
                                         r"'avg'$"):
        fn(_t(x), _t(y), *extra, reduction="avg")
    with pytest.raises(ValueError, match=rf"^{name}: input shape \(2, 3\) and target shape "
                                         rf"\(3, 2\) differ; they must be equal$"):
        fn(_t(x), _t(np.asarray(y).T), *extra)


def _ref(name, x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    d = x - y
    a = np.abs(d)
    if name == "mse_loss":
        return d * d
    if name == "l1_loss":
        return a
    if name in ("huber_loss", "smooth_l1_loss"):  # delta = beta = 1
        return np.where(a < 1, 0.5 * d * d, a - 0.5)
    if name == "kl_div":
        safe = np.where(y > 0, y, 1.0)
        return np.where(y > 0, y * (np.log(safe) - x), 0.0)
    if name == "poisson_nll_loss":
        return np.exp(x) - y * x
    if name == "binary_cross_entropy":
        return -(y * np.maximum(np.log(x, where=x > 0, out=np.full_like(x, -np.inf)), -100)
                 + (1 - y) * np.maximum(np.log(1 - x, where=x < 1,
                                               out=np.full_like(x, -np.inf)), -100))
    if name == "binary_cross_entropy_with_logits":
        return (1 - y) * x + np.log1p(np.exp(-x))
    if name == "hinge_embedding_loss":  # margin 1
        return np.where(y == 1, x, np.maximum(0, 1 - x))
    raise AssertionError(name)


@pytest.mark.parametrize("name", list(PAIRS))
def test_every_loss_with_its_defaults_is_the_mean_of_its_formula(name):
    fn, x, y = PAIRS[name]
    rows = _ref(name, x, y)
    with np.errstate(all="ignore"):
        assert float(_v(fn(_t(x), _t(y)))) == pytest.approx(rows.mean(), rel=1e-12)
        assert float(_v(fn(_t(x), _t(y), reduction="sum"))) == pytest.approx(rows.sum(),
                                                                              rel=1e-12)
        assert np.allclose(_v(fn(_t(x), _t(y), reduction="none")), rows, rtol=1e-12)


def test_huber_and_smooth_l1_parameters():
    x, y = _t([0.0, 0.0, 0.0]), _t([0.5, 1.5, -3.0])
    assert _v(F.huber_loss(x, y, reduction="none", delta=2.0)).tolist() == \
        pytest.approx([0.125, 1.125, 2 * (3 - 1)])
    assert _v(F.smooth_l1_loss(x, y, reduction="none", beta=2.0)).tolist() == \
        pytest.approx([0.0625, 0.5625, 2.0])
    # beta = 0 is the L1 loss, under every reduction
    assert _v(F.smooth_l1_loss(x, y, beta=0.0, reduction="none")).tolist() == [0.5, 1.5, 3.0]
    assert float(_v(F.smooth_l1_loss(x, y, beta=0.0, reduction="sum"))) == 5.0
    assert float(_v(F.smooth_l1_loss(x, y, beta=0.0))) == pytest.approx(5 / 3)
    # a small positive delta is allowed (only <= 0 is refused)
    assert float(_v(F.huber_loss(x, y, delta=0.5, reduction="sum"))) == \
        pytest.approx(0.5 * (0.5 - 0.25) + 0.5 * (1.5 - 0.25) + 0.5 * (3 - 0.25))
    with pytest.raises(ValueError, match=r"^huber_loss: delta must be positive, got 0$"):
        F.huber_loss(x, y, delta=0)
    with pytest.raises(ValueError, match=r"^smooth_l1_loss: beta must be >= 0, got -1$"):
        F.smooth_l1_loss(x, y, beta=-1)


def test_hinge_embedding_loss_margin():
    x, y = _t([0.5, 0.5, 3.0]), _t([1.0, -1.0, -1.0])
    assert _v(F.hinge_embedding_loss(x, y, margin=2.0, reduction="none")).tolist() == \
        [0.5, 1.5, 0.0]
    x = _t([0.5, 1.0], grad=True)
    F.hinge_embedding_loss(x, _t([-1.0, 1.0])).backward()
    assert _v(x.grad).tolist() == [-0.5, 0.5]


def test_kl_div_batchmean_log_target_and_zero_targets():
    x = np.log([[0.2, 0.8], [0.5, 0.5]])
    p = np.array([[0.0, 1.0], [0.25, 0.75]])
    rows = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1)) - x), 0.0)
    assert float(_v(F.kl_div(_t(x), _t(p), reduction="batchmean"))) == \
        pytest.approx(rows.sum() / 2, rel=1e-12)
    with np.errstate(divide="ignore"):
        lp = np.log(p)
    got = F.kl_div(_t(x), _t(np.where(p > 0, lp, -1e30)), reduction="sum", log_target=True)
    assert float(_v(got)) == pytest.approx(rows.sum(), rel=1e-12)
    xt = _t(x, grad=True)
    loss = F.kl_div(xt, _t(p), reduction="sum")
    loss.backward()
    assert np.isfinite(float(_v(loss))) and _v(xt.grad).tolist() == (-p).tolist()
    # 1-d input: batchmean divides by the length of the batch dimension
    assert float(_v(F.kl_div(_t(x[0]), _t(p[0]), reduction="batchmean"))) == \
        pytest.approx(rows[0].sum() / 2, rel=1e-12)
    # 0-d input: batchmean is the sum
    assert float(_v(F.kl_div(_t(x[1, 0]), _t(p[1, 0]), reduction="batchmean"))) == \
        pytest.approx(rows[1, 0], rel=1e-12)


def test_poisson_nll_options():
    x, y = np.array([0.5, 2.0, 3.0]), np.array([0.0, 1.0, 4.0])
    got = _v(F.poisson_nll_loss(_t(x), _t(y), log_input=False, reduction="none"))
    assert np.allclose(got, x - y * np.log(x + 1e-8), rtol=1e-12)
    got = _v(F.poisson_nll_loss(_t([0.0]), _t([1.0]), log_input=False, eps=0.5,
                                reduction="none"))
    assert got.tolist() == pytest.approx([-math.log(0.5)])
    stirling = np.where(y > 1, y * np.log(np.where(y > 1, y, 1)) - y
                        + 0.5 * np.log(2 * math.pi * np.where(y > 1, y, 1)), 0.0)
    got = _v(F.poisson_nll_loss(_t(x), _t(y), full=True, reduction="none"))
    assert np.allclose(got, np.exp(x) - y * x + stirling, rtol=1e-12)
    assert stirling[1] == 0.0  # y == 1 gets no term


def test_bce_errors_name_the_first_bad_value_and_the_logs_are_clamped_silently():
    for bad, values in [(1.5, [[0.0, 0.2], [1.5, -0.5]]), (-0.5, [[1.0, 0.2], [-0.5, 2.0]])]:
        with pytest.raises(ValueError, match=rf"^binary_cross_entropy: input values must be "
                                             rf"probabilities in \[0, 1\], found {bad}; for "
                                             r"logits use binary_cross_entropy_with_logits$"):
            F.binary_cross_entropy(_t(values), _t(np.zeros((2, 2))))
    import warnings
    x, y = _t([0.0, 1.0, 0.5], grad=True), _t([1.0, 0.0, 1.0], grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = F.binary_cross_entropy(x, y, reduction="sum")
        loss.backward()
    assert float(_v(loss)) == pytest.approx(200 + math.log(2))
    # d/dy = log(1 - x) - log(x), each log clamped at -100
    assert _v(y.grad).tolist() == pytest.approx([100.0, -100.0, 0.0])


def test_bce_weight_and_pos_weight_broadcast_over_the_last_dim():
    x, y = np.array(X23), np.array(P23)
    w = np.array([1.0, 2.0, 0.5])
    pw = np.array([3.0, 1.0, 0.5])
    sp = np.log1p(np.exp(-x))
    rows = w * ((1 - y) * x + (1 + (pw - 1) * y) * sp)
    got = F.binary_cross_entropy_with_logits(_t(x), _t(y), weight=_t(w), pos_weight=_t(pw),
                                             reduction="none")
    assert np.allclose(_v(got), rows, rtol=1e-12)
    got = F.binary_cross_entropy_with_logits(_t(x), _t(y), weight=[1.0, 2.0, 0.5])
    assert float(_v(got)) == pytest.approx((w * ((1 - y) * x + sp)).mean(), rel=1e-12)
    p = np.clip(y, 0.1, 0.9)
    got = F.binary_cross_entropy(_t(p), _t(y), weight=_t(w), reduction="none")
    assert np.allclose(_v(got), -w * (y * np.log(p) + (1 - y) * np.log(1 - p)), rtol=1e-12)


def test_gaussian_nll_var_shapes_and_checks():
    x, y = np.array(X23), np.array(Y23)
    d2 = (x - y) ** 2
    full = 0.5 * (np.log(2.0) + d2 / 2.0)
    for var in (np.full((2, 3), 2.0).tolist(), _t(np.full((2, 3), 2.0)), _t([2.0, 2.0]),
                _t([[2.0], [2.0]])):
        got = F.gaussian_nll_loss(_t(x), _t(y), var, reduction="none")
        assert np.allclose(_v(got), full, rtol=1e-12), var
    # A number is the variance of a 1-d input (its shape () is the input's less the last dim).
    got = F.gaussian_nll_loss(_t(x[0]), _t(y[0]), 2.0, full=True)
    assert float(_v(got)) == pytest.approx((full[0] + 0.5 * math.log(2 * math.pi)).mean())
    got = F.gaussian_nll_loss(_t(x), _t(y), np.zeros((2, 3)), eps=0.5,
                              reduction="none")  # var 0: eps
    assert np.allclose(_v(got), 0.5 * (np.log(0.5) + d2 / 0.5), rtol=1e-12)
    assert F.gaussian_nll_loss(_t(x[0], dtype=np.float32), _t(y[0], dtype=np.float32),
                               2.0).dtype == np.float32
    for bad in ([2.0, 2.0, 2.0], [[2.0, 2.0]], [[[2.0]], [[2.0]]], [[2.0, 2.0], [2.0, 2.0]]):
        with pytest.raises(ValueError, match=rf"^gaussian_nll_loss: var shape "
                                             rf"{re_shape(np.shape(bad))} must equal the input "
                                             r"shape \(2, 3\), or it with the last dim 1 or "
                                             r"dropped$"):
            F.gaussian_nll_loss(_t(x), _t(y), _t(bad))
    with pytest.raises(ValueError,
                       match=r"^gaussian_nll_loss: var has negative entries \(-1\.0\)$"):
        F.gaussian_nll_loss(_t(x), _t(y), _t(np.full((2, 3), -1.0)))
    F.gaussian_nll_loss(_t(x), _t(y), _t(np.zeros((2, 3))))  # 0 is allowed (clamped to eps)


def re_shape(shape):
    import re
    return re.escape(str(tuple(shape)))


LOGP = np.log([[0.2, 0.3, 0.5], [0.6, 0.1, 0.3], [0.25, 0.25, 0.5]])


def test_nll_loss_weights_ignore_index_and_reductions():
    y = [2, 0, 1]
    w = np.array([1.0, 2.0, 3.0])
    rows = -LOGP[np.arange(3), y] * w[y]
    assert _v(F.nll_loss(_t(LOGP), _t(y, np.int64), _t(w), reduction="none")).tolist() == \
        pytest.approx(rows.tolist())
    assert float(_v(F.nll_loss(_t(LOGP), _t(y, np.int64), _t(w)))) == \
        pytest.approx(rows.sum() / w[y].sum())
    ign = F.nll_loss(_t(LOGP), _t([2, -100, 1], np.int64), reduction="none")
    assert _v(ign).tolist() == pytest.approx([-LOGP[0, 2], 0.0, -LOGP[2, 1]])
    assert float(_v(F.nll_loss(_t(LOGP), _t([2, 7, 1], np.int64), ignore_index=7))) == \
        pytest.approx((-LOGP[0, 2] - LOGP[2, 1]) / 2)
    # One class, an ignored row: the ignored row looks up class 0, which exists.
    one = F.nll_loss(_t([[-0.5], [-1.0]]), _t([0, -100], np.int64), reduction="sum")
    assert float(_v(one)) == 0.5


def test_nll_loss_of_one_row():
    lp = _t(LOGP[0], grad=True)
    assert float(_v(F.nll_loss(lp, _t(2, np.int64)))) == pytest.approx(-LOGP[0, 2])
    none = F.nll_loss(lp, _t(2, np.int64), reduction="none")
    assert none.shape == () and float(_v(none)) == pytest.approx(-LOGP[0, 2])
    w = _t([1.0, 1.0, 4.0])
    assert float(_v(F.nll_loss(lp, _t(2, np.int64), w, reduction="sum"))) == \
        pytest.approx(-4 * LOGP[0, 2])
    assert float(_v(F.nll_loss(lp, _t(-1, np.int64), ignore_index=-1, reduction="sum"))) == 0
    F.nll_loss(lp, _t(1, np.int64)).backward()
    assert _v(lp.grad).tolist() == [0.0, -1.0, 0.0]
    with pytest.raises(ValueError, match=r"^nll_loss: input of shape \(3,\) is read as ONE "
                                         r"sample's log-probabilities over 3 classes, so target "
                                         r"must be one class index \(shape \(\)\), got shape "
                                         r"\(1,\); for a batch pass input of shape \(N, C\), "
                                         r"e.g. log_softmax of \(N, C\) logits$"):
        F.nll_loss(lp, _t([1], np.int64))


def test_nll_loss_errors():
    with pytest.raises(ValueError, match=r"^nll_loss: reduction must be one of"):
        F.nll_loss(_t(LOGP), _t([0, 1, 2], np.int64), reduction="avg")
    # (N, C, d1) takes targets (N, d1): (1, 3, 3) with (1, 3) is valid, (3,) is not
    with pytest.raises(ValueError, match=r"^nll_loss: target shape \(3,\) does not match input "
                                         r"shape \(1, 3, 3\): expected \(1, 3\) \(the input "
                                         r"without its class dim 1\)$"):
        F.nll_loss(_t(LOGP[None]), _t([0, 1, 2], np.int64))
    with pytest.raises(TypeError, match=r"^nll_loss: target has dtype float64"):
        F.nll_loss(_t(LOGP), _t([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"^nll_loss: target shape \(2,\) does not match input "
                                         r"shape \(3, 3\): expected \(3,\)$"):
        F.nll_loss(_t(LOGP), _t([0, 1], np.int64))
    for bad in (3, -1):
        with pytest.raises(IndexError, match=rf"^nll_loss: target {bad} is out of bounds for 3 "
                                             r"classes \(valid targets are 0..2, or "
                                             r"ignore_index=-100\)$"):
            F.nll_loss(_t(LOGP), _t([0, bad, 1], np.int64))


def test_nll_loss_keeps_float32_in_value_and_gradient():
    lp = _t(LOGP, dtype=np.float32, grad=True)
    loss = F.nll_loss(lp, _t([2, 0, 1], np.int64))
    assert loss.dtype == np.float32
    loss.backward()
    assert lp.grad.dtype == np.float32
    assert np.allclose(_v(lp.grad), [[0, 0, -1 / 3], [-1 / 3, 0, 0], [0, -1 / 3, 0]])


def test_multi_margin_loss_values():
    x = np.array([[0.1, 0.2, 0.4], [0.9, 0.2, 0.1]])
    y = [2, 0]

    def ref(p=1, margin=1.0, w=None):
        out = []
        for i, c in enumerate(y):
            h = np.maximum(0, margin - x[i, c] + x[i]) ** p
            h[c] = 0
            out.append(h.sum() * (1 if w is None else w[c]) / 3)
        return np.array(out)

    yt = _t(y, np.int64)
    assert _v(F.multi_margin_loss(_t(x), yt, reduction="none")).tolist() == \
        pytest.approx(ref().tolist())
    assert float(_v(F.multi_margin_loss(_t(x), yt))) == pytest.approx(ref().mean())
    assert _v(F.multi_margin_loss(_t(x), yt, p=2, reduction="none")).tolist() == \
        pytest.approx(ref(p=2).tolist())
    assert _v(F.multi_margin_loss(_t(x), yt, margin=2.0, reduction="none")).tolist() == \
        pytest.approx(ref(margin=2.0).tolist())
    w = np.array([0.5, 1.0, 3.0])
    assert _v(F.multi_margin_loss(_t(x), yt, weight=_t(w), reduction="none")).tolist() == \
        pytest.approx(ref(w=w).tolist())
    f32 = F.multi_margin_loss(_t(x, np.float32), yt, reduction="none")
    assert f32.dtype == np.float32
    # one row
    one = F.multi_margin_loss(_t(x[0]), _t(2, np.int64), reduction="none")
    assert one.shape == () and float(_v(one)) == pytest.approx(ref()[0])
    assert float(_v(F.multi_margin_loss(_t(x[0]), _t(2, np.int64)))) == pytest.approx(ref()[0])
    assert F.multi_margin_loss(_t(x), yt, reduction="none").shape == (2,)


def test_multi_margin_loss_errors():
    x, y = _t(np.zeros((2, 3))), _t([0, 1], np.int64)
    with pytest.raises(ValueError, match=r"^multi_margin_loss: reduction must be one of"):
        F.multi_margin_loss(x, y, reduction="avg")
    with pytest.raises(ValueError, match=r"^multi_margin_loss: p must be 1 or 2, got 3$"):
        F.multi_margin_loss(x, y, p=3)
    with pytest.raises(ValueError, match=r"^multi_margin_loss: input must be \(N, C\) or "
                                         r"\(C,\), got \(1, 2, 3\)$"):
        F.multi_margin_loss(_t(np.zeros((1, 2, 3))), y)
    with pytest.raises(TypeError, match=r"^multi_margin_loss: target has dtype float64"):
        F.multi_margin_loss(x, _t([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"^multi_margin_loss: target shape \(3,\) must be "
                                         r"\(2,\)$"):
        F.multi_margin_loss(x, _t([0, 1, 2], np.int64))
    with pytest.raises(IndexError, match=r"^multi_margin_loss: target 3 is out of bounds for 3 "
                                         r"classes$"):
        F.multi_margin_loss(x, _t([0, 3], np.int64))


def test_cross_entropy_argument_errors():
    x = _t(np.zeros((2, 3)))
    y = _t([0, 1], np.int64)
    for s in (-0.1, 1.1):
        with pytest.raises(ValueError, match=rf"^cross_entropy: label_smoothing must be in "
                                             rf"\[0, 1\], got {s}$"):
            F.cross_entropy(x, y, label_smoothing=s)
    F.cross_entropy(x, y, label_smoothing=1.0)
    F.cross_entropy(x, y, label_smoothing=0.0)
    with pytest.raises(ValueError, match=r"^cross_entropy: input must have a class dimension, "
                                         r"got a 0-d tensor$"):
        F.cross_entropy(_t(1.0), _t(0, np.int64))
    with pytest.raises(TypeError, match=r"^cross_entropy: input \(logits\) must be floating "
                                        r"point, got int64$"):
        F.cross_entropy(_t([[1, 2]], np.int64), _t([0], np.int64))
    with pytest.raises(ValueError, match=r"^cross_entropy: weight must have shape \(3,\) \(one "
                                         r"per class\), got \(2,\)$"):
        F.cross_entropy(x, y, weight=_t([1.0, 2.0]))
    with pytest.raises(TypeError, match=r"^cross_entropy: target must be a Tensor of class "
                                        r"indices, got list$"):
        F.cross_entropy(x, [0, 1])
    with pytest.raises(TypeError, match=r"^cross_entropy: target has dtype bool; expected int64 "
                                        r"class indices$"):
        F.cross_entropy(x, _t([True, False], bool))
    with pytest.raises(ValueError, match=r"^cross_entropy: for a 1-d input \(one row of 3 "
                                         r"logits\) the target must be a 0-d class index, got "
                                         r"shape \(1,\)$"):
        F.cross_entropy(_t([0.0, 1.0, 2.0]), _t([1], np.int64))
    with pytest.raises(ValueError, match=r"^cross_entropy: target shape \(3,\) does not match "
                                         r"the input shape \(2, 3\): expected \(2,\) \(one class "
                                         r"index per row\)$"):
        F.cross_entropy(x, _t([0, 1, 2], np.int64))


def test_gaussian_nll_var_shapes_of_a_3d_input():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2, 4, 3)), rng.normal(size=(2, 4, 3))
    v = rng.uniform(0.5, 2.0, size=(2, 4))
    ref = 0.5 * (np.log(v[..., None]) + (x - y) ** 2 / v[..., None])
    for var in (v, v[..., None], np.broadcast_to(v[..., None], (2, 4, 3))):
        got = F.gaussian_nll_loss(_t(x), _t(y), _t(var), reduction="none")
        assert got.shape == (2, 4, 3) and np.allclose(_v(got), ref, rtol=1e-12)
    for bad in ((4, 1), (2, 1, 3), (1, 4, 1)):
        with pytest.raises(ValueError, match=r"^gaussian_nll_loss: var shape "):
            F.gaussian_nll_loss(_t(x), _t(y), _t(np.ones(bad)))
    with pytest.raises(ValueError, match=r"^gaussian_nll_loss: var shape \(3, 1\) must equal"):
        F.gaussian_nll_loss(_t(X23), _t(Y23), _t(np.ones((3, 1))))


def test_zero_inputs_where_the_formula_has_no_term_give_zero_not_nan():
    # kl_div: a 0 target next to a log-probability of 0; hinge: an input of 0
    x, p = _t([[0.0, -1.0]], grad=True), _t([[0.0, 1.0]])
    loss = F.kl_div(x, p, reduction="sum")
    loss.backward()
    assert float(_v(loss)) == 1.0 and _v(x.grad).tolist() == [[0.0, -1.0]]
    h = _t([0.0, 0.0, 2.0], grad=True)
    loss = F.hinge_embedding_loss(h, _t([1.0, -1.0, -1.0]), reduction="none")
    assert _v(loss).tolist() == [0.0, 1.0, 0.0]
    loss.sum().backward()
    assert _v(h.grad).tolist() == [1.0, -1.0, 0.0]


def test_probability_target_of_one_row():
    x, p = np.array([1.0, 2.0, 0.5]), np.array([0.2, 0.5, 0.3])
    ref = -(p * _log_softmax(x[None])[0]).sum()
    for reduction in ("mean", "sum", "none"):
        got = F.cross_entropy(_t(x), _t(p), reduction=reduction)
        assert got.shape == () and float(_v(got)) == pytest.approx(ref, rel=1e-12)


def test_cross_entropy_dtypes_of_weights_and_targets():
    x = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], np.float32)
    w64 = np.array([0.5, 1.0, 2.0])
    y = np.array([1, 2])
    rows = -_log_softmax(x)[np.arange(2), y] * w64[y]
    got = F.cross_entropy(_t(x, np.float32), _t(y, np.int64), weight=_t(w64))
    assert got.dtype == np.float32  # a float64 weight is cast to the logits' dtype
    assert float(_v(got)) == pytest.approx(rows.sum() / w64[y].sum(), rel=1e-6)
    plain = F.cross_entropy(_t(x, np.float32), _t(y, np.int64))
    assert plain.dtype == np.float32
    for dt in (np.int32, np.uint8, np.int16):  # any integer class indices
        other = F.cross_entropy(_t(x, np.float32), _t(y, dt), weight=_t(w64))
        assert float(_v(other)) == float(_v(got))


def test_cross_entropy_of_one_class_with_an_ignored_row_and_a_weight():
    x = _t([[0.5], [2.0]])
    got = F.cross_entropy(x, _t([0, -100], np.int64), weight=_t([2.0]))
    assert float(_v(got)) == 0.0  # log_softmax over one class is 0
    got = F.cross_entropy(x, _t([0, -100], np.int64), weight=_t([2.0]), reduction="sum")
    assert float(_v(got)) == 0.0


@pytest.mark.skipif(not gl.cuda.is_available(), reason="needs a CUDA device (real or emulated)")
def test_losses_with_weight_tensors_on_a_cuda_device():
    # Not marked `cuda` (see tests/data/test_loader_mutants.py): runs on the emulated device.
    x, y = np.array(X23), np.array(P23)
    w = np.array([1.0, 2.0, 0.5])
    ref = F.binary_cross_entropy_with_logits(_t(x), _t(y), weight=_t(w), pos_weight=_t(w))
    dev = dict(device="cuda")
    wt = gl.tensor(w, requires_grad=True, **dev)
    got = F.binary_cross_entropy_with_logits(gl.tensor(x, **dev), gl.tensor(y, **dev),
                                             weight=wt, pos_weight=gl.tensor(w, **dev))
    assert float(got.detach().cpu().numpy()) == pytest.approx(float(_v(ref)), rel=1e-12)
    with pytest.raises(RuntimeError, match=r"^cross_entropy: input is on cuda(:0)? but target "
                                           r"on cpu$"):
        F.cross_entropy(gl.tensor(x, **dev), _t([0, 1], np.int64))


def test_class_index_losses_name_themselves_in_reduction_errors():
    x, y = _t(np.zeros((2, 3))), _t([0, 1], np.int64)
    for fn, name in ((F.cross_entropy, "cross_entropy"), (F.nll_loss, "nll_loss"),
                     (F.multi_margin_loss, "multi_margin_loss")):
        with pytest.raises(ValueError, match=rf"^{name}: reduction must be one of 'none', "
                                             r"'mean', 'sum', got 'avg'$"):
            fn(x, y, reduction="avg")


def test_nll_loss_of_one_row_unreduced_with_weight_and_ignore_index():
    lp = _t(LOGP[0])
    w = _t([1.0, 1.0, 4.0])
    got = F.nll_loss(lp, _t(2, np.int64), w, reduction="none")
    assert got.shape == () and float(_v(got)) == pytest.approx(-4 * LOGP[0, 2])
    got = F.nll_loss(lp, _t(2, np.int64), w, ignore_index=2, reduction="none")
    assert got.shape == () and float(_v(got)) == 0.0


def test_nll_loss_target_shape_error_names_the_batch_size():
    lp = _t(np.log(np.full((3, 4), 0.25)))
    with pytest.raises(ValueError, match=r"^nll_loss: target shape \(2,\) does not match input "
                                         r"shape \(3, 4\): expected \(3,\)$"):
        F.nll_loss(lp, _t([0, 1], np.int64))


def test_multi_margin_loss_with_a_float64_weight_keeps_float32():
    x = _t([[0.1, 0.2, 0.4], [0.9, 0.2, 0.1]], np.float32)
    got = F.multi_margin_loss(x, _t([2, 0], np.int64), weight=_t([0.5, 1.0, 3.0]),
                              reduction="none")
    assert got.dtype == np.float32


_W64 = np.array([0.5, 2.0, 1.5])  # float64 class weights for a float32 model
_T = np.array([0, 2, 1, 2])
_WEIGHTED = {
    "cross_entropy": lambda x: F.cross_entropy(x, _t(_T, np.int64), weight=_t(_W64)),
    "cross_entropy_ignore": lambda x: F.cross_entropy(x, _t([0, -100, 1, 2], np.int64),
                                                      weight=_t(_W64)),
    "cross_entropy_smoothing": lambda x: F.cross_entropy(x, _t(_T, np.int64), weight=_t(_W64),
                                                         label_smoothing=0.1),
    "cross_entropy_probs": lambda x: F.cross_entropy(x, _t(np.eye(3)[_T], np.float32),
                                                     weight=_t(_W64)),
    "nll_loss": lambda x: F.nll_loss(F.log_softmax(x, dim=1), _t(_T, np.int64),
                                     weight=_t(_W64)),
    "nll_loss_plain": lambda x: F.nll_loss(F.log_softmax(x, dim=1), _t(_T, np.int64)),
    "multi_margin": lambda x: F.multi_margin_loss(x, _t(_T, np.int64), weight=_t(_W64)),
    "bce": lambda x: F.binary_cross_entropy(F.sigmoid(x), _t(np.full((4, 3), 0.25), np.float32),
                                            weight=_t(_W64)),
    "bce_logits": lambda x: F.binary_cross_entropy_with_logits(
        x, _t(np.full((4, 3), 0.25), np.float32), weight=_t(_W64), pos_weight=_t(_W64)),
}


@pytest.mark.parametrize("name", sorted(_WEIGHTED))
def test_float64_weights_give_a_float32_model_float32_gradients(name):
    x = _t(np.linspace(-2.0, 2.0, 12).reshape(4, 3), np.float32, grad=True)
    GradDtype.seen.clear()
    loss = _WEIGHTED[name](GradDtype.apply(x))
    assert loss.dtype == gl.float32
    loss.backward()
    assert GradDtype.seen == [np.float32] and x.grad.dtype == gl.float32
