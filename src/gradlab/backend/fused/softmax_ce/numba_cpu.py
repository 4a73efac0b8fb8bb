"""The numba tier of softmax cross-entropy, for narrow rows (the op's table, __init__.py,
sends rows wider than MAX_CLASSES to the reference).

reference.py runs some twenty NumPy calls per batch; with few classes (the 4096 x 10 of an
MLP classifier) their fixed cost and full-size temporaries are most of the time. This kernel
makes three passes over the rows (from PARALLEL_MIN elements the rows are cut into one
contiguous run per thread, cpu_threads.run_parts): each row's max, subtracted; the exps, in
one flat loop; each row's sum, loss and gradient, with the reference's formulas in the
reference's order. The exp is this module's own (_exp), not libm's: numba calls libm once
per element (no Intel SVML here; 2.3 / 4.3 ns per float32 / float64 element on the Zen 4,
against 0.46 / 0.80 for NumPy's SIMD exp), where _exp's straight line vectorizes (1.2 ns
for either). Each row's max and sum are still a chain of dependent operations, so the
kernel's advantage fades with the row length, and rows wider than MAX_CLASSES stay on the
reference. Measured on 2 cores (Zen 4), float32, time of this entry point over the
reference's (40k and 1M elements): C = 2 0.17x / 0.11x, C = 10 0.31x / 0.18x, C = 32
0.51x / 0.32x, C = 64 0.76x / 0.44x, C = 100 0.98x / 0.66x, C = 1000 1.46x / 1.08x (with
libm's exp: C = 10 0.43x / 0.25x, C = 100 1.30x / 0.90x).

At a training step's sizes (64 x 10) the kernel is a few microseconds and the Python around
it was most of the call, so everything that can be is in compiled code: the target range
check (the first bad row, in row order, comes back as an index; the wrapper raises the
reference's error), the dtype's constants, and the 'sum' / 'mean' reduction (one call on a
single part; after the parts, a second pass when split).

Agreement with the reference is to rounding, not bitwise: the exp is _exp (NumPy has its
own), and a row's sum of exponentials is accumulated left to right (NumPy sums pairwise).
The reduction's sums (of the row losses, and of w[y_i] for 'mean') are compensated float64
sums rounded once to the logits' dtype, so left-to-right order costs nothing against
NumPy's pairwise sum; the divisions are the reference's (loss_sum / denom and grad / denom
in the logits' dtype). Tests hold the two together to a few ulps.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

from ... import checks
from ...cpu_threads import PARALLEL_MIN, parts_for, run_parts  # noqa: F401 (PARALLEL_MIN: tests)
from .. import jit_disabled
from . import MAX_CLASSES, reference

# "numpy" error model: 'mean' over all-ignored rows divides 0 by 0 and must give nan (the
# reference's IEEE result), not raise ZeroDivisionError.
_jit = numba.njit(cache=True, nogil=True, error_model="numpy")
_inline = numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")

_MODES = {"none": 0, "sum": 1, "mean": 2}


@_inline
def _rows(x, target, w, ignore_index, s, loss, g):
    """loss[i] and g[i] of every row of x as reference.softmax_cross_entropy computes them,
    s = label_smoothing. Returns the first bad row (a target outside [0, C) that is not
    ignore_index; len(x): none), where it stops: its w[y] is never read.

    Three passes, so that the exps run in one flat loop that LLVM vectorizes (_exp): the
    targets are checked and each row's logits shifted by its max (into g; the max into
    loss[i] until the last pass); every shifted logit goes through _exp; then each row's
    sum, loss and gradient. Rows are indexed in 2-D
    (x[i, j]): a row view per row costs reference-count atomics worth more than a short
    row."""
    n, c = x.shape
    k = np.empty(3, x.dtype)        # the constants, rounded once to the logits' dtype
    k[0] = 1 - s
    k[1] = s / c
    k[2] = 0
    c_smooth, b_smooth, zero = k[0], k[1], k[2]
    smooth = s != 0
    wsum = zero
    if smooth:
        for j in range(c):
            wsum += w[j]
    for i in range(n):
        t = target[i]
        if t == ignore_index:
            for j in range(c):
                g[i, j] = zero  # (defined input for the exp pass; the last pass zeroes it)
            continue
        if t < 0 or t >= c:
            return i
        m = x[i, 0]
        for j in range(1, c):
            m = max(m, x[i, j])
        loss[i] = m                               # (kept for the last pass: loss is free)
        for j in range(c):
            g[i, j] = x[i, j] - m                 # exp(-(m - x)): the same rounding
    flat = g.reshape(-1)
    for q in range(flat.size):
        flat[q] = _exp(flat[q])
    for i in range(n):
        t = target[i]
        if t == ignore_index:
            loss[i] = zero
            for j in range(c):
                g[i, j] = zero
            continue
        m = loss[i]
        total = zero
        for j in range(c):
            total += g[i, j]
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
    return n


@intrinsic
def _float64_of_bits(typingctx, bits):
    """The float64 whose bit pattern is the int64 ``bits`` (a bitcast, which vectorizes)."""
    if not isinstance(bits, types.Integer) or bits.bitwidth != 64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(bits), codegen


# exp's constants: log2(e), ln 2 split so that k * _LN2_HI is exact for |k| < 2^11 (fdlibm's
# split), and 1/j! for j = 13 down to 0 (Horner's order)
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_TAYLOR = tuple(1.0 / math.factorial(j) for j in range(13, -1, -1))


@_inline
def _exp(z):
    """e^z for a float32 or float64 z, computed in float64: within 1 ulp of libm's exp for a
    float64 z, and rounded once to float32 from a float64 value for a float32 z (so libm's
    expf's bits but in rare near-ties; tests/backend/fused). Straight-line code where libm
    is a call per element: the loop that calls it runs 8 or 16 elements at a time.

    e^z = 2^k e^r, k = rint(z log2 e), r = z - k ln 2 (|r| <= ln 2 / 2, two-part ln 2), e^r
    by its Taylor series to r^13 (error about 2^-57 there), 2^k built from its exponent bits
    in two factors, so that results below float64's smallest normal number round once into
    its subnormals. NaN stays NaN; z below -745.2 gives 0, above 709.78 inf."""
    d = np.float64(z)
    clamped = min(max(d, -745.2), 709.78)
    kf = np.rint(clamped * _LOG2E)
    r = (clamped - kf * _LN2_HI) - kf * _LN2_LO
    p = _TAYLOR[0]
    for j in range(1, len(_TAYLOR)):
        p = p * r + _TAYLOR[j]
    k = np.int64(kf)
    half = k >> 1
    y = p * _float64_of_bits((half + 1023) << 52) * _float64_of_bits((k - half + 1023) << 52)
    if d > 709.78:
        y = np.inf
    if d != d:
        y = d
    return y


@_inline
def _add(total, comp, v):
    """One step of Neumaier's compensated sum: (total + v, its running error)."""
    t = total + v
    if abs(total) >= abs(v):
        comp += (total - t) + v
    else:
        comp += (v - t) + total
    return t, comp


@_jit
def _reduction(loss, target, w, ignore_index, mean, out, denom):
    """After _rows (no bad row): out[()] = sum_i loss_i, or / D when mean, and denom[0] = D
    = sum of w[y_i] over the non-ignored rows. Both sums run in float64, compensated, in row
    order (whatever the cut into parts, the same bits), and are rounded once to the logits'
    dtype before the division, as NumPy's sums are."""
    lsum = lcomp = dsum = dcomp = 0.0
    for i in range(loss.shape[0]):
        t = target[i]
        if t != ignore_index:
            lsum, lcomp = _add(lsum, lcomp, np.float64(loss[i]))
            dsum, dcomp = _add(dsum, dcomp, np.float64(w[t]))
    # A non-finite sum keeps its value: its compensation is nan (inf - inf).
    r = np.empty(2, out.dtype)
    r[0] = lsum if not np.isfinite(lsum) else lsum + lcomp
    r[1] = dsum if not np.isfinite(dsum) else dsum + dcomp
    out[()] = r[0] / r[1] if mean else r[0]
    denom[0] = r[1]


@_inline
def _scale(g, denom):
    n, c = g.shape
    for i in range(n):
        for j in range(c):
            g[i, j] = g[i, j] / denom


@_inline
def _no_weight(g, target, ignore_index, s, out):
    """'mean' where the kept rows weigh 0 in all, after _reduction (reference.reduce_rows'
    rule, PyTorch's result): the gradient nan on the kept rows, the ignored ones keep their
    zeros (g / 0 would make those 0 / 0); with label smoothing the loss nan too."""
    if s != 0:
        out[()] = np.nan
    n, c = g.shape
    for i in range(n):
        if target[i] != ignore_index:
            for j in range(c):
                g[i, j] = np.nan


@_jit
def _whole(x, target, w, ignore_index, s, mode, loss, g, out):
    """Every row on this thread, then the reduction (mode: 0 none, 1 sum, 2 mean) into the
    0-d out; returns the first bad row (len(x): none), leaving out unwritten if there is
    one."""
    bad = _rows(x, target, w, ignore_index, s, loss, g)
    if bad == x.shape[0] and mode:
        denom = np.empty(1, g.dtype)
        _reduction(loss, target, w, ignore_index, mode == 2, out, denom)
        if mode == 2:
            if denom[0] == 0:
                _no_weight(g, target, ignore_index, s, out)
            else:
                _scale(g, denom[0])
    return bad


def _part(k, nparts, x_all, target_all, w, ignore_index, s, loss_all, g_all, bad):
    """Rows [k n / nparts, (k + 1) n / nparts) as _rows does them; bad[k] = the part's first
    bad row (n: none). The part's rows are sliced once and indexed from 0, an index LLVM can
    prove non-negative (indexing x[r0 + i] instead measured 3-5% slower on 4096 and 65536
    rows of 10)."""
    n = x_all.shape[0]
    r0 = k * n // nparts
    r1 = (k + 1) * n // nparts
    first = _rows(x_all[r0:r1], target_all[r0:r1], w, ignore_index, s, loss_all[r0:r1],
                  g_all[r0:r1])
    bad[k] = r0 + first if first < r1 - r0 else n


_part_kernel = _jit(_part)


def _scale_part(k, nparts, g_all, denom):
    """Rows [k n / nparts, (k + 1) n / nparts) of the gradient divided by denom[0]."""
    n = g_all.shape[0]
    _scale(g_all[k * n // nparts:(k + 1) * n // nparts], denom[0])


_scale_part_kernel = _jit(_scale_part)
_no_weight_kernel = _jit(_no_weight.py_func)


def _kernel(x, target, w, ignore_index, s, mode, loss, grad, out):
    """Every row of x (_whole's arguments) and the reduction, split across the threads from
    PARALLEL_MIN elements; returns the first bad row (len(x): none)."""
    nparts = parts_for(x.size)
    if nparts == 1:
        return _whole(x, target, w, ignore_index, s, mode, loss, grad, out)
    bad = np.empty(nparts, np.int64)
    run_parts(_part_kernel, nparts, x, target, w, ignore_index, s, loss, grad, bad)
    first = int(bad.min())                          # the parts are in row order
    if first == x.shape[0] and mode:
        denom = np.empty(1, x.dtype)
        _reduction(loss, target, w, ignore_index, mode == 2, out, denom)
        if mode == 2 and denom[0] == 0:
            _no_weight_kernel(grad, target, ignore_index, s, out)
        elif mode == 2:
            run_parts(_scale_part_kernel, nparts, grad, denom)
    return first


# (C, dtype) -> ones, the weight of an unweighted call (only read by the kernel), for the
# table's widths: np.ones per call was a tenth of a 64 x 10 call.
_ONES = {}


def softmax_cross_entropy(logits, target, weight, ignore_index, label_smoothing,
                          reduction="none"):
    if logits.ndim != 2 or 0 in logits.shape:
        # The reference raises the error, or has nothing to compute (no kernel for C = 0,
        # where every target that is not ignored is out of range).
        return reference.softmax_cross_entropy(logits, target, weight, ignore_index,
                                               label_smoothing, reduction)
    logits, target, weight, ignore_index, s = checks.softmax_ce_args(
        np, logits, target, weight, ignore_index, label_smoothing, reduction)
    n, c = logits.shape
    dt = logits.dtype
    if not -2**63 <= ignore_index < 2**63:
        # No int64 target equals it; -2^63 stands in once no target is -2^63 (which would
        # be a bad one the kernel took for ignored).
        checks.check_targets(target, ignore_index, c)
        ignore_index = -2**63
    if weight is None:
        weight = _ONES.get((c, dt))
        if weight is None:
            weight = np.ones(c, dtype=dt)
            if c <= MAX_CLASSES:
                _ONES[c, dt] = weight
    return _call(logits, target, weight, ignore_index, s, _MODES[reduction])


def prepare_softmax_cross_entropy(plain, logits, target, weight, ignore_index,
                                  label_smoothing, reduction="none"):
    """The prepared form (FusedOp.prepare) for a compiled step's replay, which passes the
    very same settings and weight at every call: those are checked once here, and a call
    runs the kernel when its logits and targets have the first call's shapes, dtypes and C
    order and its other arguments are the same objects, and GRADLAB_NO_JIT is unset; else
    ``plain``."""
    if logits.ndim != 2 or 0 in logits.shape or target.dtype != np.int64:
        return plain
    *_, index, s = checks.softmax_ce_args(np, logits, target, weight, ignore_index,
                                          label_smoothing, reduction)
    dt = logits.dtype
    if not -2**63 <= index < 2**63 or (weight is not None and not (
            weight.dtype is dt and weight.flags.c_contiguous)):
        return plain   # a copy of the weight made now would miss its in-place changes
    shape, target_shape, target_dtype = logits.shape, target.shape, target.dtype
    kernel_weight = weight if weight is not None else _ONES.get((shape[1], dt))
    if kernel_weight is None:
        kernel_weight = np.ones(shape[1], dtype=dt)
    mode = _MODES[reduction]

    def run(logits_, target_, weight_, ignore_index_, label_smoothing_, reduction_):
        if logits_.shape != shape or logits_.dtype is not dt or \
                target_.shape != target_shape or target_.dtype is not target_dtype or \
                weight_ is not weight or ignore_index_ is not ignore_index or \
                label_smoothing_ is not label_smoothing or reduction_ is not reduction or \
                not (logits_.flags.c_contiguous and target_.flags.c_contiguous) or \
                jit_disabled():
            return plain(logits_, target_, weight_, ignore_index_, label_smoothing_,
                         reduction_)
        return _call(logits_, target_, kernel_weight, index, s, mode)
    return run


def _call(logits, target, weight, ignore_index, s, mode):
    """The kernel on checked arguments: (loss, grad), or the first bad target's IndexError."""
    n, c = logits.shape
    dt = logits.dtype
    loss = np.empty(n, dtype=dt)
    grad = np.empty((n, c), dtype=dt)
    out = np.empty((), dtype=dt) if mode else loss
    first_bad = _kernel(logits, target, weight, ignore_index, s, mode, loss, grad, out)
    if first_bad < n:
        raise checks.bad_target_error(target[first_bad], c)
    return out, grad
