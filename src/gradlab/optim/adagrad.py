"""Adagrad (Duchi et al.), PyTorch's update rule."""
from __future__ import annotations

from .optimizer import Optimizer, check_lr, check_nonneg


class Adagrad(Optimizer):
    r"""Adagrad. With t the step count (from 1):

        g = -g if maximize
        g = g + weight_decay * p
        clr = lr / (1 + (t - 1) lr_decay)
        s = s + g^2                      (s starts at initial_accumulator_value)
        p = p - clr g / (sqrt(s) + eps)

    Args: lr (1e-2), lr_decay (0), weight_decay (0), initial_accumulator_value (0),
    eps (1e-10), maximize (False)."""

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10, maximize=False):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      eps=eps, maximize=maximize))
        # PyTorch creates the state eagerly, so that state_dict() right after
        # construction already holds the accumulators.
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["step"] = 0
                self.state[p]["sum"] = p._backend.xp.full_like(
                    p._data, group["initial_accumulator_value"])

    def _check_group(self, group):
        check_lr(group["lr"])
        for name in ("lr_decay", "weight_decay", "initial_accumulator_value", "eps"):
            check_nonneg(name, group[name])

    def _step_group(self, group):
        params, p_arrays, g_arrays = self._with_grads(group)
        if not params:
            return
        be = params[0]._backend
        by_step = {}
        for p, pa, ga in zip(params, p_arrays, g_arrays):
            st = self.state[p]
            if "sum" not in st:  # a group added after construction
                st["step"] = 0
                st["sum"] = be.xp.full_like(pa, group["initial_accumulator_value"])
            st["step"] += 1
            lists = by_step.setdefault(st["step"], ([], [], []))
            lists[0].append(pa)
            lists[1].append(ga)
            lists[2].append(st["sum"])
        for step, lists in by_step.items():
            be.adagrad_step(*lists, **self._options(group, step))

    def _options(self, group, step):
        """The backend call's arguments but the arrays, read from ``group`` at this call."""
        return dict(step=step, lr=group["lr"], lr_decay=group["lr_decay"],
                    weight_decay=group["weight_decay"], eps=group["eps"],
                    maximize=group["maximize"])

    def _prepare_group(self, group, params):
        return self._prepared_fused(group, params, "adagrad_step", ("sum",), {},
                                    lambda g: (), self._options, counted=True)
