"""RAdam (Liu et al. 2019): Adam with a rectified adaptive learning rate; one fused backend
step per parameter group."""
from __future__ import annotations

from .optimizer import as_betas
from .step_counted import StepCountedOptimizer


class RAdam(StepCountedOptimizer):
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

    _op = "radam_step"
    _arrays = ("exp_avg", "exp_avg_sq")

    def _options(self, group, step, st):
        b1, b2 = group["betas"]
        return dict(step=step, lr=group["lr"], beta1=b1, beta2=b2, eps=group["eps"],
                    weight_decay=group["weight_decay"],
                    decoupled_weight_decay=group["decoupled_weight_decay"],
                    maximize=group["maximize"])
