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
``functools.partial``, its function and bound arguments; a bound method's module); what
the ``forward`` of a module class of your own, and the methods, properties and the
functions or callable objects kept on a module (``self.act``) that it names, read from
their closures or globals, and that class's own settings; and, in turn,
what the functions of your own that any of these call by name read (a helper of
``forward`` reading a global), a Python module of your own's attributes included
(``config.BETA``, ``utils.scale(h)``). Numbers (Python's or NumPy's), slices, dtypes and
Enum members are compared by value; tensors, modules, functions, NumPy arrays and any
other object (a ``functools.partial``, a library's object) by identity, so that another
one bound to the name, or kept on a module (``model.act = gl.tanh``), records again;
dicts, lists and tuples of these (a config dict, a dict of criteria; 32 entries in all,
three deep) and objects holding them as attributes (a ``SimpleNamespace``, a dataclass
instance, an instance of a class of your own) by value, entries changed in place
included. A module read this way, or kept in such a container (a module's plain list of
layers), is guarded as the model's are (its settings, buffers, mode). A value read
elsewhere (by installed library code; a submodule's, two dots away, ``config.loss.BETA``;
a setting changed in place on an installed library's object; a larger container) is not
seen: keep such a value in a tensor updated in place (a replay reads the array), or call
``step.reset()`` after changing it (so is a class attribute created after the step first
ran, read with ``getattr(self, name, default)``). An attribute that no code of the step
names (no method of its module's class, none of the code followed above, which includes
a loss object's own methods and properties, a helper object's methods, static methods of
a class read by name, functions kept in a dict or list on a module, a decorator object
around ``forward`` and ``__getattr__``: a loss, a timestamp, a progress bar, the last
batch that the training loop keeps on the model or the loss's object) is none of the
step's, and changing it records nothing again; where that code reads attributes by names
it builds (``getattr(self, "_act_" + kind)``, ``vars(self)``, an ``attrgetter``), every
attribute of its objects counts as read.

A replay runs no Python code, so a step whose own code changes Python state as it runs
runs eagerly, with one warning (``_StepState``): an attribute of one of its modules set
during the step (a counter, an output kept as ``self._last``, an entry appended to a list,
dict, deque or set, a NumPy array changed in place), a variable or global that its code
reads or writes, rebound, a mutable default argument or a function attribute changed, or
a draw from a random generator outside gradlab's ops (Python's or NumPy's global one,
whoever draws from it meanwhile, another thread included; or a ``Random``, ``Generator``
or ``RandomState``, or a ``gl.Generator`` drawn from in Python, that a module holds or the
code reads by name; ``random.random() < p`` would repeat the recording's branch). A
change at one recording only is a lazy set-up: that recording is dropped. A reseed during
the step (``gl.manual_seed`` in ``forward``) runs eagerly too. What the caller does
between ``forward()`` and ``backward_step()`` is not the step's (but a tensor that the
backward reads, changed in place there, raises as in eager).
Guarded values that change before every replay could run (a number set anew before each
step) would record at every step, which costs more than eager: after ``_RESTLESS`` such
drops in a row the step runs eagerly, with one warning, until ``reset()``.
"""
from __future__ import annotations

import collections
import dis
import enum
import functools
import itertools
import operator
import random
import sys
import sysconfig
import threading
import time
import types
import warnings
import weakref

import numpy as np

from ..autograd import hooks
from ..autograd.creation import Draw
from ..autograd.grad_mode import _state
from ..autograd.tape import Recording, constants_current, recording
from ..autograd.tensor import Tensor, structure_version
from ..backend import determinism
from ..backend.base import GraphCaptureUnsupported
from ..backend.generator import Generator
from ..backend.registry import random_restarts
from ..nn.module import Module, mode_version
from ..nn.utils import clip_grad_norm_, clip_grad_value_
from ..optim.optimizer import Optimizer

_SCALARS = (bool, int, float, str, type(None))
# The containers the guards look into: dicts (OrderedDict, defaultdict and Counter too),
# sequences (a namedtuple too), sets.
_SEQUENCES = (list, tuple, collections.deque)
_CONTAINERS = (dict, set, frozenset) + _SEQUENCES


def _setting(value):
    """A module attribute that can steer its forward: a scalar, or a tuple of scalars
    (``LayerNorm.normalized_shape``)."""
    if type(value) is tuple:
        return all(type(v) in _SCALARS for v in value)
    return type(value) in _SCALARS


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
        owner = getattr(self.loss_fn, "__self__", None)  # (criterion.forward as the loss)
        for m in (self.loss_fn, owner):
            if isinstance(m, Module) and m is not self.model:
                mods += list(m.modules())
        return mods + _modules_read_by(self.loss_fn, mods)

    def _known(self):
        """Parameters and buffers of the model (and of a loss module)."""
        out = []
        for m in self._modules():
            out += m._parameters.values()
            out += m._buffers.values()
        return out

    def _params(self):
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def _world_signature(self, modules):
        """What, if it changes, makes every recording stale: (label, value) pairs, the label
        naming the value for a message (``_what_changed``)."""
        sig = []
        paths = {id(m): n for n, m in self.model.named_modules()}
        used, dynamic = self._places.used, self._places.dynamic
        for m in modules:
            d = m.__dict__
            name = f"model.{paths[id(m)]}" if paths.get(id(m)) else \
                "the model" if m is self.model else type(m).__name__
            # The attributes some code may read: those its class's methods name (Dropout's
            # forward reads self.p) or the step's own code names; not the others (a loss,
            # a timestamp, a progress bar kept on the model by the training loop).
            read = _class_names(type(m)) | used
            for kind in ("_parameters", "_buffers", "_modules"):
                items = d[kind]
                sig.append((f"{name}'s {kind[1:]}", (tuple(items), tuple(map(id,
                                                                          items.values())))))
            # (private ones too: self._scale = 2.0 steers forward as a public one does)
            for k, v in d.items():
                if (dynamic or k in read) and k not in _MODULE_OWN:
                    v = _setting_value(v)
                    if v is not _OTHER:
                        sig.append((f"{name}.{k}", v))
            # Those the step's own code names, whatever they hold, by identity where they
            # are no settings (self.act = gl.tanh in place of a ReLU); not the others (a
            # progress bar or the last batch kept on the model by the training loop).
            sig += [(f"{name}.{k}", _guarded(v)) for k, v in sorted(d.items())
                    if (dynamic or k in used) and k not in _MODULE_OWN]
            # Plain tensor attributes (not parameters or buffers): a recording holds the
            # array of the one it saw, so another tensor in its place must record again.
            sig += [(f"{name}.{k}", id(v._data)) for k, v in d.items()
                    if isinstance(v, Tensor) and (dynamic or k in read)]
        for t in self._known() + self._params():
            # requires_grad: a frozen parameter gets no gradient, which the replay's
            # backward (recorded with one) would still compute and the optimizer apply.
            # Hooks: a replay runs none, so a hook added since must record (and go eager).
            sig.append(("a parameter's or buffer's array, requires_grad or hooks",
                        None if t is None else
                        (id(t._data), t._requires_grad, hooks.leaf_hook_count(t))))
        sig.append(("the optimizer's parameter groups",
                    tuple(tuple(map(id, g["params"])) for g in self.optimizer.param_groups)))
        sig += zip(self._places.labels(), self._numbers())
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
            self._modules_now = self._modules()
            self._numbers, self._places = _numbers_read_by(self.loss_fn, self._modules_now)
            shallow = shallow[:-1] + (self._numbers(),)
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


# A module's own bookkeeping, which _world_signature compares apart (or, for the mode, not).
_MODULE_OWN = frozenset(("training", "_parameters", "_buffers", "_modules"))

# Recordings dropped this many times in a row, with no replay between: the step runs eagerly.
_RESTLESS = 3

_OTHER = object()  # stands for a value that is not a setting (a function, a list, ...)


class _Same:
    """A value that the step's code reads by name, compared by identity: a tensor (``==``
    on one is elementwise), a callable that is no plain function, any object that is no
    setting. Another one bound to that name must record again, as the recording holds, or
    baked in what it did with, the one it saw. (Modules and functions compare by identity as they
    are; what happens inside a module read this way is guarded with the model's modules:
    ``CompiledStep._modules``.)"""

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __eq__(self, other):
        return type(other) is _Same and other.obj is self.obj

    __hash__ = None


def _setting_value(value, budget=None, held=False):
    """A setting as it is compared from call to call (``_setting``, a NumPy number, a
    container of settings), or _OTHER. (``budget``, ``held``: _container_value's.)"""
    if _setting(value):
        return value
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        # np.float64(0.3) is a setting too (a value from np.linspace), and its type decides
        # how it promotes in an op, which equality with 0.3 does not see.
        return (type(value), value)
    # Other values that steer what forward does: x[:, self.cols], .to(self.dtype), a mode
    # as an Enum member (by value); a NumPy array that forward wraps (gl.tensor(self.offset)
    # copies it into the recording) by identity, so one assigned anew records again.
    if type(value) is slice:  # (unhashable before Python 3.12: compared as its parts)
        parts = (value.start, value.stop, value.step)
        return (slice, parts) if _setting(parts) else _OTHER
    if isinstance(value, (np.dtype, enum.Enum)) or (
            isinstance(value, type) and issubclass(value, np.generic)):
        return (type(value), value)
    if isinstance(value, np.ndarray):
        return _Same(value)
    return _container_value(value, budget, held)


# Where installed library code lives (the standard library, site-packages): its functions'
# globals and its classes' instances are not the step's settings.
_LIBRARIES = tuple({sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib",
                                                       "platlib")})


# Entries in all, nested ones included, beyond which a container is data, not settings: it
# is compared at every call, which costs about 0.1-0.3 us an entry.
_CONTAINER_ITEMS = 32


def _container_value(value, budget=None, held=False):
    """A dict, list or tuple of settings (a config dict, a list of dropout rates, nested up
    to three deep; _CONTAINER_ITEMS entries in all), or an object holding them as
    attributes (``_config_object``), by value, as _Frozen, or _OTHER: a
    recording bakes in what forward read from it, and an entry changed in place has no
    __setattr__ to tell. With ``held`` (a container the step's code reads by name), the
    entries that are no settings (tensors, modules, callables, other objects) compare by
    identity (_Same), else they make it _OTHER. ``budget``: [entries left, levels left],
    shared with the containers it is nested in."""
    kind = type(value)
    if isinstance(value, (dict, *_SEQUENCES)):
        d = value
    elif isinstance(value, (set, frozenset)):  # (of scalars only: by value, unordered)
        if len(value) > _CONTAINER_ITEMS or not all(type(v) in _SCALARS for v in value):
            return _OTHER
        return _Frozen((kind, frozenset(value)))
    elif _config_object(value):
        d = vars(value)
    else:
        return _OTHER
    if budget is None:
        budget = [_CONTAINER_ITEMS, 3]
    budget[0] -= len(d)
    if budget[0] < 0 or budget[1] == 0:
        return _OTHER
    budget[1] -= 1
    frozen = [kind]
    for k, v in (d.items() if isinstance(d, dict) else enumerate(d)):
        if type(v) not in _SCALARS:
            entry = v
            v = _setting_value(v, budget, held)
            if v is _OTHER:
                # (a criterion in {"ce": nn.CrossEntropyLoss()}, a tensor, a function, a
                # Path beside the settings of a config dict: the one the recording saw)
                if not held:
                    return _OTHER
                v = _Same(entry)
        if type(k) not in _SCALARS:
            return _OTHER
        frozen.append((k, v))
    budget[1] += 1
    return _Frozen(frozen)


def _config_object(value):
    """An object that may hold settings as attributes, with a plain ``__dict__``: a
    ``types.SimpleNamespace``, a dataclass instance, or an instance of a class of your own
    (``self.opts = Options()``; not a module, a tensor or a callable, guarded otherwise)."""
    kind = type(value)
    if type(_attributes(value)) is not dict:
        return False
    if kind is types.SimpleNamespace or hasattr(kind, "__dataclass_fields__"):
        return True
    try:
        return not isinstance(value, (Module, Tensor, type, types.ModuleType)) and \
            not callable(value) and _own_class(kind)
    except Exception:  # noqa: BLE001 - an odd object (a __class__ that raises): none of these
        return False


def _own_class(kind):
    """Whether ``kind`` is defined in a Python module of your own (``_own_module_dict``)."""
    return _own_module_dict(sys.modules.get(kind.__module__)) is not None


def _changeable(value, depth=3):
    """Whether ``value`` can hold settings that change in place (read at every call)."""
    if isinstance(value, tuple):
        return depth > 0 and any(_changeable(v, depth - 1) for v in value)
    return isinstance(value, _CONTAINERS) or _config_object(value)


class _Frozen(tuple):
    """A container's contents as _container_value read them, led by its type. (Its own
    class: so _StepState knows to compare it by value.)"""

    __slots__ = ()


def _guarded(value):
    """How a value that the step's code reads by name is compared from call to call."""
    # A module or function compares by identity as it is (and tuple equality tries `is`
    # first, in C): cheaper than a _Same at every call. (Tested first: at every call.)
    try:
        if isinstance(value, (Module, types.FunctionType)):
            return value
        if isinstance(value, Tensor):
            return _Same(value)
        v = _setting_value(value, held=True)
    except Exception:  # noqa: BLE001 - an odd object (a __class__ that raises)
        v = _OTHER
    # Anything else by identity: another object bound to the name (a functools.partial
    # with other keywords, a new callable object, a library object) must record again.
    return _Same(value) if v is _OTHER else v



class _Places(tuple):
    """What ``_read_places`` finds: ``cells`` (closure cells), ``names`` ((namespace, name)
    pairs), ``attrs`` ((dict, keys) pairs), the places the step's code reads by name;
    ``used``, every name the code followed loads (attributes included); ``dynamic``, whether
    it reads attributes by names it computes (getattr(self, name), vars(self)). An
    attribute that the code never names is none of the step's (unless it is dynamic): the
    training loop may keep anything on the loss's object or the model (a progress bar, the
    last batch, a history of losses)."""

    __slots__ = ()
    cells, names, attrs, used = (property(lambda self, i=i: self[i]) for i in range(4))
    dynamic = property(lambda self: self[5])

    def labels(self):
        """How a message names each value ``_read_values`` reads, in its order."""
        out = list(self[4])
        out += [f"the global {n!r}" for _, n in self.names]
        return out + [k if type(k) is str and k.startswith(_DEFAULT) else f"attribute {k!r}"
                      for _, keys in self.attrs for k in keys]


# Names whose use means that the code may read attributes it does not name: where the code
# followed uses one, every attribute counts as read and every method of its classes as run.
_DYNAMIC = frozenset(("getattr", "vars", "__dict__", "attrgetter", "methodcaller", "exec",
                      "eval", "__getattribute__"))


def _read_places(loss_fn, modules):
    """The ``_Places`` that the step's own Python code reads: ``loss_fn``'s (through a
    ``functools.partial``: its function's, and its bound arguments), those of ``forward``
    of each module class defined outside gradlab and of the methods, properties and
    callables kept on a module (or in a dict or list there) that it names, with the
    class's own settings, and those of the functions, callable objects and objects of
    your own that these hold in their closures (the loss that ``fit``'s wrapper calls),
    read as globals (a helper of ``forward``, a class whose method it calls) or keep on a
    module (self.policy.apply(h)), and the methods of those objects' classes that the
    code names, in turn."""
    cells, names, attrs = [], [], []
    functions = []
    owners = []  # the attribute dicts of the objects whose code is followed
    classes = {}  # id -> a class of your own whose settings are read and methods followed
    methods = {}  # name -> the functions of those classes (and kept on modules) so named
    used = set()  # the attribute (and global) names that the code followed loads
    todo = [] if isinstance(loss_fn, Module) else [loss_fn]

    def add_class(kind, modules_class=False):
        # (a module class from an installed library too: its settings, not its code)
        for k in kind.__mro__:
            if id(k) in classes or k is object or \
                    k.__module__.startswith(("gradlab.", "builtins")) or \
                    not modules_class and not _own_class(k):
                continue
            classes[id(k)] = k
            for n, v in vars(k).items():
                found = _functions_of(v)
                if found:
                    methods.setdefault(n, []).extend(found)
                    # (__getattr__ answers for attributes no code names: self.scale
                    # looked up in self.opts)
                    if n in used or n in ("__getattr__", "__getattribute__"):
                        todo.extend(found)
                elif isinstance(v, type) and _own_class(v):  # a nested class: self.Inner.f
                    add_class(v)

    for m in modules:
        add_class(type(m), modules_class=True)
    for m in modules:  # (code of your own kept on a module: self.act = my_activation, a
        #                  callable object, a functools.partial, a bound method)
        for n, v in m.__dict__.items():
            if _followed(v):
                methods.setdefault(n, []).append(v)
            elif isinstance(v, _CONTAINERS) and len(v) <= _CONTAINER_ITEMS:
                found = [f for f in (v.values() if isinstance(v, dict) else v)
                         if _followed(f)]  # (self.ops = {"act": lambda h: ...})
                methods.setdefault(n, []).extend(found)
            elif _config_object(v):  # an object of your own: self.policy.apply(h)
                add_class(type(v))
                owners.append(vars(v))
    todo += methods.get("forward", ())
    seen = set()
    dynamic = False
    while True:
        while todo:
            fn = todo.pop()
            if id(fn) in seen:
                continue
            seen.add(id(fn))
            if isinstance(fn, functools.partial):
                # Its bound arguments are read at every call (keywords: a dict, may change).
                attrs += [(fn.keywords, list(fn.keywords)), (dict(enumerate(fn.args)),
                                                             list(range(len(fn.args))))]
                if _followed(fn.func):
                    todo.append(fn.func)
                continue
            owner = None
            if isinstance(fn, types.MethodType):
                fn, owner = fn.__func__, fn.__self__
            elif isinstance(fn, (operator.attrgetter, operator.methodcaller)):
                dynamic = True  # (attributes named by strings built at run time)
                continue
            elif not isinstance(fn, types.FunctionType):
                owner, fn = fn, type(fn).__call__  # (compile_step checked it is callable)
            functions.append(fn)
            if owner is not None and not isinstance(owner, Module) and \
                    type(_attributes(owner)) is dict:
                owners.append(owner.__dict__)
                add_class(type(owner))  # (self.penalty(out) reading self.beta)
            if not isinstance(fn, types.FunctionType):
                continue
            # State kept on the function: a mutable default (def forward(self, x, seen=[]))
            # and the function's own attributes (forward.calls).
            held = {f"{_DEFAULT}{n!r} in {fn.__qualname__}()": v
                    for n, v in _defaults(fn) if _changeable(v)}
            if held:
                attrs.append((held, list(held)))
            if fn.__dict__:
                owners.append(fn.__dict__)
            todo += [v for v in map(_cell_value, fn.__closure__ or ()) if _own_callable(v)]
            # Helpers of your own that it calls by name, and their globals in turn
            # (library code is left out: its globals are not settings of the step), and
            # classes of your own whose methods it calls (Helper.compute(self, h)).
            for d, n in _global_places(fn):
                v = d[n]
                if _followed(v):
                    todo.append(v)
                elif isinstance(v, type) and _own_class(v):
                    add_class(v)
            named = _names_used(fn.__code__)
            used.update(named)
            dynamic = dynamic or not _DYNAMIC.isdisjoint(named)
            todo += [f for n in named for f in methods.get(n, ())]
        if not dynamic or all(id(f) in seen for fs in methods.values() for f in fs):
            break
        # getattr(self, name), vars(self), exec: what the code runs or reads cannot be told
        # by name, so all of it is followed and read.
        todo = [f for fs in methods.values() for f in fs]
    for k in classes.values():
        # A setting kept on a class of your own (Scaled.factor = 3.0, read as self.factor):
        # no module's __setattr__ sees it change. (Private ones where the code names them.)
        d = vars(k)
        attrs.append((d, [n for n, v in d.items() if not n.startswith("__") and (
            n[0] != "_" or n in used or dynamic) and (
            _setting_value(v) is not _OTHER or isinstance(v, (Tensor, Module)))]))
    for d in {id(d): d for d in owners}.values():
        # The attributes the code names (self.beta, self._beta, forward.calls), by name.
        named = sorted(k for k in d if type(k) is str and (dynamic or k in used))
        if named:
            attrs.append((d, named))
    for m in modules:
        # A module's containers of settings that the code followed reads (self.cfg["p"]):
        # an entry changed in place has no __setattr__ to tell, so they are read at every
        # call. (Not the others: a history list that the training loop appends to.)
        d = m.__dict__
        held = [n for n in sorted(k for k in d if dynamic or k in used) if _changeable(d[n])
                and _setting_value(d[n]) is not _OTHER]
        if held:
            attrs.append((d, held))
    places = {}
    cell_labels = []
    for fn in {id(f): f for f in functions}.values():
        if isinstance(fn, types.FunctionType):
            cells += fn.__closure__ or ()
            cell_labels += [f"{n!r} in the closure of {fn.__qualname__}"
                            for n in fn.__code__.co_freevars[:len(fn.__closure__ or ())]]
            # (A name bound to a Python module or a class, such as np or gl, is no setting:
            # not read at every call; one that two functions read is read once.)
            places.update(((id(d), n), (d, n)) for d, n in _global_places(fn)
                          if not isinstance(d[n], (types.ModuleType, type)))
    names += places.values()
    return _Places((cells, names, attrs, used, cell_labels, dynamic))


def _attributes(value):
    """``value.__dict__``, or None where it has none (or an odd object raises for it)."""
    try:
        return getattr(value, "__dict__", None)
    except Exception:  # noqa: BLE001 - a __getattr__ or property of the user's that raises
        return None


_DEFAULT = "the default of "  # (how _StepState names a mutable default argument)


def _defaults(fn):
    """(parameter name, default value) pairs of a function's arguments."""
    code = fn.__code__
    positional = code.co_varnames[:code.co_argcount]
    found = list(zip(positional[len(positional) - len(fn.__defaults__ or ()):],
                     fn.__defaults__ or ()))
    return found + list((fn.__kwdefaults__ or {}).items())


def _functions_of(value):
    """The functions of your own behind a class attribute: a method, a static or class
    method, a property's accessors, the function that a decorator object of your own
    wraps (``__wrapped__``, or kept among its attributes)."""
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    if isinstance(value, property):
        found = [value.fget, value.fset, value.fdel]
    elif isinstance(value, types.FunctionType):
        found = [value]
    else:
        held = _attributes(value)
        found = [getattr(value, "__wrapped__", None)]
        if type(held) is dict and _own_class(type(value)):
            found += held.values()
    return [f for f in found if isinstance(f, types.FunctionType) and not _library_code(f)]


_CLASS_NAMES = {}  # module class -> the names its methods (all of its MRO's) use


def _class_names(kind):
    """Every name that the methods, properties and static or class methods of ``kind`` and
    its bases use (``_names_used``), gradlab's own classes' included, and the names in
    its tuples of names (``_args``)."""
    found = _CLASS_NAMES.get(kind)
    if found is None:
        found = set()
        for k in kind.__mro__:
            for v in vars(k).values():
                if type(v) is tuple and all(type(e) is str for e in v):
                    found |= set(v)  # (names read with attrgetter: a loss's _args)
                    continue
                if isinstance(v, (staticmethod, classmethod)):
                    v = v.__func__
                for f in [v.fget, v.fset, v.fdel] if isinstance(v, property) else [v]:
                    code = getattr(f, "__code__", None)
                    if isinstance(code, types.CodeType):
                        found |= _names_used(code)
        found = _CLASS_NAMES[kind] = frozenset(found)
    return found


_NAMES_USED = {}  # code object -> the names it (and the code nested in it) uses


def _names_used(code):
    """Every name ``code`` uses (globals, attributes, methods): co_names, nested code's too,
    and the strings among its constants that could name an attribute."""
    found = _NAMES_USED.get(code)
    if found is None:
        found = set(code.co_names)
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                found |= _names_used(const)
            elif isinstance(const, str) and const.isidentifier():  # getattr(self, "beta")
                found.add(const)
        found = _NAMES_USED[code] = frozenset(found)
    return found


def _followed(value):
    """Whether ``value`` is code of your own that the guards follow when the step's code
    names it: a function, method or callable object (``_own_callable``) that is not
    installed library code."""
    return _own_callable(value) and not _library_code(value)


def _library_code(fn):
    """Whether ``fn`` (a function, or a callable object) is installed library code: the
    standard library's, or a site-packages package's."""
    if isinstance(fn, types.MethodType):
        fn = fn.__func__
    elif not isinstance(fn, types.FunctionType):
        fn = type(fn).__call__  # (a slot wrapper, with no __code__, for a C type)
    code = getattr(fn, "__code__", None)
    return code is not None and code.co_filename.startswith(_LIBRARIES)


_GLOBALS_READ = {}  # code object -> the global names it (and the code nested in it) reads


def _globals_read(code):
    """(names, (name, attribute) pairs) that ``code`` loads (or stores) as globals: the names
    are not all of ``co_names``, which holds attribute names too (``self.out`` would guard a
    global ``out``); a pair is a global's attribute read at once (``config.BETA``,
    ``utils.scale(h)``), which matters where the global is a Python module of your own."""
    found = _GLOBALS_READ.get(code)
    if found is None:
        names, pairs = set(), set()
        last = None  # the global just loaded, if the next instruction reads its attribute
        for ins in dis.get_instructions(code):
            if ins.opname in ("LOAD_ATTR", "LOAD_METHOD") and last is not None:
                pairs.add((last, ins.argval))
            last = None
            if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
                names.add(ins.argval)
                last = ins.argval
            elif ins.opname == "STORE_GLOBAL":  # (`global n; n = out`: _StepState sees it)
                names.add(ins.argval)
        for const in code.co_consts:
            if isinstance(const, types.CodeType):  # a lambda or comprehension inside
                inner = _globals_read(const)
                names.update(inner[0])
                pairs.update(inner[1])
        found = _GLOBALS_READ[code] = (sorted(names), sorted(pairs))
    return found


def _own_module_dict(value):
    """The namespace of a Python module of your own (not gradlab's, nor installed library
    code, nor a built-in one), or None."""
    if not isinstance(value, types.ModuleType) or value.__name__.split(".")[0] == "gradlab":
        return None
    where = getattr(value, "__file__", None)
    return None if not isinstance(where, str) or where.startswith(_LIBRARIES) else vars(value)


def _global_places(fn):
    """(namespace, name) pairs that ``fn`` reads as globals, a module of your own's
    attributes (``config.BETA``) included."""
    glob = fn.__globals__
    names, pairs = _globals_read(fn.__code__)
    places = [(glob, n) for n in names if n in glob]
    for n, attr in pairs:
        d = _own_module_dict(glob.get(n))
        if d is not None and attr in d:
            places.append((d, attr))
    return places


def _own_callable(value):
    """A function, method or callable object defined outside gradlab (not a module, which
    is guarded as one, nor a class)."""
    if isinstance(value, (type, Module)) or not callable(value):
        return False
    if isinstance(value, (types.FunctionType, types.MethodType)):
        where = getattr(value, "__module__", None)
    else:
        where = type(value).__module__
    return isinstance(where, str) and not where.startswith(("gradlab.", "builtins"))


def _cell_value(cell):
    try:
        return cell.cell_contents
    except ValueError:  # a cell not assigned yet
        return _OTHER


def _read_values(cells, names, attrs):
    """The values in the places the step's code reads by name, as they are now."""
    values = [_cell_value(cell) for cell in cells]
    values += [glob.get(n, _OTHER) for glob, n in names]
    for d, keys in attrs:
        values += [d.get(k, _OTHER) for k in keys]
    return values


def _modules_read_by(loss_fn, modules):
    """The modules, beyond ``modules``, that ``loss_fn`` and the modules' own ``forward``
    code read by name (a ``CrossEntropyLoss`` in a loss lambda's closure, a module kept in
    a global, or in a dict of criteria there: ``_modules_in``), with their submodules, and
    those that these read in turn."""
    seen = {id(m) for m in modules}
    found = []
    while True:
        new = []
        places = _read_places(loss_fn, modules + found)
        values = _read_values(places.cells, places.names, places.attrs)
        # (and a module's attributes that the code names: self.layers = [nn.Linear(...)],
        # a plain list, not registered, so model.modules() leaves its modules out)
        values += [m.__dict__[k] for m in modules + found
                   for k in places.used.intersection(m.__dict__) if k not in _MODULE_OWN]
        for v in values:
            for held in _modules_in(v):
                for m in held.modules():
                    if id(m) not in seen:
                        seen.add(id(m))
                        new.append(m)
        if not new:
            return found
        found += new


def _modules_in(value, depth=3, budget=None):
    """The modules that ``value`` is or holds in a container or as a settings object's
    attribute (``{"ce": nn.CrossEntropyLoss()}``), ``depth`` levels deep. A container of
    over _CONTAINER_ITEMS * 4 entries is data, not looked into (its siblings are), and
    _CONTAINER_ITEMS * 64 entries in all are looked at, at most."""
    if type(value) in _SCALARS:
        return []
    try:
        if isinstance(value, Module):
            return [value]
        if depth == 0 or not isinstance(value, _CONTAINERS) and not _config_object(value):
            return []
        items = value.values() if isinstance(value, dict) else \
            vars(value).values() if not isinstance(value, _CONTAINERS) else value
        if budget is None:
            budget = [_CONTAINER_ITEMS * 64]
        if len(items) > _CONTAINER_ITEMS * 4 or budget[0] < len(items):
            return []
        budget[0] -= len(items)
        return [m for v in list(items) for m in _modules_in(v, depth - 1, budget)]
    except Exception:  # noqa: BLE001 - an odd object of the user's: holds no module we know
        return []


def _numbers_read_by(loss_fn, modules):
    """``numbers()``: what the step's own Python code reads outside its tensor arguments,
    as it is now (``_guarded``): the Python and NumPy numbers (and strings, bools, None,
    and containers of these), which a recording bakes in (``alpha * penalty`` records
    alpha's value), and the tensors, modules and functions read by name, which it holds; a
    change must record again. They are read where ``_read_places`` looks. (Modules' own
    settings are guarded with the modules, their containers of settings here too.) Values
    read elsewhere (two dots away, ``config.loss.BETA``) are not seen: ``reset()``."""
    places = _read_places(loss_fn, modules)
    cells, names, attrs = places[:3]
    if not cells and not names and not attrs:
        return tuple, places

    def numbers():
        return tuple([_guarded(v) for v in _read_values(cells, names, attrs)])
    return numbers, places


class _StepState:
    """The Python state that the step's own code could change as it runs, seen before the
    recording's forward pass (and, apart, before its backward), to tell afterwards whether
    the pass changed it: a replay runs no Python code, so it would not. Looked at: every
    attribute of the step's modules (a counter ``self._calls += 1``, an output kept as
    ``self._last = out``, a buffer rebound), the places ``_read_places`` finds (closure
    variables, globals read by name, a loss object's attributes, a module class's
    settings, mutable defaults and function attributes), and the random generators outside
    gradlab's ops: Python's and NumPy's global ones (another thread's draws from them count
    too), and any ``random.Random``, NumPy ``Generator`` or ``RandomState`` or
    ``gl.Generator`` found among those values (``random.random() < p`` in forward would
    repeat the recording's draw at every replay)."""

    __slots__ = ("_places", "_values", "_rngs", "_states", "_raw", "_restarts")

    def __init__(self, modules, loss_fn):
        cells, names, attrs = _read_places(loss_fn, modules)[:3]
        places = []  # (how a message names it, a zero-argument reader of its value now)
        for m in modules:
            d, kind = m.__dict__, type(m).__name__
            places.append((f"{kind}'s attributes", lambda d=d: tuple(d)))
            places += [(f"{kind}.{k}", lambda d=d, k=k: d.get(k, _OTHER)) for k in d]
            for group in ("_parameters", "_buffers", "_modules"):
                g = d[group]
                places += [(f"{kind}.{k}", lambda g=g, k=k: g.get(k, _OTHER)) for k in g]
        places += [("a variable in a closure of the step's code",
                    lambda c=c: _cell_value(c)) for c in cells]
        places += [(f"the global {n!r}", lambda g=g, n=n: g.get(n, _OTHER)) for g, n in names]
        for d, _ in attrs:
            places += [(k if type(k) is str and k.startswith(_DEFAULT) else
                        f"attribute {k!r} of the loss, a function or a module class",
                        lambda d=d, k=k: d.get(k, _OTHER)) for k in list(d)]
        self._places = places
        now = [read() for _, read in places]
        self._values = [_snapshot(v) for v in now]
        # (A dict or list of generators too. SystemRandom has no state: it cannot repeat a
        # draw, nor be replayed wrongly.)
        now += [v for c in now if isinstance(c, _CONTAINERS)
                for v in (c.values() if isinstance(c, dict) else c)]
        rngs = {id(r): r for r in now if isinstance(r, _RNG_TYPES)
                and not isinstance(r, random.SystemRandom)}
        # The global generators are every thread's: another Python thread's draws (a
        # loader's noise) look like the step's. Not told apart: a step that does draw from
        # them must not replay, and such a loader is better off with a generator of its own.
        rngs[id(random)] = random  # (the module stands for its global generator)
        rngs[id(np.random)] = np.random
        self._rngs = list(rngs.values())
        self._states = [_rng_state(r) for r in self._rngs]
        self._raw = [r.get_state() if isinstance(r, Generator) else None for r in self._rngs]
        self._restarts = random_restarts()

    def reseeded(self):
        """Whether a gradlab random stream restarted since ``__init__`` (``gl.manual_seed``,
        a Generator's ``manual_seed`` or ``set_state``), which a replay would not do."""
        return random_restarts() != self._restarts

    def changed(self, drawn_by_ops=None):
        """Why a replay could not repeat the pass since ``__init__``, or None.
        ``drawn_by_ops``: {id of a gl.Generator: [(backend, Draw kwargs)]}, the draws that
        the pass's ops made from it (``gl.rand(..., generator=g)``), which a replay makes
        again: such a generator must stand where those draws alone would have left it."""
        for (where, read), before in zip(self._places, self._values):
            now = _snapshot(read())
            if now is not before and not (type(now) is type(before) and (
                    _setting(now) or type(now) in (_Frozen, _Entries)) and now == before):
                return (f"the step's Python code changes {where} as it runs (a counter, a "
                        f"value kept for later, a lazy set-up done at every call); a replay "
                        f"runs no Python code and would not. Keep such state in a tensor "
                        f"updated in place, or change it outside the step")
        for r, before, raw in zip(self._rngs, self._states, self._raw):
            if raw is not None and drawn_by_ops and id(r) in drawn_by_ops:
                before = _after_draws(raw, drawn_by_ops[id(r)])
            if _rng_state(r) != before:
                name = "gl.Generator, in Python" if isinstance(r, Generator) else \
                    getattr(r, "__name__", None) or type(r).__name__
                threads = ""
                if r in (random, np.random) and threading.active_count() > 1:
                    threads = (f" (or another thread drew from {name}'s global generator "
                               f"meanwhile: give that thread a generator of its own, "
                               f"np.random.default_rng())")
                return (f"the step draws from a random generator outside gradlab's ops "
                        f"({name}){threads}; a replay would repeat the recording's draws. "
                        f"Draw with gradlab's ops (gl.rand, dropout, generator= too), whose "
                        f"streams a replay advances")
        return None


_RNG_TYPES = (random.Random, np.random.Generator, np.random.RandomState, Generator)

# A NumPy array the step reads is compared by its contents up to this size (two copies per
# recording), by identity beyond.
_ARRAY_CONTENTS = 1 << 24


def _snapshot(value):
    """A value as _StepState compares it: a setting by value (as _Frozen, where it is not a
    scalar that compares as it is: np.int64(4) assigned anew is no change, nor an entry of
    a dict that is the same), another container with its entries by identity (a tensor
    appended to a list of activations, a key added to a defaultdict), a NumPy array by its
    contents (``self.calls += 1`` on one changes it in place), an ``itertools.count`` by
    where it stands, anything else by identity."""
    if type(value) is np.ndarray and value.nbytes <= _ARRAY_CONTENTS:
        return _Frozen((np.ndarray, value.dtype.str, value.shape, value.tobytes()))
    v = _setting_value(value)
    if v is _OTHER:
        if isinstance(value, _CONTAINERS):
            return _Entries(value)
        if type(value) is itertools.count:
            return _Frozen((itertools.count, repr(value)))
        return value
    if v is value:
        return value
    return v if type(v) is _Frozen else _Frozen((v,))


class _Entries:
    """A container's entries at one moment, compared by identity (``==`` on a tensor
    entry would be elementwise)."""

    __slots__ = ("kind", "keys", "items")

    def __init__(self, container):
        self.kind = type(container)
        mapping = isinstance(container, dict)
        self.keys = tuple(container) if mapping else len(container)
        self.items = list(container.values() if mapping else container)

    def __eq__(self, other):
        return (type(other) is _Entries and self.kind is other.kind and
                self.keys == other.keys and len(self.items) == len(other.items) and
                all(a is b for a, b in zip(self.items, other.items)))

    __hash__ = None


def _after_draws(state, draws):
    """The comparable state of a gl.Generator that was at ``state`` once ``draws`` ((backend,
    Draw kwargs) pairs) are made from it, computed on a copy."""
    copy = np.random.Generator(np.random.PCG64())
    copy.bit_generator.state = state
    for backend, kw in draws:
        backend.draw(kw["kind"], kw["size"], kw["dtype"], copy, kw.get("low", 0),
                     kw.get("high"))
    return _comparable(copy.bit_generator.state)


def _rng_state(rng):
    """A random generator's state as a comparable value."""
    if rng is random or isinstance(rng, random.Random):
        return rng.getstate()
    if rng is np.random or isinstance(rng, np.random.RandomState):
        return _comparable(rng.get_state(legacy=False))
    if isinstance(rng, Generator):
        return _comparable(rng.get_state())
    return _comparable(rng.bit_generator.state)


def _comparable(state):
    """A NumPy bit generator's state (a dict of numbers and arrays) as a tuple."""
    if isinstance(state, dict):
        return tuple((k, _comparable(v)) for k, v in state.items())
    if isinstance(state, np.ndarray):
        return (state.dtype.str, state.tobytes())
    return state


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
