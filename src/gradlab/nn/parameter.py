"""Parameter: a Tensor that a Module registers as learnable."""
from __future__ import annotations

from ..autograd.tensor import Tensor


class Parameter(Tensor):
    """A leaf tensor that requires grad (unless ``requires_grad=False``) and that Modules
    pick up as a parameter when assigned as an attribute. Shares memory with ``data``."""

    __slots__ = ()

    def __new__(cls, data=None, requires_grad=True):
        return object.__new__(cls)

    def __init__(self, data=None, requires_grad=True):
        if data is None:
            from ..autograd.creation import empty
            data = empty(0)
        if isinstance(data, Tensor):
            array, backend = data._data, data._backend
        else:
            from ..autograd.creation import as_tensor
            t = as_tensor(data)
            array, backend = t._data, t._backend
        Tensor.__init__(self, array, requires_grad=requires_grad, backend=backend)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()
