"""Autograd layer: Tensor, Function, the backward engine, grad mode and gradcheck."""
from .function import Function
from .grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .gradcheck import GradcheckError, gradcheck
from .tensor import Tensor

__all__ = ["Function", "Tensor", "enable_grad", "is_grad_enabled", "no_grad",
           "set_grad_enabled", "gradcheck", "GradcheckError"]
