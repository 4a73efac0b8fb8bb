"""Autograd layer: Tensor, Function, the backward engine, grad mode and gradcheck."""
from .anomaly import AnomalyError, detect_anomaly, is_anomaly_enabled, set_detect_anomaly
from .function import Function
from .grad_mode import enable_grad, inference_mode, is_grad_enabled, no_grad, set_grad_enabled
from .gradcheck import GradcheckError, gradcheck
from .tensor import Tensor

__all__ = ["Function", "Tensor", "enable_grad", "is_grad_enabled", "no_grad",
           "set_grad_enabled", "gradcheck", "GradcheckError", "AnomalyError", "detect_anomaly",
           "is_anomaly_enabled", "set_detect_anomaly"]
