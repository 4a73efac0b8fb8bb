"""Adadelta (Zeiler 2012), PyTorch's update rule."""
from __future__ import annotations

from .optimizer import Optimizer, check_beta, check_lr, check_nonneg


class Adadelta(Optimizer):
    r"""Adadelta:

        g = -g if maximize
        g = g + weight_decay * p
        v = rho v + (1 - rho) g^2
        d = sqrt(u + eps) / sqrt(v + eps) * g
        u = rho u + (1 - rho) d^2
        p = p - lr d

    Args: lr (1.0), rho (0.9), eps (1e-6), weight_decay (0), maximize (False)."""

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False):
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay,
                                      maximize=maximize))

    def _check_group(self, group):
        check_lr(group["lr"])
        check_beta("rho", group["rho"], closed=True)
        for name in ("eps", "weight_decay"):
            check_nonneg(name, group[name])

    def _step_group(self, group):
        params, p_arrays, g_arrays = self._with_grads(group)
        if not params:
            return
        be = params[0]._backend
        sq, acc = [], []
        for p, pa in zip(params, p_arrays):
            st = self._count_step(p, pa, "square_avg", "acc_delta")
            sq.append(st["square_avg"])
            acc.append(st["acc_delta"])
        be.adadelta_step(p_arrays, g_arrays, sq, acc, **self._options(group))

    def _options(self, group, step=None):
        """The backend call's arguments but the arrays, read from ``group`` at this call
        (the step count plays no part in the rule)."""
        return dict(lr=group["lr"], rho=group["rho"], eps=group["eps"],
                    weight_decay=group["weight_decay"], maximize=group["maximize"])

    def _prepare_group(self, group, params):
        return self._prepared_fused(group, params, "adadelta_step",
                                    ("square_avg", "acc_delta"), {}, lambda g: (),
                                    self._options, counted=True)
