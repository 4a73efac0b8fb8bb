"""The base of the optimizers whose fused backend call takes one step count (Adagrad,
Adamax, NAdam, RAdam): the params of a group that share their count (all of them,
normally) step in ONE call; ones that missed steps (a grad that was None) form a call of
their own."""
from __future__ import annotations

from .optimizer import Optimizer, check_adam_family


class StepCountedOptimizer(Optimizer):
    """A subclass names its backend call (``_op``), its state arrays in the call's order
    (zeros at the first step) and scalar state entries (with their first values), and
    writes ``_options(group, step, st)``: the call's other arguments, from the group, the
    step count after this step and the state ``st`` of the call's first param (its scalar
    state as before this step); a rule with scalar state updates it in ``_stepped``."""

    _op: str = ""
    _arrays: tuple = ()
    _scalar_state: dict = {}
    _step_path = Optimizer._step_path + ("_call_key", "_counted_state")

    def _check_group(self, group):
        check_adam_family(group)

    def _call_key(self, st):
        """What the params of one call share: the step count and the scalar state."""
        return (st["step"], *[st[k] for k in self._scalar_state])

    def _counted_state(self, p, like, group):
        """``self.state[p]`` with this step counted; a state array it lacks starts as zeros
        like ``like`` (a rule that starts it otherwise overrides this)."""
        return self._count_step(p, like, *self._arrays, **self._scalar_state)

    def _stepped(self, group, sts):
        """After a call that stepped the params with states ``sts``: update their scalar
        state (nothing, unless the rule has some)."""

    def _step_group(self, group):
        params, p_arrays, g_arrays = self._with_grads(group)
        if not params:
            return
        be = params[0]._backend
        calls = {}
        for p, pa, ga in zip(params, p_arrays, g_arrays):
            st = self._counted_state(p, pa, group)
            lists = calls.setdefault(self._call_key(st), ([], [], []))
            lists[0].append(pa)
            lists[1].append(ga)
            lists[2].append(st)
        fused = getattr(be, self._op)
        for ps, gs, sts in calls.values():
            fused(ps, gs, *[[st[name] for st in sts] for name in self._arrays],
                  **self._options(group, sts[0]["step"], sts[0]))
            self._stepped(group, sts)

    def _prepare_group(self, group, params):
        first = self.state.get(params[0]) if params else None
        return self._prepared_fused(
            group, params, self._op, self._arrays, {}, lambda g: (),
            lambda g, step: self._options(g, step, first), counted=True,
            shared=tuple(self._scalar_state), after=lambda sts: self._stepped(group, sts))
