"""Matrix products: matmul (vector, matrix, batched with broadcasting) and linear."""
from __future__ import annotations

import numpy as np

from ..autograd.function import Function
from .elementwise import unbroadcast
from .out import write_out


def _matmul_error(op, a_shape, b_shape):
    return RuntimeError(f"{op}: shapes {tuple(a_shape)} and {tuple(b_shape)} cannot be "
                        "multiplied (the last dim of the first must equal the "
                        "second-to-last dim of the second)")


def _linear_error(x_shape, w_shape):
    x_shape, w_shape = tuple(x_shape), tuple(w_shape)
    if len(w_shape) != 2 or not x_shape:
        return RuntimeError(f"linear: input of shape {x_shape} does not fit a weight of shape "
                            f"{w_shape}; the weight must be 2-D (out_features, in_features) "
                            "and the input at least 1-D (..., in_features)")
    out_f, in_f = w_shape
    return RuntimeError(
        f"linear: input of shape {x_shape} has {x_shape[-1]} features, but the weight of "
        f"shape {w_shape} expects in_features={in_f}; give inputs whose last dim is {in_f} "
        f"(flatten or select features), or build the layer as Linear({x_shape[-1]}, "
        f"{out_f})")


def _dtype_error(op, a, b, names):
    """PyTorch refuses a product of two dtypes instead of widening one silently (NumPy would
    compute a float32 model on float64 data in float64, at twice the memory and time)."""
    first, second = names
    return RuntimeError(
        f"{op}: {first} is {a.dtype} but {second} is {b.dtype}; both must have one dtype. "
        f"Convert one with .to(), e.g. x.float() for float32 (the default) or model.double() "
        f"for a float64 model")


class Matmul(Function):
    def forward(ctx, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise RuntimeError(f"matmul: both arguments need at least 1 dimension, got shapes "
                               f"{tuple(a.shape)} and {tuple(b.shape)}")
        if a.dtype != b.dtype:
            raise _dtype_error("matmul", a, b, ("the first argument", "the second"))
        ctx.save_for_backward(a, b)
        try:
            return ctx.backend.matrix_product(a, b) if a.ndim == 2 and b.ndim == 2 else a @ b
        except ValueError:
            raise _matmul_error("matmul", a.shape, b.shape) from None

    def backward(ctx, g):
        a, b = ctx.saved_tensors
        na, nb = ctx.needs_input_grad
        if a.ndim == 2 and b.ndim == 2:  # (no broadcasting to undo)
            return (ctx.backend.matrix_product(g, b.T) if na else None,
                    ctx.backend.matrix_product(a.T, g) if nb else None)
        xp = ctx.xp
        # Work in >= 2-D: a vector is a row (left) or a column (right) matrix.
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        if a.ndim == 1 or b.ndim == 1:
            batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
            g = g.reshape(batch + (a2.shape[-2], b2.shape[-1]))
        ga = gb = None
        if na:
            ga = unbroadcast(g @ xp.swapaxes(b2, -1, -2), a2.shape).reshape(a.shape)
        if nb:
            gb = unbroadcast(xp.swapaxes(a2, -1, -2) @ g, b2.shape).reshape(b.shape)
        return ga, gb


class LinearFn(Function):
    """y = x W^T + b, for x of shape (..., in_features), W (out_features, in_features)."""

    def forward(ctx, x, weight, bias=None):
        if weight.ndim != 2 or x.ndim == 0 or x.shape[-1] != weight.shape[1]:
            raise _linear_error(x.shape, weight.shape)
        if x.dtype != weight.dtype or (bias is not None and bias.dtype != weight.dtype):
            raise _dtype_error("linear", x if x.dtype != weight.dtype else bias, weight,
                               ("the input" if x.dtype != weight.dtype else "the bias",
                                "the weight"))
        y = linear_product(ctx, x, weight)
        if bias is not None:
            y += bias
        return y

    def backward(ctx, g):
        gx, gw = linear_input_grads(ctx, g)
        needs = ctx.needs_input_grad
        gb = g.reshape(-1, g.shape[-1]).sum(axis=0) if len(needs) > 2 and needs[2] else None
        return gx, gw, gb


# LinearFn's product and its two gradient products, shared with the fused Linear + ReLU of a
# compiled step (functional/fusions.py), which must compute exactly what LinearFn does.
# (On the course's MLPs a replayed step makes a few dozen such calls, and their Python
# around the GEMMs is counted: the saved pair is set without the method call, 2-D
# operands, the usual case, skip the reshapes, which are views of the same strides there,
# and their products are the backend's matrix_product.)
def linear_product(ctx, x, weight):
    """x W^T of a LinearFn node ``ctx``, saving what its backward reads."""
    ctx.saved_tensors = (x, weight)  # Function.save_for_backward's whole work
    if x.ndim == 2:
        return ctx.backend.matrix_product(x, weight.T)
    return x @ weight.T


def linear_input_grads(ctx, g):
    """The gradients of x and W (None where not needed) of a LinearFn node ``ctx`` whose
    output has gradient ``g``."""
    x, w = ctx.saved_tensors
    needs = ctx.needs_input_grad
    if g.ndim == 2:
        gx = ctx.backend.matrix_product(g, w) if needs[0] else None
    else:  # (N-D: matmul broadcasts w; the weight's gradient sums over the flattened rows)
        gx = g @ w if needs[0] else None
        if needs[1]:
            g, x = g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1])
    return gx, ctx.backend.matrix_product(g.T, x) if needs[1] else None


def mm(input, mat2, *, out=None):
    """Product of two matrices (2-D only, as PyTorch's mm; matmul also takes vectors and
    batches)."""
    if out is not None:
        return write_out("mm", out, (input, mat2), lambda: mm(input, mat2))
    for name, x in (("input", input), ("mat2", mat2)):
        if getattr(x, "ndim", None) != 2:
            raise RuntimeError(f"mm: {name} must be a matrix (2-D), got shape "
                               f"{tuple(getattr(x, 'shape', ()))}; use gl.matmul for vectors "
                               f"and batches")
    return Matmul.apply(input, mat2)


def matmul(input, other, *, out=None):
    """Matrix product with NumPy/PyTorch semantics for 1-D, 2-D and batched operands."""
    if out is not None:
        return write_out("matmul", out, (input, other), lambda: Matmul.apply(input, other))
    return Matmul.apply(input, other)


def _check_vectors(op, **named):
    for name, x in named.items():
        if getattr(x, "ndim", None) != 1:
            raise RuntimeError(f"{op}: {name} must be a vector (1-D), got shape "
                               f"{tuple(getattr(x, 'shape', ()))}; use gl.matmul for matrices")


def dot(input, other):
    """The inner product of two vectors (1-D, of one length)."""
    _check_vectors("dot", input=input, other=other)
    if input.shape != other.shape:
        raise RuntimeError(f"dot: the vectors have {input.shape[0]} and {other.shape[0]} "
                           f"elements")
    return Matmul.apply(input, other)


def outer(input, vec2):
    """The outer product of two vectors: out[i, j] = input[i] * vec2[j]."""
    _check_vectors("outer", input=input, vec2=vec2)
    return input.reshape(-1, 1) * vec2.reshape(1, -1)


def linear(input, weight, bias=None):
    """x @ weight.T + bias, as one op (one GEMM forward, two backward)."""
    if bias is None:
        return LinearFn.apply(input, weight)
    return LinearFn.apply(input, weight, bias)
