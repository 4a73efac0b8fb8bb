"""Optimizer: the base class (parameter groups, per-parameter state, zero_grad,
state_dict / load_state_dict in PyTorch's layout).

A subclass declares its defaults, checks its arguments, and writes ``_step_group(group)``.
Fused optimizers gather the arrays of one group and make ONE backend call for it
(``param._backend.<name>_step(...)``), so on CUDA one group is one multi-tensor launch.
"""
from __future__ import annotations

import copy
import math
import numbers
from collections import defaultdict

from ..autograd.grad_mode import no_grad
from ..autograd.tensor import Tensor


class _RequiredParameter:
    def __repr__(self):
        return "<required parameter>"


required = _RequiredParameter()


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_lr(lr):
    if not _is_number(lr):
        raise TypeError(f"invalid learning rate: {lr!r} is a {type(lr).__name__}; pass a "
                        f"number, e.g. lr=1e-3")
    if not (math.isfinite(lr) and lr >= 0.0):
        raise ValueError(f"invalid learning rate: {lr!r} (it must be a finite number >= 0; "
                         f"pass e.g. lr=1e-3)")


def check_nonneg(name, value):
    if not _is_number(value):
        raise TypeError(f"invalid {name}: {value!r} is a {type(value).__name__}; pass a "
                        f"number >= 0")
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"invalid {name}: {value!r} (it must be a finite number >= 0)")


def check_beta(name, value, closed=False):
    """A decay rate in [0, 1) (or [0, 1] with ``closed``)."""
    interval = "[0, 1]" if closed else "[0, 1)"
    if not _is_number(value):
        raise TypeError(f"invalid {name}: {value!r} is a {type(value).__name__}; pass a "
                        f"number in {interval}")
    if not (0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0):
        raise ValueError(f"invalid {name}: {value!r} (it must be in {interval})")


def as_betas(betas):
    """``betas`` as a tuple when it is a list/tuple; anything else is left for check_betas
    to reject with a clear message."""
    return tuple(betas) if isinstance(betas, (tuple, list)) else betas


def check_betas(betas):
    """``betas`` is a pair (beta1, beta2) of numbers in [0, 1)."""
    if not isinstance(betas, (tuple, list)):
        raise TypeError(f"invalid betas: {betas!r}; pass a pair (beta1, beta2), e.g. "
                        f"betas=(0.9, 0.999)")
    if len(betas) != 2:
        raise ValueError(f"invalid betas: {tuple(betas)!r} has {len(betas)} values; pass a "
                         f"pair (beta1, beta2), e.g. betas=(0.9, 0.999)")
    check_beta("beta1 (betas[0])", betas[0])
    check_beta("beta2 (betas[1])", betas[1])


def check_adam_family(group):
    """The arguments Adam, AdamW, Adamax, NAdam and RAdam share: lr, eps, weight_decay, betas."""
    check_lr(group["lr"])
    check_nonneg("eps", group["eps"])
    check_nonneg("weight_decay", group["weight_decay"])
    check_betas(group["betas"])


class Optimizer:
    """Base class. ``params`` is an iterable of Parameters, or of dicts (parameter groups)
    each holding ``params`` and any per-group overrides of ``defaults``."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._defined_step = _step_methods(cls)

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.state = defaultdict(dict)
        self.param_groups = []
        if isinstance(params, Tensor):
            raise TypeError("params must be an iterable of tensors (e.g. model.parameters()) "
                            "or of dicts, not a single Tensor")
        if callable(getattr(params, "parameters", None)):  # a Module (Sequential iterates)
            raise TypeError(f"params must be an iterable of tensors or of dicts, got the "
                            f"module {type(params).__name__} itself; pass model.parameters()")
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__} got an empty parameter list; pass "
                             f"model.parameters() of a model that has parameters")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for k in sorted(g):
                if k != "params":
                    lines.append(f"    {k}: {g[k]}")
        return "\n".join(lines) + "\n)"

    def add_param_group(self, param_group):
        """Add a group of parameters with its own settings (missing ones from defaults)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"a param group must be a dict, got {type(param_group).__name__}")
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: a parameter group has no parameters")
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizers can only optimize Tensors, got "
                                f"{type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor (one computed from others);"
                                 " optimize the leaves it was computed from")
            # A tensor that does not require grad is accepted and skipped while its grad is
            # None, as PyTorch does: freezing a layer (requires_grad_(False)) must not force
            # rebuilding the optimizer. Integer tensors can never get a gradient.
            if p.dtype.kind not in "fc":
                raise ValueError(f"can't optimize a tensor of dtype {p.dtype}: only floating "
                                 f"point tensors have gradients; convert it with .float()")
        group = dict(param_group)
        group["params"] = params
        for k, v in self.defaults.items():
            if v is required and k not in group:
                raise ValueError(f"parameter group didn't specify a value of required "
                                 f"optimization parameter {k}")
            group.setdefault(k, v)
        self._check_group(group)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params) or len({id(p) for p in params}) != len(params):
            raise ValueError("some parameters appear in more than one parameter group (or "
                             "twice in one)")
        self.param_groups.append(group)

    def _check_group(self, group):
        """Argument checks of one group (lr and friends); subclasses extend it."""
        check_lr(group["lr"])

    def zero_grad(self, set_to_none=True):
        """Reset the gradients of all optimized parameters: to None (default), or zeros."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    if set_to_none:
                        p.grad = None
                    else:
                        p.grad._data[...] = 0

    def step(self, closure=None):
        """One update of every parameter that has a gradient. ``closure`` (optional)
        re-evaluates the model and returns the loss, which step() returns."""
        loss = None
        if closure is not None:
            from ..autograd.grad_mode import enable_grad
            with enable_grad():
                loss = closure()
        with no_grad():
            for group in self.param_groups:
                self._step_group(group)
        return loss

    def _step_group(self, group):  # pragma: no cover - abstract
        raise NotImplementedError

    # The methods step() goes through that a prepared form does not run (it runs
    # ``_options`` and ``_stepped`` itself). Where a class below the one that answers for
    # the prepared form (``_prepared_step``), or the instance, defines one of them, step()
    # does something the prepared form would skip. A class that adds a method to its step
    # lists it here, and so answers for the prepared form it inherits.
    _step_path = ("step", "_step_group", "_with_grads", "_count_step")

    def _prepare_group(self, group, params):
        """The prepared form of ``_step_group`` that ``_prepared_step`` uses: a pair of
        callables ``(ready, run)``, or None (the default: this optimizer has none, or not
        for this group now). Called only when every param of ``group`` has a gradient (after
        at least one ``step()``). ``ready()`` tells,
        changing nothing, whether ``run()`` would still do exactly what ``_step_group`` does
        (``params`` still holds the same params in the same order, every param still has a
        gradient, the options that select state arrays unchanged, one shared step count,
        ...; a state entry that went missing is a False, never a KeyError);
        ``run()`` does it on the raw arrays (no Tensor op, so grad mode does not matter),
        reading lr and the other hyper-parameters at every call. The caller checks that
        ``group`` is still in its place in ``param_groups`` and still holds ``params``, at
        the length it had."""
        return None

    def _prepared_step(self):
        """``step()`` without its per-call regrouping, for a caller that repeats it over the
        same parameters (the compiled training step): a callable that returns True once it
        has stepped, or False, having changed nothing, when the parameter groups, their
        gradients or the state no longer fit what was prepared (call ``step()`` then, and
        prepare again). None where there is no prepared form: a group's optimizer has none,
        or ``step()`` would run a method of ``_step_path`` that the prepared form does not
        answer for (a subclass's own ``_step_group`` or ``_backend_step``, a ``step``
        wrapped on the instance, one of them patched on a class since it was defined:
        checked at every call too)."""
        cls = type(self)
        mro = cls.__mro__
        # The class that answers for the prepared form: the nearest one that wrote it or
        # listed the step it stands for. It has seen only the methods it resolves itself:
        # one that a class below it overrides, or one that a base class after it in this
        # class's MRO supplies (class ClippedAdam(Adam, WeightClip), WeightClip.step
        # clamping the weights after Adam's), is not its step.
        answers = mro[next(i for i, c in enumerate(mro)
                           if "_prepare_group" in c.__dict__ or "_step_path" in c.__dict__)]
        attrs = self.__dict__
        path, defined = cls._step_path, cls._defined_step
        for name in path:
            if name in attrs or getattr(cls, name, None) is not getattr(answers, name, None):
                return None
        if _step_methods(cls) != defined:
            return None  # a method of the step patched on a class after it was defined
        state, groups = self.state, self.param_groups
        names = frozenset(attrs)  # an attribute set later (opt.step = ...) declines
        checks, runs = [], []
        for group in groups:
            params = group["params"]
            if any(p.grad is None for p in params):
                return None
            pair = self._prepare_group(group, params)
            if pair is None:
                return None
            ready, run = pair
            checks.append((group, params, len(params), ready))
            runs.append(run)
        n_groups = len(groups)

        def step():
            if self.state is not state or self.param_groups is not groups or \
                    len(groups) != n_groups or attrs.keys() != names:
                return False
            for name, method in zip(path, defined):
                if getattr(cls, name, None) is not method:
                    return False
            for now, (group, params, n, ready) in zip(groups, checks):
                if now is not group or group["params"] is not params or len(params) != n or \
                        not ready():
                    return False
            for run in runs:  # backend calls on arrays: no grad mode to switch
                run()
            return True
        return step

    def _prepared_fused(self, group, params, op, names, flags, chosen, options, counted,
                        shared=(), after=None):
        """The (ready, run) pair of a group whose step is the one fused backend call ``op``
        (``Backend.prepare_optimizer_step`` on the arrays of now), or None while a state
        array it needs is missing. ``names``: the state entries holding the op's state lists,
        in its argument order (None for a list that is off); ``flags``: the op's fixed
        arguments; ``chosen(group)``: the options that select those states and loops, which
        must stay as they are now; ``options(group, step)``: the call's other arguments,
        read from the group at every call; ``counted``: the state counts steps (one shared
        count, passed as ``step`` after this step); ``shared``: scalar state entries that
        the params must share as well, as they share one call; ``after(states)``: called
        once the prepared call has stepped (a fallback to ``_step_group`` does its own
        bookkeeping). ``ready()`` also checks that ``params`` still holds the prepared
        params, in order, and that each still has a gradient and its array, state dict and
        state arrays are still the prepared ones: a replaced ``p.data`` or state array must
        never be written through an old pointer, nor a param stepped with another's
        gradient. Where the prepared call declines (the grads do not fit, the tier
        changed), ``_step_group`` runs instead."""
        state = self.state
        needed = [n for n in names if n is not None]
        sts = [state.get(p) for p in params]
        if not params:  # (a group's list emptied after construction)
            return None
        if (counted or needed) and any(st is None or (counted and "step" not in st) or
                                       any(n not in st for n in needed + list(shared))
                                       for st in sts):
            return None
        prepared = params[0]._backend.prepare_optimizer_step(
            op, [p._data for p in params],
            [None if n is None else [st[n] for st in sts] for n in names], **flags)
        now_chosen = chosen(group)
        mine = tuple(params)  # the params whose arrays ``prepared`` holds
        held = [(p, st, p._data, [(n, st[n]) for n in needed]) for p, st in zip(params, sts)]
        first = sts[0]

        def ready():
            if chosen(group) != now_chosen:
                return False
            now = self.state
            try:  # (a KeyError: an entry popped from a state, which step() makes again)
                for q, (p, st, data, arrays) in zip(params, held):  # (all() costs more)
                    if q is not p or p._data is not data or p.grad is None or \
                            now.get(p) is not st:
                        return False
                    for n, a in arrays:
                        if st[n] is not a:
                            return False
                if counted:
                    step = first["step"]
                    for st in sts:
                        if st["step"] != step:
                            return False
                for k in shared:
                    value = first[k]
                    for st in sts:
                        if st[k] != value:
                            return False
            except KeyError:
                return False
            return True

        def run():
            grads = [p.grad._data for p in mine]
            step = None
            if counted:
                # Counted before the call, as step() counts: a call that raises (a bad lr)
                # leaves the same counts either way.
                before = first["step"]
                step = before + 1
                for st in sts:
                    st["step"] = step
            if not prepared(grads, options(group, step)):
                if counted:
                    for st in sts:
                        st["step"] = before  # _step_group counts itself
                self._step_group(group)  # copies or raises as step() does
                return
            if after is not None:
                after(sts)
        return ready, run

    # -- helpers for subclasses -----------------------------------------------------------
    @staticmethod
    def _with_grads(group):
        """(params, their raw param arrays, raw grad arrays) for the params with a grad."""
        ps, pa, ga = [], [], []
        for p in group["params"]:
            g = p.grad
            if g is not None:
                ps.append(p)
                pa.append(p._data)
                gd = g._data
                if not gd.flags.c_contiguous:
                    gd = g._data = p._backend.xp.ascontiguousarray(gd)
                ga.append(gd)
        return ps, pa, ga

    def _count_step(self, p, like, *arrays, **scalars):
        """``self.state[p]`` with its step counted. A new state starts at step 0 with the
        given scalars; each array named in ``arrays`` that the state lacks (a new state, or
        an option switched on later) starts as zeros like ``like``."""
        st = self.state[p]
        if not st:
            st["step"] = 0
            st.update(scalars)
        for name in arrays:
            if name not in st:
                st[name] = p._backend.xp.zeros_like(like)
        st["step"] += 1
        return st

    # -- state ----------------------------------------------------------------------------
    def state_dict(self):
        """{'state': {index: {name: value}}, 'param_groups': [{..., 'params': [index]}]},
        with parameters numbered in group order (PyTorch's layout). The state tensors are
        the live ones (gl.save copies them)."""
        index = {}
        groups = []
        for g in self.param_groups:
            packed = {k: v for k, v in g.items() if k != "params"}
            ids = []
            for p in g["params"]:
                index.setdefault(id(p), len(index))
                ids.append(index[id(p)])
            packed["params"] = ids
            groups.append(packed)
        state = {}
        for g in self.param_groups:
            for p in g["params"]:
                if p in self.state and self.state[p]:
                    state[index[id(p)]] = {
                        k: (Tensor._wrap(v, p._backend) if isinstance(v, p._backend.ndarray)
                            else v) for k, v in self.state[p].items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore state saved by ``state_dict()`` (of an optimizer of the same class over
        parameters of the same shapes, in the same group layout). State tensors are copied
        to each parameter's device and dtype."""
        try:
            saved_groups = state_dict["param_groups"]
            saved_state = state_dict["state"]
        except (KeyError, TypeError):
            raise ValueError("optimizer state_dict must be a dict with 'state' and "
                             "'param_groups'") from None
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(saved_groups)} parameter groups, "
                             f"this optimizer has {len(self.param_groups)}")
        id_map = {}
        for i, (mine, saved) in enumerate(zip(self.param_groups, saved_groups)):
            # Options this class has that the saved group lacks, AND options it does not
            # know: the state of another optimizer class (a saved group that only lacks an
            # option added since is still this class's).
            missing = sorted(set(self.defaults) - set(saved))
            foreign = sorted(set(saved) - set(self.defaults) - _SCHEDULER_KEYS - {"params"})
            if missing and foreign:
                raise ValueError(
                    f"loaded state dict was not saved by {type(self).__name__}: its parameter "
                    f"group {i} has {', '.join(foreign)} and lacks {', '.join(missing)}; "
                    f"load what {type(self).__name__}.state_dict() saved, or build the "
                    "optimizer class that saved this one")
            if len(mine["params"]) != len(saved["params"]):
                raise ValueError(f"parameter group {i} has {len(mine['params'])} parameters "
                                 f"here but {len(saved['params'])} in the loaded state dict")
            for p, idx in zip(mine["params"], saved["params"]):
                id_map[int(idx)] = p
        new_state = defaultdict(dict)
        for idx, st in saved_state.items():
            p = id_map.get(int(idx))
            if p is None:
                raise ValueError(f"loaded optimizer state refers to parameter {idx}, which "
                                 f"no group lists")
            new_state[p] = {k: _state_value(p, k, v) for k, v in st.items()}
        self.state = new_state
        for mine, saved in zip(self.param_groups, saved_groups):
            for k, v in saved.items():
                if k != "params":
                    mine[k] = copy.deepcopy(v) if isinstance(v, (list, dict)) else v
            if isinstance(mine.get("betas"), list):
                mine["betas"] = tuple(mine["betas"])


# Keys LR schedulers add to parameter groups (initial_lr, OneCycleLR's bounds, ...).
_SCHEDULER_KEYS = {"initial_lr", "max_lr", "min_lr", "base_lr", "base_momentum",
                   "max_momentum"}


def _state_value(p, name, v):
    """A state entry in the optimizer's internal form: raw arrays on the param's backend
    (shape-checked), plain numbers otherwise."""
    if isinstance(v, Tensor) or hasattr(v, "shape") and hasattr(v, "dtype"):
        arr = v._data if isinstance(v, Tensor) else v
        be = v._backend if isinstance(v, Tensor) else None
        if arr.ndim == 0:
            return arr.item() if be is None or be.device.type == "cpu" else \
                be.to_numpy(arr).item()
        if tuple(arr.shape) != tuple(p.shape):
            raise ValueError(f"optimizer state '{name}' has shape {tuple(arr.shape)} but its "
                             f"parameter has shape {tuple(p.shape)}")
        host = be.to_numpy(arr) if be is not None else arr
        return p._backend.asarray(host, dtype=p.dtype).copy()
    return v


def _step_methods(cls):
    """The functions ``step()`` of ``cls`` runs (``_step_path``), as they are now."""
    return tuple([getattr(cls, name, None) for name in cls._step_path])


Optimizer._defined_step = _step_methods(Optimizer)
