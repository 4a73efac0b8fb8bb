"""Activation functions and the numerically stable softmax family."""
from __future__ import annotations

from ..autograd.function import Function
from .reduce import normalize_dim


class Relu(Function):
    def forward(ctx, x):
        y = ctx.xp.maximum(x, 0)
        ctx.save_for_backward(y)
        return y

    def backward(ctx, g):
        y, = ctx.saved_tensors
        return g * (y > 0)


class Sigmoid(Function):
    def forward(ctx, x):
        # 1/(1+e^-x) for x >= 0 and e^x/(1+e^x) for x < 0: never exponentiates a large
        # positive number, so no overflow for any finite x.
        xp = ctx.xp
        e = xp.exp(-xp.abs(x))
        y = xp.where(x >= 0, 1, e) / (1 + e)
        ctx.save_for_backward(y)
        return y

    def backward(ctx, g):
        y, = ctx.saved_tensors
        return g * y * (1 - y)


class Tanh(Function):
    def forward(ctx, x):
        y = ctx.xp.tanh(x)
        ctx.save_for_backward(y)
        return y

    def backward(ctx, g):
        y, = ctx.saved_tensors
        return g * (1 - y * y)


class Softmax(Function):
    def forward(ctx, x, dim):
        xp = ctx.xp
        ctx.dim = dim
        z = x - x.max(axis=dim, keepdims=True)
        e = xp.exp(z, out=z)
        e /= e.sum(axis=dim, keepdims=True)
        ctx.save_for_backward(e)
        return e

    def backward(ctx, g):
        y, = ctx.saved_tensors
        gy = g * y
        return gy - y * gy.sum(axis=ctx.dim, keepdims=True)


class LogSoftmax(Function):
    def forward(ctx, x, dim):
        xp = ctx.xp
        ctx.dim = dim
        z = x - x.max(axis=dim, keepdims=True)
        z -= xp.log(xp.exp(z).sum(axis=dim, keepdims=True))
        ctx.save_for_backward(z)
        return z

    def backward(ctx, g):
        z, = ctx.saved_tensors
        return g - ctx.xp.exp(z) * g.sum(axis=ctx.dim, keepdims=True)


def relu(input):
    """max(x, 0)."""
    return Relu.apply(input)


def sigmoid(input):
    """1 / (1 + exp(-x)), computed without overflow."""
    return Sigmoid.apply(input)


def tanh(input):
    return Tanh.apply(input)


def _softmax_dim(name, input, dim):
    if dim is None:
        raise TypeError(f"{name}() needs dim, e.g. {name}(x, dim=-1)")
    return normalize_dim(name, dim, input.ndim)[0]


def softmax(input, dim=None):
    """exp(x) / sum(exp(x)) along ``dim``, shifted by the max so large logits stay finite."""
    return Softmax.apply(input, dim=_softmax_dim("softmax", input, dim))


def log_softmax(input, dim=None):
    """x - logsumexp(x) along ``dim``, stable for large logits."""
    return LogSoftmax.apply(input, dim=_softmax_dim("log_softmax", input, dim))
