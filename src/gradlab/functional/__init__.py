"""Differentiable ops, one file per family. Each op is a Function (forward on raw arrays,
hand-written backward) with a lowercase wrapper right below its class."""
from . import fusions  # noqa: F401 - registers the pairs that a compiled step fuses
from .activation import log_softmax, relu, sigmoid, softmax, tanh
from .elementwise import (
                          abs,
                          add,
                          ceil,
                          clamp,
                          clip,
                          cos,
                          div,
                          eq,
                          exp,
                          floor,
                          ge,
                          gt,
                          isfinite,
                          isinf,
                          isnan,
                          le,
                          log,
                          logical_not,
                          lt,
                          maximum,
                          minimum,
                          mul,
                          ne,
                          neg,
                          pow,
                          round,
                          sign,
                          sin,
                          sqrt,
                          sub,
                          unbroadcast,
                          where,
)
from .matmul import linear, matmul, mm
from .reduce import all, any, argmax, argmin, logsumexp, max, mean, min, std, sum, var
from .shape import (
                          broadcast_to,
                          cat,
                          concatenate,
                          expand,
                          flatten,
                          permute,
                          reshape,
                          squeeze,
                          stack,
                          t,
                          transpose,
                          unsqueeze,
                          view,
)

__all__ = [name for name in dir() if not name.startswith("_") and name != "fusions"]
