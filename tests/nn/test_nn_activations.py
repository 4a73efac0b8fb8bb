"""Every activation: forward against hand-computed values, gradients by gradcheck (float64),
module == function, on every device."""
import math

import numpy as np
import pytest

import gradlab as gl
import gradlab.nn as nn
import gradlab.nn.functional as F
from gradlab.autograd import gradcheck


def _x(device, values=None, shape=(3, 4), seed=0):
    if values is None:
        # avoid the kinks at 0 and +-2 where finite differences straddle two pieces
        rng = np.random.default_rng(seed)
        v = rng.uniform(-3, 3, shape)
        v[np.abs(v) < 0.05] = 0.3
        v[np.abs(np.abs(v) - 2) < 0.05] = 1.5
        values = v
    return gl.tensor(np.asarray(values, dtype=np.float64), device=device, requires_grad=True)


def _np(t):
    return t.detach().cpu().numpy()


SELU_A = 1.6732632423543772848170429916717
SELU_S = 1.0507009873554804934193349852946

# name -> (module factory, function, numpy reference)
CASES = {
    "identity": (nn.Identity, F.identity, lambda x: x),
    "sigmoid": (nn.Sigmoid, F.sigmoid, lambda x: 1 / (1 + np.exp(-x))),
    "tanh": (nn.Tanh, F.tanh, np.tanh),
    "arctan": (nn.ArcTan, F.arctan, np.arctan),
    "relu": (nn.ReLU, F.relu, lambda x: np.maximum(x, 0)),
    "leaky_relu": (lambda: nn.LeakyReLU(0.1), lambda x: F.leaky_relu(x, 0.1),
                   lambda x: np.where(x > 0, x, 0.1 * x)),
    "elu": (lambda: nn.ELU(0.7), lambda x: F.elu(x, 0.7),
            lambda x: np.where(x > 0, x, 0.7 * (np.exp(x) - 1))),
    "softsign": (nn.Softsign, F.softsign, lambda x: x / (1 + np.abs(x))),
    "isru": (lambda: nn.ISRU(0.5), lambda x: F.isru(x, 0.5),
             lambda x: x / np.sqrt(1 + 0.5 * x * x)),
    "isrlu": (lambda: nn.ISRLU(2.0), lambda x: F.isrlu(x, 2.0),
              lambda x: np.where(x >= 0, x, x / np.sqrt(1 + 2 * x * x))),
    "sqnl": (nn.SQNL, F.sqnl,
             lambda x: np.select([x > 2, x >= 0, x >= -2], [1, x - x * x / 4, x + x * x / 4],
                                 -1)),
    "bipolar_relu": (nn.BipolarReLU, F.bipolar_relu,
                     lambda x: np.where(np.arange(x.shape[-1]) % 2 == 0, np.maximum(x, 0),
                                        np.minimum(x, 0))),
    "softplus": (lambda: nn.Softplus(beta=2.0), lambda x: F.softplus(x, beta=2.0),
                 lambda x: np.log1p(np.exp(2 * x)) / 2),
    "gelu": (nn.GELU, F.gelu,
             lambda x: x * 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))),
    "gelu_tanh": (lambda: nn.GELU("tanh"), lambda x: F.gelu(x, approximate="tanh"),
                  lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) *
                                                   (x + 0.044715 * x ** 3)))),
    "silu": (nn.SiLU, F.silu, lambda x: x / (1 + np.exp(-x))),
    "selu": (nn.SELU, F.selu,
             lambda x: SELU_S * np.where(x > 0, x, SELU_A * (np.exp(x) - 1))),
    "softmax": (lambda: nn.Softmax(dim=1), lambda x: F.softmax(x, dim=1),
                lambda x: np.exp(x) / np.exp(x).sum(1, keepdims=True)),
    "log_softmax": (lambda: nn.LogSoftmax(dim=1), lambda x: F.log_softmax(x, dim=1),
                    lambda x: x - np.log(np.exp(x).sum(1, keepdims=True))),
    "rrelu_eval": (lambda: nn.RReLU(0.1, 0.3).eval(), lambda x: F.rrelu(x, 0.1, 0.3),
                   lambda x: np.where(x >= 0, x, 0.2 * x)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_activation_values_and_module(device, name):
    make, fn, ref = CASES[name]
    x = _x(device)
    expected = ref(_np(x))
    np.testing.assert_allclose(_np(fn(x)), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(_np(make()(x)), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
def test_activation_gradcheck(device, name):
    _, fn, _ = CASES[name]
    assert gradcheck(fn, [_x(device, seed=3)])


def test_hand_values_at_known_points():
    x = gl.tensor([-3.0, -1.0, 0.0, 1.0, 3.0], dtype=gl.float64)
    assert F.sqnl(x).tolist() == [-1.0, -0.75, 0.0, 0.75, 1.0]
    assert F.binary_step(x).tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert F.bipolar_relu(x).tolist() == [0.0, -1.0, 0.0, 0.0, 3.0]
    np.testing.assert_allclose(F.isru(x).numpy(), [-3 / math.sqrt(10), -1 / math.sqrt(2), 0,
                                                   1 / math.sqrt(2), 3 / math.sqrt(10)])
    np.testing.assert_allclose(F.gelu(x).numpy()[3], 0.8413447460685429, rtol=1e-14)
    np.testing.assert_allclose(F.selu(x).numpy()[1], SELU_S * SELU_A * (math.exp(-1) - 1))


def test_binary_step_gradient_is_zero(device):
    x = _x(device)
    F.binary_step(x).sum().backward()
    assert np.all(_np(x.grad) == 0)
    np.testing.assert_array_equal(_np(nn.BinaryStep()(x)), (_np(x) >= 0).astype(float))


def test_extreme_inputs_stay_finite(device):
    x = gl.tensor([-1e4, -50.0, 50.0, 1e4], dtype=gl.float32, device=device,
                  requires_grad=True)
    for fn in (F.sigmoid, F.silu, F.softplus, F.elu, F.selu, F.gelu, F.softsign, F.isru,
               F.isrlu):
        y = fn(x)
        y.sum().backward()
        assert np.all(np.isfinite(_np(y))), fn.__name__
        assert np.all(np.isfinite(_np(x.grad))), fn.__name__
        x.grad = None
    np.testing.assert_allclose(_np(F.softplus(x)), [0, 0, 50, 1e4], atol=1e-6)


def test_prelu_values_and_gradcheck(device):
    x = _x(device, shape=(2, 3, 2))
    w = gl.tensor([0.1, 0.2, 0.3], dtype=gl.float64, device=device, requires_grad=True)
    y = _np(F.prelu(x, w))
    xn = _np(x)
    np.testing.assert_allclose(y, np.where(xn > 0, xn, xn * np.array([0.1, 0.2, 0.3])[:, None]))
    assert gradcheck(F.prelu, [x, w])
    w1 = gl.tensor([0.25], dtype=gl.float64, device=device, requires_grad=True)
    assert gradcheck(F.prelu, [x, w1])


def test_prelu_module_is_learnable(device):
    m = nn.PReLU(num_parameters=3).to(device)
    assert [n for n, _ in m.named_parameters()] == ["weight"]
    np.testing.assert_allclose(_np(m.weight), [0.25] * 3)
    x = gl.tensor([[-1.0, -2.0, 3.0]], device=device)
    m(x).sum().backward()
    np.testing.assert_allclose(_np(m.weight.grad), [-1.0, -2.0, 0.0])
    with pytest.raises(RuntimeError, match="3 values"):
        m(gl.ones(2, 4, device=device))


def test_rrelu_training_slopes_in_range_and_eval_mean(device):
    m = nn.RReLU(0.1, 0.3)
    x = -gl.ones(1000, dtype=gl.float64, device=device)
    y = _np(m(x))
    assert np.all((y <= -0.1) & (y >= -0.3)) and y.std() > 0.01
    xg = gl.full((5,), -1.0, dtype=gl.float64, device=device, requires_grad=True)
    out = m(xg)
    out.sum().backward()
    np.testing.assert_allclose(_np(xg.grad), -_np(out))  # slope = derivative
    m.eval()
    np.testing.assert_allclose(_np(m(x)), -0.2 * np.ones(1000))
    with pytest.raises(ValueError, match="lower <= upper"):
        nn.RReLU(0.5, 0.1)


def test_gelu_rejects_unknown_approximation():
    with pytest.raises(ValueError, match="approximate"):
        F.gelu(gl.ones(2), approximate="fast")


def test_softmax_module_default_dim_is_last(device):
    x = _x(device, shape=(2, 3, 4))
    np.testing.assert_allclose(_np(nn.Softmax()(x)), _np(F.softmax(x, dim=-1)))
    np.testing.assert_allclose(_np(nn.Softmax()(x)).sum(-1), np.ones((2, 3)))


# -- backward by value on every branch and at every threshold --------------------------------
# gradcheck above samples points away from the kinks; these pin dy/dx, derived by hand, on
# each piece and exactly at the points where the pieces meet (where the one-sided choice is
# the implementation's, as PyTorch's: the derivative of the piece that owns the point).
def _sig(z):
    return 1 / (1 + math.exp(-z))


def _isr3(alpha, x):
    return (1 + alpha * x * x) ** -1.5


def _gelu_tanh_d(x):
    k = math.sqrt(2 / math.pi)
    t = math.tanh(k * (x + 0.044715 * x ** 3))
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x)


def _phi(x):
    return math.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def _cdf(x):
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


# name -> (function, points, dy/dx at the points)
DERIVATIVES = {
    "identity": (F.identity, [-2.0, 0.0, 3.0], [1, 1, 1]),
    "relu": (F.relu, [-1.0, 0.0, 2.0], [0, 0, 1]),
    "sigmoid": (F.sigmoid, [-30.0, 0.0, 2.0],
                [_sig(-30) * _sig(30), 0.25, _sig(2) * _sig(-2)]),
    "tanh": (F.tanh, [-1.0, 0.0, 0.5], [1 - math.tanh(1) ** 2, 1, 1 - math.tanh(0.5) ** 2]),
    "arctan": (F.arctan, [-2.0, 0.0, 1.0], [0.2, 1, 0.5]),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.1), [-2.0, 0.0, 3.0], [0.1, 0.1, 1]),
    "elu": (lambda x: F.elu(x, 0.7), [-1.0, 0.0, 2.0], [0.7 * math.exp(-1), 0.7, 1]),
    "selu": (F.selu, [-1.0, 0.0, 2.0],
             [SELU_S * SELU_A * math.exp(-1), SELU_S * SELU_A, SELU_S]),
    "softsign": (F.softsign, [-3.0, 0.0, 1.0], [1 / 16, 1, 1 / 4]),
    "isru": (lambda x: F.isru(x, 0.5), [-2.0, 0.0, 1.0],
             [_isr3(0.5, -2), 1, _isr3(0.5, 1)]),
    "isrlu": (lambda x: F.isrlu(x, 2.0), [-1.5, 0.0, 2.0], [_isr3(2.0, -1.5), 1, 1]),
    "sqnl": (F.sqnl, [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0], [0, 0, 0.5, 1, 0.5, 0, 0]),
    # even positions relu(x), odd positions min(x, 0): (0 at 0 on both)
    "bipolar_relu": (F.bipolar_relu, [2.0, 2.0, -1.0, -1.0, 0.0, 0.0], [1, 0, 0, 1, 0, 0]),
    # beta x = 20 is the threshold: still the smooth piece; above it the linear one.
    "softplus": (lambda x: F.softplus(x, beta=2.0), [-3.0, 0.0, 10.0, 10.5],
                 [_sig(-6), 0.5, _sig(20), 1]),
    "softplus_threshold": (lambda x: F.softplus(x, beta=1.0, threshold=1.0),
                           [-1.0, 1.0, 1.5], [_sig(-1), _sig(1), 1]),
    "gelu": (F.gelu, [-1.0, 0.0, 1.0],
             [_cdf(-1) - _phi(-1), 0.5, _cdf(1) + _phi(1)]),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), [-1.0, 0.0, 1.5],
                  [_gelu_tanh_d(-1), 0.5, _gelu_tanh_d(1.5)]),
    "silu": (F.silu, [-2.0, 0.0, 3.0],
             [_sig(-2) * (1 - 2 * _sig(2)), 0.5, _sig(3) * (1 + 3 * _sig(-3))]),
    # x <= 0 takes the slope, as PyTorch's (0 included)
    "rrelu_eval": (lambda x: F.rrelu(x, 0.1, 0.3), [-1.0, 0.0, 2.0], [0.2, 0.2, 1]),
    "prelu": (lambda x: F.prelu(x, gl.tensor([0.25], dtype=x.dtype, device=x.device)),
              [-1.0, 0.0, 2.0], [0.25, 0.25, 1]),
    "binary_step": (F.binary_step, [-1.0, 0.0, 1.0], [0, 0, 0]),
}


@pytest.mark.parametrize("name", sorted(DERIVATIVES))
def test_activation_backward_on_each_branch_and_at_thresholds(device, name):
    fn, points, slopes = DERIVATIVES[name]
    x = gl.tensor(points, dtype=gl.float64, device=device, requires_grad=True)
    g = np.arange(2.0, 2.0 + len(points))  # an upstream gradient that is not all ones
    (fn(x) * gl.tensor(g, device=device)).sum().backward()
    np.testing.assert_allclose(_np(x.grad), g * np.array(slopes, dtype=float), rtol=1e-12,
                               atol=1e-300)


def test_every_activation_has_its_backward_pinned():
    from gradlab.functional import activation
    # ("mutmut" names: the copies `make mutate` adds beside each function)
    public = {n for n, f in vars(activation).items() if callable(f) and not n.startswith("_")
              and n[0].islower() and getattr(f, "__module__", "") == activation.__name__
              and "mutmut" not in n}
    # softmax and log_softmax are not elementwise: gradcheck and their values cover them.
    missing = [n for n in sorted(public - {"softmax", "log_softmax"})
               if not any(case == n or case.startswith(n + "_") for case in DERIVATIVES)]
    assert not missing, f"activations whose backward no value test pins: {missing}"


def test_softplus_linear_branch_forward_is_x(device):
    x = gl.tensor([10.0, 10.5, 30.0], dtype=gl.float64, device=device)
    y = _np(F.softplus(x, beta=2.0))
    assert y[1:].tolist() == [10.5, 30.0]  # exactly x above the threshold
    np.testing.assert_allclose(y[0], math.log1p(math.exp(20.0)) / 2, rtol=1e-15)


@pytest.mark.parametrize("name", sorted(DERIVATIVES))
def test_activation_keeps_float32(device, name):
    # A float64 input hides a cast to NumPy's default dtype; float32 shows it.
    fn, points, _ = DERIVATIVES[name]
    x = gl.tensor(points, dtype=gl.float32, device=device, requires_grad=True)
    y = fn(x)
    y.sum().backward()
    assert y.dtype == gl.float32 and x.grad.dtype == gl.float32
