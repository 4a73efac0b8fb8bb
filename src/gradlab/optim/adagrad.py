"""Adagrad (Duchi et al.), PyTorch's update rule."""
from __future__ import annotations

from .optimizer import check_lr, check_nonneg
from .step_counted import StepCountedOptimizer


class Adagrad(StepCountedOptimizer):
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
                self._start_state(p, group)

    _op = "adagrad_step"
    _arrays = ("sum",)
    # Listed here, it answers for its own _counted_state, which only starts a missing
    # "sum" (where the prepared form declines)
    _step_path = StepCountedOptimizer._step_path + ("_start_state",)

    def _check_group(self, group):
        check_lr(group["lr"])
        for name in ("lr_decay", "weight_decay", "initial_accumulator_value", "eps"):
            check_nonneg(name, group[name])

    def _start_state(self, p, group):
        st = self.state[p]
        st["step"] = 0
        st["sum"] = p._backend.xp.full_like(p._data, group["initial_accumulator_value"])
        return st

    def _counted_state(self, p, like, group):
        st = self.state[p]
        if "sum" not in st:  # a group added after construction
            st = self._start_state(p, group)
        st["step"] += 1
        return st

    def _options(self, group, step, st):
        """The backend call's arguments but the arrays, read from ``group`` at this call."""
        return dict(step=step, lr=group["lr"], lr_decay=group["lr_decay"],
                    weight_decay=group["weight_decay"], eps=group["eps"],
                    maximize=group["maximize"])
