"""TensorMethods: Tensor's differentiable operators and methods, declared on a class.

``Tensor`` inherits this mixin, so ``help(gl.Tensor)``, IDEs and type checkers see ``@``,
``.sum()``, ``.reshape()`` and the rest where Python looks for them: in the class bodies of
Tensor's MRO, not attached with ``setattr`` at import.

Why here, and why each method forwards: the ops these methods run live in
``gradlab.functional``, one layer above autograd (DESIGN.md: imports point downward), and
the functional modules import ``Tensor`` themselves. A mixin in functional could not be a
base of the autograd Tensor without autograd importing functional, so the mixin lives in
autograd and each method calls its functional op through ``_F``, which imports a functional
module at its first use and from then on is a plain module attribute lookup. That costs one
Python call per method call (tens of nanoseconds; a recorded op costs microseconds). The
one path where that would show, the graph-free fast path of ``+ - * /`` on small arrays,
is Tensor's own (``_arithmetic`` in tensor.py), so it costs no call more than before; the
2-16-16-3 Adam step and the chain of 10 small elementwise ops of benchmarks/cases.py time
the same as with the functions bound onto the class.

The method signatures are the functional ones with ``self`` for ``input``;
tests/autograd/test_tensor_methods.py holds the two to each other.
"""
from __future__ import annotations

import importlib
import types
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .tensor import Tensor


def _import_functional(name):
    module = importlib.import_module(f"gradlab.functional.{name}")
    setattr(_F, name, module)  # later lookups find it in the namespace's dict
    return module


# ``_F.elementwise`` is ``gradlab.functional.elementwise``, imported at its first use. A plain
# module object with a module ``__getattr__`` (PEP 562, called only for a missing name): after
# the first use an attribute of it is an ordinary module attribute, the cheapest lookup there
# is (a class with ``__getattr__`` would slow every lookup).
_F = types.ModuleType("gradlab.autograd.tensor_methods._F")
_F.__getattr__ = _import_functional


def _is_dtype_name(text):
    from .dtypes import as_dtype
    try:
        as_dtype(text)
    except TypeError:
        return False
    return True


def _is_device_spec(arg):
    from ..backend import Device
    return isinstance(arg, Device) or (
        isinstance(arg, str) and arg.split(":")[0].strip().lower() in ("cpu", "cuda", "auto"))


class TensorMethods:
    """The differentiable operators and methods of :class:`gradlab.Tensor`; each is the
    ``gradlab.functional`` op of the same name applied to ``self``."""

    __slots__ = ()

    # -- operators (Tensor itself defines + - * / with their graph-free fast path) -------
    def __pow__(self, exponent) -> Tensor:
        return _F.elementwise.pow(self, exponent)

    def __rpow__(self, other) -> Tensor:
        return _F.elementwise.pow(other, self)

    def __matmul__(self, other) -> Tensor:
        return _F.matmul.matmul(self, other)

    def __rmatmul__(self, other) -> Tensor:
        return _F.matmul.matmul(other, self)

    def __neg__(self) -> Tensor:
        return _F.elementwise.neg(self)

    def __abs__(self) -> Tensor:
        return _F.elementwise.abs(self)

    def __invert__(self) -> Tensor:
        return _F.elementwise.logical_not(self)

    # -- comparisons (no gradient) ------------------------------------------------------
    def __eq__(self, other):
        return _F.elementwise.eq(self, other)

    def __ne__(self, other):
        return _F.elementwise.ne(self, other)

    def __lt__(self, other) -> Tensor:
        return _F.elementwise.lt(self, other)

    def __le__(self, other) -> Tensor:
        return _F.elementwise.le(self, other)

    def __gt__(self, other) -> Tensor:
        return _F.elementwise.gt(self, other)

    def __ge__(self, other) -> Tensor:
        return _F.elementwise.ge(self, other)

    __hash__ = object.__hash__  # defining __eq__ would otherwise set it to None

    def eq(self, other) -> Tensor:
        return _F.elementwise.eq(self, other)

    def ne(self, other) -> Tensor:
        return _F.elementwise.ne(self, other)

    def lt(self, other) -> Tensor:
        return _F.elementwise.lt(self, other)

    def le(self, other) -> Tensor:
        return _F.elementwise.le(self, other)

    def gt(self, other) -> Tensor:
        return _F.elementwise.gt(self, other)

    def ge(self, other) -> Tensor:
        return _F.elementwise.ge(self, other)

    # -- indexing and slicing (with gradient) -------------------------------------------
    def __getitem__(self, index) -> Tensor:
        return _F.shape.getitem(self, index)

    # -- elementwise methods ------------------------------------------------------------
    def add(self, other, *, alpha=1, out=None) -> Tensor:
        return _F.elementwise.add(self, other, alpha=alpha, out=out)

    def sub(self, other, *, alpha=1, out=None) -> Tensor:
        return _F.elementwise.sub(self, other, alpha=alpha, out=out)

    def mul(self, other, *, out=None) -> Tensor:
        return _F.elementwise.mul(self, other, out=out)

    def div(self, other, *, out=None) -> Tensor:
        return _F.elementwise.div(self, other, out=out)

    def pow(self, exponent, *, out=None) -> Tensor:
        return _F.elementwise.pow(self, exponent, out=out)

    def neg(self, *, out=None) -> Tensor:
        return _F.elementwise.neg(self, out=out)

    def exp(self, *, out=None) -> Tensor:
        return _F.elementwise.exp(self, out=out)

    def log(self, *, out=None) -> Tensor:
        return _F.elementwise.log(self, out=out)

    def sqrt(self, *, out=None) -> Tensor:
        return _F.elementwise.sqrt(self, out=out)

    def abs(self, *, out=None) -> Tensor:
        return _F.elementwise.abs(self, out=out)

    def sin(self, *, out=None) -> Tensor:
        return _F.elementwise.sin(self, out=out)

    def cos(self, *, out=None) -> Tensor:
        return _F.elementwise.cos(self, out=out)

    def clamp(self, min=None, max=None, *, out=None) -> Tensor:
        return _F.elementwise.clamp(self, min, max, out=out)

    clip = clamp

    def maximum(self, other, *, out=None) -> Tensor:
        return _F.elementwise.maximum(self, other, out=out)

    def minimum(self, other, *, out=None) -> Tensor:
        return _F.elementwise.minimum(self, other, out=out)

    def isnan(self) -> Tensor:
        return _F.elementwise.isnan(self)

    def isinf(self) -> Tensor:
        return _F.elementwise.isinf(self)

    def isfinite(self) -> Tensor:
        return _F.elementwise.isfinite(self)

    def sign(self) -> Tensor:
        return _F.elementwise.sign(self)

    def floor(self) -> Tensor:
        return _F.elementwise.floor(self)

    def ceil(self) -> Tensor:
        return _F.elementwise.ceil(self)

    def round(self) -> Tensor:
        return _F.elementwise.round(self)

    # -- activations --------------------------------------------------------------------
    def tanh(self, *, out=None) -> Tensor:
        return _F.activation.tanh(self, out=out)

    def sigmoid(self, *, out=None) -> Tensor:
        return _F.activation.sigmoid(self, out=out)

    def relu(self) -> Tensor:
        return _F.activation.relu(self)

    def softmax(self, dim=None) -> Tensor:
        return _F.activation.softmax(self, dim)

    def log_softmax(self, dim=None) -> Tensor:
        return _F.activation.log_softmax(self, dim)

    # -- matrix products ----------------------------------------------------------------
    def matmul(self, other, *, out=None) -> Tensor:
        return _F.matmul.matmul(self, other, out=out)

    def mm(self, mat2, *, out=None) -> Tensor:
        return _F.matmul.mm(self, mat2, out=out)

    # -- reductions: dim=None|int|tuple, keepdim=False, as in PyTorch -------------------
    def sum(self, dim=None, keepdim=False, *, dtype=None, out=None) -> Tensor:
        return _F.reduce.sum(self, dim, keepdim, dtype=dtype, out=out)

    def mean(self, dim=None, keepdim=False, *, out=None) -> Tensor:
        return _F.reduce.mean(self, dim, keepdim, out=out)

    def var(self, dim=None, unbiased=True, keepdim=False, *, correction=None) -> Tensor:
        return _F.reduce.var(self, dim, unbiased, keepdim, correction=correction)

    def std(self, dim=None, unbiased=True, keepdim=False, *, correction=None) -> Tensor:
        return _F.reduce.std(self, dim, unbiased, keepdim, correction=correction)

    def max(self, dim=None, keepdim=False) -> Tensor:
        return _F.reduce.max(self, dim, keepdim)

    def min(self, dim=None, keepdim=False) -> Tensor:
        return _F.reduce.min(self, dim, keepdim)

    def argmax(self, dim=None, keepdim=False) -> Tensor:
        return _F.reduce.argmax(self, dim, keepdim)

    def argmin(self, dim=None, keepdim=False) -> Tensor:
        return _F.reduce.argmin(self, dim, keepdim)

    def logsumexp(self, dim=None, keepdim=False) -> Tensor:
        return _F.reduce.logsumexp(self, dim, keepdim)

    def all(self, dim=None, keepdim=False) -> Tensor:
        return _F.reduce.all(self, dim, keepdim)

    def any(self, dim=None, keepdim=False) -> Tensor:
        return _F.reduce.any(self, dim, keepdim)

    # -- shape --------------------------------------------------------------------------
    def reshape(self, *shape) -> Tensor:
        return _F.shape.reshape(self, *shape)

    def view(self, *shape) -> Tensor:
        return _F.shape.view(self, *shape)

    def flatten(self, start_dim=0, end_dim=-1) -> Tensor:
        return _F.shape.flatten(self, start_dim, end_dim)

    def transpose(self, dim0, dim1) -> Tensor:
        return _F.shape.transpose(self, dim0, dim1)

    def permute(self, *dims) -> Tensor:
        return _F.shape.permute(self, *dims)

    def t(self) -> Tensor:
        return _F.shape.t(self)

    @property
    def T(self) -> Tensor:
        """All dimensions reversed (PyTorch's ``t.T``)."""
        return _F.shape.permute(self, tuple(reversed(range(self.ndim))))

    @property
    def mT(self) -> Tensor:
        """The last two dimensions swapped (a batch of matrices transposed)."""
        return _F.shape.transpose(self, -2, -1)

    def unsqueeze(self, dim) -> Tensor:
        return _F.shape.unsqueeze(self, dim)

    def squeeze(self, dim=None) -> Tensor:
        return _F.shape.squeeze(self, dim)

    def expand(self, *sizes) -> Tensor:
        return _F.shape.expand(self, *sizes)

    def expand_as(self, other) -> Tensor:
        return _F.shape.expand_as(self, other)

    # -- copies, devices and dtypes -----------------------------------------------------
    def to(self, *args, dtype=None, device=None, copy=False) -> Tensor:
        """t.to(device), t.to(dtype), t.to(device, dtype), t.to(other_tensor)."""
        from ..backend import get_backend
        from .dtypes import as_dtype
        from .tensor import Tensor
        for arg in args:
            if isinstance(arg, Tensor):
                device, dtype = arg.device, arg.dtype
            elif _is_device_spec(arg):
                device = arg
            elif isinstance(arg, str) and not _is_dtype_name(arg):
                raise ValueError(f"Tensor.to({arg!r}): {arg!r} is neither a device ('cpu', "
                                 "'cuda', 'cuda:N') nor a dtype (e.g. gl.float32, 'float64')")
            else:
                dtype = arg
        out = self
        if device is not None:
            out = _F.shape.to_backend(out, get_backend(device))
        if dtype is not None:
            out = _F.shape.to_dtype(out, as_dtype(dtype))
        if copy and out is self:
            out = self.clone()
        return out

    def clone(self) -> Tensor:
        """A copy with its own memory; gradients flow back to the original."""
        if self._requires_grad:
            return _F.elementwise.Add.apply(self, 0)
        from .tensor import Tensor
        return Tensor._wrap(self._data.copy(), self._backend)

    def contiguous(self) -> Tensor:
        if self._data.flags.c_contiguous:
            return self
        if self._requires_grad:
            return self.clone()
        from .tensor import Tensor
        return Tensor._wrap(self._backend.xp.ascontiguousarray(self._data), self._backend)

    def cpu(self) -> Tensor:
        return self.to("cpu")

    def cuda(self, device=None) -> Tensor:
        if device is None:
            return self.to("cuda")
        return self.to(f"cuda:{device}" if isinstance(device, int) else device)

    def float(self) -> Tensor:
        return self.to("float32")

    def double(self) -> Tensor:
        return self.to("float64")

    def half(self) -> Tensor:
        return self.to("float16")

    def long(self) -> Tensor:
        return self.to("int64")

    def int(self) -> Tensor:
        return self.to("int32")

    def bool(self) -> Tensor:
        return self.to("bool")

    def type_as(self, other) -> Tensor:
        return self.to(other.dtype)

    def type(self, dtype=None):
        """t.type(): the dtype's name; t.type(dtype): the tensor converted (PyTorch's names)."""
        if dtype is None:
            return f"gradlab.{self.dtype}"
        return self.to(dtype)

    # -- new tensors on this one's device, with its dtype -------------------------------
    def new_zeros(self, *size, dtype=None, device=None, requires_grad=False) -> Tensor:
        return self._new(size, 0, dtype, device, requires_grad)

    def new_ones(self, *size, dtype=None, device=None, requires_grad=False) -> Tensor:
        return self._new(size, 1, dtype, device, requires_grad)

    def new_empty(self, *size, dtype=None, device=None, requires_grad=False) -> Tensor:
        return self._new(size, None, dtype, device, requires_grad)

    def _new(self, size, fill, dtype, device, requires_grad) -> Tensor:
        from . import creation
        from .dtypes import as_dtype
        size = creation._size(size)
        dtype = as_dtype(dtype) or self.dtype
        device = device or self.device
        if fill is None:
            return creation.empty(size, dtype=dtype, device=device, requires_grad=requires_grad)
        return creation.full(size, fill, dtype=dtype, device=device,
                             requires_grad=requires_grad)

    def new_full(self, size, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
        from . import creation
        from .dtypes import as_dtype
        return creation.full(size, fill_value, dtype=as_dtype(dtype) or self.dtype,
                             device=device or self.device, requires_grad=requires_grad)

    def new_tensor(self, data, dtype=None, device=None, requires_grad=False) -> Tensor:
        from . import creation
        from .dtypes import as_dtype
        return creation.tensor(data, dtype=as_dtype(dtype) or self.dtype,
                               device=device or self.device, requires_grad=requires_grad)
