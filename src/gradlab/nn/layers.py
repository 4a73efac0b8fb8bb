"""Basic layers: Linear, Identity, Flatten, Dropout, BatchNorm1d, LayerNorm; each forward is
the gl.nn.functional function of its name."""
from __future__ import annotations

import math

import numpy as np

from ..autograd.creation import empty, ones, tensor, zeros
from ..autograd.dtypes import int64
from ..backend import checks
from ..functional.dropout import dropout
from ..functional.matmul import linear
from ..functional.normalization import batch_norm, layer_norm
from ..functional.shape import flatten
from . import init
from .module import Module, _Applies
from .parameter import Parameter


def _layer_size(layer, name, value):
    """A layer width: a positive int. A zero-size layer has no weights to learn and turns
    every sample into an empty vector, which is never what an MLP wants, so it is refused
    here rather than surfacing later as a division by zero in init or an empty output."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{layer}: {name} must be an int, got {value!r} "
                        f"({type(value).__name__}); pass a whole number of features")
    if value < 1:
        raise ValueError(f"{layer}: {name} must be >= 1, got {value}; a layer needs at least "
                         f"one feature (check how the layer sizes were computed)")
    return int(value)


class Identity(Module):
    """Returns its input unchanged (arguments are accepted and ignored, like PyTorch)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):
        return input


class Linear(Module):
    """y = x W^T + b with W of shape (out_features, in_features).

    PyTorch's default init: W ~ kaiming_uniform_(a=sqrt(5)), i.e. U(-1/sqrt(in), 1/sqrt(in)),
    and b ~ U(-1/sqrt(in), 1/sqrt(in))."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        in_features = _layer_size("Linear", "in_features", in_features)
        out_features = _layer_size("Linear", "out_features", out_features)
        self.in_features = in_features
        self.out_features = out_features
        self.weight = Parameter(empty(out_features, in_features, device=device, dtype=dtype))
        if bias:
            self.bias = Parameter(empty(out_features, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input):
        return linear(input, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Flatten(_Applies):
    """Flattens dims start_dim..end_dim (default: all but the batch dim)."""
    _fn, _repr_settings = staticmethod(flatten), ("start_dim", "end_dim")

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim


class Dropout(Module):
    """Inverted dropout: in training, zeroes each element with probability p and scales
    the survivors by 1/(1-p); the identity in eval mode. Masks come from the backend's
    counter-based generator (identical on CPU and GPU for the same seed)."""
    _repr_settings = ("p", "inplace")

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        self.p = checks.dropout_p(p, "Dropout")  # now, not at the first forward
        self.inplace = inplace

    def forward(self, input):
        return dropout(input, self.p, self.training)


class BatchNorm1d(Module):
    """Batch normalization over the batch (and length) dims of (N, C) or (N, C, L) input:

        y = (x - E[x]) / sqrt(Var[x] + eps) * weight + bias

    Training uses the batch's statistics (biased variance) and updates
    running_mean/running_var by running = (1 - momentum) running + momentum * batch, with
    the UNBIASED batch variance (PyTorch's rule); momentum=None gives the cumulative
    average (momentum = 1 / num_batches_tracked). Eval uses the running statistics."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, device=None, dtype=None):
        super().__init__()
        num_features = _layer_size("BatchNorm1d", "num_features", num_features)
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = Parameter(ones(num_features, device=device, dtype=dtype))
            self.bias = Parameter(zeros(num_features, device=device, dtype=dtype))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", zeros(num_features, device=device,
                                                       dtype=dtype))
            self.register_buffer("running_var", ones(num_features, device=device, dtype=dtype))
            self.register_buffer("num_batches_tracked", tensor(0, dtype=int64, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean._data[...] = 0
            self.running_var._data[...] = 1
            self.num_batches_tracked._data[...] = 0

    def reset_parameters(self):
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            init.zeros_(self.bias)

    def forward(self, input):
        if input.ndim not in (2, 3):
            raise ValueError(f"BatchNorm1d: expected 2-D (N, C) or 3-D (N, C, L) input, got "
                             f"shape {tuple(input.shape)}")
        if input.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm1d: input has {input.shape[1]} channels (dim 1), "
                             f"the layer was built for {self.num_features}")
        if self.training:
            return batch_norm(input, self.running_mean, self.running_var, self.weight,
                              self.bias, True, self.momentum, self.eps,
                              num_batches_tracked=self.num_batches_tracked)
        # eval: running statistics, or the batch's when none are tracked
        return batch_norm(input, self.running_mean, self.running_var, self.weight,
                          self.bias, self.running_mean is None, 0.0, self.eps)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class LayerNorm(Module):
    """Normalizes each sample over its last dims (``normalized_shape``), then applies an
    elementwise affine map: y = (x - E[x]) / sqrt(Var[x] + eps) * weight + bias."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True,
                 device=None, dtype=None):
        super().__init__()
        if isinstance(normalized_shape, int):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = Parameter(ones(self.normalized_shape, device=device, dtype=dtype))
            if bias:
                self.bias = Parameter(zeros(self.normalized_shape, device=device, dtype=dtype))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, input):
        return layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")
