"""Backend layer: the only place that knows whether arrays live on the CPU or a GPU."""
from .base import Backend, Device, RandomState
from .registry import (DeviceUnavailableError, cpu_backend, cuda_status, default_device,
                       get_backend, loaded_backends, manual_seed, resolve_device)

__all__ = ["Backend", "Device", "RandomState", "DeviceUnavailableError", "cpu_backend",
           "cuda_status", "default_device", "get_backend", "loaded_backends", "manual_seed",
           "resolve_device"]
