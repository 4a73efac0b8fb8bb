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
advances at every replay). Results are bitwise those of the eager step.

A recording belongs to one *signature*: input shapes and dtypes, train/eval mode of every
module, and grad mode. Another signature (the short last batch of an epoch, an
``eval()``) records again. Changing the model's structure (a parameter or buffer replaced
or added, a module's scalar setting such as ``Dropout.p``), or the optimizer's parameter
groups, drops every recording. A step that a replay cannot repeat (see the tape's
docstring), or more than ``max_recordings`` signatures, runs eagerly with one warning
saying why.
"""
from __future__ import annotations

import time
import warnings

from ..autograd.grad_mode import _state
from ..autograd.tape import Recording, recording
from ..autograd.tensor import Tensor, structure_version
from ..nn.module import Module
from ..nn.utils import clip_grad_norm_, clip_grad_value_

_SCALARS = (bool, int, float, str, type(None))


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

    __slots__ = ("first", "replay", "out_slot", "loss_slots", "tuple_loss", "eager_reason")

    def __init__(self):
        self.first = self.replay = self.eager_reason = None
        self.out_slot = self.loss_slots = None
        self.tuple_loss = False


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
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.clip_grad_norm, self.clip_grad_value = clip_grad_norm, clip_grad_value
        self.max_recordings = int(max_recordings)
        self._entries = {}
        self._world = None
        self._shallow = None      # the cheap part of the guards, checked at every call
        self._modules_now = None
        self._pending = None
        self._recording = None
        self._warned = set()
        self.counts = {"eager": 0, "recorded": 0, "replayed": 0, "rerecorded": 0}
        self.record_seconds = 0.0

    # -- the step ------------------------------------------------------------------------
    def __call__(self, x, y):
        _, loss = self.forward(x, y)
        self.backward_step()
        return loss[0] if isinstance(loss, tuple) else loss

    def forward(self, x, y):
        """Forward pass and loss: returns ``(output, loss)`` as Tensors (``loss`` is what
        ``loss_fn`` returned). Call ``backward_step()`` next."""
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
        if kind == "replay":
            entry.replay.run_backward(payload)
            self.counts["replayed"] += 1
        else:
            self.optimizer.zero_grad()
            objective = payload[0] if isinstance(payload, tuple) else payload
            if kind == "record":
                rec = self._recording
                self._recording = None
                with recording(rec, "backward"):
                    objective.backward()
                self._finish_recording(entry, rec)
            else:
                objective.backward()
                self.counts["eager"] += 1
        if self.clip_grad_norm is not None:
            clip_grad_norm_(self._params(), self.clip_grad_norm)
        elif self.clip_grad_value is not None:
            clip_grad_value_(self._params(), self.clip_grad_value)
        self.optimizer.step()

    def discard(self):
        """Forget the batch that ``forward`` saw without training on it (``fit`` does this
        for a non-finite loss); a recording in progress is dropped."""
        self._pending = None
        self._recording = None

    def info(self):
        """How the step has run: counts of eager, recording and replayed calls, the
        signatures recorded, the seconds spent recording, the bytes a replay keeps between
        calls, and why any signature runs eagerly."""
        held = sum(e.replay.held_bytes() for e in self._entries.values()
                   if e.replay is not None)
        return {**self.counts, "signatures": len(self._entries),
                "record_seconds": self.record_seconds, "held_bytes": held,
                "eager_reasons": sorted({e.eager_reason for e in self._entries.values()
                                         if e.eager_reason})}

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
        with recording(rec, "forward"):
            out = self.model(x)
            loss = self.loss_fn(out, y)
        losses = loss if isinstance(loss, tuple) else (loss,)
        if not isinstance(out, Tensor) or not all(isinstance(t, Tensor) for t in losses):
            rec.fail("the model or the loss function returned something other than Tensors")
        else:
            rec.out_tensors = (out,) + losses  # their slots, once the pass is over
        rec.tuple_loss = isinstance(loss, tuple)
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
            differs = entry.first.same_as(rec, rec.xp)
            entry.first = None
            if differs is not None:
                return self._give_up(entry, differs)
            entry.replay = rec.plan()
            entry.out_slot, entry.loss_slots = slots[0], slots[1:]
            entry.tuple_loss = rec.tuple_loss
        self.record_seconds += time.perf_counter() - started

    def _replay_forward(self, entry, x, y):
        vals = entry.replay.run_forward((x._data, y._data))
        be = x._backend
        out = Tensor._wrap(vals[entry.out_slot], be)
        losses = tuple(Tensor._wrap(vals[s], be) for s in entry.loss_slots)
        loss = losses if entry.tuple_loss else losses[0]
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
        if isinstance(self.loss_fn, Module):
            mods += list(self.loss_fn.modules())
        return mods

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
        """What, if it changes, makes every recording stale."""
        sig = []
        for m in modules:
            d = m.__dict__
            for kind in ("_parameters", "_buffers", "_modules"):
                items = d[kind]
                sig.append(tuple(items))
                sig.append(tuple(map(id, items.values())))
            sig.append(tuple((k, v) for k, v in d.items()
                             if k[0] != "_" and k != "training" and type(v) in _SCALARS))
        for t in self._known():
            sig.append(None if t is None else id(t._data))
        sig.append(tuple(tuple(map(id, g["params"])) for g in self.optimizer.param_groups))
        return tuple(sig)

    def _entry(self, x, y):
        groups = self.optimizer.param_groups
        shallow = (structure_version[0], len(groups),
                   tuple((id(g["params"]), len(g["params"])) for g in groups))
        if shallow != self._shallow:
            # Something may have changed: compare everything the recordings depend on.
            self._modules_now = self._modules()
            world = self._world_signature(self._modules_now)
            if world != self._world:
                if self._world is not None and self._entries:
                    self.counts["rerecorded"] += 1
                self._entries.clear()
                self._world = world
            self._shallow = shallow
        modules = self._modules_now
        key = (x.shape, x._data.dtype, y.shape, y._data.dtype, x._backend,
               tuple(m.training for m in modules), _state.enabled)
        entry = self._entries.get(key)
        if entry is None:
            entry = _Entry()
            if len(self._entries) >= self.max_recordings:
                self._give_up(entry, f"more than {self.max_recordings} input signatures "
                                     "(shapes, dtypes, train/eval modes); raise "
                                     "max_recordings if that is expected")
            elif not _state.enabled:
                entry.eager_reason = "grad mode is off"
            self._entries[key] = entry
        return entry
