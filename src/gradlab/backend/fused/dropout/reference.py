"""The NumPy tier of dropout, and the oracle of the other tiers: the counter-based Philox
stream, the packed 1-bit mask and the scaled output. numba_cpu.py and kernels/dropout.cu give
these bits exactly (tests/backend/fused).

The stream: element i draws word (i % 4) of Philox4x32-10(counter = (offset + i // 4) mod
2^64 as (lo, hi, 0, 0), key = (lo, hi)); it is kept when that word >= ceil(p 2^32) and
becomes x * (1 / (1 - p)) rounded in the input's dtype, else +0; mask bit i % 32 of uint32
word i // 32, padding bits zero.
"""
from __future__ import annotations

import numpy as np

from ... import checks

PHILOX_M0, PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
PHILOX_W0, PHILOX_W1 = 0x9E3779B9, 0xBB67AE85
_LO32 = np.uint64(0xFFFFFFFF)
_PHILOX_SLICE = 1 << 16  # counter blocks per pass: keeps the uint64 work arrays in cache


def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 of counters (c0, c1, c2, c3) (uint32-valued arrays, broadcast together)
    under key (k0, k1) (ints). Returns four uint32 arrays. 32x32-bit products are formed in
    uint64, whose high and low halves are mulhi and mullo."""
    c0, c1, c2, c3 = (np.array(c, dtype=np.uint64) for c in np.broadcast_arrays(c0, c1, c2, c3))
    _philox_rounds(c0, c1, c2, c3, int(k0), int(k1))
    return tuple(c.astype(np.uint32) for c in (c0, c1, c2, c3))


def _philox_rounds(c0, c1, c2, c3, k0, k1):
    """Ten rounds in place on uint64 arrays holding 32-bit values."""
    p0 = np.empty_like(c0)
    p1 = np.empty_like(c0)
    m0, m1 = np.uint64(PHILOX_M0), np.uint64(PHILOX_M1)
    for _ in range(10):
        np.multiply(c0, m0, out=p0)
        np.multiply(c2, m1, out=p1)
        np.right_shift(p1, 32, out=c0)                   # c0' = hi(M1 c2) ^ c1 ^ k0
        c0 ^= c1
        c0 ^= np.uint64(k0)
        np.right_shift(p0, 32, out=c2)                   # c2' = hi(M0 c0) ^ c3 ^ k1
        c2 ^= c3
        c2 ^= np.uint64(k1)
        np.bitwise_and(p1, _LO32, out=c1)                # c1' = lo(M1 c2)
        np.bitwise_and(p0, _LO32, out=c3)                # c3' = lo(M0 c0)
        k0 = (k0 + PHILOX_W0) & 0xFFFFFFFF
        k1 = (k1 + PHILOX_W1) & 0xFFFFFFFF


def philox_stream(key, offset, n):
    """The n uint32 draws of the dropout stream: word i is word (i % 4) of
    Philox4x32-10(counter = (offset + i // 4) mod 2^64 as (lo, hi, 0, 0), key = (lo, hi))."""
    nblocks = (n + 3) // 4
    out = np.empty((nblocks, 4), dtype=np.uint32)
    k0, k1 = key & 0xFFFFFFFF, key >> 32
    for lo in range(0, nblocks, _PHILOX_SLICE):
        nb = min(_PHILOX_SLICE, nblocks - lo)
        ctr = np.arange(nb, dtype=np.uint64)
        ctr += np.uint64((offset + lo) % 2**64)          # uint64 wraps, as on the device
        c0 = ctr & _LO32
        c1 = ctr >> np.uint64(32)
        c2 = np.zeros(nb, dtype=np.uint64)
        c3 = np.zeros(nb, dtype=np.uint64)
        _philox_rounds(c0, c1, c2, c3, k0, k1)
        for j, c in enumerate((c0, c1, c2, c3)):
            out[lo:lo + nb, j] = c
    return out.reshape(-1)[:n]


def pack_bits(keep):
    """Bool vector -> uint32 words, bit i % 32 of word i // 32 (padding bits zero)."""
    n = keep.size
    packed = np.packbits(keep, bitorder="little")
    words = np.zeros(checks.mask_words(n) * 4, dtype=np.uint8)
    words[:packed.size] = packed
    return words.view("<u4").astype(np.uint32, copy=False)


def unpack_bits(mask, n):
    return np.unpackbits(mask.astype("<u4", copy=False).view(np.uint8), count=n,
                         bitorder="little").view(np.bool_)


def dropout_forward(x, p, key, offset):
    p = checks.dropout_p(p)
    key, offset = checks.philox_key_offset(key, offset)
    checks.check_float_array("dropout_forward", "x", x)
    n = x.size
    thr = checks.dropout_threshold(p)
    if thr == 0:
        keep = np.ones(n, dtype=np.bool_)
    elif thr >= 2**32:
        keep = np.zeros(n, dtype=np.bool_)
    else:
        keep = philox_stream(key, offset, n) >= np.uint32(thr)
    y = np.zeros(x.shape, dtype=x.dtype)
    np.multiply(x, x.dtype.type(checks.dropout_scale(p)), out=y, where=keep.reshape(x.shape))
    return y, pack_bits(keep)


def dropout_backward(grad, mask, p):
    p = checks.dropout_p(p)
    checks.check_float_array("dropout_backward", "grad", grad)
    checks.check_mask(mask, grad.size)
    keep = unpack_bits(mask, grad.size).reshape(grad.shape)
    out = np.zeros(grad.shape, dtype=grad.dtype)
    np.multiply(grad, grad.dtype.type(checks.dropout_scale(p)), out=out, where=keep)
    return out
