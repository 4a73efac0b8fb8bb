"""PyTorch's rules at the edges, found by a differential test against PyTorch: the dtype of a
float function of an integer tensor, reductions with nothing (or NaN) to reduce, dims out of
range, ties in clamp and sort, x ** 0 at 0. The references are NumPy or derived by hand."""
import numpy as np
import pytest

import gradlab as gl
from tests.conftest import to_numpy

# log(0), 1/0 and 0/0 are what these cases compute; gradlab's own filter
# (backend/numpy_backend.py) silences NumPy's warnings for them, but pytest's capture puts
# its own filters first
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

INT_DTYPES = [gl.int64, gl.int32, gl.uint8, gl.bool]


def _t(a, device, **kw):
    return gl.tensor(np.asarray(a), device=device, **kw)


def _grads(fn, device, *arrays):
    """fn's output and the gradients of its sum, for float64 inputs (None: not a tensor)."""
    inputs = [None if a is None else _t(a, device, dtype=gl.float64, requires_grad=True)
              for a in arrays]
    out = fn(*inputs)
    out.sum().backward()
    return [to_numpy(out)] + [None if t is None else to_numpy(t.grad) for t in inputs]


# -- dtypes: gradlab's default float is float32 ------------------------------------------------
FLOAT_FUNCTIONS = {
    "exp": (gl.exp, np.exp), "log": (gl.log, np.log), "sqrt": (gl.sqrt, np.sqrt),
    "rsqrt": (gl.rsqrt, lambda a: 1 / np.sqrt(a)), "sin": (gl.sin, np.sin),
    "cos": (gl.cos, np.cos), "tanh": (gl.tanh, np.tanh),
    "sigmoid": (gl.sigmoid, lambda a: 1 / (1 + np.exp(-a))), "expm1": (gl.expm1, np.expm1),
    "log1p": (gl.log1p, np.log1p), "arctan": (gl.nn.functional.arctan, np.arctan),
    "logsumexp": (lambda t: gl.logsumexp(t, 0), lambda a: np.log(np.exp(a).sum(0))),
}


@pytest.mark.parametrize("dtype", INT_DTYPES, ids=str)
@pytest.mark.parametrize("name", sorted(FLOAT_FUNCTIONS))
def test_float_functions_of_integers_and_bools_are_float32(name, dtype, device):
    # NumPy computes int64 in float64 and bool in float16; PyTorch in its default float
    op, ref = FLOAT_FUNCTIONS[name]
    a = np.array([1, 0, 1, 1]).astype(dtype)
    with np.errstate(divide="ignore"):
        want = ref(a.astype(np.float32))
    got = op(_t(a, device))
    assert got.dtype == gl.float32, (name, dtype)
    np.testing.assert_allclose(to_numpy(got), want, rtol=1e-6)


def test_float_functions_keep_float16_and_abs_keeps_integers(device):
    half = _t(np.array([0.5, 2.0], dtype=np.float16), device)
    assert gl.exp(half).dtype == gl.float16 and gl.sigmoid(half).dtype == gl.float16
    ints = _t(np.array([-3, 2], dtype=np.int32), device)
    assert gl.abs(ints).dtype == gl.int32 and to_numpy(gl.abs(ints)).tolist() == [3, 2]
    out = gl.empty(2, device=device)
    gl.exp(_t([0, 1], device), out=out)  # out= takes the float32 result
    np.testing.assert_allclose(to_numpy(out), [1.0, np.e], rtol=1e-6)


def test_clamp_promotes_as_pytorch(device):
    ints = _t([1, 5], device)
    low = gl.clamp(ints, min=2.5)
    assert low.dtype == gl.float32 and to_numpy(low).tolist() == [2.5, 5.0]
    assert ints.clamp(max=3.5).dtype == gl.float32
    assert ints.clamp(min=2).dtype == gl.int64 and to_numpy(ints.clamp(min=2)).tolist() == [2, 5]
    small = _t(np.array([1, 5], dtype=np.int32), device)
    assert small.clamp(min=2).dtype == gl.int32
    flags = _t([True, False], device)
    assert to_numpy(flags.clamp(min=0.5)).tolist() == [1.0, 0.5]
    floats = _t(np.array([1.0, 5.0], dtype=np.float32), device)
    assert floats.clamp(min=np.float64(2.5)).dtype == gl.float32  # a scalar never widens
    # a tensor bound with dims is an operand like any other; a 0-d one ranks as a scalar
    wide = _t(np.array([2.5, 2.5]), device, dtype=gl.float64)
    assert floats.clamp(min=wide).dtype == gl.float64
    assert floats.clamp(min=_t(2.5, device, dtype=gl.float64)).dtype == gl.float32


@pytest.mark.parametrize("dtype", [gl.uint8, gl.int8, gl.int32, gl.bool], ids=str)
def test_integer_sums_and_products_are_int64(dtype, device):
    a = np.array([200, 100, 1]).astype(dtype)
    t = _t(a, device)
    wide = a.astype(np.int64)
    for got, want in [(t.sum(), wide.sum()), (t.sum(0), wide.sum(0)),
                      (t.prod(), wide.prod()), (t.cumsum(0), np.cumsum(wide))]:
        assert got.dtype == gl.int64, dtype
        assert to_numpy(got).tolist() == want.tolist()


def test_invert_is_bitwise_on_integers_and_logical_on_bools(device):
    ints = _t([1, 2, -1, 0], device)
    assert (~ints).dtype == gl.int64 and to_numpy(~ints).tolist() == [-2, -3, 0, -1]
    small = _t(np.array([1, 2], dtype=np.uint8), device)
    assert to_numpy(small.bitwise_not()).tolist() == [254, 253]
    assert to_numpy(~_t([True, False], device)).tolist() == [False, True]
    assert to_numpy(gl.functional.bitwise_not(ints > 0)).tolist() == [False, False, True, True]
    with pytest.raises(TypeError, match=r"bitwise_not \(~\): needs a bool or integer tensor, "
                                        r"got float32.*logical_not"):
        ~gl.ones(2, device=device)


# -- reductions with nothing, or NaN, to reduce ------------------------------------------------
@pytest.mark.parametrize("shape, dim", [((1, 3), 0), ((), None), ((2, 1), 1)])
def test_var_and_std_of_one_sample_have_nan_gradients(shape, dim, device):
    # N - correction = 0 (unbiased): the variance is 0/0, and so is its gradient (PyTorch's)
    a = np.arange(1.0, 1.0 + np.prod(shape, dtype=int)).reshape(shape)
    for op in (gl.var, gl.std):
        out, grad = _grads(lambda x, op=op: op(x, dim), device, a)
        assert np.isnan(out).all() and grad.shape == a.shape and np.isnan(grad).all()


def test_std_of_a_constant_slice_has_a_zero_gradient(device):
    # d std / dx = (x - mean) / ((N - 1) std): 0 / 0 over a constant slice, where PyTorch
    # gives 0 (sqrt's inf times var's 0 gave NaN); the other row as the formula
    a = np.array([[2.0, 2.0, 2.0], [1.0, 2.0, 6.0]])
    out, grad = _grads(lambda x: gl.std(x, 1), device, a)
    s = np.sqrt(((a[1] - 3.0) ** 2).sum() / 2)
    np.testing.assert_allclose(out, [0.0, s])
    assert grad[0].tolist() == [0.0, 0.0, 0.0]
    np.testing.assert_allclose(grad[1], (a[1] - 3.0) / (2 * s), rtol=1e-12)


def test_var_without_degrees_of_freedom_divides_by_zero(device):
    # correction = N: sum / 0 is inf, and its gradient 2 / 0 * (x - mean) is +-inf (as PyTorch)
    out, grad = _grads(lambda x: gl.var(x, 0, correction=4), device, [1.0, 2.0, 3.0, 4.0])
    assert out.item() == np.inf and grad.tolist() == [-np.inf, -np.inf, np.inf, np.inf]


def test_var_of_an_empty_tensor_has_an_empty_gradient(device):
    out, grad = _grads(lambda x: gl.var(x, 0), device, np.zeros((0, 3)))
    assert np.isnan(out).all() and out.shape == (3,) and grad.shape == (0, 3)


def test_logsumexp_propagates_nan_and_sums_nothing_to_minus_inf(device):
    nan, inf = np.nan, np.inf
    x = _t([[1.0, nan], [inf, nan], [inf, 1.0], [-inf, -inf], [1.0, 2.0]], device)
    want = [nan, nan, inf, -inf, np.log(np.exp(1.0) + np.exp(2.0))]
    np.testing.assert_allclose(to_numpy(gl.logsumexp(x, 1)), want, rtol=1e-6)
    _, grad = _grads(lambda t: gl.logsumexp(t, 1), device, [[1.0, nan], [1.0, 2.0]])
    assert np.isnan(grad[0]).all()
    np.testing.assert_allclose(grad[1], np.exp([1.0, 2.0]) / np.exp([1.0, 2.0]).sum())
    empty = gl.zeros(0, 3, device=device)
    assert to_numpy(gl.logsumexp(empty, 0)).tolist() == [-inf] * 3
    assert to_numpy(gl.logsumexp(empty)).item() == -inf
    assert gl.logsumexp(empty, 1).shape == (0,)
    assert gl.logsumexp(empty, 0, keepdim=True).shape == (1, 3)
    _, grad = _grads(lambda t: gl.logsumexp(t, 0), device, np.zeros((0, 3)))
    assert grad.shape == (0, 3)


def test_logsumexp_over_dims_given_as_empty(device):
    # PyTorch 2.13: dim=() with keepdim=True is every dim (as sum(dim=()) is); without
    # keepdim it fails on a tensor with dims (gradlab refuses it too); a 0-d input is itself
    a = np.array([[0.0, 1.0, -np.inf], [3.0, 2.0, 5.0]], dtype=np.float32)
    t = _t(a, device)
    kept = gl.logsumexp(t, dim=(), keepdim=True)
    assert kept.shape == (1, 1)
    np.testing.assert_allclose(to_numpy(kept), [[np.log(np.exp(a).sum())]], rtol=1e-6)
    with pytest.raises(RuntimeError, match=r"^logsumexp\(\): dim=\(\) with keepdim=False is "
                                           r"refused.*pass dim=None"):
        gl.logsumexp(t, dim=())
    assert to_numpy(gl.logsumexp(_t(2.0, device), dim=())).item() == 2.0
    assert to_numpy(gl.logsumexp(_t(2.0, device), 0)).item() == 2.0


def test_softmax_of_a_0d_tensor_is_its_one_element(device):
    x = _t(2.0, device, dtype=gl.float64, requires_grad=True)
    sm, lsm = gl.softmax(x, 0), gl.log_softmax(x, dim=-1)
    assert sm.shape == () and to_numpy(sm).item() == 1.0 and to_numpy(lsm).item() == 0.0
    (sm + lsm).backward()
    assert to_numpy(x.grad).item() == 0.0
    with pytest.raises(IndexError, match="softmax: dim 1 is out of range"):
        gl.softmax(x, 1)


# -- dims out of range are errors, not wrapped around --------------------------------------------
def test_flatten_checks_its_dims(device):
    x = gl.zeros(2, 3, 4, device=device)
    assert x.flatten(0, -3).shape == (2, 3, 4) and x.flatten(-2).shape == (2, 12)
    for start, end in [(0, 5), (4, -1), (0, -4)]:
        with pytest.raises(IndexError, match=r"flatten: dim -?\d is out of range for a tensor "
                                             r"with 3 dimension\(s\) \(valid: -3 .. 2\)"):
            gl.flatten(x, start, end)
    with pytest.raises(RuntimeError, match="flatten: start_dim 2 comes after end_dim 1"):
        gl.flatten(x, 2, 1)
    with pytest.raises(RuntimeError, match="start_dim -1 comes after end_dim 0"):
        x.flatten(-1, 0)
    vector, scalar = gl.zeros(5, device=device), gl.tensor(1.0, device=device)
    assert vector.flatten(0, -1).shape == (5,) and scalar.flatten().shape == (1,)
    assert scalar.flatten(-1, 0).shape == (1,)
    for t in (vector, scalar):
        with pytest.raises(IndexError, match=r"flatten: dim 1 is out of range .*"
                                             r"\(valid: -1 .. 0\)"):
            t.flatten(1)


def test_permute_checks_its_dims(device):
    x = gl.zeros(2, 3, 4, device=device)
    assert x.permute(2, -2, 0).shape == (4, 3, 2)
    for dims in [(0, 1, 5), (0, 1, -4)]:
        with pytest.raises(IndexError, match=r"permute: dim -?\d is out of range for a tensor "
                                             r"with 3 dimension"):
            x.permute(*dims)
    for dims in [(0, 0, 1), (0, 1), (0, 1, 2, 3), (2, -1, 0)]:
        with pytest.raises(RuntimeError, match=r"permute: dims .* are not a permutation of "
                                               r"the 3 dims"):
            x.permute(dims)
    scalar = gl.tensor(1.0, device=device)
    assert scalar.permute().shape == () and scalar.T.shape == ()
    with pytest.raises(RuntimeError, match="not a permutation of the 0 dims"):
        scalar.permute(0)


# -- gradients at ties and at 0 ----------------------------------------------------------------
def test_clamp_with_tensor_bounds_has_pytorchs_gradients(device):
    nan = np.nan
    # x inside or on a bound: x's; below lo < hi: lo's; above hi or lo > hi: hi's;
    # lo == hi with x below: nobody's (PyTorch's rule); NaN: nobody's
    x = [0.0, 1.0, 2.0, 3.0, -1.0, nan, 1.0, 5.0, 1.0, 0.0, 3.0]
    lo = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 2.0, 1.0, 1.0, 1.0]
    hi = [2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    out, gx, glo, ghi = _grads(gl.clamp, device, x, lo, hi)
    np.testing.assert_array_equal(out, [0, 1, 2, 2, 0, nan, 1, 1, 1, 1, 1])
    assert gx.tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 1, 0, 0]
    assert glo.tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    assert ghi.tolist() == [0, 0, 0, 1, 0, 0, 1, 1, 0, 0, 1]
    # one bound, another a number or left out; broadcast bounds sum their gradient
    x = [0.0, 1.0, 2.0, nan]
    _, gx, glo = _grads(lambda a, b: gl.clamp(a, min=b), device, x, [1.0] * 4)
    assert gx.tolist() == [0, 1, 1, 0] and glo.tolist() == [1, 0, 0, 0]
    _, gx, ghi = _grads(lambda a, b: gl.clamp(a, max=b), device, x, [1.0] * 4)
    assert gx.tolist() == [1, 1, 0, 0] and ghi.tolist() == [0, 0, 1, 0]
    out, gx, ghi = _grads(lambda a, b: gl.clamp(a, 0.5, b), device, x, [1.0])
    np.testing.assert_array_equal(out, [0.5, 1, 1, nan])
    assert gx.tolist() == [0, 1, 0, 0] and ghi.tolist() == [1]
    with pytest.raises(RuntimeError, match=r"clamp: input \(4,\), min \(3,\) and max \(\) "
                                           "cannot be broadcast"):
        gl.clamp(gl.zeros(4, device=device), gl.zeros(3, device=device), 1.0)


def test_pow_with_exponent_0_has_gradient_0_everywhere(device):
    x = [0.0, 2.0, -1.0, np.nan, np.inf]
    for exponent in (0.0, 0):
        _, gx = _grads(lambda a, e=exponent: a ** e, device, x)
        assert gx.tolist() == [0.0] * 5 and not np.signbit(gx).any()
    out, gx, ge = _grads(gl.pow, device, [0.0, 2.0, 0.0, 3.0], [0.0, 0.0, 2.0, 0.5])
    np.testing.assert_allclose(out, [1.0, 1.0, 0.0, np.sqrt(3.0)], rtol=1e-15)
    np.testing.assert_allclose(gx, [0.0, 0.0, 0.0, 0.5 / np.sqrt(3.0)], rtol=1e-15)
    np.testing.assert_allclose(ge, [0.0, np.log(2.0), 0.0, np.sqrt(3.0) * np.log(3.0)],
                               rtol=1e-15)
    # everywhere else the gradient is b * a^(b-1), to the bit
    a = np.random.default_rng(0).uniform(0.5, 2.0, 7).astype(np.float32)
    for b in (3.0, np.float32([0.5, -1.5, 2.0, 1.0, 3.0, -0.5, 4.0])):
        t = _t(a, device, requires_grad=True)
        (t ** (b if isinstance(b, float) else _t(b, device))).sum().backward()
        np.testing.assert_array_equal(to_numpy(t.grad), np.float32(1) * b * a ** (b - 1))
    zero = _t([0.0, 3.0], device, dtype=gl.float64, requires_grad=True)
    assert gl.autograd.gradcheck(lambda t: t ** 0.0, [zero])
    assert gl.autograd.gradcheck(lambda t: t ** _t([0.0, 0.0], device, dtype=gl.float64),
                                 [zero])


def _stable_descending(a, axis):
    """NumPy reference: the order from the largest down, NaN first, ties in input order."""
    def row(v):
        return sorted(range(len(v)), key=lambda i: (not np.isnan(v[i]), -v[i]))
    return np.apply_along_axis(row, axis, a)


@pytest.mark.parametrize("shape, dim", [((8,), 0), ((3, 7), 1), ((3, 7), 0), ((4, 5, 3), -2)])
def test_stable_descending_sort_keeps_ties_in_input_order(shape, dim, device, rng):
    a = rng.integers(0, 3, shape).astype(np.float32)
    a.flat[1] = np.nan
    t = _t(a, device)
    want = _stable_descending(a, dim % a.ndim)
    np.testing.assert_array_equal(to_numpy(t.argsort(dim, descending=True, stable=True)), want)
    values, indices = gl.sort(t, dim, descending=True, stable=True)
    np.testing.assert_array_equal(to_numpy(indices), want)
    np.testing.assert_array_equal(to_numpy(values), np.take_along_axis(a, want, dim))
    # ascending, ties keep their order with or without stable
    up = np.argsort(a, axis=dim, kind="stable")
    for stable in (False, True):
        np.testing.assert_array_equal(to_numpy(t.argsort(dim, stable=stable)), up)
    # descending without stable: the ascending order read backwards (ties reversed), the
    # order gl.onnx.export reproduces
    np.testing.assert_array_equal(to_numpy(t.argsort(dim, descending=True)),
                                  np.flip(up, dim))


def test_stable_descending_sort_passes_the_gradient_to_the_sorted_elements(device):
    x = _t([1.0, 2.0, 1.0, 2.0], device, dtype=gl.float64, requires_grad=True)
    values, _ = x.sort(descending=True, stable=True)
    (values * _t([1.0, 10.0, 100.0, 1000.0], device, dtype=gl.float64)).sum().backward()
    assert to_numpy(x.grad).tolist() == [100.0, 1.0, 1000.0, 10.0]
