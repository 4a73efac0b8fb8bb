"""A strict stand-in for the ``cupy`` module, for test runs without a GPU.

``install.install()`` registers this package as ``cupy`` (and its submodules as ``cupy.cuda``,
``cupy.random``, ``cupy.linalg``, ``cupyx``) before gradlab is imported, so gradlab's CUDA
backend runs unchanged: arrays live in guarded host memory that plays device memory, and
``RawModule`` kernels are the real ``kernels/*.cu`` compiled for the CPU by
``cuda_emulator.runtime``.

Every public name CuPy 14.2 has (``names.CUPY``) resolves here: the ones whose behaviour
differs from NumPy's are defined below, the rest call NumPy's function of the same name on
the device memory (``_core.call_numpy``: host arrays are rejected, results stay on the
device). A name CuPy lacks is an AttributeError, as on a GPU. See FIDELITY.md.
"""
from __future__ import annotations

import numpy as _np

from . import _core, capture, cuda, linalg, memory, random
from ._core import ndarray
from .cuda import Device  # noqa: F401  (cupy.cuda.Device is also reachable as cupy.Device)
from .dlpack import from_dlpack  # noqa: F401
from .kernel import RawKernel, RawModule
from .names import CUPY as _NAMES

__version__ = "14.2.0+gradlab.emulated"

# Names CuPy has but the stand-in does not model: fail loudly instead of half-working.
_NOT_MODELLED = {"ElementwiseKernel", "ReductionKernel", "fuse", "fromDlpack",
                 "get_default_pinned_memory_pool", "memoize", "clear_memo", "load", "save",
                 "savez", "savez_compressed", "fromfile", "genfromtxt", "loadtxt"}


class _Ufunc:
    """``cupy.ufunc``: operands are device arrays or scalars; a host array or a list is a
    TypeError ("Universal functions (cupy.ufunc)")."""

    def __init__(self, uf):
        self._uf = uf
        self.__name__ = uf.__name__
        self.nin, self.nout, self.nargs = uf.nin, uf.nout, uf.nargs

    def __call__(self, *args, **kwargs):
        return _core.call_numpy(self._uf, args, kwargs, ufunc=True)

    def _method(self, name):
        fn = getattr(self._uf, name)
        return lambda *args, **kwargs: _core.call_numpy(fn, args, kwargs)

    def reduce(self, *args, **kwargs):
        return self._method("reduce")(*args, **kwargs)

    def accumulate(self, *args, **kwargs):
        return self._method("accumulate")(*args, **kwargs)

    def outer(self, *args, **kwargs):
        return self._method("outer")(*args, **kwargs)

    def at(self, a, indices, b=None):
        """In place, like NumPy's ``ufunc.at`` (CuPy has ``add.at`` etc. since v13)."""
        idx, _ = _core._prepare_index(a._a, indices)
        args = (a, idx) if b is None else (a, idx, b)
        _core.call_numpy(self._uf.at, args, {})

    def __repr__(self):
        return f"<ufunc '{self.__name__}'>"


def _function(fn, name):
    def wrapper(*args, **kwargs):
        return _core.call_numpy(fn, args, kwargs)
    wrapper.__name__ = wrapper.__qualname__ = name
    wrapper.__doc__ = f"numpy.{name} on device arrays (CuPy stand-in)."
    wrapper._numpy = fn
    return wrapper


def _module_attr(name):
    return globals()[name] if name in globals() else __getattr__(name)


def __getattr__(name):
    if name == "_environment":  # NVRTC's library loader reads it: the real module
        from ._real import environment
        return environment()
    if name.startswith("__") or name not in _NAMES:
        raise AttributeError(f"module 'cupy' has no attribute {name!r}")
    if name in _NOT_MODELLED:
        raise AttributeError(f"cupy.{name} exists in CuPy but is not modelled by gradlab's "
                             f"CuPy stand-in (tests/cuda_emulator/cupy_standin)")
    obj = getattr(_np, name, None)
    if obj is None:
        raise AttributeError(f"cupy.{name} is not modelled by the CuPy stand-in")
    if isinstance(obj, _np.ufunc):
        obj = _Ufunc(obj)
    elif callable(obj) and not isinstance(obj, type):
        obj = _function(obj, name)
    globals()[name] = obj  # later lookups skip __getattr__
    return obj


def _function_for(func):
    """The stand-in's version of NumPy function ``func`` (for __array_function__), or None
    when CuPy has none."""
    mod = getattr(func, "__module__", "") or ""
    name = getattr(func, "__name__", "")
    try:
        if mod == "numpy":
            return _module_attr(name)
        if mod == "numpy.linalg":
            return getattr(linalg, name)
    except AttributeError:
        return None
    return None


# -- creation and transfer: the functions that take or give host data ---------------------
def _host(obj):
    """Host data for a device constructor: nested lists may hold device arrays (CuPy
    accepts a sequence of arrays), which are copied back first."""
    if type(obj) is ndarray:
        return obj.get()
    if isinstance(obj, (list, tuple)):
        return [_host(v) for v in obj]
    return obj


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, blocking=False):
    """Copy ``obj`` (host data, a NumPy array or a device array) into new device memory."""
    if type(obj) is ndarray:
        if not copy and (dtype is None or _np.dtype(dtype) == obj.dtype) and obj.ndim >= ndmin:
            return obj
        host = obj._a
    else:
        _h2d(obj)
        host = _host(obj)
    a = _np.array(host, dtype=dtype, order=order, ndmin=ndmin, copy=True)
    out = ndarray._copy(a)
    if type(obj) is ndarray:  # a device-to-device copy: repeated by a graph launch
        _core._record_copy(out, lambda: _np.array(host, dtype=dtype, order=order, ndmin=ndmin))
    return out


def _h2d(obj):
    """While capturing: a host-to-device copy is refused (see capture.py)."""
    if capture.capturing() is not None:
        capture.sync(f"a host-to-device copy of a {type(obj).__name__}")


def asarray(a, dtype=None, order=None, copy=None, blocking=False):
    """A device array for ``a``: ``a`` itself when it already is one (of that dtype),
    else a host-to-device copy (``cupy.asarray``)."""
    if type(a) is ndarray:
        if dtype is None or _np.dtype(dtype) == a.dtype:
            if copy:
                return a.copy()
            if order in (None, "K", "A") or (order == "C" and a.flags.c_contiguous) or \
                    (order == "F" and a.flags.f_contiguous):
                return a
        src = a._a
        out = ndarray._copy(_np.array(src, dtype=dtype, order=order or "K"))
        return _core._record_copy(out, lambda: src)
    _h2d(a)
    return ndarray._copy(_np.array(_host(a), dtype=dtype, order=order or "K"))


asanyarray = asarray


def asnumpy(a, stream=None, order="C", out=None, blocking=True):
    """Host copy of a device array; host input is returned through numpy.asarray."""
    if type(a) is ndarray:
        return a.get(stream=stream, order=order, out=out)
    if out is not None:
        out[...] = a
        return out
    return _np.asarray(a, order=order)


def empty(shape, dtype=float, order="C"):
    """Uninitialised device memory: poisoned with 0xFF bytes (NaN for floats), so an
    element a kernel forgets to write shows up (CuPy's empty does not initialise)."""
    return ndarray(shape, dtype=dtype, order=order)


def empty_like(prototype, dtype=None, order="K", subok=None, shape=None):
    """Poisoned like ``empty``, with the prototype's layout for order 'K' (as CuPy)."""
    if type(prototype) is not ndarray:
        raise _core.unsupported(prototype)
    dtype = prototype.dtype if dtype is None else _np.dtype(dtype)
    shape = prototype.shape if shape is None else shape
    if order == "K" and shape == prototype.shape:
        like = _np.empty_like(prototype._a, dtype=dtype)
        mem = memory.Allocation(like.nbytes)
        mem.label = f"{dtype} array of shape {tuple(like.shape)}"
        return ndarray._view(_core._layout_like(mem, like), mem)
    return ndarray(shape, dtype=dtype, order="F" if order == "F" else "C")


def ascontiguousarray(a, dtype=None):
    """``a`` itself when already C-contiguous (and of ``dtype``), else a contiguous copy;
    like CuPy, a host array is rejected."""
    if type(a) is not ndarray:
        raise _core.unsupported(a)
    if a.flags.c_contiguous and (dtype is None or _np.dtype(dtype) == a.dtype):
        return a
    src = a._a
    return _core._record_copy(ndarray._copy(_np.ascontiguousarray(src, dtype=dtype)),
                              lambda: src)


# -- joining: CuPy's single-kernel path copies a pointer table from the host ---------------
def _check_join(name, arrays):
    """While capturing: refuse what CuPy's ``_concatenate_single_kernel`` would do, a
    host-to-device copy of the arrays' pointers (more than 8 arrays of one dtype, under 2 MiB
    each on average)."""
    if capture.capturing() is None:
        return
    if len(arrays) > 8 and all(type(a) is ndarray for a in arrays) and \
            len({a.dtype for a in arrays}) == 1 and \
            sum(a.nbytes for a in arrays) < 2 * 1024 * 1024 * len(arrays):
        capture.sync(f"cupy.{name} of {len(arrays)} arrays: a host-to-device copy of "
                     "their pointers")


def _joining(name):
    fn = getattr(_np, name)

    def join(arrays, *args, **kwargs):
        arrays = list(arrays)
        _check_join(name, arrays)
        return _core.call_numpy(fn, (arrays,) + args, kwargs)
    join.__name__ = join.__qualname__ = name
    join.__doc__ = f"numpy.{name} on device arrays; see _check_join (CuPy stand-in)."
    join._numpy = fn
    return join


concatenate = _joining("concatenate")
stack = _joining("stack")
hstack = _joining("hstack")
vstack = _joining("vstack")
if hasattr(_np, "concat"):  # (NumPy 2's alias; else __getattr__ says it is not modelled)
    concat = _joining("concat")


def argsort(a, axis=-1, kind=None):
    """Stable, as CuPy's argsort always is (NumPy's default quicksort is not)."""
    return _core.call_numpy(_np.argsort, (a,), {"axis": axis, "kind": _core.stable_kind(kind)})


def sort(a, axis=-1, kind=None):
    """A sorted copy, stable like ``cupy.sort``."""
    return _core.call_numpy(_np.sort, (a,), {"axis": axis, "kind": _core.stable_kind(kind)})


def get_array_module(*args):
    """This module when any argument is a device array, else numpy."""
    import sys
    for x in args:
        if type(x) is ndarray:
            return sys.modules[__name__]
    return _np


def is_available():
    return True


class _MemoryPool:
    """``cupy.get_default_memory_pool()``: the stand-in has no pool; the byte counts are
    those of the live allocations."""

    def used_bytes(self):
        return sum(a.nbytes for a in memory.live_allocations())

    total_bytes = used_bytes

    def free_all_blocks(self, stream=None):
        pass

    def n_free_blocks(self):
        return 0

    def set_limit(self, size=None, fraction=None):
        pass

    def get_limit(self):
        return 0


_POOL = _MemoryPool()


def get_default_memory_pool():
    return _POOL


# Constants and dtype objects are NumPy's own in CuPy too (cupy.float32 is numpy.float32).
inf, nan, pi, e, newaxis = _np.inf, _np.nan, _np.pi, _np.e, _np.newaxis
float16, float32, float64 = _np.float16, _np.float32, _np.float64
int8, int16, int32, int64 = _np.int8, _np.int16, _np.int32, _np.int64
uint8, uint16, uint32, uint64 = _np.uint8, _np.uint16, _np.uint32, _np.uint64
bool_, dtype, intp = _np.bool_, _np.dtype, _np.intp

__all__ = ["ndarray", "array", "asarray", "asnumpy", "empty", "empty_like", "RawKernel",
           "RawModule", "cuda", "random", "linalg", "get_array_module"]
