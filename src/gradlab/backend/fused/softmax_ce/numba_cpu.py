"""The numba tier of softmax cross-entropy, for narrow rows (the op's table, __init__.py,
sends rows wider than MAX_CLASSES to the reference).

reference.py runs some twenty NumPy calls per batch; with few classes (the 4096 x 10 of an
MLP classifier) their fixed cost and full-size temporaries are most of the time. This kernel
makes one pass per row (from PARALLEL_MIN elements the rows are cut into one contiguous run
per thread, cpu_threads.run_parts): max, exp and sum into the gradient row, then the loss
and the gradient's scaling, with the reference's formulas in the reference's order. Rows
wider than MAX_CLASSES stay on the reference: numba calls libm's scalar exp (no Intel SVML
here), 7x slower per element than NumPy's SIMD exp, so the kernel's advantage fades with
the row length. Measured on 2 cores, float32, time of this entry point over the
reference's (40k and 1M elements): C = 2 0.2x, C = 10 0.45x, C = 32 0.7-0.8x, C = 100
1.4-1.5x, C = 1000 1.8-2.4x.

Agreement with the reference is to rounding, not bitwise: the exp is libm's (NumPy has its
own), and a row's sum of exponentials is accumulated left to right (NumPy sums pairwise).
Tests hold the two together to a few ulps.
"""
from __future__ import annotations

import numba
import numpy as np

from ... import checks
from ...cpu_threads import PARALLEL_MIN, parts_for, run_parts  # noqa: F401 (PARALLEL_MIN: tests)
from . import MAX_CLASSES, reference  # noqa: F401 (MAX_CLASSES: tests)


def _part(k, nparts, x_all, target_all, w, wsum, ignore_index, c_smooth, b_smooth, smooth,
          zero, loss_all, g_all):
    """Rows [k n / nparts, (k + 1) n / nparts): loss[i] and grad[i] as
    reference.softmax_cross_entropy computes them, with c_smooth = 1 - s and b_smooth = s / C
    in the logits' dtype. Rows are indexed in 2-D (x[i, j]): a row view per row costs
    reference-count atomics worth more than a short row. The part's rows are sliced once and
    indexed from 0, an index LLVM can prove non-negative (indexing x[r0 + i] instead measured
    3-5% slower on 4096 and 65536 rows of 10)."""
    n, c = x_all.shape
    r0 = k * n // nparts
    r1 = (k + 1) * n // nparts
    x = x_all[r0:r1]
    target = target_all[r0:r1]
    loss = loss_all[r0:r1]
    g = g_all[r0:r1]
    for i in range(r1 - r0):
        t = target[i]
        if t == ignore_index:
            loss[i] = zero
            for j in range(c):
                g[i, j] = zero
            continue
        m = x[i, 0]
        for j in range(1, c):
            m = max(m, x[i, j])
        total = zero
        for j in range(c):
            e = np.exp(x[i, j] - m)               # exp(-(m - x)): the same rounding
            g[i, j] = e
            total += e
        log_s = np.log(total)
        a = c_smooth * w[t]
        row = a * ((m - x[i, t]) + log_s)
        coef = a
        if smooth:
            acc = zero
            for j in range(c):
                acc += (m - x[i, j]) * w[j]
            row += b_smooth * (acc + wsum * log_s)
            coef = a + b_smooth * wsum
        loss[i] = row
        for j in range(c):
            g[i, j] = g[i, j] / total * coef
        if smooth:
            for j in range(c):
                g[i, j] -= b_smooth * w[j]
        g[i, t] -= a


_part_kernel = numba.njit(cache=True, nogil=True)(_part)


def _kernel(x, *args):
    """Every row of x (the arguments of _part after k, nparts), split across the threads
    from PARALLEL_MIN elements."""
    run_parts(_part_kernel, parts_for(x.size), x, *args)


def softmax_cross_entropy(logits, target, weight, ignore_index, label_smoothing):
    if logits.ndim != 2:  # the reference raises the error
        return reference.softmax_cross_entropy(logits, target, weight, ignore_index,
                                               label_smoothing)
    logits, target, weight, ignore_index, s = checks.softmax_ce_args(
        np, logits, target, weight, ignore_index, label_smoothing)
    n, c = logits.shape
    dt = logits.dtype
    checks.check_targets(target, ignore_index, c)
    loss = np.zeros(n, dtype=dt)
    grad = np.empty((n, c), dtype=dt)
    if n == 0 or c == 0:
        return loss, grad
    if not -2**63 <= ignore_index < 2**63:
        # no int64 target equals it; -2^63 stands in (such a target failed the check above)
        ignore_index = -2**63
    w = np.ones(c, dtype=dt) if weight is None else weight
    args = (logits, target, w, dt.type(w.sum()), np.int64(ignore_index), dt.type(1 - s),
            dt.type(s / c), bool(s), dt.type(0), loss, grad)
    _kernel(*args)
    return loss, grad
