"""The pointer table of the numba optimizer tier (numba_cpu.py): where each tensor of a group
is, read with public interfaces only.

The kernel finds the tensors through a table of data pointers (rows: p, g, then the states;
one column per tensor). numba's own ways of passing a variable number of arrays cost more
than the update of small tensors (measured on 2 cores, 100 arrays: a typed List 190 us to
build, a reflected list 960 us per call, a tuple one compilation per length and ndim
pattern, 1.6 s at 100 1-D arrays, 5.7 s with mixed ndims), and ``ndarray.ctypes.data`` costs
1 us per array. So:
- the rows of the params and states, which are the same arrays step after step, are built
  once per group (checked as reference.py checks, with ``ctypes.data``) and cached, keyed on
  the arrays' ids. The cache holds weak references only: an entry goes as soon as one of its
  arrays is freed, so an id in a live entry always names the array it was built from. (An
  array's data pointer never changes while it lives, short of ``ndarray.resize`` with
  ``refcheck=False`` on a parameter or state, which would leave a stale pointer here.)
- the gradients are new arrays after every backward, so their row is read at every call, in
  compiled code, through the buffer protocol (CPython's public PyObject_GetBuffer asking for a
  C-contiguous view with its format and shape; measured about 0.1 us per array, against
  0.2 us for NumPy's ``__array_struct__`` capsule) and checked against the params' shapes and
  dtype. The compiled code takes the address of the grads' list and its items with the
  public PyList_GetItem: an array of the grads' ids cost 2 us for six grads (``np.fromiter``
  or filling a kept array), more than the whole read. Anything unexpected (not an array,
  another dtype or shape, not contiguous) goes to the full Python check, which raises
  reference.py's error.
- a caller that keeps a group's params and states (the prepared steps, numba_cpu.py) takes
  a table of its own from prepared_table, checked once, and reads only the grads per call.
"""
from __future__ import annotations

import ctypes
import weakref

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from ... import checks

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")
_ROWS = 5  # p, g and up to three states; a state that is off repeats p's row


@intrinsic
def voidptr(typingctx, addr):
    """An integer address as a void pointer (for numba.carray)."""
    if not isinstance(addr, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)
    return types.voidptr(addr), codegen


@intrinsic
def _get_buffer(typingctx, fn, obj, view, flags):
    """``PyObject_GetBuffer(obj, view, flags)`` through its address ``fn``: an argument, not a
    constant, so that the cached machine code stays valid in another process."""
    if not all(isinstance(x, types.Integer) for x in (fn, obj, view, flags)):
        return None

    def codegen(context, builder, signature, args):
        word = context.get_value_type(types.intp)
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(i32, [word, word, i32])
        call = builder.call(builder.inttoptr(args[0], fnty.as_pointer()),
                            [args[1], args[2], builder.trunc(args[3], i32)])
        return builder.sext(call, word)
    return types.intp(types.intp, types.intp, types.intp, types.intp), codegen


@intrinsic
def _call_word2(typingctx, fn, a, b):
    """``fn(a, b)`` for the address of a C function of two words returning a word."""
    if not all(isinstance(x, types.Integer) for x in (fn, a, b)):
        return None

    def codegen(context, builder, signature, args):
        word = context.get_value_type(types.intp)
        fnty = ir.FunctionType(word, [word, word])
        return builder.call(builder.inttoptr(args[0], fnty.as_pointer()), [args[1], args[2]])
    return types.intp(types.intp, types.intp, types.intp), codegen


@intrinsic
def _call_void(typingctx, fn, arg):
    """``fn(arg)`` for the address of a C function of one pointer returning nothing."""
    if not all(isinstance(x, types.Integer) for x in (fn, arg)):
        return None

    def codegen(context, builder, signature, args):
        word = context.get_value_type(types.intp)
        fnty = ir.FunctionType(ir.VoidType(), [word])
        builder.call(builder.inttoptr(args[0], fnty.as_pointer()), [args[1]])
        return context.get_dummy_value()
    return types.none(types.intp, types.intp), codegen


@intrinsic
def _call_void0(typingctx, fn):
    """``fn()`` for the address of a C function of no arguments returning nothing."""
    if not isinstance(fn, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.VoidType(), [])
        builder.call(builder.inttoptr(args[0], fnty.as_pointer()), [])
        return context.get_dummy_value()
    return types.none(types.intp), codegen


class _PyBuffer(ctypes.Structure):
    """CPython's Py_buffer (the buffer protocol's public struct)."""
    _fields_ = [("buf", ctypes.c_void_p), ("obj", ctypes.c_void_p),
                ("len", ctypes.c_ssize_t), ("itemsize", ctypes.c_ssize_t),
                ("readonly", ctypes.c_int), ("ndim", ctypes.c_int),
                ("format", ctypes.c_char_p), ("shape", ctypes.c_void_p),
                ("strides", ctypes.c_void_p), ("suboffsets", ctypes.c_void_p),
                ("internal", ctypes.c_void_p)]


_BUF = np.array([_PyBuffer.buf.offset, _PyBuffer.itemsize.offset, _PyBuffer.ndim.offset,
                 _PyBuffer.format.offset, _PyBuffer.shape.offset], dtype=np.intp)
_BUF_WORDS = -(-ctypes.sizeof(_PyBuffer) // ctypes.sizeof(ctypes.c_ssize_t))
# PyBUF_C_CONTIGUOUS | PyBUF_FORMAT: a C-contiguous view with its shape and format, or an
# error (BufferError for a strided array)
_BUF_FLAGS = 0x0020 | 0x0010 | 0x0008 | 0x0004
# PyObject_GetBuffer, PyBuffer_Release, PyErr_Clear, PyList_GetItem: the CPython C API
_CAPI = np.array([ctypes.cast(getattr(ctypes.pythonapi, name), ctypes.c_void_p).value
                  for name in ("PyObject_GetBuffer", "PyBuffer_Release", "PyErr_Clear",
                               "PyList_GetItem")],
                 dtype=np.intp)


@_jit
def _int32(addr):
    return numba.carray(voidptr(addr), 1, np.int32)[0]


@_jit
def _word(addr):
    return numba.carray(voidptr(addr), 1, np.intp)[0]


@_jit
def _byte(addr):
    return numba.carray(voidptr(addr), 1, np.uint8)[0]


# The header of a table's ``meta`` array (then dim_start[n + 1], dims, and a Py_buffer's room)
_M_CODE, _M_ITEMSIZE, _M_N, _M_CAPI = 0, 1, 2, 3
_M_BUF = _M_CAPI + _CAPI.size
_M_HEAD = _M_BUF + _BUF.size


@numba.njit(cache=True)
def _read_grads(grads, meta, out):
    """Fill ``out`` with the data pointers of the items of the list at address ``grads``
    (``id`` of a list of exactly n items, the caller checks), through the buffer protocol (a
    C-contiguous view with its format), after checking each one against its param. ``meta``
    (built by _check): the format code ('f' or 'd', native order) and item size of the
    params, their count n, the C API's addresses, the Py_buffer field offsets, then
    dim_start (n + 1: tensor t's shape is dims[dim_start[t]:dim_start[t + 1]]), dims, and
    room for one Py_buffer. False at the first object that does not fit (with no Python
    error left set). Holds the GIL: it calls the C API on live
    Python objects (borrowed from the list, which the caller keeps alive and unchanged)."""
    n = meta[_M_N]
    dims0 = _M_HEAD + n + 1
    view = meta[dims0 + meta[_M_HEAD + n]:]
    vp = view.ctypes.data
    word = meta.itemsize
    get, release, clear, item = (meta[_M_CAPI], meta[_M_CAPI + 1], meta[_M_CAPI + 2],
                                 meta[_M_CAPI + 3])
    b_buf, b_itemsize, b_ndim, b_format, b_shape = (meta[_M_BUF], meta[_M_BUF + 1],
                                                    meta[_M_BUF + 2], meta[_M_BUF + 3],
                                                    meta[_M_BUF + 4])
    for t in range(n):
        obj = _call_word2(item, grads, t)
        if obj == 0 or _get_buffer(get, obj, vp, _BUF_FLAGS) != 0:
            _call_void0(clear)
            return False
        fmt = _word(vp + b_format)
        ok = (_word(vp + b_itemsize) == meta[_M_ITEMSIZE] and fmt != 0
              and _byte(fmt) == meta[_M_CODE] and _byte(fmt + 1) == 0)
        nd = _int32(vp + b_ndim)
        d0 = meta[_M_HEAD + t]
        ok = ok and nd == meta[_M_HEAD + t + 1] - d0
        if ok:
            shape = _word(vp + b_shape)
            for d in range(nd):
                if _word(shape + d * word) != meta[dims0 + d0 + d]:
                    ok = False
                    break
        if ok:
            out[t] = _word(vp + b_buf)
        _call_void(release, vp)
        if not ok:
            return False
    return True


class _Table:
    """The cached part of one group's table: every row but the grads', and the params'
    sizes and shapes."""

    __slots__ = ("ptrs", "offsets", "dtype", "ids", "meta", "refs")


_tables = {}           # (op, id of params[0], len(params), which states are off) -> _Table
_TABLES_MAX = 256      # entries kept (one per live parameter group; weak, so this only bounds)


def _forget(key, table, tables=_tables):
    # ``tables`` bound now: at interpreter exit the module's globals may be None before the
    # last arrays die and call this
    def drop(_ref):
        if tables.get(key) is table:
            del tables[key]
    return drop


def _check(op, params, grads, states):
    """Check the group as reference.py does (and read-only params or states) and return a new
    table of it, the grads' row not filled in. ``grads`` None: params and states only (the
    caller reads and checks the grads at each call)."""
    named = {f"state{k}": s for k, s in enumerate(states)}
    lists = {"params": params, **({} if grads is None else {"grads": grads}),
             **{k: s for k, s in named.items() if s is not None}}
    for name, arrays in lists.items():
        for i, a in enumerate(arrays):
            if not isinstance(a, np.ndarray):
                raise TypeError(f"{op}: {name}[{i}] is a {type(a).__name__}, not a NumPy array")
    # Without grads, params stand in for them: they pass every check a grad gets
    dtype = checks.group_dtype(op, params, params if grads is None else grads, **named)
    n = len(params)
    ptrs = np.empty((_ROWS, n), dtype=np.intp)
    rows = (params, None, *states) + (None,) * (_ROWS - 2 - len(states))
    for r, arrays in enumerate(rows):
        if r == 1:
            continue
        name = "params" if r == 0 else f"state{r - 2}"
        for i, a in enumerate(params if arrays is None else arrays):
            if not a.flags.writeable:
                raise ValueError(f"{op}: {name}[{i}] is read-only; optimizer steps update "
                                 f"params and their states in place")
            ptrs[r, i] = a.ctypes.data
    table = _Table()
    table.ptrs = ptrs
    table.offsets = np.zeros(n + 1, dtype=np.intp)
    np.cumsum([a.size for a in params], out=table.offsets[1:])
    table.dtype = dtype.type
    dim_start = np.zeros(n + 1, dtype=np.intp)
    np.cumsum([a.ndim for a in params], out=dim_start[1:])
    head = np.array([ord(dtype.char), dtype.itemsize, n, *_CAPI, *_BUF], dtype=np.intp)
    assert head.size == _M_HEAD
    table.meta = np.concatenate([head, dim_start,
                                 np.array([d for a in params for d in a.shape], dtype=np.intp),
                                 np.zeros(_BUF_WORDS, dtype=np.intp)])
    return table


def _build(op, key, ids, params, grads, states):
    """_check's table of the group, cached under ``key``."""
    table = _check(op, params, grads, states)
    table.ids = ids
    drop = _forget(key, table)
    table.refs = [weakref.ref(a, drop) for arrays in (params, *states) if arrays is not None
                  for a in arrays]
    if len(_tables) >= _TABLES_MAX:
        _tables.pop(next(iter(_tables)), None)
    _tables[key] = table
    return table


def group_table(op, params, grads, states):
    """(ptrs, offsets, scalar type) of one group, with the grads' row filled in; None for an
    empty group. Rejects what reference.py rejects, with the same errors, and read-only params
    or states. ``states``: a tuple of lists, None for an option that is off. The caller's
    lists keep every array alive while the kernel uses the table."""
    n = len(params)
    if n == 0 or len(grads) != n or any(s is not None and len(s) != n for s in states):
        checks.group_dtype(op, params, grads, **{f"state{k}": s for k, s in enumerate(states)})
        return None  # empty (mismatched lengths raised)
    ids = (*map(id, params), *(() if states[0] is None else map(id, states[0])),
           *(() if len(states) < 2 or states[1] is None else map(id, states[1])),
           *(() if len(states) < 3 or states[2] is None else map(id, states[2])))
    # A short key finds the entry; the full comparison of ids (no hash of them) confirms it
    key = (op, ids[0], n, *(s is None for s in states))
    table = _tables.get(key)
    if table is not None and table.ids != ids:
        table = None
    if type(grads) is not list:  # _read_grads reads a list
        grads = list(grads)
    if table is not None and _read_grads(id(grads), table.meta, table.ptrs[1]):
        return table.ptrs, table.offsets, table.dtype
    table = _build(op, key, ids, params, grads, states)  # raises the error of a bad group
    table.ptrs[1] = [g.ctypes.data for g in grads]
    return table.ptrs, table.offsets, table.dtype


def prepared_table(op, params, states):
    """A table of its own for a caller that keeps ``params`` and ``states`` (the same lists
    and arrays, alive, at every call): (ptrs, offsets, scalar type, meta), checked here once
    (group_table's checks of params and states), not cached. The caller fills the grads' row
    at each call with ``read_grads(grads, meta, ptrs[1])``, which checks them. None for
    an empty group."""
    if not params:
        return None
    table = _check(op, params, None, states)
    return table.ptrs, table.offsets, table.dtype, table.meta


def read_grads(grads, meta, out):
    """Fill ``out`` (a table's grads row) from the list ``grads`` of exactly as many arrays as
    the table's params, each checked against its param (format, item size, shape, C
    order); False, with ``out`` partly filled, at the first that does not fit."""
    return _read_grads(id(grads), meta, out)
