"""The NumPy tier of the counter-based draws, and the oracle of kernels/random.cu (whose head
comment defines the streams). The Philox words are dropout's (dropout/reference.py)."""
from __future__ import annotations

import math
import numbers

import numpy as np

from ... import checks
from ..dropout.reference import philox_stream
from . import INTEGERS_MAX_SPAN, philox_blocks


def check_draw(op, shape, dtype, key, offset):
    """(shape tuple, element count, dtype, key, offset), checked."""
    dtype = np.dtype(dtype)
    if dtype not in checks.NATIVE_KERNEL_DTYPES:
        raise TypeError(f"{op}: dtype must be float32 or float64, got {dtype}")
    shape = tuple(shape)
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 0:
            raise ValueError(f"{op}: shape must hold non-negative ints, got {shape}")
    key, offset = checks.philox_key_offset(key, offset, op)
    return tuple(int(d) for d in shape), math.prod(shape), dtype, key, offset


def _units(words, dtype, above_zero=False):
    """One unit per 32-bit word (float32) or per pair of words (float64), in [0, 1); with
    ``above_zero``, in (0, 1] (one step up)."""
    if dtype == np.float32:
        bits = words >> np.uint32(8)
        scale = np.float32(2.0**-24)
    else:
        pairs = words.astype(np.uint64).reshape(-1, 2)
        bits = (pairs[:, 0] >> np.uint64(5)) << np.uint64(26) | pairs[:, 1] >> np.uint64(6)
        scale = np.float64(2.0**-53)
    if above_zero:
        bits = bits + bits.dtype.type(1)
    return bits.astype(dtype) * scale


def _blocks(key, offset, n, dtype):
    """The Philox blocks of a draw of n elements, one row of four words each."""
    nblocks = philox_blocks(n, dtype)
    return philox_stream(key, offset, 4 * nblocks).reshape(nblocks, 4)


def uniform(shape, dtype, low, high, key, offset):
    shape, n, dtype, key, offset = check_draw("uniform", shape, dtype, key, offset)
    t = dtype.type
    u = _units(_blocks(key, offset, n, dtype).reshape(-1), dtype)[:n]
    return (t(low) + (t(high) - t(low)) * u).reshape(shape)


def normal(shape, dtype, key, offset):
    shape, n, dtype, key, offset = check_draw("normal", shape, dtype, key, offset)
    # A pair of units (u1, u2) is words (0, 1) or (2, 3) of a block in float32, and in
    # float64 the first half of a block (words 0, 1) and the second (2, 3).
    pairs = _blocks(key, offset, n, dtype).reshape(-1, 2, 2 if dtype == np.float64 else 1)
    u1 = _units(pairs[:, 0].reshape(-1), dtype, above_zero=True)
    u2 = _units(pairs[:, 1].reshape(-1), dtype)
    t = dtype.type
    radius = np.sqrt(t(-2) * np.log(u1))
    angle = t(6.283185307179586) * u2
    out = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    return out.reshape(-1)[:n].reshape(shape)


def check_span(low, high):
    """high - low of integers' [low, high), checked."""
    for name, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"integers: {name} must be an int, got {v!r}")
    span = int(high) - int(low)
    if not 0 < span <= INTEGERS_MAX_SPAN:
        raise ValueError(f"integers: need 0 < high - low <= 2**53, got low={low}, high={high}")
    return span


def integers(shape, dtype, low, high, key, offset):
    """Integers in [low, high) as ``dtype``: low + floor(u (high - low)) of the float64
    units (clamped below high, which the rounded product can reach where high - low exceeds
    2^52). Uses the float64 stream's blocks."""
    span = check_span(low, high)
    u = uniform(shape, np.float64, 0.0, 1.0, key, offset)
    k = np.minimum(np.floor(u * np.float64(span)), np.float64(span - 1)).astype(np.int64)
    return (k + np.int64(low)).astype(dtype, copy=False)
