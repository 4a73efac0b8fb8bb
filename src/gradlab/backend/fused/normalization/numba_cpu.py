"""The numba tier of normalization, for BatchNorm's case: an (N, C >= 2) C-contiguous input
normalized over its rows (the op's table, __init__.py, sends the rest to the reference).

A ReLU after the normalization can be part of the op (``relu``; a compiled step fuses
BatchNorm then ReLU): forward it ends the last pass, backward each pass first masks grad.

Every column is independent, so from PARALLEL_MIN elements the columns are cut into one
contiguous run per thread (cpu_threads.run_parts) and each column is still summed by one
thread from row 0 down, as NumPy sums it. Forward: the column sums of x, then x - mean with
the sums of its squares, then xhat and y, three passes; backward: the four column sums in
one pass, then dx. Each value is computed with the reference's operations on the reference's
operands, in the arrays' dtype, so the bits are the reference's: a mean is np.mean's, the sum
in the array's dtype divided in float64 and rounded once; scalars (eps, the momentum and its
complement, M / (M - 1)) are rounded once to the dtype, as NumPy rounds a Python number
against an array.
"""
from __future__ import annotations

import numba
import numpy as np

from ...cpu_threads import PARALLEL_MIN, parts_for, run_parts
from .. import jit_disabled
from ..bias_relu.numba_cpu import relu as _relu
from ..bias_relu.numba_cpu import relu_grad as _relu_grad
from . import _NUMBERS

# "numpy" error model: var + eps == 0 (eps = 0, a constant column) must give the reference's
# inf, not raise ZeroDivisionError.
_jit = numba.njit(cache=True, nogil=True, error_model="numpy")


@_jit
def _forward_part(k, nparts, x, weight, bias, mean, var, running_mean, running_var, eps,
                  keep, momentum, unbiased, w_on, b_on, batch, running, relu, y, xhat,
                  invstd):
    """Columns [k C / nparts, (k + 1) C / nparts). ``w_on``, ``b_on``: there is a weight,
    a bias; ``batch``: the batch's statistics (else ``mean`` and ``var``); ``running``:
    update the running statistics; ``relu``: y goes through a ReLU. Arrays that are off are
    empty. The scalars are Python floats, rounded here once to the dtype."""
    n, c = x.shape
    c0, c1 = k * c // nparts, (k + 1) * c // nparts
    # the part's columns of every vector, sliced once: a vector indexed at c0 + j (an index
    # LLVM cannot prove non-negative) kept the loops scalar, 1.7-3.6x slower on 64 x 128
    weight, bias, mean, var = weight[c0:c1], bias[c0:c1], mean[c0:c1], var[c0:c1]
    running_mean, running_var = running_mean[c0:c1], running_var[c0:c1]
    k_ = np.empty(6, x.dtype)
    k_[0], k_[1], k_[2], k_[3], k_[4], k_[5] = eps, keep, momentum, unbiased, 1, 0
    eps, keep, momentum, unbiased, one, zero = k_[0], k_[1], k_[2], k_[3], k_[4], k_[5]
    nf = np.float64(n)
    mu = np.empty(c1 - c0, x.dtype)
    v = np.empty(c1 - c0, x.dtype)
    if batch:
        acc = v                                     # (v is written after its last read)
        acc[:] = 0                                  # +0.0, NumPy's start
        for i in range(n):
            row = x[i, c0:c1]
            for j in range(c1 - c0):
                acc[j] += row[j]
        for j in range(c1 - c0):
            mu[j] = np.float64(acc[j]) / nf         # np.mean: the sum / M in float64
        acc[:] = 0
        for i in range(n):
            row, centred = x[i, c0:c1], xhat[i, c0:c1]
            for j in range(c1 - c0):
                d = row[j] - mu[j]
                centred[j] = d
                acc[j] += d * d
        for j in range(c1 - c0):
            v[j] = np.float64(acc[j]) / nf
        if running:
            for j in range(c1 - c0):
                rm = running_mean[j] * keep
                running_mean[j] = rm + momentum * mu[j]
                rv = running_var[j] * keep
                running_var[j] = rv + momentum * (v[j] * unbiased)
    else:
        for j in range(c1 - c0):
            mu[j] = mean[j]
            v[j] = var[j]
        for i in range(n):
            row, centred = x[i, c0:c1], xhat[i, c0:c1]
            for j in range(c1 - c0):
                centred[j] = row[j] - mu[j]
    inv = invstd[0, c0:c1]
    for j in range(c1 - c0):
        inv[j] = one / np.sqrt(v[j] + eps)
    for i in range(n):
        h, out = xhat[i, c0:c1], y[i, c0:c1]
        for j in range(c1 - c0):
            value = h[j] * inv[j]
            h[j] = value
            if w_on:
                value = value * weight[j]
            if b_on:
                value = value + bias[j]
            out[j] = _relu(value, zero) if relu else value


@_jit
def _backward_part(k, nparts, grad, xhat, invstd, weight, w_on, batch, relu_out, r_on, gx,
                   gw, gb):
    """Columns [k C / nparts, (k + 1) C / nparts): dx into gx (when batch statistics: the
    means of gh and gh xhat first), and the column sums of grad xhat and grad into gw, gb;
    with ``r_on``, grad is first masked by the ReLU output ``relu_out`` (in both passes)."""
    n, c = grad.shape
    c0, c1 = k * c // nparts, (k + 1) * c // nparts
    weight = weight[c0:c1]                          # (sliced once, as in _forward_part)
    k_ = np.empty(2, grad.dtype)
    k_[0], k_[1] = 1, 0
    one, zero = k_[0], k_[1]
    nf = np.float64(n)
    s_gh = np.empty(c1 - c0, grad.dtype)
    s_ghx = np.empty(c1 - c0, grad.dtype)
    s_gw, s_gb = gw[c0:c1], gb[c0:c1]
    s_gh[:] = 0                                     # +0.0, NumPy's start
    s_ghx[:] = 0
    s_gw[:] = 0
    s_gb[:] = 0
    for i in range(n):
        g, h, o = grad[i, c0:c1], xhat[i, c0:c1], relu_out[i, c0:c1]
        for j in range(c1 - c0):
            gi = _relu_grad(g[j], o[j], one, zero) if r_on else g[j]
            gh = gi * weight[j] if w_on else gi
            s_gh[j] += gh
            s_ghx[j] += gh * h[j]
            s_gw[j] += gi * h[j]
            s_gb[j] += gi
    inv = invstd[0, c0:c1]
    if batch:
        for j in range(c1 - c0):
            s_gh[j] = np.float64(s_gh[j]) / nf       # the means, in place of the sums
            s_ghx[j] = np.float64(s_ghx[j]) / nf
        for i in range(n):
            g, h, o, out = grad[i, c0:c1], xhat[i, c0:c1], relu_out[i, c0:c1], gx[i, c0:c1]
            for j in range(c1 - c0):
                gi = _relu_grad(g[j], o[j], one, zero) if r_on else g[j]
                gh = gi * weight[j] if w_on else gi
                out[j] = inv[j] * ((gh - s_gh[j]) - h[j] * s_ghx[j])
    else:
        for i in range(n):
            g, o, out = grad[i, c0:c1], relu_out[i, c0:c1], gx[i, c0:c1]
            for j in range(c1 - c0):
                gi = _relu_grad(g[j], o[j], one, zero) if r_on else g[j]
                gh = gi * weight[j] if w_on else gi
                out[j] = gh * inv[j]


# dtype -> an empty array of it: what a kernel gets for a vector that is off (a ReLU output
# that is off is grad itself, never read)
_OFF = {np.dtype(t): np.empty(0, t) for t in (np.float32, np.float64)}


def _parts(x):
    # (below PARALLEL_MIN one part, without the call: a BatchNorm step's usual case)
    return 1 if x.size < PARALLEL_MIN else min(parts_for(x.size), x.shape[1])


def normalize_forward(x, weight, bias, mean, var, eps, axes, pshape, running_mean=None,
                      running_var=None, momentum=0.0, relu=False):
    off = _OFF[x.dtype]
    batch = mean is None
    running = batch and running_mean is not None
    m = x.shape[0]
    # M / (M - 1) and 1 - momentum in Python, as the reference forms them (M == 1 raises its
    # ZeroDivisionError before anything is written)
    unbiased = m / (m - 1) if running else 1.0
    xhat = np.empty_like(x)
    y = np.empty_like(x) if weight is not None or bias is not None or relu else xhat
    invstd = np.empty((1, x.shape[1]), x.dtype)
    args = (x, off if weight is None else weight, off if bias is None else bias,
            off if batch else mean, off if batch else var,
            running_mean if running else off, running_var if running else off,
            float(eps), float(1 - momentum), float(momentum), unbiased,
            weight is not None, bias is not None, batch, running, bool(relu), y, xhat, invstd)
    nparts = _parts(x)
    if nparts == 1:
        _forward_part(0, 1, *args)
    else:
        run_parts(_forward_part, nparts, *args)
    return y, xhat, invstd


def normalize_backward(grad, xhat, invstd, weight, axes, pshape, batch_stats, needs_input,
                       needs_weight, needs_bias, relu_out=None):
    c = grad.shape[1]
    gx = np.empty_like(grad)
    gw = np.empty(c, grad.dtype)
    gb = np.empty(c, grad.dtype)
    args = (grad, xhat, invstd, _OFF[grad.dtype] if weight is None else weight,
            weight is not None, bool(batch_stats),
            grad if relu_out is None else relu_out, relu_out is not None, gx, gw, gb)
    nparts = _parts(grad)
    if nparts == 1:
        _backward_part(0, 1, *args)
    else:
        run_parts(_backward_part, nparts, *args)
    return (gx if needs_input else None, gw if needs_weight else None,
            gb if needs_bias else None)


# The prepared forms (FusedOp.prepare), for a compiled step's replay of BatchNorm then ReLU
# (functional/fusions.py): the op table's rule is most of a call's Python at a training
# step's sizes. A replay passes the very vectors it recorded (the parameters and running
# statistics) and arrays of the recorded shapes, so each call checks those identities and
# shapes, that eps and momentum are still Python numbers (momentum=None gives a new one at
# every call), and GRADLAB_NO_JIT, and makes the plain call otherwise.
def prepare_normalize_forward(plain, x, weight, bias, mean, var, eps, axes, pshape,
                              running_mean=None, running_var=None, momentum=0.0,
                              relu=False):
    shape, dtype = x.shape, x.dtype

    def run(x_, weight_, bias_, mean_, var_, eps_, axes_, pshape_, running_mean_=None,
            running_var_=None, momentum_=0.0, relu_=False):
        if x_.shape != shape or x_.dtype is not dtype or not x_.flags.c_contiguous or \
                weight_ is not weight or bias_ is not bias or mean_ is not mean or \
                var_ is not var or running_mean_ is not running_mean or \
                running_var_ is not running_var or axes_ != axes or pshape_ != pshape or \
                type(eps_) not in _NUMBERS or type(momentum_) not in _NUMBERS or \
                relu_ is not relu or jit_disabled():
            return plain(x_, weight_, bias_, mean_, var_, eps_, axes_, pshape_, running_mean_,
                         running_var_, momentum_, relu_)
        return normalize_forward(x_, weight_, bias_, mean_, var_, eps_, axes_, pshape_,
                                 running_mean_, running_var_, momentum_, relu_)
    return run


def prepare_normalize_backward(plain, grad, xhat, invstd, weight, axes, pshape, batch_stats,
                               needs_input, needs_weight, needs_bias, relu_out=None):
    shape, dtype = grad.shape, grad.dtype

    def like(a):
        return a.shape == shape and a.dtype is dtype and a.flags.c_contiguous

    def run(grad_, xhat_, invstd_, weight_, axes_, pshape_, batch_stats_, needs_input_,
            needs_weight_, needs_bias_, relu_out_=None):
        if not (like(grad_) and like(xhat_) and invstd_.shape == pshape and
                invstd_.dtype is dtype and invstd_.flags.c_contiguous and
                (relu_out_ is None or like(relu_out_))) or weight_ is not weight or \
                axes_ != axes or pshape_ != pshape or jit_disabled():
            return plain(grad_, xhat_, invstd_, weight_, axes_, pshape_, batch_stats_,
                         needs_input_, needs_weight_, needs_bias_, relu_out_)
        return normalize_backward(grad_, xhat_, invstd_, weight_, axes_, pshape_, batch_stats_,
                                  needs_input_, needs_weight_, needs_bias_, relu_out_)
    return run
