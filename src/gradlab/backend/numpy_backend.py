"""The CPU backend: arrays are NumPy arrays."""
from __future__ import annotations

import numpy as np

from .base import Backend, Device


class NumpyBackend(Backend):
    name = "numpy"
    xp = np
    ndarray = np.ndarray

    def __init__(self):
        super().__init__(Device("cpu"))

    def _make_generator(self, seed):
        return np.random.Generator(np.random.PCG64(seed))

    def asarray(self, data, dtype=None):
        if hasattr(data, "__cuda_array_interface__"):
            data = data.get()
        return np.asarray(data, dtype=dtype)

    def to_numpy(self, array):
        return array

    def scatter_add(self, target, index, values):
        np.add.at(target, index, values)
