"""``cupyx`` of the stand-in: the scatter functions.

``cupyx.scatter_add(a, slices, value)`` adds ``value`` at ``a[slices]`` with repeated indices
accumulating (NumPy's ``add.at`` semantics; CuPy docs "cupyx.scatter_add"). On a GPU the adds
are atomics whose order varies from run to run; here they happen in index order, so the
stand-in cannot show that non-determinism (FIDELITY.md). CuPy restricts the dtypes atomics
support and copies a non-device ``value`` to the device (``core.array``), both modelled.
"""
from __future__ import annotations

import numpy as _np

from . import _core, capture

_ATOMIC_ADD = ("int32", "float16", "float32", "float64", "uint32", "uint64")


def scatter_add(a, slices, value):
    _scatter(_np.add, "scatter_add", _ATOMIC_ADD, a, slices, value)


def scatter_max(a, slices, value):
    _scatter(_np.maximum, "scatter_max", _ATOMIC_ADD[:1] + _ATOMIC_ADD[2:], a, slices, value)


def scatter_min(a, slices, value):
    _scatter(_np.minimum, "scatter_min", _ATOMIC_ADD[:1] + _ATOMIC_ADD[2:], a, slices, value)


def _scatter(ufunc, name, dtypes, a, slices, value):
    if type(a) is not _core.ndarray:
        raise _core.unsupported(a)
    idx, advanced = _core._prepare_index(a._a, slices)
    if not advanced:  # CuPy: a plain in-place ufunc on the view, which takes device data only
        view = a[slices]
        _core.call_numpy(ufunc, (view, value), {"out": view}, ufunc=True)
        return
    if type(value) is not _core.ndarray and capture.capturing() is not None:
        if isinstance(value, (list, tuple, _np.ndarray)):
            capture.sync(f"{name} of host values: a host-to-device copy")
    v = value._a if type(value) is _core.ndarray else _np.asarray(value, dtype=a.dtype)
    v = v.astype(a.dtype, copy=False)
    if str(v.dtype) not in dtypes:
        raise TypeError(f"{name} only supports {', '.join(dtypes)} as data type")
    ufunc.at(a._a, idx, v)
    if capture.capturing() is not None:
        target = a._a

        def thunk():
            vv = value._a.astype(target.dtype, copy=False) if type(value) is _core.ndarray \
                else v
            ufunc.at(target, _core._prepare_index(target, slices)[0], vv)
        capture.record(thunk)


def __getattr__(name):
    raise AttributeError(f"cupyx.{name} is not modelled by the CuPy stand-in")
