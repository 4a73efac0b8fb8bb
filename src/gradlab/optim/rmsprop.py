"""RMSprop (Hinton's lecture 6e), PyTorch's variant with optional centering and momentum."""
from __future__ import annotations

from .optimizer import Optimizer, check_beta, check_lr, check_nonneg


class RMSprop(Optimizer):
    r"""RMSprop, PyTorch's update rule:

        g = -g if maximize
        g = g + weight_decay * p
        v = alpha v + (1 - alpha) g^2
        if centered:  a = alpha a + (1 - alpha) g;  avg = sqrt(v - a^2) + eps
        else:         avg = sqrt(v) + eps
        if momentum > 0:  b = momentum b + g / avg;  p = p - lr b
        else:             p = p - lr g / avg

    Args: lr (1e-2), alpha (0.99), eps (1e-8), weight_decay (0), momentum (0),
    centered (False), maximize (False)."""

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, maximize=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered,
                                      maximize=maximize))

    def _check_group(self, group):
        check_lr(group["lr"])
        for name in ("eps", "momentum", "weight_decay"):
            check_nonneg(name, group[name])
        check_beta("alpha", group["alpha"], closed=True)  # v = alpha v + (1 - alpha) g^2

    def _step_group(self, group):
        params, p_arrays, g_arrays = self._with_grads(group)
        if not params:
            return
        be = params[0]._backend
        use_mom, centered = group["momentum"] > 0, group["centered"]
        sq, mom, gavg = [], [] if use_mom else None, [] if centered else None
        arrays = ("square_avg",) + (("momentum_buffer",) if use_mom else ()) + \
            (("grad_avg",) if centered else ())
        for p, pa in zip(params, p_arrays):
            st = self._count_step(p, pa, *arrays)
            sq.append(st["square_avg"])
            if use_mom:
                mom.append(st["momentum_buffer"])
            if centered:
                gavg.append(st["grad_avg"])
        be.rmsprop_step(p_arrays, g_arrays, sq, mom, gavg, centered=centered,
                        **self._options(group))

    def _options(self, group, step=None):
        """The backend call's arguments but the arrays and centered, read from ``group`` at
        this call (the step count plays no part in the rule)."""
        return dict(lr=group["lr"], alpha=group["alpha"], eps=group["eps"],
                    weight_decay=group["weight_decay"], momentum=group["momentum"],
                    maximize=group["maximize"])

    def _prepare_group(self, group, params):
        use_mom, centered = group["momentum"] > 0, group["centered"]
        return self._prepared_fused(
            group, params, "rmsprop_step",
            ("square_avg", "momentum_buffer" if use_mom else None,
             "grad_avg" if centered else None),
            dict(centered=centered), lambda g: (g["momentum"] > 0, g["centered"]),
            self._options, counted=True)
