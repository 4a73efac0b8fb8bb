"""Forward values of the core ops against NumPy, stability, and the errors bad input gets."""
import numpy as np
import pytest

import gradlab as gl
from tests.conftest import to_numpy


def _t(a, device, **kw):
    return gl.tensor(np.asarray(a), device=device, **kw)


def test_elementwise_values_match_numpy(device, rng):
    a = rng.standard_normal((3, 4)).astype(np.float32)
    b = rng.uniform(0.5, 2, (4,)).astype(np.float32)
    ta, tb = _t(a, device), _t(b, device)
    cases = {
        "add": (ta + tb, a + b), "sub": (ta - tb, a - b), "mul": (ta * tb, a * b),
        "div": (ta / tb, a / b), "pow": (tb ** 2.5, b ** 2.5), "neg": (-ta, -a),
        "exp": (ta.exp(), np.exp(a)), "log": (tb.log(), np.log(b)),
        "sqrt": (tb.sqrt(), np.sqrt(b)), "abs": (ta.abs(), np.abs(a)),
        "sin": (ta.sin(), np.sin(a)), "cos": (ta.cos(), np.cos(a)),
        "tanh": (ta.tanh(), np.tanh(a)), "sigmoid": (ta.sigmoid(), 1 / (1 + np.exp(-a))),
        "relu": (ta.relu(), np.maximum(a, 0)), "clamp": (ta.clamp(-0.5, 0.5), a.clip(-.5, .5)),
        "maximum": (gl.maximum(ta, tb), np.maximum(a, b)),
        "minimum": (gl.minimum(ta, tb), np.minimum(a, b)),
        "where": (gl.where(ta > 0, ta, tb), np.where(a > 0, a, b)),
        "matmul": (ta @ ta.T, a @ a.T),
    }
    for name, (got, want) in cases.items():
        assert got.dtype == gl.float32, name
        np.testing.assert_allclose(to_numpy(got), want, rtol=1e-5, atol=1e-6, err_msg=name)


def test_masks_combine_with_and_or_xor(device):
    # PyTorch's bitwise operators: logical on bool tensors (the usual use: masks), bitwise
    # on integers, with Python numbers on either side; floats are refused.
    y, x = _t([0, 1, 2, 3], device), _t([1.0, -1.0, 2.0, 0.0], device)
    cases = {
        "and": ((y > 0) & (y < 3), [False, True, True, False]),
        "or": ((y > 2) | (x < 0), [False, True, False, True]),
        "xor": ((y > 0) ^ (x > 0), [True, True, False, True]),
        "int_and": (y & 1, [0, 1, 0, 1]), "reflected_or": (4 | y, [4, 5, 6, 7]),
        "reflected_and": (True & (y > 1), [False, False, True, True]),
        "logical_and": (gl.logical_and(y, x), [False, True, True, False]),
        "logical_or": (x.logical_or(y), [True, True, True, True]),
        "logical_xor": (gl.logical_xor(y, x), [True, False, False, True]),
        "logical_not": (gl.logical_not(y), [True, False, False, False]),
    }
    for name, (got, want) in cases.items():
        assert to_numpy(got).tolist() == want, name
        assert not got.requires_grad, name
    assert ((y > 0) & (y < 3)).dtype == gl.bool and (y & 1).dtype == gl.int64
    with pytest.raises(TypeError, match=r"bitwise_and \(&\): needs bool or integer"):
        x & y
    with pytest.raises(TypeError, match=r"bitwise_or \(\|\): needs bool or integer"):
        (y > 0) | 0.5


def test_gather_sort_and_friends_match_numpy(device, rng):
    a = rng.standard_normal((4, 5)).astype(np.float32)
    a[1, 2] = a[1, 3]  # a tie: the ascending sort keeps the first one first
    idx = rng.integers(0, 5, (4, 3))
    t, ti = _t(a, device), _t(idx, device)
    order = np.argsort(a, axis=1, kind="stable")
    cases = {
        "gather": (t.gather(1, ti), np.take_along_axis(a, idx, 1)),
        "gather_block": (t.gather(0, _t([[3, 0, 1]], device)), a[[3, 0, 1], [0, 1, 2]][None]),
        "masked_fill": (t.masked_fill(t > 0, 9.0), np.where(a > 0, 9.0, a)),
        "norm": (t.norm(), np.linalg.norm(a)),
        "norm_dim": (t.norm(dim=1), np.linalg.norm(a, axis=1)),
        "norm_p1": (t.norm(p=1), np.abs(a).sum()), "norm_inf": (t.norm(p=float("inf")),
                                                               np.abs(a).max()),
        "norm_p3": (t.norm(p=3, dim=0), (np.abs(a) ** 3).sum(0) ** (1 / 3)),
        "cumsum": (t.cumsum(1), np.cumsum(a, 1)),
        "sort": (t.sort(1).values, np.sort(a, 1)), "argsort": (t.argsort(1), order),
        "sort_descending": (t.sort(0, descending=True).values, np.sort(a, 0)[::-1]),
        "topk": (t.topk(2).values, -np.sort(-a, 1)[:, :2]),
        "topk_smallest": (t.topk(3, dim=0, largest=False).indices,
                          np.argsort(a, 0, kind="stable")[:3]),
        "square": (t.square(), a * a), "log1p": (t.abs().log1p(), np.log1p(np.abs(a))),
        "expm1": (t.expm1(), np.expm1(a)), "reciprocal": (t.reciprocal(), 1 / a),
        "rsqrt": (t.abs().rsqrt(), 1 / np.sqrt(np.abs(a))),
        "dot": (gl.dot(t[0], t[1]), a[0] @ a[1]), "outer": (gl.outer(t[0], t[1]),
                                                           np.outer(a[0], a[1])),
        "clamp_min": (t.clamp_min(0.0), np.maximum(a, 0)),
        "clamp_max": (t.clamp_max(0.0), np.minimum(a, 0)),
    }
    for name, (got, want) in cases.items():
        np.testing.assert_allclose(to_numpy(got), want, rtol=1e-5, atol=1e-6, err_msg=name)
    assert t.sort(1).indices.dtype == gl.int64 and to_numpy(t.argsort(1))[1].tolist() == \
        order[1].tolist()
    assert [p.shape for p in t.split(2)] == [(2, 5), (2, 5)]
    assert [p.shape for p in t.split([1, 4], dim=1)] == [(4, 1), (4, 4)]
    assert [p.shape for p in t.chunk(3, dim=1)] == [(4, 2), (4, 2), (4, 1)]
    assert t.view_as(gl.zeros(5, 4)).shape == (5, 4) and t.reshape_as(t.T).shape == (5, 4)
    assert gl.allclose(t, t + 1e-9) and not gl.allclose(t, t + 1) and gl.equal(t, t * 1)
    assert not gl.equal(t, t[:2]) and to_numpy(gl.isclose(t, t * 1.5)).sum() == 0
    assert to_numpy(_t([1, 2, 3], device).cumsum(0)).dtype == np.int64
    # the errors, each saying what to do
    with pytest.raises(IndexError, match="gather: index 5 is out of range for dim 1 of size 5"):
        t.gather(1, _t([[5]], device))
    with pytest.raises(TypeError, match="gather: index must be an integer tensor"):
        t.gather(1, t)
    with pytest.raises(RuntimeError, match="as many dimensions"):
        t.gather(1, _t([1], device))
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        t.masked_fill(t, 0.0)
    with pytest.raises(RuntimeError, match="k must be an int in"):
        t.topk(6)
    with pytest.raises(ValueError, match="must be non-negative and sum to"):
        t.split([1, 1])
    with pytest.raises(RuntimeError, match="must be a vector"):
        gl.dot(t, t)
    with pytest.raises(ValueError, match="p must be 2"):
        t.norm(p=0)
    with pytest.raises(RuntimeError, match="needs a floating-point tensor"):
        _t([1, 2], device).norm()


def test_remainders_flips_repeats_and_counts_match_numpy(device, rng):
    a = rng.standard_normal((3, 4)).astype(np.float32)
    y = np.array([5, -3, 7, 0, 7, 5])
    t, ty = _t(a, device), _t(y, device)
    a[0, 1] = a[0, 2]  # a tie for amax to share
    t = _t(a, device)
    cases = {
        "mod": (ty % 3, y % 3), "rmod": (7 % _t([5, -3, 2], device), 7 % np.array([5, -3, 2])),
        "floordiv": (ty // 2, y // 2), "rfloordiv": (10 // _t([3, -4], device),
                                                   10 // np.array([3, -4])),
        "float_mod": (t % 0.5, np.remainder(a, np.float32(0.5))),
        "flip": (t.flip(1), a[:, ::-1]), "repeat": (t.repeat(2, 3), np.tile(a, (2, 3))),
        "index_select": (t.index_select(0, _t([2, 0], device)), a[[2, 0]]),
        "masked_select": (t.masked_select(t > 0), a[a > 0]),
        "nonzero": (_t(a > 0, device).nonzero(), np.argwhere(a > 0)),
        "unique": (ty.unique(), np.unique(y)),
        "prod": (t.prod(0), a.prod(0)), "amax": (t.amax(1), a.max(1)),
        "amin": (t.amin(), a.min()),
    }
    for name, (got, want) in cases.items():
        np.testing.assert_allclose(to_numpy(got), want, rtol=1e-5, atol=1e-6, err_msg=name)
    values, inverse, counts = ty.unique(return_inverse=True, return_counts=True)
    assert to_numpy(values)[to_numpy(inverse)].tolist() == y.tolist()
    assert to_numpy(counts).tolist() == [1, 1, 2, 2] and counts.dtype == gl.int64
    rows, cols = gl.nonzero(t > 0, as_tuple=True)
    assert to_numpy(t[rows, cols]).tolist() == to_numpy(t.masked_select(t > 0)).tolist()
    assert not (ty // 2).requires_grad
    # amax shares a tie's gradient, max(dim) gives it to the index it reports
    w = _t(a, device, requires_grad=True)
    w.amax(1).sum().backward()
    assert to_numpy(w.grad)[0].sum() == 1.0
    with pytest.raises(RuntimeError, match="at least 2 non-negative int repeats"):
        t.repeat(2)
    with pytest.raises(TypeError, match="index must be a 1-D integer tensor"):
        t.index_select(0, _t([[0]], device))
    # unique(dim=): distinct rows (or columns), sorted, with the inverse and counts per slice
    rows = np.array([[1, 2], [0, 5], [1, 2], [1, -1]])
    tr = _t(rows, device)
    values, inverse, counts = tr.unique(dim=0, return_inverse=True, return_counts=True)
    assert to_numpy(values).tolist() == [[0, 5], [1, -1], [1, 2]]
    assert to_numpy(inverse).tolist() == [2, 0, 2, 1] and inverse.dtype == gl.int64
    assert to_numpy(counts).tolist() == [1, 1, 2]
    assert to_numpy(values)[to_numpy(inverse)].tolist() == rows.tolist()
    cols, col_inverse = tr.unique(dim=-1, return_inverse=True)
    np.testing.assert_array_equal(to_numpy(cols), np.unique(rows, axis=1))
    assert to_numpy(col_inverse).shape == (2,)
    with pytest.raises(IndexError, match="dim"):
        tr.unique(dim=2)


def test_reductions_match_numpy(device, rng):
    a = rng.standard_normal((3, 4, 5))
    t = _t(a, device)
    np.testing.assert_allclose(to_numpy(t.sum()), a.sum())
    np.testing.assert_allclose(to_numpy(t.sum((0, 2))), a.sum((0, 2)))
    np.testing.assert_allclose(to_numpy(t.mean(1, keepdim=True)), a.mean(1, keepdims=True))
    np.testing.assert_allclose(to_numpy(t.var(2)), a.var(2, ddof=1))
    np.testing.assert_allclose(to_numpy(t.var(2, unbiased=False)), a.var(2))
    np.testing.assert_allclose(to_numpy(t.std()), a.std(ddof=1))
    np.testing.assert_allclose(to_numpy(t.max()), a.max())
    values, indices = t.max(dim=1)
    np.testing.assert_allclose(to_numpy(values), a.max(1))
    assert to_numpy(indices).tolist() == a.argmax(1).tolist()
    values, indices = gl.min(t, dim=-1, keepdim=True)
    assert values.shape == (3, 4, 1) and indices.shape == (3, 4, 1)
    assert to_numpy(t.argmax()).item() == a.argmax()
    assert to_numpy(gl.argmax(t, dim=2)).tolist() == a.argmax(2).tolist()
    lse = np.log(np.exp(a).sum(1))
    np.testing.assert_allclose(to_numpy(t.logsumexp(1)), lse)


def test_softmax_family_is_stable_for_huge_logits(device):
    x = _t([[1e4, 0.0, -1e4], [1e4, 1e4, 1e4]], device)
    sm = to_numpy(x.softmax(dim=1))
    lsm = to_numpy(x.log_softmax(dim=1))
    lse = to_numpy(x.logsumexp(dim=1))
    assert np.isfinite(sm).all() and np.isfinite(lsm).all() and np.isfinite(lse).all()
    np.testing.assert_allclose(sm, [[1, 0, 0], [1 / 3] * 3], atol=1e-6)
    np.testing.assert_allclose(lsm[0, :2], [0.0, -1e4], rtol=1e-6)
    np.testing.assert_allclose(lse, [1e4, 1e4 + np.log(3)], rtol=1e-6)
    y = gl.tensor([[1e4, -1e4, 0.0]], device=device, requires_grad=True)
    y.log_softmax(1).sum().backward()
    assert np.isfinite(to_numpy(y.grad)).all()
    assert to_numpy(gl.tensor([-np.inf, -np.inf], device=device).logsumexp()).item() == -np.inf


def test_sigmoid_has_no_overflow(device):
    with np.errstate(over="raise"):
        s = to_numpy(gl.tensor([-1e4, 0.0, 1e4], device=device).sigmoid())
    assert s.tolist() == [0.0, 0.5, 1.0]


def test_shape_ops(device):
    t = gl.arange(24, device=device).reshape(2, 3, 4)
    assert t.view(6, -1).shape == (6, 4)
    assert t.flatten().shape == (24,) and t.flatten(1).shape == (2, 12)
    assert t.permute(2, 0, 1).shape == (4, 2, 3) and t.transpose(0, 1).shape == (3, 2, 4)
    assert t.unsqueeze(0).shape == (1, 2, 3, 4) and t.unsqueeze(-1).shape == (2, 3, 4, 1)
    assert t[:, :1].squeeze().shape == (2, 4) and t[:, :1].squeeze(1).shape == (2, 4)
    assert gl.ones(3, 1, device=device).expand(2, 3, 4).shape == (2, 3, 4)
    assert gl.ones(3, 1, device=device).expand(-1, 5).shape == (3, 5)
    c = gl.cat([t, t], dim=2)
    assert c.shape == (2, 3, 8) and gl.stack([t, t], dim=-1).shape == (2, 3, 4, 2)
    assert to_numpy(t[1, 2]).tolist() == [20, 21, 22, 23]
    assert to_numpy(t[t > 21]).tolist() == [22, 23]


def test_matmul_shapes(device):
    a = gl.ones(2, 3, 4, device=device)
    assert (a @ gl.ones(4, device=device)).shape == (2, 3)
    assert (gl.ones(3, device=device) @ a).shape == (2, 4)
    assert (gl.ones(4, device=device) @ gl.ones(4, device=device)).shape == ()
    assert (a @ gl.ones(5, 4, 2, device=device)[:, None].squeeze(1)[:1]).shape == (2, 3, 2)


# -- bad input ----------------------------------------------------------------------------
def test_shape_mismatch_names_op_and_shapes(device):
    a, b = gl.ones(2, 3, device=device), gl.ones(4, device=device)
    for op, name in [(gl.add, "add"), (gl.sub, "sub"), (gl.mul, "mul"), (gl.div, "div"),
                     (gl.maximum, "maximum")]:
        with pytest.raises(RuntimeError, match=rf"{name}: shapes \(2, 3\) and \(4,\) cannot be "
                                               "broadcast"):
            op(a, b)
    with pytest.raises(RuntimeError, match=r"matmul: shapes \(2, 3\) and \(2, 3\) cannot be "
                                           "multiplied"):
        a @ a
    with pytest.raises(RuntimeError, match=r"linear: input of shape \(2, 3\).*weight of shape "
                                           r"\(5, 4\)"):
        gl.functional.linear(a, gl.ones(5, 4, device=device))
    with pytest.raises(RuntimeError, match=r"reshape: shape \(4, 2\) is invalid for a tensor "
                                           r"of shape \(2, 3\)"):
        a.reshape(4, 2)
    with pytest.raises(RuntimeError, match=r"cat: tensor 0 has shape \(2, 3\) but tensor 1 has "
                                           r"shape \(4,\)"):
        gl.cat([a, b])
    with pytest.raises(RuntimeError, match=r"stack: .*\(2, 3\).*\(4,\)"):
        gl.stack([a, b])
    with pytest.raises(RuntimeError, match=r"expand: can't expand shape \(2, 3\)"):
        a.expand(4, 3)


def test_bad_dims_and_indices(device):
    a = gl.ones(2, 3, device=device)
    with pytest.raises(IndexError, match="sum: dim 2 is out of range for a tensor with 2"):
        a.sum(2)
    with pytest.raises(TypeError, match="softmax\\(\\) needs dim"):
        gl.softmax(a)
    with pytest.raises(IndexError, match=r"out of range for a tensor of shape \(2, 3\)"):
        a[5]
    with pytest.raises(RuntimeError, match="permute: dims"):
        a.permute(0, 0)
    with pytest.raises(RuntimeError, match="no elements"):
        gl.ones(0, device=device).max()
    with pytest.raises(RuntimeError, match="mean\\(\\): needs a floating-point"):
        gl.arange(3, device=device).mean()


def test_gradcheck_reports_worst_element():
    class WrongGrad(gl.Function):
        def forward(ctx, x):
            return x * x

        def backward(ctx, g):
            return g  # should be 2 x g

    x = gl.tensor([0.5, 3.0], dtype=gl.float64, requires_grad=True)
    with pytest.raises(gl.GradcheckError, match=r"input 0 at index \(1,\).*analytic.*"
                                                r"numerical"):
        gl.autograd.gradcheck(WrongGrad.apply, [x])
    assert gl.autograd.gradcheck(WrongGrad.apply, [x], raise_exception=False) is False
    with pytest.raises(ValueError, match="float64"):
        gl.autograd.gradcheck(gl.exp, [gl.ones(2, requires_grad=True)])


def test_one_hot(device):
    F = gl.nn.functional
    y = gl.tensor([[0, 2], [1, 1]], device=device)
    rows = F.one_hot(y)  # num_classes inferred: 3
    assert rows.dtype == gl.int64 and tuple(rows.shape) == (2, 2, 3)
    np.testing.assert_array_equal(to_numpy(rows), np.eye(3, dtype=np.int64)[to_numpy(y)])
    assert tuple(F.one_hot(y, num_classes=np.int64(5)).shape) == (2, 2, 5)
    with pytest.raises(RuntimeError, match=r"class value 3 is outside \[0, 3\)"):
        F.one_hot(gl.tensor([0, 3], device=device), 3)
    with pytest.raises(RuntimeError, match="class value -1 is outside"):
        F.one_hot(gl.tensor([-1, 1], device=device), 2)
    with pytest.raises(TypeError, match=r"integer class indices, got float32; .*\.long\(\)"):
        F.one_hot(gl.tensor([0.0, 1.0], device=device), 2)
    for bad in (0, -2, 2.0, True):
        with pytest.raises(ValueError, match="num_classes must be a positive int"):
            F.one_hot(y, bad)
    with pytest.raises(ValueError, match="empty tensor; pass num_classes"):
        F.one_hot(gl.tensor(np.zeros(0, np.int64), device=device))
