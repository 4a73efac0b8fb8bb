"""The NumPy tier of softmax cross-entropy, and the oracle of the other tiers (numba_cpu.py
to rounding, kernels/softmax_ce.cu within a few ulps: exp and log differ in their last bits
between libraries; tests/backend/fused).

Per row: loss = (1-s) w_y (lse - x_y) + s/C sum_c w_c (lse - x_c), formed as (m - x) + log S
with m the row's max, so that logits of 1e8 lose nothing to cancellation. reduce_rows then
applies the reduction (this tier's and the CUDA tier's; numba_cpu.py does it in its kernel).
"""
from __future__ import annotations

import numpy as np

from ... import checks


def reduce_rows(xp, loss, grad, target, weight, ignore_index, reduction, s=0.0):
    """The reduction of the row losses and their gradient, for the NumPy and CUDA tiers
    (array module xp; target, weight and the label smoothing s as softmax_ce_args returns
    them). 'none': (loss, grad) unchanged; 'sum': (sum_i loss_i as a 0-d array, grad);
    'mean': (sum_i loss_i / D, grad / D) with D = sum of w[y_i] over the non-ignored rows
    (their count when weight is None), in the logits' dtype: PyTorch's rule. With D = 0 (no
    row left, or only rows of weight 0) the gradient is PyTorch's: 0 on the ignored rows,
    nan on the kept ones; so is the loss with label smoothing (nan), else sum_i loss_i / 0."""
    if reduction == "none":
        return loss, grad
    if reduction == "sum":
        return xp.asarray(loss.sum()), grad
    valid = target != ignore_index
    if weight is None:
        denom = valid.sum().astype(loss.dtype)
    else:
        denom = (weight[xp.where(valid, target, 0)] * valid).sum()
    # At D = 0, grad / D made the ignored rows' zeros 0 / 0 and, with label smoothing, the
    # kept rows +-inf, where PyTorch's gradient is 0 on the former (its backward never writes
    # them) and nan on the latter: so a divisor per row, D itself whenever D != 0. Chosen
    # without reading D on the host, which a CUDA graph capture could not do.
    dt = grad.dtype.type
    rows = xp.where(denom == 0, xp.where(valid, dt(np.nan), dt(1)), denom)
    total = loss.sum() / denom
    if s:
        # PyTorch adds the smoothing term's mean to (1 - s) times NLL's, each over D: at
        # D = 0 with weights >= 0 NLL's is 0 / 0, where the sum of both here is x / 0 = inf
        total = xp.where(denom == 0, dt(np.nan), total)
    return xp.asarray(total), grad / rows[:, None]


def softmax_cross_entropy(logits, target, weight, ignore_index, label_smoothing,
                          reduction="none"):
    logits, target, weight, ignore_index, s = checks.softmax_ce_args(
        np, logits, target, weight, ignore_index, label_smoothing, reduction)
    loss, grad = _rows(logits, target, weight, ignore_index, s)
    return reduce_rows(np, loss, grad, target, weight, ignore_index, reduction, s)


def _rows(logits, target, weight, ignore_index, s):
    """Every row's loss and gradient (arguments as softmax_ce_args returns them)."""
    n, c = logits.shape
    dt = logits.dtype
    checks.check_targets(target, ignore_index, c)
    valid = target != ignore_index
    loss = np.zeros(n, dtype=dt)
    grad = np.zeros((n, c), dtype=dt)
    if n == 0 or c == 0:
        return loss, grad
    rows = np.arange(n)
    y = np.where(valid, target, 0)
    w = np.ones(c, dtype=dt) if weight is None else weight
    wsum = w.sum()
    a = np.where(valid, (1 - s) * w[y], 0).astype(dt)    # (1 - s) w_y, 0 on ignored rows
    b = np.where(valid, s / c, 0).astype(dt)             # s / C
    m = logits.max(axis=1, keepdims=True)
    z = np.subtract(m, logits)                           # m - x >= 0: no cancellation at 1e8
    np.negative(z, out=grad)
    np.exp(grad, out=grad)                               # exp(x - m)
    total = grad.sum(axis=1, keepdims=True)
    grad /= total                                        # p = softmax(x)
    log_s = np.log(total[:, 0])
    nll = z[rows, y] + log_s                             # lse - x_y = (m - x_y) + log S
    loss = a * nll
    if s:
        smooth = (z * w).sum(axis=1) + wsum * log_s      # sum_c w_c (lse - x_c)
        loss += b * smooth
    loss = np.where(valid, loss, 0).astype(dt)
    # grad = a (p - onehot) + b (W p - w)
    grad *= (a + b * wsum)[:, None]
    if s:
        grad -= b[:, None] * w
    grad[rows, y] -= a
    grad[~valid] = 0
    return loss, grad
