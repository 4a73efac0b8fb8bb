"""NAdam (Dozat 2016): Adam with Nesterov momentum, written with array ops."""
from __future__ import annotations

import math

import numpy as np

from .optimizer import Optimizer, as_betas, check_adam_family, check_nonneg, effective_grad


class NAdam(Optimizer):
    r"""NAdam, PyTorch's update rule. With t the step count (from 1), psi = momentum_decay:

        g = -g if maximize
        p = p * (1 - lr wd)  if decoupled_weight_decay  else  g = g + wd p
        mu_t     = beta1 (1 - 0.5 * 0.96^(t psi))
        mu_{t+1} = beta1 (1 - 0.5 * 0.96^((t + 1) psi))
        P_t = prod_{i <= t} mu_i                       (state 'mu_product')
        m = beta1 m + (1 - beta1) g
        v = beta2 v + (1 - beta2) g^2
        denom = sqrt(v / (1 - beta2^t)) + eps
        p = p - lr (1 - mu_t) / (1 - P_t) * g / denom
        p = p - lr mu_{t+1} / (1 - P_t mu_{t+1}) * m / denom

    Args: lr (2e-3), betas ((0.9, 0.999)), eps (1e-8), weight_decay (0),
    momentum_decay (4e-3), decoupled_weight_decay (False), maximize (False)."""

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 momentum_decay=4e-3, decoupled_weight_decay=False, maximize=False):
        super().__init__(params, dict(lr=lr, betas=as_betas(betas), eps=eps,
                                      weight_decay=weight_decay,
                                      momentum_decay=momentum_decay,
                                      decoupled_weight_decay=decoupled_weight_decay,
                                      maximize=maximize))

    def _check_group(self, group):
        check_adam_family(group)
        check_nonneg("momentum_decay", group["momentum_decay"])

    def _step_group(self, group):
        params, p_arrays, g_arrays = self._with_grads(group)
        b1, b2 = group["betas"]
        lr, eps, psi = group["lr"], group["eps"], group["momentum_decay"]
        for p, pa, g in zip(params, p_arrays, g_arrays):
            xp = p._backend.xp
            st = self._count_step(p, pa, "exp_avg", "exp_avg_sq", mu_product=1.0)
            t = st["step"]
            g = effective_grad(pa, g, group, group["decoupled_weight_decay"])
            mu = b1 * (1 - 0.5 * 0.96 ** (t * psi))
            mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * psi))
            st["mu_product"] *= mu
            prod = st["mu_product"]
            m, v = st["exp_avg"], st["exp_avg_sq"]
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            denom = xp.sqrt(v / (1 - b2 ** t)) + eps
            pa -= (lr * (1 - mu) / (1 - prod)) * g / denom
            pa -= (lr * mu_next / (1 - prod * mu_next)) * m / denom


def nadam_reference(p, g, m, v, mu_product, *, step, lr, beta1, beta2, eps,
                    weight_decay=0.0, momentum_decay=4e-3, decoupled_weight_decay=False,
                    maximize=False):
    """One NAdam step on NumPy arrays, out of place: returns (p, m, v, mu_product)."""
    t = step
    g = -g if maximize else g
    if decoupled_weight_decay:
        p = p * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    mu = beta1 * (1 - 0.5 * math.pow(0.96, t * momentum_decay))
    mu_next = beta1 * (1 - 0.5 * math.pow(0.96, (t + 1) * momentum_decay))
    mu_product = mu_product * mu
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    denom = np.sqrt(v / (1 - beta2 ** t)) + eps
    p = p - lr * (1 - mu) / (1 - mu_product) * g / denom
    p = p - lr * mu_next / (1 - mu_product * mu_next) * m / denom
    return p, m, v, mu_product
