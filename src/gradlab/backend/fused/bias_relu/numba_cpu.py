"""The numba tier of bias + ReLU: one pass over the activation each way, in the reference's
bits (see __init__.py for the order of the column sums).

From PARALLEL_MIN elements the work is cut across the CPU threads (cpu_threads.run_parts):
the forward by rows, the backward by columns, so that every column is still summed by one
thread from row 0 down, as NumPy sums it.
"""
from __future__ import annotations

import numba
import numpy as np

from ... import checks
from ...cpu_threads import PARALLEL_MIN, parts_for, run_parts
from .. import jit_disabled

_jit = numba.njit(cache=True, nogil=True)
_inline = numba.njit(cache=True, nogil=True, inline="always")


# The ReLU's two formulas in the reference's bits, for every numba tier that ends in a ReLU
# (this one, normalization's). ``one`` and ``zero`` have the arrays' dtype.
@_inline
def relu(v, zero):
    """np.maximum(v, 0): NaN stays NaN, and -0.0 becomes +0.0."""
    return v if v > 0 or v != v else zero


@_inline
def relu_grad(g, out, one, zero):
    """g * (out > 0) as the reference multiplies: g * 0 keeps g's sign, makes inf a NaN."""
    return g * (one if out > 0 else zero)


@_jit
def _forward_part(k, nparts, y, bias):
    n, c = y.shape
    zero = y.dtype.type(0)
    for i in range(k * n // nparts, (k + 1) * n // nparts):
        for j in range(c):
            y[i, j] = relu(y[i, j] + bias[j], zero)


@_jit
def _add_part(k, nparts, y, bias):
    n, c = y.shape
    for i in range(k * n // nparts, (k + 1) * n // nparts):
        for j in range(c):
            y[i, j] += bias[j]


@_jit
def _backward_part(k, nparts, grad, out, grad_pre, grad_bias, one, zero):
    # ``one`` and ``zero`` have the arrays' dtype: the mask's values (relu_grad), and the
    # sums stay in that dtype. Two passes over row slices indexed from 0, loops that LLVM
    # vectorizes: summing inside the first pass, or indexing grad[i, c0 + j], measured 4-8x
    # slower on 64 x 64 and 512 x 1024.
    n, c = grad.shape
    c0, c1 = k * c // nparts, (k + 1) * c // nparts
    for i in range(n):
        g, o, p = grad[i, c0:c1], out[i, c0:c1], grad_pre[i, c0:c1]
        for j in range(c1 - c0):
            p[j] = relu_grad(g[j], o[j], one, zero)
    _column_sums(grad_pre, grad_bias, c0, c1, zero)


@_inline
def _column_sums(a, sums, c0, c1, zero):
    """sums[c0:c1] = the sums of a's columns c0..c1 - 1, row by row from +0.0 (NumPy's order
    and start: its identity, so a column of -0.0 sums to +0.0)."""
    acc = sums[c0:c1]
    acc[:] = zero
    for i in range(a.shape[0]):
        p = a[i, c0:c1]
        for j in range(c1 - c0):
            acc[j] += p[j]


@_jit
def _bias_grad_part(k, nparts, grad, sums, zero):
    c = grad.shape[1]
    _column_sums(grad, sums, k * c // nparts, (k + 1) * c // nparts, zero)


# dtype -> (one, zero) of that dtype, the mask's two values
_MASK = {np.dtype(t): (t(1), t(0)) for t in (np.float32, np.float64)}


def bias_relu_forward(y, bias):
    checks.bias_relu_forward_args(y, bias)
    _in_parts(_forward_part, y, bias)
    return y


def bias_relu_backward(grad, out):
    checks.bias_relu_backward_args(grad, out)
    return _backward(grad, out, *_MASK[grad.dtype])


def bias_grad(grad):
    checks.bias_grad_args(grad)
    return _bias_grad(grad, _MASK[grad.dtype][1])


def bias_add(y, bias):
    checks.bias_relu_forward_args(y, bias, "bias_add")
    _in_parts(_add_part, y, bias)
    return y


def _bias_grad(grad, zero):
    c = grad.shape[1]
    sums = np.empty(c, dtype=grad.dtype)
    nparts = parts_for(grad.size)
    if nparts == 1:
        _bias_grad_part(0, 1, grad, sums, zero)
    else:
        run_parts(_bias_grad_part, min(nparts, c), grad, sums, zero)
    return sums


# The prepared forms (FusedOp.prepare): a compiled step's replay calls them with arrays of
# the shapes and dtype it recorded, and the checks above, the op table's choice and the
# extra Python calls were, with the kernel's own dispatch, most of a call's cost on the
# course's MLPs. They check only that the arrays are still like the first ones (2-D,
# C-contiguous: what the op's numba rule accepted) and that GRADLAB_NO_JIT is unset, and make
# the plain call otherwise.
# Below PARALLEL_MIN elements (the shapes are fixed) they call the one part's kernel directly.
def prepare_bias_relu_forward(plain, y, bias):
    return _prepared_forward(plain, y, bias, "_forward_part")


def prepare_bias_add(plain, y, bias):
    return _prepared_forward(plain, y, bias, "_add_part")


def _prepared_forward(plain, y, bias, part):
    shape, bias_shape, dtype = y.shape, bias.shape, y.dtype
    one_part = y.size < PARALLEL_MIN
    kernels = globals()  # (the part by name at each call, as a plain call finds it)

    def run(y, bias):
        if y.shape != shape or y.dtype is not dtype or bias.shape != bias_shape or \
                bias.dtype is not dtype or not (y.flags.c_contiguous and
                                                bias.flags.c_contiguous) or jit_disabled():
            return plain(y, bias)
        kernel = kernels[part]
        if one_part:
            kernel(0, 1, y, bias)
        else:
            _in_parts(kernel, y, bias)
        return y
    return run


def prepare_bias_relu_backward(plain, grad, out):
    shape, dtype = grad.shape, grad.dtype
    one, zero = _MASK[dtype]
    one_part = grad.size < PARALLEL_MIN

    def run(grad, out):
        if grad.shape != shape or out.shape != shape or grad.dtype is not dtype or \
                out.dtype is not dtype or not (grad.flags.c_contiguous and
                                               out.flags.c_contiguous) or jit_disabled():
            return plain(grad, out)
        if not one_part:
            return _backward(grad, out, one, zero)
        grad_pre, grad_bias = np.empty(shape, dtype), np.empty(shape[1], dtype)
        _backward_part(0, 1, grad, out, grad_pre, grad_bias, one, zero)
        return grad_pre, grad_bias
    return run


def _in_parts(part, y, bias):
    """``part`` (a forward kernel, by rows) over all of y: one call, or cut across threads."""
    nparts = parts_for(y.size)
    if nparts == 1:
        part(0, 1, y, bias)
    else:
        run_parts(part, min(nparts, y.shape[0]), y, bias)


def _backward(grad, out, one, zero):
    c = grad.shape[1]
    grad_pre = np.empty_like(grad)
    grad_bias = np.empty(c, dtype=grad.dtype)
    nparts = parts_for(grad.size)
    if nparts == 1:
        _backward_part(0, 1, grad, out, grad_pre, grad_bias, one, zero)
    else:
        run_parts(_backward_part, min(nparts, max(c, 1)), grad, out, grad_pre, grad_bias, one,
                  zero)
    return grad_pre, grad_bias


def prepare_bias_grad(plain, grad):
    shape, dtype = grad.shape, grad.dtype
    zero = _MASK[dtype][1]
    one_part = grad.size < PARALLEL_MIN

    def run(grad):
        if grad.shape != shape or grad.dtype is not dtype or not grad.flags.c_contiguous or \
                jit_disabled():
            return plain(grad)
        if not one_part:
            return _bias_grad(grad, zero)
        sums = np.empty(shape[1], dtype)
        _bias_grad_part(0, 1, grad, sums, zero)
        return sums
    return run
