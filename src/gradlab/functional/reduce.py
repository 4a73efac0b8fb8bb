"""Reductions: sum, mean, var, std, max, min, amax, amin, argmax, argmin, logsumexp, norm,
prod; and the running sum, cumsum.

Each takes ``dim=None | int | tuple`` and ``keepdim=False`` like PyTorch; dim=() is every
dim (PyTorch 2.13's reading for sum, mean, var, std, norm, amax, amin) except for all/any,
which reduce nothing there, as PyTorch's; max, min, argmax, argmin, prod and cumsum take an
int only.
"""
from __future__ import annotations

import builtins
import math
from collections import namedtuple

from ..autograd.function import Function
from ..autograd.tensor import Tensor
from .out import as_floating, write_out

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


def reduced_dims(op, dim, ndim):
    """normalize_dim for the reductions that PyTorch 2.13 runs over every dim when dim is
    () or [] (sum, mean, var, std, norm, amax, amin), where NumPy's axis=() reduces none."""
    if isinstance(dim, (tuple, list)) and not dim:
        dim = None
    return normalize_dim(op, dim, ndim)


def _one_dim(op, dim):
    """PyTorch's ops along one dim (max, min, argmax, argmin, prod, cumsum, softmax) take an
    int, and refuse a tuple, () and one-element ones included."""
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise TypeError(f"{op}(): dim must be an int, got {dim!r}")


def _expand_back(xp, g, shape, axes, keepdim):
    """Broadcast a reduced gradient back to the input's shape."""
    if not keepdim and axes:
        g = xp.expand_dims(g, axes)
    return xp.broadcast_to(g, shape)


def _integer_total(x):
    """int64 for a bool or integer x, as PyTorch sums and multiplies them (NumPy: uint64 for
    unsigned ones), else None (x's own dtype)."""
    return "int64" if x.dtype.kind in "biu" else None


class Sum(Function):
    def forward(ctx, x, axes, keepdim):
        ctx.in_shape, ctx.axes, ctx.keepdim = x.shape, axes, keepdim
        return x.sum(axis=axes, keepdims=keepdim, dtype=_integer_total(x))

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
        # No degrees of freedom left (one sample, unbiased): the forward's 0/0 is NaN, and
        # so is the gradient, as in PyTorch (2/0 is inf there, times a centered 0)
        scale = 2.0 / ctx.denom if ctx.denom else math.inf
        return g * scale * centered


class Std(Var):
    """sqrt(var), with PyTorch's gradient g * (x - mean) / ((N - correction) * std): 0 where
    std is 0 (a constant slice), where sqrt's inf times var's 0 would give NaN; NaN where
    there are no degrees of freedom, as var's."""

    def forward(ctx, x, axes, keepdim, correction):
        out = ctx.xp.sqrt(Var.forward(ctx, x, axes, keepdim, correction))
        ctx.std = out if keepdim or not axes else ctx.xp.expand_dims(out, axes)
        return out

    def backward(ctx, g):
        xp = ctx.xp
        centered, = ctx.saved_tensors
        g = _expand_back(xp, g, centered.shape, ctx.axes, ctx.keepdim)
        grad = g * centered / (ctx.denom * ctx.std)
        return xp.where(ctx.std == 0, xp.zeros((), grad.dtype), grad)

    def release(self):
        super().release()
        self.std = None


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
        if x.size == 0:  # the empty sum is 0: -inf (max() has nothing to shift by)
            out = xp.full(tuple(1 if a in axes else s for a, s in enumerate(x.shape)),
                          -xp.inf, dtype=x.dtype)
        else:
            m = x.max(axis=axes, keepdims=True)
            m = xp.where(xp.isfinite(m), m, 0)
            total = xp.exp(x - m).sum(axis=axes, keepdims=True)
            # A slice of all -inf sums to 0: its logsumexp is -inf (without a log(0)
            # warning); a NaN total stays NaN.
            out = xp.where(total == 0, -xp.inf, xp.log(xp.where(total == 0, 1, total)) + m)
        ctx.save_for_backward(x, out)
        return out if keepdim or not axes else out.squeeze(axes)

    def backward(ctx, g):
        x, out = ctx.saved_tensors
        if not ctx.keepdim and ctx.axes:
            g = ctx.xp.expand_dims(g, ctx.axes)
        return g * ctx.xp.exp(x - out)


class Norm(Function):
    """The Euclidean norm over ``axes``; its gradient x / norm is 0 where the norm is 0
    (PyTorch's subgradient there)."""

    def forward(ctx, x, axes, keepdim):
        xp = ctx.xp
        out = xp.sqrt((x * x).sum(axis=axes, keepdims=keepdim))
        ctx.save_for_backward(x, out)
        ctx.axes, ctx.keepdim = axes, keepdim
        return out

    def backward(ctx, g):
        xp = ctx.xp
        x, out = ctx.saved_tensors
        g = _expand_back(xp, g, x.shape, ctx.axes, ctx.keepdim)
        out = _expand_back(xp, out, x.shape, ctx.axes, ctx.keepdim)
        return g * x / xp.where(out == 0, 1, out)


class _TiedExtreme(Function):
    """max or min (``pick``) over ``axes``; the gradient is shared evenly among the
    elements that tie for it (PyTorch's amax/amin)."""

    pick = "max"

    def forward(ctx, x, axes, keepdim):
        out = getattr(x, ctx.pick)(axis=axes, keepdims=True)
        ctx.save_for_backward(x, out)
        ctx.axes, ctx.keepdim = axes, keepdim
        return out if keepdim else ctx.xp.squeeze(out, axis=axes)

    def backward(ctx, g):
        x, out = ctx.saved_tensors
        if not ctx.keepdim and ctx.axes:
            g = ctx.xp.expand_dims(g, ctx.axes)
        mask = x == out
        count = mask.sum(axis=ctx.axes, keepdims=True).astype(g.dtype)
        return mask * (g / count)


class Amax(_TiedExtreme):
    pick = "max"


class Amin(_TiedExtreme):
    pick = "min"


class Prod(Function):
    """The product along ``axis`` (all elements when None). Its gradient at x_i is the
    product of the others (the products before and after i), which is right where some
    x are 0, unlike prod / x_i."""

    def forward(ctx, x, axis, keepdim):
        ctx.in_shape, ctx.axis, ctx.keepdim = x.shape, axis, keepdim
        ctx.save_for_backward(x)
        return x.prod(axis=axis, keepdims=keepdim, dtype=_integer_total(x))

    def backward(ctx, g):
        xp = ctx.xp
        x, = ctx.saved_tensors
        axis = ctx.axis
        if axis is None:
            flat = x.reshape(-1)
            return (g * _others_product(xp, flat, 0)).reshape(ctx.in_shape)
        if not ctx.keepdim:
            g = xp.expand_dims(g, axis)
        return g * _others_product(xp, x, axis)


def _others_product(xp, x, axis):
    """Along ``axis``: each element's product of all the other elements, from the running
    products before it and after it."""
    def part(a, start, stop):
        return a[(builtins.slice(None),) * axis + (builtins.slice(start, stop),)]
    n = x.shape[axis]
    ones = xp.ones_like(part(x, 0, 1))
    before = xp.cumprod(xp.concatenate([ones, x], axis=axis), axis=axis)
    after = xp.flip(xp.cumprod(xp.concatenate([ones, xp.flip(x, axis)], axis=axis),
                               axis=axis), axis)
    return part(before, 0, n) * part(after, 1, n + 1)


class Cumsum(Function):
    def forward(ctx, x, axis):
        ctx.axis = axis
        return ctx.xp.cumsum(x, axis=axis, dtype=_integer_total(x))

    def backward(ctx, g):
        xp = ctx.xp  # each element feeds every later partial sum: a running sum from the end
        return xp.flip(xp.cumsum(xp.flip(g, ctx.axis), axis=ctx.axis), ctx.axis)


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
    return Sum.apply(input, axes=reduced_dims("sum", dim, input.ndim), keepdim=keepdim)


def mean(input, dim=None, keepdim=False, *, out=None):
    """The mean over ``dim`` (all elements when None) of a floating-point tensor."""
    if out is not None:
        return write_out("mean", out, (input,), lambda: mean(input, dim, keepdim))
    if input._data.dtype.kind not in "fc":
        raise RuntimeError(f"mean(): needs a floating-point tensor, got {input.dtype}; "
                           "convert it first with t.float()")
    return Mean.apply(input, axes=reduced_dims("mean", dim, input.ndim), keepdim=keepdim)


def var(input, dim=None, unbiased=True, keepdim=False, *, correction=None):
    """Variance: sum((x - mean)^2) / (N - correction); correction=1 (unbiased) by default."""
    if correction is None:
        correction = 1 if unbiased else 0
    return Var.apply(input, axes=reduced_dims("var", dim, input.ndim), keepdim=keepdim,
                     correction=correction)


def std(input, dim=None, unbiased=True, keepdim=False, *, correction=None):
    """Standard deviation, sqrt(var); its gradient is 0 over a constant slice, as PyTorch's."""
    if correction is None:
        correction = 1 if unbiased else 0
    return Std.apply(input, axes=reduced_dims("std", dim, input.ndim), keepdim=keepdim,
                     correction=correction)


def _extreme(cls, op, input, dim, keepdim):
    if dim is None:
        _check_reducible(op, input, ())
        return cls.apply(input, axis=None, keepdim=False)
    _one_dim(op, dim)
    axis = normalize_dim(op, dim, input.ndim)
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
        _one_dim(op, dim)
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
    """log(sum(exp(x))) along ``dim``, shifted by the max: finite for logits of 1e4 and more;
    -inf over no elements, NaN where a NaN is summed. Integer and bool tensors give float32.
    dim=() is every dim with keepdim=True and an error without (as PyTorch 2.13)."""
    if isinstance(dim, (tuple, list)) and not dim and not keepdim and input.ndim:
        # PyTorch 2.13 fails here (its result of shape () does not fit the kept (1, ..., 1)),
        # so no PyTorch code relies on it: an error, rather than a guess at a meaning
        raise RuntimeError(f"logsumexp(): dim=() with keepdim=False is refused, as PyTorch "
                           f"2.13 refuses it for a {input.ndim}-d input; for the logsumexp of "
                           f"every element pass dim=None, or dim=() with keepdim=True")
    return Logsumexp.apply(as_floating(input),
                           axes=reduced_dims("logsumexp", dim, input.ndim), keepdim=keepdim)


def all(input, dim=None, keepdim=False):
    """Whether every element along ``dim`` is true (non-zero); no gradient."""
    return Truth.apply(input, op="all", axes=normalize_dim("all", dim, input.ndim),
                       keepdim=keepdim)


def any(input, dim=None, keepdim=False):
    """Whether some element along ``dim`` is true (non-zero); no gradient."""
    return Truth.apply(input, op="any", axes=normalize_dim("any", dim, input.ndim),
                       keepdim=keepdim)


def norm(input, p=2, dim=None, keepdim=False):
    """The p-norm over ``dim`` (all elements when None) of a floating-point tensor: p = 2
    or "fro" (the default), 1, inf, -inf, or another positive number,
    (sum |x|^p)^(1/p)."""
    if input._data.dtype.kind not in "fc":
        raise RuntimeError(f"norm(): needs a floating-point tensor, got {input.dtype}; "
                           "convert it first with t.float()")
    axes = reduced_dims("norm", dim, input.ndim)
    if p in (2, "fro"):
        return Norm.apply(input, axes=axes, keepdim=keepdim)
    if isinstance(p, str) or isinstance(p, bool) or not isinstance(p, (int, float)) or \
            p != p or (p <= 0 and p != -float("inf")):
        raise ValueError(f"norm(): p must be 2, 'fro', 1, inf, -inf or another positive "
                         f"number, got {p!r}")
    magnitude = input.abs()
    if p == 1:
        return Sum.apply(magnitude, axes=axes, keepdim=keepdim)
    if p in (float("inf"), -float("inf")):
        flat_axes = axes if axes else ()
        picked = Max if p > 0 else Min
        if len(flat_axes) == input.ndim:
            out = picked.apply(magnitude, axis=None, keepdim=False)
            return out.reshape((1,) * input.ndim) if keepdim else out
        if len(flat_axes) != 1:
            raise ValueError("norm(): p=inf takes one dim or all of them")
        _check_reducible("max", magnitude, flat_axes)
        return picked.apply(magnitude, axis=flat_axes[0], keepdim=keepdim)
    total = Sum.apply(magnitude ** p, axes=axes, keepdim=keepdim)
    return total ** (1.0 / p)


def cumsum(input, dim, *, dtype=None):
    """Running sums along ``dim`` (integers and bools sum as int64)."""
    _one_dim("cumsum", dim)
    if dtype is not None:
        input = input.to(dtype)
    if input.ndim == 0:  # (its one element, as a 0-d tensor again)
        normalize_dim("cumsum", dim, 0)
        return cumsum(input.reshape(1), 0).reshape(())
    axis, = normalize_dim("cumsum", dim, input.ndim)
    return Cumsum.apply(input, axis=axis)


def amax(input, dim=None, keepdim=False):
    """The largest values over ``dim`` (an int, a tuple, or all when None); ties share the
    gradient evenly (``max(dim)`` gives it to the index it reports)."""
    axes = reduced_dims("amax", dim, input.ndim)
    _check_reducible("max", input, axes)
    return Amax.apply(input, axes=axes, keepdim=keepdim)


def amin(input, dim=None, keepdim=False):
    """The smallest values over ``dim``; ties share the gradient evenly."""
    axes = reduced_dims("amin", dim, input.ndim)
    _check_reducible("min", input, axes)
    return Amin.apply(input, axes=axes, keepdim=keepdim)


def prod(input, dim=None, keepdim=False, *, dtype=None):
    """The product of all elements, or along the int ``dim``."""
    if dim is not None:
        _one_dim("prod", dim)
    if dtype is not None:
        input = input.to(dtype)
    if dim is None or input.ndim == 0:
        if dim is not None:
            normalize_dim("prod", dim, 0)
        return Prod.apply(input, axis=None, keepdim=False)
    axis = normalize_dim("prod", dim, input.ndim)
    return Prod.apply(input, axis=axis[0], keepdim=keepdim)
