"""The CUDA backend: arrays are CuPy arrays on one device.

Only imported once ``registry.cuda_status()`` has found CuPy, a driver and a device.
"""
from __future__ import annotations

import cupy
import cupyx

from .base import Backend, Device


class CupyBackend(Backend):
    name = "cupy"
    xp = cupy
    ndarray = cupy.ndarray

    def __init__(self, index=0):
        self._cuda_device = cupy.cuda.Device(index)
        super().__init__(Device("cuda", index))

    def _make_generator(self, seed):
        with self._cuda_device:
            return cupy.random.default_rng(seed)

    def asarray(self, data, dtype=None):
        with self._cuda_device:
            return cupy.asarray(data, dtype=dtype)

    def to_numpy(self, array):
        return cupy.asnumpy(array)

    def scatter_add(self, target, index, values):
        cupyx.scatter_add(target, index, values)

    def synchronize(self):
        self._cuda_device.synchronize()


__all__ = ["CupyBackend"]
