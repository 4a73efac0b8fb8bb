"""The graph-free fast path of Tensor's + - * / (autograd/tensor.py, _arithmetic) gives
exactly what the general Function path gives (values, dtype, shape), and leaves every other
case (graphs, errors) to that path."""
import numpy as np
import pytest

import gradlab as gl
from gradlab.functional import elementwise as ew

OPS = [("add", ew.Add, lambda a, b: a + b, lambda a, b: b + a),
       ("sub", ew.Sub, lambda a, b: a - b, lambda a, b: b - a),
       ("mul", ew.Mul, lambda a, b: a * b, lambda a, b: b * a),
       ("div", ew.Div, lambda a, b: a / b, lambda a, b: b / a)]

OPERANDS = {
    "f32": np.array([[1.5, -2.0, 3.25]], np.float32),
    "f64": np.array([0.1, 0.2, 0.3]),
    "i64": np.array([1, -2, 7]),
    "i32-0d": np.array(3, np.int32),
    "f32-col": np.array([[2.0], [0.5]], np.float32),
}
OTHERS = [2, -3, 0.1, 1e30, "f32", "f64", "i64", "i32-0d", "f32-col"]


def _other(o):
    return gl.tensor(OPERANDS[o]) if isinstance(o, str) else o


@pytest.mark.parametrize("name,cls,fwd,refl", OPS, ids=[o[0] for o in OPS])
@pytest.mark.parametrize("left", list(OPERANDS))
def test_fast_path_equals_the_general_path(name, cls, fwd, refl, left):
    for o in OTHERS:
        a, b = gl.tensor(OPERANDS[left]), _other(o)
        with np.errstate(all="ignore"):
            got = fwd(a, b)
            want = cls.apply(a, b)
            assert got.dtype == want.dtype and got.shape == want.shape, (left, o)
            assert np.array_equal(got.numpy(), want.numpy(), equal_nan=True), (left, o)
            if not isinstance(o, str):
                got_r = refl(a, b)  # number op tensor: Tensor.__rop__
                want_r = cls.apply(b, a)
                assert got_r.dtype == want_r.dtype, (left, o)
                assert np.array_equal(got_r.numpy(), want_r.numpy(), equal_nan=True)
        assert not got.requires_grad and got.grad_fn is None


def test_graphs_are_still_recorded():
    x = gl.tensor([1.0, 2.0], requires_grad=True)
    c = gl.tensor([3.0, 4.0])
    y = (c * x + 1.0) / 2.0 - c  # a constant on the left, the leaf on the right
    y.sum().backward()
    assert x.grad.tolist() == [1.5, 2.0]
    with gl.no_grad():
        assert (x * 2).grad_fn is None


def test_errors_still_come_from_the_general_path():
    a = gl.ones((2, 3))
    with pytest.raises(RuntimeError, match=r"mul: shapes \(2, 3\) and \(4,\) cannot be broadcast"):
        a * gl.ones(4)
    with pytest.raises(RuntimeError, match=r"add: shapes \(2, 3\) and \(2,\)"):
        2 + a + gl.ones(2)
