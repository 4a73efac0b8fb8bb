"""Adamax (Adam with the infinity norm): one fused backend step per parameter group."""
from __future__ import annotations

from .optimizer import as_betas
from .step_counted import StepCountedOptimizer


class Adamax(StepCountedOptimizer):
    r"""Adamax, PyTorch's update rule. With t the step count (from 1):

        g = -g if maximize
        g = g + weight_decay * p
        m = beta1 m + (1 - beta1) g
        u = max(beta2 u, |g| + eps)
        p = p - lr / (1 - beta1^t) * m / u

    Args: lr (2e-3), betas ((0.9, 0.999)), eps (1e-8), weight_decay (0), maximize (False)."""

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 maximize=False):
        super().__init__(params, dict(lr=lr, betas=as_betas(betas), eps=eps,
                                      weight_decay=weight_decay, maximize=maximize))

    _op = "adamax_step"
    _arrays = ("exp_avg", "exp_inf")

    def _options(self, group, step, st):
        b1, b2 = group["betas"]
        return dict(step=step, lr=group["lr"], beta1=b1, beta2=b2, eps=group["eps"],
                    weight_decay=group["weight_decay"], maximize=group["maximize"])
