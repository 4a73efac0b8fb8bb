"""Tensor: an array on some backend plus what autograd needs to know about it.

The differentiable operators and methods (``+``, ``@``, ``.sum()``, ``.reshape()``, ...)
are declared on the mixin :class:`~gradlab.autograd.tensor_methods.TensorMethods`, which
Tensor inherits; each runs its op from ``gradlab.functional`` (tensor_methods.py says why
there).
"""
from __future__ import annotations

import operator
from typing import Any, Callable

import numpy as np

from ..backend import Device, get_backend
from . import grad_mode
from .dtypes import bool_, float32, int64
from .tensor_methods import _F, TensorMethods

# Counts the changes that can make a recorded step stale: a tensor's storage rebound
# (``t.data = ...``, ``module.to()``), a tensor's requires_grad switched (a parameter
# frozen) or a module's attributes set. A compiled step
# re-checks its guards only when this moved (train/compiled.py).
structure_version = [0]

# What the arithmetic operators are to a type checker: (tensor, tensor or number) -> tensor.
_BinaryOperator = Callable[["Tensor", Any], "Tensor"]


def _arithmetic(raw, function, true_divide=False) -> tuple[_BinaryOperator, _BinaryOperator]:
    """A binary arithmetic operator and its reflected twin (``other op self``), each with a
    fast path for calls that record no graph; the general path is
    ``gradlab.functional.elementwise.<function>.apply``.

    The four arithmetic operators on a tensor and a Python number or a same-device tensor are
    most of what user code runs outside training, and on small arrays Function.apply costs
    more than the NumPy call itself. Only ops whose forward is exactly ``raw`` on the raw
    arrays come here (Add/Sub/Mul/Div.compute are ``a op b``; ``true_divide`` is Div's), so
    the result is bit-identical to the general path; every other case, broadcast errors
    included, takes the general path, which also produces the errors. One flat function
    each: a helper call costs about as much as the checks. They are Tensor's own operators,
    not TensorMethods' forwarders, so that this path costs no call more than the NumPy op.
    """
    state = grad_mode._state
    apply = None  # Add.apply etc.: functional sits above autograd, so found at first use

    def load():
        nonlocal apply
        apply = getattr(_F.elementwise, function).apply
        return apply

    def op(input, other):
        # (A step being recorded takes the general path, so that the tape sees the op.)
        if input.__class__ is Tensor and not (input._requires_grad and state.enabled) \
                and state.tape is None:
            kind = other.__class__
            a = input._data
            if kind is float or kind is int:
                # An integer tensor with a float (or divided at all) changes dtype: the general
                # path applies PyTorch's promotion.
                if (kind is float or true_divide) and a.dtype.kind != "f":
                    return (apply or load())(input, other)
                b = other
            elif kind is Tensor and other._backend is input._backend and not (
                    other._requires_grad and state.enabled) and other._data.dtype == a.dtype \
                    and not (true_divide and a.dtype.kind != "f"):
                b = other._data
            else:
                return (apply or load())(input, other)
            try:
                out = raw(a, b)
            except (ValueError, TypeError, ZeroDivisionError):
                return (apply or load())(input, other)
            backend = input._backend
            if out.__class__ is not backend.ndarray:
                out = backend.xp.asarray(out)  # NumPy returns scalars for 0-d results
            return _wrap(out, backend)
        return (apply or load())(input, other)

    def reflected(self, other):
        if self.__class__ is Tensor and not (self._requires_grad and state.enabled) \
                and state.tape is None:
            kind = other.__class__
            if (kind is float or kind is int) and not (
                    (kind is float or true_divide) and self._data.dtype.kind != "f"):
                try:
                    out = raw(other, self._data)
                except (ValueError, TypeError, ZeroDivisionError):
                    return (apply or load())(other, self)
                backend = self._backend
                if out.__class__ is not backend.ndarray:
                    out = backend.xp.asarray(out)
                return _wrap(out, backend)
        return (apply or load())(other, self)

    name = raw.__name__.strip("_")
    for fn, dunder, text in ((op, f"__{name}__", f"self {name} other"),
                             (reflected, f"__r{name}__", f"other {name} self")):
        fn.__name__, fn.__qualname__ = dunder, f"Tensor.{dunder}"
        fn.__doc__ = f"{text} (gradlab.functional.elementwise.{function})"
    return op, reflected



class Tensor(TensorMethods):
    """An n-dimensional array that can record the operations applied to it.

    Create tensors with ``gl.tensor``, ``gl.zeros``, ``gl.randn`` and friends rather than
    calling this constructor, which wraps an existing backend array without copying.
    """

    # ``_data`` is the backend array (numpy.ndarray or cupy.ndarray) that every op reads;
    # ``data`` is PyTorch's property, a Tensor view of it for user code.
    __slots__ = ("_data", "grad", "_requires_grad", "grad_fn", "_backend", "_version",
                 "__weakref__")
    # NumPy must hand binary operators with a Tensor on the right to the Tensor.
    __array_ufunc__ = None

    # -- arithmetic operators; the rest are declared on TensorMethods ----------------------
    __add__, __radd__ = _arithmetic(operator.add, "Add")
    __sub__, __rsub__ = _arithmetic(operator.sub, "Sub")
    __mul__, __rmul__ = _arithmetic(operator.mul, "Mul")
    __truediv__, __rtruediv__ = _arithmetic(operator.truediv, "Div", true_divide=True)

    def __init__(self, data, requires_grad=False, *, backend=None, grad_fn=None):
        if backend is None:
            backend = get_backend("cpu") if isinstance(data, np.ndarray) else \
                _backend_of_array(data)
        self._data = data
        self.grad = None
        self._backend = backend
        self.grad_fn = grad_fn
        self._version = [0]
        self._requires_grad = False
        if requires_grad:
            _check_requires_grad(data, self.grad_fn, True)
            self._requires_grad = True

    # -- construction shortcut used by every op (no checks: the op guarantees them) -------
    @classmethod
    def _wrap(cls, data, backend, grad_fn=None):
        t = object.__new__(cls)
        t._data = data
        t.grad = None
        t._backend = backend
        t.grad_fn = grad_fn
        t._version = [0]
        t._requires_grad = grad_fn is not None
        return t

    def __reduce_ex__(self, protocol):
        raise TypeError("gradlab tensors are not pickled (save them with gl.save, load them "
                        "with gl.load) nor shallow-copied (t.clone() or copy.deepcopy(t) copy "
                        "one)")

    def __deepcopy__(self, memo):
        """``copy.deepcopy``: a leaf with its own copy of the data (and of ``.grad``), of the
        same class (a Parameter stays one), on the same device; what ``best =
        copy.deepcopy(model.state_dict())`` relies on. As in PyTorch, only leaves: a copy
        of a graph node would copy its graph."""
        if self.grad_fn is not None:
            raise RuntimeError("deepcopy: only tensors created by the user (graph leaves) can "
                               "be deep-copied; deep-copy t.detach() for a copy of the values")
        new = object.__new__(type(self))
        memo[id(self)] = new
        Tensor.__init__(new, self._data.copy(), backend=self._backend)
        new._requires_grad = self._requires_grad
        if self.grad is not None:
            new.grad = self.grad.__deepcopy__(memo)
        return new

    # -- autograd attributes ------------------------------------------------------------
    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value):
        value = bool(value)
        _check_requires_grad(self._data, self.grad_fn, value)
        if value != self._requires_grad:
            # Freezing or unfreezing a parameter changes what a compiled step computes.
            structure_version[0] += 1
        self._requires_grad = value

    def requires_grad_(self, requires_grad=True):
        self.requires_grad = requires_grad
        return self

    @property
    def is_leaf(self) -> bool:
        return self.grad_fn is None

    def detach(self) -> "Tensor":
        """A tensor sharing this one's data and version counter, cut from the graph: as in
        PyTorch, an in-place change through it is caught if backward needs the old values
        (``t.data`` is the unchecked variant)."""
        t = Tensor._wrap(self._data, self._backend)
        t._version = self._version
        return t

    @property
    def data(self) -> "Tensor":
        """PyTorch's ``t.data``: a tensor sharing t's memory, with requires_grad=False, no
        grad_fn and a version counter of its own, so autograd does not see changes made
        through it (``w.data -= lr * w.grad.data``, ``m.bias.data.fill_(0.01)``). Prefer
        ``with gl.no_grad():`` plus in-place ops, or ``t.detach()``, which autograd checks.
        """
        return Tensor._wrap(self._data, self._backend)

    @data.setter
    def data(self, value):
        """``t.data = other`` makes t use other's memory (shape, dtype and device may all
        change), keeping t's identity, grad and graph flags, as PyTorch does."""
        if not isinstance(value, Tensor):
            raise TypeError(f"t.data must be set to a Tensor, not {type(value).__name__}; "
                            "wrap it with gl.tensor() or gl.as_tensor() first")
        if self._requires_grad and value._data.dtype.kind not in "fc":
            raise RuntimeError(f"t.data = ...: t requires grad, so its data must be "
                               f"floating-point, not {value._data.dtype}")
        if value._data is self._data and value._backend is self._backend:
            return  # `t.data -= x` assigns t's own memory back: nothing changes
        self._data = value._data
        self._backend = value._backend
        structure_version[0] += 1

    def detach_(self) -> "Tensor":
        if self._requires_grad:
            structure_version[0] += 1  # as the requires_grad setter
        self.grad_fn = None
        self._requires_grad = False
        return self

    def backward(self, gradient=None, retain_graph=False, create_graph=False):
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``.

        ``gradient`` is required unless this tensor holds a single element. The graph is
        freed afterwards unless ``retain_graph=True``.
        """
        from .engine import backward
        backward(self, gradient, retain_graph=retain_graph, create_graph=create_graph)

    def register_hook(self, hook):
        """Call ``hook(grad)`` with this tensor's gradient each time backward computes it;
        a tensor it returns (same shape) replaces the gradient. Returns a handle whose
        ``remove()`` takes the hook off (autograd/hooks.py)."""
        from . import hooks
        return hooks.register(self, hook)

    def retain_grad(self):
        """Keep this non-leaf's gradient in ``.grad`` at the next backward (leaves keep
        theirs anyway): ``h.retain_grad(); loss.backward(); h.grad``."""
        from . import hooks
        hooks.retain(self)

    @property
    def retains_grad(self) -> bool:
        from . import hooks
        return hooks.tensor_retains(self)

    # -- metadata -----------------------------------------------------------------------
    # A recorded step must see a Python read of a shape that depends on values (x[mask]).
    @property
    def shape(self):
        if grad_mode._state.tape is not None:
            grad_mode._state.tape.shape_read(self._data)
        return self._data.shape

    def size(self, dim=None):
        if grad_mode._state.tape is not None:
            grad_mode._state.tape.shape_read(self._data)
        if dim is None:
            return self._data.shape
        return self._data.shape[dim]

    @property
    def ndim(self):
        return self._data.ndim

    def dim(self):
        return self._data.ndim

    def numel(self):
        if grad_mode._state.tape is not None:
            grad_mode._state.tape.shape_read(self._data)
        return self._data.size

    def __len__(self):
        if grad_mode._state.tape is not None:
            grad_mode._state.tape.shape_read(self._data)
        if self._data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    @property
    def dtype(self):
        return self._data.dtype

    @property
    def device(self) -> Device:
        return self._backend.device

    @property
    def backend(self):
        return self._backend

    @property
    def is_cuda(self) -> bool:
        return self._backend.device.type == "cuda"

    def element_size(self):
        return self._data.itemsize

    def is_floating_point(self):
        return self._data.dtype.kind == "f"

    def is_contiguous(self):
        return bool(self._data.flags.c_contiguous)

    # -- conversion to host values ------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """The data as a NumPy array, sharing memory on the CPU."""
        if self._requires_grad:
            raise RuntimeError("can't call numpy() on a tensor that requires grad; use "
                               "t.detach().numpy()")
        if self._backend.device.type != "cpu":
            raise TypeError(f"can't convert a {self.device} tensor to numpy; copy it to the "
                            "host first with t.cpu()")
        if grad_mode._state.tape is not None:
            grad_mode._state.tape.read("numpy()")
        return self._data

    def __array__(self, dtype=None, copy=None):
        if grad_mode._state.tape is not None:
            grad_mode._state.tape.read("a conversion to a NumPy array")
        if self._backend.device.type != "cpu":
            raise TypeError(f"can't convert a {self.device} tensor to a NumPy array "
                            "implicitly; copy it to the host first with t.cpu()")
        arr = self._data
        if dtype is not None and arr.dtype != dtype:
            return arr.astype(dtype)
        return arr.copy() if copy else arr

    # -- exchange without copies: DLPack and the CUDA Array Interface -------------------
    def _exportable(self, what):
        if self._requires_grad:
            raise RuntimeError(f"{what}: can't export a tensor that requires grad (the other "
                               "library would not see the graph); export t.detach()")
        return self._data

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        """The array's DLPack capsule: ``np.from_dlpack(t)``, ``torch.from_dlpack(t)``,
        ``cupy.from_dlpack(t)`` and ``jax.dlpack.from_dlpack(t)`` share t's memory."""
        data = self._exportable("__dlpack__")
        if grad_mode._state.tape is not None:
            grad_mode._state.tape.read("__dlpack__ (np.from_dlpack(t), ...)")
        kwargs = {k: v for k, v in (("stream", stream), ("max_version", max_version),
                                    ("dl_device", dl_device), ("copy", copy)) if v is not None}
        return data.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._data.__dlpack_device__()

    @property
    def __cuda_array_interface__(self):
        """CUDA tensors only (CuPy's dict, which Numba, PyTorch and CuPy read); a CPU tensor
        has no such attribute, so ``hasattr`` tells the two apart."""
        if self._backend.device.type != "cuda":
            raise AttributeError("__cuda_array_interface__ exists only for CUDA tensors; a CPU "
                                 "tensor exports __array__ and __dlpack__")
        data = self._exportable("__cuda_array_interface__")
        if grad_mode._state.tape is not None:
            grad_mode._state.tape.read("__cuda_array_interface__")
        return data.__cuda_array_interface__

    def item(self):
        if grad_mode._state.tape is not None:
            grad_mode._state.tape.read("item()")
        if self._data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, this one has shape "
                             f"{tuple(self._data.shape)} ({self._data.size} elements)")
        return self._data.reshape(()).item() if self._backend.device.type == "cpu" else \
            self._backend.to_numpy(self._data).reshape(()).item()

    def tolist(self):
        if grad_mode._state.tape is not None:
            grad_mode._state.tape.read("tolist()")
        return self._backend.to_numpy(self._data).tolist()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self._data.dtype.kind not in "iub" or self._data.size != 1:
            raise TypeError("only integer tensors of a single element can be used as an index")
        return self.item()

    def __bool__(self):
        if self._data.size != 1:
            raise RuntimeError(f"the truth value of a tensor with {self._data.size} elements is "
                               "ambiguous; use t.any() or t.all()")
        return bool(self.item())

    __hash__ = object.__hash__

    def __iter__(self):
        if grad_mode._state.tape is not None:
            grad_mode._state.tape.shape_read(self._data)
        if self._data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self._data.shape[0]))

    def __repr__(self):
        if grad_mode._state.tape is not None:
            grad_mode._state.tape.shown("repr() or str(), print(t)")
        arr = self._backend.to_numpy(self._data)
        body = np.array2string(arr, separator=", ", prefix="tensor(", precision=4)
        extras = []
        if self._backend.device.type != "cpu":
            extras.append(f"device='{self.device}'")
        if arr.dtype not in (float32, int64, bool_):
            extras.append(f"dtype={arr.dtype}")
        if self.grad_fn is not None:
            extras.append(f"grad_fn=<{self.grad_fn.name()}Backward>")
        elif self._requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + body + "".join(", " + e for e in extras) + ")"

    # -- in-place updates (no graph recording; they bump the version counter) -----------
    def _check_inplace(self, what):
        if self._requires_grad and grad_mode.is_grad_enabled():
            if self.grad_fn is None:
                raise RuntimeError(
                    f"{what}: a leaf tensor that requires grad can't be changed in place "
                    "while grad mode is on; wrap the update in `with gl.no_grad():`")
            raise RuntimeError(
                f"{what}: in-place changes to a tensor that is part of a graph are not "
                "supported; use the out-of-place op (e.g. `y = y + x` instead of `y += x`)")

    def _bump(self):
        self._version[0] += 1
        if grad_mode._state.tape is not None:
            grad_mode._state.tape.bump(self)

    def _set(self, array, what):
        self._check_inplace(what)
        self._data[...] = array
        self._bump()
        return self

    def zero_(self):
        return self._set(0, "zero_()")

    def fill_(self, value):
        return self._set(_raw(value), "fill_()")

    def copy_(self, src):
        if isinstance(src, Tensor) and src._backend is not self._backend:
            raise RuntimeError(f"copy_(): source is on {src.device}, destination on "
                               f"{self.device}; move it first with .to()")
        return self._set(_raw(src), "copy_()")

    def add_(self, other, alpha=1):
        other = _raw(other)
        return self._set(self._data + (other if alpha == 1 else alpha * other), "add_()")

    def sub_(self, other, alpha=1):
        return self.add_(other, alpha=-alpha)

    def mul_(self, other):
        return self._set(self._data * _raw(other), "mul_()")

    def div_(self, other):
        return self._set(self._data / _raw(other), "div_()")

    def clamp_(self, min=None, max=None):
        return self._set(self._backend.xp.clip(self._data, min, max), "clamp_()")

    def uniform_(self, a=0.0, b=1.0, generator=None):
        gen = generator or self._backend.random.generator
        return self._set(gen.uniform(a, b, self._data.shape), "uniform_()")

    def normal_(self, mean=0.0, std=1.0, generator=None):
        gen = generator or self._backend.random.generator
        # mean + std * z, not gen.normal: CuPy's Generator has no normal(). NumPy's normal
        # computes exactly this from the same draw, so CPU results are unchanged.
        return self._set(mean + std * gen.standard_normal(self._data.shape), "normal_()")

    # ``t -= x`` updates t in place, as in PyTorch (so ``w -= lr * w.grad`` under no_grad
    # keeps w the same leaf tensor).
    def __iadd__(self, other):
        return self.add_(other)

    def __isub__(self, other):
        return self.sub_(other)

    def __imul__(self, other):
        return self.mul_(other)

    def __itruediv__(self, other):
        return self.div_(other)

    def __setitem__(self, index, value):
        self._check_inplace("item assignment")
        if isinstance(index, Tensor):
            index = index._data
        elif isinstance(index, tuple):
            index = tuple(i._data if isinstance(i, Tensor) else i for i in index)
        self._data[index] = _raw(value)
        self._bump()


_wrap = Tensor._wrap  # for the operators' fast path: one lookup, as a bound method


def _check_requires_grad(data, grad_fn, value):
    if value and data.dtype.kind not in "fc":
        raise RuntimeError(
            f"only floating-point tensors can require gradients, but this tensor has "
            f"dtype {data.dtype}; convert it first, e.g. t.to(gl.float32)")
    if not value and grad_fn is not None:
        raise RuntimeError(
            "requires_grad can only be switched off on leaf tensors; use t.detach() "
            "to get a tensor that is cut from the graph")


def _raw(value):
    return value._data if isinstance(value, Tensor) else value


def _backend_of_array(data):
    if hasattr(data, "__cuda_array_interface__"):
        return get_backend(f"cuda:{data.device.id}")
    raise TypeError(f"Tensor() wraps a backend array; use gl.tensor() for {type(data).__name__}")
