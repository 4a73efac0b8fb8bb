"""DLPack and the CUDA Array Interface: tensors share memory with NumPy, PyTorch and CuPy
arrays both ways, without a copy."""
import numpy as np
import pytest

import gradlab as gl
from tests.devices import REAL_GPU

# The CUDA cases run on a GPU (make gpu-check) and on the emulated device, whose CuPy stand-in
# models DLPack (tests/cuda_emulator/cupy_standin/dlpack.py; FIDELITY.md says what differs).


def test_numpy_reads_a_cpu_tensor_without_a_copy():
    t = gl.arange(6, dtype=gl.float32).reshape(2, 3)
    a = np.from_dlpack(t)
    assert t.__dlpack_device__() == (1, 0)
    a[0, 0] = 42  # the same memory
    assert t[0, 0].item() == 42 and a.shape == (2, 3) and a.dtype == np.float32


def test_from_dlpack_shares_numpy_memory():
    a = np.arange(4.0)
    t = gl.from_dlpack(a)
    a[1] = -1
    assert t.dtype == gl.float64 and t.tolist() == [0.0, -1.0, 2.0, 3.0]
    assert gl.utils.dlpack.from_dlpack(t) is t


def test_export_of_a_tensor_that_requires_grad_is_refused():
    w = gl.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="detach"):
        np.from_dlpack(w)
    assert np.from_dlpack(w.detach()).tolist() == [1.0, 1.0]


def test_bad_inputs_name_the_way():
    with pytest.raises(TypeError, match="gl.tensor"):
        gl.from_dlpack([1, 2])

    class OnOtherHardware:
        def __dlpack__(self, **kw):
            raise AssertionError("not reached")

        def __dlpack_device__(self):
            return (14, 0)  # kDLOneAPI

    with pytest.raises(ValueError, match="device type 14"):
        gl.from_dlpack(OnOtherHardware())


def test_cpu_tensor_has_no_cuda_array_interface():
    assert not hasattr(gl.ones(2), "__cuda_array_interface__")
    assert np.asarray(gl.ones(2)).tolist() == [1.0, 1.0]  # __array__ as before


_cuda = [pytest.mark.cuda, pytest.mark.skipif(not gl.cuda.is_available(),
                                              reason=gl.cuda.unavailable_reason())]


@_cuda[0]
@_cuda[1]
def test_cuda_array_interface_of_a_cuda_tensor():
    t = gl.arange(6, dtype=gl.float32, device="cuda").reshape(2, 3)
    cai = t.__cuda_array_interface__
    assert cai["shape"] == (2, 3) and cai["typestr"] == "<f4" and cai["version"] == 3
    assert cai == t._data.__cuda_array_interface__  # the same device memory


def test_torch_round_trip_without_a_copy():
    torch = pytest.importorskip("torch", reason="torch is not installed (optional)")
    tt = torch.arange(5, dtype=torch.float32)
    g = gl.from_dlpack(tt)
    tt[0] = 9
    assert g.tolist()[0] == 9.0
    back = torch.from_dlpack(g)
    g[1] = 7
    assert back[1].item() == 7.0


@_cuda[0]
@_cuda[1]
def test_cupy_reads_and_writes_a_cuda_tensor_without_a_copy():
    import cupy
    t = gl.arange(4, dtype=gl.float32, device="cuda")
    assert t.__dlpack_device__() == (2, 0)  # (kDLCUDA, device 0)
    c = cupy.from_dlpack(t)
    assert isinstance(c, cupy.ndarray) and c.data.ptr == t._data.data.ptr
    c[0] = 5                     # write through CuPy, read through gradlab
    assert t.tolist() == [5.0, 1.0, 2.0, 3.0]
    t.mul_(2)                    # and the other way
    assert c.tolist() == [10.0, 2.0, 4.0, 6.0]
    grid = gl.arange(6, dtype=gl.float64, device="cuda").reshape(2, 3)
    assert cupy.from_dlpack(grid.T).tolist() == [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]
    assert cupy.from_dlpack(grid[1]).tolist() == [3.0, 4.0, 5.0]  # a view at an offset


@_cuda[0]
@_cuda[1]
def test_gradlab_wraps_a_cupy_array_without_a_copy():
    import cupy
    c = cupy.arange(3, dtype=cupy.float64)
    g = gl.from_dlpack(c)
    assert g.device == gl.device("cuda:0") and g.dtype == gl.float64
    assert g._data.data.ptr == c.data.ptr
    c[1] = -1
    assert g.tolist() == [0.0, -1.0, 2.0]
    g[2] = 7.0
    assert c.tolist() == [0.0, -1.0, 7.0]
    w = gl.from_dlpack(c).requires_grad_()  # a leaf on the GPU that trains like any other
    (w * w).sum().backward()
    assert w.grad.device == g.device and w.grad.tolist() == [0.0, -2.0, 14.0]


@_cuda[0]
@_cuda[1]
def test_host_and_device_memory_are_not_mixed_up():
    import cupy
    # gradlab keeps an array where its producer has it: NumPy memory gives a CPU tensor.
    assert gl.from_dlpack(np.ones(2)).device == gl.device("cpu")
    # CuPy takes host memory only as a copy, as it documents (copy=None may not copy).
    with pytest.raises(BufferError):
        cupy.from_dlpack(gl.ones(2))
    assert cupy.from_dlpack(gl.ones(2), copy=True).tolist() == [1.0, 1.0]
    # NumPy can't read device memory: it refuses the CUDA capsule.
    with pytest.raises((RuntimeError, BufferError, TypeError)):
        np.from_dlpack(gl.ones(2, device="cuda"))
    with pytest.raises(RuntimeError, match="detach"):  # as on the CPU
        cupy.from_dlpack(gl.ones(2, device="cuda", requires_grad=True))
    t = gl.ones(2, device="cuda")
    assert np.from_dlpack(t.cpu()).tolist() == [1.0, 1.0]  # the way: copy to the host


@_cuda[0]
@_cuda[1]
def test_torch_and_gradlab_share_cuda_memory():
    torch = pytest.importorskip("torch", reason="torch is not installed (optional)")
    if not REAL_GPU or not torch.cuda.is_available():
        pytest.skip("needs torch with CUDA on a real GPU (make gpu-check); the emulated device "
                    "is gradlab's own")
    t = gl.arange(4, dtype=gl.float32, device="cuda")
    tt = torch.from_dlpack(t)
    assert tt.is_cuda and tt.data_ptr() == t._data.data.ptr
    tt[1] = 6
    assert t[1].item() == 6
    src = torch.arange(3, dtype=torch.float64, device="cuda")
    g = gl.from_dlpack(src)
    assert g.device.type == "cuda" and g._data.data.ptr == src.data_ptr()
    src[0] = -2
    assert g.tolist() == [-2.0, 1.0, 2.0]
