"""Sorting: sort, argsort, topk. The order is an op without a gradient (ArgSort); the values
are the input gathered in that order (shape.gather), so their gradient goes back to the
elements they came from, and a recorded step sorts each batch afresh."""
from __future__ import annotations

from ..autograd.function import Function
from .reduce import ValuesIndices, normalize_dim
from .shape import gather, getitem


class ArgSort(Function):
    """int64 indices that sort x along ``axis``; ties keep their order ascending (a stable
    sort) and come reversed descending (the ascending order read backwards; gl.onnx.export
    writes the same). NaN sorts as the largest value, as in PyTorch."""
    differentiable = False

    def forward(ctx, x, axis, descending):
        xp = ctx.xp
        order = xp.argsort(x, axis=axis, kind="stable")
        if descending:
            order = xp.flip(order, axis)
        return order.astype("int64", copy=False)


class StableArgSortDescending(Function):
    """int64 indices that sort x along ``axis`` from the largest down, ties in their order
    in x (``stable=True``, as PyTorch's), NaN first. Reversing x puts each run of ties in
    reverse, so the stable ascending order of reversed x, read backwards, has them in x's
    order; position p of reversed x is n - 1 - p of x. (ONNX's TopK with largest=1 is this
    order: gl.onnx.export writes it so.)"""
    differentiable = False

    def forward(ctx, x, axis):
        xp = ctx.xp
        order = xp.argsort(xp.flip(x, axis), axis=axis, kind="stable")
        return (x.shape[axis] - 1 - xp.flip(order, axis)).astype("int64", copy=False)


def _order(input, axis, descending, stable):
    if descending and stable:
        return StableArgSortDescending.apply(input, axis=axis)
    return ArgSort.apply(input, axis=axis, descending=bool(descending))


def _axis(op, input, dim):
    if input.ndim == 0:
        normalize_dim(op, dim, 0)
        return None
    return normalize_dim(op, dim, input.ndim)[0]


def argsort(input, dim=-1, descending=False, stable=False):
    """Indices that sort ``input`` along ``dim``. Ties keep their order in ``input`` ascending
    (always) and descending with ``stable=True``; descending without it they come reversed."""
    axis = _axis("argsort", input, dim)
    if axis is None:
        return input.long() * 0
    return _order(input, axis, descending, stable)


def sort(input, dim=-1, descending=False, stable=False):
    """(values, indices) of ``input`` sorted along ``dim``; the values carry the gradient.
    Ties are ordered as by ``argsort``."""
    axis = _axis("sort", input, dim)
    if axis is None:
        return ValuesIndices(input * 1, input.long() * 0)
    order = _order(input, axis, descending, stable)
    return ValuesIndices(gather(input, axis, order), order)


def topk(input, k, dim=-1, largest=True, sorted=True):
    """(values, indices) of the ``k`` largest (``largest=False``: smallest) elements along
    ``dim``, in order; the values carry the gradient (top-k accuracy: ``out.topk(5).indices``)."""
    axis = _axis("topk", input, dim)
    n = 1 if axis is None else input.shape[axis]
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= n:
        raise RuntimeError(f"topk: k must be an int in [0, {n}] (the size of dim {dim}), got "
                           f"{k!r}")
    if axis is None:
        return sort(input)
    order = ArgSort.apply(input, axis=axis, descending=bool(largest))
    order = getitem(order, (slice(None),) * axis + (slice(0, k),))
    return ValuesIndices(gather(input, axis, order), order)
