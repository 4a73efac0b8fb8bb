"""The CPU backend: arrays are NumPy arrays."""
from __future__ import annotations

import warnings

import numpy as np

from .base import Backend, Device

# NumPy reports the floating-point events of an array call (log(0), 0/0, an overflow) as
# RuntimeWarnings; PyTorch, whose API gradlab follows, returns the inf or NaN silently, and
# so does CuPy. Those that gradlab's own array calls raise are ignored: the filter matches
# NumPy's message and a warning raised from a gradlab module (or a compiled step's replay,
# whose code is gradlab.autograd.tape's), so the user's own NumPy code and gradlab's own
# warnings are untouched, and it costs nothing while no warning is raised. It is appended:
# every filter the user has set or sets later (``-W error``, ``simplefilter("error")``)
# comes first.
NUMPY_FLOAT_EVENTS = r"(divide by zero|invalid value|overflow|underflow) encountered"
warnings.filterwarnings("ignore", message=NUMPY_FLOAT_EVENTS, category=RuntimeWarning,
                        module=r"gradlab(\.|$)", append=True)


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

    @staticmethod  # (a plain function: no bound method made at each of a step's products)
    def matrix_product(a, b):
        """a @ b of two matrices. Where each is C- or F-contiguous, ``a.dot(b)``: NumPy's
        dot then makes the BLAS call that matmul makes (the same bits: tests/functional hold
        the two together), without the ufunc dispatch around it, about 1 us a call on 2
        cores, an eighth of a 64 x 64 x 64 product. Otherwise the two take different routes
        (a copy and BLAS, or a plain loop), whose results differ in the last bit where a
        dimension is 1: matmul then."""
        fa, fb = a.flags, b.flags
        if (fa.c_contiguous or fa.f_contiguous) and (fb.c_contiguous or fb.f_contiguous):
            return a.dot(b)
        return a @ b

    def scatter_add(self, target, index, values):
        np.add.at(target, index, values)
