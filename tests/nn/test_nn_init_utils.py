"""gl.nn.init formulas and gains; clip_grad_*; L1/L2/elastic-net penalties."""
import math
import warnings

import numpy as np
import pytest

import gradlab as gl
import gradlab.nn as nn
from gradlab.nn import init
from gradlab.nn.utils import (
    clip_grad_norm_,
    clip_grad_value_,
    elastic_net_penalty,
    l1_penalty,
    l2_penalty,
)


def _np(t):
    return t.detach().cpu().numpy()


def test_calculate_gain():
    assert init.calculate_gain("linear") == 1 and init.calculate_gain("sigmoid") == 1
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("leaky_relu") == pytest.approx(math.sqrt(2 / (1 + 0.01 ** 2)))
    assert init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    assert init.calculate_gain("selu") == 0.75
    with pytest.raises(ValueError, match="unsupported nonlinearity 'swish'"):
        init.calculate_gain("swish")


# (initializer, kwargs, tensor shape, expected bound of a uniform or std of a normal)
FAN_IN, FAN_OUT = 200, 300


@pytest.mark.parametrize("fn,kwargs,kind,expected", [
    (init.xavier_uniform_, {"gain": 2.0}, "u", 2.0 * math.sqrt(6 / (FAN_IN + FAN_OUT))),
    (init.xavier_normal_, {}, "n", math.sqrt(2 / (FAN_IN + FAN_OUT))),
    (init.kaiming_uniform_, {"nonlinearity": "relu"}, "u", math.sqrt(2) * math.sqrt(3 / FAN_IN)),
    (init.kaiming_uniform_, {"mode": "fan_out", "nonlinearity": "tanh"}, "u",
     5 / 3 * math.sqrt(3 / FAN_OUT)),
    (init.kaiming_normal_, {"nonlinearity": "relu"}, "n", math.sqrt(2 / FAN_IN)),
    (init.kaiming_normal_, {"a": 0.1, "mode": "fan_out"}, "n",
     math.sqrt(2 / 1.01) / math.sqrt(FAN_OUT)),
    (init.lecun_normal_, {}, "n", math.sqrt(1 / FAN_IN)),
    (init.lecun_uniform_, {}, "u", math.sqrt(3 / FAN_IN)),
])
def test_random_initializers(device, fn, kwargs, kind, expected):
    w = nn.Parameter(gl.empty(FAN_OUT, FAN_IN, dtype=gl.float64, device=device))
    assert fn(w, **kwargs) is w
    a = _np(w)
    if kind == "u":
        assert np.abs(a).max() <= expected and np.abs(a).max() > 0.99 * expected
        assert a.std() == pytest.approx(expected / math.sqrt(3), rel=0.02)
    else:
        assert a.std() == pytest.approx(expected, rel=0.02)
        assert abs(a.mean()) < 0.02 * expected


def test_fans_include_receptive_field():
    assert init._calculate_fan_in_and_fan_out(gl.empty(8, 3, 5)) == (15, 40)
    with pytest.raises(ValueError, match="at least 2 dims"):
        init.xavier_uniform_(gl.empty(4))


@pytest.mark.parametrize("shape", [(5, 0), (0, 5), (0, 3, 2), (0,)])
def test_kaiming_init_of_no_elements_warns_and_does_nothing(shape, device):
    # PyTorch's no-op: the fan may be 0 (5 / 0 would divide by it), and nothing is drawn
    for fill in (init.kaiming_uniform_, init.kaiming_normal_):
        t = gl.zeros(*shape, device=device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert fill(t) is t
        assert [str(w.message) for w in caught] == ["Initializing zero-element tensors is a "
                                                    "no-op"]
        assert t.shape == shape


def test_constant_initializers(device):
    w = gl.empty(2, 3, device=device)
    assert np.all(_np(init.zeros_(w)) == 0)
    assert np.all(_np(init.ones_(w)) == 1)
    assert np.all(_np(init.constant_(w, 0.5)) == 0.5)
    np.testing.assert_array_equal(_np(init.eye_(w)), np.eye(2, 3))
    u = _np(init.uniform_(gl.empty(1000, device=device), -2, 3))
    assert u.min() >= -2 and u.max() < 3
    n = _np(init.normal_(gl.empty(10000, dtype=gl.float64, device=device), 1.0, 0.5))
    assert n.mean() == pytest.approx(1.0, abs=0.02) and n.std() == pytest.approx(0.5, rel=0.03)


@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (4, 2, 3)])
def test_orthogonal(device, shape):
    w = gl.empty(*shape, dtype=gl.float64, device=device)
    a = _np(init.orthogonal_(w, gain=2.0)).reshape(shape[0], -1)
    if a.shape[0] >= a.shape[1]:
        np.testing.assert_allclose(a.T @ a, 4 * np.eye(a.shape[1]), atol=1e-10)
    else:
        np.testing.assert_allclose(a @ a.T, 4 * np.eye(a.shape[0]), atol=1e-10)


def test_init_works_on_parameters_under_grad_mode():
    lin = nn.Linear(3, 3)
    init.zeros_(lin.weight)  # must not trip the in-place-on-leaf guard
    assert np.all(lin.weight.detach().numpy() == 0)


# -- clipping --------------------------------------------------------------------------------
def _with_grads(device, grads):
    ps = []
    for g in grads:
        p = nn.Parameter(gl.zeros(len(g), dtype=gl.float64, device=device))
        p.grad = gl.tensor(np.asarray(g, dtype=np.float64), device=device)
        ps.append(p)
    return ps


def test_clip_grad_norm(device):
    ps = _with_grads(device, [[3.0, 0.0], [0.0, 4.0]])  # total 2-norm 5
    total = clip_grad_norm_(ps, 1.0)
    assert total.item() == pytest.approx(5.0)
    coef = 1.0 / (5.0 + 1e-6)
    np.testing.assert_allclose(_np(ps[0].grad), [3 * coef, 0], rtol=1e-12)
    np.testing.assert_allclose(_np(ps[1].grad), [0, 4 * coef], rtol=1e-12)
    ps = _with_grads(device, [[3.0, 0.0], [0.0, 4.0]])
    assert clip_grad_norm_(ps, 10.0).item() == pytest.approx(5.0)
    np.testing.assert_array_equal(_np(ps[0].grad), [3.0, 0.0])  # under the limit: unchanged


def test_clip_grad_norm_inf_and_p1_and_none_grads(device):
    ps = _with_grads(device, [[3.0, -7.0], [1.0, 2.0]])
    ps.append(nn.Parameter(gl.zeros(2)))  # no grad: skipped
    assert clip_grad_norm_(ps, 100, norm_type="inf").item() == pytest.approx(7.0)
    assert clip_grad_norm_(ps, 100, norm_type=1).item() == pytest.approx(13.0)
    ps[0].grad.data[0] = float("nan")
    with pytest.raises(RuntimeError, match="total norm"):
        clip_grad_norm_(ps, 1.0, error_if_nonfinite=True)


def test_clip_grad_value(device):
    ps = _with_grads(device, [[3.0, -7.0, 0.5]])
    clip_grad_value_(ps, 1.0)
    np.testing.assert_array_equal(_np(ps[0].grad), [1.0, -1.0, 0.5])


# -- penalties -------------------------------------------------------------------------------
def test_penalties_exclude_biases_by_default(device):
    m = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1)).to(device).double()
    ws = [_np(m[0].weight), _np(m[1].weight)]
    bs = [_np(m[0].bias), _np(m[1].bias)]
    l1 = sum(np.abs(w).sum() for w in ws)
    l2 = sum((w * w).sum() for w in ws)
    assert l1_penalty(m).item() == pytest.approx(l1)
    assert l2_penalty(m).item() == pytest.approx(l2)
    assert l1_penalty(m, include_bias=True).item() == \
        pytest.approx(l1 + sum(np.abs(b).sum() for b in bs))
    assert elastic_net_penalty(m, l1=0.3, l2=0.7).item() == pytest.approx(0.3 * l1 + 0.7 * l2)
    # gradient of the L2 penalty is 2w on weights and nothing on biases
    l2_penalty(m).backward()
    np.testing.assert_allclose(_np(m[0].weight.grad), 2 * ws[0])
    assert m[0].bias.grad is None
