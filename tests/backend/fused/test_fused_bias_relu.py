"""Every implementation of bias + ReLU held to the reference tier (backend/fused/bias_relu/
reference.py, eager's own calls): the same bytes for the forward output and the masked
gradient (compared with tobytes, so signed zeros and NaN payloads count), and the same
column sums. A column sum that is NaN is only compared as NaN: LLVM may commute the additions
of the numba loop, which changes which NaN operand's sign and payload survive, never whether
the sum is NaN. The CUDA tier is held to the reference in tests/backend/test_cuda_kernels.py.
"""
import numpy as np
import pytest

from gradlab.backend import checks, cpu_backend, cpu_threads
from gradlab.backend.fused import bias_relu as fused_bias_relu
from gradlab.backend.fused.bias_relu import reference
from tests.backend.fused.numba_tier import numba_tier

numba_bias_relu = numba_tier("bias_relu")

pytestmark = [
    # inf * 0 in the masked gradient of the reference: a NaN that both tiers must give
    pytest.mark.filterwarnings("ignore:invalid value encountered in multiply:RuntimeWarning"),
]

BIG_ROWS = cpu_threads.PARALLEL_MIN // 64 + 5  # (BIG_ROWS, 64) is cut into parts
# empty, one row, C == 2 (the fewest columns the numba backward takes), ragged, the MLP
# shapes of the benchmarks, and one large enough to be split across the threads
SHAPES = [(0, 5), (1, 2), (1, 7), (2, 2), (7, 3), (64, 16), (64, 64), (65, 10), (256, 512),
          (BIG_ROWS, 64)]


def _arrays(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.standard_normal(shape).astype(dtype)
    bias = rng.standard_normal(shape[-1]).astype(dtype)
    grad = rng.standard_normal(shape).astype(dtype)
    special = np.array([np.nan, -np.inf, np.inf, -0.0, 0.0, np.finfo(dtype).max,
                        np.finfo(dtype).smallest_subnormal, -1e-30], dtype=dtype)
    flat_y, flat_g = y.reshape(-1), grad.reshape(-1)
    k = min(flat_y.size, special.size)
    flat_y[:k] = special[:k]
    flat_g[-k:] = special[:k][::-1] if k else flat_g[-k:]
    if y.size > 3:
        flat_y[3] = -bias[3 % shape[-1]]     # y + bias == 0 exactly: ReLU's edge
    return y, bias, grad


def _same_bytes(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


def _same_sums(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    nan = np.isnan(b)
    assert np.array_equal(np.isnan(a), nan)
    _same_bytes(a[~nan], b[~nan])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_numba_is_the_reference(shape, dtype):
    y, bias, grad = _arrays(shape, dtype, seed=shape[0] + shape[1])
    out = numba_bias_relu.bias_relu_forward(y.copy(), bias)
    want = reference.bias_relu_forward(y.copy(), bias)
    _same_bytes(out, want)
    assert not np.signbit(want[want == 0]).any()           # -0.0 came out as +0.0
    got_pre, got_bias = numba_bias_relu.bias_relu_backward(grad, want)
    want_pre, want_bias = reference.bias_relu_backward(grad, want)
    _same_bytes(got_pre, want_pre)
    _same_sums(got_bias, want_bias)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_overwrites_its_input(dtype):
    y, bias, _ = _arrays((9, 4), dtype)
    for impl in (numba_bias_relu, reference):
        buf = y.copy()
        assert impl.bias_relu_forward(buf, bias) is buf


def test_sums_are_numpys_row_order_not_pairwise():
    # Float32 rows whose pairwise and row-by-row sums differ: the numba sums must be the
    # reference's (row by row, as NumPy sums a C-contiguous (N, C >= 2) array over axis 0).
    rows = 1000
    grad = np.full((rows, 2), 0.1, dtype=np.float32)
    grad[0] = 3e4
    out = np.ones_like(grad)
    _, sums = numba_bias_relu.bias_relu_backward(grad, out)
    _, want = reference.bias_relu_backward(grad, out)
    _same_bytes(sums, want)
    pairwise = np.float32(3e4) + np.sum(grad[1:, 0].copy())  # another order: other bits
    assert pairwise != want[0]


def test_each_call_picks_numba_only_where_its_order_is_the_references():
    be = cpu_backend()
    y, bias, grad = _arrays((8, 3), np.float32)
    op_f, op_b = fused_bias_relu.bias_relu_forward, fused_bias_relu.bias_relu_backward
    assert op_f.tier_for(be, y, bias) == "numba"
    assert op_b.tier_for(be, grad, y) == "numba"
    one_col = np.ones((8, 1), np.float32)
    assert op_b.tier_for(be, one_col, one_col) == "numpy"     # NumPy sums one column pairwise
    assert op_f.tier_for(be, one_col, np.ones(1, np.float32)) == "numba"
    nd = np.ones((2, 4, 3), np.float32)
    assert op_f.tier_for(be, nd, bias) == "numpy"
    assert op_b.tier_for(be, nd, nd) == "numpy"
    strided = np.ones((8, 6), np.float32)[:, ::2]
    assert op_f.tier_for(be, strided, bias) == "numpy"
    assert op_b.tier_for(be, strided, y) == "numpy"
    half = np.ones((8, 3), np.float16)
    assert op_f.tier_for(be, half, half[0]) == "numpy"


@pytest.mark.parametrize("shape", [(40, 1), (2, 5, 3), (0, 4)], ids=str)
def test_the_backend_gives_the_reference_on_every_shape(shape):
    be = cpu_backend()
    y, bias, grad = _arrays(shape, np.float64, seed=3)
    _same_bytes(be.bias_relu_forward(y.copy(), bias), reference.bias_relu_forward(y.copy(), bias))
    out = reference.bias_relu_forward(y.copy(), bias)
    for got, want in zip(be.bias_relu_backward(grad, out), reference.bias_relu_backward(grad, out)):
        _same_sums(got, want)


@pytest.mark.parametrize("impl", [numba_bias_relu, reference], ids=["numba", "numpy"])
def test_bad_arguments_are_refused_with_the_shapes(impl):
    y = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"bias must have shape \(3,\) and dtype float32"):
        impl.bias_relu_forward(y, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="bias must have shape"):
        impl.bias_relu_forward(y, np.ones(3, np.float64))
    with pytest.raises(ValueError, match="one shape and dtype"):
        impl.bias_relu_backward(y, np.ones((4, 2), np.float32))
    with pytest.raises(TypeError):
        impl.bias_relu_forward(np.ones((4, 3), np.int32), np.ones(3, np.int32))


def test_checks_name_the_op():
    with pytest.raises(ValueError, match="bias_relu_backward"):
        checks.bias_relu_backward_args(np.ones((2, 2)), np.ones((2, 2), np.float32))


# -- the prepared forms (FusedOp.prepare), which a compiled step's replay calls --------------
def test_the_prepared_forms_are_the_plain_calls(monkeypatch):
    be = cpu_backend()
    y, bias, grad = _arrays((64, 16), np.float32)
    forward, backward = be.prepare_bias_relu(y, bias)
    for seed in range(3):
        y, bias, grad = _arrays((64, 16), np.float32, seed=seed)
        out = forward(y.copy(), bias)
        _same_bytes(out, reference.bias_relu_forward(y.copy(), bias))
        for got, want in zip(backward(grad, out), reference.bias_relu_backward(grad, out)):
            _same_sums(got, want)
    # arrays unlike the first: the plain dispatch (here the reference, or another shape)
    for y2, b2, g2 in [_arrays((3, 16), np.float32), _arrays((64, 16), np.float64),
                       _arrays((2, 32, 16), np.float32)]:
        out = forward(y2.copy(), b2)
        _same_bytes(out, reference.bias_relu_forward(y2.copy(), b2))
        for got, want in zip(backward(g2, out), reference.bias_relu_backward(g2, out)):
            _same_sums(got, want)
    strided = np.ones((64, 32), np.float32)[:, ::2]
    _same_bytes(backward(strided, strided)[0], reference.bias_relu_backward(strided, strided)[0])
    calls = []
    kernel = numba_bias_relu._forward_part  # (below PARALLEL_MIN: the one part, directly)
    monkeypatch.setattr(numba_bias_relu, "_forward_part",
                        lambda *a: calls.append(1) or kernel(*a))
    forward(y.copy(), bias)
    assert calls == [1]
    monkeypatch.setenv("GRADLAB_NO_JIT", "1")      # read at every call, as the plain call does
    _same_bytes(forward(y.copy(), bias), reference.bias_relu_forward(y.copy(), bias))
    assert calls == [1]


def test_prepared_forms_are_the_plain_dispatch_where_numba_does_not_run():
    be = cpu_backend()
    one_col = np.ones((8, 1), np.float32)
    _, backward = be.prepare_bias_relu(one_col, np.ones(1, np.float32))
    assert backward.func is fused_bias_relu.bias_relu_backward   # functools.partial(op, be)


@pytest.mark.parametrize("shape", [(64, 16), (BIG_ROWS, 64)], ids=str)
def test_the_prepared_forms_are_the_reference_small_and_cut_into_parts(shape):
    be = cpu_backend()
    y, bias, grad = _arrays(shape, np.float32, seed=7)
    forward, backward = be.prepare_bias_relu(y, bias)
    out = forward(y.copy(), bias)
    _same_bytes(out, reference.bias_relu_forward(y.copy(), bias))
    for got, want in zip(backward(grad, out), reference.bias_relu_backward(grad, out)):
        _same_sums(got, want)


# -- bias_grad: a Linear's bias gradient where no ReLU follows (LinearFn's column sums) ------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_bias_grad_numba_is_the_reference_and_linear_fn(shape, dtype):
    _, _, grad = _arrays(shape, dtype, seed=3)
    grad[:, :1] = -0.0 if shape[0] else grad[:, :1]   # a column of -0.0 sums to +0.0
    want = reference.bias_grad(grad)
    _same_sums(want, grad.reshape(-1, grad.shape[-1]).sum(axis=0))  # LinearFn's formula
    _same_sums(numba_bias_relu.bias_grad(grad), want)
    _same_sums(cpu_backend().bias_grad(grad), want)


def test_bias_grad_numba_rule_leaves_one_column_and_other_layouts_to_the_reference():
    rule = fused_bias_relu.bias_grad.use_numba
    assert rule(np.ones((8, 2), np.float32))
    for a in [np.ones((8, 1), np.float32),                 # NumPy sums one column pairwise
              np.ones((8, 3, 2), np.float32),              # N-D: LinearFn reshapes first
              np.ones((8, 6), np.float32)[:, ::2],         # strided
              np.ones((8, 2), np.float16)]:
        assert not rule(a)
    big = np.random.default_rng(0).standard_normal((10_000, 1)).astype(np.float32)
    _same_bytes(cpu_backend().bias_grad(big), big.sum(axis=0))
    half = np.random.default_rng(1).standard_normal((40, 3)).astype(np.float16)
    _same_bytes(cpu_backend().bias_grad(half), half.sum(axis=0))  # LinearFn sums any float


def test_bias_grad_checks_its_argument():
    for impl in (numba_bias_relu, reference):
        with pytest.raises(TypeError, match="bias_grad: grad must have a float dtype"):
            impl.bias_grad(np.ones((4, 3), np.int32))
        with pytest.raises(ValueError, match="at least one dim"):
            impl.bias_grad(np.float32(1.0).reshape(()))


@pytest.mark.parametrize("shape", [(64, 16), (BIG_ROWS, 64)], ids=str)
def test_bias_grad_prepared_is_the_plain_call(shape, monkeypatch):
    be = cpu_backend()
    _, _, grad = _arrays(shape, np.float32, seed=5)
    run = be.prepare_bias_grad(grad)
    for seed in range(3):
        _, _, g = _arrays(shape, np.float32, seed=seed)
        _same_sums(run(g), reference.bias_grad(g))
    # arrays unlike the first: the plain dispatch
    for g in [_arrays((3, 16), np.float32)[2], _arrays(shape, np.float64)[2],
              np.ones((shape[0], 32), np.float32)[:, ::2]]:
        _same_sums(run(g), reference.bias_grad(g))
    calls = []
    monkeypatch.setattr(numba_bias_relu, "_bias_grad_part",
                        lambda *a, kernel=numba_bias_relu._bias_grad_part:
                        calls.append(1) or kernel(*a))
    run(grad)
    assert calls
    calls.clear()
    monkeypatch.setenv("GRADLAB_NO_JIT", "1")      # read at every call, as the plain call does
    _same_sums(run(grad), reference.bias_grad(grad))
    assert not calls


def test_bias_grad_has_no_prepared_form_where_numba_does_not_run(monkeypatch):
    be = cpu_backend()
    assert be.prepare_bias_grad(np.ones((8, 1), np.float32)) is None
    assert callable(be.prepare_bias_grad(np.ones((8, 2), np.float32)))
    monkeypatch.setenv("GRADLAB_NO_JIT", "1")
    assert be.prepare_bias_grad(np.ones((8, 2), np.float32)) is None


# -- bias_add: a Linear's bias where no ReLU follows (LinearFn's in-place add) -----------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_bias_add_numba_is_the_reference_and_linear_fn(shape, dtype):
    y, bias, _ = _arrays(shape, dtype, seed=shape[0] + 2 * shape[1])
    want = y + bias                                          # LinearFn's formula
    _same_bytes(reference.bias_add(y.copy(), bias), want)
    buf = y.copy()
    assert numba_bias_relu.bias_add(buf, bias) is buf          # overwritten, as y += bias
    _same_bytes(buf, want)
    _same_bytes(cpu_backend().bias_add(y.copy(), bias), want)


def test_bias_add_takes_the_forwards_rule_and_checks_its_arguments():
    be = cpu_backend()
    y, bias, _ = _arrays((8, 3), np.float32)
    assert fused_bias_relu.bias_add.tier_for(be, y, bias) == "numba"
    for other in [np.ones((2, 4, 3), np.float32), np.ones((8, 6), np.float32)[:, ::2]]:
        assert fused_bias_relu.bias_add.tier_for(be, other, bias) == "numpy"
        _same_bytes(be.bias_add(other.copy(), bias), other + bias)
    half = np.ones((8, 3), np.float16)
    assert fused_bias_relu.bias_add.tier_for(be, half, half[0]) == "numpy"
    for impl in (numba_bias_relu, reference):
        with pytest.raises(ValueError, match=r"bias_add: bias must have shape \(3,\)"):
            impl.bias_add(y.copy(), np.ones(4, np.float32))
        with pytest.raises(TypeError, match="bias_add"):
            impl.bias_add(np.ones((4, 3), np.int32), np.ones(3, np.int32))


@pytest.mark.parametrize("shape", [(64, 10), (BIG_ROWS, 64)], ids=str)
def test_bias_add_prepared_is_the_plain_call(shape, monkeypatch):
    be = cpu_backend()
    y, bias, _ = _arrays(shape, np.float32, seed=4)
    run = be.prepare_bias_add(y, bias)
    for seed in range(3):
        y, bias, _ = _arrays(shape, np.float32, seed=seed)
        _same_bytes(run(y.copy(), bias), y + bias)
    # arrays unlike the first: the plain dispatch
    for y2, b2, _ in [_arrays((3, shape[1]), np.float32), _arrays(shape, np.float64),
                      _arrays((2, 5, shape[1]), np.float32)]:
        _same_bytes(run(y2.copy(), b2), y2 + b2)
    strided = np.ones((shape[0], 2 * shape[1]), np.float32)[:, ::2]
    _same_bytes(run(strided.copy(), bias), strided + bias)
    calls = []
    monkeypatch.setattr(numba_bias_relu, "_add_part",
                        lambda *a, kernel=numba_bias_relu._add_part: calls.append(1) or kernel(*a))
    run(y.copy(), bias)
    assert calls
    calls.clear()
    monkeypatch.setenv("GRADLAB_NO_JIT", "1")      # read at every call, as the plain call does
    _same_bytes(run(y.copy(), bias), y + bias)
    assert not calls


def test_bias_add_has_no_prepared_form_where_numba_does_not_run(monkeypatch):
    be = cpu_backend()
    half = np.ones((8, 3), np.float16)
    assert be.prepare_bias_add(half, half[0]) is None
    assert callable(be.prepare_bias_add(np.ones((8, 3), np.float32), np.ones(3, np.float32)))
    monkeypatch.setenv("GRADLAB_NO_JIT", "1")
    assert be.prepare_bias_add(np.ones((8, 3), np.float32), np.ones(3, np.float32)) is None
