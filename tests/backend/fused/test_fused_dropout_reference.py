"""Philox4x32-10 and dropout on the CPU: known answers, an independent scalar Philox, the
mask's bit layout, p = 0 / p = 1, and the backward."""
import math

import numpy as np
import pytest

from gradlab.backend.fused.dropout import reference as ref

# Random123's kat_vectors, "philox4x32 10" lines: counter (4 words), key (2 words) -> output.
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


def scalar_philox(ctr, key):
    """Philox4x32-10 on Python ints, written from the paper's round definition, with the key
    bumped before each round after the first (an ordering independent of the reference)."""
    c0, c1, c2, c3 = ctr
    k0, k1 = key
    for r in range(10):
        if r:
            k0, k1 = (k0 + 0x9E3779B9) % 2**32, (k1 + 0xBB67AE85) % 2**32
        prod0, prod1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = ((prod1 >> 32) ^ c1 ^ k0, prod1 % 2**32,
                          (prod0 >> 32) ^ c3 ^ k1, prod0 % 2**32)
    return c0, c1, c2, c3


def stream_word(key, offset, i):
    block = (offset + i // 4) % 2**64
    return scalar_philox((block % 2**32, block >> 32, 0, 0), (key % 2**32, key >> 32))[i % 4]


@pytest.mark.parametrize("ctr,key,expected", KAT)
def test_philox_known_answers(ctr, key, expected):
    assert tuple(int(w) for w in ref.philox4x32_10(*ctr, *key)) == expected
    assert scalar_philox(ctr, key) == expected


def test_vectorized_philox_matches_scalar(rng):
    ctrs = rng.integers(0, 2**32, size=(4, 50), dtype=np.uint64)
    key = (0x12345678, 0x9ABCDEF0)
    got = np.stack(ref.philox4x32_10(*ctrs, *key))
    for j in range(50):
        assert tuple(int(w) for w in got[:, j]) == scalar_philox(tuple(int(c) for c in ctrs[:, j]),
                                                                 key)


@pytest.mark.parametrize("key,offset", [(0, 0), (2**64 - 1, 7), (0xDEADBEEF12345678, 2**64 - 3),
                                        (42, 2**32 - 1)])
def test_stream_layout(key, offset):
    n = 4 * ref._PHILOX_SLICE + 9   # crosses the internal slice boundary, odd tail
    words = ref.philox_stream(key, offset, n)
    assert words.dtype == np.uint32 and words.shape == (n,)
    for i in (0, 1, 2, 3, 4, 5, 4 * ref._PHILOX_SLICE - 1, 4 * ref._PHILOX_SLICE, n - 1):
        assert int(words[i]) == stream_word(key, offset, i), i


def test_forward_mask_bits_and_values(rng):
    n, p, key, offset = 70, 0.3, 99, 5
    x = rng.standard_normal((7, 10)).astype(np.float32)
    y, mask = ref.dropout_forward(x, p, key, offset)
    thr = math.ceil(p * 2**32)
    keep = np.array([stream_word(key, offset, i) >= thr for i in range(n)])
    assert mask.dtype == np.uint32 and mask.shape == (3,)
    for i in range(n):
        assert bool((int(mask[i // 32]) >> (i % 32)) & 1) == keep[i]
    assert int(mask[2]) >> (n - 64) == 0      # padding bits past element n-1 are zero
    scale = np.float32(1 / (1 - p))
    flat = x.reshape(-1)
    np.testing.assert_array_equal(y.reshape(-1), np.where(keep, flat * scale, 0))
    assert y.dtype == np.float32 and y.shape == x.shape


def test_p_zero_and_one_are_exact(rng):
    x = rng.standard_normal(45)
    y, mask = ref.dropout_forward(x, 0.0, 1, 2)
    np.testing.assert_array_equal(y, x)
    assert mask.tolist() == [0xFFFFFFFF, (1 << 13) - 1]
    np.testing.assert_array_equal(ref.dropout_backward(x, mask, 0.0), x)
    y, mask = ref.dropout_forward(x, 1.0, 1, 2)
    assert not y.any() and not mask.any()
    assert not ref.dropout_backward(x, mask, 1.0).any()


def test_backward_applies_the_same_bits(rng):
    x = rng.standard_normal((33, 17))
    y, mask = ref.dropout_forward(x, 0.5, 7, 0)
    g = ref.dropout_backward(x, mask, 0.5)
    np.testing.assert_array_equal(g, y)       # same bits, same 1/(1-p) = 2
    kept = y != 0
    np.testing.assert_array_equal(y[kept], 2 * x[kept])


def test_reproducible_and_offset_is_a_pure_shift(rng):
    x = rng.standard_normal(4000)
    y1, m1 = ref.dropout_forward(x, 0.5, 11, 100)
    y2, m2 = ref.dropout_forward(x, 0.5, 11, 100)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(m1, m2)
    assert not np.array_equal(m1, ref.dropout_forward(x, 0.5, 11, 1100)[1])
    assert not np.array_equal(m1, ref.dropout_forward(x, 0.5, 12, 100)[1])
    # Elements 2000.. of one call are elements 0.. of a call whose offset is 2000 / 4 later.
    tail, _ = ref.dropout_forward(x[2000:], 0.5, 11, 100 + 500)
    np.testing.assert_array_equal(tail, y1[2000:])


def test_keep_fraction():
    n, p = 1 << 18, 0.25
    _, mask = ref.dropout_forward(np.ones(n, np.float32), p, 3, 0)
    kept = int(np.unpackbits(mask.view(np.uint8)).sum())
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(kept - n * (1 - p)) < 6 * sigma


def test_empty_input():
    y, mask = ref.dropout_forward(np.zeros((0, 3), np.float32), 0.5, 0, 0)
    assert y.shape == (0, 3) and mask.shape == (0,)
    assert ref.dropout_backward(y, mask, 0.5).shape == (0, 3)
