"""Picks and caches backends: the only module that decides CPU versus GPU.

``device="auto"`` (the default everywhere) means the ``GRADLAB_DEVICE`` environment
variable when set, else CUDA when CuPy imports and a GPU answers, else the CPU.
"""
from __future__ import annotations

import os
import threading

from . import generator
from .base import Device, RandomState
from .numpy_backend import NumpyBackend

_lock = threading.Lock()
_cpu = NumpyBackend()
_cuda_backends: dict[int, object] = {}
_cuda_status: tuple[bool, str] | None = None


class DeviceUnavailableError(RuntimeError):
    """Raised when a device is asked for that this machine cannot provide."""


def cuda_status() -> tuple[bool, str]:
    """(available, reason). Never raises; the reason says what is missing and how to fix it."""
    global _cuda_status
    if _cuda_status is not None:
        return _cuda_status
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken install raising anything
        status = (False, "CuPy is not installed (" + f"{type(exc).__name__}: {exc}"[:200] +
                  "); install it with `pip install gradlab[cuda13]` (CUDA 13 driver) or "
                  "`pip install gradlab[cuda12]` (CUDA 12 driver)")
    else:
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}"
            if "Insufficient" in text or "driver" in text.lower():
                why = ("no usable NVIDIA driver was found (" + text[:200] + "); install an "
                       "NVIDIA driver that supports this CuPy build, or run on the CPU with "
                       "device='cpu'")
            else:
                why = ("CuPy could not query the GPU (" + text[:200] + "); check the driver "
                       "and CUDA_VISIBLE_DEVICES, or run on the CPU with device='cpu'")
            status = (False, why)
        else:
            if count == 0:
                status = (False, "the NVIDIA driver reports no GPU (is CUDA_VISIBLE_DEVICES "
                                 "empty?); run on the CPU with device='cpu'")
            else:
                status = (True, f"{count} CUDA device(s) visible")
    _cuda_status = status
    return status


def default_device() -> Device:
    spec = os.environ.get("GRADLAB_DEVICE", "").strip() or "auto"
    if spec == "auto":
        return Device("cuda") if cuda_status()[0] else Device("cpu")
    try:
        return Device(spec)
    except ValueError as exc:
        raise ValueError(f"GRADLAB_DEVICE={spec!r} is not a device: {exc}") from None


def resolve_device(spec=None) -> Device:
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "auto"):
        return default_device()
    return Device(spec)


def get_backend(device=None):
    """The backend for ``device`` ('cpu', 'cuda', 'cuda:N', 'auto', a Device or None)."""
    if device is _cpu.device or device == "cpu":
        return _cpu
    dev = resolve_device(device)
    if dev.type == "cpu":
        return _cpu
    backend = _cuda_backends.get(dev.index)
    if backend is not None:
        return backend
    ok, why = cuda_status()
    if not ok:
        raise DeviceUnavailableError(f"device '{dev}' was asked for but CUDA is unavailable: {why}")
    with _lock:
        backend = _cuda_backends.get(dev.index)
        if backend is None:
            import cupy
            count = cupy.cuda.runtime.getDeviceCount()
            if dev.index >= count:
                raise DeviceUnavailableError(
                    f"device '{dev}' does not exist: this machine has {count} CUDA device(s) "
                    f"(cuda:0 .. cuda:{count - 1})")
            from .cupy_backend import CupyBackend
            backend = CupyBackend(dev.index)
            backend.random.reseed(_cpu.random.seed)
            _cuda_backends[dev.index] = backend
    return backend


def cpu_backend():
    return _cpu


def loaded_backends():
    return [_cpu, *_cuda_backends.values()]


def random_restarts():
    """How often, so far, a random stream this thread draws from was reseeded or had its
    state set (every backend's, and every gl.Generator's): a count to compare, not to read."""
    return sum(b.random.restarts for b in loaded_backends()) + generator.restarts[0]


def manual_seed(seed: int):
    """Seed every backend's generators (this thread's, and the default for new threads)."""
    if not isinstance(seed, (int,)) or isinstance(seed, bool):
        raise TypeError(f"manual_seed expects an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"manual_seed expects a non-negative seed, got {seed}")
    RandomState.default_seed = seed
    for backend in loaded_backends():
        backend.random.reseed(seed)
