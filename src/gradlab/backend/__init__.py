"""Backend layer: the only place that knows whether arrays live on the CPU or a GPU."""
from .base import Backend, Device, RandomState
from .cuda_kernels import KernelCompileError, kernel_dir, kernel_report
from .determinism import are_deterministic_algorithms_enabled, use_deterministic_algorithms
from .registry import (
                       DeviceUnavailableError,
                       cpu_backend,
                       cuda_status,
                       default_device,
                       get_backend,
                       loaded_backends,
                       manual_seed,
                       resolve_device,
)

__all__ = ["Backend", "Device", "RandomState", "DeviceUnavailableError", "cpu_backend",
           "cuda_status", "default_device", "get_backend", "loaded_backends", "manual_seed",
           "resolve_device", "KernelCompileError", "kernel_dir", "kernel_report",
           "use_deterministic_algorithms", "are_deterministic_algorithms_enabled"]
