"""A compiled training step: record the eager step, then replay it without building graphs.

    step = gl.train.compile_step(model, loss_fn, optimizer)
    for x, y in loader:
        loss = step(x, y)        # zero_grad, forward, loss, backward, [clip], optimizer.step()

The first call with a new input signature runs eagerly and records what ran
(``gradlab.autograd.tape``); the second runs eagerly again and records again, and the
recording is used only if both agree (an array that depends on the batch but is computed
outside gradlab ops would differ, and be frozen by a replay). From the third call on, the
step is replayed: the same Function forward and backward calls on raw arrays, in the same
order, with no Tensor, graph node or version check. The optimizer's own ``step()`` runs
as in eager, so learning rates and other hyper-parameters are read at every call (a
scheduler works unchanged), and so do the random generators (dropout's Philox offset
advances at every replay). Where a Linear's output goes to a ReLU alone, the replay runs
the bias and the ReLU as one pass each way (functional/fusions.py; ``info()["fused"]``
counts such pairs). Results are bitwise those of the eager step.

A recording belongs to one *signature*: input shapes, dtypes and devices, whether x is y,
train/eval mode of every module, grad mode, anomaly mode (eager there: the engine checks
each gradient) and deterministic mode. Another signature (the short last batch
of an epoch, an ``eval()``) records again. (The modes are read again after a
``train()``/``eval()`` or a ``module.training = ...``; a mode written into a module's
``__dict__`` is not seen.) Changing the model's structure (a parameter, buffer or tensor
attribute replaced or added, a parameter frozen or unfrozen, a hook added to or removed
from a parameter, a module's scalar setting such as ``Dropout.p``), or the optimizer's
parameter groups, drops every recording. A step that a replay cannot repeat (see the
tape's docstring: a read of a tensor's value, or of a shape that depends on values; also
inputs that require grad, whose ``.grad`` a replay would not set), or more than
``max_recordings`` signatures, runs eagerly with one warning saying why.

A recording bakes in the Python numbers the step computes with (``beta * kl`` records
beta's value) and holds the tensors and modules it used. Guarded, so that a change records
again: what the loss function reads from its closure, its module's globals or its object's
attributes (those its code names, ``self.beta``; and so do the functions and callable
objects of your own that its closure holds: the loss that ``fit`` wraps; through a
``functools.partial``, its function and bound arguments; a bound method's module); what the
``forward`` of a module class of your own, and the methods, properties and the functions or
callable objects kept on a module (``self.act``) that it names, read from their closures or
globals, and that class's own settings; and, in turn, what the functions of your own that
any of these call by name read (a helper of ``forward`` reading a global), a Python module
of your own's attributes included (``config.BETA``, ``utils.scale(h)``). Numbers (Python's
or NumPy's), slices, dtypes and Enum members are compared by value; tensors, modules,
functions, NumPy arrays and any other object (a ``functools.partial``, a library's object)
by identity, so that another one bound to the name, or kept on a module (``model.act =
gl.tanh``), records again; dicts, lists and tuples of these (a config dict, a dict of
criteria; 32 entries in all, three deep) and objects holding them as attributes (a
``SimpleNamespace``, a dataclass instance, an instance of a class of your own, with
``__slots__`` too) by value, entries changed in place included. A module read this way, or
kept in such a container (a module's plain list of layers), is guarded as the model's are
(its settings, buffers, mode). A value read elsewhere (by installed library code; a
submodule's, two dots away, ``config.loss.BETA``; a setting changed in place on an
installed library's object; a larger container) is not seen: keep such a value in a tensor
updated in place (a replay reads the array), or call ``step.reset()`` after changing it (so
is a class attribute created after the step first ran, read with ``getattr(self, name,
default)``). An attribute that no code of the step names (no method of its module's class,
none of the code followed above, which includes a loss object's own methods and properties,
a helper object's methods, static methods of a class read by name, functions kept in a dict
or list on a module, a decorator object around ``forward`` and ``__getattr__``: a loss, a
timestamp, a progress bar, the last batch that the training loop keeps on the model or the
loss's object) is none of the step's, and changing it records nothing again; where that
code reads attributes by names it builds (``getattr(self, "_act_" + kind)``,
``vars(self)``, an ``attrgetter``), every attribute of its objects counts as read.

A replay runs no Python code, so a step whose own code changes Python state as it runs runs
eagerly, with one warning (``step_guards._StepState``): an attribute of one of its modules
set during the step (a counter, an output kept as ``self._last``, an entry appended to a
list, dict, deque or set, a NumPy array changed in place, an iterator advanced), a variable
or global that its code reads or writes, rebound, a mutable default argument or a function
attribute changed, or a draw from a random generator outside gradlab's ops (Python's or
NumPy's global one, whoever draws from it meanwhile, another thread included; or a
``Random``, ``Generator`` or ``RandomState``, or a ``gl.Generator`` drawn from in Python,
that a module holds or the code reads by name; ``random.random() < p`` would repeat the
recording's branch). A change at one recording only is a lazy set-up: that recording is
dropped. A reseed during the step (``gl.manual_seed`` in ``forward``) runs eagerly too.
What the caller does between ``forward()`` and ``backward_step()`` is not the step's (but a
tensor that the backward reads, changed in place there, raises as in eager). Guarded values
that change before every replay could run (a number set anew before each step) would record
at every step, which costs more than eager: after ``_RESTLESS`` such drops in a row the
step runs eagerly, with one warning, until ``reset()``.
"""
from __future__ import annotations

import sys
import time
import warnings
import weakref

from ..autograd import hooks
from ..autograd.creation import Draw
from ..autograd.grad_mode import _state
from ..autograd.tape import Recording, constants_current, recording
from ..autograd.tensor import Tensor, structure_version
from ..backend import determinism
from ..backend.base import GraphCaptureUnsupported
from ..nn.module import Module, mode_version
from ..nn.utils import clip_grad_norm_, clip_grad_value_
from ..optim.optimizer import Optimizer
from .step_guards import (
    _MODULE_OWN,
    _OTHER,
    _SCALARS,
    _attribute,
    _class_names,
    _guarded,
    _modules_read_by,
    _numbers_read_by,
    _setting_value,
    _StepState,
)


def compile_step(model, loss_fn, optimizer, *, clip_grad_norm=None, clip_grad_value=None,
                 max_recordings=8):
    """A ``CompiledStep`` of ``model``, ``loss_fn(output, target)`` and ``optimizer``.

    ``clip_grad_norm`` / ``clip_grad_value``: clip the gradients (as
    ``gl.nn.utils.clip_grad_norm_`` / ``clip_grad_value_``) between backward and the
    optimizer step. ``max_recordings``: how many input signatures to keep recordings for;
    beyond it the step runs eagerly (with a warning)."""
    return CompiledStep(model, loss_fn, optimizer, clip_grad_norm=clip_grad_norm,
                        clip_grad_value=clip_grad_value, max_recordings=max_recordings)


class _Entry:
    """What is known of one signature: its recordings so far, then its replay or why not."""

    __slots__ = ("first", "replay", "out_slot", "loss_slots", "tuple_loss", "eager_reason",
                 "graph", "graphable", "saved", "key")

    def __init__(self):
        self.first = self.replay = self.eager_reason = None
        self.graph = None  # a _Graphed once a replay runs on a CUDA backend
        self.graphable = None  # whether the backend has CUDA graphs, once a replay ran
        self.out_slot = self.loss_slots = None
        self.tuple_loss = False
        self.saved = ()  # version counters of the parameters the replay's backward reads
        self.key = None  # its signature, as CompiledStep._entries holds it


def _refuse(name):
    def setter(self, value):
        raise AttributeError(
            f"compiled step: {name} cannot be replaced (the recordings and the prepared "
            f"optimizer step hold the one given to compile_step); make a new step: "
            f"gl.train.compile_step(model, loss_fn, optimizer)")
    return setter


class CompiledStep:
    """``loss = step(x, y)``: one training step, replayed once recorded (see the module
    docstring). ``step.forward(x, y)`` and ``step.backward_step()`` are its two halves,
    for callers that look at the loss before the weights change (``fit`` stops on a
    non-finite loss there); ``step.info()`` tells how it ran."""

    def __init__(self, model, loss_fn, optimizer, *, clip_grad_norm=None,
                 clip_grad_value=None, max_recordings=8):
        if not isinstance(model, Module):
            raise TypeError(f"compile_step: model must be a gl.nn.Module, got "
                            f"{type(model).__name__}")
        if not callable(loss_fn):
            raise TypeError("compile_step: loss_fn must be callable as loss_fn(output, target)")
        if not hasattr(optimizer, "param_groups") or not hasattr(optimizer, "step"):
            raise TypeError(f"compile_step: optimizer must be a gl.optim optimizer, got "
                            f"{type(optimizer).__name__}")
        if clip_grad_norm is not None and clip_grad_value is not None:
            raise ValueError("compile_step: pass clip_grad_norm or clip_grad_value, not both")
        if int(max_recordings) != max_recordings or max_recordings < 1:
            raise ValueError(f"compile_step: max_recordings must be a positive integer, got "
                             f"{max_recordings!r}")
        self._parts = (model, loss_fn, optimizer)
        self.clip_grad_norm, self.clip_grad_value = clip_grad_norm, clip_grad_value
        self.max_recordings = int(max_recordings)
        self._entries = {}
        self._world = None
        self._shallow = None      # the cheap part of the guards, checked at every call
        self._numbers = tuple     # the guarded Python numbers, once the modules are known
        self._places = None       # what the step's own code reads (_Places), with _numbers
        self._code = None         # _code_key() when _places was found
        self._labels = []         # how a message names each of _numbers()'s values
        self._names = []          # how a message names each module of _modules_now
        self._changed = None      # what the last re-recording saw change (a message's words)
        self._modules_now = None
        self._modes = None        # (mode_version, every module's training flag), as read
        self._pending = None
        self._recording = None
        self._before = None       # (reseeded, what changed): the recording forward's watch
        self._saved_at = None     # entry.saved's versions at a public forward() of a replay
        self._handed = None       # (tensor, version) of what that forward() handed out
        self._warned = set()
        self._graphs = _CudaGraphs(self._warned, optimizer)
        self._optimizer_fast = None  # the optimizer's prepared step, once it has one
        self._restless = 0        # times the recordings were dropped since the last replay
        self._unsteady = {}       # signature -> None (its recording changed Python state
        #                           once), or why it runs eagerly (it did so twice)
        self._unsettled = None    # the eager _Entry of every call, once that is too many
        # (graphed: the replayed steps that were a CUDA graph's launch)
        self.counts = {"eager": 0, "recorded": 0, "replayed": 0, "rerecorded": 0,
                       "graphed": 0}
        self.record_seconds = 0.0

    # The recordings, the prepared optimizer step and the graphs hold these three: one put
    # in their place would be ignored, so they cannot be set (make a new step instead).
    model = property(lambda self: self._parts[0], _refuse("model"),
                     doc="The model the step trains.")
    loss_fn = property(lambda self: self._parts[1], _refuse("loss_fn"),
                       doc="loss_fn(output, target).")
    optimizer = property(lambda self: self._parts[2], _refuse("optimizer"),
                         doc="The optimizer that steps.")

    # -- the step ------------------------------------------------------------------------
    def __call__(self, x, y):
        _, loss = self._forward(x, y)
        self.backward_step()
        return loss[0] if isinstance(loss, tuple) else loss

    def forward(self, x, y):
        """Forward pass and loss: returns ``(output, loss)`` as Tensors (``loss`` is what
        ``loss_fn`` returned). Call ``backward_step()`` next."""
        out = self._forward(x, y)
        kind, entry, _ = self._pending
        if kind in ("replay", "graph", "warm-up") and entry.saved:
            # Your code runs before backward_step(): a parameter the backward reads, changed
            # in place now, would make eager's backward refuse; ask as it does.
            self._saved_at = [c[0] for c in entry.saved]
        if kind in ("replay", "warm-up"):
            # So would the batch, the output or the loss, where a node saved it (out * out).
            # (A graph's launch reads copies: its static inputs, and hands out copies.)
            self._handed = [(t, t._version[0]) for t in (x, y, out[0]) + (
                out[1] if isinstance(out[1], tuple) else (out[1],))]
        return out

    def _forward(self, x, y):
        if not isinstance(x, Tensor) or not isinstance(y, Tensor):
            raise TypeError(f"compiled step: x and y must be Tensors, got "
                            f"{type(x).__name__} and {type(y).__name__}")
        if self._pending is not None:
            raise RuntimeError("compiled step: forward() called twice without "
                               "backward_step() in between")
        entry = self._entry(x, y)
        if entry.replay is not None:
            return self._replay_forward(entry, x, y)
        if entry.eager_reason is not None:
            return self._eager_forward(x, y)
        return self._record_forward(entry, x, y)

    def backward_step(self):
        """Backward, gradient clipping (if asked for) and the optimizer step of the batch
        that ``forward`` saw."""
        pending, self._pending = self._pending, None
        if pending is None:
            raise RuntimeError("compiled step: backward_step() without a forward() first")
        kind, entry, payload = pending
        saved_at, self._saved_at = self._saved_at, None
        handed, self._handed = self._handed, None
        if handed is not None and _changed_saved(handed, entry.replay):
            self._graphs.discard(kind, entry)
            self.optimizer.zero_grad()
            raise RuntimeError(
                "compiled step: the batch, the output or the loss was modified in place "
                "between forward() and backward_step(), and the backward reads it (an op "
                "saved it for its gradient); the gradient would be wrong (eager's backward "
                "refuses it too). Use an out-of-place op, or clone() the tensor first")
        if saved_at is not None and saved_at != [c[0] for c in entry.saved]:
            self._graphs.discard(kind, entry)
            self.optimizer.zero_grad()  # (as eager's backward_step, which raises after it)
            raise RuntimeError(
                "compiled step: a parameter whose value the forward pass saved for its "
                "gradient was modified in place between forward() and backward_step(); the "
                "gradient would be wrong (eager's backward refuses it too). Change it before "
                "forward() or after backward_step(), or out of place")
        if kind == "replay":
            # As eager: last step's gradients go before backward allocates the new ones
            # (kept alive, they would make every large gradient land in fresh memory).
            self.optimizer.zero_grad()
            entry.replay.run_backward(payload)
            self.counts["replayed"] += 1
            self._restless = 0
        elif kind in ("graph", "warm-up"):
            if kind == "warm-up":
                self.optimizer.zero_grad()  # run_backward accumulates, as the engine does
            self._graphs.backward(kind, entry, payload)
            self.counts["replayed"] += 1
            self.counts["graphed"] += kind == "graph"
            self._restless = 0
        else:
            self.optimizer.zero_grad()
            objective = payload[0] if isinstance(payload, tuple) else payload
            if kind == "record":
                rec = self._recording
                self._recording = None
                # (Watched apart from forward's: what the caller does between forward() and
                # backward_step(), such as a sampled print, is none of the step's.)
                state = _StepState(self._modules_now, self.loss_fn)
                with recording(rec, "backward"):
                    objective.backward()
                reseeded, changed = self._before
                self._before = None
                if reseeded or state.reseeded():
                    rec.fail("the step reseeds a random generator (gl.manual_seed, or a "
                             "Generator's manual_seed or set_state, in forward or the loss); "
                             "a replay would not, and its dropout would draw other masks")
                changed = changed or state.changed()
                if changed is not None and rec.broken is None:
                    if entry.key in self._unsteady:
                        rec.fail(changed)
                        self._unsteady[entry.key] = changed
                    else:
                        # Once may be a lazy set-up (`if self._mask is None: ...`): record
                        # again, and give up only if the next recording changes it too.
                        # (By signature, not entry: a change that the guards see, such as
                        # a tensor kept on a module, drops the entries.)
                        self._unsteady[entry.key] = None
                        self.counts["recorded"] += 1
                        rec = None
                if rec is not None:
                    self._finish_recording(entry, rec)
            else:
                objective.backward()
                self.counts["eager"] += 1
        if self.clip_grad_norm is not None:
            clip_grad_norm_(self._params(), self.clip_grad_norm)
        elif self.clip_grad_value is not None:
            clip_grad_value_(self._params(), self.clip_grad_value)
        if kind in ("eager", "record"):
            self.optimizer.step()
            return
        # A replay's optimizer step: the optimizer's prepared form where it has one (the
        # same backend calls without regrouping; it checks itself and says when it no
        # longer fits, and lr & co. are read at every call), else step().
        fast = self._optimizer_fast
        if fast is None or not fast():
            self.optimizer.step()
            # Only a gradlab Optimizer's own: a wrapper that hands other attributes on to the
            # optimizer it wraps (__getattr__: Lookahead, gradient accumulation) would give
            # the inner one's, and its own step() would never run again.
            opt = self.optimizer
            self._optimizer_fast = opt._prepared_step() if isinstance(opt, Optimizer) else None

    def reset(self):
        """Forget every recording: the next calls record again. For a change the guards do
        not see (module docstring), such as a number two dots away
        (``config.loss.BETA``)."""
        if self._entries:
            self.counts["rerecorded"] += 1
        self._entries.clear()
        self._world = self._shallow = None
        self._pending = self._recording = self._saved_at = self._before = None
        self._handed = self._optimizer_fast = None
        self._restless, self._unsettled = 0, None
        self._unsteady.clear()

    def discard(self):
        """Forget the batch that ``forward`` saw without training on it (``fit`` does this
        for a non-finite loss); a recording in progress is dropped."""
        pending, self._pending = self._pending, None
        self._recording = self._saved_at = self._before = self._handed = None
        if pending is not None:
            self._graphs.discard(pending[0], pending[1])

    def info(self):
        """How the step has run: counts of eager, recording and replayed calls (and of the
        replayed ones that were a CUDA graph's launch: ``graphed``), the
        signatures recorded, the seconds spent recording, the bytes a replay keeps between
        calls, the pairs of ops the replays run fused, and why any signature runs eagerly."""
        replays = [e.replay for e in self._entries.values() if e.replay is not None]
        held = sum(r.held_bytes() for r in replays)
        return {**self.counts, **self._graphs.info(self._entries.values()),
                "signatures": len(self._entries),
                "record_seconds": self.record_seconds, "held_bytes": held,
                "fused": sum(len(r.fused) for r in replays),
                "eager_reasons": sorted({e.eager_reason for e in self._entries.values()
                                         if e.eager_reason} |
                                        ({self._unsettled.eager_reason}
                                         if self._unsettled is not None else set()))}

    # -- the three ways a forward runs ---------------------------------------------------
    def _eager_forward(self, x, y):
        out = self.model(x)
        loss = self.loss_fn(out, y)
        self._pending = ("eager", None, loss)
        return out, loss

    def _record_forward(self, entry, x, y):
        started = time.perf_counter()
        known = [t for t in self._known() if t is not None]
        rec = Recording([x, y], known, x._backend.ndarray)
        state = _StepState(self._modules_now, self.loss_fn)
        with recording(rec, "forward"):
            out = self.model(x)
            loss = self.loss_fn(out, y)
        drawn = {}  # id of a gl.Generator -> the recorded ops' draws from it
        for cls, ctx, _, kw, _ in rec.nodes:
            if cls is Draw and kw.get("generator") is not None:
                drawn.setdefault(id(kw["generator"]), []).append((ctx.backend, kw))
        self._before = (state.reseeded(), state.changed(drawn))
        losses = loss if isinstance(loss, tuple) else (loss,)
        if not isinstance(out, Tensor) or not all(isinstance(t, Tensor) for t in losses):
            rec.fail("the model or the loss function returned something other than Tensors")
        else:
            rec.out_tensors = (out,) + losses  # their slots, once the pass is over
        rec.tuple_loss = isinstance(loss, tuple)
        rec.saved_counters = rec.saved_known()  # (before backward releases what nodes saved)
        self._recording = rec
        self.record_seconds += time.perf_counter() - started
        self._pending = ("record", entry, loss)
        return out, loss

    def _finish_recording(self, entry, rec):
        started = time.perf_counter()
        self.counts["recorded"] += 1
        if rec.broken is None and rec.root is None:
            rec.fail("the loss does not depend on anything that requires grad")
        if rec.broken is None:
            slots = [rec.slot_of(t) for t in rec.out_tensors]
            if None in slots:
                rec.fail("the model's output or the loss is not the result of a gradlab op")
        if rec.broken is not None:
            return self._give_up(entry, rec.broken)
        if entry.first is None:
            entry.first = rec
        else:
            first, entry.first = entry.first, None
            differs = first.same_as(rec, rec.xp)
            if differs is not None:
                return self._give_up(entry, differs)
            entry.replay = rec.plan(keep=slots, fresh=first.fresh_constants(rec))
            # (A lazy set-up seen before this replay is forgotten: another one, after a
            # setting changes, gets its own one recording to drop.)
            self._unsteady.pop(entry.key, None)
            entry.saved = rec.saved_counters
            entry.out_slot, entry.loss_slots = slots[0], slots[1:]
            entry.tuple_loss = rec.tuple_loss
        self.record_seconds += time.perf_counter() - started

    def _replay_forward(self, entry, x, y):
        be = x._backend
        if entry.graphable is None:  # (the signature's backend: one answer per entry)
            entry.graphable = getattr(be, "cuda_graph", None) is not None
        if entry.graphable and self._graphs.applies(entry):
            kind, out, loss, payload = self._graphs.forward(entry, x, y)
            self._pending = (kind, entry, payload)
            return out, loss
        vals = entry.replay.run_forward((x._data, y._data))
        out = Tensor._wrap(vals[entry.out_slot], be)
        if entry.tuple_loss:
            loss = tuple([Tensor._wrap(vals[s], be) for s in entry.loss_slots])
        else:
            loss = Tensor._wrap(vals[entry.loss_slots[0]], be)
        self._pending = ("replay", entry, be.xp)
        return out, loss

    def _give_up(self, entry, reason):
        entry.first = None
        entry.eager_reason = reason
        if reason not in self._warned:
            self._warned.add(reason)
            warnings.warn(f"compiled step: running eagerly: {reason}", RuntimeWarning,
                          stacklevel=4)

    # -- guards ----------------------------------------------------------------------------
    def _modules(self):
        mods = list(self.model.modules())
        owner = _attribute(self.loss_fn, "__self__")  # (criterion.forward as the loss)
        for m in (self.loss_fn, owner):
            if isinstance(m, Module) and m is not self.model:
                mods += list(m.modules())
        return mods + _modules_read_by(self.loss_fn, mods)

    def _code_key(self):
        """What following the step's code depends on, besides the places it reads (which
        the shallow guard compares): the modules and every value on them that is no
        scalar, by identity."""
        key = []
        for m in self._modules_now:
            key.append(id(m))
            key += [(k, id(v)) for k, v in m.__dict__.items() if type(v) not in _SCALARS]
        return key

    def _known(self, modules=None):
        """Parameters and buffers of the model (and of a loss module): of ``modules``, where
        they are known already."""
        out = []
        for m in self._modules() if modules is None else modules:
            out += m._parameters.values()
            out += m._buffers.values()
        return out

    def _params(self):
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def _world_signature(self, modules):
        """What, if it changes, makes every recording stale: (label, value) pairs, the label
        naming the value for a message (``_what_changed``)."""
        sig = []
        used, dynamic = self._places.used, self._places.dynamic
        for m, name in zip(modules, self._names):
            d = m.__dict__
            # The attributes some code may read: those its class's methods name (Dropout's
            # forward reads self.p) or the step's own code names; not the others (a loss,
            # a timestamp, a progress bar kept on the model by the training loop).
            read = _class_names(type(m)) | used
            for kind in ("_parameters", "_buffers", "_modules"):
                items = d[kind]
                sig.append((f"{name}'s {kind[1:]}", (tuple(items), tuple(map(id,
                                                                          items.values())))))
            for k, v in d.items():
                if k in _MODULE_OWN or not (dynamic or k in read):
                    continue
                if isinstance(v, Tensor):
                    # Plain tensor attributes too (not parameters or buffers): a recording
                    # holds the array of the one it saw; another in its place must record.
                    sig.append((f"{name}.{k}", id(v._data)))
                elif dynamic or k in used:
                    # What the step's own code names, whatever it holds, by identity where
                    # it is no setting (self.act = gl.tanh in place of a ReLU).
                    sig.append((f"{name}.{k}", _guarded(v)))
                elif not isinstance(v, Module):
                    # (private ones too: self._scale = 2.0 steers forward as a public one)
                    v = _setting_value(v)
                    if v is not _OTHER:
                        sig.append((f"{name}.{k}", v))
        for t in self._known(modules) + self._params():
            # requires_grad: a frozen parameter gets no gradient, which the replay's
            # backward (recorded with one) would still compute and the optimizer apply.
            # Hooks: a replay runs none, so a hook added since must record (and go eager).
            sig.append(("a parameter's or buffer's array, requires_grad or hooks",
                        None if t is None else
                        (id(t._data), t._requires_grad, hooks.leaf_hook_count(t))))
        sig.append(("the optimizer's parameter groups",
                    tuple(tuple(map(id, g["params"])) for g in self.optimizer.param_groups)))
        sig += zip(self._labels, self._numbers())
        return tuple(sig)

    def _settle_eagerly(self):
        reason = (f"what the step's guards watch changed before each of the last "
                  f"{_RESTLESS} replays could run (last: {self._changed}; a number, setting "
                  "or tensor that your "
                  "code sets anew before each step, such as loss_fn.weight = w, or a "
                  "parameter given a new array at each step, as an optimizer of your own "
                  "doing p.data = p.data - lr * p.grad: update it in place instead, "
                  "p.data -= lr * p.grad), so it records again every time, which costs "
                  "more than eager; step.reset() tries again")
        self._unsettled = _Entry()
        self._give_up(self._unsettled, reason)

    def _entry(self, x, y):
        if self._unsettled is not None:
            return self._unsettled
        groups = self.optimizer.param_groups
        # (list comprehensions: a generator costs a microsecond more, at every step)
        shallow = (structure_version[0], len(groups),
                   tuple([(id(g["params"]), len(g["params"])) for g in groups]),
                   self._numbers())
        if shallow != self._shallow:
            # Something may have changed: compare everything the recordings depend on.
            # Following the step's code again is needed only where what it could follow
            # changed (a module, a callable or a container set on one); an attribute set
            # to a number (model.last_loss = loss.item()) leaves it as it was.
            code = self._code_key() if self._shallow is not None and \
                shallow[1:] == self._shallow[1:] else None
            if code is None or code != self._code:
                self._modules_now = self._modules()
                self._numbers, self._places = _numbers_read_by(self.loss_fn,
                                                               self._modules_now)
                shallow = shallow[:-1] + (self._numbers(),)
                self._code = self._code_key()
                self._labels = self._places.labels()
                paths = {id(m): n for n, m in self.model.named_modules()}
                self._names = [f"model.{paths[id(m)]}" if paths.get(id(m)) else
                               "the model" if m is self.model else type(m).__name__
                               for m in self._modules_now]
            world = self._world_signature(self._modules_now)
            # Tensors the recordings hold as constants (not the model's): rebound or frozen?
            stale = any(not constants_current(rec) for e in self._entries.values()
                        for rec in (e.first, e.replay) if rec is not None)
            if world != self._world or stale:
                self._changed = _what_changed(self._world, world) if not stale else \
                    "a tensor the recording holds (given another array, or frozen)"
                if self._world is not None and self._entries:
                    self.counts["rerecorded"] += 1
                    # (Signatures that run eagerly anyway waste no recordings.)
                    if any(e.eager_reason is None for e in self._entries.values()):
                        self._restless += 1
                        if self._restless >= _RESTLESS:
                            self._settle_eagerly()
                self._entries.clear()
                self._world = world
            self._shallow = shallow
            self._modes = None
        modes = self._modes
        if modes is None or modes[0] != mode_version[0]:
            modes = self._modes = (mode_version[0],
                                   tuple([m.training for m in self._modules_now]))
        xd, yd = x._data, y._data
        # (y's backend: a CPU target of a CUDA model must get eager's error, not a replay's;
        # deterministic mode: it chooses the scatter kernel a recording and a graph hold;
        # x is y, an autoencoder's step(x, x): a recording of it cannot tell the model's
        # reads from the loss's, one array filling both input slots)
        key = (xd.shape, xd.dtype, yd.shape, yd.dtype, x._backend, y._backend, modes[1],
               _state.enabled, x._requires_grad or y._requires_grad,
               determinism.are_deterministic_algorithms_enabled(), xd is yd, _state.anomaly)
        entry = self._entries.get(key)
        if entry is None:
            entry = _Entry()
            entry.key = key
            if self._unsteady.get(key) is not None:
                self._give_up(entry, self._unsteady[key])
            elif x._requires_grad or y._requires_grad:
                # The replay's backward sets the .grad of the tensors it was recorded with:
                # each new batch's input would get none, and an old one would accumulate.
                self._give_up(entry, "an input requires grad (a replay would not give the "
                                     "new batch's input its .grad)")
            elif len(self._entries) >= self.max_recordings:
                self._give_up(entry, f"more than {self.max_recordings} input signatures "
                                     "(shapes, dtypes, train/eval modes); raise "
                                     "max_recordings if that is expected")
            elif not _state.enabled:
                entry.eager_reason = "grad mode is off"
            elif _state.anomaly:  # (the engine checks each gradient there; a replay would not)
                entry.eager_reason = "anomaly detection is on (gl.autograd.detect_anomaly)"
            self._entries[key] = entry
        return entry


def _what_changed(before, now):
    """The label of the first (label, value) pair that differs between two world
    signatures, for a message."""
    if before is None:
        return "nothing yet"
    if len(before) != len(now):
        return "the model's or the step's structure (a module, setting or value added or removed)"
    return next((a[0] for a, b in zip(before, now) if a != b), "nothing")


def _changed_saved(handed, replay):
    """Whether one of the ``handed`` (tensor, version at forward) pairs changed in place
    since and its array is one that a node of ``replay`` saved for backward (or a view of
    the same memory)."""
    changed = [t._data for t, version in handed if t._version[0] != version]
    if not changed:
        return False
    roots = {id(_root(a)) for a in changed}
    return any(isinstance(a, replay.ndarray) and id(_root(a)) in roots
               for ctx in replay._ctxs for a in _saved_arrays(ctx))


def _root(array):
    while getattr(array, "base", None) is not None:
        array = array.base
    return array


def _saved_arrays(ctx):
    saved = getattr(ctx, "saved_tensors", ())
    return saved if isinstance(saved, tuple) else ()


# Recordings dropped this many times in a row, with no replay between: the step runs eagerly.
_RESTLESS = 3


# -- the GPU half: the replay captured as a CUDA graph --------------------------------------------
class _Graphed:
    """The CUDA-graph state of one signature (one _Entry)."""

    __slots__ = ("warm", "reason", "graph", "inputs", "vals", "grads", "refs", "handed")

    def __init__(self):
        self.warm = False       # a plain replay has run forward and backward once
        self.reason = None      # why this signature replays without a graph, or None
        self.graph = None       # the backend's CudaGraph once captured
        self.inputs = None      # the static input buffers the graph reads
        self.vals = None        # slot values of the captured forward (refilled per launch)
        self.grads = None       # [(leaf, gradient array or None)] written by each launch
        self.refs = None        # [(refs to the .grad Tensor, refs to its array)] unheld
        self.handed = None      # per leaf: weak references to the .grad Tensors handed out


class _CudaGraphs:
    """Replays a recorded step as one CUDA graph launch on a backend that has them.

    Per signature: the first replay runs plainly (the warm-up: kernels compile and load,
    caches fill; none of that may happen inside a capture, where nothing may synchronise
    with the host or allocate outside the graph's pool). The second captures
    ``run_forward`` + ``run_backward`` on static input buffers (``CudaGraph.capture``:
    private stream, private memory pool) and launches the graph; every later call copies
    the batch into the static buffers and launches it again.

    Dropout, RReLU's slopes and ``gl.rand``/``randn``/``randint`` (and ``_like``) are
    captured too: inside a graph they draw from a device-side Philox state that each launch
    advances (``CudaGraph``, ``GraphRandom``), so every launch draws what the next eager step
    would, and the host's generator stays in step.

    Left outside the graph, on purpose:
    - ``optimizer.step()`` (one fused kernel per parameter group): it reads lr, the step
      count and bias corrections on the host at every call, so a scheduler keeps working;
      a graph would bake the scalars of the capture in.
    - A matrix product above CupyBackend.SMALL_GEMM_MAX multiply-adds or SMALL_GEMM_K_MAX
      terms a sum: cuBLAS runs it, and CuPy refuses cuBLAS while a stream captures (the
      smaller ones are gradlab's kernel, which it captures). The signature replays
      ungraphed, without a warning: at those sizes the arithmetic dominates the step, and
      ``info()["ungraphed_reasons"]`` says why.
    - ``gl.randperm``, and ``gl.randint`` over a range wider than 2**53: drawn from CuPy's
      generator, whose state a graph would not advance; the signature replays ungraphed,
      without a warning, as for a large GEMM.
    - Anything else a capture refuses (a host synchronisation inside the step, such as
      BatchNorm's ``momentum=None`` reading its batch count with ``float()``; an upload
      from host memory): the capture is abandoned (it executed nothing), the signature
      replays ungraphed with one warning saying why, and this call runs the plain replay.
    Checks that eager code reads back at once (softmax-CE's target range) are deferred
    inside the capture and read once after each launch (``CudaGraph.launch``), raising the
    eager error then.
    """

    def __init__(self, warned, optimizer):
        self._warned = warned  # shared with CompiledStep: each reason is warned about once
        self._optimizer = optimizer

    def applies(self, entry):
        """True when this replay is handled here: a signature whose backend has CUDA graphs
        (``entry.graphable``, the caller's check), not yet found ungraphable."""
        if entry.graph is None:
            entry.graph = _Graphed()
        return entry.graph.reason is None

    def forward(self, entry, x, y):
        """(kind, output, loss, payload) of one replayed forward: ``kind`` "warm-up" (a
        plain replay) or "graph"."""
        g, be = entry.graph, x._backend
        if not g.warm:
            vals = entry.replay.run_forward((x._data, y._data))
            return ("warm-up",) + _outputs(entry, vals, be, copy=False) + (be.xp,)
        if g.graph is None:
            if not self._capture(entry, g, x, y):
                # Nothing ran on the device: this call is a plain replay.
                vals = entry.replay.run_forward((x._data, y._data))
                return ("warm-up",) + _outputs(entry, vals, be, copy=False) + (be.xp,)
        else:
            if not self._release_grads(g):
                vals = entry.replay.run_forward((x._data, y._data))
                return ("warm-up",) + _outputs(entry, vals, be, copy=False) + (be.xp,)
            # The batch goes into the buffers the graph was captured with (device to device).
            g.inputs[0][...] = x._data
            g.inputs[1][...] = y._data
            for version in entry.replay.bumped:  # the capture's run_forward bumped once
                version[0] += 1
        try:
            g.graph.launch()
        except Exception:
            # A deferred check failed (a bad target): the gradient buffers now hold that
            # batch's values; eager would not have computed them, so leave no .grad on them.
            _drop_written(g)
            raise
        # Copies: the graph overwrites its output buffers at the next launch, and a caller
        # may keep this step's loss (a list of losses read at the end of an epoch).
        return ("graph",) + _outputs(entry, g.vals, be, copy=True) + (None,)

    def backward(self, kind, entry, payload):
        g = entry.graph
        if kind == "warm-up":
            entry.replay.run_backward(payload)
            g.warm = True
            return
        _hand_out(g)
        if g.refs is None:  # how many references the gradients have when nobody holds them
            g.refs = [_refs_of(g, k) for k in range(len(g.grads))]

    def discard(self, kind, entry):
        """``CompiledStep.discard`` of a launched step: the launch wrote the discarded
        batch's gradients into the arrays the parameters' ``.grad`` wrap, so drop those."""
        if kind == "graph":
            _drop_written(entry.graph)

    def _release_grads(self, g):
        """Before a launch overwrites the gradient arrays: every ``.grad`` Tensor handed out
        by an earlier launch that someone still holds (``g = p.grad`` kept in a list, or
        kept after ``p.grad = None``) gets a copy, so that it keeps its step's values as in
        eager, where each step's gradients are new arrays. An array that is held itself (a
        view of it, ``p.grad.data``) cannot be given a copy: the signature then replays
        without a graph, whose gradients are new arrays again. False in that case (nothing
        was launched)."""
        if g.refs is None:  # no launch has handed its gradients out yet
            return True
        for k in range(len(g.grads)):
            if not _release_one(g, k):
                g.reason = ("a gradient array the graph writes is held outside it (a view of "
                            "p.grad, p.grad.data); a graph would overwrite it")
                return False
        return True

    def _capture(self, entry, g, x, y):
        be, replay = x._backend, entry.replay
        opt = self._optimizer
        optimized = {id(p) for group in opt.param_groups for p in group["params"]}
        if any(id(leaf) not in optimized for leaf in replay.leaves):
            # Eager adds each step's gradient into its .grad, which no zero_grad resets.
            g.reason = ("a tensor outside the optimizer gets a gradient, which eager adds up "
                        "across steps; a graph would write each step's alone")
            return False
        if "zero_grad" in vars(opt) or \
                getattr(type(opt), "zero_grad", None) is not Optimizer.zero_grad:
            # A launch hands out new .grad Tensors, as after the default zero_grad
            # (set_to_none); one of the optimizer's own may keep and zero them instead.
            g.reason = ("the optimizer has a zero_grad of its own, which a graph's launch "
                        "would not run")
            return False
        # Static inputs, allocated outside the capture and kept with the graph.
        inputs = (x._data.copy(), y._data.copy())
        graph = be.cuda_graph()
        versions = [v[0] for v in replay.bumped]

        def body():
            vals = replay.run_forward(inputs)
            # The graph writes each launch's gradients afresh (zero_grad then backward):
            # run_backward accumulates into an existing .grad, as the engine does.
            for leaf in replay.leaves:
                leaf.grad = None
            replay.run_backward(be.xp)
            return vals, [(leaf, None if leaf.grad is None else leaf.grad._data)
                          for leaf in replay.leaves]
        before = [(leaf, leaf.grad) for leaf in replay.leaves]
        try:
            # (the capture leaves the host's Philox offset as it was: each launch draws)
            vals, grads = graph.capture(body)
        except Exception as exc:  # noqa: BLE001 - any refusal: replay without a graph
            # Undo the host-side effects of the abandoned capture before the plain replay.
            for v, old in zip(replay.bumped, versions):
                v[0] = old
            for leaf, grad in before:
                leaf.grad = grad
            if isinstance(exc, GraphCaptureUnsupported):
                # An op that declines capture by design (a GEMM for cuBLAS, CuPy draws):
                # expected, so info() says so and nobody is warned.
                g.reason = f"not captured: {exc}"
            else:
                self._ungraph(g, f"capturing it as a CUDA graph failed: "
                                 f"{type(exc).__name__}: {exc}")
            return False
        g.graph, g.inputs, g.vals, g.grads = graph, inputs, vals, grads
        # (the capture's backward made the first .grad Tensors on these arrays)
        g.handed = [[weakref.ref(leaf.grad)] if arr is not None and leaf.grad is not None
                    and leaf.grad._data is arr else [] for leaf, arr in grads]
        return True

    def _ungraph(self, g, reason):
        g.reason = reason
        if reason not in self._warned:
            self._warned.add(reason)
            warnings.warn(f"compiled step: replaying without a CUDA graph: {reason}",
                          RuntimeWarning, stacklevel=5)

    def info(self, entries):
        graphs = [e.graph for e in entries if e.graph is not None]
        held = sum(g.graph.held_bytes() + sum(a.nbytes for a in g.inputs)
                   for g in graphs if g.graph is not None)
        return {"graphs": sum(g.graph is not None for g in graphs),
                "graph_held_bytes": held,
                "ungraphed_reasons": sorted({g.reason for g in graphs if g.reason})}


# -- the gradients a graph hands out ----------------------------------------------------------
# A graph's gradient arrays are the same at every launch; the .grad Tensors wrapping them
# are handed out by _hand_out and tracked (weakly) until a launch would overwrite them. The
# reference counts that tell "held" from "not held" are taken by _refs_of alone, from frames
# that hold no reference to the arrays or Tensors counted, so that every count sees the
# same references of gradlab's own.
def _hand_out(g):
    """Set each leaf's ``.grad`` to what the launch wrote, as run_backward would: a Tensor of
    its own, since the one there may be held (as after eager's zero_grad)."""
    for k, (leaf, arr) in enumerate(g.grads):
        if arr is None:
            leaf.grad = None
        elif leaf.grad is None or leaf.grad._data is not arr:
            leaf.grad = t = Tensor._wrap(arr, leaf._backend)
            g.handed[k].append(weakref.ref(t))


def _drop_written(g):
    """No ``.grad`` on the arrays a launch wrote for a batch that did not train. (In a
    function of its own: the traceback of the error being raised keeps the caller's frame,
    which must hold no reference to the arrays that _refs_of counts.)"""
    for leaf, arr in g.grads:
        if leaf.grad is not None and leaf.grad._data is arr:
            leaf.grad = None


def _refs_of(g, k):
    """(references to leaf ``k``'s ``.grad``, references to its gradient array)."""
    leaf, arr = g.grads[k]
    return sys.getrefcount(leaf.grad), sys.getrefcount(arr)


def _release_one(g, k):
    """``_release_grads`` for leaf ``k``: False when its array itself is held."""
    leaf, arr = g.grads[k]
    if arr is None:
        return True
    current = leaf.grad
    wraps = current is not None and current._data is arr
    for ref in g.handed[k]:
        t = ref()
        if t is not None and t is not current and t._data is arr:
            t._data = arr.copy()  # kept past its step
    g.handed[k] = [weakref.ref(current)] if wraps else []
    leaf = arr = current = t = None  # (not to be counted)
    held_tensor, held_array = _refs_of(g, k)
    unheld_tensor, unheld_array = g.refs[k]  # with one Tensor, unheld, wrapping the array
    if wraps and held_tensor > unheld_tensor:
        leaf, arr = g.grads[k]
        leaf.grad._data = arr.copy()
        held_array -= 1
        wraps = False
    return held_array <= unheld_array - (not wraps)


def _outputs(entry, vals, be, copy):
    def wrap(slot):
        a = vals[slot]
        return Tensor._wrap(a.copy() if copy else a, be)
    out = wrap(entry.out_slot)
    losses = tuple(wrap(s) for s in entry.loss_slots)
    return out, losses if entry.tuple_loss else losses[0]
