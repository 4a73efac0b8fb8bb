"""NAdam (Dozat 2016): Adam with Nesterov momentum; one fused backend step per parameter
group."""
from __future__ import annotations

from ..backend.fused.optim import scalars
from .optimizer import as_betas, check_adam_family, check_nonneg
from .step_counted import StepCountedOptimizer


class NAdam(StepCountedOptimizer):
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

    _op = "nadam_step"
    _arrays = ("exp_avg", "exp_avg_sq")
    _scalar_state = {"mu_product": 1.0}

    def _options(self, group, step, st):
        b1, b2 = group["betas"]
        return dict(step=step, lr=group["lr"], beta1=b1, beta2=b2, eps=group["eps"],
                    weight_decay=group["weight_decay"],
                    decoupled_weight_decay=group["decoupled_weight_decay"],
                    momentum_decay=group["momentum_decay"], mu_product=st["mu_product"],
                    maximize=group["maximize"])

    def _stepped(self, group, sts):
        first = sts[0]
        product = scalars.nadam_mu_product(step=first["step"], beta1=group["betas"][0],
                                           momentum_decay=group["momentum_decay"],
                                           mu_product=first["mu_product"])
        for st in sts:
            st["mu_product"] = product
