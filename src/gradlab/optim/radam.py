"""RAdam (Liu et al. 2019): Adam with a rectified adaptive learning rate, array ops."""
from __future__ import annotations

import math

import numpy as np

from .optimizer import Optimizer, as_betas, check_adam_family, effective_grad


def _rect(beta2, t):
    """(rho_t, r_t): the SMA length and the variance rectification term (r_t = None while
    rho_t <= 5, when the adaptive step is not used)."""
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * t * beta2 ** t / (1 - beta2 ** t)
    if rho_t <= 5:
        return rho_t, None
    r = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf /
                  ((rho_inf - 4) * (rho_inf - 2) * rho_t))
    return rho_t, r


class RAdam(Optimizer):
    r"""RAdam, PyTorch's update rule. With t the step count (from 1):

        g = -g if maximize
        p = p * (1 - lr wd)  if decoupled_weight_decay  else  g = g + wd p
        m = beta1 m + (1 - beta1) g
        v = beta2 v + (1 - beta2) g^2
        m_hat = m / (1 - beta1^t)
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t)
        if rho_t > 5:
            l = sqrt(1 - beta2^t) / (sqrt(v) + eps)
            r = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
            p = p - lr m_hat l r
        else:
            p = p - lr m_hat

    Args: lr (1e-3), betas ((0.9, 0.999)), eps (1e-8), weight_decay (0),
    decoupled_weight_decay (False), maximize (False)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 decoupled_weight_decay=False, maximize=False):
        super().__init__(params, dict(lr=lr, betas=as_betas(betas), eps=eps,
                                      weight_decay=weight_decay,
                                      decoupled_weight_decay=decoupled_weight_decay,
                                      maximize=maximize))

    def _check_group(self, group):
        check_adam_family(group)

    def _step_group(self, group):
        params, p_arrays, g_arrays = self._with_grads(group)
        b1, b2 = group["betas"]
        lr, eps = group["lr"], group["eps"]
        for p, pa, g in zip(params, p_arrays, g_arrays):
            xp = p._backend.xp
            st = self._count_step(p, pa, "exp_avg", "exp_avg_sq")
            t = st["step"]
            g = effective_grad(pa, g, group, group["decoupled_weight_decay"])
            m, v = st["exp_avg"], st["exp_avg_sq"]
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            step_size = lr / (1 - b1 ** t)
            _, r = _rect(b2, t)
            if r is None:
                pa -= step_size * m
            else:
                pa -= (step_size * r * math.sqrt(1 - b2 ** t)) * m / (xp.sqrt(v) + eps)


def radam_reference(p, g, m, v, *, step, lr, beta1, beta2, eps, weight_decay=0.0,
                    decoupled_weight_decay=False, maximize=False):
    """One RAdam step on NumPy arrays, out of place: returns (p, m, v)."""
    t = step
    g = -g if maximize else g
    if decoupled_weight_decay:
        p = p * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    m_hat = m / (1 - beta1 ** t)
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * t * beta2 ** t / (1 - beta2 ** t)
    if rho_t > 5:
        l_t = math.sqrt(1 - beta2 ** t) / (np.sqrt(v) + eps)
        r_t = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf /
                        ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        p = p - lr * m_hat * l_t * r_t
    else:
        p = p - lr * m_hat
    return p, m, v
