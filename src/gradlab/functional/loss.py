"""Loss functions, reductions 'none' | 'mean' | 'sum' as PyTorch.

Primitives with hand-written gradients where stability or speed matters (cross-entropy
through the backend's fused softmax-cross-entropy kernel, NLL, BCE, BCE-with-logits);
the rest are composites of differentiable ops.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ..autograd.function import Function, without_grad
from ..autograd.tensor import Tensor
from . import elementwise as ew
from . import reduce as red
from . import shape as sh
from .activation import log_softmax
from .loss_checks import REDUCTIONS as _REDUCTIONS
from .loss_checks import check_label_smoothing as _check_label_smoothing
from .loss_checks import check_margin_power as _check_margin_power
from .loss_checks import check_reduction as _check_reduction
from .loss_checks import check_same_shape as _check_same_shape


def _reduce(loss, reduction):
    if reduction == "mean":
        return red.mean(loss)
    if reduction == "sum":
        return red.sum(loss)
    return loss


def _as_tensor_like(value, ref):
    if isinstance(value, Tensor):
        return value
    return Tensor._wrap(ref._backend.xp.asarray(value, dtype=ref.dtype), ref._backend)


# -- classification ---------------------------------------------------------------------------
def _check_class_target(op, target, n_classes, ignore_index):
    """Clear errors for the common target mistakes, before any kernel sees them."""
    if not isinstance(target, Tensor):
        raise TypeError(f"{op}: target must be a Tensor of class indices, got "
                        f"{type(target).__name__}")
    kind = target.dtype.kind
    if kind == "f":
        raise TypeError(
            f"{op}: target has dtype {target.dtype}, but class-index targets must be integers "
            f"(int64); convert with target.long(), or pass class probabilities with the same "
            f"shape as the input")
    if kind not in "iu":
        raise TypeError(f"{op}: target has dtype {target.dtype}; expected int64 class indices")


class SoftmaxCrossEntropy(Function):
    """Mean/sum/none of per-row softmax cross-entropy, computed by the backend's fused
    ``softmax_cross_entropy`` (one kernel on CUDA for loss and gradient)."""

    def forward(ctx, logits, target, weight, ignore_index, label_smoothing, reduction):
        return cross_entropy_forward(ctx.backend.softmax_cross_entropy, ctx, logits, target,
                                     weight, ignore_index, label_smoothing, reduction)

    def backward(ctx, g):
        grad, = ctx.saved_tensors
        if ctx.reduction == "none":
            return grad * g[:, None], None, None
        return grad * g, None, None


def cross_entropy_forward(kernel, ctx, logits, target, weight, ignore_index, label_smoothing,
                          reduction):
    """SoftmaxCrossEntropy's forward with ``kernel`` as the backend's softmax_cross_entropy
    (a compiled step's replay passes the op prepared for its arrays: functional/fusions.py)."""
    if target.dtype != np.int64:
        target = target.astype(np.int64)
    if weight is not None and weight.dtype != logits.dtype:
        weight = weight.astype(logits.dtype)  # (float64 class weights on a float32 model)
    # The backend reduces too ('mean': PyTorch's division by the weight of the kept
    # rows), so that grad is already the returned loss's gradient.
    loss, grad = kernel(logits, target, weight, ignore_index, label_smoothing, reduction)
    ctx.reduction = reduction
    ctx.save_for_backward(grad)
    return loss


def _soft_target_cross_entropy(input, target, weight, label_smoothing, reduction, dim):
    """Probability targets: loss_i = -sum_c w_c t_ic log_softmax(x_i)_c (smoothing mixes
    t with the uniform distribution first)."""
    n_classes = input.shape[dim]
    if label_smoothing > 0:
        target = target * (1 - label_smoothing) + label_smoothing / n_classes
    logp = log_softmax(input, dim=dim)
    if weight is not None:
        shape = [1] * input.ndim
        shape[dim] = n_classes
        if weight.dtype != input.dtype:  # as with class-index targets: float32 stays float32
            weight = weight.to(input.dtype)
        logp = logp * sh.reshape(weight, tuple(shape))
    loss = -red.sum(logp * target, dim=dim)
    if reduction == "mean":
        return red.sum(loss) / (loss.numel() if loss.ndim else 1)
    return _reduce(loss, reduction)


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0):
    """Softmax cross-entropy of logits ``input`` (N, C) [or (C,), or (N, C, d1, ...)] and
    class indices ``target`` (N,) [or (), (N, d1, ...)]:

        loss_i = (1 - s) w[y_i] (-log p_i,y_i) + (s / C) sum_c w_c (-log p_ic),
        p_i = softmax(x_i), s = label_smoothing,

    rows with y_i == ignore_index contribute 0. 'mean' divides by sum_i w[y_i] over the
    non-ignored rows. A float ``target`` with the input's shape is read as class
    probabilities (loss_i = -sum_c w_c t_ic log p_ic). Stable for any finite logits."""
    op = "cross_entropy"
    _check_reduction(op, reduction)
    _check_label_smoothing(op, label_smoothing)
    if input.ndim == 0:
        raise ValueError(f"{op}: input must have a class dimension, got a 0-d tensor")
    if input.dtype.kind != "f":
        raise TypeError(f"{op}: input (logits) must be floating point, got {input.dtype}")
    class_dim = 0 if input.ndim == 1 else 1
    n_classes = input.shape[class_dim]
    _check_class_weight(op, weight, n_classes)
    if isinstance(target, Tensor) and target.dtype.kind == "f" and \
            tuple(target.shape) == tuple(input.shape):
        return _soft_target_cross_entropy(input, target, weight, label_smoothing,
                                          reduction, class_dim)
    _check_class_target(op, target, n_classes, ignore_index)
    # Bring everything to the (rows, C) layout the kernel takes.
    if input.ndim == 1:
        if target.ndim != 0:
            raise ValueError(f"{op}: for a 1-d input (one row of {n_classes} logits) the "
                             f"target must be a 0-d class index, got shape "
                             f"{tuple(target.shape)}")
        rows, tgt, out_shape = sh.reshape(input, (1, n_classes)), sh.reshape(target, (1,)), ()
    else:
        expected = (input.shape[0],) + tuple(input.shape[2:])
        if tuple(target.shape) != expected:
            raise ValueError(f"{op}: target shape {tuple(target.shape)} does not match the "
                             f"input shape {tuple(input.shape)}: expected {expected} (one "
                             f"class index per row)")
        if input.ndim == 2:
            rows, tgt, out_shape = input, target, expected
        else:
            perm = (0,) + tuple(range(2, input.ndim)) + (1,)
            rows = sh.reshape(sh.permute(input, perm), (-1, n_classes))
            tgt, out_shape = sh.reshape(target, (-1,)), expected
    if target._backend is not input._backend:
        raise RuntimeError(f"{op}: input is on {input.device} but target on {target.device}")
    # (The weight goes in as the tensor, cast in the op: a compiled step's replay then reads
    # it, changed in place or rebound, at every call, as eager does.)
    out = SoftmaxCrossEntropy.apply(rows, tgt, without_grad(weight), ignore_index=ignore_index,
                                    label_smoothing=float(label_smoothing),
                                    reduction=reduction)
    if reduction == "none" and tuple(out.shape) != tuple(out_shape):
        out = sh.reshape(out, out_shape)
    return out


class NllLoss(Function):
    """loss_i = -w[y_i] x[i, y_i] (0 for ignored rows), reduced as PyTorch."""

    def forward(ctx, x, target, weight, ignore_index, reduction):
        xp = ctx.xp
        n, c = x.shape
        valid = target != ignore_index
        safe = xp.where(valid, target, 0)
        ctx.backend.check((safe < 0) | (safe >= c), lambda first: IndexError(
            f"nll_loss: target {int(target[first])} is out of bounds for {c} classes (valid "
            f"targets are 0..{c - 1}, or ignore_index={ignore_index})"))
        w = valid.astype(x.dtype) if weight is None else \
            weight.astype(x.dtype, copy=False)[safe] * valid
        rows = xp.arange(n)
        loss = -x[rows, safe] * w
        ctx.reduction, ctx.shape = reduction, x.shape
        if reduction == "mean":
            denom = w.sum()
            loss = loss.sum() / denom
            # (an ignored row's 0 / 0 would be a nan gradient where every row is ignored;
            # PyTorch's is 0 there)
            w = xp.where(valid, w / denom, w)
        elif reduction == "sum":
            loss = loss.sum()
        ctx.save_for_backward(safe, w)
        return loss

    def backward(ctx, g):
        safe, w = ctx.saved_tensors
        xp = ctx.xp
        gx = xp.zeros(ctx.shape, dtype=w.dtype)
        gx[xp.arange(ctx.shape[0]), safe] = -w * g
        return gx, None, None


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """Negative log-likelihood of log-probabilities ``input`` (N, C) at class ``target`` (N,):
    loss_i = -w[y_i] input[i, y_i]; 'mean' divides by sum_i w[y_i] (ignored rows excluded).
    Also (C,) with a 0-d target, and (N, C, d1, ...) with targets (N, d1, ...): the class
    dim is 1, every position is a row, 'none' keeps the target's shape (PyTorch's
    NLLLoss2d)."""
    op = "nll_loss"
    _check_reduction(op, reduction)
    if input.ndim == 1:
        if target.ndim != 0:
            raise ValueError(f"{op}: input of shape {tuple(input.shape)} is read as ONE "
                             f"sample's log-probabilities over {input.shape[0]} classes, so "
                             "target must be one class index (shape ()), got shape "
                             f"{tuple(target.shape)}; for a batch pass input of shape (N, C), "
                             "e.g. log_softmax of (N, C) logits")
        return sh.reshape(nll_loss(sh.reshape(input, (1, -1)), sh.reshape(target, (1,)),
                                   weight, ignore_index, reduction), ()) \
            if reduction == "none" else \
            nll_loss(sh.reshape(input, (1, -1)), sh.reshape(target, (1,)), weight,
                     ignore_index, reduction)
    if input.ndim == 0:
        raise ValueError(f"{op}: input must be (N, C), (C,) or (N, C, d1, ...), got a 0-d "
                         "tensor")
    if input.ndim > 2:
        _check_class_target(op, target, input.shape[1], ignore_index)
        expected = (input.shape[0],) + tuple(input.shape[2:])
        if tuple(target.shape) != expected:
            raise ValueError(f"{op}: target shape {tuple(target.shape)} does not match input "
                             f"shape {tuple(input.shape)}: expected {expected} (the input "
                             "without its class dim 1)")
        # The 2-D op on one row per position: the class dim moved last, then flattened.
        perm = (0,) + tuple(range(2, input.ndim)) + (1,)
        rows = sh.reshape(sh.permute(input, perm), (math.prod(expected), input.shape[1]))
        out = nll_loss(rows, sh.reshape(target, (-1,)), weight, ignore_index, reduction)
        return sh.reshape(out, expected) if reduction == "none" else out
    _check_class_target(op, target, input.shape[1], ignore_index)
    if tuple(target.shape) != (input.shape[0],):
        raise ValueError(f"{op}: target shape {tuple(target.shape)} does not match input "
                         f"shape {tuple(input.shape)}: expected ({input.shape[0]},)")
    _check_class_weight(op, weight, input.shape[1])
    return NllLoss.apply(input, target, without_grad(weight), ignore_index=ignore_index,
                         reduction=reduction)


def _check_class_weight(op, weight, n_classes):
    if weight is None:
        return
    if not isinstance(weight, Tensor):
        raise TypeError(f"{op}: weight must be a Tensor of {n_classes} class weights, got "
                        f"{type(weight).__name__}; wrap it with gl.tensor(...)")
    if tuple(weight.shape) != (n_classes,):
        raise ValueError(f"{op}: weight must have shape ({n_classes},) (one per class), got "
                         f"{tuple(weight.shape)}")


# -- binary classification --------------------------------------------------------------------
class BinaryCrossEntropy(Function):
    """-w (y log x + (1 - y) log(1 - x)), each log clamped to >= -100 as PyTorch."""

    def forward(ctx, x, y, w):
        xp = ctx.xp
        w = _weight_as(xp, w, x)
        ctx.backend.check((x < 0) | (x > 1), lambda first: ValueError(
            f"binary_cross_entropy: input values must be probabilities in [0, 1], found "
            f"{float(x.reshape(-1)[first])}; for logits use binary_cross_entropy_with_logits"))
        with np.errstate(divide="ignore"):
            log_x = xp.maximum(xp.log(x), -100)
            log_1mx = xp.maximum(xp.log(1 - x), -100)
        loss = -(y * log_x + (1 - y) * log_1mx)
        if w is not None:
            loss = loss * w
        ctx.save_for_backward(x, y, w)
        return loss

    def backward(ctx, g):
        x, y, w = ctx.saved_tensors
        xp = ctx.xp
        # d/dx = (x - y) / (x (1 - x)), with the denominator kept away from 0 (PyTorch uses
        # eps = 1e-12 the same way).
        gx = g * (x - y) / xp.maximum(x * (1 - x), 1e-12)
        if w is not None:
            gx = gx * w
        gy = None
        if ctx.needs_input_grad[1]:
            with np.errstate(divide="ignore"):
                gy = g * (xp.maximum(xp.log(1 - x), -100) - xp.maximum(xp.log(x), -100))
            if w is not None:
                gy = gy * w
        return gx, gy, None


def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    """loss = -w [y log(x) + (1 - y) log(1 - x)] for probabilities x in [0, 1]; the logs are
    clamped at -100 so x = 0 or 1 gives a finite loss (as PyTorch)."""
    op = "binary_cross_entropy"
    _check_reduction(op, reduction)
    _check_same_shape(op, input, target)
    w = _elementwise_weight(op, "weight", weight, input)
    return _reduce(BinaryCrossEntropy.apply(input, target, w), reduction)


def _elementwise_weight(op, name, weight, input):
    """``weight`` (a tensor, array or number; or None) checked to broadcast to the input's
    shape. A tensor stays one, for the op to read (``_weight_as``): a compiled step's
    replay then reads it, changed in place or rebound, at every call."""
    if weight is None:
        return None
    if not isinstance(weight, Tensor):
        weight = input._backend.xp.asarray(weight)
    weight = without_grad(weight)
    shape = tuple(weight.shape)
    try:
        fits = np.broadcast_shapes(shape, tuple(input.shape)) == tuple(input.shape)
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{op}: {name} of shape {shape} does not broadcast to the input's "
                         f"shape {tuple(input.shape)}")
    return weight


def _weight_as(xp, w, x):
    """An elementwise weight's array broadcast to ``x``'s shape, in its dtype (or None)."""
    return None if w is None else xp.broadcast_to(w.astype(x.dtype, copy=False), x.shape)


class BceWithLogits(Function):
    """loss = (1 - y) x + (1 + (pw - 1) y) softplus(-x), softplus written stably."""

    def forward(ctx, x, y, w, pw):
        xp = ctx.xp
        w, pw = _weight_as(xp, w, x), _weight_as(xp, pw, x)
        sp_neg = xp.maximum(-x, 0) + xp.log1p(xp.exp(-xp.abs(x)))  # log(1 + e^-x)
        lw = 1 if pw is None else 1 + (pw - 1) * y
        loss = (1 - y) * x + lw * sp_neg
        if w is not None:
            loss = loss * w
        ctx.save_for_backward(x, y, w, pw)
        return loss

    def backward(ctx, g):
        x, y, w, pw = ctx.saved_tensors
        xp = ctx.xp
        e = xp.exp(-xp.abs(x))
        sig = xp.where(x >= 0, 1, e) / (1 + e)
        if pw is None:
            gx = sig - y
        else:
            # d/dx = (1 - y) - (1 + (pw - 1) y) (1 - sigmoid(x))
            gx = (1 - y) - (1 + (pw - 1) * y) * (1 - sig)
        gx = g * gx
        if w is not None:
            gx = gx * w
        gy = None
        if ctx.needs_input_grad[1]:
            sp_neg = xp.maximum(-x, 0) + xp.log1p(xp.exp(-xp.abs(x)))
            gy = -x + (0 if pw is None else (pw - 1) * sp_neg)
            gy = g * gy if w is None else g * gy * w
        return gx, gy, None, None


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean",
                                     pos_weight=None):
    """BCE on logits, stable for any x: with pw = pos_weight (one per class, broadcast over
    the last dim), loss = -w [pw y log(sigmoid(x)) + (1 - y) log(1 - sigmoid(x))]
    = w [(1 - y) x + (1 + (pw - 1) y) log(1 + exp(-x))]."""
    op = "binary_cross_entropy_with_logits"
    _check_reduction(op, reduction)
    _check_same_shape(op, input, target)
    w = _elementwise_weight(op, "weight", weight, input)
    pw = _elementwise_weight(op, "pos_weight", pos_weight, input)
    return _reduce(BceWithLogits.apply(input, target, w, pw), reduction)


# -- regression ------------------------------------------------------------------------------
def mse_loss(input, target, reduction="mean"):
    """(x - y)^2, reduced."""
    _check_reduction("mse_loss", reduction)
    _check_same_shape("mse_loss", input, target)
    d = ew.sub(input, target)
    return _reduce(ew._mul(d, d), reduction)


def l1_loss(input, target, reduction="mean"):
    """|x - y|, reduced."""
    _check_reduction("l1_loss", reduction)
    _check_same_shape("l1_loss", input, target)
    return _reduce(ew.abs(ew.sub(input, target)), reduction)


def huber_loss(input, target, reduction="mean", delta=1.0):
    """0.5 d^2 where |d| < delta, delta (|d| - 0.5 delta) elsewhere, d = x - y."""
    _check_reduction("huber_loss", reduction)
    _check_same_shape("huber_loss", input, target)
    if delta <= 0:
        raise ValueError(f"huber_loss: delta must be positive, got {delta}")
    d = ew.sub(input, target)
    a = ew.abs(d)
    # quadratic part on min(|d|, delta), linear beyond: same values, gradient d or delta*sign
    q = ew.clamp(a, max=delta)
    loss = 0.5 * q * q + delta * (a - q)
    return _reduce(loss, reduction)


def smooth_l1_loss(input, target, reduction="mean", beta=1.0):
    """0.5 d^2 / beta where |d| < beta, |d| - 0.5 beta elsewhere; beta = 0 is L1."""
    _check_reduction("smooth_l1_loss", reduction)
    _check_same_shape("smooth_l1_loss", input, target)
    if beta < 0:
        raise ValueError(f"smooth_l1_loss: beta must be >= 0, got {beta}")
    if beta == 0:
        return l1_loss(input, target, reduction)
    d = ew.sub(input, target)
    a = ew.abs(d)
    q = ew.clamp(a, max=beta)
    loss = (0.5 / beta) * q * q + (a - q)
    return _reduce(loss, reduction)


# -- distributions ---------------------------------------------------------------------------
def kl_div(input, target, reduction="mean", log_target=False):
    """KL divergence with log-probabilities ``input``: target (log target - input), or
    exp(target) (target - input) when ``log_target``; 0 where target == 0. 'batchmean'
    divides the sum by the batch size (the true KL per sample), 'mean' by the element count.
    """
    _check_reduction("kl_div", reduction, _REDUCTIONS + ("batchmean",))
    _check_same_shape("kl_div", input, target)
    if log_target:
        loss = ew.exp(target) * (target - input)
    else:
        pos = ew.gt(target, 0)
        # xlogy: 0 log 0 = 0, without a NaN gradient from log(0)
        safe = ew.where(pos, target, 1.0)
        loss = ew.where(pos, target * (ew.log(safe) - input), 0.0 * input)
    if reduction == "batchmean":
        return red.sum(loss) / (input.shape[0] if input.ndim else 1)
    return _reduce(loss, reduction)


def poisson_nll_loss(input, target, log_input=True, full=False, eps=1e-8, reduction="mean"):
    """Poisson negative log-likelihood: exp(x) - y x when ``log_input``, else
    x - y log(x + eps); ``full`` adds Stirling's y log y - y + 0.5 log(2 pi y) for y > 1."""
    _check_reduction("poisson_nll_loss", reduction)
    _check_same_shape("poisson_nll_loss", input, target)
    if log_input:
        loss = ew.exp(input) - target * input
    else:
        loss = input - target * ew.log(input + eps)
    if full:
        y = target.detach()
        big = ew.gt(y, 1)
        ys = ew.where(big, y, 1.0)
        stirling = ys * ew.log(ys) - ys + 0.5 * ew.log(2 * math.pi * ys)
        loss = loss + ew.where(big, stirling, 0.0)
    return _reduce(loss, reduction)


class _ClampVariance(Function):
    """max(var, lo) in the forward pass, identity gradient (PyTorch clamps the variance of
    GaussianNLLLoss under no_grad, so gradients pass through unchanged). Negative entries
    are refused here, in the op, so that a replayed step checks each batch's."""

    def forward(ctx, var, lo):
        ctx.backend.check(var < 0, lambda first: ValueError(
            f"gaussian_nll_loss: var has negative entries ({float(var.reshape(-1)[first])})"))
        return ctx.xp.maximum(var, lo)

    def backward(ctx, g):
        return g


def gaussian_nll_loss(input, target, var, full=False, eps=1e-6, reduction="mean"):
    """0.5 (log(max(var, eps)) + (x - y)^2 / max(var, eps)) (+ 0.5 log(2 pi) if ``full``).
    ``var`` has the input's shape, or it with the last dim 1 or dropped (homoscedastic), or
    is a Python number used for every expectation (as PyTorch's float ``var``)."""
    op = "gaussian_nll_loss"
    _check_reduction(op, reduction)
    _check_same_shape(op, input, target)
    if isinstance(var, bool):
        raise TypeError(f"{op}: var must be a Tensor of variances or a positive number, got "
                        f"{var!r}")
    scalar = isinstance(var, numbers.Real)
    if not isinstance(var, Tensor):
        var = _as_tensor_like(var, input)
    if not scalar and tuple(var.shape) != tuple(input.shape):  # (a 0-d var broadcasts)
        if tuple(var.shape) == tuple(input.shape[:-1]):
            var = sh.unsqueeze(var, -1)
        elif not (var.ndim == input.ndim and tuple(var.shape[:-1]) == tuple(input.shape[:-1])
                  and var.shape[-1] == 1):
            raise ValueError(f"{op}: var shape {tuple(var.shape)} must equal the input shape "
                             f"{tuple(input.shape)}, or it with the last dim 1 or dropped")
    v = _ClampVariance.apply(var, lo=eps)
    d = input - target
    loss = 0.5 * (ew.log(v) + d * d / v)
    if full:
        loss = loss + 0.5 * math.log(2 * math.pi)
    return _reduce(loss, reduction)


# -- margin losses ---------------------------------------------------------------------------
class MultiMargin(Function):
    """Per row: sum_{j != y} w[y] max(0, margin - x[y] + x[j])^p / C. The targets are
    checked here, in the op, so that a replayed step checks each batch's."""

    def forward(ctx, x, target, weight, p, margin):
        xp = ctx.xp
        n, c = x.shape
        ctx.backend.check((target < 0) | (target >= c), lambda first: IndexError(
            f"multi_margin_loss: target {int(target[first])} is out of bounds for {c} classes"))
        rows = xp.arange(n)
        h = (margin - x[rows, target][:, None]) + x
        active = h > 0
        h = xp.where(active, h, 0)
        scale = xp.ones((n, c), dtype=x.dtype)
        scale[rows, target] = 0
        if weight is not None:
            scale = scale * weight.astype(x.dtype, copy=False)[target][:, None]
        ctx.rows, ctx.target, ctx.c, ctx.p = rows, target, c, p
        ctx.save_for_backward(h, active, scale)
        return ((h * h if p == 2 else h) * scale).sum(axis=1) / c

    def backward(ctx, g):
        h, active, scale = ctx.saved_tensors
        dh = (2 * h if ctx.p == 2 else active.astype(h.dtype)) * scale
        gx = dh * (g[:, None] / ctx.c)
        gx[ctx.rows, ctx.target] -= gx.sum(axis=1)
        return gx, None, None

    def release(self):
        super().release()
        self.target = None


def multi_margin_loss(input, target, p=1, margin=1.0, weight=None, reduction="mean"):
    """Multi-class hinge loss (Weston-Watkins SVM): for row i with class y,
    loss_i = sum_{j != y} w[y] max(0, margin - x[y] + x[j])^p / C, p in {1, 2}.
    ``input`` is (N, C), or one sample's (C,) (a 0-d input: C = 1); ``target`` has N
    elements, as (N,) or, for one sample, (). 'none' gives the target's shape, as PyTorch
    (so a (C,) input with a (1,) target gives (1,))."""
    op = "multi_margin_loss"
    _check_reduction(op, reduction)
    _check_margin_power(op, p)
    if input.ndim > 2:
        raise ValueError(f"{op}: input must be (N, C) or (C,), got {tuple(input.shape)}")
    if input.ndim and input.shape[-1] == 0:
        raise ValueError(f"{op}: input of shape {tuple(input.shape)} has no classes")
    n = input.shape[0] if input.ndim == 2 else 1
    c = input.shape[-1] if input.ndim else 1
    _check_class_target(op, target, c, None)
    if target.ndim > 1 or target.numel() != n:
        raise ValueError(f"{op}: target shape {tuple(target.shape)} must be ({n},)"
                         + (" or () (one sample)" if n == 1 else ""))
    if input.ndim != 2:
        input = sh.reshape(input, (1, c))
    loss = MultiMargin.apply(input, sh.reshape(target, (n,)) if target.ndim != 1 else target,
                             weight, p=p, margin=margin)
    if reduction == "none" and target.ndim == 0:
        loss = sh.reshape(loss, ())
    return _reduce(loss, reduction)


def hinge_embedding_loss(input, target, margin=1.0, reduction="mean"):
    """x where y == 1, max(0, margin - x) where y == -1 (targets are +-1)."""
    _check_reduction("hinge_embedding_loss", reduction)
    _check_same_shape("hinge_embedding_loss", input, target)
    zero = 0.0 * input
    pos = ew.where(ew.ne(target, -1), input, zero)
    neg = ew.where(ew.ne(target, 1), ew.clamp(margin - input, min=0), zero)
    return _reduce(pos + neg, reduction)
