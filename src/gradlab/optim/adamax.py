"""Adamax (Adam with the infinity norm): no fused kernel, each parameter steps through the
array-op formula of backend/fused/optim/reference.py on its own backend."""
from __future__ import annotations

from ..backend.fused.optim import reference, scalars
from .optimizer import Optimizer, as_betas, check_adam_family


class Adamax(Optimizer):
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

    def _check_group(self, group):
        check_adam_family(group)

    def _step_group(self, group):
        params, p_arrays, g_arrays = self._with_grads(group)
        b1, b2 = group["betas"]
        lr, eps = group["lr"], group["eps"]
        for p, pa, g in zip(params, p_arrays, g_arrays):
            st = self._count_step(p, pa, "exp_avg", "exp_inf")
            sc = scalars.adamax_scalars(step=st["step"], lr=lr, beta1=b1, beta2=b2, eps=eps)
            reference.adamax(p._backend.xp, pa, g, st["exp_avg"], st["exp_inf"], sc,
                             weight_decay=group["weight_decay"], maximize=group["maximize"])
