"""Optional numba-compiled optimizer steps for the CPU backend.

The NumPy references in reference.py make a dozen passes over memory per step; these
make one (read p, g and the state once, write them once), which is what PyTorch's fused
CPU Adam does. They are used when numba imports and ``GRADLAB_NO_JIT`` is unset; results
match the references to rounding (tests hold them together). Formulas: see base.py.

One step of a whole parameter group is ONE numba call per thread. The group's tensors are
laid end to end in a flat index space, which is cut into one contiguous run per thread; each
thread walks the tensors its run covers. So a hundred small tensors share one dispatch, and
ten large ones are split exactly as evenly. The threads are cpu_threads' plain Python
threads running these nogil kernels, not numba's OpenMP pool (why: see cpu_threads.py).
The kernel finds the tensors through a table of data pointers (an array's buffer address,
its size from its shape), because numba's ways of passing a variable number of arrays cost
more than the update of small tensors (measured on 2 cores, 100 arrays: a typed List 190 us
to build, a reflected list 960 us per call, a tuple one compilation per length, 2.5 s at
100; ``ndarray.ctypes.data`` 1 us per array; one kernel call per tensor, the old way, ~5 us
of parallel launch each). The table is read by compiled code from the arrays' C structs,
given their ``id()``s (NumPy's ABI-stable ``PyArrayObject`` layout, located and verified at
import): about 0.1 us per array, checks included. Anything unexpected (a subclass, a dtype
object that is not NumPy's own float32/float64, an unrecognised layout) takes a plain-Python
path that checks the group as reference.py does and reads the same table with
``ndarray.ctypes``.

A group below ``PARALLEL_MIN`` elements in total runs on the calling thread alone: waking
other threads for a few biases costs more than the update itself. The element loops are the
per-element formulas of the per-tensor kernels they replace, in the same order: the same
bits (tests hold every flag of every optimizer to those formulas written out in NumPy). One
change: RMSprop without centering computes sqrt(v), where the old loop formed
sqrt(v - 0 * a^2) (the same unless a^2 = inf).
"""
from __future__ import annotations

import ctypes
import os

import numpy as np

from . import checks, cpu_threads, optim_scalars
from .cpu_threads import PARALLEL_MIN  # noqa: F401  (re-exported: tests and callers use it)

try:
    if os.environ.get("GRADLAB_NO_JIT"):
        raise ImportError("GRADLAB_NO_JIT is set")
    import numba
    from numba.core import cgutils, types
    from numba.extending import intrinsic
except ImportError as exc:  # no numba (none for this Python) or switched off: NumPy tier
    numba = None
    UNAVAILABLE_REASON = str(exc)
else:
    UNAVAILABLE_REASON = None

AVAILABLE = numba is not None


# -- element loops ------------------------------------------------------------------------------
# Flags are resolved outside the element loops (one loop per case) and the sign of
# ``maximize`` is a multiplier: a branch inside the loop stops LLVM from vectorizing it.
# Every float scalar arrives in the arrays' dtype and complements such as 1 - beta come
# precomputed: a float64 literal would turn float32 updates into float64 arithmetic,
# measured 3x slower on 10M elements. Kernels use numba's "numpy" error model: a division
# by zero gives inf/nan as in NumPy (the "python" model's check would block vectorization).

def _adam_body(p, g, m, v, vmax, step_size, bc2_sqrt, b1, c1, b2, c2, eps, wd, decay, sign,
               amsgrad):
    if amsgrad:
        for i in range(p.size):
            gi = sign * g[i] + wd * p[i]
            mi = b1 * m[i] + c1 * gi
            vi = b2 * v[i] + c2 * gi * gi
            m[i] = mi
            v[i] = vi
            vi = max(vmax[i], vi)
            vmax[i] = vi
            p[i] = p[i] * decay - step_size * mi / (np.sqrt(vi) / bc2_sqrt + eps)
    else:
        for i in range(p.size):
            gi = sign * g[i] + wd * p[i]
            mi = b1 * m[i] + c1 * gi
            vi = b2 * v[i] + c2 * gi * gi
            m[i] = mi
            v[i] = vi
            p[i] = p[i] * decay - step_size * mi / (np.sqrt(vi) / bc2_sqrt + eps)


def _sgd_body(p, g, b, lr, momentum, undamped, wd, sign, nesterov, first):
    if momentum == 0.0:
        for i in range(p.size):
            p[i] -= lr * (sign * g[i] + wd * p[i])
    elif first:
        for i in range(p.size):
            gi = sign * g[i] + wd * p[i]
            b[i] = gi
            p[i] -= lr * (gi + momentum * gi if nesterov else gi)
    elif nesterov:
        for i in range(p.size):
            gi = sign * g[i] + wd * p[i]
            bi = momentum * b[i] + undamped * gi
            b[i] = bi
            p[i] -= lr * (gi + momentum * bi)
    else:
        for i in range(p.size):
            gi = sign * g[i] + wd * p[i]
            bi = momentum * b[i] + undamped * gi
            b[i] = bi
            p[i] -= lr * bi


def _rmsprop_body(p, g, v, b, a, lr, alpha, c_alpha, eps, wd, momentum, sign, centered):
    # avg = sqrt(v - a^2) + eps if centered else sqrt(v) + eps. Arrays of options that are
    # off are p (see the pointer table) and are never touched: a loop that merely read them
    # would fail LLVM's run-time overlap check and run unvectorized.
    if momentum != 0.0 and centered:
        for i in range(p.size):
            gi = sign * g[i] + wd * p[i]
            vi = alpha * v[i] + c_alpha * gi * gi
            v[i] = vi
            ai = alpha * a[i] + c_alpha * gi
            a[i] = ai
            bi = momentum * b[i] + gi / (np.sqrt(vi - ai * ai) + eps)
            b[i] = bi
            p[i] -= lr * bi
    elif momentum != 0.0:
        for i in range(p.size):
            gi = sign * g[i] + wd * p[i]
            vi = alpha * v[i] + c_alpha * gi * gi
            v[i] = vi
            bi = momentum * b[i] + gi / (np.sqrt(vi) + eps)
            b[i] = bi
            p[i] -= lr * bi
    elif centered:
        for i in range(p.size):
            gi = sign * g[i] + wd * p[i]
            vi = alpha * v[i] + c_alpha * gi * gi
            v[i] = vi
            ai = alpha * a[i] + c_alpha * gi
            a[i] = ai
            p[i] -= lr * gi / (np.sqrt(vi - ai * ai) + eps)
    else:
        for i in range(p.size):
            gi = sign * g[i] + wd * p[i]
            vi = alpha * v[i] + c_alpha * gi * gi
            v[i] = vi
            p[i] -= lr * gi / (np.sqrt(vi) + eps)


def _adagrad_body(p, g, s, clr, eps, wd, sign):
    for i in range(p.size):
        gi = sign * g[i] + wd * p[i]
        si = s[i] + gi * gi
        s[i] = si
        p[i] -= clr * gi / (np.sqrt(si) + eps)


def _adadelta_body(p, g, v, u, lr, rho, c_rho, eps, wd, sign):
    for i in range(p.size):
        gi = sign * g[i] + wd * p[i]
        vi = rho * v[i] + c_rho * gi * gi
        v[i] = vi
        d = np.sqrt(u[i] + eps) / np.sqrt(vi + eps) * gi
        u[i] = rho * u[i] + c_rho * d * d
        p[i] -= lr * d


# -- the pointer table --------------------------------------------------------------------------
# A group is given as ``ptrs`` (rows: p, g, then the optimizer's states; one column per
# tensor: the address of its first element) and ``offsets`` (n + 1 running element counts:
# tensor t is [offsets[t], offsets[t + 1]) of the flat space). A state that is off repeats
# p's row; its kernel never touches it.

_C_CONTIGUOUS = 0x0001  # NPY_ARRAY_C_CONTIGUOUS
_WRITEABLE = 0x0400     # NPY_ARRAY_WRITEABLE
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)


def _struct_layout():
    """Byte offsets of ob_type, data, nd, dimensions, descr and flags in an ndarray object,
    found and checked on sample arrays; None when anything differs from expectations (then
    every table is read by the Python path)."""
    word = ctypes.sizeof(ctypes.c_void_p)
    if ctypes.sizeof(ctypes.c_ssize_t) != word or np.dtype(np.intp).itemsize != word:
        return None
    samples = [np.zeros((4, 6))[:, 1:5], np.arange(3, dtype=np.float32), np.empty(0),
               np.ones((2, 3, 1), np.float32)]
    samples[1].setflags(write=False)
    nwords = np.ndarray.__basicsize__ // word  # read no further than the object itself
    first = list((ctypes.c_ssize_t * nwords).from_address(id(samples[0])))
    try:
        type_at = first.index(id(np.ndarray)) * word
        data_at = first.index(samples[0].ctypes.data) * word
    except ValueError:
        return None
    # PyArrayObject: data, nd, dimensions, strides, base, descr, flags (NumPy 1.x and 2.x).
    layout = dict(type=type_at, data=data_at, nd=data_at + word, dims=data_at + 2 * word,
                  descr=data_at + 5 * word, flags=data_at + 6 * word)
    if max(layout.values()) + word > nwords * word:
        return None

    def at(a, name, ctype=ctypes.c_ssize_t):
        return ctype.from_address(id(a) + layout[name]).value

    for a in samples:
        dims = (ctypes.c_ssize_t * a.ndim).from_address(at(a, "dims")) if a.ndim else ()
        if (at(a, "type") != id(type(a)) or at(a, "data") != a.ctypes.data
                or at(a, "nd", ctypes.c_int) != a.ndim or tuple(dims) != a.shape
                or at(a, "descr") != id(a.dtype) or at(a, "flags", ctypes.c_int) != a.flags.num):
            return None
    return np.array([layout[k] for k in ("type", "data", "nd", "dims", "descr", "flags")]
                    + [id(np.ndarray)], dtype=np.intp)


def _table_python(op, params, grads, states):
    """The pointer table read with Python attribute access after the full argument checks:
    for arrays the compiled reader declines (subclasses, equal but distinct dtype objects,
    an unexpected ndarray layout), and to raise the errors of bad groups."""
    named = {f"state{k}": s for k, s in enumerate(states)}
    lists = {"params": params, "grads": grads, **{k: s for k, s in named.items() if s is not None}}
    for name, arrays in lists.items():
        for i, a in enumerate(arrays):
            if not isinstance(a, np.ndarray):
                raise TypeError(f"{op}: {name}[{i}] is a {type(a).__name__}, not a NumPy array")
    checks.group_dtype(op, params, grads, **named)
    ptrs = np.empty((2 + len(states), len(params)), dtype=np.intp)
    for r, arrays in enumerate((params, grads, *states)):
        name = "params" if r == 0 else "grads" if r == 1 else f"state{r - 2}"
        for i, a in enumerate(params if arrays is None else arrays):
            if r != 1 and not a.flags.writeable:
                raise ValueError(f"{op}: {name}[{i}] is read-only; optimizer steps update "
                                 f"params and their states in place")
            ptrs[r, i] = a.ctypes.data
    offsets = np.zeros(len(params) + 1, dtype=np.intp)
    np.cumsum([a.size for a in params], out=offsets[1:])
    return ptrs, offsets


def _table(op, params, grads, states):
    """(ptrs, offsets, scalar type) of one group, or None for an empty one. Rejects what
    reference.py rejects, with the same errors (checks.group_dtype), and read-only params
    or states. ``states``: a tuple of lists, None for an option that is off. The caller's
    lists keep every array alive while the kernel uses the table."""
    n = len(params)
    if n == 0 or len(grads) != n or any(s is not None and len(s) != n for s in states):
        checks.group_dtype(op, params, grads, **{f"state{k}": s for k, s in enumerate(states)})
        return None  # empty (mismatched lengths raised)
    dtype = getattr(params[0], "dtype", None)
    if _LAYOUT is not None and (dtype is _F32 or dtype is _F64):
        ids = np.array([list(map(id, params if s is None else s))
                        for s in (params, grads, *states)], dtype=np.intp)
        ptrs = np.empty(ids.shape, dtype=np.intp)
        offsets = np.empty(n + 1, dtype=np.intp)
        if _read_table(ids, _LAYOUT, id(dtype), ptrs, offsets):
            return ptrs, offsets, dtype.type
    ptrs, offsets = _table_python(op, params, grads, states)
    return ptrs, offsets, params[0].dtype.type


def _word(addr):
    return numba.carray(_voidptr(addr), 1, np.intp)[0]


def _int(addr):
    return numba.carray(_voidptr(addr), 1, np.intc)[0]


def _read_table_body(ids, layout, descr, ptrs, offsets):
    """Fill ptrs/offsets from the objects whose ids are given (rows: p, g, states; one column
    per tensor). True when every object is an exact ndarray with the dtype object ``descr``,
    C-contiguous, writable (except grads) and shaped as its param; False at the first one
    that is not (the Python path then raises the error, or takes the group if it is valid
    after all)."""
    at_type, at_data, at_nd, at_dims, at_descr, at_flags, ndarray = (
        layout[0], layout[1], layout[2], layout[3], layout[4], layout[5], layout[6])
    rows, n = ids.shape
    word = layout.itemsize
    offsets[0] = 0
    for i in range(n):
        size = 1
        p_nd = 0
        p_dims = 0
        for r in range(rows):
            obj = ids[r, i]
            if _word(obj + at_type) != ndarray or _word(obj + at_descr) != descr:
                return False
            flags = _int(obj + at_flags)
            if flags & _C_CONTIGUOUS == 0 or (r != 1 and flags & _WRITEABLE == 0):
                return False
            nd = _int(obj + at_nd)
            dims = _word(obj + at_dims)
            if r == 0:
                p_nd, p_dims = nd, dims
                for d in range(nd):
                    size *= _word(dims + d * word)
            elif nd != p_nd:
                return False
            else:
                for d in range(nd):
                    if _word(dims + d * word) != _word(p_dims + d * word):
                        return False
            ptrs[r, i] = _word(obj + at_data)
        offsets[i + 1] = offsets[i] + size
    return True


# -- multi-tensor kernels ----------------------------------------------------------------------
# ``_<name>_part(k, nparts, ptrs, offsets, sc, *flags)`` updates part k of nparts of the
# group's flat index space (contiguous, equal element counts): the pieces of the tensors it
# covers. ``sc`` holds the float scalars in the arrays' dtype (their order: the body's
# arguments), ``flags`` the booleans. cpu_threads.run_parts runs the parts, one per thread.
# Tensors of one group must not overlap in memory (the parts run concurrently).

def _view(ptrs, row, t, lo, n, like):
    """Elements [lo, lo + n) of tensor t's row-th array, of the dtype of array ``like``."""
    return numba.carray(_voidptr(ptrs[row, t]), lo + n, like.dtype)[lo:]


def _span(offsets, k, nparts):
    """Part k of nparts: flat range [lo, hi) and the last tensor t with offsets[t] <= lo
    (a bisection; numba's np.searchsorted costs a third of a second to compile)."""
    total = offsets[offsets.size - 1]
    lo = k * total // nparts
    hi = (k + 1) * total // nparts
    a, b = 0, offsets.size - 1
    while b - a > 1:
        mid = (a + b) // 2
        if offsets[mid] <= lo:
            a = mid
        else:
            b = mid
    return lo, hi, a


def _adam_part(k, nparts, ptrs, offsets, sc, amsgrad):
    lo, hi, t = _span(offsets, k, nparts)
    while lo < hi:  # the pieces of tensors t, t + 1, ... inside [lo, hi)
        a = lo - offsets[t]
        n = min(hi, offsets[t + 1]) - lo
        if n > 0:
            _adam_elems(_view(ptrs, 0, t, a, n, sc), _view(ptrs, 1, t, a, n, sc),
                        _view(ptrs, 2, t, a, n, sc), _view(ptrs, 3, t, a, n, sc),
                        _view(ptrs, 4, t, a, n, sc), sc[0], sc[1], sc[2], sc[3], sc[4],
                        sc[5], sc[6], sc[7], sc[8], sc[9], amsgrad)
            lo += n
        t += 1



def _sgd_part(k, nparts, ptrs, offsets, sc, nesterov, first):
    lo, hi, t = _span(offsets, k, nparts)
    while lo < hi:
        a = lo - offsets[t]
        n = min(hi, offsets[t + 1]) - lo
        if n > 0:
            _sgd_elems(_view(ptrs, 0, t, a, n, sc), _view(ptrs, 1, t, a, n, sc),
                       _view(ptrs, 2, t, a, n, sc), sc[0], sc[1], sc[2], sc[3], sc[4],
                       nesterov, first)
            lo += n
        t += 1



def _rmsprop_part(k, nparts, ptrs, offsets, sc, centered):
    lo, hi, t = _span(offsets, k, nparts)
    while lo < hi:
        a = lo - offsets[t]
        n = min(hi, offsets[t + 1]) - lo
        if n > 0:
            _rmsprop_elems(_view(ptrs, 0, t, a, n, sc), _view(ptrs, 1, t, a, n, sc),
                           _view(ptrs, 2, t, a, n, sc), _view(ptrs, 3, t, a, n, sc),
                           _view(ptrs, 4, t, a, n, sc), sc[0], sc[1], sc[2], sc[3], sc[4],
                           sc[5], sc[6], centered)
            lo += n
        t += 1



def _adagrad_part(k, nparts, ptrs, offsets, sc):
    lo, hi, t = _span(offsets, k, nparts)
    while lo < hi:
        a = lo - offsets[t]
        n = min(hi, offsets[t + 1]) - lo
        if n > 0:
            _adagrad_elems(_view(ptrs, 0, t, a, n, sc), _view(ptrs, 1, t, a, n, sc),
                           _view(ptrs, 2, t, a, n, sc), sc[0], sc[1], sc[2], sc[3])
            lo += n
        t += 1



def _adadelta_part(k, nparts, ptrs, offsets, sc):
    lo, hi, t = _span(offsets, k, nparts)
    while lo < hi:
        a = lo - offsets[t]
        n = min(hi, offsets[t + 1]) - lo
        if n > 0:
            _adadelta_elems(_view(ptrs, 0, t, a, n, sc), _view(ptrs, 1, t, a, n, sc),
                            _view(ptrs, 2, t, a, n, sc), _view(ptrs, 3, t, a, n, sc),
                            sc[0], sc[1], sc[2], sc[3], sc[4], sc[5])
            lo += n
        t += 1



_KERNELS = {}  # name -> part kernel (nogil; cpu_threads runs the parts)
if AVAILABLE:
    @intrinsic
    def _voidptr(typingctx, addr):
        """An integer address as a void pointer (for numba.carray)."""
        if not isinstance(addr, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], cgutils.voidptr_t)
        return types.voidptr(addr), codegen

    _jit = numba.njit(cache=True, nogil=True, error_model="numpy")
    _inline = numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
    _word = _jit(_word)
    _int = _jit(_int)
    _view = _jit(_view)
    _span = _jit(_span)
    # Reads Python objects: keeps the GIL, so no other thread changes them meanwhile.
    _read_table = numba.njit(cache=True)(_read_table_body)
    _adam_elems = _inline(_adam_body)
    _sgd_elems = _inline(_sgd_body)
    _rmsprop_elems = _inline(_rmsprop_body)
    _adagrad_elems = _inline(_adagrad_body)
    _adadelta_elems = _inline(_adadelta_body)
    _adam_part = _jit(_adam_part)
    _sgd_part = _jit(_sgd_part)
    _rmsprop_part = _jit(_rmsprop_part)
    _adagrad_part = _jit(_adagrad_part)
    _adadelta_part = _jit(_adadelta_part)
    for _name, _part in (("adam", _adam_part), ("sgd", _sgd_part), ("rmsprop", _rmsprop_part),
                         ("adagrad", _adagrad_part), ("adadelta", _adadelta_part)):
        _KERNELS[_name] = _part
    _LAYOUT = _struct_layout()
else:
    _LAYOUT = None


def _run(name, table, scalars, *flags):
    """One step of kernel ``name`` over a whole group, cut into one part per thread from
    PARALLEL_MIN elements in total (cpu_threads), else one part on the calling thread.
    ``scalars`` are converted to the arrays' dtype (float32 updates stay float32)."""
    if table is None:
        return
    ptrs, offsets, dtype = table
    total = int(offsets[-1])
    if total == 0:
        return
    sc = np.array(scalars, dtype=dtype)
    cpu_threads.run_parts(_KERNELS[name], cpu_threads.parts_for(total), ptrs, offsets, sc,
                          *flags)


def adam_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, *, step, lr, beta1, beta2,
              eps, weight_decay, decoupled_weight_decay, amsgrad, maximize):
    checks.require_state("adam_step", "amsgrad", amsgrad, "max_exp_avg_sqs", max_exp_avg_sqs)
    table = _table("adam_step", params, grads,
                   (exp_avgs, exp_avg_sqs, max_exp_avg_sqs if amsgrad else None))
    sc = optim_scalars.adam_scalars(step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                                    weight_decay=weight_decay,
                                    decoupled_weight_decay=decoupled_weight_decay)
    _run("adam", table, (sc.step_size, sc.bc2_sqrt, sc.beta1, sc.one_minus_beta1, sc.beta2,
                         sc.one_minus_beta2, sc.eps, sc.coupled_wd, sc.decay,
                         -1.0 if maximize else 1.0), bool(amsgrad))


def sgd_step(params, grads, momentum_buffers, *, lr, momentum, dampening, nesterov,
             weight_decay, maximize, first_step):
    checks.require_state("sgd_step", "momentum != 0", momentum, "momentum_buffers",
                         momentum_buffers)
    table = _table("sgd_step", params, grads, (momentum_buffers if momentum else None,))
    sc = optim_scalars.sgd_scalars(lr=lr, momentum=momentum, dampening=dampening,
                                   weight_decay=weight_decay)
    _run("sgd", table, (*sc, -1.0 if maximize else 1.0), bool(nesterov), bool(first_step))


def rmsprop_step(params, grads, square_avgs, momentum_buffers, grad_avgs, *, lr, alpha, eps,
                 weight_decay, momentum, centered, maximize):
    checks.require_state("rmsprop_step", "momentum != 0", momentum, "momentum_buffers",
                         momentum_buffers)
    checks.require_state("rmsprop_step", "centered", centered, "grad_avgs", grad_avgs)
    table = _table("rmsprop_step", params, grads,
                   (square_avgs, momentum_buffers if momentum else None,
                    grad_avgs if centered else None))
    sc = optim_scalars.rmsprop_scalars(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                       momentum=momentum)
    _run("rmsprop", table, (*sc, -1.0 if maximize else 1.0), bool(centered))


def adagrad_step(params, grads, state_sums, *, step, lr, lr_decay, weight_decay, eps, maximize):
    table = _table("adagrad_step", params, grads, (state_sums,))
    sc = optim_scalars.adagrad_scalars(step=step, lr=lr, lr_decay=lr_decay, eps=eps,
                                       weight_decay=weight_decay)
    _run("adagrad", table, (*sc, -1.0 if maximize else 1.0))


def adadelta_step(params, grads, square_avgs, acc_deltas, *, lr, rho, eps, weight_decay,
                  maximize):
    table = _table("adadelta_step", params, grads, (square_avgs, acc_deltas))
    sc = optim_scalars.adadelta_scalars(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay)
    _run("adadelta", table, (*sc, -1.0 if maximize else 1.0))
