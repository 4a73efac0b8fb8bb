"""The base of the optimizers without a fused kernel (Adamax, NAdam, RAdam): each parameter
steps on its own backend through its rule's single-tensor formula in
backend/fused/optim/reference.py, with the scalars of backend/fused/optim/scalars.py."""
from __future__ import annotations

from .optimizer import Optimizer, check_adam_family


class PerTensorOptimizer(Optimizer):
    """A subclass names its state arrays (zeros at the first step) and scalar state entries
    (with their first values), and writes ``_update(xp, p, g, state, group)``."""

    _arrays: tuple = ()
    _scalar_state: dict = {}

    def _check_group(self, group):
        check_adam_family(group)

    def _step_group(self, group):
        params, p_arrays, g_arrays = self._with_grads(group)
        for p, pa, g in zip(params, p_arrays, g_arrays):
            st = self._count_step(p, pa, *self._arrays, **self._scalar_state)
            self._update(p._backend.xp, pa, g, st, group)

    def _update(self, xp, p, g, state, group):  # pragma: no cover - abstract
        raise NotImplementedError
