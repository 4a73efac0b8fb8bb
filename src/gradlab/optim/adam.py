"""Adam and AdamW (one fused backend step for both)."""
from __future__ import annotations

import math

import numpy as np

from .optimizer import Optimizer, as_betas, check_adam_family


class Adam(Optimizer):
    r"""Adam (Kingma & Ba), PyTorch's update rule. With t the step count (from 1):

        g = -g if maximize
        g = g + weight_decay * p              (Adam: L2 penalty through the gradient)
        p = p * (1 - lr * weight_decay)       (AdamW instead: decoupled decay)
        m = beta1 m + (1 - beta1) g
        v = beta2 v + (1 - beta2) g^2
        vmax = max(vmax, v) if amsgrad (then used in place of v)
        p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    Args: lr (1e-3), betas ((0.9, 0.999)), eps (1e-8), weight_decay (0), amsgrad (False),
    maximize (False). One backend ``adam_step`` call per parameter group."""

    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, maximize=False):
        super().__init__(params, dict(lr=lr, betas=as_betas(betas), eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize))

    def _check_group(self, group):
        check_adam_family(group)

    def _step_group(self, group):
        params, p_arrays, g_arrays = self._with_grads(group)
        if not params:
            return
        be = params[0]._backend
        amsgrad = group["amsgrad"]
        arrays = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if amsgrad else \
            ("exp_avg", "exp_avg_sq")
        # Params normally share one step count; ones that missed steps (grad None) form
        # their own call, since the kernel takes one step value.
        by_step = {}
        for p, pa, ga in zip(params, p_arrays, g_arrays):
            st = self._count_step(p, pa, *arrays)
            lists = by_step.get(st["step"])
            if lists is None:
                lists = by_step[st["step"]] = ([], [], [], [], [] if amsgrad else None)
            lists[0].append(pa)
            lists[1].append(ga)
            lists[2].append(st["exp_avg"])
            lists[3].append(st["exp_avg_sq"])
            if amsgrad:
                lists[4].append(st["max_exp_avg_sq"])
        b1, b2 = group["betas"]
        for step, lists in by_step.items():
            be.adam_step(*lists, step=step, lr=group["lr"], beta1=b1, beta2=b2,
                         eps=group["eps"], weight_decay=group["weight_decay"],
                         decoupled_weight_decay=self._decoupled, amsgrad=amsgrad,
                         maximize=group["maximize"])


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter): before the Adam update,
    p = p * (1 - lr * weight_decay); the gradient itself is not decayed. Same arguments as
    Adam, but weight_decay defaults to 1e-2 (PyTorch's default)."""

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, maximize=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize)


def adam_reference(p, g, m, v, vmax, *, step, lr, beta1, beta2, eps, weight_decay=0.0,
                   decoupled_weight_decay=False, amsgrad=False, maximize=False):
    """One Adam/AdamW step on NumPy arrays, out of place: returns (p, m, v, vmax)."""
    g = -g if maximize else g
    if decoupled_weight_decay:
        p = p * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    if amsgrad:
        vmax = np.maximum(vmax, v)
    denom = (np.sqrt(vmax if amsgrad else v) / math.sqrt(1 - beta2 ** step)) + eps
    p = p - lr / (1 - beta1 ** step) * m / denom
    return p, m, v, vmax

