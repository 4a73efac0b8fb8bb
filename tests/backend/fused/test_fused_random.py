"""The counter-based draws (backend/fused/random): the reference's streams by their
definition (kernels/random.cu's head comment), their statistics, and the CUDA kernel (the
emulated device here, the real one on a GPU) held to the reference: the uniform draws and
the integers bit for bit, the normal ones to a few ulp (the log, cos and sin of libm, NumPy
and libdevice round differently)."""
import numpy as np
import pytest

import gradlab as gl
from gradlab.backend import cpu_backend, get_backend
from gradlab.backend.fused import random as fused_random
from gradlab.backend.fused.dropout.reference import philox_stream
from gradlab.backend.fused.random import reference

# sizes around the block widths (4 float32, 2 float64 elements a block) and past one grid
SIZES = [0, 1, 2, 3, 4, 5, 7, 8, 9, 33, 1000, 40_001]
# (key, offset): offsets just below 2^32 (the counter's low word carries) and 2^64 (wraps)
KEY_OFFSETS = [(0, 0), (0xDEADBEEF12345678, 2**32 - 3), (2**64 - 1, 2**64 - 2), (42, 2**63 + 1)]


def test_blocks_per_draw():
    assert [fused_random.philox_blocks(n, np.float32) for n in (0, 1, 4, 5, 8, 9)] == \
        [0, 1, 1, 2, 2, 3]
    assert [fused_random.philox_blocks(n, np.float64) for n in (0, 1, 2, 3, 4)] == \
        [0, 1, 1, 2, 2]


@pytest.mark.parametrize("key,offset", KEY_OFFSETS)
def test_uniform_stream_by_its_definition(key, offset):
    n = 11
    words = philox_stream(key, offset, 4 * 3)
    got32 = reference.uniform((n,), np.float32, 0.0, 1.0, key, offset)
    for i in range(n):
        assert got32[i] == np.float32((int(words[i]) >> 8) / 2**24)
    got64 = reference.uniform((5,), np.float64, 0.0, 1.0, key, offset)
    for i in range(5):
        a, b = int(words[4 * (i // 2) + 2 * (i % 2)]), int(words[4 * (i // 2) + 2 * (i % 2) + 1])
        assert got64[i] == ((a >> 5) * 2**26 + (b >> 6)) / 2**53
    # low + (high - low) u in the dtype
    scaled = reference.uniform((n,), np.float32, -0.5, 2.0, key, offset)
    want = np.float32(-0.5) + np.float32(2.5) * got32
    assert scaled.dtype == np.float32 and scaled.tobytes() == want.tobytes()


@pytest.mark.parametrize("key,offset", KEY_OFFSETS[:2])
def test_normal_stream_by_its_definition(key, offset):
    words = philox_stream(key, offset, 4 * 2)
    got = reference.normal((7,), np.float64, key, offset)
    for i in range(4):
        blk = [int(w) for w in words[4 * (i // 2): 4 * (i // 2) + 4]]
        u1 = (((blk[0] >> 5) << 26 | blk[1] >> 6) + 1) / 2**53
        u2 = ((blk[2] >> 5) << 26 | blk[3] >> 6) / 2**53
        r = np.sqrt(-2 * np.log(u1))
        want = r * (np.cos(2 * np.pi * u2) if i % 2 == 0 else np.sin(2 * np.pi * u2))
        np.testing.assert_allclose(got[i], want, rtol=1e-14, atol=0)
    got32 = reference.normal((5,), np.float32, key, offset)
    for i in range(5):
        w1, w2 = int(words[2 * (i // 2)]), int(words[2 * (i // 2) + 1])
        u1, u2 = ((w1 >> 8) + 1) / 2**24, (w2 >> 8) / 2**24
        r = np.sqrt(-2 * np.log(u1))
        want = r * (np.cos(2 * np.pi * u2) if i % 2 == 0 else np.sin(2 * np.pi * u2))
        np.testing.assert_allclose(got32[i], want, rtol=2e-6, atol=2e-6)


def test_draws_have_their_distributions():
    """Moments and a Kolmogorov-Smirnov distance at n = 2^18 (bounds far outside chance: a
    broken stream or formula fails them)."""
    from math import erf, sqrt
    n = 1 << 18
    for dtype in (np.float32, np.float64):
        u = reference.uniform((n,), dtype, 0.0, 1.0, 123, 0).astype(np.float64)
        assert u.min() >= 0 and u.max() < 1
        assert abs(u.mean() - 0.5) < 5e-3 and abs(u.var() - 1 / 12) < 2e-3
        us = np.sort(u)
        assert np.max(np.abs(us - np.arange(1, n + 1) / n)) < 5e-3
        z = reference.normal((n,), dtype, 123, 10**6).astype(np.float64)
        assert np.isfinite(z).all()
        assert abs(z.mean()) < 1e-2 and abs(z.std() - 1) < 1e-2
        cdf = 0.5 * (1 + np.vectorize(erf)(np.sort(z)[::64] / sqrt(2)))
        assert np.max(np.abs(cdf - (np.arange(0, n, 64) + 1) / n)) < 5e-3
        # consecutive elements (a pair of one Box-Muller draw) are uncorrelated
        assert abs(np.corrcoef(z[0::2], z[1::2])[0, 1]) < 1e-2


def test_bad_arguments_raise():
    with pytest.raises(TypeError, match="float32 or float64"):
        reference.uniform((3,), np.int32, 0, 1, 0, 0)
    with pytest.raises(ValueError, match="non-negative"):
        reference.normal((-1,), np.float32, 0, 0)
    with pytest.raises(ValueError, match="normal offset"):
        reference.normal((1,), np.float32, 0, -1)


def _cuda():
    impls = fused_random.uniform.implementations()
    if "cuda" not in impls:
        pytest.skip(f"no CUDA tier in this process: {gl.cuda.unavailable_reason()}")
    return get_backend("cuda"), impls["cuda"], fused_random.normal.implementations()["cuda"]


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_kernels_match_the_reference(dtype):
    be, uniform, normal = _cuda()
    cpu = cpu_backend()
    ref_u = fused_random.uniform.implementations()["numpy"]
    ref_n = fused_random.normal.implementations()["numpy"]
    ulp = np.finfo(dtype).eps
    for n in SIZES:
        for key, offset in KEY_OFFSETS[:3]:
            for low, high in ((0.0, 1.0), (1 / 8, 1 / 3)):
                got = be.to_numpy(uniform(be, (n,), dtype, low, high, key, offset))
                want = ref_u(cpu, (n,), dtype, low, high, key, offset)
                assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
            got = be.to_numpy(normal(be, (n,), dtype, key, offset))
            want = ref_n(cpu, (n,), dtype, key, offset)
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=16 * ulp, atol=16 * ulp)
    shaped = be.to_numpy(normal(be, (3, 5, 2), dtype, 9, 4))
    np.testing.assert_allclose(shaped, ref_n(cpu, (3, 5, 2), dtype, 9, 4), rtol=16 * ulp,
                               atol=16 * ulp)


@pytest.mark.cuda
def test_cuda_backend_draws_advance_the_stream():
    """gl.rand / gl.randn / RReLU's slopes on CUDA: the reference's draws at the generator's
    (key, offset), which then moves past the blocks they took; a reseed repeats them."""
    be, _, _ = _cuda()
    gl.manual_seed(5)
    key, offset = be.random.philox_key, be.random.philox_offset
    a = gl.rand(10, device="cuda")
    assert be.random.philox_offset == offset + 3
    b = gl.randn(3, 2, device="cuda", dtype=gl.float64)
    assert be.random.philox_offset == offset + 6
    h = gl.randn(5, device="cuda", dtype=gl.float16)
    assert h.dtype == gl.float16 and be.random.philox_offset == offset + 8
    np.testing.assert_array_equal(a.cpu().numpy(),
                                  reference.uniform((10,), np.float32, 0, 1, key, offset))
    np.testing.assert_allclose(b.cpu().numpy(),
                               reference.normal((3, 2), np.float64, key, offset + 3),
                               rtol=1e-14, atol=1e-14)
    slopes = be.uniform(0.125, 1 / 3, (4, 4), np.float32)
    assert be.random.philox_offset == offset + 12
    np.testing.assert_array_equal(
        be.to_numpy(slopes), reference.uniform((4, 4), np.float32, 0.125, 1 / 3, key, offset + 8))
    gl.manual_seed(5)
    np.testing.assert_array_equal(gl.rand(10, device="cuda").cpu().numpy(), a.cpu().numpy())


def test_integers_by_their_definition_and_range():
    key, offset = 0xDEADBEEF12345678, 2**32 - 3
    u = reference.uniform((1000,), np.float64, 0.0, 1.0, key, offset)
    for low, high in ((0, 2), (-5, 7), (10, 11), (-(2**40), 2**40), (0, 2**53)):
        got = reference.integers((1000,), np.int64, low, high, key, offset)
        want = [min(int(np.floor(v * (high - low))), high - low - 1) + low for v in u]
        assert got.dtype == np.int64 and got.tolist() == want
        assert got.min() >= low and got.max() < high
    small = reference.integers((1 << 16,), np.int64, 0, 6, 3, 0)
    counts = np.bincount(small, minlength=6) / small.size
    assert np.abs(counts - 1 / 6).max() < 0.01
    assert reference.integers((2, 3), np.int32, 0, 4, 1, 2).dtype == np.int32
    with pytest.raises(ValueError, match="0 < high - low <= 2\\*\\*53"):
        reference.integers((3,), np.int64, 0, 2**53 + 1, 0, 0)
    with pytest.raises(ValueError, match="0 < high - low"):
        reference.integers((3,), np.int64, 4, 4, 0, 0)


@pytest.mark.cuda
def test_cuda_integers_are_the_reference():
    be, _, _ = _cuda()
    impl = fused_random.integers.implementations()
    for low, high in ((0, 2), (-5, 7), (0, 2**53)):
        for n in (0, 1, 3, 1000):
            got = be.to_numpy(impl["cuda"](be, (n,), np.int64, low, high, 7, 2**64 - 1))
            want = impl["numpy"](cpu_backend(), (n,), np.int64, low, high, 7, 2**64 - 1)
            assert got.dtype == want.dtype and got.tolist() == want.tolist()
    gl.manual_seed(5)
    key, offset = be.random.philox_key, be.random.philox_offset
    r = gl.randint(-3, 9, (5, 3), device="cuda")
    assert r.dtype == gl.int64 and be.random.philox_offset == offset + 8
    assert r.cpu().numpy().tolist() == \
        reference.integers((5, 3), np.int64, -3, 9, key, offset).tolist()
