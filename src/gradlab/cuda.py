"""``gl.cuda``: is a GPU usable here, and small helpers around it."""
from __future__ import annotations

from .backend import cuda_status, get_backend, loaded_backends


def is_available() -> bool:
    """True when CuPy imports and a CUDA device answers. Never raises."""
    return cuda_status()[0]


def unavailable_reason() -> str:
    """Why CUDA can't be used here (or a short description of what is available)."""
    return cuda_status()[1]


def device_count() -> int:
    if not is_available():
        return 0
    import cupy
    return cupy.cuda.runtime.getDeviceCount()


def synchronize(device="cuda"):
    """Wait for all queued work on ``device``."""
    get_backend(device).synchronize()


def manual_seed(seed: int):
    """Seed the generators of the CUDA backends already in use (no-op without a GPU, as in
    PyTorch)."""
    for backend in loaded_backends():
        if backend.device.type == "cuda":
            backend.random.reseed(seed)


# gradlab has one generator per CUDA backend, all of which manual_seed reaches.
manual_seed_all = manual_seed


def current_device() -> int:
    if not is_available():
        raise RuntimeError(f"gl.cuda.current_device(): no CUDA device ({unavailable_reason()})")
    import cupy
    return cupy.cuda.runtime.getDevice()
