"""The numba tier of dropout (the CPU backend's default when numba imports).

reference.py builds the mask in a dozen NumPy passes (Philox rounds on uint64 work arrays,
a comparison, ``packbits``, a masked multiply); these kernels do one pass: each task of
TASK_WORDS mask words draws the Philox words for its run of elements into a small scratch
buffer, packs the mask words and writes the scaled output, all while the data is in cache.
The backward reads the packed mask and the gradient once. From PARALLEL_MIN elements the
tasks are cut into one contiguous run per thread (cpu_threads.run_parts); which thread
does a task does not change its bits.

The contract is reference.py's, bit for bit (tests hold them together): element i draws word
(i % 4) of Philox4x32-10(counter = (offset + i // 4) mod 2^64 as (lo, hi, 0, 0), key =
(lo, hi)), is kept when that word >= ceil(p 2^32), and becomes x * (1 / (1 - p)) rounded in
the input's dtype, else +0 (a select, never a multiply by 0, so dropped NaN/inf become 0);
mask bit i % 32 of uint32 word i // 32, padding bits zero. p == 0, p == 1 and empty inputs
need no draws: the op's table (__init__.py) sends them to the reference.

Integer typing: numba types uint64 (op) int64 as float64, so every Philox operand is a
uint64 (module constants are np.uint64, loop indices are converted before use). The
32x32 -> 64 products are uint64 products of values below 2^32; their halves are mulhi and
mullo.
"""
from __future__ import annotations

import numba
import numpy as np

from ... import checks
from ...cpu_threads import PARALLEL_MIN, parts_for, run_parts  # noqa: F401 (PARALLEL_MIN: tests)
from . import needs_draws, reference

_M0 = np.uint64(reference.PHILOX_M0)
_M1 = np.uint64(reference.PHILOX_M1)
_W0 = np.uint64(reference.PHILOX_W0)
_W1 = np.uint64(reference.PHILOX_W1)
_LO = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
_ZERO = np.uint64(0)

TASK_WORDS = 64  # mask words per task: 2048 elements, 8 KiB of draws in cache


def _philox(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 on uint64 scalars holding 32-bit values; returns the four words."""
    for _ in range(10):
        p0 = c0 * _M0
        p1 = c2 * _M1
        c0 = (p1 >> _S32) ^ c1 ^ k0
        c2 = (p0 >> _S32) ^ c3 ^ k1
        c1 = p1 & _LO
        c3 = p0 & _LO
        k0 = (k0 + _W0) & _LO
        k1 = (k1 + _W1) & _LO
    return c0, c1, c2, c3


def _draws(draws, first_block, nblocks, k0, k1, offset):
    """The stream words of blocks first_block .. + nblocks - 1 into draws[0 : 4 nblocks]."""
    for b in range(nblocks):
        ctr = offset + np.uint64(first_block + b)          # wraps mod 2^64, as on the device
        r0, r1, r2, r3 = _philox(ctr & _LO, ctr >> _S32, _ZERO, _ZERO, k0, k1)
        draws[4 * b] = r0
        draws[4 * b + 1] = r1
        draws[4 * b + 2] = r2
        draws[4 * b + 3] = r3


def _forward_part(k, nparts, x, y, mask, k0, k1, offset, thr, scale, zero):
    """Part k of nparts of y, mask from flat x: tasks [k ntasks / nparts, (k + 1) ntasks /
    nparts) of TASK_WORDS mask words each. Every mask word is written whole (the caller clears
    the padding bits of the last one). ``thr`` is a uint32 in (0, 2^32).

    Loops index slices from 0: an index LLVM cannot prove non-negative keeps numba's
    negative-index wraparound, which turns the loads and stores into gathers and scatters."""
    n = x.size
    nwords = mask.size
    ntasks = (nwords + TASK_WORDS - 1) // TASK_WORDS
    draws = np.empty(TASK_WORDS * 32, dtype=np.uint32)
    for t in range(k * ntasks // nparts, (k + 1) * ntasks // nparts):
        w0 = t * TASK_WORDS
        w1 = min(w0 + TASK_WORDS, nwords)
        _draws(draws, w0 * 8, (w1 - w0) * 8, k0, k1, offset)
        m = mask[w0:w1]
        for w in range(m.size):
            bits = _ZERO
            for j in range(32):
                bits |= np.uint64(draws[32 * w + j] >= thr) << np.uint64(j)
            m[w] = bits
        xs = x[w0 * 32:min(w1 * 32, n)]
        ys = y[w0 * 32:min(w1 * 32, n)]
        for i in range(xs.size):
            v = xs[i] * scale                              # unconditional: a select, no branch
            ys[i] = v if draws[i] >= thr else zero


def _backward_part(k, nparts, grad, mask, out, scale, zero, bcast):
    """Part k of nparts of out = grad * scale where the mask bit is set, else +0: tasks
    [k ntasks / nparts, (k + 1) ntasks / nparts) of the whole mask words, and the last,
    partial word in the last part. ``bcast``: grad holds one value that stands for every
    element (the stride-0 gradient of a sum or mean)."""
    n = out.size
    full = n // 32                                         # whole mask words
    ntasks = (full + TASK_WORDS - 1) // TASK_WORDS
    g0 = grad[0] * scale
    for t in range(k * ntasks // nparts, (k + 1) * ntasks // nparts):
        w0 = t * TASK_WORDS
        w1 = min(w0 + TASK_WORDS, full)
        m = mask[w0:w1]
        os = out[w0 * 32:w1 * 32]
        if bcast:
            for w in range(m.size):
                bits = np.uint64(m[w])
                for j in range(32):
                    os[32 * w + j] = g0 if (bits >> np.uint64(j)) & np.uint64(1) else zero
        else:
            gs = grad[w0 * 32:w1 * 32]
            for w in range(m.size):
                bits = np.uint64(m[w])
                for j in range(32):
                    v = gs[32 * w + j] * scale
                    os[32 * w + j] = v if (bits >> np.uint64(j)) & np.uint64(1) else zero
    if k == nparts - 1 and n > 32 * full:                  # the last, partial word
        bits = np.uint64(mask[full])
        for i in range(n - 32 * full):
            v = g0 if bcast else grad[32 * full + i] * scale
            out[32 * full + i] = v if (bits >> np.uint64(i)) & np.uint64(1) else zero


_philox = numba.njit(inline="always")(_philox)
_draws = numba.njit(inline="always")(_draws)
_forward_kernel = numba.njit(cache=True, nogil=True)(_forward_part)
_backward_kernel = numba.njit(cache=True, nogil=True)(_backward_part)


def dropout_forward(x, p, key, offset):
    p = checks.dropout_p(p)
    key, offset = checks.philox_key_offset(key, offset)
    checks.check_float_array("dropout_forward", "x", x)
    thr = checks.dropout_threshold(p)
    n = x.size
    if not needs_draws(thr, n):
        return reference.dropout_forward(x, p, key, offset)
    flat = np.ascontiguousarray(x.reshape(-1))             # C order, as the reference's mask
    # Outputs are allocated in their final shape and written through a flat view, so that
    # they own their memory (``base is None``): autograd copies a leaf gradient that is a
    # view, which on 16M elements cost about as much as the kernel.
    y_out = np.empty(x.shape, dtype=x.dtype)
    y = y_out.reshape(-1)
    mask = np.empty(checks.mask_words(n), dtype=np.uint32)
    dt = x.dtype.type
    run_parts(_forward_kernel, parts_for(n), flat, y, mask, np.uint64(key & 0xFFFFFFFF),
              np.uint64(key >> 32), np.uint64(offset), np.uint32(thr),
              dt(checks.dropout_scale(p)), dt(0))
    if n % 32:
        mask[-1] &= np.uint32((1 << (n % 32)) - 1)
    return y_out, mask


def dropout_backward(grad, mask, p):
    p = checks.dropout_p(p)
    checks.check_float_array("dropout_backward", "grad", grad)
    checks.check_mask(mask, grad.size)
    n = grad.size
    if n == 0:
        return np.zeros(grad.shape, dtype=grad.dtype)
    flat = grad.reshape(-1)
    bcast = flat.strides[0] == 0 and n > 1
    # A broadcast gradient is read-only: pass a writable copy of its one value, so the common
    # case needs no read-only specialization of the kernel (each one is a compile).
    flat = flat[:1].copy() if bcast else np.ascontiguousarray(flat)
    result = np.empty(grad.shape, dtype=grad.dtype)  # owns its memory, see dropout_forward
    dt = grad.dtype.type
    run_parts(_backward_kernel, parts_for(n), flat, np.ascontiguousarray(mask),
              result.reshape(-1), dt(checks.dropout_scale(p)), dt(0), bcast)
    return result
