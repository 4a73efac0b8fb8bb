"""``out=``: PyTorch's keyword for writing an op's result into an existing tensor.

``gl.add(a, b, out=c)`` computes ``a + b`` and writes it into ``c``'s memory (same Tensor
object, version counter bumped), then returns ``c``. As in PyTorch:

- no graph is recorded, so it is an error while grad mode is on and an input (or ``out``)
  requires grad; inside ``with gl.no_grad():`` it is allowed, also into a parameter;
- ``out`` must be on the result's device, and its dtype one the result casts to within its
  kind or upwards (NumPy's "same_kind": float64 into float32 yes, float into int64 no);
- an empty ``out`` (0 elements) is resized to the result's shape.

Unlike PyTorch, a non-empty ``out`` of another shape is an error instead of a resize with a
deprecation warning. The result is computed first and then copied, so ``out`` may alias an
input (``gl.mul(x, 2, out=x)``).
"""
from __future__ import annotations

import numpy as np

from ..autograd import grad_mode
from ..autograd.dtypes import default_float
from ..autograd.tensor import Tensor

_state = grad_mode._state


def write_out(name, out, inputs, compute):
    """Check ``out`` against ``inputs``, run ``compute()`` (a Tensor) and copy it into out."""
    if not isinstance(out, Tensor):
        raise TypeError(f"{name}(): out must be a Tensor, not {type(out).__name__}")
    if _state.enabled and (out._requires_grad or any(
            isinstance(t, Tensor) and t._requires_grad for t in inputs)):
        raise RuntimeError(f"{name}(): functions with out=... arguments don't support "
                           "automatic differentiation, but one of the arguments requires "
                           "grad.")
    if getattr(_state, "tape", None) is not None:  # (a compiled step being recorded)
        raise RuntimeError(f"{name}(): out= is not recorded into a compiled step; write "
                           "the out-of-place op (y = gl.add(a, b)) inside the step")
    result = compute()
    if result._backend is not out._backend:
        raise RuntimeError(f"{name}(): expected out tensor to have device {result.device}, "
                           f"but got {out.device} instead")
    src, dst = result._data, out._data
    if not np.can_cast(src.dtype, dst.dtype, "same_kind"):
        raise RuntimeError(f"{name}(): result type {src.dtype} can't be cast to the desired "
                           f"output type {dst.dtype}")
    if src.shape != dst.shape:
        if dst.size:
            raise RuntimeError(
                f"{name}(): out has shape {tuple(dst.shape)} but the result has shape "
                f"{tuple(src.shape)}; pass an out of the result's shape, or an empty tensor "
                "(gl.empty(0)), which is resized")
        out._data = dst = out._backend.xp.empty(src.shape, dtype=dst.dtype)
    dst[...] = src
    out._bump()
    return out


def as_floating(input):
    """``input`` converted to the default float dtype (float32) when it is an integer or
    bool tensor, else itself: PyTorch's rule for a float function (exp, log, sigmoid, ...)
    of such a tensor. NumPy would compute int64 in float64 and bool in float16.

    The conversion is an op of its own in the graph (a Cast), so a recorded step and an ONNX
    export see the float function's input as float, as the function computes it.
    """
    if isinstance(input, Tensor) and input._data.dtype.kind in "biu":
        return input.to(default_float)
    return input


def unary(name, fn, doc=None, *, with_out=False, floating=False):
    """The public wrapper of the one-input Function ``fn``: ``name(input)``, or with
    ``with_out`` ``name(input, *, out=None)``; with ``floating`` an integer or bool input is
    converted first (``as_floating``).

    One definition for the many ops whose wrapper only applies their Function, so that
    the ``out=`` rule above is wired the same way everywhere.
    """
    apply = fn.apply
    if floating:
        def apply(input):
            return fn.apply(as_floating(input))
    if with_out:
        def op(input, *, out=None):
            if out is not None:
                return write_out(name, out, (input,), lambda: apply(input))
            return apply(input)
    else:
        def op(input):
            return apply(input)
    return named(op, name, fn.__module__, doc)


def binary(name, fn, doc=None):
    """``name(input, other, *, out=None)``, applying the two-input Function ``fn``."""
    def op(input, other, *, out=None):
        if out is not None:
            return write_out(name, out, (input, other), lambda: fn.apply(input, other))
        return fn.apply(input, other)
    return named(op, name, fn.__module__, doc)


def named(op, name, module, doc):
    """``op`` made by a factory, named as if defined as ``name`` in ``module`` (the module
    of the Function it applies), so that it lists, pickles and documents as such."""
    op.__name__ = op.__qualname__ = name
    op.__module__ = module
    op.__doc__ = doc
    return op
