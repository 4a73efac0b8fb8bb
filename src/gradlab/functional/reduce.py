"""Reductions: sum, mean, var, std, max, min, argmax, argmin, logsumexp.

Each takes ``dim=None | int | tuple`` and ``keepdim=False`` like PyTorch.
"""
from __future__ import annotations

import builtins
from collections import namedtuple

from ..autograd.function import Function
from ..autograd.tensor import Tensor
from .out import write_out

ValuesIndices = namedtuple("ValuesIndices", ["values", "indices"])


def normalize_dim(op, dim, ndim):
    """``dim`` as a sorted tuple of non-negative axes (all axes when None)."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    out = []
    for d in dims:
        if not isinstance(d, int) or isinstance(d, bool):
            raise TypeError(f"{op}: dim must be an int or a tuple of ints, got {dim!r}")
        span = builtins.max(ndim, 1)
        if not -span <= d < span:
            raise IndexError(f"{op}: dim {d} is out of range for a tensor with {ndim} "
                             f"dimension(s) (valid: {-span} .. {span - 1})")
        out.append(d % ndim if ndim else 0)
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: dim {dim!r} names an axis twice")
    return tuple(sorted(out)) if ndim else ()


def _expand_back(xp, g, shape, axes, keepdim):
    """Broadcast a reduced gradient back to the input's shape."""
    if not keepdim and axes:
        g = xp.expand_dims(g, axes)
    return xp.broadcast_to(g, shape)


class Sum(Function):
    def forward(ctx, x, axes, keepdim):
        ctx.in_shape, ctx.axes, ctx.keepdim = x.shape, axes, keepdim
        return x.sum(axis=axes, keepdims=keepdim)

    def backward(ctx, g):
        return _expand_back(ctx.xp, g, ctx.in_shape, ctx.axes, ctx.keepdim)


class Mean(Function):
    def forward(ctx, x, axes, keepdim):
        ctx.in_shape, ctx.axes, ctx.keepdim = x.shape, axes, keepdim
        ctx.count = _count(x.shape, axes)
        return x.mean(axis=axes, keepdims=keepdim)

    def backward(ctx, g):
        return _expand_back(ctx.xp, g / ctx.count, ctx.in_shape, ctx.axes, ctx.keepdim)


class Var(Function):
    def forward(ctx, x, axes, keepdim, correction):
        ctx.axes, ctx.keepdim = axes, keepdim
        n = _count(x.shape, axes)
        ctx.denom = builtins.max(n - correction, 0)
        centered = x - x.mean(axis=axes, keepdims=True)
        ctx.save_for_backward(centered)
        return (centered * centered).sum(axis=axes, keepdims=keepdim) / ctx.denom

    def backward(ctx, g):
        centered, = ctx.saved_tensors
        g = _expand_back(ctx.xp, g, centered.shape, ctx.axes, ctx.keepdim)
        return g * (2.0 / ctx.denom) * centered


class _Extreme(Function):
    """max/min. Over all elements the gradient is shared evenly among ties (as PyTorch);
    along a dim it goes to the index reported."""

    pick = "max"

    def forward(ctx, x, axis, keepdim):
        xp = ctx.xp
        ctx.in_shape, ctx.axis, ctx.keepdim = x.shape, axis, keepdim
        if axis is None:
            out = getattr(x, ctx.pick)()
            ctx.save_for_backward(x, out)
            return out
        idx = getattr(xp, "arg" + ctx.pick)(x, axis=axis)
        ctx.indices = idx
        out = xp.take_along_axis(x, xp.expand_dims(idx, axis), axis=axis)
        return out if keepdim else out.squeeze(axis)

    def backward(ctx, g):
        xp = ctx.xp
        if ctx.axis is None:
            x, out = ctx.saved_tensors
            mask = x == out
            # the count in g's dtype: an integer count would make the gradient float64
            return mask * (g / mask.sum().astype(g.dtype))
        positions = xp.arange(ctx.in_shape[ctx.axis]).reshape(
            [-1 if d == ctx.axis else 1 for d in range(len(ctx.in_shape))])
        mask = positions == xp.expand_dims(ctx.indices, ctx.axis)
        if not ctx.keepdim:
            g = xp.expand_dims(g, ctx.axis)
        return mask * g

    def release(self):
        super().release()
        self.indices = None


class Max(_Extreme):
    pick = "max"


class Min(_Extreme):
    pick = "min"


class ArgExtreme(Function):
    """argmax/argmin (``op``) as int64, of the flattened tensor when ``axis`` is None; no
    gradient."""
    differentiable = False

    def forward(ctx, x, op, axis, keepdim):
        xp = ctx.xp
        if axis is None:
            idx = getattr(xp, op)(x.reshape(-1))
            if keepdim:
                idx = xp.reshape(idx, (1,) * x.ndim)
        else:
            idx = getattr(xp, op)(x, axis=axis)
            if keepdim:
                idx = xp.expand_dims(idx, axis)
        return xp.asarray(idx).astype("int64", copy=False)


class Truth(Function):
    """all/any (``op``) along ``axes`` as a bool tensor; no gradient."""
    differentiable = False

    def forward(ctx, x, op, axes, keepdim):
        return ctx.xp.asarray(getattr(x, op)(axis=axes, keepdims=keepdim))


class Logsumexp(Function):
    def forward(ctx, x, axes, keepdim):
        xp = ctx.xp
        ctx.axes, ctx.keepdim = axes, keepdim
        m = x.max(axis=axes, keepdims=True)
        m = xp.where(xp.isfinite(m), m, 0)
        total = xp.exp(x - m).sum(axis=axes, keepdims=True)
        # A slice of all -inf sums to 0: its logsumexp is -inf (without a log(0) warning).
        out = xp.where(total > 0, xp.log(xp.where(total > 0, total, 1)) + m, -xp.inf)
        ctx.save_for_backward(x, out)
        return out if keepdim else out.squeeze(axes) if axes else out.reshape(())

    def backward(ctx, g):
        x, out = ctx.saved_tensors
        if not ctx.keepdim and ctx.axes:
            g = ctx.xp.expand_dims(g, ctx.axes)
        return g * ctx.xp.exp(x - out)


def _count(shape, axes):
    n = 1
    for a in axes:
        n *= shape[a]
    return n


def _check_reducible(op, input, axes):
    if input._data.size == 0 and op in ("max", "min", "argmax", "argmin") and \
            (not axes or builtins.any(input.shape[a] == 0 for a in axes)):
        raise RuntimeError(f"{op}(): the tensor (shape {tuple(input.shape)}) has no elements "
                           "along the reduced dimension(s)")


# -- functional wrappers ---------------------------------------------------------------------
def sum(input, dim=None, keepdim=False, *, dtype=None, out=None):
    """The sum over ``dim`` (all elements when None); ``dtype`` converts the input first."""
    if out is not None:
        return write_out("sum", out, (input,), lambda: sum(input, dim, keepdim, dtype=dtype))
    if dtype is not None:
        input = input.to(dtype)
    return Sum.apply(input, axes=normalize_dim("sum", dim, input.ndim), keepdim=keepdim)


def mean(input, dim=None, keepdim=False, *, out=None):
    """The mean over ``dim`` (all elements when None) of a floating-point tensor."""
    if out is not None:
        return write_out("mean", out, (input,), lambda: mean(input, dim, keepdim))
    if input._data.dtype.kind not in "fc":
        raise RuntimeError(f"mean(): needs a floating-point tensor, got {input.dtype}; "
                           "convert it first with t.float()")
    return Mean.apply(input, axes=normalize_dim("mean", dim, input.ndim), keepdim=keepdim)


def var(input, dim=None, unbiased=True, keepdim=False, *, correction=None):
    """Variance: sum((x - mean)^2) / (N - correction); correction=1 (unbiased) by default."""
    if correction is None:
        correction = 1 if unbiased else 0
    return Var.apply(input, axes=normalize_dim("var", dim, input.ndim), keepdim=keepdim,
                     correction=correction)


def std(input, dim=None, unbiased=True, keepdim=False, *, correction=None):
    """Standard deviation, sqrt(var)."""
    return var(input, dim, unbiased, keepdim, correction=correction).sqrt()


def _extreme(cls, op, input, dim, keepdim):
    if dim is None:
        _check_reducible(op, input, ())
        return cls.apply(input, axis=None, keepdim=False)
    axis = normalize_dim(op, dim, input.ndim)
    if len(axis) != 1:
        raise TypeError(f"{op}(): dim must be a single int when given, got {dim!r}")
    axis = axis[0] if input.ndim else None
    _check_reducible(op, input, (axis,))
    if axis is None:
        values = cls.apply(input, axis=None, keepdim=False)
        return ValuesIndices(values, Tensor._wrap(input._backend.xp.zeros((), "int64"),
                                                  input._backend))
    values = cls.apply(input, axis=axis, keepdim=keepdim)
    return ValuesIndices(values, ArgExtreme.apply(input, op="arg" + op, axis=axis,
                                                  keepdim=keepdim))


def max(input, dim=None, keepdim=False):
    """The largest element; with ``dim``, a (values, indices) pair along that dim."""
    if isinstance(dim, Tensor):  # gl.max(a, b) is PyTorch's spelling of maximum
        from .elementwise import maximum
        return maximum(input, dim)
    return _extreme(Max, "max", input, dim, keepdim)


def min(input, dim=None, keepdim=False):
    """The smallest element; with ``dim``, a (values, indices) pair along that dim."""
    if isinstance(dim, Tensor):
        from .elementwise import minimum
        return minimum(input, dim)
    return _extreme(Min, "min", input, dim, keepdim)


def _arg(op, input, dim, keepdim):
    axis = None
    if dim is not None:
        axis = normalize_dim(op, dim, input.ndim)
        axis = axis[0] if axis else None
    _check_reducible(op, input, (axis,) if axis is not None else ())
    return ArgExtreme.apply(input, op=op, axis=axis, keepdim=keepdim)


def argmax(input, dim=None, keepdim=False):
    """Index of the largest element (of the flattened tensor when dim is None)."""
    return _arg("argmax", input, dim, keepdim)


def argmin(input, dim=None, keepdim=False):
    """Index of the smallest element (of the flattened tensor when dim is None)."""
    return _arg("argmin", input, dim, keepdim)


def logsumexp(input, dim=None, keepdim=False):
    """log(sum(exp(x))) along ``dim``, shifted by the max: finite for logits of 1e4 and more."""
    return Logsumexp.apply(input, axes=normalize_dim("logsumexp", dim, input.ndim),
                           keepdim=keepdim)


def all(input, dim=None, keepdim=False):
    """Whether every element along ``dim`` is true (non-zero); no gradient."""
    return Truth.apply(input, op="all", axes=normalize_dim("all", dim, input.ndim),
                       keepdim=keepdim)


def any(input, dim=None, keepdim=False):
    """Whether some element along ``dim`` is true (non-zero); no gradient."""
    return Truth.apply(input, op="any", axes=normalize_dim("any", dim, input.ndim),
                       keepdim=keepdim)
