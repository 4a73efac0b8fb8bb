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


def reduce_rows(xp, loss, grad, target, weight, ignore_index, reduction):
    """The reduction of the row losses and their gradient, for the NumPy and CUDA tiers
    (array module xp; target and weight as softmax_ce_args returns them). 'none': (loss,
    grad) unchanged; 'sum': (sum_i loss_i as a 0-d array, grad); 'mean': (sum_i loss_i / D,
    grad / D) with D = sum of w[y_i] over the non-ignored rows (their count when weight is
    None), in the logits' dtype: PyTorch's rule. No row left: 0 / 0, nan."""
    if reduction == "none":
        return loss, grad
    if reduction == "sum":
        return xp.asarray(loss.sum()), grad
    valid = target != ignore_index
    if weight is None:
        denom = valid.sum().astype(loss.dtype)
    else:
        denom = (weight[xp.where(valid, target, 0)] * valid).sum()
    return xp.asarray(loss.sum() / denom), grad / denom


def softmax_cross_entropy(logits, target, weight, ignore_index, label_smoothing,
                          reduction="none"):
    logits, target, weight, ignore_index, s = checks.softmax_ce_args(
        np, logits, target, weight, ignore_index, label_smoothing, reduction)
    loss, grad = _rows(logits, target, weight, ignore_index, s)
    return reduce_rows(np, loss, grad, target, weight, ignore_index, reduction)


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
