"""The NumPy tier of normalization (the array module ``xp`` is a parameter: the CUDA tier runs
these very formulas with CuPy), and the oracle of the numba tier, which gives its bits.

x is normalized over ``axes`` to xhat = (x - mean) * invstd, invstd = 1 / sqrt(var + eps)
(biased variance), then y = xhat w + b with w and b reshaped to ``pshape``. With M the
number of elements averaged over and gh = g w, the gradient is the classic

    dx = invstd (gh - mean(gh) - xhat mean(gh xhat))

(means over ``axes``), dw = sum(g xhat) and db = sum(g) over the axes along which the
parameters do not vary (those where ``pshape`` is 1).
"""
from __future__ import annotations

import numpy as np

from ..bias_relu.reference import relu as _relu
from ..bias_relu.reference import relu_grad as _relu_grad


def normalize_forward(x, weight, bias, mean, var, eps, axes, pshape, running_mean=None,
                      running_var=None, momentum=0.0, relu=False, *, xp=np):
    """(y, xhat, invstd). With ``mean`` None the statistics are the batch's, and the running
    ones, when given, are updated in place with the batch's unbiased variance; else ``mean``
    and ``var`` (of the parameters' length) are used as they are. ``relu``: y is then
    passed through a ReLU (a new array; a compiled step fuses the two)."""
    if mean is None:
        mu = x.mean(axis=axes, keepdims=True)
        xc = x - mu
        v = (xc * xc).mean(axis=axes, keepdims=True)
        if running_mean is not None and running_var is not None:
            update_running(running_mean, running_var, mu.reshape(-1), v.reshape(-1),
                           x.size // mu.size, momentum)
    else:
        xc = x - mean.reshape(pshape)
        v = var.reshape(pshape)
    invstd = 1 / xp.sqrt(v + eps)
    xhat = xc * invstd
    y = xhat
    if weight is not None:
        y = y * weight.reshape(pshape)
    if bias is not None:
        y = y + bias.reshape(pshape)
    y = y.astype(x.dtype, copy=False)
    return (_relu(y, xp=xp) if relu else y), xhat, invstd


def update_running(rm, rv, batch_mean, batch_var, m, momentum):
    """running = (1 - momentum) running + momentum batch, with the UNBIASED batch variance
    (PyTorch's rule); ``m`` values per statistic."""
    unbiased = batch_var * (m / (m - 1))
    rm *= 1 - momentum
    rm += momentum * batch_mean.astype(rm.dtype, copy=False)
    rv *= 1 - momentum
    rv += momentum * unbiased.astype(rv.dtype, copy=False)


def normalize_backward(grad, xhat, invstd, weight, axes, pshape, batch_stats, needs_input,
                       needs_weight, needs_bias, relu_out=None):
    """(dx, dw, db), each None where not needed. ``batch_stats``: the forward used the
    batch's statistics (else x entered through a fixed affine map). ``relu_out``: the
    forward ran with ``relu`` and gave this output, which ``grad`` is the gradient of."""
    if relu_out is not None:
        grad = _relu_grad(grad, relu_out)
    # the axes the parameters are summed over: all but the ones they vary along
    p_axes = tuple(i for i, s in enumerate(pshape) if s == 1)
    gx = gw = gb = None
    if needs_input:
        gh = grad if weight is None else grad * weight.reshape(pshape)
        if batch_stats:
            m1 = gh.mean(axis=axes, keepdims=True)
            m2 = (gh * xhat).mean(axis=axes, keepdims=True)
            gx = invstd * (gh - m1 - xhat * m2)
        else:
            gx = gh * invstd
    if needs_weight:
        gw = (grad * xhat).sum(axis=p_axes).reshape(-1)
    if needs_bias:
        gb = grad.sum(axis=p_axes).reshape(-1)
    return gx, gw, gb
