"""Gradient clipping and weight penalties (``gl.nn.utils``)."""
from __future__ import annotations

import math
import numbers

from ..autograd.creation import tensor as _tensor
from ..autograd.tensor import Tensor
from ..functional import elementwise as ew
from ..functional import reduce as red


def _params(parameters):
    if isinstance(parameters, Tensor):
        return [parameters]
    return list(parameters)


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale all gradients together so that their joint norm is at most ``max_norm``:

        total = ||(||g_1||, ..., ||g_k||)||_p,  g_i *= min(1, max_norm / (total + 1e-6))

    (p = ``norm_type``, 'inf' for the max-abs norm). Parameters without a gradient are
    skipped. Returns the total norm (before clipping) as a 0-d tensor."""
    if isinstance(max_norm, bool) or not isinstance(max_norm, numbers.Real):
        raise TypeError(f"clip_grad_norm_: max_norm must be a number, got {max_norm!r}")
    if not max_norm >= 0:  # (NaN too) a negative bound would flip the gradients' sign
        raise ValueError(f"clip_grad_norm_: max_norm must be >= 0, got {max_norm!r}; pass "
                         f"the largest allowed gradient norm, e.g. max_norm=1.0")
    norm_type = float(norm_type)
    if not norm_type > 0:
        raise ValueError(f"clip_grad_norm_: norm_type must be > 0 (2.0, 1.0 or 'inf'), got "
                         f"{norm_type!r}")
    grads = [p.grad for p in _params(parameters) if p.grad is not None]
    if not grads:
        return _tensor(0.0)
    be = grads[0]._backend
    xp = be.xp
    if math.isinf(norm_type):
        norms = [xp.abs(g._data).max() for g in grads if g._data.size]
        total = xp.max(xp.stack(norms)) if norms else xp.asarray(0.0)
    else:
        norms = [(xp.abs(g._data.astype(xp.float64, copy=False)) ** norm_type).sum()
                 for g in grads]
        total = xp.stack(norms).sum() ** (1.0 / norm_type)
    total_f = float(total)
    if error_if_nonfinite and not math.isfinite(total_f):
        raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} of the "
                           f"gradients is {total_f}; set error_if_nonfinite=False to clip "
                           f"anyway")
    coef = max_norm / (total_f + 1e-6)
    if coef < 1:
        for g in grads:
            g._data *= coef
    return Tensor._wrap(xp.asarray(total_f, dtype=grads[0]._data.dtype), be)


def clip_grad_value_(parameters, clip_value):
    """Clamp every gradient element into [-clip_value, clip_value], in place."""
    clip_value = float(clip_value)
    for p in _params(parameters):
        if p.grad is not None:
            xp = p.grad._backend.xp
            xp.clip(p.grad._data, -clip_value, clip_value, out=p.grad._data)


def _penalized(model, include_bias):
    for name, p in model.named_parameters():
        if include_bias or name.rsplit(".", 1)[-1] != "bias":
            yield p


def l1_penalty(model, include_bias=False):
    """sum_w |w| over the model's parameters (parameters named 'bias' excluded unless
    ``include_bias``); add lambda * l1_penalty(model) to the loss."""
    terms = [red.sum(ew.abs(p)) for p in _penalized(model, include_bias)]
    return _sum_terms(terms, model)


def l2_penalty(model, include_bias=False):
    """sum_w w^2 over the model's parameters (biases excluded unless ``include_bias``).
    Adding (lambda / 2) * l2_penalty(model) to the loss equals SGD's weight_decay=lambda."""
    terms = [red.sum(p * p) for p in _penalized(model, include_bias)]
    return _sum_terms(terms, model)


def elastic_net_penalty(model, l1=1.0, l2=1.0, include_bias=False):
    """l1 * sum|w| + l2 * sum w^2 (biases excluded unless ``include_bias``)."""
    return l1 * l1_penalty(model, include_bias) + l2 * l2_penalty(model, include_bias)


def _sum_terms(terms, model):
    if not terms:
        raise ValueError(f"no parameters to penalize in {type(model).__name__}")
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


def parameters_to_vector(parameters):
    from ..functional.shape import cat, reshape
    return cat([reshape(p, (-1,)) for p in parameters])
