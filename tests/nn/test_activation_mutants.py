"""Activation details that `make mutate` found unchecked in gradlab/functional/activation.py:
erf to full double precision on both sides of its switch at |x| = 3, the documented
defaults, rrelu's bounds, PReLU per channel on 3-d inputs, BipolarReLU on 0-d inputs and the
dtype of its gradient."""
import math

import numpy as np
import pytest
from grad_dtype_probe import GradDtype

import gradlab as gl
import gradlab.nn.functional as F
from gradlab.functional.activation import _erf


def _t(values, dtype=np.float64, grad=False):
    return gl.tensor(np.asarray(values, dtype=dtype), requires_grad=grad)


def _np(t):
    return t.detach().numpy()


def test_erf_matches_math_erf_to_double_precision_around_the_switch_at_3():
    x = np.concatenate([np.linspace(-6, 6, 241), np.linspace(2.5, 4.5, 401),
                        [3.0, -3.0, np.nextafter(3.0, 0), np.nextafter(3.0, 4), 0.0]])
    ref = np.array([math.erf(v) for v in x])
    got = _erf(np, x)
    assert np.max(np.abs(got - ref)) <= 1.2e-15  # the docstring's ~1e-15
    # 1 - erf(x) for x >= 3 comes from erfc's continued fraction: to ~1e-15 of erfc itself
    big = np.linspace(3.0, 5.0, 81)
    erfc = np.array([math.erfc(v) for v in big])
    assert np.max(np.abs((1 - _erf(np, big)) - erfc) / erfc) < 2e-4  # rounding of 1 - erf
    assert np.allclose(1 - _erf(np, big[:11]), erfc[:11], rtol=1e-9, atol=0)


def test_gelu_near_and_past_the_erf_switch():
    x = np.array([-4.5, -4.3, -4.2, 4.2, 4.3, 4.5, 5.0])  # x / sqrt(2) on both sides of 3
    ref = np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x])
    got = _np(F.gelu(_t(x)))
    assert np.allclose(got, ref, rtol=1e-14, atol=5e-15)


def test_defaults_are_the_documented_ones():
    x = _t([-1.0, 2.0])
    assert _np(F.elu(x)).tolist() == pytest.approx([math.exp(-1) - 1, 2.0])
    assert _np(F.isrlu(x)).tolist() == pytest.approx([-1 / math.sqrt(2), 2.0])
    assert _np(F.leaky_relu(x)).tolist() == pytest.approx([-0.01, 2.0])
    assert _np(F.softplus(x)).tolist() == pytest.approx([math.log1p(math.exp(-1)),
                                                        math.log1p(math.exp(2))])
    assert _np(F.softplus(_t([21.0, 19.0]))).tolist() == pytest.approx(
        [21.0, math.log1p(math.exp(19))])  # threshold 20 on beta * x


def test_rrelu_bounds():
    x = _t([-2.0, 1.0])
    assert _np(F.rrelu(x, 0.0, 0.2)).tolist() == pytest.approx([-0.2, 1.0])  # lower 0
    assert _np(F.rrelu(x, 0.25, 0.25)).tolist() == pytest.approx([-0.5, 1.0])  # lower == upper
    out = _np(F.rrelu(_t(-np.ones(100)), 0.25, 0.25, training=True))
    assert np.all(out == -0.25)
    with pytest.raises(ValueError, match=r"^rrelu: need 0 <= lower <= upper, got lower=0.5, "
                                         r"upper=0.25$"):
        F.rrelu(x, 0.5, 0.25)
    with pytest.raises(ValueError, match=r"^rrelu: need 0 <= lower <= upper, got "
                                         r"lower=-0.1, upper=0.25$"):
        F.rrelu(x, -0.1, 0.25)


def test_prelu_per_channel_on_a_3d_input():
    x = np.arange(-12.0, 12.0).reshape(2, 3, 4)  # channels (3) differ from the length (4)
    w = np.array([0.1, 0.2, 0.3])
    xt, wt = _t(x, grad=True), _t(w, grad=True)
    y = F.prelu(xt, wt)
    ref = np.maximum(x, 0) + w.reshape(1, 3, 1) * np.minimum(x, 0)
    assert np.allclose(_np(y), ref)
    y.sum().backward()
    assert np.allclose(_np(xt.grad), np.where(x > 0, 1.0, w.reshape(1, 3, 1)))
    assert np.allclose(_np(wt.grad), np.minimum(x, 0).sum(axis=(0, 2)))


@pytest.mark.parametrize("value, expected", [(2.0, 2.0), (-2.0, 0.0)])
def test_bipolar_relu_of_a_0d_tensor_is_a_relu(value, expected):
    x = _t(value, grad=True)
    y = F.bipolar_relu(x)
    assert y.shape == () and float(_np(y)) == expected
    y.backward()
    assert float(_np(x.grad)) == (1.0 if value > 0 else 0.0)


def test_bipolar_relu_gradient_keeps_float32():
    x = _t([[1.0, -1.0, -2.0, 3.0]], dtype=np.float32, grad=True)
    y = F.bipolar_relu(x)
    assert _np(y).tolist() == [[1.0, -1.0, 0.0, 0.0]]
    y.sum().backward()
    assert x.grad.dtype == np.float32 and _np(x.grad).tolist() == [[1.0, 1.0, 0.0, 0.0]]


def test_prelu_with_one_weight_keeps_the_input_shape():
    for x in ([-2.0, 3.0], -2.0):
        y = F.prelu(_t(x), _t([0.25]))
        assert y.shape == np.shape(x)
        assert np.allclose(_np(y), np.where(np.asarray(x) > 0, x, 0.25 * np.asarray(x)))


def test_softmax_shifts_each_row_by_its_own_max():
    # A row far below another: a shift by the global max would underflow it to 0 / 0.
    x = _t([[0.0, 1.0], [-1000.0, -999.0]])
    p = 1 / (1 + math.e)
    assert np.allclose(_np(F.softmax(x, dim=1)), [[p, 1 - p], [p, 1 - p]], rtol=1e-12)
    lp = _np(F.log_softmax(x, dim=1))
    assert np.allclose(lp, [[math.log(p), math.log(1 - p)]] * 2, rtol=1e-12)


def test_softmax_errors_name_the_function():
    x = _t(np.zeros((2, 3)))
    for fn, name in ((F.softmax, "softmax"), (F.log_softmax, "log_softmax")):
        with pytest.raises(IndexError, match=rf"^{name}: dim 5 is out of range for a tensor "
                                             r"with 2 dimension\(s\)"):
            fn(x, dim=5)
        with pytest.raises(TypeError, match=rf"^{name}\(\) needs dim, e.g. {name}\(x, dim=-1\)$"):
            fn(x)


@pytest.mark.parametrize("name, ref", [("sigmoid", lambda v: 1 / (1 + np.exp(-v))),
                                       ("tanh", np.tanh)])
def test_sigmoid_and_tanh_write_into_out(name, ref):
    fn = getattr(F, name)
    x = np.array([[-1.0, 0.0, 2.0], [0.5, -3.0, 4.0]])
    out = gl.empty(0, dtype=gl.float64)
    got = fn(_t(x), out=out)
    assert got is out and out.shape == (2, 3)
    assert np.allclose(out.numpy(), ref(x), rtol=1e-12)
    same = gl.tensor(np.zeros((2, 3)))
    fn(_t(x), out=same)
    assert np.allclose(same.numpy(), ref(x), rtol=1e-12)
    with pytest.raises(RuntimeError, match=rf"^{name}\(\): out has shape \(3,\) but the result "
                                           r"has shape \(2, 3\)"):
        fn(_t(x), out=gl.tensor(np.zeros(3)))


def test_erf_at_the_switch_point_uses_the_continued_fraction():
    # At |x| = 3 the continued fraction is within an ulp; the series would be 3 ulps off.
    got = _erf(np, np.array([3.0, -3.0]))
    assert np.all(np.abs(got - np.array([math.erf(3.0), -math.erf(3.0)])) < 2.5e-16)


def test_gelu_approximate_error_names_gelu():
    with pytest.raises(ValueError, match=r"^gelu: approximate must be 'none' or 'tanh', got "
                                         r"'erf'$"):
        F.gelu(_t([1.0]), approximate="erf")


_FLOAT32_CASES = {
    "relu": F.relu, "sigmoid": F.sigmoid, "tanh": F.tanh, "arctan": F.arctan,
    "selu": F.selu, "softsign": F.softsign, "sqnl": F.sqnl, "silu": F.silu,
    "bipolar_relu": F.bipolar_relu, "leaky_relu": F.leaky_relu, "elu": F.elu,
    "isru": F.isru, "isrlu": F.isrlu, "softplus": F.softplus,
    "softplus_linear": lambda x: F.softplus(x, beta=10.0, threshold=5.0),
    "gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "rrelu_train": lambda x: F.rrelu(x, training=True), "rrelu_eval": F.rrelu,
    "prelu": lambda x: F.prelu(x, gl.tensor(np.float32([0.25]))),
    "softmax": lambda x: F.softmax(x, dim=0), "log_softmax": lambda x: F.log_softmax(x, dim=0),
}


@pytest.mark.parametrize("name", sorted(_FLOAT32_CASES))
def test_a_float32_activation_passes_float32_gradients_back(name):
    # Both branches of every piecewise activation, their switch points and a large value.
    x = _t([-30.0, -3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.5, 3.0, 30.0], np.float32, grad=True)
    w = _t(np.linspace(0.3, 1.7, 10), np.float32)  # so that no branch's gradient is 1 alone
    GradDtype.seen.clear()
    y = _FLOAT32_CASES[name](GradDtype.apply(x))
    assert y.dtype == gl.float32
    (y * w).sum().backward()
    assert GradDtype.seen == [np.float32] and x.grad.dtype == gl.float32
