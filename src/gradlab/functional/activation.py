"""Activation functions and the numerically stable softmax family."""
from __future__ import annotations

import math

from ..autograd.function import Function
from .elementwise import unbroadcast
from .out import unary
from .reduce import normalize_dim


class Relu(Function):
    def forward(ctx, x):
        y = ctx.xp.maximum(x, 0)
        ctx.save_for_backward(y)
        return y

    def backward(ctx, g):
        y, = ctx.saved_tensors
        return g * (y > 0)


class SigmoidFn(Function):
    def forward(ctx, x):
        # 1/(1+e^-x) for x >= 0 and e^x/(1+e^x) for x < 0: never exponentiates a large
        # positive number, so no overflow for any finite x.
        xp = ctx.xp
        e = xp.exp(-xp.abs(x))
        y = xp.where(x >= 0, 1, e) / (1 + e)
        ctx.save_for_backward(y)
        return y

    def backward(ctx, g):
        y, = ctx.saved_tensors
        return g * y * (1 - y)


class TanhFn(Function):
    def forward(ctx, x):
        y = ctx.xp.tanh(x)
        ctx.save_for_backward(y)
        return y

    def backward(ctx, g):
        y, = ctx.saved_tensors
        return g * (1 - y * y)


class SoftmaxFn(Function):
    def forward(ctx, x, dim):
        xp = ctx.xp
        ctx.dim = dim
        z = x - x.max(axis=dim, keepdims=True)
        e = xp.exp(z, out=z)
        e /= e.sum(axis=dim, keepdims=True)
        ctx.save_for_backward(e)
        return e

    def backward(ctx, g):
        y, = ctx.saved_tensors
        gy = g * y
        return gy - y * gy.sum(axis=ctx.dim, keepdims=True)


class LogSoftmaxFn(Function):
    def forward(ctx, x, dim):
        xp = ctx.xp
        ctx.dim = dim
        z = x - x.max(axis=dim, keepdims=True)
        z -= xp.log(xp.exp(z).sum(axis=dim, keepdims=True))
        ctx.save_for_backward(z)
        return z

    def backward(ctx, g):
        z, = ctx.saved_tensors
        return g - ctx.xp.exp(z) * g.sum(axis=ctx.dim, keepdims=True)


relu = unary("relu", Relu, "max(x, 0).")
sigmoid = unary("sigmoid", SigmoidFn, "1 / (1 + exp(-x)), computed without overflow.",
                with_out=True, floating=True)
tanh = unary("tanh", TanhFn, "(e^x - e^-x) / (e^x + e^-x); d/dx = 1 - tanh(x)^2.",
             with_out=True, floating=True)


def _softmax(fn, name, input, dim):
    if dim is None:
        raise TypeError(f"{name}() needs dim, e.g. {name}(x, dim=-1)")
    if not isinstance(dim, int) or isinstance(dim, bool):  # (a tuple, as PyTorch)
        raise TypeError(f"{name}(): dim must be an int, got {dim!r}")
    axes = normalize_dim(name, dim, input.ndim)
    if not axes:  # a 0-d tensor (dim 0 or -1): as the one element of a vector, as PyTorch
        return fn.apply(input.reshape(1), dim=0).reshape(())
    return fn.apply(input, dim=axes[0])


def softmax(input, dim=None):
    """exp(x) / sum(exp(x)) along ``dim``, shifted by the max so large logits stay finite."""
    return _softmax(SoftmaxFn, "softmax", input, dim)


def log_softmax(input, dim=None):
    """x - logsumexp(x) along ``dim``, stable for large logits."""
    return _softmax(LogSoftmaxFn, "log_softmax", input, dim)


# -- the rest of the course's activations ----------------------------------------------------
# Each is a Function with a hand-written gradient. Elementwise ones share one shape:
# forward computes y and saves what the derivative needs, backward multiplies by dy/dx.

def _erf(xp, x):
    """erf to ~1e-15, written with plain array ops (NumPy has no erf, and importing
    SciPy/cupyx for one function would add a dependency).

    |x| < 3: erf(x) = 2/sqrt(pi) exp(-x^2) sum_n 2^n x^(2n+1) / (1*3*...*(2n+1)), a series
    of positive terms (no cancellation); 64 terms converge at |x| = 3.
    |x| >= 3: erf = sign(x) (1 - erfc(|x|)) with erfc's continued fraction
    exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))).
    """
    a = xp.abs(x)
    small = xp.minimum(a, 3.0)
    sq = small * small
    term = small.copy()
    total = small.copy()
    for n in range(1, 64):
        term = term * (2.0 * sq / (2 * n + 1))
        total = total + term
    series = (2.0 / math.sqrt(math.pi)) * xp.exp(-sq) * total
    big = xp.maximum(a, 3.0)
    frac = big.copy()
    for k in range(60, 0, -1):
        frac = big + (k / 2.0) / frac
    tail = 1.0 - xp.exp(-big * big) / (math.sqrt(math.pi) * frac)
    return xp.sign(x) * xp.where(a < 3.0, series, tail)


class _Elementwise(Function):
    """y = f(x) with dy/dx computed in forward and saved (cheap for these functions)."""

    def backward(ctx, g):
        d, = ctx.saved_tensors
        return g * d


class IdentityFn(Function):
    def forward(ctx, x):
        return x.copy()

    def backward(ctx, g):
        return g


class Arctan(_Elementwise):
    def forward(ctx, x):
        ctx.save_for_backward(1 / (1 + x * x))
        return ctx.xp.arctan(x)


class LeakyRelu(Function):
    def forward(ctx, x, slope):
        ctx.slope = slope
        pos = x > 0
        ctx.save_for_backward(pos)
        return ctx.xp.where(pos, x, x * slope)

    def backward(ctx, g):
        pos, = ctx.saved_tensors
        return ctx.xp.where(pos, g, g * ctx.slope)


class Rrelu(Function):
    """Leaky ReLU whose negative slopes are drawn from U(lower, upper) per element in
    training, (lower + upper) / 2 otherwise. Drawn here, in the op, so that a replayed step
    draws as the eager one does."""

    def forward(ctx, x, lower, upper, training):
        slopes = ctx.backend.uniform(lower, upper, x.shape, x.dtype) if training \
            else (lower + upper) / 2
        # x <= 0 as PyTorch: the gradient at 0 is the slope (y = 0 either way)
        neg = x <= 0
        d = ctx.xp.where(neg, slopes, 1).astype(x.dtype, copy=False)
        ctx.save_for_backward(d)
        return x * d

    def backward(ctx, g):
        d, = ctx.saved_tensors
        return g * d


class Prelu(Function):
    """y = max(0, x) + a min(0, x); ``a`` has one value or one per channel (dim 1)."""

    def forward(ctx, x, a):
        ctx.a_shape = a.shape
        if a.size != 1:
            a = a.reshape((1, -1) + (1,) * (x.ndim - 2))
        else:
            a = a.reshape(())
        ctx.save_for_backward(x, a)
        return ctx.xp.maximum(x, 0) + a * ctx.xp.minimum(x, 0)

    def backward(ctx, g):
        x, a = ctx.saved_tensors
        xp = ctx.xp
        nx, na = ctx.needs_input_grad
        gx = xp.where(x > 0, g, g * a) if nx else None
        ga = None
        if na:
            ga = unbroadcast(g * xp.minimum(x, 0), a.shape).reshape(ctx.a_shape)
        return gx, ga


class BinaryStepFn(Function):
    """y = 1 for x >= 0, else 0. Its derivative is 0 wherever it exists (x != 0) and
    undefined at 0; backward returns 0 everywhere, so nothing upstream of a binary step
    learns through it (the course's point about why it is unusable with gradient descent)."""

    def forward(ctx, x):
        return (x >= 0).astype(x.dtype)

    def backward(ctx, g):
        return ctx.xp.zeros_like(g)


class Elu(_Elementwise):
    def forward(ctx, x, alpha):
        xp = ctx.xp
        pos = x > 0
        # exp of min(x, 0) so that large positive x (discarded anyway) can't overflow.
        em = alpha * xp.exp(xp.minimum(x, 0))
        ctx.save_for_backward(xp.where(pos, 1, em).astype(x.dtype, copy=False))
        return xp.where(pos, x, em - alpha)


class Selu(_Elementwise):
    ALPHA = 1.6732632423543772848170429916717
    SCALE = 1.0507009873554804934193349852946

    def forward(ctx, x):
        xp = ctx.xp
        pos = x > 0
        em = (Selu.SCALE * Selu.ALPHA) * xp.exp(xp.minimum(x, 0))
        ctx.save_for_backward(xp.where(pos, Selu.SCALE, em).astype(x.dtype, copy=False))
        return xp.where(pos, Selu.SCALE * x, em - Selu.SCALE * Selu.ALPHA)


class SoftsignFn(_Elementwise):
    def forward(ctx, x):
        den = 1 + ctx.xp.abs(x)
        ctx.save_for_backward(1 / (den * den))
        return x / den


class Isru(_Elementwise):
    def forward(ctx, x, alpha):
        r = 1 / ctx.xp.sqrt(1 + alpha * x * x)
        ctx.save_for_backward(r * r * r)
        return x * r


class Isrlu(_Elementwise):
    def forward(ctx, x, alpha):
        xp = ctx.xp
        pos = x >= 0
        r = 1 / xp.sqrt(1 + alpha * xp.minimum(x, 0) ** 2)
        ctx.save_for_backward(xp.where(pos, 1, r * r * r).astype(x.dtype, copy=False))
        return xp.where(pos, x, x * r)


class Sqnl(_Elementwise):
    def forward(ctx, x):
        xp = ctx.xp
        c = xp.clip(x, -2, 2)
        ctx.save_for_backward(1 - xp.abs(c) / 2)  # 0 outside [-2, 2]
        return c - c * xp.abs(c) / 4


class BipolarRelu(_Elementwise):
    """Even positions along the last dim: relu(x); odd positions: -relu(-x) = min(x, 0)."""

    def forward(ctx, x):
        xp = ctx.xp
        odd = (xp.arange(x.shape[-1]) % 2 == 1) if x.ndim else xp.asarray(False)
        keep = xp.where(odd, x < 0, x > 0)
        ctx.save_for_backward(keep.astype(x.dtype))
        return xp.where(keep, x, 0).astype(x.dtype, copy=False)


class SoftplusFn(_Elementwise):
    def forward(ctx, x, beta, threshold):
        xp = ctx.xp
        bx = beta * x
        lin = bx > threshold
        # log(1 + e^z) = max(z, 0) + log(1 + e^-|z|): finite for every z.
        sp = (xp.maximum(bx, 0) + xp.log1p(xp.exp(-xp.abs(bx)))) / beta
        e = xp.exp(-xp.abs(bx))
        sig = xp.where(bx >= 0, 1, e) / (1 + e)
        ctx.save_for_backward(xp.where(lin, 1, sig).astype(x.dtype, copy=False))
        return xp.where(lin, x, sp).astype(x.dtype, copy=False)


class Gelu(_Elementwise):
    def forward(ctx, x, approximate):
        xp = ctx.xp
        if approximate == "tanh":
            k = math.sqrt(2 / math.pi)
            inner = k * (x + 0.044715 * x * x * x)
            t = xp.tanh(inner)
            dinner = k * (1 + 3 * 0.044715 * x * x)
            ctx.save_for_backward(0.5 * (1 + t) + 0.5 * x * (1 - t * t) * dinner)
            return 0.5 * x * (1 + t)
        cdf = 0.5 * (1 + _erf(xp, x / math.sqrt(2)))
        pdf = xp.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
        ctx.save_for_backward((cdf + x * pdf).astype(x.dtype, copy=False))
        return (x * cdf).astype(x.dtype, copy=False)


class Silu(_Elementwise):
    def forward(ctx, x):
        xp = ctx.xp
        e = xp.exp(-xp.abs(x))
        s = xp.where(x >= 0, 1, e) / (1 + e)
        ctx.save_for_backward(s * (1 + x * (1 - s)))
        return x * s


# The one-input activations: their wrapper only applies the Function.
identity = unary("identity", IdentityFn,
                 "y = x (a copy, so that the output is a new node of the graph).")
arctan = unary("arctan", Arctan, "atan(x); d/dx = 1 / (1 + x^2).", floating=True)
binary_step = unary("binary_step", BinaryStepFn,
                    "1 for x >= 0, else 0. Gradient: 0 everywhere (see BinaryStepFn).")
selu = unary("selu", Selu, "scale * (max(0, x) + min(0, alpha * (exp(x) - 1))), "
                           "alpha ~ 1.6733, scale ~ 1.0507.")
softsign = unary("softsign", SoftsignFn, "x / (1 + |x|); d/dx = 1 / (1 + |x|)^2.")
sqnl = unary("sqnl", Sqnl, "Square non-linearity: 1 for x > 2, x - x^2/4 on [0, 2], "
                           "x + x^2/4 on [-2, 0), -1 for x < -2; d/dx = 1 - |x|/2 inside "
                           "[-2, 2], 0 outside.")
bipolar_relu = unary("bipolar_relu", BipolarRelu,
                     "Bipolar ReLU (Eidnes & Nokland): along the last dim, units at even "
                     "positions apply relu(x) and units at odd positions -relu(-x).")
silu = unary("silu", Silu, "x * sigmoid(x) (a.k.a. swish); d/dx = s (1 + x (1 - s)).")


def leaky_relu(input, negative_slope=0.01):
    """x for x > 0, negative_slope * x otherwise."""
    return LeakyRelu.apply(input, slope=negative_slope)


def _check_rrelu_bounds(lower, upper, op):
    """The one check of RReLU's slope bounds (F.rrelu, and nn.RReLU at construction)."""
    if not 0 <= lower <= upper:
        raise ValueError(f"{op}: need 0 <= lower <= upper, got lower={lower}, upper={upper}")


def _check_gelu_approximate(approximate, op):
    """The one check of GELU's ``approximate`` (F.gelu, and nn.GELU at construction)."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"{op}: approximate must be 'none' or 'tanh', got {approximate!r}")


def rrelu(input, lower=1.0 / 8, upper=1.0 / 3, training=False):
    """Randomized leaky ReLU: in training each negative element gets a slope drawn from
    U(lower, upper) (from the backend's generator); in eval the slope is (lower + upper)/2."""
    _check_rrelu_bounds(lower, upper, "rrelu")
    return Rrelu.apply(input, lower=lower, upper=upper, training=bool(training))


def prelu(input, weight):
    """max(0, x) + a * min(0, x) with learnable ``weight`` a (one value, or one per channel
    along dim 1)."""
    if weight.numel() != 1:
        if input.ndim < 2 or input.shape[1] != weight.numel():
            raise RuntimeError(
                f"prelu: weight has {weight.numel()} values, so the input needs that many "
                f"channels in dim 1, but its shape is {tuple(input.shape)}")
    return Prelu.apply(input, weight)


def elu(input, alpha=1.0):
    """x for x > 0, alpha * (exp(x) - 1) otherwise."""
    return Elu.apply(input, alpha=alpha)


def isru(input, alpha=1.0):
    """Inverse square root unit: x / sqrt(1 + alpha x^2); d/dx = (1 + alpha x^2)^(-3/2)."""
    return Isru.apply(input, alpha=alpha)


def isrlu(input, alpha=1.0):
    """Inverse square root linear unit: x for x >= 0, x / sqrt(1 + alpha x^2) otherwise."""
    return Isrlu.apply(input, alpha=alpha)


def softplus(input, beta=1.0, threshold=20.0):
    """(1/beta) log(1 + exp(beta x)), and x where beta x > threshold (as PyTorch)."""
    return SoftplusFn.apply(input, beta=beta, threshold=threshold)


def gelu(input, approximate="none"):
    """x * Phi(x) with Phi the standard normal CDF; approximate='tanh' uses
    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    _check_gelu_approximate(approximate, "gelu")
    return Gelu.apply(input, approximate=approximate)
