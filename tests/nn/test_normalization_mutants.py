"""Normalization details that `make mutate` found unchecked in
gradlab/functional/normalization.py: layer_norm's default eps and a 1-d input, and the
functional batch_norm updating the running statistics and the batch counter it is given."""
import numpy as np
import pytest

import gradlab as gl
import gradlab.nn.functional as F


def _t(values, dtype=np.float64, grad=False):
    return gl.tensor(np.asarray(values, dtype=dtype), requires_grad=grad)


def test_layer_norm_default_eps_and_a_1d_input():
    x = np.array([1.0, 2.0, 4.0])
    ref = (x - x.mean()) / np.sqrt(x.var() + 1e-5)
    got = F.layer_norm(_t(x), 3).detach().numpy()
    assert np.allclose(got, ref, rtol=1e-12, atol=0)
    x2 = np.array([[0.0, 0.1], [5.0, 5.2]])  # small variances: eps matters
    ref2 = (x2 - x2.mean(1, keepdims=True)) / np.sqrt(x2.var(1, keepdims=True) + 1e-5)
    assert np.allclose(F.layer_norm(_t(x2), (2,)).detach().numpy(), ref2, rtol=1e-12)
    with pytest.raises(ValueError, match=r"^layer_norm: input of shape \(3,\) does not end with "
                                         r"normalized_shape \(2, 3\)"):
        F.layer_norm(_t(x), (2, 3))


def test_functional_batch_norm_in_training_updates_the_given_statistics():
    x = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 1.0]])
    rm, rv = _t([0.5, 0.5]), _t([2.0, 2.0])
    count = gl.tensor(np.array(0, dtype=np.int64))
    y = F.batch_norm(_t(x), rm, rv, training=True, momentum=None, num_batches_tracked=count)
    ref = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)
    assert np.allclose(y.detach().numpy(), ref, rtol=1e-12)
    # momentum None: the cumulative average, here 1 / 1 (the first batch replaces the stats)
    assert int(count.numpy()) == 1
    assert np.allclose(rm.numpy(), x.mean(0)) and np.allclose(rv.numpy(), x.var(0, ddof=1))
    F.batch_norm(_t(x + 1.0), rm, rv, training=True, momentum=0.5, num_batches_tracked=count)
    assert int(count.numpy()) == 2
    assert np.allclose(rm.numpy(), 0.5 * x.mean(0) + 0.5 * (x.mean(0) + 1.0))
    assert np.allclose(rv.numpy(), x.var(0, ddof=1))


def test_batch_norm_argument_errors():
    with pytest.raises(ValueError, match=r"^batch_norm: expected an input of shape \(N, C\) or "
                                         r"\(N, C, L\), got \(3,\)$"):
        F.batch_norm(_t([1.0, 2.0, 3.0]), None, None, training=True)
    x = _t(np.ones((4, 2)))
    for name in ("weight", "bias", "running_mean", "running_var"):
        kw = {"running_mean": _t([0.0, 0.0]), "running_var": _t([1.0, 1.0]), name: _t([1.0])}
        with pytest.raises(ValueError, match=rf"^batch_norm: {name} has shape \(1,\), expected "
                                             r"\(2,\) for an input with 2 channels$"):
            F.batch_norm(x, kw["running_mean"], kw["running_var"], kw.get("weight"),
                         kw.get("bias"), training=True)
    with pytest.raises(ValueError, match=r"^batch_norm: momentum=None \(the cumulative "
                                         r"average\) needs num_batches_tracked$"):
        F.batch_norm(x, _t([0.0, 0.0]), _t([1.0, 1.0]), training=True, momentum=None)
    with pytest.raises(ValueError, match=r"^batch_norm: eval mode \(training=False\) needs "
                                         r"running_mean and running_var$"):
        F.batch_norm(x, _t([0.0, 0.0]), None)


def test_batch_norm_with_one_running_statistic_updates_neither():
    x = np.array([[1.0, 2.0], [3.0, 6.0]])
    rm = _t([0.5, 0.5])
    # momentum=None is fine without both statistics: there is no running average to keep
    F.batch_norm(_t(x), rm, None, training=True, momentum=None)
    assert rm.numpy().tolist() == [0.5, 0.5]


def test_training_batch_norm_marks_the_statistics_it_updates_as_modified():
    w = _t([1.0, 2.0], grad=True)
    rm, rv = _t([0.5, 0.5]), _t([2.0, 2.0])
    z = (w * rm).sum()  # rm is saved for this product's backward
    F.batch_norm(_t([[1.0, 2.0], [3.0, 6.0]]), rm, rv, training=True)
    with pytest.raises(RuntimeError):
        z.backward()
    # Statistics it does not update (one missing) are not marked: the backward works.
    w2, rm2 = _t([1.0, 2.0], grad=True), _t([0.5, 0.5])
    z2 = (w2 * rm2).sum()
    F.batch_norm(_t([[1.0, 2.0], [3.0, 6.0]]), rm2, None, training=True)
    z2.backward()
    assert w2.grad.numpy().tolist() == [0.5, 0.5]


def test_batch_norm_gradients_of_a_3d_input_and_of_the_weight_alone():
    from gradlab.autograd import gradcheck
    rng = np.random.default_rng(0)
    x = _t(rng.normal(size=(3, 2, 4)), grad=True)
    w = _t([1.5, -0.5], grad=True)
    assert gradcheck(lambda a, ww: F.batch_norm(a, None, None, ww, None, training=True), [x, w])
    # weight needs a gradient, bias does not
    b = _t([0.1, 0.2])
    y = F.batch_norm(x, None, None, w, b, training=True)
    (y * _t(rng.normal(size=(3, 2, 4)))).sum().backward()
    assert w.grad is not None and w.grad.shape == (2,) and b.grad is None


def test_float32_running_statistics_are_updated_in_float32():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 512)).astype(np.float32)
    rm0 = rng.normal(size=512).astype(np.float32)
    rv0 = rng.uniform(0.5, 2, size=512).astype(np.float32)
    rm, rv = gl.tensor(rm0.copy()), gl.tensor(rv0.copy())
    F.batch_norm(gl.tensor(x), rm, rv, training=True, momentum=0.1)
    # PyTorch's rule with float32 arithmetic: running = running * 0.9 + 0.1 * batch
    mean = x.mean(0)
    var = ((x - mean) ** 2).mean(0) * np.float32(5 / 4)
    exp_m = rm0 * np.float32(0.9)
    exp_m += np.float32(0.1) * mean
    exp_v = rv0 * np.float32(0.9)
    exp_v += np.float32(0.1) * var
    assert rm.dtype == np.float32 and rv.dtype == np.float32
    np.testing.assert_array_equal(rm.numpy(), exp_m)  # bit for bit
    np.testing.assert_array_equal(rv.numpy(), exp_v)
