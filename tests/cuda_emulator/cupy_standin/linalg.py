"""``cupy.linalg``: the names CuPy's linalg has, each NumPy's on the device memory."""
from __future__ import annotations

import numpy as _np

from ._core import call_numpy
from .names import LINALG as _NAMES


def __getattr__(name):
    if name.startswith("__") or name not in _NAMES:
        raise AttributeError(f"module 'cupy.linalg' has no attribute {name!r}")
    fn = getattr(_np.linalg, name, None)
    if fn is None:
        raise AttributeError(f"cupy.linalg.{name} is not modelled by the CuPy stand-in")
    if callable(fn) and not isinstance(fn, type):
        def wrapper(*args, **kwargs):
            return call_numpy(fn, args, kwargs)
        wrapper.__name__ = name
        globals()[name] = wrapper
        return wrapper
    return fn
