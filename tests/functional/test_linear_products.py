"""The products of LinearFn and of a Matmul of two matrices (functional/matmul.py, through
NumpyBackend.matrix_product on the CPU) take ndarray.dot where both operands are C- or
F-contiguous: the same bits as matmul's, which the other layouts keep."""
import types

import numpy as np
import pytest

from gradlab.backend import get_backend
from gradlab.functional.matmul import Matmul, linear_input_grads, linear_product

CPU = get_backend("cpu")  # a node's backend: the products are its matrix_product


def _laid_out(rng, shape, layout, dtype):
    """A (rows, cols) array: C order, F order, every other row, or every other column."""
    rows, cols = shape
    if layout == "C":
        return rng.standard_normal(shape).astype(dtype)
    if layout == "F":
        return np.asfortranarray(rng.standard_normal(shape).astype(dtype))
    if layout == "rows":
        return rng.standard_normal((2 * rows, cols)).astype(dtype)[::2]
    return rng.standard_normal((rows, 2 * cols)).astype(dtype)[:, ::2]


LAYOUTS = ("C", "F", "rows", "columns")


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("x_layout", LAYOUTS)
@pytest.mark.parametrize("g_layout", LAYOUTS)
def test_linear_products_are_matmuls_bit_for_bit(rng, dtype, x_layout, g_layout):
    # Dimensions of 1 are where BLAS routes differ (gemv against gemm, a copy first).
    for n, k, m in [(64, 64, 64), (64, 64, 10), (1, 17, 5), (17, 1, 5), (17, 5, 1), (3, 100, 1),
                    (100, 3, 2), (1, 1, 1)]:
        x = _laid_out(rng, (n, k), x_layout, dtype)
        w = rng.standard_normal((m, k)).astype(dtype)
        g = _laid_out(rng, (n, m), g_layout, dtype)
        ctx = types.SimpleNamespace(backend=CPU, needs_input_grad=(True, True, True))
        y = linear_product(ctx, x, w)
        gx, gw = linear_input_grads(ctx, g)
        for got, want in ((y, x @ w.T), (gx, g @ w), (gw, g.T @ x)):
            assert got.dtype == want.dtype and got.shape == want.shape
            assert got.tobytes() == want.tobytes(), (n, k, m)


def test_linear_products_skip_the_gradients_not_needed(rng):
    x = rng.standard_normal((4, 3)).astype(np.float32)
    w = rng.standard_normal((2, 3)).astype(np.float32)
    g = rng.standard_normal((4, 2)).astype(np.float32)
    for needs, none in (((False, True), 0), ((True, False), 1)):
        ctx = types.SimpleNamespace(backend=CPU, needs_input_grad=needs)
        linear_product(ctx, x, w)
        grads = linear_input_grads(ctx, g)
        assert grads[none] is None and grads[1 - none] is not None


def test_linear_products_of_batched_inputs_are_matmuls(rng):
    x = rng.standard_normal((3, 5, 4)).astype(np.float32)
    w = rng.standard_normal((6, 4)).astype(np.float32)
    g = rng.standard_normal((3, 5, 6)).astype(np.float32)
    ctx = types.SimpleNamespace(backend=CPU, needs_input_grad=(True, True))
    assert linear_product(ctx, x, w).tobytes() == (x @ w.T).tobytes()
    gx, gw = linear_input_grads(ctx, g)
    assert gx.tobytes() == (g @ w).tobytes()
    assert gw.tobytes() == (g.reshape(-1, 6).T @ x.reshape(-1, 4)).tobytes()


class _Ctx(types.SimpleNamespace):
    def save_for_backward(self, *arrays):
        self.saved_tensors = arrays


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("a_layout", LAYOUTS)
@pytest.mark.parametrize("b_layout", LAYOUTS)
def test_matrix_matmul_is_numpys_matmul_bit_for_bit(rng, dtype, a_layout, b_layout):
    # gl.matmul (and @) of two matrices: the same products, forward and both gradients
    for n, k, m in [(64, 64, 64), (1, 17, 5), (17, 5, 1), (3, 100, 1)]:
        a = _laid_out(rng, (n, k), a_layout, dtype)
        b = _laid_out(rng, (k, m), b_layout, dtype)
        g = rng.standard_normal((n, m)).astype(dtype)
        ctx = _Ctx(needs_input_grad=(True, True), xp=np, backend=CPU)
        y = Matmul.forward(ctx, a, b)
        ga, gb = Matmul.backward(ctx, g)
        for got, want in ((y, a @ b), (ga, g @ b.T), (gb, a.T @ g)):
            assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), (n, k, m)


def test_matrix_matmul_of_misfit_shapes_raises_the_matmul_error():
    import gradlab as gl
    with pytest.raises(RuntimeError, match=r"matmul: shapes \(2, 3\) and \(4, 5\) cannot be"):
        gl.matmul(gl.ones(2, 3), gl.ones(4, 5))
