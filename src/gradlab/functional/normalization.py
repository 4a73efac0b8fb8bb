"""Batch and layer normalization as Functions whose passes are the backend's normalization
op (Backend.normalize_forward / normalize_backward; the formulas: backend/fused/
normalization/reference.py).

Both normalize x to xhat = (x - mean) / sqrt(var + eps) (biased variance) over some axes,
then apply y = w xhat + b; BatchNorm over every axis but the channels (dim 1), LayerNorm
over the last ones.
"""
from __future__ import annotations

from ..autograd.function import Function, without_grad


class _Normalize(Function):
    """Shared backward; a forward saves ``stat_axes`` (normalized over), ``param_shape``
    (how w and b broadcast against x) and whether the statistics were the batch's.
    ``relu`` and ``relu_out``: the ReLU after the op, run with it (functional/fusions.py).
    ``prepared``: a dict a compiled step's replay keeps per node; the backend op is then
    prepared for this node's arrays at its first call (Backend.prepare_normalize_forward /
    _backward) and reused."""

    def _run(ctx, x, w, b, mean, var, eps, axes, pshape, running_mean=None, running_var=None,
             momentum=0.0, relu=False, prepared=None):
        ctx.stat_axes, ctx.param_shape, ctx.batch_stats = axes, pshape, mean is None
        args = (x, w, b, mean, var, eps, axes, pshape, running_mean, running_var, momentum,
                relu)
        op = ctx.backend.normalize_forward if prepared is None else \
            _prepared_op(prepared, "forward", ctx.backend.prepare_normalize_forward, args)
        y, xhat, invstd = op(*args)
        ctx.saved_tensors = (xhat, invstd, w)  # (save_for_backward's work)
        return y

    def backward(ctx, g):
        return ctx.input_grads(g)

    def input_grads(ctx, g, relu_out=None, prepared=None):
        xhat, invstd, w = ctx.saved_tensors
        needs = ctx.needs_input_grad
        args = (g, xhat, invstd, w, ctx.stat_axes, ctx.param_shape, ctx.batch_stats, needs[0],
                len(needs) > 1 and needs[1], len(needs) > 2 and needs[2], relu_out)
        op = ctx.backend.normalize_backward if prepared is None else \
            _prepared_op(prepared, "backward", ctx.backend.prepare_normalize_backward, args)
        return op(*args)


def _prepared_op(prepared, which, prepare, args):
    """A replay's op for this node, from its ``prepared`` dict: prepared for ``args`` at
    the first call."""
    op = prepared.get(which)
    if op is None:
        op = prepared[which] = prepare(*args)
    return op


class BatchNorm(_Normalize):
    """With batch statistics (``mean`` None), forward also updates the running statistics
    and the batch counter in place when they are given: the update belongs to the op, so
    that a recorded step (``autograd.tape``) repeats it on replay."""

    mutates = (5, 6, 7)  # running_mean, running_var, num_batches_tracked

    def forward(ctx, x, w, b, mean, var, running_mean, running_var, count, eps, momentum):
        return ctx.normalize(x, w, b, mean, var, running_mean, running_var, count, eps,
                             momentum)

    def normalize(ctx, x, w, b, mean, var, running_mean, running_var, count, eps, momentum,
                  relu=False, prepared=None):
        axes = (0,) + tuple(range(2, x.ndim))
        pshape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        if mean is not None:
            return ctx._run(x, w, b, mean, var, eps, axes, pshape, relu=relu,
                            prepared=prepared)
        if count is not None:
            count += 1
        if running_mean is None or running_var is None:
            return ctx._run(x, w, b, None, None, eps, axes, pshape, relu=relu,
                            prepared=prepared)
        return ctx._run(x, w, b, None, None, eps, axes, pshape, running_mean, running_var,
                        1.0 / float(count) if momentum is None else momentum, relu, prepared)


class LayerNormFn(_Normalize):
    def forward(ctx, x, w, b, n_dims, eps):
        axes = tuple(range(x.ndim - n_dims, x.ndim))
        pshape = (1,) * (x.ndim - n_dims) + tuple(x.shape[x.ndim - n_dims:])
        return ctx._run(x, w, b, None, None, eps, axes, pshape)

    def backward(ctx, g):
        gx, gw, gb = super().backward(g)
        # LayerNorm's parameters have the normalized shape, not a flat vector
        shape = ctx.param_shape[len(ctx.param_shape) - len(ctx.stat_axes):]
        return (gx, None if gw is None else gw.reshape(shape),
                None if gb is None else gb.reshape(shape))


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, *, num_batches_tracked=None):
    """Normalize each channel (dim 1) of an (N, C) or (N, C, L) input:

        y = (x - mean) / sqrt(var + eps) * weight + bias

    In training, mean and var are the batch's (biased var), and the running stats, when
    given, are updated in place as PyTorch does:
    running = (1 - momentum) * running + momentum * batch_stat, with the batch's UNBIASED
    variance (var * M / (M - 1)) going into running_var. In eval, the running stats are
    used. ``num_batches_tracked`` (a 0-d integer tensor, optional) counts the training
    calls, in place; with it, ``momentum=None`` gives the cumulative average (momentum =
    1 / num_batches_tracked), as the BatchNorm modules use it."""
    if input.ndim < 2:
        raise ValueError(f"batch_norm: expected an input of shape (N, C) or (N, C, L), got "
                         f"{tuple(input.shape)}")
    c = input.shape[1]
    for name, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean),
                    ("running_var", running_var)):
        if t is not None and tuple(t.shape) != (c,):
            raise ValueError(f"batch_norm: {name} has shape {tuple(t.shape)}, expected ({c},)"
                             f" for an input with {c} channels")
    if training:
        m = input.numel() // c
        if m <= 1:
            raise ValueError(f"batch_norm: expected more than 1 value per channel when "
                             f"training, got input of shape {tuple(input.shape)}; train on "
                             f"batches of at least 2 samples (drop_last=True drops a short "
                             f"last batch), or call model.eval() to use the running "
                             f"statistics")
        tracked = running_mean is not None and running_var is not None
        if momentum is None and tracked and num_batches_tracked is None:
            raise ValueError("batch_norm: momentum=None (the cumulative average) needs "
                             "num_batches_tracked")
        # (The statistics go in as tensors: a compiled step's replay then reads the arrays
        # they hold at each call, and sees a rebound one, as the model's buffers are seen.)
        out = BatchNorm.apply(input, weight, bias, None, None,
                              without_grad(running_mean) if tracked else None,
                              without_grad(running_var) if tracked else None,
                              num_batches_tracked, eps=eps, momentum=momentum)
        for t in (running_mean, running_var, num_batches_tracked):
            if t is not None and (tracked or t is num_batches_tracked):
                t._bump()
        return out
    if running_mean is None or running_var is None:
        raise ValueError("batch_norm: eval mode (training=False) needs running_mean and "
                         "running_var")
    return BatchNorm.apply(input, weight, bias, without_grad(running_mean),
                           without_grad(running_var), None, None, None, eps=eps, momentum=0.0)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalize over the last len(normalized_shape) dims of each sample (biased variance),
    then y = xhat * weight + bias (elementwise, weight/bias of shape normalized_shape)."""
    if isinstance(normalized_shape, int):
        normalized_shape = (normalized_shape,)
    normalized_shape = tuple(normalized_shape)
    k = len(normalized_shape)
    if tuple(input.shape[input.ndim - k:]) != normalized_shape or input.ndim < k:
        raise ValueError(f"layer_norm: input of shape {tuple(input.shape)} does not end with "
                         f"normalized_shape {normalized_shape}; build the layer with the "
                         f"input's last {k} dim(s) as normalized_shape")
    return LayerNormFn.apply(input, weight, bias, n_dims=k, eps=eps)


def normalize(input, p=2.0, dim=1, eps=1e-12):
    """``input`` divided by its p-norm over ``dim`` (at least ``eps``): unit rows by
    default (PyTorch's F.normalize)."""
    from .reduce import norm
    return input / norm(input, p, dim, keepdim=True).clamp_min(eps)
