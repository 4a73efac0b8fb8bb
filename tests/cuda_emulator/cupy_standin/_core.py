"""``cupy.ndarray`` of the stand-in: a NumPy array that plays device memory, behind CuPy's rules.

What CuPy does and this class copies (the CuPy documentation each rule follows is named in
the comment; FIDELITY.md has the list):

- A device array is its own type, never a ``numpy.ndarray``, and NumPy cannot read it: there is
  no buffer protocol and no ``__array_interface__``, and ``__array__`` raises TypeError
  ("The N-dimensional array": cupy.ndarray and numpy.ndarray are not implicitly convertible;
  use ``cupy.asnumpy`` / ``ndarray.get``).
- A ``numpy.ndarray`` given to a device function or operator raises
  ``TypeError: Unsupported type <class 'numpy.ndarray'>``; NumPy and Python scalars are fine
  ("Universal functions (cupy.ufunc)": arguments are cupy.ndarray or scalars).
- ``numpy.<ufunc>(device_array)`` and ``numpy.<function>(device_array)`` dispatch to CuPy
  through ``__array_ufunc__`` / ``__array_function__`` (CuPy "Interoperability": NEP 13 and
  NEP 18 are supported), so they return device arrays.
- Reductions and scalar indexing return 0-d device arrays, not host scalars ("Differences
  between CuPy and NumPy": reduction methods return zero-dimensional arrays); ``int()``,
  ``float()``, ``bool()``, ``.item()``, ``.tolist()`` copy to the host and synchronize.
- Out-of-bounds integer-array indices wrap around instead of raising (``cupy.ndarray.
  __getitem__`` / ``__setitem__`` notes; "Differences between CuPy and NumPy").
- ``a[basic_index] = numpy_array`` raises ValueError ("non-scalar numpy.ndarray cannot be used
  for fill"): only an advanced-index assignment copies host data in (``cupy.ndarray.fill``).
"""
from __future__ import annotations

import warnings

import numpy as np

from . import capture, memory
from .names import CUPY as _CUPY_NAMES
from .names import NDARRAY as _NDARRAY_NAMES

# Python/NumPy scalar types CuPy accepts as kernel and ufunc arguments.
_SCALARS = (bool, int, float, complex, np.generic)
_IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to "
             "construct a NumPy array explicitly.")


def unsupported(x) -> TypeError:
    # CuPy's own message first (tests and users grep for it), then what to do about it.
    hint = ""
    if isinstance(x, np.ndarray):
        hint = (" (a host numpy.ndarray was passed where CuPy needs a device array; copy it "
                "to the device with cupy.asarray() first)")
    return TypeError(f"Unsupported type {type(x)}{hint}")


class _Args:
    """Unwraps device arguments for one NumPy call and re-wraps its results.

    Results that are views of an input's memory stay views of that allocation (NumPy and
    CuPy return views from the same functions: reshape, transpose, basic slicing, ...);
    anything else is copied into a fresh guarded allocation with the same memory layout.
    """

    __slots__ = ("arrays", "by_id", "ufunc")

    def __init__(self, ufunc=False):
        self.arrays = []
        self.by_id = {}
        self.ufunc = ufunc

    def unwrap(self, x):
        if type(x) is ndarray:
            a = x._a
            self.arrays.append(x)
            self.by_id[id(a)] = x
            return a
        if isinstance(x, np.ndarray):
            raise unsupported(x)
        if isinstance(x, (list, tuple)):
            if self.ufunc:  # ufunc operands: arrays or scalars only, as in CuPy
                raise unsupported(x)
            return type(x)(self.unwrap(v) for v in x)
        return x

    def unwrap_kwargs(self, kwargs):
        return {k: self.unwrap(v) for k, v in kwargs.items()}

    def wrap(self, r):
        if isinstance(r, np.ndarray):
            same = self.by_id.get(id(r))
            if same is not None:
                return same
            return _adopt(r, self.arrays)
        if isinstance(r, np.generic):
            return _adopt(np.asarray(r), ())
        if isinstance(r, tuple):
            return tuple(self.wrap(v) for v in r)
        if isinstance(r, list):
            return [self.wrap(v) for v in r]
        return r


def _adopt(r: np.ndarray, arrays) -> "ndarray":
    """A device array for NumPy result ``r``: a view (``base`` set, as CuPy sets it) when
    ``r`` points into the memory of one of ``arrays``, else a copy in new device memory laid
    out like ``r`` (C, F or any axis order)."""
    if r.dtype.kind in "OUSVMm":
        raise TypeError(f"Unsupported dtype {r.dtype} (CuPy has no {r.dtype.kind!r}-kind "
                        f"arrays)")
    if arrays:
        ptr = r.__array_interface__["data"][0]
        for x in arrays:
            if x._mem.contains(ptr):
                return ndarray._view(r, x._mem, x if x._base is None else x._base)
    return ndarray._copy(r)


def _layout_like(mem, r: np.ndarray) -> np.ndarray:
    if r.ndim < 2 or r.flags.c_contiguous:
        return mem.view(r.dtype, r.shape)
    order = sorted(range(r.ndim), key=lambda i: -abs(r.strides[i]))
    base = mem.view(r.dtype, tuple(r.shape[i] for i in order))
    inverse = [0] * r.ndim
    for pos, axis in enumerate(order):
        inverse[axis] = pos
    return base.transpose(inverse)


# Functions whose output size depends on the data: CuPy reads a count back (a sync).
_SIZE_FROM_DATA = frozenset({"nonzero", "argwhere", "flatnonzero", "unique", "extract",
                             "compress", "unique_values", "unique_counts", "unique_inverse",
                             "unique_all", "trim_zeros"})


# Functions CuPy runs with cuBLAS, whose wrappers refuse a capturing stream before any CUDA
# call ("calling cuBLAS API during stream capture is currently unsupported", raised by
# cupy_backends/cuda/libs/cublas.pyx setStream): the capture itself stays valid.
_CUBLAS = frozenset({"dot", "vdot", "inner", "matmul", "tensordot", "einsum", "matvec",
                     "vecmat"})


def call_numpy(fn, args, kwargs, ufunc=False, owner=None):
    """Run NumPy function ``fn`` on device arguments, the way CuPy's function would.
    ``owner``: the device array whose NumPy method ``fn`` is (results may be its views).
    While the current stream captures, the call is also recorded (capture.py)."""
    ctx = _Args(ufunc)
    if owner is not None:
        ctx.unwrap(owner)
    a = [ctx.unwrap(x) for x in args]
    k = ctx.unwrap_kwargs(kwargs)
    cap = capture.capturing()
    if cap is not None and getattr(fn, "__name__", "") in _CUBLAS:
        raise NotImplementedError("calling cuBLAS API during stream capture is currently "
                                  "unsupported")
    if cap is not None and getattr(fn, "__name__", "") in _SIZE_FROM_DATA:
        capture.sync(f"{fn.__name__}: the output size depends on the data")
    with np.errstate(all="ignore"):  # device code never warns about NaN/inf/overflow
        r = fn(*a, **k)
    res = ctx.wrap(r)
    if cap is not None:
        # Repeat the call at each launch: in-place writes (out=, at, copyto) land in the
        # arguments' memory again, and fresh results are refilled in the arrays made now.
        mems = {id(x._mem) for x in ctx.arrays}
        targets = _targets(res, mems)

        def thunk():
            with np.errstate(all="ignore"):
                _refill(targets, fn(*a, **k))
        capture.record(thunk)
    return res


def _targets(res, mems):
    """The host views of the freshly allocated arrays in result ``res`` (None for views of
    the arguments and for non-arrays), in the result's structure."""
    if type(res) is ndarray:
        return None if id(res._mem) in mems else res._a
    if isinstance(res, (tuple, list)):
        return [_targets(v, mems) for v in res]
    return None


def _refill(targets, r):
    if targets is None:
        return
    if isinstance(targets, np.ndarray):
        np.copyto(targets, np.asarray(r), casting="no")
        return
    for t, v in zip(targets, r):
        _refill(t, v)


def _record_copy(dst, src_fn):
    """Capture: at each launch, write ``src_fn()`` into device array ``dst``."""
    if capture.capturing() is not None:
        def thunk():
            with np.errstate(all="ignore"):
                np.copyto(dst._a, src_fn(), casting="unsafe")
        capture.record(thunk)
    return dst


def stable_kind(kind):
    if kind not in (None, "stable"):
        raise ValueError(f"Unsupported kind {kind!r}: CuPy sorts are always stable (kind=None "
                         f"or 'stable')")
    return "stable"


class Flags:
    """``ndarray.flags``: only c_contiguous, f_contiguous and owndata, as in CuPy."""

    __slots__ = ("c_contiguous", "f_contiguous", "owndata")

    def __init__(self, c, f, own):
        self.c_contiguous, self.f_contiguous, self.owndata = c, f, own

    def __getitem__(self, name):
        key = {"C_CONTIGUOUS": "c_contiguous", "F_CONTIGUOUS": "f_contiguous",
               "OWNDATA": "owndata"}[name.upper()]
        return getattr(self, key)

    def __repr__(self):
        return (f"  C_CONTIGUOUS : {self.c_contiguous}\n  F_CONTIGUOUS : {self.f_contiguous}\n"
                f"  OWNDATA : {self.owndata}")


class MemoryPointer:
    """``ndarray.data``: ``.ptr`` is the device address (here: the host address of the
    emulated memory, which the emulated kernels dereference)."""

    __slots__ = ("mem", "ptr")

    def __init__(self, mem, ptr):
        self.mem, self.ptr = mem, ptr

    @property
    def device(self):
        from .cuda import Device
        return Device(0)

    @property
    def device_id(self):
        return 0

    def __int__(self):
        return self.ptr

    def __add__(self, offset):
        return MemoryPointer(self.mem, self.ptr + int(offset))


def _should_use_rop(y):
    # CuPy's core: defer to y's reflected operator when y opts out of NumPy's ufuncs
    # (__array_ufunc__ = None), or lacks __array_ufunc__ and has a higher __array_priority__
    # than cupy.ndarray's 100.
    try:
        y_ufunc = type(y).__array_ufunc__
    except AttributeError:
        return ndarray.__array_priority__ < getattr(y, "__array_priority__", 0)
    return y_ufunc is None


def _operand(other):
    """Check the right operand of an operator; None means "not ours: NotImplemented"."""
    if type(other) is ndarray or isinstance(other, _SCALARS):
        return other
    if isinstance(other, np.ndarray):
        raise unsupported(other)
    if _should_use_rop(other):
        return None
    raise TypeError(f"operand type(s) all returned NotImplemented from __array_ufunc__: "
                    f"cupy.ndarray and {type(other).__name__}")


def _binary(name):
    uf = getattr(np, name)

    def op(self, other):
        if _operand(other) is None:
            return NotImplemented
        return call_numpy(uf, (self, other), {}, ufunc=True)

    def rop(self, other):
        if _operand(other) is None:
            return NotImplemented
        return call_numpy(uf, (other, self), {}, ufunc=True)

    def iop(self, other):
        if _operand(other) is None:
            return NotImplemented
        call_numpy(uf, (self, other), {"out": self}, ufunc=True)
        return self

    op.__name__, rop.__name__, iop.__name__ = f"__{name}__", f"__r{name}__", f"__i{name}__"
    return op, rop, iop


def _unary(name):
    uf = getattr(np, name)

    def op(self):
        return call_numpy(uf, (self,), {}, ufunc=True)

    op.__name__ = name
    return op


def _method(name):
    def method(self, *args, **kwargs):
        return call_numpy(getattr(self._a, name), args, kwargs, owner=self)

    method.__name__ = name
    method.__doc__ = f"numpy.ndarray.{name} on the device (result on the device)."
    return method


class ndarray:
    """Multi-dimensional array on the emulated CUDA device (see the module docstring)."""

    __slots__ = ("_a", "_mem", "_base", "__weakref__")
    __module__ = "cupy"  # type(a) prints as cupy.ndarray, as on a GPU
    __array_priority__ = 100
    __hash__ = None  # cupy.ndarray is unhashable (it defines __eq__ elementwise)

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        if memptr is not None or strides is not None:
            raise NotImplementedError("the CuPy stand-in does not build arrays on a memptr")
        dtype = np.dtype(dtype)
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        mem = memory.Allocation(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
        a = mem.view(dtype, shape)
        if order == "F":
            a = mem.view(dtype, shape[::-1]).T
        mem.label = f"{dtype} array of shape {shape}"
        self._a, self._mem, self._base = a, mem, None

    @classmethod
    def _view(cls, a, mem, base=None):
        self = object.__new__(cls)
        self._a, self._mem, self._base = a, mem, base
        return self

    @classmethod
    def _copy(cls, r):
        mem = memory.Allocation(r.nbytes, poison=False)
        mem.label = f"{r.dtype} array of shape {r.shape}"
        a = _layout_like(mem, r)
        np.copyto(a, r, casting="no")
        return cls._view(a, mem)

    # -- attributes ------------------------------------------------------------------------
    @property
    def shape(self):
        return self._a.shape

    @shape.setter
    def shape(self, value):
        self._a = np.reshape(self._a, value, copy=False)

    @property
    def dtype(self):
        return self._a.dtype

    @property
    def ndim(self):
        return self._a.ndim

    @property
    def size(self):
        return self._a.size

    @property
    def itemsize(self):
        return self._a.itemsize

    @property
    def nbytes(self):
        return self._a.nbytes

    @property
    def strides(self):
        return self._a.strides

    @property
    def flags(self):
        a = self._a
        return Flags(a.flags.c_contiguous, a.flags.f_contiguous, self._base is None)

    @property
    def base(self):
        """The array owning the memory of this view (None for an owner), as in CuPy."""
        return self._base

    @property
    def T(self):
        return self if self._a.ndim < 2 else _adopt(self._a.T, (self,))

    @property
    def mT(self):
        return _adopt(self._a.mT, (self,))

    @property
    def data(self):
        return MemoryPointer(self._mem, self._a.__array_interface__["data"][0])

    @property
    def device(self):
        from .cuda import Device
        return Device(0)

    @property
    def real(self):
        return call_numpy(np.real, (self,), {})

    @property
    def imag(self):
        return call_numpy(np.imag, (self,), {})

    @property
    def __cuda_array_interface__(self):
        # CUDA Array Interface v3, as cupy.ndarray exports it (strides None when C-contiguous,
        # data pointer 0 for an empty array, a non-zero stream: 1 is the legacy default stream).
        a = self._a
        return {"shape": a.shape, "typestr": a.dtype.str, "descr": a.dtype.descr,
                "stream": 1, "version": 3,
                "strides": None if a.flags.c_contiguous else a.strides,
                "data": (a.__array_interface__["data"][0] if a.size else 0, False)}

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        """A DLPack capsule sharing this device memory (see dlpack.py for the emulation)."""
        from .dlpack import export
        return export(self, stream, max_version, dl_device, copy)

    def __dlpack_device__(self):
        from .dlpack import kDLCUDA
        return (kDLCUDA, 0)

    def __getattr__(self, name):
        # Methods CuPy has and this class does not define one by one (cumsum, prod, ...):
        # NumPy's method on the device memory. Names CuPy lacks are an AttributeError, as on
        # a GPU; so is everything NumPy-only (ctypes, __array_interface__, the buffer).
        if name.startswith("_") or name not in _NDARRAY_NAMES:
            raise AttributeError(f"'cupy.ndarray' object has no attribute {name!r}")
        try:
            a = object.__getattribute__(self, "_a")
        except AttributeError:
            raise AttributeError(name) from None
        attr = getattr(a, name)
        if not callable(attr):
            ctx = _Args()
            ctx.arrays.append(self)
            return ctx.wrap(attr)

        def method(*args, **kwargs):
            return call_numpy(getattr(self._a, name), args, kwargs, owner=self)
        method.__name__ = name
        return method

    # -- host conversion -------------------------------------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError(_IMPLICIT)

    def get(self, stream=None, order="C", out=None, blocking=True):
        """Copy to a new host numpy.ndarray (``cupy.ndarray.get``); never a view."""
        capture.sync("ndarray.get: a device-to-host copy")
        if out is not None:
            if not isinstance(out, np.ndarray):
                raise TypeError("Only numpy.ndarray can be obtained from cupy.ndarray")
            if out.dtype != self.dtype:
                raise TypeError(f"{out.dtype} array cannot be obtained from {self.dtype} array")
            if out.shape != self.shape:
                raise ValueError(f"Shape mismatch. Expected shape: {self.shape}, actual shape: "
                                 f"{out.shape}")
            np.copyto(out, self._a)
            return out
        return np.array(self._a, order=order.upper() if order.upper() in "CFA" else "C",
                        copy=True)

    def set(self, arr, stream=None):
        """Copy host array ``arr`` (same dtype and shape) into this array (``ndarray.set``)."""
        capture.sync("ndarray.set: a host-to-device copy")
        if not isinstance(arr, np.ndarray):
            raise TypeError("Only numpy.ndarray can be set to cupy.ndarray")
        if self.dtype != arr.dtype:
            raise TypeError(f"{arr.dtype} array cannot be set to {self.dtype} array")
        if self.shape != arr.shape:
            raise ValueError(f"Shape mismatch. Old shape: {self.shape}, new shape: {arr.shape}")
        np.copyto(self._a, arr)

    def item(self):
        if self.size != 1:
            raise ValueError("can only convert an array of size 1 to a Python scalar")
        return self.get().item()

    def tolist(self):
        return self.get().tolist()

    def tobytes(self, order="C"):
        return self.get().tobytes(order)

    def __int__(self):
        return int(self.get())

    def __float__(self):
        return float(self.get())

    def __complex__(self):
        return complex(self.get())

    def __bool__(self):
        if self.size == 0:
            warnings.warn("The truth value of an empty array is ambiguous. Returning False, but "
                          "in future this will result in an error. Use `array.size > 0` to "
                          "check that an array is not empty.", DeprecationWarning, stacklevel=2)
            return False
        if self.size == 1:
            return bool(self.get())
        raise ValueError("The truth value of an array with more than one element is ambiguous. "
                         "Use a.any() or a.all()")

    def __repr__(self):
        return repr(self.get())

    def __str__(self):
        return str(self.get())

    def __format__(self, spec):
        return format(self.get(), spec)

    def __reduce__(self):
        from . import array
        return array, (self.get(),)

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()

    # -- NumPy protocols (NEP 13 / NEP 18) -------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        # CuPy handles only ufunc.__call__; reduce/at/accumulate/outer return NotImplemented,
        # so NumPy raises TypeError.
        if method != "__call__":
            return NotImplemented
        from . import _module_attr
        try:
            cp_ufunc = _module_attr(ufunc.__name__)
        except AttributeError:
            return NotImplemented
        if "out" in kwargs:
            out = kwargs["out"]
            if isinstance(out, tuple):
                if len(out) != 1:
                    raise ValueError("The 'out' parameter must have exactly one array value")
                kwargs["out"] = out[0]
        for x in (*inputs, kwargs.get("out")):
            if x is None and "out" not in kwargs:
                continue
            if not (type(x) is ndarray or isinstance(x, (np.ndarray, *_SCALARS))
                    or x is None):
                return NotImplemented
        return cp_ufunc(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        from . import _function_for
        cp_func = _function_for(func)
        if cp_func is None:
            return NotImplemented
        for t in types:
            if t is not ndarray and not issubclass(t, np.ndarray):
                return NotImplemented
        return cp_func(*args, **kwargs)

    # -- container -------------------------------------------------------------------------
    def __len__(self):
        if self._a.ndim == 0:
            raise TypeError("len() of unsized object")
        return self._a.shape[0]

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self._a.shape[0]))

    def __getitem__(self, index):
        return _getitem(self, index)

    def __setitem__(self, index, value):
        _setitem(self, index, value)

    # -- arithmetic ------------------------------------------------------------------------
    __add__, __radd__, __iadd__ = _binary("add")
    __sub__, __rsub__, __isub__ = _binary("subtract")
    __mul__, __rmul__, __imul__ = _binary("multiply")
    __truediv__, __rtruediv__, __itruediv__ = _binary("true_divide")
    __floordiv__, __rfloordiv__, __ifloordiv__ = _binary("floor_divide")
    __mod__, __rmod__, __imod__ = _binary("remainder")
    __pow__, __rpow__, __ipow__ = _binary("power")
    __and__, __rand__, __iand__ = _binary("bitwise_and")
    __or__, __ror__, __ior__ = _binary("bitwise_or")
    __xor__, __rxor__, __ixor__ = _binary("bitwise_xor")
    __lshift__, __rlshift__, __ilshift__ = _binary("left_shift")
    __rshift__, __rrshift__, __irshift__ = _binary("right_shift")
    __matmul__, __rmatmul__, _imatmul = _binary("matmul")
    __lt__ = _binary("less")[0]
    __le__ = _binary("less_equal")[0]
    __gt__ = _binary("greater")[0]
    __ge__ = _binary("greater_equal")[0]
    __eq__ = _binary("equal")[0]
    __ne__ = _binary("not_equal")[0]
    __neg__ = _unary("negative")
    __abs__ = _unary("absolute")
    __invert__ = _unary("invert")

    def __pos__(self):
        return self

    def __divmod__(self, other):
        return (self // other, self % other)

    # -- methods CuPy has, defined here because they are hot or differ from NumPy's ---------
    sum = _method("sum")
    max = _method("max")
    min = _method("min")
    mean = _method("mean")
    any = _method("any")
    all = _method("all")
    argmax = _method("argmax")
    argmin = _method("argmin")
    reshape = _method("reshape")
    ravel = _method("ravel")
    transpose = _method("transpose")
    squeeze = _method("squeeze")
    swapaxes = _method("swapaxes")
    view = _method("view")
    clip = _method("clip")

    def argsort(self, axis=-1, kind=None):
        """Always stable (``cupy.ndarray.argsort``: kind None means 'stable', and no other
        kind is accepted)."""
        return call_numpy(np.argsort, (self,), {"axis": axis, "kind": stable_kind(kind)})

    def sort(self, axis=-1, kind=None):
        """In place and stable, like ``cupy.ndarray.sort``."""
        a, kind = self._a, stable_kind(kind)
        a.sort(axis=axis, kind=kind)
        if capture.capturing() is not None:
            capture.record(lambda: a.sort(axis=axis, kind=kind))

    def copy(self, order="C"):
        src = self._a
        return _record_copy(ndarray._copy(np.array(src, order=order, copy=True)), lambda: src)

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        if casting is not None:
            raise TypeError("casting is not supported yet")
        if subok is not None:
            raise TypeError("subok is not supported yet")
        dtype = np.dtype(dtype)
        if dtype == self.dtype and not copy:
            return self
        src = self._a
        with np.errstate(all="ignore"):
            out = ndarray._copy(src.astype(dtype, order=order))
        return _record_copy(out, lambda: src.astype(dtype, order=order))

    def fill(self, value):
        """``cupy.ndarray.fill``: a scalar, a 0-d device array or a 0-d NumPy array."""
        if isinstance(value, np.ndarray):
            if value.shape != ():
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
            value = value.item()
        elif type(value) is ndarray:
            if value.shape != ():
                raise ValueError("non-scalar cupy.ndarray cannot be used for fill")
            value = value._a
        elif not isinstance(value, _SCALARS):
            raise unsupported(value)
        a = self._a
        with np.errstate(all="ignore"):
            a.fill(value)
        if capture.capturing() is not None:
            capture.record(lambda: a.fill(value))

    def dot(self, b, out=None):
        return call_numpy(np.dot, (self, b), {} if out is None else {"out": out})

    def __dir__(self):
        return sorted(_NDARRAY_NAMES | set(object.__dir__(self)))


# -- indexing ---------------------------------------------------------------------------------
def _index_part(s):
    """One component of an index, as CuPy's _prepare_slice_list sees it: lists and host
    arrays become (device) index arrays, scalars and slices stay."""
    if s is None or s is Ellipsis or isinstance(s, slice):
        return s, False
    if type(s) is ndarray:
        return s._a, s._a.ndim >= 0
    if isinstance(s, (list, tuple, np.ndarray)):
        arr = np.asarray([_index_part(v)[0] if type(v) is ndarray else v for v in s]
                         if isinstance(s, (list, tuple)) else s)
        if isinstance(s, (list, tuple)) and arr.size == 0:
            arr = arr.astype(np.int32)
        if arr.dtype.kind not in "iub":
            raise IndexError("only integers, slices (`:`), ellipsis (`...`),numpy.newaxis "
                             "(`None`) and integer or boolean arrays are valid indices")
        return arr, True
    if isinstance(s, (bool, np.bool_)):
        return np.asarray(s), True
    if isinstance(s, (int, np.integer)):
        return s, False
    raise IndexError("only integers, slices (`:`), ellipsis (`...`),numpy.newaxis (`None`) "
                     "and integer or boolean arrays are valid indices")


def _prepare_index(a: np.ndarray, index):
    """(numpy index, is_advanced). Integer arrays are wrapped into range, as CuPy wraps
    out-of-bounds array indices instead of raising; a purely basic index gets a trailing
    Ellipsis so that a[0] is a 0-d view, as in CuPy, not a NumPy scalar."""
    parts = list(index) if isinstance(index, tuple) else [index]
    parts = [_index_part(p) for p in parts]
    advanced = any(adv for _, adv in parts)
    if not advanced:
        comps = [p for p, _ in parts]
        if not any(p is Ellipsis for p in comps):
            comps.append(Ellipsis)
        return tuple(comps), False
    consumed = sum(0 if p is None or p is Ellipsis else
                   (p.ndim if isinstance(p, np.ndarray) and p.dtype == np.bool_ else 1)
                   for p, _ in parts)
    out, axis = [], 0
    for p, _ in parts:
        if p is None:
            out.append(p)
        elif p is Ellipsis:
            out.append(p)
            axis += a.ndim - consumed
        elif isinstance(p, np.ndarray) and p.dtype == np.bool_:
            out.append(p)
            axis += p.ndim
        elif isinstance(p, np.ndarray):
            n = a.shape[axis] if axis < a.ndim else 0
            out.append(np.mod(p, n) if n else p)
            axis += 1
        else:
            out.append(p)
            axis += 1
    return tuple(out), True


def _capture_index(index, mask_syncs):
    """While capturing: refuse index parts CuPy must copy from the host (lists, host arrays)
    and, for reads, boolean masks (the result size is read back from the device)."""
    if capture.capturing() is None:
        return
    for p in index if isinstance(index, tuple) else (index,):
        if isinstance(p, (list, np.ndarray)):
            capture.sync("indexing with a host list or array: a host-to-device copy")
        if mask_syncs and type(p) is ndarray and p.dtype == np.bool_:
            capture.sync("boolean-mask indexing: the output size depends on the data")


def _getitem(self, index):
    _capture_index(index, True)
    idx, advanced = _prepare_index(self._a, index)
    res = _adopt(self._a[idx], (self,))
    if advanced and capture.capturing() is not None and res._mem is not self._mem:
        a = self._a
        _record_copy(res, lambda: a[_prepare_index(a, index)[0]])
    return res


def _setitem(self, index, value):
    _capture_index(index, False)
    if isinstance(value, np.ndarray) and value.shape != () and capture.capturing() is not None:
        capture.sync("assigning a host array: a host-to-device copy")
    idx, advanced = _prepare_index(self._a, index)
    if type(value) is ndarray:
        v = value._a
    elif isinstance(value, np.ndarray):
        if not advanced:  # basic-index assignment goes through fill(), which takes scalars
            if value.shape != ():
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
            v = value.item()
        else:
            v = value
    elif isinstance(value, _SCALARS):
        v = value
    elif advanced and isinstance(value, (list, tuple)):
        v = np.asarray(value)
    else:
        raise unsupported(value)
    with np.errstate(all="ignore"):
        self._a[idx] = v
    if capture.capturing() is not None:
        a = self._a

        def thunk():
            with np.errstate(all="ignore"):
                a[_prepare_index(a, index)[0]] = v
        capture.record(thunk)


__all__ = ["ndarray", "call_numpy", "unsupported", "_CUPY_NAMES"]
