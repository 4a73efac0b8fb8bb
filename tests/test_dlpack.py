"""DLPack and the CUDA Array Interface: tensors share memory with NumPy, PyTorch and CuPy
arrays both ways, without a copy."""
import numpy as np
import pytest

import gradlab as gl
from tests.devices import EMULATED

# The CuPy stand-in does not model DLPack (no __dlpack__ on its arrays, no cupy.from_dlpack),
# so the CUDA DLPack cases need a real GPU; __cuda_array_interface__ is modelled.
_needs_real_dlpack = pytest.mark.skipif(
    EMULATED, reason="the emulated CUDA device's CuPy stand-in has no DLPack; runs on a GPU "
                     "(make gpu-check)")


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
@_needs_real_dlpack
def test_cupy_and_torch_on_the_gpu():
    import cupy
    t = gl.arange(4, dtype=gl.float32, device="cuda")
    c = cupy.from_dlpack(t)
    c[0] = 5
    assert t.__dlpack_device__()[0] == 2 and t[0].item() == 5
    g = gl.from_dlpack(cupy.arange(3, dtype=cupy.float64))
    assert g.device.type == "cuda" and g.tolist() == [0.0, 1.0, 2.0]
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        tt = torch.from_dlpack(t)
        tt[1] = 6
        assert t[1].item() == 6
