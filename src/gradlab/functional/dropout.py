"""Inverted dropout through the backend's counter-based dropout kernel."""
from __future__ import annotations

from ..autograd.function import Function
from ..backend import checks


class DropoutFn(Function):
    """The op behind F.dropout (and so nn.Dropout): y = x * keep / (1 - p), with
    keep_i = u(key, offset, i) >= p.

    The mask comes from a counter-based generator (Philox 4x32): every call reserves
    ceil(n / 4) counters from the backend's stream (one 4x32 block yields four uniforms,
    one per element), so masks are a pure function of (seed, offset, element index) and
    identical on CPU and GPU. The mask is kept packed (1 bit per element) for backward.
    """

    def forward(ctx, x, p):
        be = ctx.backend
        key, offset = be.random.take_philox((x.size + 3) // 4)
        y, mask = be.dropout_forward(x, p, key, offset)
        ctx.p = p
        ctx.save_for_backward(mask)
        return y

    def backward(ctx, g):
        mask, = ctx.saved_tensors
        return ctx.backend.dropout_backward(g, mask, ctx.p)


def dropout(input, p=0.5, training=True, inplace=False):
    """Inverted dropout: in training, zero each element with probability ``p`` and scale the
    rest by 1 / (1 - p), so the expected value is unchanged; the identity when not
    ``training`` or p == 0. (``inplace`` is accepted for PyTorch compatibility and ignored:
    the result is always a new tensor.)"""
    p = checks.dropout_p(p, "dropout")
    if not training or p == 0.0:
        return input
    if input.dtype.kind != "f":
        raise TypeError(f"dropout: input must be floating point, got {input.dtype}")
    return DropoutFn.apply(input, p=p)
