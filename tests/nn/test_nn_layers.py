"""Layers: Linear (values, PyTorch init bounds), Flatten, Identity, Dropout (through the
backend kernel), BatchNorm1d (running stats as PyTorch), LayerNorm; gradcheck everywhere."""
import math

import numpy as np
import pytest

import gradlab as gl
import gradlab.nn as nn
import gradlab.nn.functional as F
from gradlab.autograd import gradcheck


def _np(t):
    return t.detach().cpu().numpy()


def _t(a, device, grad=False):
    return gl.tensor(np.asarray(a, dtype=np.float64), device=device, requires_grad=grad)


def test_linear_values_and_grad(device, rng):
    lin = nn.Linear(3, 2).to(device).double()
    x = rng.normal(size=(4, 3))
    w, b = _np(lin.weight), _np(lin.bias)
    np.testing.assert_allclose(_np(lin(_t(x, device))), x @ w.T + b, rtol=1e-12)
    xt = _t(x, device, True)
    assert gradcheck(lambda a, ww, bb: F.linear(a, ww, bb), [xt, lin.weight, lin.bias])
    nobias = nn.Linear(3, 2, bias=False)
    assert nobias.bias is None and len(list(nobias.parameters())) == 1


def test_linear_default_init_bounds():
    gl.manual_seed(1)
    lin = nn.Linear(400, 300)
    bound = 1 / math.sqrt(400)  # kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(in), 1/sqrt(in))
    w, b = lin.weight.detach().numpy(), lin.bias.detach().numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    assert np.abs(b).max() <= bound
    assert abs(w.var() - bound ** 2 / 3) < 0.02 * bound ** 2  # var of U(-a, a) = a^2/3
    assert w.dtype == np.float32


def test_linear_rejects_bad_sizes():
    with pytest.raises(ValueError, match="in_features"):
        nn.Linear(-1, 3)


def test_flatten_and_identity(device):
    x = _t(np.arange(24).reshape(2, 3, 4), device, True)
    assert nn.Flatten()(x).shape == (2, 12)
    assert nn.Flatten(0, 1)(x).shape == (6, 4)
    # from dim 1 (after the batch dim): a 1-D input has none, an IndexError as in PyTorch
    with pytest.raises(IndexError, match=r"flatten: dim 1 is out of range for a tensor with 1 "
                                         r"dimension\(s\)"):
        nn.Flatten()(_t(np.arange(5.0), device, False))
    assert nn.Flatten(0)(_t(np.arange(5.0), device, False)).shape == (5,)
    assert nn.Identity(5, foo=1)(x) is x


# -- dropout ---------------------------------------------------------------------------------
def test_dropout_train_scales_and_drops(device):
    x = gl.ones(100_000, device=device)
    y = _np(nn.Dropout(0.3)(x))
    kept = y != 0
    np.testing.assert_allclose(y[kept], 1 / 0.7, rtol=1e-6)
    assert abs(kept.mean() - 0.7) < 0.01
    assert abs(y.mean() - 1.0) < 0.02  # inverted dropout keeps the expectation


def test_dropout_eval_and_p0_are_identity(device):
    x = gl.randn(10, device=device)
    d = nn.Dropout(0.5).eval()
    assert d(x) is x
    assert F.dropout(x, 0.0) is x
    assert F.dropout(x, 0.9, training=False) is x
    np.testing.assert_array_equal(_np(F.dropout(x, 1.0)), np.zeros(10))


def test_dropout_backward_uses_the_forward_mask(device):
    x = gl.randn(1000, dtype=gl.float64, device=device, requires_grad=True)
    y = F.dropout(x, 0.4)
    y.sum().backward()
    kept = _np(y) != 0
    np.testing.assert_allclose(_np(x.grad), np.where(kept, 1 / 0.6, 0.0))


def test_dropout_consumes_ceil_n_over_4_philox_counters(device):
    be = gl.tensor([0.0], device=device).backend
    x = gl.ones(10, device=device)
    key, off0 = be.random.take_philox(0)
    y = _np(F.dropout(x, 0.5))
    _, off1 = be.random.take_philox(0)
    assert off1 - off0 == 3  # ceil(10 / 4)
    # same (key, offset) through the kernel directly gives the same mask
    ref, _ = be.dropout_forward(x._data, 0.5, key, off0)
    np.testing.assert_array_equal(y, be.to_numpy(ref))


def test_dropout_is_reproducible_under_manual_seed(device):
    gl.manual_seed(123)
    a = _np(F.dropout(gl.ones(64, device=device), 0.5))
    gl.manual_seed(123)
    b = _np(F.dropout(gl.ones(64, device=device), 0.5))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, _np(F.dropout(gl.ones(64, device=device), 0.5)))


def test_dropout_bad_p():
    with pytest.raises(ValueError, match="p must be a probability"):
        nn.Dropout(1.5)
    with pytest.raises(ValueError, match="p must be a probability"):
        F.dropout(gl.ones(2), -0.1)


# -- batch norm ------------------------------------------------------------------------------
def test_batchnorm_training_values_and_running_stats(device, rng):
    x = rng.normal(2.0, 3.0, size=(8, 3))
    bn = nn.BatchNorm1d(3, momentum=0.2).to(device).double()
    with gl.no_grad():
        bn.weight.copy_(gl.tensor([1.0, 2.0, 0.5], dtype=gl.float64, device=device))
        bn.bias.copy_(gl.tensor([0.0, -1.0, 1.0], dtype=gl.float64, device=device))
    y = _np(bn(_t(x, device)))
    mu, var = x.mean(0), x.var(0)
    np.testing.assert_allclose(y, (x - mu) / np.sqrt(var + 1e-5) * [1, 2, 0.5] + [0, -1, 1],
                               rtol=1e-10)
    # running = 0.8 * init + 0.2 * batch, running_var with the UNBIASED batch variance
    np.testing.assert_allclose(_np(bn.running_mean), 0.2 * mu, rtol=1e-12)
    np.testing.assert_allclose(_np(bn.running_var), 0.8 + 0.2 * x.var(0, ddof=1), rtol=1e-12)
    assert int(bn.num_batches_tracked.item()) == 1
    bn.eval()
    rm, rv = _np(bn.running_mean), _np(bn.running_var)
    y_eval = _np(bn(_t(x, device)))
    np.testing.assert_allclose(y_eval, (x - rm) / np.sqrt(rv + 1e-5) * [1, 2, 0.5] +
                               [0, -1, 1], rtol=1e-10)
    np.testing.assert_allclose(_np(bn.running_mean), rm)  # eval leaves the stats alone


def test_batchnorm_3d_input_and_cumulative_momentum(device, rng):
    bn = nn.BatchNorm1d(2, momentum=None, affine=False).to(device).double()
    xs = [rng.normal(size=(4, 2, 5)) for _ in range(3)]
    for x in xs:
        bn(_t(x, device))
    # No parameter and no input needs a gradient: the no-graph branch computes the stats.
    means = [x.mean(axis=(0, 2)) for x in xs]
    variances = [x.var(axis=(0, 2), ddof=1) for x in xs]  # M = 4 * 5 values per channel
    np.testing.assert_allclose(_np(bn.running_mean), np.mean(means, axis=0), rtol=1e-12)
    np.testing.assert_allclose(_np(bn.running_var), np.mean(variances, axis=0), rtol=1e-12)
    assert list(dict(bn.named_parameters())) == []


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5)])
def test_batchnorm_running_stats_are_the_same_with_and_without_a_graph(device, rng, shape):
    x = rng.normal(1.0, 2.0, size=shape)
    axes = (0,) if len(shape) == 2 else (0, 2)
    for recording in (True, False):
        bn = nn.BatchNorm1d(3, momentum=0.25).to(device).double()
        if recording:
            y = bn(_t(x, device))
            assert y.grad_fn is not None
        else:
            with gl.no_grad():
                y = bn(_t(x, device))
            assert y.grad_fn is None
        np.testing.assert_allclose(_np(bn.running_mean), 0.25 * x.mean(axis=axes), rtol=1e-12)
        np.testing.assert_allclose(_np(bn.running_var),
                                   0.75 + 0.25 * x.var(axis=axes, ddof=1), rtol=1e-12)
        xhat = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(
            x.var(axis=axes, keepdims=True) + 1e-5)
        np.testing.assert_allclose(_np(y), xhat, rtol=1e-10, atol=1e-12)


def test_batch_norm_function_defaults_and_edges(device, rng):
    x = rng.normal(size=(2, 3, 4))  # 3-D: the running stats broadcast along dim 1
    rm = gl.tensor([0.5, -1.0, 2.0], dtype=gl.float64, device=device)
    rv = gl.tensor([4.0, 0.25, 1.0], dtype=gl.float64, device=device)
    # training=False and eps=1e-5 by default: the running statistics, unchanged
    y = _np(F.batch_norm(_t(x, device), rm, rv))
    want = (x - _np(rm)[:, None]) / np.sqrt(_np(rv)[:, None] + 1e-5)
    np.testing.assert_allclose(y, want, rtol=1e-12)
    # momentum=0.1 by default; 2 values per channel (the fewest) is enough to train
    x2 = rng.normal(size=(2, 3))
    F.batch_norm(_t(x2, device), rm, rv, training=True)
    np.testing.assert_allclose(_np(rm), 0.9 * np.array([0.5, -1.0, 2.0]) + 0.1 * x2.mean(0),
                               rtol=1e-12)
    np.testing.assert_allclose(_np(rv), 0.9 * np.array([4.0, 0.25, 1.0]) +
                               0.1 * x2.var(0, ddof=1), rtol=1e-12)
    # with one running statistic missing, nothing is updated (and nothing fails)
    before = _np(rm).copy()
    F.batch_norm(_t(x2, device), rm, None, training=True)
    np.testing.assert_array_equal(_np(rm), before)
    with pytest.raises(ValueError, match="running_var has shape"):
        F.batch_norm(_t(x2, device), rm, gl.ones(2, device=device), training=True)
    with pytest.raises(ValueError, match="eval mode .training=False. needs running_mean"):
        F.batch_norm(_t(x2, device), rm, None)


def test_batch_norm_keeps_float32(device, rng):
    bn = nn.BatchNorm1d(3).to(device)
    x = gl.tensor(rng.normal(size=(4, 3)).astype(np.float32), device=device,
                  requires_grad=True)
    bn(x).sum().backward()
    with gl.no_grad():
        y = bn(x)
    assert y.dtype == x.grad.dtype == bn.running_var.dtype == bn.weight.grad.dtype == gl.float32
    bn.eval()
    assert bn(x).dtype == gl.float32


def test_batchnorm_gradcheck_train_and_eval(device, rng):
    x = _t(rng.normal(size=(5, 3)), device, True)
    w = _t(rng.uniform(0.5, 2, size=3), device, True)
    b = _t(rng.normal(size=3), device, True)
    assert gradcheck(lambda a, ww, bb: F.batch_norm(a, None, None, ww, bb, training=True),
                     [x, w, b])
    x3 = _t(rng.normal(size=(3, 2, 4)), device, True)
    assert gradcheck(lambda a: F.batch_norm(a, None, None, training=True), [x3])
    rm, rv = _t([0.1, -0.2, 0.3], device), _t([1.5, 0.5, 2.0], device)
    assert gradcheck(lambda a, ww, bb: F.batch_norm(a, rm, rv, ww, bb, training=False),
                     [x, w, b])


def test_batchnorm_errors(device):
    bn = nn.BatchNorm1d(3).to(device)
    with pytest.raises(ValueError, match="input has 4 channels"):
        bn(gl.randn(2, 4, device=device))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn(gl.randn(1, 3, device=device))
    with pytest.raises(ValueError, match="2-D"):
        bn(gl.randn(3, device=device))


# -- layer norm ------------------------------------------------------------------------------
def test_layernorm_values_and_gradcheck(device, rng):
    x = rng.normal(size=(2, 3, 4))
    ln = nn.LayerNorm((3, 4)).to(device).double()
    mu = x.mean(axis=(1, 2), keepdims=True)
    var = x.var(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(_np(ln(_t(x, device))), (x - mu) / np.sqrt(var + 1e-5),
                               rtol=1e-10)
    w = _t(rng.uniform(0.5, 2, size=4), device, True)
    b = _t(rng.normal(size=4), device, True)
    xt = _t(x, device, True)
    assert gradcheck(lambda a, ww, bb: F.layer_norm(a, 4, ww, bb), [xt, w, b])
    assert gradcheck(lambda a: F.layer_norm(a, (3, 4)), [xt])
    ln.weight.grad = None
    ln(_t(x, device)).sum().backward()
    assert ln.weight.grad.shape == (3, 4) and ln.bias.grad.shape == (3, 4)
    with pytest.raises(ValueError, match="does not end with normalized_shape"):
        ln(gl.randn(2, 4, 3, device=device))
