"""The CuPy stand-in itself: each strict rule raises as CuPy does, and the memory checks
(poison, guard bytes) and kernel-argument checks catch what they are for.

The stand-in is imported directly (not through ``import cupy``), so these tests also run on a
machine with a real GPU; they need g++ for the kernels, and GRADLAB_EMULATE_CUDA=0 skips them."""
import numpy as np
import pytest

from cuda_emulator import cupy_standin as cp
from cuda_emulator.cupy_standin import cupyx, install, memory

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(install.why_not() is not None, reason=str(install.why_not()))]

NP_ARRAY = r"Unsupported type <class 'numpy\.ndarray'>"


@pytest.fixture
def d():
    return cp.asarray(np.arange(6, dtype=np.float32).reshape(2, 3))


# -- device arrays are not host arrays ----------------------------------------------------------
def test_device_array_is_its_own_type_and_numpy_cannot_read_it(d):
    assert isinstance(d, cp.ndarray) and not isinstance(d, np.ndarray)
    for convert in (np.asarray, np.array, lambda a: np.float32(1) * np.ones(2) + np.asarray(a)):
        with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not "
                                            r"allowed\. Please use `\.get\(\)`"):
            convert(d)
    with pytest.raises(TypeError):
        memoryview(d)
    assert not hasattr(d, "__array_interface__") and not hasattr(d, "ctypes")


def test_host_arrays_are_rejected_by_device_functions_and_operators(d):
    host = np.ones(3, np.float32)
    for call in (lambda: cp.add(d, host), lambda: d + host, lambda: host + d,
                 lambda: d * host, lambda: cp.where(host > 0, d, 0.0),
                 lambda: cp.maximum(d, host), lambda: cp.concatenate([d[0], host])):
        with pytest.raises(TypeError, match=NP_ARRAY):
            call()
    with pytest.raises(TypeError, match=r"Unsupported type <class 'list'>"):
        cp.add(d, [1.0, 2.0, 3.0])
    # Scalars (Python and NumPy) are fine, and keep NumPy's promotion rules.
    assert (d + np.float32(1)).dtype == np.float32 and (d * 2).dtype == np.float32
    assert (d + np.float64(1)).dtype == np.float64
    np.testing.assert_array_equal((2 * d + 1).get(), 2 * d.get() + 1)


def test_numpy_functions_dispatch_to_the_device(d):
    e = np.exp(d)  # NEP 13
    assert type(e) is cp.ndarray
    np.testing.assert_allclose(e.get(), np.exp(d.get()))
    s = np.sum(d, axis=0)  # NEP 18
    assert type(s) is cp.ndarray and s.get().tolist() == [3.0, 5.0, 7.0]
    with pytest.raises(TypeError):  # CuPy handles ufunc.__call__ only
        np.add.reduce(d)


def test_copy_in_and_out(d):
    host = np.arange(3.0)
    dev = cp.asarray(host)
    host[0] = 42  # asarray copied
    assert dev.get()[0] == 0
    out = dev.get()
    out[1] = 42  # get() copies
    assert dev.get()[1] == 1 and cp.asnumpy(dev) is not out
    assert cp.asarray(dev) is dev and cp.asnumpy(dev).tolist() == [0.0, 1.0, 2.0]


# -- reductions and indexing give device values ------------------------------------------------
def test_reductions_and_scalar_indexing_return_0d_device_arrays(d):
    for value in (d.sum(), cp.max(d), d.mean(), d.argmax(), d[1, 2], d[0][1], (d > 2).any()):
        assert type(value) is cp.ndarray and value.shape == ()
    assert float(d.sum()) == 15.0 and int(cp.max(d)) == 5 and bool((d > 4).any())
    assert d[1, 2].item() == 5.0 and d.tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(ValueError, match="more than one element is ambiguous"):
        bool(d)
    with pytest.raises(TypeError):  # cupy.ndarray has no __index__
        list(range(3))[d[0, 1].astype(np.int64)]


def test_views_share_memory_and_in_place_ops_stay_in_place(d):
    ptr = d.data.ptr
    row = d[1]
    assert row.data.ptr == ptr + 12 and row.base is d
    row[...] = 7  # writes through the view
    assert d.get()[1].tolist() == [7, 7, 7]
    flat = d.reshape(-1)
    assert flat.base is d and flat.flags.c_contiguous and not flat.flags.owndata
    d += 1
    d[0, 0] = -1
    assert d.data.ptr == ptr and d.get()[0].tolist() == [-1, 2, 3]
    assert not d.T.flags.c_contiguous and d.T.strides == (4, 12)
    assert (d.T * 2).strides == (4, 12)  # elementwise results keep the layout (order K)
    assert d.nbytes == 24 and d.__cuda_array_interface__["data"][0] == ptr



def test_dlpack_shares_device_memory_and_says_cuda(d):
    assert d.__dlpack_device__() == (2, 0)  # (kDLCUDA, device 0)
    e = cp.from_dlpack(d)
    assert type(e) is cp.ndarray and e.data.ptr == d.data.ptr and e.shape == (2, 3)
    e[0, 0] = 42  # the same memory: writes go both ways
    assert d.get()[0, 0] == 42
    assert cp.from_dlpack(d.T).tolist() == d.get().T.tolist()
    assert cp.from_dlpack(d[1]).data.ptr == d.data.ptr + 12
    assert cp.from_dlpack(d, copy=True).data.ptr != d.data.ptr
    capsule = d.__dlpack__(stream=1)  # a raw capsule is accepted (CuPy's backward compat)
    assert cp.from_dlpack(capsule).data.ptr == d.data.ptr
    with pytest.raises(ValueError, match="not an unconsumed DLPack capsule"):
        cp.from_dlpack(capsule)  # consumed
    # The capsule's DLTensor says CUDA, so a host-only consumer refuses it, as with CuPy.
    with pytest.raises(RuntimeError, match="Unsupported device in DLTensor"):
        np.from_dlpack(d)


def test_dlpack_arguments_follow_the_array_api(d):
    for bad, err in ((0, ValueError), (-2, ValueError), ("1", TypeError)):
        with pytest.raises(err, match="stream"):
            d.__dlpack__(stream=bad)
    for ok in (None, -1, 1, 2, 12345):
        assert type(d.__dlpack__(stream=ok)).__name__ == "PyCapsule"
    with pytest.raises(BufferError, match="without a copy; pass copy=True"):
        d.__dlpack__(dl_device=(1, 0))
    host = d.__dlpack__(dl_device=(1, 0), copy=True)
    assert type(host).__name__ == "PyCapsule"
    with pytest.raises(BufferError, match=r"DLPack device \(2, 1\)"):
        d.__dlpack__(dl_device=(2, 1))
    with pytest.raises(BufferError, match="host memory.*copy=True"):
        cp.from_dlpack(np.arange(3.0))
    assert cp.from_dlpack(np.arange(3.0), copy=True).tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(ValueError, match=r"device \(2, 1\) is not this GPU"):
        cp.from_dlpack(d, device=(2, 1))


def test_dlpack_refuses_host_memory_that_claims_to_be_on_the_gpu():
    class Liar:  # says CUDA, hands over a host buffer
        def __init__(self):
            self.a = np.arange(3.0)

        def __dlpack_device__(self):
            return (2, 0)

        def __dlpack__(self, stream=None, max_version=None):
            capsule = self.a.__dlpack__(max_version=max_version)
            from cuda_emulator.cupy_standin import dlpack
            device = dlpack._device_field(capsule)
            device[0] = 2
            return capsule

    with pytest.raises(ValueError, match="not device memory of the emulated GPU"):
        cp.from_dlpack(Liar())
    with pytest.raises(BufferError, match=r"DLPack device \(1, 0\), not on this GPU"):
        cp.from_dlpack(np.arange(3.0).__dlpack__())  # a host capsule

def test_assigning_host_data(d):
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray cannot be used for fill"):
        d[0] = np.zeros(3, np.float32)
    d[0] = np.float32(3)  # scalars are fine
    d[cp.asarray([1])] = np.full((1, 3), 9, np.float32)  # advanced index: copied in
    assert d.get().tolist() == [[3, 3, 3], [9, 9, 9]]
    d.set(np.ones((2, 3), np.float32))
    assert float(d.sum()) == 6


def test_integer_array_indices_wrap_around_as_in_cupy():
    a = cp.asarray(np.array([10, 20, 30]))
    assert a[cp.asarray([3, -4, 1])].tolist() == [10, 30, 20]
    a[[4]] = 0
    assert a.tolist() == [10, 0, 30]
    with pytest.raises(IndexError):  # a scalar index out of range is an error
        a[3]


# -- memory: poison and guards ------------------------------------------------------------------
def test_empty_memory_is_poisoned():
    assert np.isnan(cp.empty((3, 4), dtype=np.float32).get()).all()
    assert np.isnan(cp.empty_like(cp.zeros(5)).get()).all()
    assert (cp.empty(4, dtype=np.int32).get() == -1).all()
    assert (cp.zeros(4).get() == 0).all()


OOB = r'''
extern "C" __global__ void write_one_past(float* x, long long n, long long shift) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) x[i + shift] = 1.0f;  // off by one: i == n writes past the end
}
'''


def test_guard_bytes_catch_a_kernel_writing_out_of_bounds():
    fn = cp.RawModule(code=OOB, options=("--std=c++17",)).get_function("write_one_past")
    x = cp.zeros(5, dtype=cp.float32)
    with pytest.raises(memory.GuardError, match=r"write_one_past.*float32 array of shape "
                                                r"\(5,\).*up to 4 byte\(s\) past the end"):
        fn((1,), (32,), (x, np.int64(5), np.int64(0)))
    y = cp.zeros(5, dtype=cp.float32)
    with pytest.raises(memory.GuardError, match=r"up to 4 byte\(s\) before the start"):
        fn((1,), (32,), (y, np.int64(0), np.int64(-1)))
    # Reported once: the guards are restored, so the next clean launch passes.
    fn((1,), (32,), (y, np.int64(3), np.int64(0)))
    assert y.get().tolist() == [1, 1, 1, 1, 0]


# -- kernel arguments ---------------------------------------------------------------------------
AXPY = r'''
extern "C" __global__ void axpy(const float* x, float* y, float a, int n, const float* w) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
        y[i] = a * x[i] * (w == nullptr ? 1.0f : w[i]) + y[i];
}
'''


@pytest.fixture(scope="module")
def axpy():
    return cp.RawModule(code=AXPY, options=("--std=c++17",)).get_function("axpy")


def test_correct_arguments_launch_and_null_pointers_pass(axpy):
    x, y = cp.asarray(np.arange(5, dtype=np.float32)), cp.ones(5, dtype=cp.float32)
    axpy((2,), (2,), (x, y, np.float32(2), np.int32(5), np.uint64(0)))  # grid < work: wraps
    assert y.get().tolist() == [1, 3, 5, 7, 9]
    axpy((1,), (32,), (x, y, np.float32(1), np.int32(5), None))  # None is NULL, as in CuPy
    assert y.get().tolist() == [1, 4, 7, 10, 13]
    axpy((1,), (32,), [x, y, np.float32(1), np.int32(5), x])
    assert y.get().tolist() == [1, 5, 11, 19, 29]


@pytest.mark.parametrize("position, bad, message", [
    (2, 2.0, r"argument 2 'a' \(float\).*a Python float, which CuPy passes as an 8-byte "
             r"double.*pass numpy\.float32\(x\)"),
    (2, np.float64(2), r"argument 2 'a' \(float\).*numpy\.float64.*numpy\.float32\(x\)"),
    (3, 5, r"argument 3 'n' \(int\).*a Python int, which CuPy passes as an 8-byte int64.*"
           r"pass numpy\.int32\(x\)"),
    (3, True, r"argument 3 'n' \(int\).*a Python bool"),
    (0, "f64", r"argument 0 'x' \(const float ?\*\).*float64 device array.*pass a float32 "
               r"array"),
    (0, "host", NP_ARRAY + r" for argument 0 'x' \(const float ?\*\).*cupy\.asarray"),
    (0, "strided", r"argument 0 'x'.*non-contiguous view.*cupy\.ascontiguousarray"),
    (0, np.int64(8), r"argument 0 'x'.*a pointer parameter takes a device array"),
    (3, None, r"argument 3 'n' \(int\).*got None"),
    (1, [1.0], r"Unsupported type <class 'list'> for argument 1 'y'"),
])
def test_argument_mismatches_name_the_argument_and_the_fix(axpy, position, bad, message):
    x, y = cp.asarray(np.arange(5, dtype=np.float32)), cp.ones(5, dtype=cp.float32)
    bad = {"f64": cp.zeros(5), "host": np.zeros(5, np.float32),
           "strided": cp.zeros(10, dtype=cp.float32)[::2]}.get(bad, bad) \
        if isinstance(bad, str) else bad
    args = [x, y, np.float32(2), np.int32(5), None]
    args[position] = bad
    with pytest.raises(TypeError, match=message):
        axpy((1,), (32,), tuple(args))
    assert y.get().tolist() == [1] * 5  # nothing ran


def test_launch_shape_and_argument_count(axpy):
    x, y = cp.zeros(5, dtype=cp.float32), cp.zeros(5, dtype=cp.float32)
    with pytest.raises(TypeError, match="Argument 'grid' has incorrect type"):
        axpy(1, (32,), (x, y, np.float32(1), np.int32(5), None))
    with pytest.raises(TypeError, match=r"takes 5 arguments .*got 4"):
        axpy((1,), (32,), (x, y, np.float32(1), np.int32(5)))
    with pytest.raises(cp.cuda.driver.CUDADriverError, match="INVALID_VALUE"):
        axpy((1,), (2048,), (x, y, np.float32(1), np.int32(5), None))
    with pytest.raises(cp.cuda.driver.CUDADriverError, match="named symbol not found"):
        cp.RawModule(code=AXPY).get_function("nope")
    with pytest.raises(cp.cuda.CompileException):
        cp.RawModule(code="this is not C++").compile()


def test_a_module_from_a_file_runs_the_source_beside_it(tmp_path):
    # RawModule(path=...) loads PTX on a GPU; the emulator runs the source it came from.
    ptx = tmp_path / "axpy.ptx"
    missing = cp.RawModule(path=str(ptx))  # as CuPy: the file is loaded at first use
    with pytest.raises(cp.cuda.driver.CUDADriverError, match="FILE_NOT_FOUND"):
        missing.get_function("axpy")
    ptx.write_text("// PTX the emulator cannot run\n")
    with pytest.raises(NotImplementedError, match=r"needs the source .*\(axpy\.cu\)"):
        cp.RawModule(path=str(ptx)).compile()
    ptx.with_suffix(".cu").write_text(AXPY)
    axpy = cp.RawModule(path=str(ptx)).get_function("axpy")
    x, y = cp.asarray(np.ones(5, np.float32)), cp.zeros(5, dtype=cp.float32)
    axpy((1,), (32,), (x, y, np.float32(2), np.int32(5), None))
    assert y.get().tolist() == [2.0] * 5


# -- the rest of the CuPy surface gradlab uses ---------------------------------------------------
def test_random_generator_has_cupys_methods_and_its_own_streams():
    g = cp.random.default_rng(0)
    x = g.standard_normal((1000,), dtype=np.float32)
    assert type(x) is cp.ndarray and x.dtype == np.float32
    assert not np.array_equal(cp.random.default_rng(0).random(5).get(),
                              np.random.default_rng(0).random(5))
    assert np.array_equal(cp.random.default_rng(3).random(5).get(),
                          cp.random.default_rng(3).random(5).get())
    for missing in ("normal", "permutation", "choice", "shuffle"):
        assert not hasattr(g, missing)
    assert callable(g.bit_generator.state) and isinstance(g.bit_generator.state(), int)
    assert type(g.integers(0, 10, size=None)) is cp.ndarray


def test_device_runtime_and_streams():
    assert cp.cuda.runtime.getDeviceCount() == 1
    assert cp.cuda.runtime.getDeviceProperties(0)["name"] == b"gradlab emulated CUDA device"
    with cp.cuda.Device(0) as dev:
        assert dev.id == 0 and dev.attributes["MultiProcessorCount"] == 2
        dev.synchronize()
    with pytest.raises(cp.cuda.runtime.CUDARuntimeError, match="invalid device ordinal"):
        with cp.cuda.Device(1):
            pass
    start, end = cp.cuda.Event(), cp.cuda.Event()
    with cp.cuda.Stream() as s:
        start.record(s)
        end.record(s)
        assert cp.cuda.get_current_stream() is s
    assert cp.cuda.get_elapsed_time(start, end) >= 0


def test_scatter_add_accumulates_repeated_indices():
    t = cp.zeros(3)
    cupyx.scatter_add(t, cp.asarray([0, 0, 2, 0]), cp.asarray([1.0, 2.0, 3.0, 4.0]))
    assert t.tolist() == [7.0, 0.0, 3.0]
    with pytest.raises(TypeError, match="scatter_add only supports"):
        cupyx.scatter_add(cp.zeros(3, dtype=cp.int64), cp.asarray([0]), 1)


def test_only_cupys_names_exist():
    assert cp.linalg.qr and cp.take_along_axis and cp.float32 is np.float32
    for name in ("busday_count", "nditer", "not_a_function"):
        with pytest.raises(AttributeError):
            getattr(cp, name)
    with pytest.raises(AttributeError):
        cp.zeros(2).ctypes  # noqa: B018
    assert cp.argsort(cp.asarray([1, 0, 1, 0])).tolist() == [1, 3, 0, 2]  # stable


# -- gradlab code paths the stand-in caught -----------------------------------------------------
def test_gradlab_random_ops_on_cuda_use_only_cupys_generator_methods():
    import gradlab as gl
    if not gl.cuda.is_available():
        pytest.skip(f"no CUDA device: {gl.cuda.unavailable_reason()}")
    perm = gl.randperm(50, device="cuda")  # CuPy's Generator has no permutation()
    assert perm.device.type == "cuda" and sorted(perm.tolist()) == list(range(50))
    x = gl.empty(20000, device="cuda").normal_(2.0, 0.5)  # ... and no normal()
    assert abs(x.mean().item() - 2.0) < 0.02 and abs(x.std().item() - 0.5) < 0.02
