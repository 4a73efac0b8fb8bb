"""Activation layers: each wraps the function of the same name in gl.nn.functional."""
from __future__ import annotations

from ..autograd.creation import full
from ..functional import activation as A
from .module import Module, _Applies
from .parameter import Parameter


class _Simple(Module):
    """An activation without settings: forward is its gl.nn.functional function."""

    _fn = None

    def forward(self, input):
        return self._fn(input)


class Sigmoid(_Simple):
    """1 / (1 + exp(-x))."""
    _fn = staticmethod(A.sigmoid)


class Tanh(_Simple):
    """tanh(x)."""
    _fn = staticmethod(A.tanh)


class ReLU(_Simple):
    """max(0, x)."""
    _fn = staticmethod(A.relu)

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace  # accepted for PyTorch compatibility; never in place


class ArcTan(_Simple):
    """atan(x)."""
    _fn = staticmethod(A.arctan)


class BinaryStep(_Simple):
    """1 for x >= 0 else 0; gradient 0 everywhere (see gl.nn.functional.binary_step)."""
    _fn = staticmethod(A.binary_step)


class Softsign(_Simple):
    """x / (1 + |x|)."""
    _fn = staticmethod(A.softsign)


class SQNL(_Simple):
    """Square non-linearity (see gl.nn.functional.sqnl)."""
    _fn = staticmethod(A.sqnl)


class BipolarReLU(_Simple):
    """relu(x) at even positions of the last dim, -relu(-x) at odd ones."""
    _fn = staticmethod(A.bipolar_relu)


class SiLU(_Simple):
    """x * sigmoid(x)."""
    _fn = staticmethod(A.silu)


class SELU(_Simple):
    """scale * (max(0, x) + min(0, alpha (exp(x) - 1)))."""
    _fn = staticmethod(A.selu)


class LeakyReLU(_Applies):
    """x for x > 0, negative_slope * x otherwise."""
    _fn, _repr_settings = staticmethod(A.leaky_relu), ("negative_slope",)

    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope = negative_slope


class RReLU(Module):
    """Randomized leaky ReLU: slopes ~ U(lower, upper) per element in training, the mean
    slope (lower + upper) / 2 in eval."""
    _repr_settings = ("lower", "upper")

    def __init__(self, lower=1.0 / 8, upper=1.0 / 3, inplace=False):
        super().__init__()
        A._check_rrelu_bounds(lower, upper, "RReLU")
        self.lower, self.upper = lower, upper

    def forward(self, input):
        return A.rrelu(input, self.lower, self.upper, self.training)


class PReLU(Module):
    """max(0, x) + a * min(0, x) with a learnable: one shared value (num_parameters=1) or
    one per channel (dim 1), initialised to ``init``."""
    _repr_settings = ("num_parameters",)

    def __init__(self, num_parameters=1, init=0.25, device=None, dtype=None):
        super().__init__()
        self.num_parameters = num_parameters
        self.weight = Parameter(full((num_parameters,), float(init), device=device,
                                     dtype=dtype))

    def forward(self, input):
        return A.prelu(input, self.weight)


class _Alpha(_Applies):
    """The activations whose one setting is ``alpha``."""
    _repr_settings = ("alpha",)

    def __init__(self, alpha=1.0):
        super().__init__()
        self.alpha = alpha


class ELU(_Alpha):
    """x for x > 0, alpha (exp(x) - 1) otherwise."""
    _fn = staticmethod(A.elu)

    def __init__(self, alpha=1.0, inplace=False):
        super().__init__(alpha)


class ISRU(_Alpha):
    """x / sqrt(1 + alpha x^2)."""
    _fn = staticmethod(A.isru)


class ISRLU(_Alpha):
    """x for x >= 0, x / sqrt(1 + alpha x^2) otherwise."""
    _fn = staticmethod(A.isrlu)


class Softplus(_Applies):
    """(1/beta) log(1 + exp(beta x)); x where beta x > threshold."""
    _fn, _repr_settings = staticmethod(A.softplus), ("beta", "threshold")

    def __init__(self, beta=1.0, threshold=20.0):
        super().__init__()
        self.beta, self.threshold = beta, threshold


class GELU(_Applies):
    """x * Phi(x) (approximate='tanh' for the tanh formula)."""
    _fn, _repr_settings = staticmethod(A.gelu), ("approximate",)

    def __init__(self, approximate="none"):
        super().__init__()
        A._check_gelu_approximate(approximate, "GELU")
        self.approximate = approximate


class _Normalized(Module):
    """Softmax and LogSoftmax: ``_fn`` along ``dim`` (None: the last dim)."""
    _fn = None
    _repr_settings = ("dim",)

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        return self._fn(input, -1 if self.dim is None else self.dim)


class Softmax(_Normalized):
    """exp(x_i) / sum_j exp(x_j) along ``dim`` (dim=None means the last dim)."""
    _fn = staticmethod(A.softmax)


class LogSoftmax(_Normalized):
    """x_i - log sum_j exp(x_j) along ``dim`` (dim=None means the last dim)."""
    _fn = staticmethod(A.log_softmax)
