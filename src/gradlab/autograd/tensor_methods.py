"""TensorMethods: Tensor's differentiable operators and methods, declared on a class.

``Tensor`` inherits this mixin, so ``help(gl.Tensor)``, IDEs and type checkers see ``@``,
``.sum()``, ``.reshape()`` and the rest where Python looks for them: in the class bodies of
Tensor's MRO, not attached with ``setattr`` at import.

Why here, and how a method becomes its op: the ops these methods run live in
``gradlab.functional``, one layer above autograd (DESIGN.md: imports point downward), and
the functional modules import ``Tensor`` themselves. A mixin in functional could not be a
base of the autograd Tensor without autograd importing functional, so the mixin lives in
autograd and names each op with an ``_Op`` descriptor (``sum = _Op("reduce", "sum")``, in
groups below). The first lookup of such a name imports the op through ``_F`` and puts the
op's function in the class in the descriptor's place; from then on ``t.sum(...)`` is an
ordinary method call of ``gradlab.functional.reduce.sum`` with ``t`` as its ``input``: no
forwarding call, and help(gl.Tensor) shows the op's own signature and docstring. The graph-
free fast path of ``+ - * /`` on small arrays is Tensor's own (``_arithmetic`` in
tensor.py). Methods whose arguments are not the op's in order (``__rpow__``, ``to()``, the
dtype conversions) are written out.

tests/autograd/test_tensor_methods.py holds each declared name to its op.
"""
from __future__ import annotations

import importlib
import types
from typing import TYPE_CHECKING, Callable

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


class _Op:
    """A method of Tensor that is the op ``gradlab.functional.<family>.<name>``, with the
    tensor as the op's ``input``.

    The op cannot be bound in the class body (functional imports Tensor), so the body holds
    this descriptor under the method's name. Its first lookup imports the op and puts the
    op itself in the class in its place: from then on ``t.sum`` is an ordinary method, the
    op's own function (no forwarding call, the op's signature and docstring in help()).
    """

    __slots__ = ("family", "name", "owner", "attrs")

    def __init__(self, family, name):
        self.family, self.name, self.owner, self.attrs = family, name, None, []

    def __set_name__(self, owner, attr):
        self.owner = owner
        self.attrs.append(attr)  # one op may stand under two names (clamp, clip)

    def __get__(self, obj, owner=None) -> Callable[..., Tensor]:
        op = getattr(getattr(_F, self.family), self.name)
        for attr in self.attrs:
            setattr(self.owner, attr, op)
        return op if obj is None else op.__get__(obj, owner)


def _converter(name, dtype):
    """The method ``name`` of TensorMethods: the tensor as ``dtype`` (PyTorch's t.float()
    and the like)."""
    def convert(self) -> Tensor:
        return self.to(dtype)
    convert.__name__, convert.__qualname__ = name, f"TensorMethods.{name}"
    convert.__doc__ = f"The tensor as {dtype} (itself when it is one already)."
    return convert


def _new_filled(name, fill, what):
    """The method ``name`` of TensorMethods: a new tensor of ``what``, shaped ``size``."""
    def new(self, *size, dtype=None, device=None, requires_grad=False) -> Tensor:
        return self._new(size, fill, dtype, device, requires_grad)
    new.__name__, new.__qualname__ = name, f"TensorMethods.{name}"
    new.__doc__ = (f"A tensor of {what} of ``size``, with this tensor's dtype and device "
                   "unless given.")
    return new


class TensorMethods:
    """The differentiable operators and methods of :class:`gradlab.Tensor`; each is the
    ``gradlab.functional`` op of the same name applied to ``self``."""

    __slots__ = ()

    # -- operators (Tensor itself defines + - * / with their graph-free fast path) -------
    __pow__ = _Op("elementwise", "pow")

    def __rpow__(self, other) -> Tensor:
        return _F.elementwise.pow(other, self)

    __matmul__ = _Op("matmul", "matmul")

    def __rmatmul__(self, other) -> Tensor:
        return _F.matmul.matmul(other, self)

    __mod__ = remainder = _Op("elementwise", "remainder")
    __floordiv__ = floor_divide = _Op("elementwise", "floor_divide")

    def __rmod__(self, other) -> Tensor:
        return _F.elementwise.remainder(other, self)

    def __rfloordiv__(self, other) -> Tensor:
        return _F.elementwise.floor_divide(other, self)

    __neg__ = _Op("elementwise", "neg")
    __abs__ = _Op("elementwise", "abs")
    __invert__ = bitwise_not = _Op("elementwise", "bitwise_not")
    __and__ = bitwise_and = _Op("elementwise", "bitwise_and")
    __or__ = bitwise_or = _Op("elementwise", "bitwise_or")
    __xor__ = bitwise_xor = _Op("elementwise", "bitwise_xor")

    def __rand__(self, other) -> Tensor:
        return _F.elementwise.bitwise_and(other, self)

    def __ror__(self, other) -> Tensor:
        return _F.elementwise.bitwise_or(other, self)

    def __rxor__(self, other) -> Tensor:
        return _F.elementwise.bitwise_xor(other, self)

    # -- comparisons (no gradient) ------------------------------------------------------
    __eq__ = eq = _Op("elementwise", "eq")
    __ne__ = ne = _Op("elementwise", "ne")
    __lt__ = lt = _Op("elementwise", "lt")
    __le__ = le = _Op("elementwise", "le")
    __gt__ = gt = _Op("elementwise", "gt")
    __ge__ = ge = _Op("elementwise", "ge")
    __hash__ = object.__hash__  # defining __eq__ would otherwise set it to None

    # -- indexing and slicing (with gradient) -------------------------------------------
    __getitem__ = _Op("shape", "getitem")

    # -- elementwise methods ------------------------------------------------------------
    add, sub, mul, div, pow = (_Op("elementwise", n) for n in ("add", "sub", "mul", "div",
                                                                "pow"))
    neg, exp, log, sqrt, abs, sin, cos = (_Op("elementwise", n) for n in (
        "neg", "exp", "log", "sqrt", "abs", "sin", "cos"))
    clamp = clip = _Op("elementwise", "clamp")
    maximum, minimum = _Op("elementwise", "maximum"), _Op("elementwise", "minimum")
    isnan, isinf, isfinite, sign, floor, ceil, round = (_Op("elementwise", n) for n in (
        "isnan", "isinf", "isfinite", "sign", "floor", "ceil", "round"))
    logical_not, logical_and, logical_or, logical_xor = (_Op("elementwise", n) for n in (
        "logical_not", "logical_and", "logical_or", "logical_xor"))
    square, reciprocal, rsqrt, log1p, expm1 = (_Op("elementwise", n) for n in (
        "square", "reciprocal", "rsqrt", "log1p", "expm1"))
    isclose, allclose, equal = (_Op("elementwise", n) for n in ("isclose", "allclose",
                                                                 "equal"))

    def clamp_min(self, min) -> Tensor:
        return _F.elementwise.clamp(self, min=min)

    def clamp_max(self, max) -> Tensor:
        return _F.elementwise.clamp(self, max=max)

    # -- activations --------------------------------------------------------------------
    tanh, sigmoid, relu, softmax, log_softmax = (_Op("activation", n) for n in (
        "tanh", "sigmoid", "relu", "softmax", "log_softmax"))

    # -- matrix products ----------------------------------------------------------------
    matmul, mm, dot, outer = (_Op("matmul", n) for n in ("matmul", "mm", "dot", "outer"))

    # -- reductions: dim=None|int|tuple, keepdim=False, as in PyTorch -------------------
    sum, mean, var, std, max, min, argmax, argmin, logsumexp, all, any = (
        _Op("reduce", n) for n in ("sum", "mean", "var", "std", "max", "min", "argmax",
                                   "argmin", "logsumexp", "all", "any"))
    norm, cumsum, prod, amax, amin = (_Op("reduce", n) for n in (
        "norm", "cumsum", "prod", "amax", "amin"))
    sort, argsort, topk = (_Op("sorting", n) for n in ("sort", "argsort", "topk"))

    # -- shape --------------------------------------------------------------------------
    reshape, view, flatten, transpose, permute, t = (_Op("shape", n) for n in (
        "reshape", "view", "flatten", "transpose", "permute", "t"))

    @property
    def T(self) -> Tensor:
        """All dimensions reversed (PyTorch's ``t.T``)."""
        return _F.shape.permute(self, tuple(reversed(range(self.ndim))))

    @property
    def mT(self) -> Tensor:
        """The last two dimensions swapped (a batch of matrices transposed)."""
        return _F.shape.transpose(self, -2, -1)

    unsqueeze, squeeze, expand, expand_as = (_Op("shape", n) for n in (
        "unsqueeze", "squeeze", "expand", "expand_as"))
    gather, masked_fill, split, chunk = (_Op("shape", n) for n in (
        "gather", "masked_fill", "split", "chunk"))
    flip, repeat, index_select, masked_select, nonzero, unique = (_Op("shape", n) for n in (
        "flip", "repeat", "index_select", "masked_select", "nonzero", "unique"))

    def view_as(self, other) -> Tensor:
        return _F.shape.reshape(self, tuple(other.shape))

    reshape_as = view_as

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
        return _F.shape.Copy.apply(self, contiguous=False)

    def contiguous(self) -> Tensor:
        if self._data.flags.c_contiguous:
            return self
        return _F.shape.Copy.apply(self, contiguous=True)

    def cpu(self) -> Tensor:
        return self.to("cpu")

    def cuda(self, device=None) -> Tensor:
        if device is None:
            return self.to("cuda")
        return self.to(f"cuda:{device}" if isinstance(device, int) else device)

    float, double, half, long, int, bool = (_converter(name, dtype) for name, dtype in (
        ("float", "float32"), ("double", "float64"), ("half", "float16"), ("long", "int64"),
        ("int", "int32"), ("bool", "bool")))

    def type_as(self, other) -> Tensor:
        return self.to(other.dtype)

    def type(self, dtype=None):
        """t.type(): the dtype's name; t.type(dtype): the tensor converted (PyTorch's names)."""
        if dtype is None:
            return f"gradlab.{self.dtype}"
        return self.to(dtype)

    # -- new tensors on this one's device, with its dtype -------------------------------
    new_zeros, new_ones, new_empty = (_new_filled(name, fill, what) for name, fill, what in (
        ("new_zeros", 0, "zeros"), ("new_ones", 1, "ones"), ("new_empty", None, "uninitialised")))

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
