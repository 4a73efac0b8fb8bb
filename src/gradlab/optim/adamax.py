"""Adamax (Adam with the infinity norm), written with array ops (no fused kernel)."""
from __future__ import annotations

import numpy as np

from .optimizer import Optimizer, as_betas, check_adam_family, effective_grad


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
            xp = p._backend.xp
            st = self._count_step(p, pa, "exp_avg", "exp_inf")
            g = effective_grad(pa, g, group)
            m, u = st["exp_avg"], st["exp_inf"]
            m *= b1
            m += (1 - b1) * g
            u *= b2
            xp.maximum(u, xp.abs(g) + eps, out=u)
            pa -= (lr / (1 - b1 ** st["step"])) * m / u


def adamax_reference(p, g, m, u, *, step, lr, beta1, beta2, eps, weight_decay=0.0,
                     maximize=False):
    """One Adamax step on NumPy arrays, out of place: returns (p, m, u)."""
    g = -g if maximize else g
    g = g + weight_decay * p
    m = beta1 * m + (1 - beta1) * g
    u = np.maximum(beta2 * u, np.abs(g) + eps)
    p = p - lr / (1 - beta1 ** step) * m / u
    return p, m, u
