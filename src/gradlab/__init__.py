"""gradlab: a define-by-run autodiff engine for training neural networks on NVIDIA GPUs
(through CuPy) or on any CPU (through NumPy), with PyTorch's names."""
from . import cuda
from .autograd import (Function, GradcheckError, Tensor, enable_grad, is_grad_enabled,
                       no_grad, set_grad_enabled)
from .autograd.creation import (arange, as_tensor, empty, empty_like, eye, from_numpy, full,
                                full_like, linspace, ones, ones_like, rand, rand_like, randint,
                                randn, randn_like, randperm, tensor, zeros, zeros_like)
from .autograd.dtypes import (bool_ as bool, double, float16, float32, float64, half, int8,
                              int16, int32, int64, long, uint8)
from .backend import Device as device
from .backend import DeviceUnavailableError, manual_seed
from .functional import (abs, add, all, any, argmax, argmin, broadcast_to, cat, clamp, clip,
                         concatenate, cos, div, eq, exp, flatten, ge, gt, isfinite, isinf,
                         isnan, le, log, log_softmax, logsumexp, lt, matmul, max, maximum,
                         mean, min, minimum, mul, ne, neg, permute, pow, relu, reshape,
                         sigmoid, sign, sin, softmax, sqrt, squeeze, stack, std, sub, sum, t,
                         tanh, transpose, unsqueeze, var, view, where)

__version__ = "0.1.0"
# The upper layers come after the core they build on.
from . import nn, optim  # noqa: E402
from . import data, train  # noqa: E402
from .serialization import SerializationError, load, save  # noqa: E402
