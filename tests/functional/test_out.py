"""out=: the result written into an existing tensor (same object, version bumped), as in
PyTorch; refused where autograd would be needed, on another device, to a dtype it can't cast
to, or to a non-empty out of another shape."""
import numpy as np
import pytest

import gradlab as gl
from tests.conftest import to_numpy

A = [[1.0, -2.0], [3.0, 0.5]]
B = [[2.0, 4.0], [-1.0, 1.0]]
S = 1.0 / (1.0 + np.exp(-np.array(A)))

# name, call, expected value (hand-computed from A and B)
CASES = [
    ("add", lambda a, b, out: gl.add(a, b, out=out), [[3.0, 2.0], [2.0, 1.5]]),
    ("add-alpha", lambda a, b, out: gl.add(a, b, alpha=2, out=out), [[5.0, 6.0], [1.0, 2.5]]),
    ("sub", lambda a, b, out: gl.sub(a, b, out=out), [[-1.0, -6.0], [4.0, -0.5]]),
    ("mul", lambda a, b, out: gl.mul(a, b, out=out), [[2.0, -8.0], [-3.0, 0.5]]),
    ("mul-scalar", lambda a, b, out: gl.mul(a, 2, out=out), [[2.0, -4.0], [6.0, 1.0]]),
    ("div", lambda a, b, out: gl.div(a, b, out=out), [[0.5, -0.5], [-3.0, 0.5]]),
    ("pow", lambda a, b, out: gl.pow(a, 2, out=out), [[1.0, 4.0], [9.0, 0.25]]),
    ("matmul", lambda a, b, out: gl.matmul(a, b, out=out), [[4.0, 2.0], [5.5, 12.5]]),
    ("mm", lambda a, b, out: gl.mm(a, b, out=out), [[4.0, 2.0], [5.5, 12.5]]),
    ("exp", lambda a, b, out: gl.exp(b, out=out), np.exp(B)),
    ("log", lambda a, b, out: gl.log(gl.abs(a), out=out), np.log(np.abs(A))),
    ("sqrt", lambda a, b, out: gl.sqrt(gl.abs(b), out=out), np.sqrt(np.abs(B))),
    ("abs", lambda a, b, out: gl.abs(a, out=out), np.abs(A)),
    ("neg", lambda a, b, out: gl.neg(a, out=out), -np.array(A)),
    ("tanh", lambda a, b, out: gl.tanh(a, out=out), np.tanh(A)),
    ("sigmoid", lambda a, b, out: gl.sigmoid(a, out=out), S),
    ("clamp", lambda a, b, out: gl.clamp(a, -1.0, 1.0, out=out), [[1.0, -1.0], [1.0, 0.5]]),
    ("clamp-tensor", lambda a, b, out: gl.clamp(a, min=b, out=out), [[2.0, 4.0], [3.0, 1.0]]),
    ("maximum", lambda a, b, out: gl.maximum(a, b, out=out), [[2.0, 4.0], [3.0, 1.0]]),
    ("minimum", lambda a, b, out: gl.minimum(a, b, out=out), [[1.0, -2.0], [-1.0, 0.5]]),
    ("where", lambda a, b, out: gl.where(a > 0, a, b, out=out), [[1.0, 4.0], [3.0, 0.5]]),
    ("cat", lambda a, b, out: gl.cat([a[0:1], b[1:2]], out=out), [[1.0, -2.0], [-1.0, 1.0]]),
    ("stack", lambda a, b, out: gl.stack([a[0], b[0]], out=out), [[1.0, -2.0], [2.0, 4.0]]),
]


@pytest.mark.parametrize("name,call,want", CASES, ids=[c[0] for c in CASES])
def test_out_writes_the_result_and_returns_out(device, name, call, want):
    a, b = gl.tensor(A, device=device), gl.tensor(B, device=device)
    out = gl.full((2, 2), 7.0, device=device)
    want = np.asarray(want, dtype=np.float32)
    buffer, version = out._data, out._version[0]
    got = call(a, b, out)
    assert got is out and out._data is buffer  # written in place, not rebound
    assert out._version[0] == version + 1
    np.testing.assert_allclose(to_numpy(out), want, rtol=1e-6)


def test_out_reductions_and_aliasing(device):
    a = gl.tensor(A, device=device)
    total, avg = gl.zeros((), device=device), gl.zeros(2, device=device)
    assert gl.sum(a, out=total) is total and total.item() == 2.5
    gl.mean(a, 0, out=avg)
    assert to_numpy(avg).tolist() == [2.0, -0.75]
    gl.mul(a, 2, out=a)  # out may be an input: the result is computed first
    assert to_numpy(a).tolist() == [[2.0, -4.0], [6.0, 1.0]]
    row = gl.zeros(2, 2, device=device)
    gl.exp(gl.zeros(2, device=device), out=row[1])  # out a view: writes into its base
    assert to_numpy(row).tolist() == [[0.0, 0.0], [1.0, 1.0]]


def test_out_dtype_and_shape_rules(device):
    a = gl.tensor(A, device=device)
    down = gl.zeros(2, 2, dtype=gl.float64, device=device)
    gl.add(a, 1, out=down)  # float32 into float64 (and back) casts, as torch does
    assert down.dtype == gl.float64 and to_numpy(down).tolist() == [[2.0, -1.0], [4.0, 1.5]]
    gl.add(gl.ones(2, device=device), 1, out=gl.zeros(2, dtype=gl.float16, device=device))
    with pytest.raises(RuntimeError, match=r"add\(\): result type float32 can't be cast to "
                                           r"the desired output type int64"):
        gl.add(a, 1, out=gl.zeros(2, 2, dtype=gl.int64, device=device))
    ints = gl.zeros(2, dtype=gl.float32, device=device)
    gl.add(gl.tensor([1, 2], device=device), 1, out=ints)  # int64 into float32: allowed
    assert to_numpy(ints).tolist() == [2.0, 3.0]
    empty = gl.empty(0, device=device)
    assert gl.matmul(a, a, out=empty) is empty and empty.shape == (2, 2)  # resized
    assert to_numpy(empty).tolist() == [[-5.0, -3.0], [4.5, -5.75]]
    with pytest.raises(RuntimeError, match=r"mm\(\): out has shape \(3,\) but the result has "
                                           r"shape \(2, 2\).*empty tensor"):
        gl.mm(a, a, out=gl.zeros(3, device=device))
    with pytest.raises(TypeError, match=r"exp\(\): out must be a Tensor, not ndarray"):
        gl.exp(a, out=np.zeros((2, 2), np.float32))


def test_out_refuses_autograd_and_other_devices(device):
    w = gl.tensor(A, device=device, requires_grad=True)
    buf = gl.zeros(2, 2, device=device)
    msg = (r"mul\(\): functions with out=\.\.\. arguments don't support automatic "
           r"differentiation, but one of the arguments requires grad")
    with pytest.raises(RuntimeError, match=msg):
        gl.mul(w, 2, out=buf)
    with pytest.raises(RuntimeError, match=msg.replace("mul", "cat")):
        gl.cat([buf, w], out=gl.empty(0, device=device))
    with pytest.raises(RuntimeError, match="requires grad"):
        gl.add(buf, 1, out=w)  # out itself requires grad
    assert to_numpy(buf).tolist() == [[0.0, 0.0], [0.0, 0.0]] and w._version[0] == 0
    with gl.no_grad():  # allowed without grad mode, also into a parameter (torch too)
        gl.mul(w, 2, out=buf)
        gl.sub(w, buf, out=w)
    assert to_numpy(w).tolist() == [[-1.0, 2.0], [-3.0, -0.5]] and w.requires_grad
    assert w.is_leaf and w._version[0] == 1
    if device == "cuda":
        with pytest.raises(RuntimeError, match="expected out tensor to have device cuda:0, "
                                               "but got cpu instead"):
            gl.add(buf, 1, out=gl.zeros(2, 2))
