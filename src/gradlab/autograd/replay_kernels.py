"""Replay forms of the commonest Functions, writing into buffers kept per recorded node.

A replay runs each recorded Function's own ``forward``/``backward``. For a few ops it can do
the same arithmetic with less around it: no argument checks (a replay's shapes and dtypes
are those of its recording), NumPy's ``out=`` into a buffer allocated once per node
instead of a fresh array per call, the needs-grad decisions taken at plan time. Each form
here makes the very ufunc and BLAS calls of the Function it stands for, in the same order,
and ``tape.Replay`` checks that on the recording's own arrays (both forms run side by side,
results compared byte for byte) before it uses one, so a Function changed later but not its
replay form is simply replayed by its own code.

Buffers are only ever read by other replay forms (``tape.Replay`` decides that): none
reaches the caller, a leaf's ``.grad`` or a Function that might keep it.
"""
from __future__ import annotations

import numpy as np


def forms():
    """{Function class: replay form class}. Imported late: functional imports autograd."""
    from ..functional.activation import Relu
    from ..functional.matmul import LinearFn
    return {LinearFn: LinearForm, Relu: ReluForm}


class LinearForm:
    """LinearFn on a 2-D input: y = x @ W.T (+ b)."""

    grad_buffers = (0,)  # the input gradient may go to a buffer; dW and db go to leaves

    @staticmethod
    def applies(args, kwargs):
        if kwargs or len(args) not in (2, 3):
            return False
        x, w = args[0], args[1]
        b = args[2] if len(args) == 3 else None
        arrays = (x, w) if b is None else (x, w, b)
        return all(isinstance(a, np.ndarray) for a in arrays) and x.ndim == 2 and \
            w.ndim == 2 and x.shape[1] == w.shape[1] and x.dtype.kind == "f" and \
            all(a.dtype == x.dtype for a in arrays)

    @staticmethod
    def output(args):
        return np.empty((args[0].shape[0], args[1].shape[0]), dtype=args[0].dtype)

    @staticmethod
    def make(ctx, args, out, grad_out, scratch):
        """(forward, backward, internal buffers) of one node; ``out``/``grad_out``: the
        buffers for its output and its input's gradient, or None (fresh arrays);
        ``scratch``: whether the form may keep buffers of its own for what it uses inside."""
        needs = tuple(ctx.needs_input_grad) + (False,) * (3 - len(ctx.needs_input_grad))
        nx, nw, nb = needs
        matmul, add = np.matmul, np.add

        if out is None:
            def forward(ctx, x, w, b=None):
                y = x @ w.T
                if b is not None:
                    add(y, b, out=y)  # y += b
                ctx.saved_tensors = (x, w)
                return y
        else:
            def forward(ctx, x, w, b=None):
                y = matmul(x, w.T, out=out)
                if b is not None:
                    add(y, b, out=y)
                ctx.saved_tensors = (x, w)
                return y

        def backward(ctx, g):
            x, w = ctx.saved_tensors
            gx = gw = gb = None
            if nx:
                gx = g @ w if grad_out is None else matmul(g, w, out=grad_out)
            if nw or nb:
                g2 = g.reshape(-1, g.shape[-1])
                if nw:
                    gw = g2.T @ x.reshape(-1, x.shape[-1])
                if nb:
                    gb = g2.sum(axis=0)
            return gx, gw, gb
        return forward, backward, ()


class ReluForm:
    """Relu: y = max(x, 0); its gradient g * (y > 0), with the mask in a buffer too."""

    grad_buffers = (0,)

    @staticmethod
    def applies(args, kwargs):
        # C-contiguous only: NumPy gives a non-contiguous x's result x's layout, a buffer
        # would not.
        return not kwargs and len(args) == 1 and isinstance(args[0], np.ndarray) and \
            args[0].dtype.kind == "f" and args[0].flags.c_contiguous

    @staticmethod
    def output(args):
        return np.empty_like(args[0], order="C")

    @staticmethod
    def make(ctx, args, out, grad_out, scratch):
        maximum, greater, multiply = np.maximum, np.greater, np.multiply
        mask = np.empty(args[0].shape, dtype=bool) if scratch else None

        def forward(ctx, x):
            y = maximum(x, 0, out=out)
            ctx.saved_tensors = (y,)
            return y

        def backward(ctx, g):
            y, = ctx.saved_tensors
            return multiply(g, greater(y, 0, out=mask), out=grad_out)
        return forward, backward, () if mask is None else (mask,)
