"""Stream capture in the CuPy stand-in: captured work is recorded, not executed; a launch runs
it on the same buffers; a host sync inside a capture raises as CuPy does; memory the graph
writes must stay owned (cupy_standin/capture.py, FIDELITY.md).

Imports the stand-in directly, like test_cupy_standin.py, so it runs wherever g++ is."""
import numpy as np
import pytest

from cuda_emulator import cupy_standin as cp
from cuda_emulator.cupy_standin import capture, cupyx, install

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(install.why_not() is not None, reason=str(install.why_not()))]

KERNEL = r"""
extern "C" __global__ void axpy(const float *x, float *y, float a, long long n) {
    for (long long i = blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        y[i] += a * x[i];
}
"""


@pytest.fixture
def stream():
    s = cp.cuda.Stream(non_blocking=True)
    yield s
    if capture.active() is not None:  # a failed test must not leave a capture behind
        capture._active = None


def test_captured_work_runs_only_at_launch_on_the_same_buffers(stream):
    x = cp.asarray(np.arange(5, dtype=np.float32))
    acc = cp.zeros(5, dtype=np.float32)
    pool = cp.cuda.MemoryPool()
    with stream, cp.cuda.using_allocator(pool.malloc):
        stream.begin_capture()
        assert stream.is_capturing()
        y = x * 2 + 1
        acc += y
        idx = cp.argmax(y)
        picked = y[x.astype(np.int64)]  # an advanced index: a gather into new memory
        graph = stream.end_capture()
    assert not stream.is_capturing()
    # Nothing ran: pre-existing memory is unchanged, memory made during capture is poison.
    np.testing.assert_array_equal(acc.get(), 0)
    assert np.isnan(y.get()).all() and np.isnan(picked.get()).all()
    assert int(idx.get()) == -1
    graph.launch()
    np.testing.assert_array_equal(acc.get(), [1, 3, 5, 7, 9])
    np.testing.assert_array_equal(y.get(), [1, 3, 5, 7, 9])
    assert int(idx.get()) == 4
    x[...] = 1  # new input in the same buffer: the next launch reads it
    graph.launch()
    np.testing.assert_array_equal(acc.get(), [4, 6, 8, 10, 12])
    np.testing.assert_array_equal(picked.get(), [3, 3, 3, 3, 3])
    assert pool.total_bytes() >= y.nbytes + picked.nbytes


def test_kernel_launch_fill_and_scatter_are_captured(stream):
    fn = cp.RawModule(code=KERNEL).get_function("axpy")
    x = cp.asarray(np.ones(300, dtype=np.float32))
    y = cp.zeros(300, dtype=np.float32)
    z = cp.zeros(4, dtype=np.float32)
    pool = cp.cuda.MemoryPool()
    with stream, cp.cuda.using_allocator(pool.malloc):
        stream.begin_capture()
        fn((2,), (128,), (x, y, np.float32(2), np.int64(300)))
        z.fill(3)
        cupyx.scatter_add(z, cp.zeros(3, dtype=np.int64), cp.ones(3, dtype=np.float32))
        graph = stream.end_capture()
    np.testing.assert_array_equal(y.get(), 0)
    np.testing.assert_array_equal(z.get(), 0)
    graph.launch()
    graph.launch()
    np.testing.assert_array_equal(y.get(), 4)
    np.testing.assert_array_equal(z.get(), [6, 3, 3, 3])


@pytest.mark.parametrize("sync", [
    lambda a: a.get(), lambda a: float(a.sum()), lambda a: bool(a[0]), lambda a: a[1].item(),
    lambda a: a[a > 1], lambda a: cp.nonzero(a), lambda a: cp.asarray(np.ones(2)),
    lambda a: cp.cuda.Device(0).synchronize(),
    lambda a: cp.cuda.get_current_stream().synchronize(),
], ids=["get", "float", "bool", "item", "mask", "nonzero", "upload", "device_sync",
        "stream_sync"])
def test_a_host_sync_inside_capture_raises_and_invalidates_it(stream, sync):
    a = cp.asarray(np.arange(3, dtype=np.float32))
    before = a.get()
    with stream:
        stream.begin_capture()
        with pytest.raises(cp.cuda.runtime.CUDARuntimeError,
                           match="cudaErrorStreamCaptureUnsupported: operation not permitted "
                                 "when stream is capturing"):
            sync(a)
        a += 1  # recorded, and then thrown away with the capture
        with pytest.raises(cp.cuda.runtime.CUDARuntimeError,
                           match="cudaErrorStreamCaptureInvalidated"):
            stream.end_capture()
    assert not stream.is_capturing()
    np.testing.assert_array_equal(a.get(), before)


def test_work_on_another_stream_runs_during_a_capture(stream):
    a = cp.zeros(2, dtype=np.float32)
    with stream:
        stream.begin_capture()
    a += 1  # the legacy stream; the capturing stream is non-blocking
    assert a.get().tolist() == [1, 1]
    with stream:
        stream.end_capture()
    blocking = cp.cuda.Stream()
    with blocking:
        blocking.begin_capture()
    with pytest.raises(cp.cuda.runtime.CUDARuntimeError, match="StreamCaptureImplicit"):
        a += 1
    with blocking, pytest.raises(cp.cuda.runtime.CUDARuntimeError, match="Invalidated"):
        blocking.end_capture()


def test_capture_on_the_legacy_stream_is_refused():
    with pytest.raises(RuntimeError, match="cannot capture on the default"):
        cp.cuda.Stream.null.begin_capture()
    with pytest.raises(NotImplementedError):
        cp.cuda.Graph()


def test_graph_memory_must_stay_owned(stream):
    x = cp.asarray(np.ones(4, dtype=np.float32))
    with stream:  # the default pool
        stream.begin_capture()
        tmp = x + 1
        out = tmp * 2
        graph = stream.end_capture()
    graph.launch()  # every array is still alive
    assert out.get().tolist() == [4, 4, 4, 4]
    del tmp  # its block goes back to the default pool: anybody may own it now
    with pytest.raises(capture.GraphMemoryError, match="default memory pool"):
        graph.launch()

    pool = cp.cuda.MemoryPool()
    with stream, cp.cuda.using_allocator(pool.malloc):
        stream.begin_capture()
        tmp = x + 1
        out = tmp * 2
        graph = stream.end_capture()
    del tmp  # freed into the private pool, which keeps it
    graph.launch()
    assert out.get().tolist() == [4, 4, 4, 4]
    pool.free_all_blocks()
    with pytest.raises(capture.GraphMemoryError, match="private memory pool"):
        graph.launch()


@pytest.mark.parametrize("product", [
    lambda a, b: a.dot(b), lambda a, b: a @ b, lambda a, b: cp.matmul(a, b),
    lambda a, b: cp.dot(a, b), lambda a, b: cp.tensordot(a, b, axes=1),
    lambda a, b: cp.einsum("ij,jk->ik", a, b)], ids=["dot", "@", "matmul", "cupy.dot",
                                                     "tensordot", "einsum"])
def test_cublas_products_are_refused_while_capturing(stream, product):
    # CuPy's cuBLAS wrappers refuse a capturing stream before any CUDA call: the capture is
    # still valid, and ends into a graph of the work issued before.
    a = cp.asarray(np.ones((3, 4), np.float32))
    b = cp.asarray(np.ones((4, 2), np.float32))
    assert product(a, b).shape == (3, 2)  # outside a capture: fine
    with stream:
        stream.begin_capture()
        y = a * 2
        with pytest.raises(NotImplementedError, match="cuBLAS API during stream capture"):
            product(a, b)
        graph = stream.end_capture()
    graph.launch()
    np.testing.assert_array_equal(y.get(), 2 * np.ones((3, 4), np.float32))


@pytest.mark.parametrize("join", ["concatenate", "stack", "hstack", "vstack"])
def test_joining_more_than_eight_arrays_during_a_capture_is_a_host_copy(stream, join):
    # CuPy's _concatenate_single_kernel (over 8 arrays of one dtype) uploads a pointer table
    parts = [cp.full(3, k, dtype=np.float32) for k in range(9)]
    fn = getattr(cp, join)
    with stream:
        stream.begin_capture()
        joined = fn(parts[:8])  # one copy per array: captured
        with pytest.raises(cp.cuda.runtime.CUDARuntimeError, match="pointers"):
            fn(parts)
        with pytest.raises(cp.cuda.runtime.CUDARuntimeError, match="Invalidated"):
            stream.end_capture()
    assert fn(parts).shape == getattr(np, join)([p.get() for p in parts]).shape
    assert joined.size == 24
