"""DLPack on the emulated device: ``cupy.ndarray.__dlpack__`` / ``__dlpack_device__`` and
``cupy.from_dlpack``, as CuPy documents them ("cupy.from_dlpack", "Interoperability":
zero-copy exchange with any DLPack producer or consumer).

Emulation: the capsule is NumPy's own DLPack capsule of the host buffer that plays the device
memory, with the DLTensor's device rewritten to (kDLCUDA, 0) through the DLPack C ABI
(dlpack.h: ``DLManagedTensor`` starts with its ``DLTensor``, ``DLManagedTensorVersioned`` has
it after version, manager_ctx, deleter and flags), so a consumer receives the very address
the emulated kernels use, and a host-only consumer (``numpy.from_dlpack``) refuses it as it
refuses a GPU capsule. ``cupy.from_dlpack`` here sets the device back to kDLCPU just before
NumPy builds the view, and checks that the address lies in a live emulated allocation, so
host memory passed off as device memory is refused. FIDELITY.md lists what differs.
"""
from __future__ import annotations

import ctypes

import numpy as np

from . import memory

kDLCPU, kDLCUDA, kDLCUDAHost, kDLCUDAManaged = 1, 2, 3, 13


_api = ctypes.pythonapi
_api.PyCapsule_GetName.restype = ctypes.c_char_p
_api.PyCapsule_GetName.argtypes = [ctypes.py_object]
_api.PyCapsule_GetPointer.restype = ctypes.c_void_p
_api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
# Offset of DLTensor.device in the managed tensor: DLTensor first (data pointer, then device),
# or, versioned, after DLPackVersion (8 bytes), manager_ctx, deleter and flags (8 each).
_DEVICE_AT = {b"dltensor": 8, b"dltensor_versioned": 32 + 8}


def _device_field(capsule):
    name = _api.PyCapsule_GetName(capsule)
    if name not in _DEVICE_AT:
        raise ValueError(f"cupy.from_dlpack: not an unconsumed DLPack capsule (name {name!r})")
    return (ctypes.c_int32 * 2).from_address(_api.PyCapsule_GetPointer(capsule, name) +
                                             _DEVICE_AT[name])


def check_stream(stream):
    """The ``stream`` argument of ``__dlpack__`` on CUDA (Python array API, "__dlpack__":
    None or 1 legacy default stream, 2 per-thread default, -1 no synchronisation, > 2 a
    stream pointer; 0 is ambiguous and disallowed)."""
    if stream is None:
        return
    if not isinstance(stream, int) or isinstance(stream, bool):
        raise TypeError(f"stream must be an int (a CUDA stream pointer) or None, got "
                        f"{type(stream).__name__}")
    if stream == 0 or stream < -1:
        raise ValueError(f"stream={stream} is not a valid CUDA stream for DLPack (0 is "
                         "disallowed for its ambiguity; use 1 for the legacy default stream)")


def export(array, stream=None, max_version=None, dl_device=None, copy=None):
    """``ndarray.__dlpack__``: a capsule sharing the device memory (no copy, no sync: every
    launch on the emulated device has finished when its call returns)."""
    check_stream(stream)
    if dl_device is not None:
        kind, index = dl_device
        if kind == kDLCPU:
            # To the host only as a copy (device memory is not host-accessible on a GPU).
            if not copy:
                raise BufferError("cupy.ndarray.__dlpack__: device memory can't be exported to "
                                  "the CPU without a copy; pass copy=True")
            return array.get().__dlpack__(max_version=max_version)
        if (kind, index) != (kDLCUDA, 0):
            raise BufferError(f"cupy.ndarray.__dlpack__: can't export to DLPack device "
                              f"{tuple(dl_device)}; the array is on (kDLCUDA=2, 0)")
    if copy:
        raise NotImplementedError("the CuPy stand-in does not export copies through DLPack "
                                  "(copy=True); copy first with a.copy()")
    kwargs = {} if max_version is None else {"max_version": max_version}
    capsule = array._a.__dlpack__(**kwargs)
    device = _device_field(capsule)
    device[0], device[1] = kDLCUDA, 0
    return capsule


class _Capsule:
    """Feeds one capsule to numpy.from_dlpack, which wants an exporter object."""

    def __init__(self, capsule):
        self.capsule = capsule

    def __dlpack__(self, **kwargs):
        return self.capsule

    def __dlpack_device__(self):
        return (kDLCPU, 0)


def _device_view(capsule, what):
    from ._core import ndarray
    device = _device_field(capsule)
    if (device[0], device[1]) not in ((kDLCUDA, 0), (kDLCUDAManaged, 0)):
        raise BufferError(f"cupy.from_dlpack: {what} holds memory on DLPack device "
                          f"({device[0]}, {device[1]}), not on this GPU (kDLCUDA=2, 0)")
    device[0], device[1] = kDLCPU, 0  # for NumPy, which builds the view of the buffer
    host = np.from_dlpack(_Capsule(capsule))  # shape, dtype, strides, address
    ptr = host.__array_interface__["data"][0]
    lo = ptr + sum((n - 1) * st for n, st in zip(host.shape, host.strides) if st < 0)
    hi = ptr + sum((n - 1) * st for n, st in zip(host.shape, host.strides) if st > 0)
    for alloc in memory.live_allocations():
        if alloc.contains(lo) and alloc.contains(hi + host.itemsize if host.size else hi):
            # The view on the allocation's own buffer (NumPy marks arrays from legacy
            # capsules read-only; device memory is writable).
            base = alloc.raw.__array_interface__["data"][0]
            a = np.ndarray(host.shape, host.dtype, buffer=alloc.raw, offset=ptr - base,
                           strides=host.strides)
            return ndarray._view(a, alloc)
    raise ValueError(f"cupy.from_dlpack: {what} reports a CUDA device but its memory "
                     f"(0x{ptr:x}) is not device memory of the emulated GPU")


def from_dlpack(array, *, device=None, copy=None):
    """``cupy.from_dlpack``: a device array sharing the producer's memory (CUDA producers),
    a copy for a host producer when ``copy=True``; a raw capsule is accepted too."""
    if device is not None and tuple(device) != (kDLCUDA, 0):
        raise ValueError(f"cupy.from_dlpack: device {tuple(device)} is not this GPU "
                         "(kDLCUDA=2, 0)")
    if not hasattr(array, "__dlpack_device__"):
        # A PyCapsule, for backward compatibility (CuPy's note on from_dlpack).
        return _device_view(array, "the capsule")
    kind, index = array.__dlpack_device__()
    if kind in (kDLCUDA, kDLCUDAManaged):
        if int(index) != 0:
            raise ValueError(f"cupy.from_dlpack: the array is on CUDA device {index}; the "
                             "emulated machine has device 0 only")
        # CuPy hands the producer its current stream (the legacy default one here).
        try:
            capsule = array.__dlpack__(stream=1, max_version=(1, 0))
        except TypeError:  # a producer from before DLPack 1.0 (no max_version)
            capsule = array.__dlpack__(stream=1)
        view = _device_view(capsule, type(array).__name__)
        return view.copy() if copy else view
    if kind in (kDLCPU, kDLCUDAHost):
        if not copy:
            raise BufferError(f"cupy.from_dlpack: the {type(array).__name__} is in host "
                              "memory (DLPack device type 1); CuPy imports it only as a copy: "
                              "pass copy=True, or use cupy.asarray")
        from ._core import ndarray
        return ndarray._copy(np.ascontiguousarray(np.from_dlpack(array)))
    raise BufferError(f"cupy.from_dlpack: DLPack device type {kind} is not supported")
