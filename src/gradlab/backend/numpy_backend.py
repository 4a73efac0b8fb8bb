"""The CPU backend: arrays are NumPy arrays."""
from __future__ import annotations

import numpy as np

from . import cpu_jit, cpu_jit_dropout, cpu_jit_softmax_ce, reference
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

    # Fused kernel entry points. Optimizer steps use the one-pass numba kernels when numba
    # is installed (cpu_jit.py), else the NumPy references (reference.py: the formulas).
    _optim = cpu_jit if cpu_jit.AVAILABLE else reference
    sgd_step = staticmethod(_optim.sgd_step)
    adam_step = staticmethod(_optim.adam_step)
    rmsprop_step = staticmethod(_optim.rmsprop_step)
    adagrad_step = staticmethod(_optim.adagrad_step)
    adadelta_step = staticmethod(_optim.adadelta_step)
    # Dropout: one-pass numba kernels (cpu_jit_dropout.py), bitwise equal to the reference.
    _dropout = cpu_jit_dropout if cpu_jit_dropout.AVAILABLE else reference
    dropout_forward = staticmethod(_dropout.dropout_forward)
    dropout_backward = staticmethod(_dropout.dropout_backward)
    # Softmax-CE: a one-pass numba kernel for narrow rows (to rounding; cpu_jit_softmax_ce.py).
    _softmax_ce = cpu_jit_softmax_ce if cpu_jit_softmax_ce.AVAILABLE else reference
    softmax_cross_entropy = staticmethod(_softmax_ce.softmax_cross_entropy)
