"""Binds the differentiable ops onto Tensor as operators and methods.

Tensor lives in the autograd layer, below the ops; binding them from here keeps every
import pointing downward while giving users ``a + b``, ``x.sum(1)`` and ``x.T``.
"""
from __future__ import annotations

from ..autograd.dtypes import as_dtype
from ..autograd.tensor import Tensor
from ..backend import Device, get_backend
from . import activation
from . import elementwise as ew
from . import matmul as mm
from . import reduce as red
from . import shape as sh


def _reflected(fn):
    return lambda self, other: fn(other, self)


def _is_dtype_name(text):
    try:
        as_dtype(text)
    except TypeError:
        return False
    return True


def _to(self, *args, dtype=None, device=None, copy=False):
    """t.to(device), t.to(dtype), t.to(device, dtype), t.to(other_tensor)."""
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
        out = sh.to_backend(out, get_backend(device))
    if dtype is not None:
        out = sh.to_dtype(out, as_dtype(dtype))
    if copy and out is self:
        out = clone(self)
    return out


def _is_device_spec(arg):
    return isinstance(arg, Device) or (
        isinstance(arg, str) and arg.split(":")[0].strip().lower() in ("cpu", "cuda", "auto"))


def clone(self):
    """A copy with its own memory; gradients flow back to the original."""
    return ew.Add.apply(self, 0) if self._requires_grad else \
        Tensor._wrap(self._data.copy(), self._backend)


def _contiguous(self):
    if self._data.flags.c_contiguous:
        return self
    return Tensor._wrap(self._backend.xp.ascontiguousarray(self._data), self._backend) \
        if not self._requires_grad else clone(self)


def _type(self, dtype=None):
    """t.type(): the dtype's name; t.type(dtype): the tensor converted (PyTorch's names)."""
    if dtype is None:
        return f"gradlab.{self.dtype}"
    return _to(self, dtype)


def _new(fill):
    """t.new_zeros(size) and friends: a new tensor on t's device with t's dtype."""
    def new(self, *size, dtype=None, device=None, requires_grad=False):
        from ..autograd import creation
        size = creation._size(size)
        dtype = as_dtype(dtype) or self.dtype
        device = device or self.device
        if fill is None:
            return creation.empty(size, dtype=dtype, device=device, requires_grad=requires_grad)
        return creation.full(size, fill, dtype=dtype, device=device,
                             requires_grad=requires_grad)
    return new


def _new_full(self, size, fill_value, dtype=None, device=None, requires_grad=False):
    from ..autograd import creation
    return creation.full(size, fill_value, dtype=as_dtype(dtype) or self.dtype,
                         device=device or self.device, requires_grad=requires_grad)


def _new_tensor(self, data, dtype=None, device=None, requires_grad=False):
    from ..autograd import creation
    return creation.tensor(data, dtype=as_dtype(dtype) or self.dtype,
                           device=device or self.device, requires_grad=requires_grad)


def _max(self, dim=None, keepdim=False):
    return red.max(self, dim, keepdim)


def _min(self, dim=None, keepdim=False):
    return red.min(self, dim, keepdim)


_METHODS = {
    "__add__": ew._add, "__radd__": ew.radd,
    "__sub__": ew._sub, "__rsub__": ew.rsub,
    "__mul__": ew._mul, "__rmul__": ew.rmul,
    "__truediv__": ew._div, "__rtruediv__": ew.rdiv,
    "__pow__": ew.pow, "__rpow__": _reflected(ew.pow),
    "__matmul__": mm.matmul, "__rmatmul__": _reflected(mm.matmul),
    "__neg__": ew.neg, "__abs__": ew.abs,
    "__eq__": ew.eq, "__ne__": ew.ne, "__lt__": ew.lt, "__le__": ew.le,
    "__gt__": ew.gt, "__ge__": ew.ge,
    "__getitem__": sh.getitem,
    "__invert__": ew.logical_not,
    "add": ew.add, "sub": ew.sub, "mul": ew.mul, "div": ew.div, "pow": ew.pow,
    "neg": ew.neg, "exp": ew.exp, "log": ew.log, "sqrt": ew.sqrt, "abs": ew.abs,
    "sin": ew.sin, "cos": ew.cos, "clamp": ew.clamp, "clip": ew.clamp,
    "maximum": ew.maximum, "minimum": ew.minimum,
    "eq": ew.eq, "ne": ew.ne, "lt": ew.lt, "le": ew.le, "gt": ew.gt, "ge": ew.ge,
    "isnan": ew.isnan, "isinf": ew.isinf, "isfinite": ew.isfinite, "sign": ew.sign,
    "floor": ew.floor, "ceil": ew.ceil, "round": ew.round,
    "tanh": activation.tanh, "sigmoid": activation.sigmoid, "relu": activation.relu,
    "softmax": activation.softmax, "log_softmax": activation.log_softmax,
    "matmul": mm.matmul, "mm": mm.mm,
    "type": _type, "new_zeros": _new(0), "new_ones": _new(1), "new_empty": _new(None),
    "new_full": _new_full, "new_tensor": _new_tensor,
    "sum": red.sum, "mean": red.mean, "var": red.var, "std": red.std,
    "max": _max, "min": _min, "argmax": red.argmax, "argmin": red.argmin,
    "logsumexp": red.logsumexp, "all": red.all, "any": red.any,
    "reshape": sh.reshape, "view": sh.view, "flatten": sh.flatten,
    "transpose": sh.transpose, "permute": sh.permute, "t": sh.t,
    "unsqueeze": sh.unsqueeze, "squeeze": sh.squeeze, "expand": sh.expand,
    "expand_as": sh.expand_as,
    "to": _to, "clone": clone, "contiguous": _contiguous,
    "cpu": lambda self: _to(self, "cpu"),
    "cuda": lambda self, device=None: _to(self, "cuda" if device is None else
                                          (f"cuda:{device}" if isinstance(device, int)
                                           else device)),
    "float": lambda self: _to(self, "float32"),
    "double": lambda self: _to(self, "float64"),
    "half": lambda self: _to(self, "float16"),
    "long": lambda self: _to(self, "int64"),
    "int": lambda self: _to(self, "int32"),
    "bool": lambda self: _to(self, "bool"),
    "type_as": lambda self, other: _to(self, other.dtype),
}


def install():
    for name, fn in _METHODS.items():
        setattr(Tensor, name, fn)
    Tensor.T = property(lambda self: sh.permute(self, tuple(reversed(range(self.ndim)))))
    Tensor.mT = property(lambda self: sh.transpose(self, -2, -1))
