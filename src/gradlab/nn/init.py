"""Parameter initializers (``gl.nn.init``), PyTorch's formulas and gains.

All functions fill the tensor in place (without recording a graph) and return it. Random
draws come from the tensor's backend generator, so ``gl.manual_seed`` makes them
reproducible. For a weight of shape (out, in, *k): fan_in = in * prod(k),
fan_out = out * prod(k).
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from ..autograd.grad_mode import no_grad

_LINEAR_FNS = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
               "conv_transpose2d", "conv_transpose3d", "sigmoid", "identity")


def calculate_gain(nonlinearity, param=None):
    """The gain that keeps activations' variance stable through ``nonlinearity``:
    linear/conv/sigmoid/identity 1, tanh 5/3, relu sqrt(2),
    leaky_relu sqrt(2 / (1 + slope^2)) (slope = param, default 0.01), selu 3/4."""
    if nonlinearity in _LINEAR_FNS:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = param
        else:
            raise ValueError(f"calculate_gain: negative_slope {param!r} is not a number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r} (known: "
                     f"{', '.join(_LINEAR_FNS)}, tanh, relu, leaky_relu, selu)")


def _calculate_fan_in_and_fan_out(tensor):
    if tensor.ndim < 2:
        raise ValueError(f"fan in and fan out need a tensor with at least 2 dims, got shape "
                         f"{tuple(tensor.shape)}")
    receptive = int(np.prod(tensor.shape[2:])) if tensor.ndim > 2 else 1
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def _fan(tensor, mode):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(tensor, a=0.0, b=1.0, generator=None):
    """U(a, b)."""
    with no_grad():
        return tensor.uniform_(a, b, generator=generator)


def normal_(tensor, mean=0.0, std=1.0, generator=None):
    """N(mean, std^2)."""
    with no_grad():
        return tensor.normal_(mean, std, generator=generator)


def constant_(tensor, val):
    with no_grad():
        return tensor.fill_(val)


def zeros_(tensor):
    with no_grad():
        return tensor.zero_()


def ones_(tensor):
    with no_grad():
        return tensor.fill_(1.0)


def eye_(tensor):
    """The identity matrix (2-D tensors)."""
    if tensor.ndim != 2:
        raise ValueError(f"eye_ needs a 2-D tensor, got shape {tuple(tensor.shape)}")
    with no_grad():
        return tensor.copy_(tensor._backend.xp.eye(*tensor.shape, dtype=tensor.dtype))


def xavier_uniform_(tensor, gain=1.0, generator=None):
    """Glorot: U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -a, a, generator)


def xavier_normal_(tensor, gain=1.0, generator=None):
    """Glorot: N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator)


def _no_elements(tensor):
    """True, with PyTorch's warning, for a tensor of no elements: its fan may be 0, and
    there is nothing to fill."""
    if tensor.numel() == 0:
        warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=3)
        return True
    return False


def kaiming_uniform_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """He: U(-bound, bound), bound = gain * sqrt(3 / fan), gain = calculate_gain(
    nonlinearity, a) and fan = fan_in or fan_out per ``mode``. A tensor of no elements is
    left as it is, with a warning (as PyTorch)."""
    if _no_elements(tensor):
        return tensor
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / _fan(tensor, mode))
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """He: N(0, std^2), std = gain / sqrt(fan); a tensor of no elements as in
    kaiming_uniform_."""
    if _no_elements(tensor):
        return tensor
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))
    return normal_(tensor, 0.0, std, generator)


def lecun_normal_(tensor, generator=None):
    """LeCun: N(0, 1 / fan_in) (the init SELU networks assume). Not truncated, unlike
    some frameworks' variant."""
    fan_in, _ = _calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, math.sqrt(1.0 / fan_in), generator)


def lecun_uniform_(tensor, generator=None):
    """LeCun: U(-a, a), a = sqrt(3 / fan_in) (variance 1 / fan_in)."""
    fan_in, _ = _calculate_fan_in_and_fan_out(tensor)
    a = math.sqrt(3.0 / fan_in)
    return uniform_(tensor, -a, a, generator)


def orthogonal_(tensor, gain=1.0, generator=None):
    """A (semi-)orthogonal matrix times ``gain``: the Q of the QR decomposition of a
    standard-normal (rows, cols) matrix, rows = shape[0], with signs fixed by diag(R) so
    that the result is uniformly distributed (Saxe et al. 2013)."""
    if tensor.ndim < 2:
        raise ValueError(f"orthogonal_ needs at least 2 dims, got shape {tuple(tensor.shape)}")
    if tensor.numel() == 0:
        return tensor
    rows = tensor.shape[0]
    cols = tensor.numel() // rows
    xp = tensor._backend.xp
    gen = generator or tensor._backend.random.generator
    flat = gen.standard_normal((rows, cols))
    if rows < cols:
        flat = flat.T
    q, r = xp.linalg.qr(flat)
    q = q * xp.sign(xp.diag(r))
    if rows < cols:
        q = q.T
    with no_grad():
        return tensor.copy_((gain * q).reshape(tensor.shape).astype(tensor.dtype))


def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=None):
    """N(mean, std^2) truncated to [a, b] (bounds in the tensor's units, as PyTorch's):
    out-of-range draws are drawn again, which samples exactly that distribution."""
    if not a < b:
        raise ValueError(f"trunc_normal_: need a < b, got a={a}, b={b}")
    if (a - mean) / std > 6 or (b - mean) / std < -6:
        raise ValueError(f"trunc_normal_: [{a}, {b}] lies more than 6 std from the mean "
                         f"{mean}; almost no draw would land there")
    xp = tensor._backend.xp
    gen = generator or tensor._backend.random.generator
    out = mean + std * gen.standard_normal(tensor.shape)
    bad = (out < a) | (out > b)
    while bool(bad.any()):
        out = xp.where(bad, mean + std * gen.standard_normal(tensor.shape), out)
        bad = (out < a) | (out > b)
    with no_grad():
        return tensor.copy_(out.astype(tensor.dtype))


def sparse_(tensor, sparsity, std=0.01, generator=None):
    """A 2-D tensor drawn from N(0, std^2) with ceil(sparsity * rows) zeros in each column,
    at random rows (Martens 2010)."""
    if tensor.ndim != 2:
        raise ValueError(f"sparse_ needs a 2-D tensor, got shape {tuple(tensor.shape)}")
    if not 0 <= sparsity <= 1:
        raise ValueError(f"sparse_: sparsity must lie in [0, 1], got {sparsity}")
    rows, cols = tensor.shape
    gen = generator or tensor._backend.random.generator
    out = std * gen.standard_normal((rows, cols))
    zeros = int(math.ceil(sparsity * rows))
    xp = tensor._backend.xp
    for c in range(cols):  # (argsort of uniform draws: CuPy's Generator has no permutation)
        out[xp.argsort(gen.random(rows))[:zeros], c] = 0
    with no_grad():
        return tensor.copy_(out.astype(tensor.dtype))


# PyTorch's un-suffixed deprecated aliases are left out on purpose.
