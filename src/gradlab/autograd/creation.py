"""Tensor factories: gl.tensor, zeros, ones, full, arange, randn, ... (PyTorch's names).

dtype rules follow PyTorch: Python floats give float32, Python ints give int64, bools give
bool, and a NumPy array keeps its dtype unless ``dtype`` says otherwise.
"""
from __future__ import annotations

import numbers

import numpy as np

from ..backend import get_backend
from .dtypes import as_dtype, bool_, default_float, int64
from .function import Function
from .grad_mode import _state
from .tensor import Tensor


def _finish(array, backend, requires_grad):
    t = Tensor._wrap(array, backend)
    if requires_grad:
        t.requires_grad = True
    return t


def _ragged_where(data, dim=0, index=()):
    """(dim, index, expected, got) of the first sequence whose length differs from its
    siblings' in nested lists/tuples, or None."""
    if not isinstance(data, (list, tuple)) or not data:
        return None
    seqs = [isinstance(x, (list, tuple)) for x in data]
    if any(seqs) and not all(seqs):
        i = seqs.index(not seqs[0])
        got = len(data[i]) if seqs[i] else "a scalar"
        want = len(data[0]) if seqs[0] else "a scalar"
        return dim + 1, index + (i,), want, got
    if all(seqs):
        for i, x in enumerate(data):
            if len(x) != len(data[0]):
                return dim + 1, index + (i,), len(data[0]), len(x)
        for i, x in enumerate(data):
            found = _ragged_where(x, dim + 1, index + (i,))
            if found:
                return found
    return None


def _infer_dtype(data):
    """The dtype PyTorch would give to host data of Python scalars and lists."""
    try:
        probe = np.asarray(data)
    except ValueError:
        found = _ragged_where(data)
        if found is None:
            raise
        dim, index, want, got = found
        raise ValueError(f"gl.tensor: ragged nested sequence: expected length {want} at dim "
                         f"{dim}, got {got} (the sequence at index {list(index)}); every row "
                         f"must have the same length: pad or trim the rows, or keep them as "
                         f"separate tensors") from None
    kind = probe.dtype.kind
    if kind == "f":
        return default_float, probe
    if kind in "iu":
        return int64, probe
    if kind == "b":
        return bool_, probe
    if kind == "c":
        return np.dtype(np.complex64), probe
    raise TypeError(f"can't make a tensor from {type(data).__name__} data (NumPy dtype "
                    f"{probe.dtype}); give numbers, nested lists of numbers, or an array")


def tensor(data, dtype=None, device=None, requires_grad=False):
    """A new tensor holding a copy of ``data`` (numbers, nested lists, an array, a tensor)."""
    backend = get_backend(device if device is not None or not isinstance(data, Tensor)
                          else data.device)
    dtype = as_dtype(dtype)
    if isinstance(data, Tensor):
        if _state.tape is not None:  # a copy no op made: a replay would keep the first batch's
            _state.tape.read("gl.tensor(t); use t.detach().clone()")
        source = data._data
    elif isinstance(data, (np.ndarray, np.generic)) or hasattr(data, "__cuda_array_interface__"):
        source = data
    else:
        if isinstance(data, (list, tuple)) and data and any(isinstance(x, Tensor) for x in data):
            data = [x.item() if isinstance(x, Tensor) else x for x in data]
        inferred, source = _infer_dtype(data)
        dtype = dtype or inferred
    array = backend.asarray(source, dtype=dtype)
    if array is source or array.base is not None:  # never alias the caller's memory
        array = array.copy()
    return _finish(array, backend, requires_grad)


def as_tensor(data, dtype=None, device=None):
    """Like ``tensor`` but shares memory with a NumPy array / tensor when it can."""
    if isinstance(data, Tensor) and (dtype is None or data.dtype == as_dtype(dtype)) and \
            (device is None or get_backend(device) is data._backend):
        return data
    if isinstance(data, np.ndarray) and (device is None or device == "cpu" or
                                         get_backend(device).device.type == "cpu"):
        return _finish(np.asarray(data, dtype=as_dtype(dtype)), get_backend("cpu"), False)
    return tensor(data, dtype=dtype, device=device)


def from_numpy(array: np.ndarray) -> Tensor:
    """A CPU tensor sharing memory with ``array``."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy expects a numpy.ndarray, got {type(array).__name__}")
    return Tensor._wrap(array, get_backend("cpu"))


class Size(tuple):
    """PyTorch's shape type: a tuple of ints (``t.shape`` is a plain tuple, which compares
    equal to it)."""

    def numel(self):
        n = 1
        for s in self:
            n *= s
        return n


def is_tensor(obj) -> bool:
    return isinstance(obj, Tensor)


def numel(input) -> int:
    return input.numel()


# DLPack device types (dlpack.h): the ones gradlab has a backend for.
_DL_CPU, _DL_CUDA, _DL_CUDA_HOST = 1, 2, 3


def from_dlpack(ext_tensor) -> Tensor:
    """A tensor sharing memory with any DLPack exporter: a NumPy, PyTorch, CuPy or JAX array
    (or a gradlab tensor), on the CPU or a CUDA device, without a copy."""
    if isinstance(ext_tensor, Tensor):
        return ext_tensor
    if not hasattr(ext_tensor, "__dlpack_device__") or not hasattr(ext_tensor, "__dlpack__"):
        raise TypeError(f"gl.from_dlpack needs an object with __dlpack__ and "
                        f"__dlpack_device__ (a NumPy, PyTorch, CuPy or JAX array), got "
                        f"{type(ext_tensor).__name__}; for other data use gl.tensor(data)")
    kind, index = ext_tensor.__dlpack_device__()
    if kind in (_DL_CPU, _DL_CUDA_HOST):
        backend = get_backend("cpu")
    elif kind == _DL_CUDA:
        backend = get_backend(f"cuda:{int(index)}")
    else:
        raise ValueError(f"gl.from_dlpack: the array lives on DLPack device type {kind}, "
                         f"which gradlab has no backend for (it runs on the CPU and CUDA); "
                         f"move it to the CPU or a CUDA GPU in its own library first")
    return Tensor._wrap(backend.xp.from_dlpack(ext_tensor), backend)


def _size(size, keyword=None):
    if keyword is not None:
        if size:
            raise TypeError(f"give the size once, positionally or as size=, not both "
                            f"(got {size} and size={keyword})")
        size = (keyword,)
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    for s in size:
        if not isinstance(s, (int, np.integer)) or isinstance(s, bool) or s < 0:
            raise ValueError(f"sizes must be non-negative ints, got {tuple(size)}")
    return tuple(int(s) for s in size)


def _size_kw(kw):
    """PyTorch's ``size=`` keyword (``*size`` can't also be a keyword in Python)."""
    size = kw.pop("size", None)
    if kw:
        raise TypeError(f"unexpected keyword argument(s) {sorted(kw)}")
    return size


def _filled(fill, size, dtype, device, requires_grad):
    backend = get_backend(device)
    dtype = as_dtype(dtype) or default_float
    return _finish(backend.xp.full(_size(size), fill, dtype=dtype), backend, requires_grad)


def zeros(*size, dtype=None, device=None, requires_grad=False, **kw):
    return _filled(0, _size(size, _size_kw(kw)), dtype, device,
                   requires_grad)


def ones(*size, dtype=None, device=None, requires_grad=False, **kw):
    return _filled(1, _size(size, _size_kw(kw)), dtype, device,
                   requires_grad)


def empty(*size, dtype=None, device=None, requires_grad=False, **kw):
    backend = get_backend(device)
    dtype = as_dtype(dtype) or default_float
    return _finish(backend.xp.empty(_size(size, _size_kw(kw)), dtype=dtype), backend,
                   requires_grad)


def full(size, fill_value, dtype=None, device=None, requires_grad=False):
    if dtype is None:
        dtype = _infer_dtype(fill_value)[0]
    return _filled(fill_value, (size,) if isinstance(size, int) else size, dtype, device,
                   requires_grad)


def _like(fn, input, dtype, device, requires_grad, *args):
    return fn(*args, input.shape, dtype=dtype or input.dtype,
              device=device or input.device, requires_grad=requires_grad)


def zeros_like(input, dtype=None, device=None, requires_grad=False):
    return _like(zeros, input, dtype, device, requires_grad)


def ones_like(input, dtype=None, device=None, requires_grad=False):
    return _like(ones, input, dtype, device, requires_grad)


def empty_like(input, dtype=None, device=None, requires_grad=False):
    return _like(empty, input, dtype, device, requires_grad)


def full_like(input, fill_value, dtype=None, device=None, requires_grad=False):
    return full(input.shape, fill_value, dtype=dtype or input.dtype,
                device=device or input.device, requires_grad=requires_grad)


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False):
    if end is None:
        start, end = 0, start
    if dtype is None:
        dtype = _infer_dtype([start, end, step])[0]
    if step == 0:
        raise ValueError("arange: step must be non-zero")
    backend = get_backend(device)
    return _finish(backend.xp.arange(start, end, step, dtype=as_dtype(dtype)), backend,
                   requires_grad)


def linspace(start, end, steps, dtype=None, device=None, requires_grad=False):
    backend = get_backend(device)
    return _finish(backend.xp.linspace(start, end, steps, dtype=as_dtype(dtype) or default_float),
                   backend, requires_grad)


def eye(n, m=None, dtype=None, device=None, requires_grad=False):
    backend = get_backend(device)
    return _finish(backend.xp.eye(n, m, dtype=as_dtype(dtype) or default_float), backend,
                   requires_grad)


class Draw(Function):
    """A random factory's draw as an op without inputs or gradient, so that a recorded step
    (autograd/tape.py) draws afresh at each replay, from where the generator stands then,
    as each eager step does (``x + 0.1 * gl.randn_like(x)`` in a forward)."""
    differentiable = False

    def forward(ctx, kind, size, dtype, generator, low=0, high=None):
        return ctx.backend.draw(kind, size, dtype, generator, low, high)


def _generator_for(kind, generator, backend):
    if generator is not None and backend.device.type != "cpu":
        raise RuntimeError(f"{kind}: generator= is a CPU generator, and the draw is on "
                           f"{backend.device}; draws there come from gl.manual_seed (or draw "
                           f"on the CPU, then .to('{backend.device}'))")
    return generator


def _draw(kind, size, dtype, device, requires_grad, generator):
    backend = get_backend(device)
    dtype = as_dtype(dtype) or default_float
    if dtype.kind != "f":
        raise TypeError(f"{kind}: dtype must be floating point, got {dtype}")
    generator = _generator_for(kind, generator, backend)
    if requires_grad:  # a leaf: no op (a step that makes one records it as a constant)
        return _finish(backend.draw(kind, _size(size), dtype, generator), backend, True)
    return Draw.apply_on(backend, kind=kind, size=_size(size), dtype=dtype,
                         generator=generator)


def rand(*size, dtype=None, device=None, requires_grad=False, generator=None, **kw):
    """Uniform samples in [0, 1)."""
    return _draw("rand", _size(size, _size_kw(kw)), dtype, device, requires_grad, generator)


def randn(*size, dtype=None, device=None, requires_grad=False, generator=None, **kw):
    """Standard normal samples."""
    return _draw("randn", _size(size, _size_kw(kw)), dtype, device, requires_grad, generator)


def rand_like(input, dtype=None, device=None, requires_grad=False):
    return rand(input.shape, dtype=dtype or input.dtype, device=device or input.device,
                requires_grad=requires_grad)


def randn_like(input, dtype=None, device=None, requires_grad=False):
    return randn(input.shape, dtype=dtype or input.dtype, device=device or input.device,
                 requires_grad=requires_grad)


def randint(low, high=None, size=None, dtype=None, device=None, generator=None):
    """Integers drawn uniformly from [low, high): ``randint(low, high, size)``, or
    PyTorch's ``randint(high, size)``."""
    if size is None and isinstance(high, (tuple, list)):
        low, high, size = 0, low, high
    if high is None:
        low, high = 0, low
    if size is None:
        raise TypeError("randint: size is required, e.g. gl.randint(0, 10, (3,))")
    if high <= low:
        raise ValueError(f"randint: need low < high, got low={low}, high={high}")
    backend = get_backend(device)
    return Draw.apply_on(backend, kind="randint",
                         size=_size((size,) if isinstance(size, int) else size),
                         dtype=as_dtype(dtype) or int64,
                         generator=_generator_for("randint", generator, backend),
                         low=low, high=high)


def randperm(n, dtype=None, device=None, generator=None):
    """A random permutation of 0 .. n - 1 (a Draw: a recorded step permutes afresh)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"randperm: n must be a non-negative int, got {n!r}")
    backend = get_backend(device)
    return Draw.apply_on(backend, kind="randperm", size=(int(n),),
                         dtype=as_dtype(dtype) or int64,
                         generator=_generator_for("randperm", generator, backend))
