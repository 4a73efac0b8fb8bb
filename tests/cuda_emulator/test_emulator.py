"""The CUDA emulator itself: built-ins, scheduling, misuse detection, the build cache, and the
real kernels/*.cu modules compiled through it."""
import threading
import time

import numpy as np
import pytest

from gradlab.backend import checks, cuda_kernels
from gradlab.backend.fused.dropout import reference as dropout_reference
from gradlab.backend.fused.softmax_ce import reference as ce_reference

from . import runtime as rt

pytestmark = pytest.mark.cuda

FULL = 0xFFFFFFFF


def line_of(source: str, tag: str) -> int:
    """1-based line of the source line carrying the comment `// tag`."""
    hits = [i + 1 for i, text in enumerate(source.splitlines()) if text.rstrip().endswith(
        f"// {tag}")]
    assert len(hits) == 1, tag
    return hits[0]


def addr(a: np.ndarray) -> int:
    return a.ctypes.data


# -- kernels that misuse the execution model --------------------------------------------------
MISUSE = r"""
extern "C" __global__ void neighbour_nosync(float* out) {
    __shared__ float s[256];
    const unsigned t = threadIdx.x;
    s[t] = (float)t;
    out[t] = s[(t + 1) % blockDim.x];  // forgot __syncthreads() before this read
}

extern "C" __global__ void neighbour_sync(float* out) {
    __shared__ float s[256];
    const unsigned t = threadIdx.x;
    s[t] = (float)t;
    __syncthreads();
    out[t] = s[(t + 1) % blockDim.x];
}

extern "C" __global__ void half_warp_shuffle(int* out) {
    int v = threadIdx.x;
    if ((threadIdx.x & 31) < 16) v = __shfl_xor_sync(0xffffffffu, v, 1);  // HALF_WARP
    out[threadIdx.x] = v;
}

extern "C" __global__ void partial_mask(int* out) {
    int v = threadIdx.x;
    v = __shfl_xor_sync(0x0000ffffu, v, 1);  // PARTIAL_MASK
    out[threadIdx.x] = v;
}

extern "C" __global__ void shuffle_vs_barrier(int* out) {
    int v = threadIdx.x;
    if (threadIdx.x & 1) v = __shfl_down_sync(0xffffffffu, v, 1);  // SHFL_SIDE
    else __syncthreads();  // BAR_SIDE
    out[threadIdx.x] = v;
}

extern "C" __global__ void branch_barrier(int* out) {
    __shared__ int s[64];
    s[threadIdx.x] = threadIdx.x;
    if (threadIdx.x < 32) __syncthreads();  // BRANCH_BAR
    __syncthreads();  // AFTER_BAR
    out[threadIdx.x] = s[63 - threadIdx.x];
}

extern "C" __global__ void early_return(int* out) {
    __shared__ int s[64];
    if (threadIdx.x >= 48) return;
    s[threadIdx.x] = 2 * threadIdx.x;
    __syncthreads();  // EARLY_BAR
    out[threadIdx.x] = s[47 - threadIdx.x];
}

extern "C" __global__ void full_mask_short_warp(int* out) {
    int v = __shfl_sync(0xffffffffu, (int)threadIdx.x, 0);  // SHORT_WARP
    out[threadIdx.x] = v;
}

extern "C" __global__ void bad_width(int* out) {
    int v = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 1, 12);  // BAD_WIDTH
    out[threadIdx.x] = v;
}

// Written for one element per thread: launched with a grid smaller than n, the tail is left.
extern "C" __global__ void scale_no_loop(const float* x, float* y, long long n) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = 2.0f * x[i];
}

extern "C" __global__ void scale_grid_stride(const float* x, float* y, long long n) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        y[i] = 2.0f * x[i];
}

extern "C" __global__ void fill_off_by_one(float* y, long long n) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i <= n; i += stride)
        y[i] = 1.0f;
}
"""


@pytest.fixture(scope="module")
def misuse():
    return rt.Module(MISUSE, filename="misuse.cu")


def test_missing_barrier_shows_as_order_dependence(misuse):
    bad, good = misuse.get_kernel("neighbour_nosync"), misuse.get_kernel("neighbour_sync")
    results = {}
    for order in ("forward", "reverse", "shuffle"):
        for k in (bad, good):
            out = np.zeros(256, np.float32)
            with rt.schedule(order, seed=5):
                k.launch((1, 1, 1), (256, 1, 1), [addr(out)])
            results[k.name, order] = out
    expected = ((np.arange(256) + 1) % 256).astype(np.float32)
    for order in ("forward", "reverse", "shuffle"):
        np.testing.assert_array_equal(results["neighbour_sync", order], expected)
    fwd, rev = results["neighbour_nosync", "forward"], results["neighbour_nosync", "reverse"]
    # Forward: each thread reads its successor's slot before the successor ran -> poison.
    assert np.isnan(fwd[:255]).all() and fwd[255] == 0.0
    # Reverse: successors ran first, only the wrap-around read sees poison.
    np.testing.assert_array_equal(rev[:255], expected[:255])
    assert np.isnan(rev[255])
    assert not np.array_equal(fwd, rev, equal_nan=True)


def test_divergent_shuffle_names_line(misuse):
    out = np.zeros(32, np.int32)
    with pytest.raises(rt.EmulatorError) as e:
        misuse.get_kernel("half_warp_shuffle").launch((1, 1, 1), (32, 1, 1), [addr(out)])
    msg = str(e.value)
    assert "'half_warp_shuffle'" in msg
    assert f"misuse.cu:{line_of(MISUSE, 'HALF_WARP')}" in msg
    assert "__shfl_xor_sync" in msg and "16-31" in msg and "exited" in msg


def test_partial_mask_with_active_lanes(misuse):
    out = np.zeros(32, np.int32)
    with pytest.raises(rt.EmulatorError) as e:
        misuse.get_kernel("partial_mask").launch((1, 1, 1), (32, 1, 1), [addr(out)])
    msg = str(e.value)
    assert "'partial_mask'" in msg and f"misuse.cu:{line_of(MISUSE, 'PARTIAL_MASK')}" in msg
    assert "0x0000ffff" in msg and "leaves out active lanes 16-31" in msg


def test_shuffle_against_barrier_reports_both_sites(misuse):
    out = np.zeros(32, np.int32)
    with pytest.raises(rt.EmulatorError) as e:
        misuse.get_kernel("shuffle_vs_barrier").launch((1, 1, 1), (32, 1, 1), [addr(out)])
    msg = str(e.value)
    assert f"misuse.cu:{line_of(MISUSE, 'SHFL_SIDE')}" in msg
    assert f"misuse.cu:{line_of(MISUSE, 'BAR_SIDE')}" in msg


@pytest.mark.parametrize("order", ["forward", "reverse", "shuffle"])
def test_barrier_in_branch_reports_both_sites(misuse, order):
    out = np.zeros(64, np.int32)
    with rt.schedule(order, seed=1), pytest.raises(rt.EmulatorError) as e:
        misuse.get_kernel("branch_barrier").launch((1, 1, 1), (64, 1, 1), [addr(out)])
    msg = str(e.value)
    assert "'branch_barrier'" in msg and "__syncthreads" in msg
    assert f"misuse.cu:{line_of(MISUSE, 'BRANCH_BAR')}" in msg
    assert f"misuse.cu:{line_of(MISUSE, 'AFTER_BAR')}" in msg


def test_early_return_past_barrier(misuse):
    k = misuse.get_kernel("early_return")
    out = np.full(64, -7, np.int32)
    with pytest.raises(rt.EmulatorError) as e:
        k.launch((1, 1, 1), (64, 1, 1), [addr(out)])
    msg = str(e.value)
    assert "'early_return'" in msg and "returned while other threads" in msg
    assert f"misuse.cu:{line_of(MISUSE, 'EARLY_BAR')}" in msg
    with rt.allow_early_exit():
        k.launch((1, 1, 1), (64, 1, 1), [addr(out)])
    np.testing.assert_array_equal(out[:48], 2 * (47 - np.arange(48)))
    np.testing.assert_array_equal(out[48:], -7)
    # The switch is scoped: outside it the error is back.
    with pytest.raises(rt.EmulatorError):
        k.launch((1, 1, 1), (64, 1, 1), [addr(out)])


def test_full_mask_on_short_warp_names_missing_lanes(misuse):
    out = np.zeros(48, np.int32)
    with pytest.raises(rt.EmulatorError) as e:
        misuse.get_kernel("full_mask_short_warp").launch((1, 1, 1), (48, 1, 1), [addr(out)])
    msg = str(e.value)
    assert f"misuse.cu:{line_of(MISUSE, 'SHORT_WARP')}" in msg
    assert "16-31, which do not exist" in msg


def test_bad_shuffle_width(misuse):
    out = np.zeros(32, np.int32)
    with pytest.raises(rt.EmulatorError) as e:
        misuse.get_kernel("bad_width").launch((1, 1, 1), (32, 1, 1), [addr(out)])
    assert f"misuse.cu:{line_of(MISUSE, 'BAD_WIDTH')}" in str(e.value)
    assert "width 12" in str(e.value)


def test_error_leaves_module_usable(misuse):
    out = np.zeros(32, np.int32)
    for _ in range(3):
        with pytest.raises(rt.EmulatorError):
            misuse.get_kernel("half_warp_shuffle").launch((2, 1, 1), (32, 1, 1), [addr(out)])
        res = np.zeros(256, np.float32)
        misuse.get_kernel("neighbour_sync").launch((1, 1, 1), (256, 1, 1), [addr(res)])
        np.testing.assert_array_equal(res, (np.arange(256) + 1) % 256)


def test_skipped_elements_show_in_poisoned_output(misuse):
    n = 1000
    x = np.arange(n, dtype=np.float32)
    raw, check = rt.guarded(4 * n)
    y = raw.view(np.float32)
    misuse.get_kernel("scale_no_loop").launch((2, 1, 1), (128, 1, 1),
                                              [addr(x), addr(y), np.int64(n)])
    check("y")
    np.testing.assert_array_equal(y[:256], 2 * x[:256])
    assert np.isnan(y[256:]).all()  # never written: still the 0xFF poison
    raw[:] = 0xFF
    misuse.get_kernel("scale_grid_stride").launch((2, 1, 1), (128, 1, 1),
                                                  [addr(x), addr(y), np.int64(n)])
    check("y")
    np.testing.assert_array_equal(y, 2 * x)


def test_out_of_bounds_write_hits_guard(misuse):
    n = 100
    raw, check = rt.guarded(4 * n)
    misuse.get_kernel("fill_off_by_one").launch((1, 1, 1), (64, 1, 1),
                                                [addr(raw), np.int64(n)])
    np.testing.assert_array_equal(raw.view(np.float32), 1.0)
    with pytest.raises(rt.EmulatorError, match=r"y: write at byte offset 400 of a 400-byte"):
        check("y")
    fresh, check2 = rt.guarded(16)
    fresh[:] = 0
    check2()  # writes inside the buffer are fine


# -- correct kernels: built-ins ---------------------------------------------------------------
BUILTINS = r"""
extern "C" __global__ void indices(unsigned* out) {
    const unsigned bid = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    const unsigned tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    unsigned* o = out + 13 * (bid * blockDim.x * blockDim.y * blockDim.z + tid);
    o[0] = threadIdx.x; o[1] = threadIdx.y; o[2] = threadIdx.z;
    __syncthreads();  // every other thread ran in between: values must still be this one's
    o[3] = blockIdx.x; o[4] = blockIdx.y; o[5] = blockIdx.z;
    o[6] = blockDim.x; o[7] = blockDim.y; o[8] = blockDim.z;
    o[9] = gridDim.x; o[10] = gridDim.y; o[11] = gridDim.z;
    o[12] = threadIdx.x + 100 * threadIdx.y + 10000 * threadIdx.z;
}

extern "C" __global__ void shuffles(int* idx, long long* up, float* down, double* bfly,
                                    unsigned* uidx, unsigned long long* udown, int width) {
    const int lane = threadIdx.x;
    idx[lane] = __shfl_sync(0xffffffffu, 1000 + lane, lane * 3 + 1, width);
    up[lane] = __shfl_up_sync(0xffffffffu, (long long)lane << 40, 3, width);
    down[lane] = __shfl_down_sync(0xffffffffu, 0.5f + lane, 5, width);
    bfly[lane] = __shfl_xor_sync(0xffffffffu, 0.25 + lane, 6, width);
    uidx[lane] = __shfl_sync(0xffffffffu, 0x80000000u + lane, 31 - lane, width);
    udown[lane] = __shfl_down_sync(0xffffffffu, (1ull << 63) + lane, 2, width);
    __syncwarp();
}

extern "C" __global__ void default_width(int* out) {
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 16);
}

extern "C" __global__ void atomics(int* count, unsigned* ucount, unsigned long long* big,
                                   float* fsum, double* dsum, unsigned long long* umin,
                                   int* imax, int* exch, int* cas) {
    const unsigned g = blockIdx.x * blockDim.x + threadIdx.x;
    atomicAdd(count, 1);
    atomicAdd(ucount, 2u);
    atomicAdd(big, 1ull << 33);
    atomicAdd(fsum, 0.5f);
    atomicAdd(dsum, 0.25);
    atomicMin(umin, 1000000ull - g);
    atomicMax(imax, (int)(g * 7 % 1001));
    atomicExch(exch, (int)g);
    atomicCAS(cas, 0, (int)g + 1);
}

extern "C" __global__ void intrinsics(const unsigned* a, const unsigned* b, unsigned* hi,
                                      const float* f, int* fi, const int* i, float* iff,
                                      const double* d, long long* dl, const long long* l,
                                      double* ld) {
    const unsigned t = threadIdx.x;
    hi[t] = __umulhi(a[t], b[t]);
    fi[t] = __float_as_int(f[t]);
    iff[t] = __int_as_float(i[t]);
    dl[t] = __double_as_longlong(d[t]);
    ld[t] = __longlong_as_double(l[t]);
}

extern "C" __global__ void minmax(long long* o) {
    o[0] = min(3, -4); o[1] = max(3u, 7u); o[2] = min(-5ll, 2ll);
    o[3] = max(1ull << 40, 5ull); o[4] = (long long)(min(2.5f, -1.5f) * 2);
    o[5] = (long long)(max(2.5, 8.0));
}

extern "C" __global__ void shared_poison(float* out) {
    __shared__ float s[1];
    out[blockIdx.x] = s[0];  // the previous block wrote 1.0f; a fresh block sees poison
    __syncthreads();
    s[0] = 1.0f;
}

extern "C" __global__ void never_written_shared(float* out, double* dout) {
    __shared__ float s[4];
    __shared__ double d[2];
    out[threadIdx.x] = s[threadIdx.x];
    dout[threadIdx.x] = d[threadIdx.x & 1];
}

template <typename T> __device__ __forceinline__ T block_sum(T v) {
    __shared__ T part[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int d = 16; d > 0; d >>= 1) v += __shfl_xor_sync(0xffffffffu, v, d);
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < (int)(blockDim.x >> 5) ? part[lane] : T(0);
        for (int d = 16; d > 0; d >>= 1) v += __shfl_xor_sync(0xffffffffu, v, d);
    }
    return v;
}

extern "C" __global__ void block_sums(const long long* x, long long* out, const double* y,
                                      double* dout) {
    const long long s = block_sum<long long>(x[blockIdx.x * blockDim.x + threadIdx.x]);
    const double ds = block_sum<double>(y[blockIdx.x * blockDim.x + threadIdx.x]);
    if (threadIdx.x == 0) {
        out[blockIdx.x] = s;
        dout[blockIdx.x] = ds;
    }
}

extern "C" __global__ void no_params() {}
"""


@pytest.fixture(scope="module")
def builtins():
    return rt.Module(BUILTINS, filename="builtins.cu")


@pytest.mark.parametrize("order", ["forward", "reverse", "shuffle"])
def test_index_builtins_over_3d_launch(builtins, order):
    grid, block = (2, 3, 2), (4, 2, 3)
    nb, nt = 12, 24
    out = np.zeros((nb, nt, 13), np.uint32)
    with rt.schedule(order, seed=11):
        builtins.get_kernel("indices").launch(grid, block, [addr(out)])
    bz, by, bx = np.meshgrid(range(2), range(3), range(2), indexing="ij")
    tz, ty, tx = np.meshgrid(range(3), range(2), range(4), indexing="ij")
    bx, by, bz = (a.reshape(nb, 1) for a in (bx, by, bz))
    tx, ty, tz = (a.reshape(1, nt) for a in (tx, ty, tz))
    np.testing.assert_array_equal(out[..., 0], np.broadcast_to(tx, (nb, nt)))
    np.testing.assert_array_equal(out[..., 1], np.broadcast_to(ty, (nb, nt)))
    np.testing.assert_array_equal(out[..., 2], np.broadcast_to(tz, (nb, nt)))
    np.testing.assert_array_equal(out[..., 3], np.broadcast_to(bx, (nb, nt)))
    np.testing.assert_array_equal(out[..., 4], np.broadcast_to(by, (nb, nt)))
    np.testing.assert_array_equal(out[..., 5], np.broadcast_to(bz, (nb, nt)))
    np.testing.assert_array_equal(out[..., 6:9], np.broadcast_to(block, (nb, nt, 3)))
    np.testing.assert_array_equal(out[..., 9:12], np.broadcast_to(grid, (nb, nt, 3)))
    np.testing.assert_array_equal(out[..., 12], np.broadcast_to(tx + 100 * ty + 10000 * tz,
                                                                (nb, nt)))


def _src_lanes(kind, arg, width):
    """Source lane per lane, from the CUDA programming guide's description of each shuffle."""
    lanes = np.arange(32)
    seg = lanes // width * width
    if kind == "idx":
        return seg + np.asarray(arg) % width
    if kind == "up":
        return np.where(lanes % width >= arg, lanes - arg, lanes)
    if kind == "down":
        return np.where(lanes % width + arg < width, lanes + arg, lanes)
    src = lanes ^ arg
    return np.where(src < seg + width, src, lanes)  # xor: later groups give the own value


@pytest.mark.parametrize("width", [32, 16, 8, 4, 2, 1])
def test_shuffle_variants_with_width(builtins, width):
    lanes = np.arange(32)
    idx, up = np.zeros(32, np.int32), np.zeros(32, np.int64)
    down, bfly = np.zeros(32, np.float32), np.zeros(32, np.float64)
    uidx, udown = np.zeros(32, np.uint32), np.zeros(32, np.uint64)
    builtins.get_kernel("shuffles").launch(
        (1, 1, 1), (32, 1, 1),
        [addr(idx), addr(up), addr(down), addr(bfly), addr(uidx), addr(udown), np.int32(width)])
    np.testing.assert_array_equal(idx, 1000 + _src_lanes("idx", lanes * 3 + 1, width))
    np.testing.assert_array_equal(up, _src_lanes("up", 3, width).astype(np.int64) << 40)
    np.testing.assert_array_equal(down, 0.5 + _src_lanes("down", 5, width))
    np.testing.assert_array_equal(bfly, 0.25 + _src_lanes("xor", 6, width))
    np.testing.assert_array_equal(uidx, 0x80000000 + _src_lanes("idx", 31 - lanes, width))
    np.testing.assert_array_equal(
        udown, np.uint64(1 << 63) + _src_lanes("down", 2, width).astype(np.uint64))


def test_shuffle_default_width_and_hand_values(builtins):
    out = np.zeros(32, np.int32)
    builtins.get_kernel("default_width").launch((1, 1, 1), (32, 1, 1), [addr(out)])
    np.testing.assert_array_equal(out, np.r_[16:32, 0:16])
    # Hand-derived from the guide: width 8, __shfl_up_sync by 3 -> lanes 0-2 of each group
    # keep their own value.
    assert list(_src_lanes("up", 3, 8)[:10]) == [0, 1, 2, 0, 1, 2, 3, 4, 8, 9]
    assert list(_src_lanes("xor", 6, 4)[:8]) == [0, 1, 2, 3, 2, 3, 0, 1]


@pytest.mark.parametrize("order", ["forward", "reverse", "shuffle"])
def test_atomics(builtins, order):
    count, ucount = np.zeros(1, np.int32), np.zeros(1, np.uint32)
    big, fsum, dsum = np.zeros(1, np.uint64), np.zeros(1, np.float32), np.zeros(1, np.float64)
    umin, imax = np.array([2**64 - 1], np.uint64), np.array([-5], np.int32)
    exch, cas = np.array([-1], np.int32), np.zeros(1, np.int32)
    with rt.schedule(order, seed=2):
        builtins.get_kernel("atomics").launch(
            (8, 1, 1), (128, 1, 1),
            [addr(a) for a in (count, ucount, big, fsum, dsum, umin, imax, exch, cas)])
    g = np.arange(1024)
    assert count[0] == 1024 and ucount[0] == 2048 and big[0] == 1024 << 33
    assert fsum[0] == 512.0 and dsum[0] == 256.0
    assert umin[0] == 1000000 - 1023
    assert imax[0] == (g * 7 % 1001).max()
    assert 0 <= exch[0] < 1024 and 1 <= cas[0] <= 1024
    if order == "forward":
        assert exch[0] == 1023 and cas[0] == 1  # last writer / first winner
    elif order == "reverse":
        assert exch[0] == 0 and cas[0] == 1024


def test_umulhi_and_bit_casts(builtins):
    rng = np.random.default_rng(3)
    n = 64
    a = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    b = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
    a[0] = b[0] = 0xFFFFFFFF
    f = rng.standard_normal(n).astype(np.float32)
    f[1] = -np.inf
    i = rng.integers(-2**31, 2**31, n, dtype=np.int64).astype(np.int32)
    i[0] = np.int32(np.uint32(0xFF800000).view(np.int32))
    d = rng.standard_normal(n)
    ll = rng.integers(-2**63, 2**63 - 1, n, dtype=np.int64)
    outs = [np.zeros(n, t) for t in (np.uint32, np.int32, np.float32, np.int64, np.float64)]
    builtins.get_kernel("intrinsics").launch(
        (1, 1, 1), (n, 1, 1),
        [addr(a), addr(b), addr(outs[0]), addr(f), addr(outs[1]), addr(i), addr(outs[2]),
         addr(d), addr(outs[3]), addr(ll), addr(outs[4])])
    want_hi = ((a.astype(np.uint64) * b.astype(np.uint64)) >> np.uint64(32)).astype(np.uint32)
    np.testing.assert_array_equal(outs[0], want_hi)
    assert outs[0][0] == 0xFFFFFFFE
    np.testing.assert_array_equal(outs[1], f.view(np.int32))
    np.testing.assert_array_equal(outs[2].view(np.int32), i)
    assert outs[2][0] == -np.inf
    np.testing.assert_array_equal(outs[3], d.view(np.int64))
    np.testing.assert_array_equal(outs[4].view(np.int64), ll)


def test_min_max_overloads(builtins):
    o = np.zeros(6, np.int64)
    builtins.get_kernel("minmax").launch((1, 1, 1), (1, 1, 1), [addr(o)])
    assert list(o) == [-4, 7, -5, 1 << 40, -3, 8]


def test_shared_memory_is_poisoned_per_block(builtins):
    out = np.zeros(3, np.float32)
    builtins.get_kernel("shared_poison").launch((3, 1, 1), (1, 1, 1), [addr(out)])
    np.testing.assert_array_equal(out.view(np.uint32), 0xFFFFFFFF)
    out4, dout = np.zeros(4, np.float32), np.zeros(4, np.float64)
    builtins.get_kernel("never_written_shared").launch((2, 1, 1), (4, 1, 1),
                                                       [addr(out4), addr(dout)])
    np.testing.assert_array_equal(out4.view(np.uint32), 0xFFFFFFFF)
    np.testing.assert_array_equal(dout.view(np.uint64), 2**64 - 1)


@pytest.mark.parametrize("order", ["forward", "reverse", "shuffle"])
def test_block_reduction_with_template_shared(builtins, order):
    rng = np.random.default_rng(9)
    x = rng.integers(-1000, 1000, 4 * 256, dtype=np.int64)
    y = rng.integers(-1000, 1000, 4 * 256).astype(np.float64) / 8  # exact sums
    out, dout = np.zeros(4, np.int64), np.zeros(4, np.float64)
    with rt.schedule(order, seed=4):
        builtins.get_kernel("block_sums").launch((4, 1, 1), (256, 1, 1),
                                                 [addr(x), addr(out), addr(y), addr(dout)])
    np.testing.assert_array_equal(out, x.reshape(4, 256).sum(axis=1))
    np.testing.assert_array_equal(dout, y.reshape(4, 256).sum(axis=1))


def test_launch_config_limits(builtins):
    k = builtins.get_kernel("no_params")
    k.launch((1, 1, 1), (1024, 1, 1), [])
    bad = [((1, 1, 1), (1025, 1, 1), "axis x"), ((1, 1, 1), (512, 2, 2), "2048 threads"),
           ((1, 1, 1), (1, 1, 65), "axis z"), ((1, 1, 1), (1, 1025, 1), "axis y"),
           ((2**31, 1, 1), (1, 1, 1), "axis x"), ((1, 65536, 1), (32, 1, 1), "axis y"),
           ((1, 1, 65536), (32, 1, 1), "axis z"), ((0, 1, 1), (32, 1, 1), "axis x"),
           ((1, 1, 1), (32, 0, 1), "axis y")]
    for grid, block, what in bad:
        with pytest.raises(rt.LaunchConfigError, match=what) as e:
            k.launch(grid, block, [])
        assert "'no_params'" in str(e.value)


def test_argument_checks(builtins):
    k = builtins.get_kernel("shuffles")
    names = [p.name for p in k.params]
    assert names == ["idx", "up", "down", "bfly", "uidx", "udown", "width"]
    assert [p.kind for p in k.params] == ["pointer"] * 6 + ["value"]
    assert k.params[1].ctype == "long long *" and k.params[1].dtype == np.int64
    assert k.params[6].ctype == "int" and k.params[6].dtype == np.int32
    ptrs = [addr(np.zeros(32, np.int64)) for _ in range(6)]
    with pytest.raises(TypeError, match=r"argument 6 'width' \(int\) must be a numpy.int32 "
                                        r"scalar, got numpy.int64"):
        k.launch((1, 1, 1), (32, 1, 1), ptrs + [np.int64(32)])
    with pytest.raises(TypeError, match=r"argument 6 'width' \(int\) .* got int"):
        k.launch((1, 1, 1), (32, 1, 1), ptrs + [32])
    with pytest.raises(TypeError, match=r"argument 2 'down' \(float \*\) must be an int device "
                                        r"address, got float32"):
        k.launch((1, 1, 1), (32, 1, 1), ptrs[:2] + [np.float32(1)] + ptrs[3:] + [np.int32(32)])
    with pytest.raises(TypeError, match="takes 7 arguments, got 6"):
        k.launch((1, 1, 1), (32, 1, 1), ptrs)
    with pytest.raises(KeyError, match="no_params"):
        builtins.get_kernel("nope")


def test_concurrent_launches_from_threads(builtins):
    errors, outs = [], []

    def work():
        try:
            x = np.arange(4 * 256, dtype=np.int64)
            out, dout = np.zeros(4, np.int64), np.zeros(4, np.float64)
            for _ in range(20):
                builtins.get_kernel("block_sums").launch(
                    (4, 1, 1), (256, 1, 1),
                    [addr(x), addr(out), addr(x.astype(np.float64)), addr(dout)])
            outs.append(out.copy())
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    want = np.arange(1024).reshape(4, 256).sum(axis=1)
    assert len(outs) == 4 and all(np.array_equal(o, want) for o in outs)


def test_order_from_environment(monkeypatch):
    monkeypatch.setenv("GRADLAB_EMU_ORDER", "reverse")
    assert rt.current_order() == ("reverse", 0)
    monkeypatch.setenv("GRADLAB_EMU_ORDER", "shuffle:7")
    assert rt.current_order() == ("shuffle", 7)
    with rt.schedule("forward"):
        assert rt.current_order() == ("forward", 0)
    assert rt.current_order() == ("shuffle", 7)
    monkeypatch.setenv("GRADLAB_EMU_ORDER", "sideways")
    with pytest.raises(ValueError, match="sideways"):
        rt.current_order()
    with pytest.raises(ValueError):
        with rt.schedule("sideways"):
            pass


# -- build cache ------------------------------------------------------------------------------
def test_cache_hit_and_rebuild(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADLAB_EMU_CACHE", str(tmp_path))
    src = 'extern "C" __global__ void put(int* o, int v) { o[threadIdx.x] = v; }\n'
    first = rt.Module(src, filename="put.cu")
    again = rt.Module(src, filename="put.cu")
    assert not first.cache_hit and again.cache_hit and again.so_path == first.so_path
    mtime = first.so_path.stat().st_mtime_ns
    changed = rt.Module(src.replace("= v;", "= v + 1;"), filename="put.cu")
    assert not changed.cache_hit and changed.so_path != first.so_path
    assert first.so_path.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [first.so_path.parent.name, changed.so_path.parent.name])  # no temp folders left
    o = np.zeros(4, np.int32)
    changed.get_kernel("put").launch((1, 1, 1), (4, 1, 1), [addr(o), np.int32(5)])
    assert list(o) == [6, 6, 6, 6]
    # The kernel text is stored byte for byte.
    assert (changed.so_path.parent / "put.cu").read_bytes() == src.replace(
        "= v;", "= v + 1;").encode()


def test_compile_error_carries_log(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADLAB_EMU_CACHE", str(tmp_path))
    with pytest.raises(rt.CompileError, match=r"broken.cu:2"):
        rt.Module('extern "C" __global__ void f(int* o) {\n  o[0] = undefined_name;\n}\n',
                  filename="broken.cu")
    assert list(tmp_path.iterdir()) == []


# -- the real kernels -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real():
    return {m: rt.Module(cuda_kernels.kernel_source(m), filename=f"{m}.cu",
                         options=cuda_kernels.NVRTC_OPTIONS) for m in cuda_kernels.MODULES}


def test_real_modules_entry_points(real):
    for m, mod in real.items():
        assert set(mod.names) == set(cuda_kernels.entry_points(m))
    adam = real["optim"].get_kernel("adam_step_f32")
    head = [(p.kind, p.dtype, p.name) for p in adam.params[:5]]
    assert head == [("pointer", np.dtype(np.int64), "table"),
                    ("value", np.dtype(np.int32), "ntensors"),
                    ("value", np.dtype(np.int64), "nchunks"),
                    ("value", np.dtype(np.int64), "chunk_size"),
                    ("value", np.dtype(np.float32), adam.params[4].name)]
    assert adam.params[0].ctype == "const long long *"
    ce = real["softmax_ce"].get_kernel("softmax_ce_block_f64")
    assert ce.params[-1].ctype == "unsigned long long *" and ce.params[-1].name == "bad_row"


@pytest.mark.parametrize("order", ["forward", "reverse", "shuffle"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_real_dropout_matches_reference(real, order, dtype):
    n, p, key, offset = 10_007, 0.3, 0x1234_5678_9ABC, 77
    x = np.random.default_rng(0).standard_normal(n).astype(dtype)
    y = np.full(n, np.nan, dtype)
    mask = np.zeros((n + 31) // 32, np.uint32)
    sfx = cuda_kernels.DTYPE_SUFFIX[np.dtype(dtype).name]
    with rt.schedule(order, seed=8):
        real["dropout"].get_kernel(f"dropout_forward_{sfx}").launch(
            (3, 1, 1), (128, 1, 1),
            [addr(x), addr(y), addr(mask), np.int64(n), np.uint64(key), np.uint64(offset),
             np.uint64(checks.dropout_threshold(p)), dtype(checks.dropout_scale(p))])
    y_ref, mask_ref = dropout_reference.dropout_forward(x, p, key, offset)
    np.testing.assert_array_equal(mask, mask_ref)
    np.testing.assert_array_equal(y, y_ref)  # bit for bit


@pytest.mark.parametrize("layout,block", [("warp", 128), ("block", 256), ("block", 64)])
def test_real_softmax_ce_matches_reference(real, layout, block):
    rng = np.random.default_rng(5)
    n, c = 37, 300
    logits = rng.standard_normal((n, c))
    target = rng.integers(0, c, n).astype(np.int64)
    target[3] = -100
    target[7] = c + 5  # out of range: loss 0, row reported through bad_row
    loss, grad = np.full(n, np.nan), np.full((n, c), np.nan)
    bad = np.array([n], np.uint64)
    grid = ((n * 32 + block - 1) // block if layout == "warp" else n, 1, 1)
    with rt.schedule("shuffle", seed=1):
        real["softmax_ce"].get_kernel(f"softmax_ce_{layout}_f64").launch(
            grid, (block, 1, 1),
            [addr(logits), addr(target), 0, 0, np.int64(n), np.int64(c), np.int64(-100),
             np.float64(0.1), addr(loss), addr(grad), addr(bad)])
    assert bad[0] == 7
    ok = np.ones(n, bool)
    ok[7] = False
    want_loss, want_grad = ce_reference.softmax_cross_entropy(
        logits[ok], np.where(target[ok] == c + 5, -100, target[ok]), None, -100, 0.1)
    np.testing.assert_allclose(loss[ok], want_loss, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grad[ok], want_grad, rtol=1e-11, atol=1e-14)
    assert loss[7] == 0 and (grad[7] == 0).all()


def test_launch_speed(real):
    """64 blocks x 256 fibers over 2^20 elements, with and without shuffles."""
    n = 2**20
    x = np.ones(n, np.float32)
    y, mask, out = np.empty(n, np.float32), np.empty(n // 32, np.uint32), np.empty(n, np.float32)
    dropout = real["dropout"]
    t0 = time.perf_counter()
    dropout.get_kernel("dropout_forward_f32").launch(
        (64, 1, 1), (256, 1, 1), [addr(x), addr(y), addr(mask), np.int64(n), np.uint64(1),
                                  np.uint64(0), np.uint64(2**31), np.float32(2)])
    t1 = time.perf_counter()
    dropout.get_kernel("dropout_backward_f32").launch(
        (64, 1, 1), (256, 1, 1), [addr(x), addr(mask), addr(out), np.int64(n), np.float32(2)])
    t2 = time.perf_counter()
    assert np.array_equal(out, y)
    # Generous bounds (a loaded CI machine); typical: ~0.08 s and ~0.01 s.
    assert t1 - t0 < 1.0 and t2 - t1 < 0.5


# -- faults, votes and counting barriers ------------------------------------------------------
EXTRAS = r"""
extern "C" __global__ void deep_frame(float* out) {
    volatile float big[40000];  // 160 KB: more than a fiber's 64 KiB stack
    big[threadIdx.x] = 1.0f;
    out[threadIdx.x] = big[threadIdx.x];
}

extern "C" __global__ void store(float* out) {
    __syncthreads();  // LAST_SYNC
    out[threadIdx.x] = 1.0f;
}

extern "C" __global__ void trapping(int* out) {
    if (threadIdx.x == 3) __trap();  // TRAP
    out[threadIdx.x] = 1;
}

extern "C" __global__ void votes(unsigned* ballot, int* any, int* all, int* cnt, int* band,
                                 int* bor) {
    const unsigned t = threadIdx.x;
    ballot[t] = __ballot_sync(0xffffffffu, (t % 3) == 0);
    any[t] = __any_sync(0xffffffffu, t == 37);
    all[t] = __all_sync(0xffffffffu, t < 64);
    cnt[t] = __syncthreads_count(t % 5 == 0);
    band[t] = __syncthreads_and(t < 1000);
    bor[t] = __syncthreads_or(t == 63);
}
"""


@pytest.fixture(scope="module")
def extras():
    return rt.Module(EXTRAS, filename="extras.cu")


def test_faults_become_errors(extras, misuse):
    out = np.zeros(64, np.float32)
    with pytest.raises(rt.EmulatorError, match=r"'deep_frame'.*overflowed its 64 KiB fiber"):
        extras.get_kernel("deep_frame").launch((1, 1, 1), (4, 1, 1), [addr(out)])
    with rt.schedule("forward"), pytest.raises(rt.EmulatorError) as e:
        extras.get_kernel("store").launch((1, 1, 1), (4, 1, 1), [16])  # thread 0 faults first
    msg = str(e.value)
    assert "'store'" in msg and "invalid memory access" in msg and "0x10" in msg
    assert f"extras.cu:{line_of(EXTRAS, 'LAST_SYNC')}" in msg
    with pytest.raises(rt.EmulatorError, match=rf"__trap\(\) at extras.cu:"
                                               rf"{line_of(EXTRAS, 'TRAP')}"):
        extras.get_kernel("trapping").launch((1, 1, 1), (8, 1, 1), [addr(out)])
    # The module (and the process) carry on.
    extras.get_kernel("store").launch((1, 1, 1), (64, 1, 1), [addr(out)])
    assert (out == 1).all()


def test_votes_and_counting_barriers(extras):
    n = 64
    outs = [np.zeros(n, np.uint32)] + [np.zeros(n, np.int32) for _ in range(5)]
    extras.get_kernel("votes").launch((1, 1, 1), (n, 1, 1), [addr(o) for o in outs])
    t = np.arange(n)
    warp_bits = [sum(1 << i for i in range(32) if (32 * w + i) % 3 == 0) for w in range(2)]
    np.testing.assert_array_equal(outs[0], np.repeat(warp_bits, 32))
    np.testing.assert_array_equal(outs[1], np.repeat([0, 1], 32))
    np.testing.assert_array_equal(outs[2], 1)
    np.testing.assert_array_equal(outs[3], (t % 5 == 0).sum())
    np.testing.assert_array_equal(outs[4], 1)
    np.testing.assert_array_equal(outs[5], 1)


def test_native_launcher_checks_config_too(builtins):
    """The C side refuses a bad configuration by itself (callers other than Kernel.launch)."""
    import ctypes

    k = builtins.get_kernel("no_params")
    err = ctypes.create_string_buffer(512)
    cfg = rt._Cfg((ctypes.c_uint * 3)(1, 1, 1), (ctypes.c_uint * 3)(64, 32, 1), 0, 0, 0,
                  ctypes.cast(err, ctypes.c_char_p), 512)
    assert k._fn(ctypes.byref(cfg), None) == 2
    assert err.value.decode() == "kernel 'no_params': block (64,32,1) has 2048 threads; at most " \
                                 "1024 per block"
