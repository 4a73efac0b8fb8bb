"""Bad arguments to the kernel entry points: the same exception type and message on every
backend (the checks live in gradlab.backend.checks, shared by both)."""
import numpy as np
import pytest

from gradlab.backend import get_backend


@pytest.fixture
def bk(device):
    return get_backend(device)


def arrays(bk, *shapes, dtype=np.float32):
    return [bk.asarray(np.ones(s, dtype=dtype)) for s in shapes]


ADAM = dict(step=1, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
            decoupled_weight_decay=False, amsgrad=False, maximize=False)


def test_dtype_mismatch_is_a_type_error(bk):
    p = arrays(bk, (3,), (2,))
    g = arrays(bk, (3,)) + arrays(bk, (2,), dtype=np.float64)
    msg = r"grads\[1\] has dtype float64 but params\[0\] has float32"
    with pytest.raises(TypeError, match=msg):
        bk.adam_step(p, g, arrays(bk, (3,), (2,)), arrays(bk, (3,), (2,)), None, **ADAM)


def test_integer_params_rejected(bk):
    p = arrays(bk, (3,), dtype=np.int64)
    with pytest.raises(TypeError, match="float32 or float64"):
        bk.sgd_step(p, p, None, lr=0.1, momentum=0.0, dampening=0.0, nesterov=False,
                    weight_decay=0.0, maximize=False, first_step=True)


def test_non_contiguous_rejected(bk):
    p = [bk.asarray(np.ones((4, 4), np.float32)).T]
    g = arrays(bk, (4, 4))
    with pytest.raises(ValueError, match="not contiguous"):
        bk.adagrad_step(p, g, arrays(bk, (4, 4)), step=1, lr=0.1, lr_decay=0.0,
                        weight_decay=0.0, eps=1e-10, maximize=False)


def test_length_and_shape_mismatch(bk):
    with pytest.raises(ValueError, match="2 params but 1 grads"):
        bk.adadelta_step(arrays(bk, (3,), (3,)), arrays(bk, (3,)), arrays(bk, (3,), (3,)),
                         arrays(bk, (3,), (3,)), lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0,
                         maximize=False)
    with pytest.raises(ValueError, match=r"grads\[0\] has shape \(4,\)"):
        bk.adagrad_step(arrays(bk, (3,)), arrays(bk, (4,)), arrays(bk, (3,)), step=1, lr=0.1,
                        lr_decay=0.0, weight_decay=0.0, eps=1e-10, maximize=False)


def test_missing_state_for_an_option(bk):
    p = arrays(bk, (3,))
    with pytest.raises(ValueError, match="amsgrad needs max_exp_avg_sqs"):
        bk.adam_step(p, arrays(bk, (3,)), arrays(bk, (3,)), arrays(bk, (3,)), None,
                     **{**ADAM, "amsgrad": True})
    with pytest.raises(ValueError, match="centered needs grad_avgs"):
        bk.rmsprop_step(p, arrays(bk, (3,)), arrays(bk, (3,)), None, None, lr=0.1, alpha=0.9,
                        eps=1e-8, weight_decay=0.0, momentum=0.0, centered=True, maximize=False)


def test_empty_group_and_empty_tensors(bk):
    bk.adam_step([], [], [], [], None, **ADAM)   # nothing to do, no error
    p = arrays(bk, (0,), (2,))
    g = [bk.asarray(np.zeros(0, np.float32)), bk.asarray(np.full(2, 0.5, np.float32))]
    m, v = arrays(bk, (0,), (2,)), arrays(bk, (0,), (2,))
    for a in m + v:
        a *= 0
    bk.adam_step(p, g, m, v, None, **ADAM)
    assert bk.to_numpy(p[0]).shape == (0,)
    np.testing.assert_allclose(bk.to_numpy(p[1]), [0.9, 0.9], rtol=1e-6)


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan")])
def test_dropout_p_out_of_range(bk, p):
    with pytest.raises(ValueError, match=r"a probability in \[0, 1\]"):
        bk.dropout_forward(arrays(bk, (4,))[0], p, 0, 0)


def test_dropout_other_bad_arguments(bk):
    x = arrays(bk, (40,))[0]
    with pytest.raises(TypeError, match="must be a number"):
        bk.dropout_forward(x, "0.5", 0, 0)
    with pytest.raises(ValueError, match="key must be an int"):
        bk.dropout_forward(x, 0.5, -1, 0)
    with pytest.raises(TypeError, match="float32 or float64"):
        bk.dropout_forward(bk.asarray(np.ones(4, np.int64)), 0.5, 0, 0)
    _, mask = bk.dropout_forward(x, 0.5, 0, 0)
    with pytest.raises(ValueError, match="uint32 vector of 1 words"):
        bk.dropout_backward(x[:20], mask[:0], 0.5)


def test_softmax_ce_bad_arguments(bk):
    x = bk.asarray(np.zeros((2, 3), np.float32))
    with pytest.raises(IndexError, match="Target 3 is out of bounds"):
        bk.softmax_cross_entropy(x, bk.asarray(np.array([0, 3])), None, -100, 0.0)
    with pytest.raises(TypeError, match="integer class indices"):
        bk.softmax_cross_entropy(x, bk.asarray(np.array([0.0, 1.0])), None, -100, 0.0)
    with pytest.raises(ValueError, match="must be 2-D"):
        bk.softmax_cross_entropy(x[0], bk.asarray(np.array([0])), None, -100, 0.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        bk.softmax_cross_entropy(x, bk.asarray(np.array([0, 1])), None, -100, 1.5)
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\)"):
        bk.softmax_cross_entropy(x, bk.asarray(np.array([0, 1])),
                                 bk.asarray(np.ones(2, np.float32)), -100, 0.0)
