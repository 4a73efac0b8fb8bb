"""Callbacks: hooks that ``fit`` calls around epochs and batches.

Under a distributed ``fit`` every rank runs every callback with the same (global) logs, and
the callbacks that write files (ModelCheckpoint, CSVLogger, TensorBoard) write them on
rank 0 only (``run.main_process``).

A callback sees the run through ``self.run`` (set before ``on_train_begin``), which holds
``model``, ``optimizer``, ``scheduler``, ``history``, ``epoch`` and ``stop_training``;
setting ``run.stop_training = True`` ends training after the current epoch. Callbacks
with state (best value so far, patience counter) expose ``state_dict``/``load_state_dict``
so that a checkpointed run can resume them.
"""
from __future__ import annotations

import csv
import errno
import math
import os

from .history import resolve_mode


class Callback:
    """Base class: override the hooks you need. ``logs`` is the epoch's record (``loss``,
    ``val_loss``, ``accuracy``, ``lr``, ...)."""

    run = None

    def set_run(self, run):
        self.run = run

    def on_train_begin(self):
        pass

    def on_epoch_begin(self, epoch):
        pass

    def on_batch_end(self, batch, loss):
        pass

    def on_epoch_end(self, epoch, logs):
        pass

    def on_train_end(self):
        pass

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def writes_files(callback):
    """False on ranks > 0 of a distributed run (``run.main_process``): only rank 0 writes."""
    return getattr(callback.run, "main_process", True)


def _monitored(callback, logs, monitor):
    if monitor not in logs:
        have = ", ".join(k for k in logs if k not in ("epoch", "time"))
        hint = " (pass val_loader to fit to get val_* values)" if monitor.startswith("val_") \
            else ""
        raise KeyError(f"{type(callback).__name__} monitors {monitor!r}, which fit does not "
                       f"record; available: {have}{hint}")
    return logs[monitor]


class _Improvement:
    """Tracks the best value of a monitored quantity with a min_delta threshold."""

    def __init__(self, monitor, mode, min_delta=0.0):
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta}")
        self.monitor = monitor
        self.mode = resolve_mode(monitor, mode)
        self.min_delta = float(min_delta)
        self.best = None

    def improved(self, value):
        if value is None or not math.isfinite(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


def snapshot_state(model):
    """A detached copy of ``model.state_dict()`` (tensors copied, other values as they are)."""
    out = {}
    for k, v in model.state_dict().items():
        out[k] = v.detach().clone() if hasattr(v, "detach") else v
    return out


class EarlyStopping(Callback):
    """Stop once ``monitor`` has gone ``patience`` epochs in a row without improving by more
    than ``min_delta``. With ``restore_best_weights`` the model ends with the weights of its
    best epoch. ``mode`` 'auto' minimizes losses and maximizes accuracies."""

    def __init__(self, monitor="val_loss", mode="auto", patience=5, min_delta=0.0,
                 restore_best_weights=True):
        if int(patience) != patience or patience < 0:
            raise ValueError(f"patience must be a non-negative integer, got {patience!r}")
        self.tracker = _Improvement(monitor, mode, min_delta)
        self.monitor = monitor
        self.patience = int(patience)
        self.restore_best_weights = restore_best_weights
        self.wait = 0
        self.best_epoch = None
        self.best_weights = None
        self.stopped_epoch = None

    def on_train_begin(self):
        self.wait = 0

    def on_epoch_end(self, epoch, logs):
        value = _monitored(self, logs, self.monitor)
        if self.tracker.improved(value):
            self.tracker.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = snapshot_state(self.run.model)
            return
        self.wait += 1
        if self.wait >= self.patience:  # Keras' rule: `patience` epochs without improvement
            self.stopped_epoch = epoch
            self.run.stop_training = True
            self.run.stop_reason = (f"early stopping at epoch {epoch}: {self.monitor} did not "
                                    f"improve for {self.wait} epochs (best "
                                    f"{self.tracker.best:.6g} at epoch {self.best_epoch})")

    def on_train_end(self):
        if self.restore_best_weights and self.best_weights is not None and \
                self.best_epoch != self.run.epoch:
            self.run.model.load_state_dict(self.best_weights)

    def state_dict(self):
        # The best weights travel too: a resumed run must still be able to restore them.
        return {"best": self.tracker.best, "wait": self.wait, "best_epoch": self.best_epoch,
                "best_weights": self.best_weights, "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state):
        self.tracker.best, self.wait = state["best"], state["wait"]
        self.best_epoch = state["best_epoch"]
        self.best_weights = state.get("best_weights")
        self.stopped_epoch = state.get("stopped_epoch")


def _file_target(who, path, example):
    """A file path a callback will write to, checked before any training time is spent."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, f"{who}: {path!r} is a directory; give a file "
                                f"path inside it, e.g. {os.path.join(path, example)!r}")
    return path


class ModelCheckpoint(Callback):
    """Save the model with ``gl.save`` (atomic: a crash mid-write leaves the previous file
    intact) after each epoch, or only when ``monitor`` improves (``save_best_only``).

    ``filepath`` may contain ``{epoch}``. With ``save_weights_only=False`` the file holds
    ``{"model": ..., "optimizer": ..., "epoch": ...}`` instead of the bare state dict.
    """

    def __init__(self, filepath, monitor="val_loss", mode="auto", save_best_only=True,
                 save_weights_only=True):
        self.filepath = _file_target("ModelCheckpoint", filepath, "model.gl")
        self.tracker = _Improvement(monitor, mode)
        self.monitor = monitor
        self.save_best_only = save_best_only
        self.save_weights_only = save_weights_only
        self.best_epoch = None
        self.last_path = None

    def on_epoch_end(self, epoch, logs):
        if self.save_best_only:
            value = _monitored(self, logs, self.monitor)
            if not self.tracker.improved(value):
                return
            self.tracker.best, self.best_epoch = value, epoch
        self.save(epoch)

    def save(self, epoch):
        from .. import save
        if not writes_files(self):
            return
        path = self.filepath.format(epoch=epoch)
        if self.save_weights_only:
            state = self.run.model.state_dict()
        else:
            state = {"model": self.run.model.state_dict(),
                     "optimizer": self.run.optimizer.state_dict(), "epoch": epoch}
        save(state, path)
        self.last_path = path

    def state_dict(self):
        return {"best": self.tracker.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state):
        self.tracker.best, self.best_epoch = state["best"], state["best_epoch"]


class CSVLogger(Callback):
    """Append each epoch's record to a CSV file (header from the first epoch's keys),
    flushed every epoch so a crashed run still leaves its history."""

    def __init__(self, filename, append=False):
        self.filename = _file_target("CSVLogger", filename, "history.csv")
        self.append = append
        self._keys = None

    def on_train_begin(self):
        self._keys = None
        if not writes_files(self):
            return
        if self.append and os.path.exists(self.filename) and os.path.getsize(self.filename):
            with open(self.filename, newline="") as f:
                self._keys = next(csv.reader(f), None)
        elif not self.append:
            open(self.filename, "w").close()

    def on_epoch_end(self, epoch, logs):
        if not writes_files(self):
            return
        with open(self.filename, "a", newline="") as f:
            if self._keys is None:
                self._keys = list(logs)
                csv.writer(f).writerow(self._keys)
            csv.writer(f).writerow([logs.get(k, "") for k in self._keys])


_PER_BATCH = ("OneCycleLR", "CyclicLR")


def is_plateau_scheduler(scheduler):
    return type(scheduler).__name__ == "ReduceLROnPlateau"


class LRSchedulerCallback(Callback):
    """Step an LR scheduler: ReduceLROnPlateau once per epoch with the value of ``monitor``;
    OneCycleLR and CyclicLR after every batch; every other scheduler once per epoch.
    ``interval`` ('auto', 'epoch' or 'batch') overrides the choice."""

    def __init__(self, scheduler, monitor="val_loss", interval="auto"):
        if interval not in ("auto", "epoch", "batch"):
            raise ValueError(f"interval must be 'auto', 'epoch' or 'batch', got {interval!r}")
        if interval == "auto":
            interval = "batch" if type(scheduler).__name__ in _PER_BATCH else "epoch"
        self.scheduler = scheduler
        self.monitor = monitor
        self.interval = interval

    def on_batch_end(self, batch, loss):
        if self.interval == "batch":
            self.scheduler.step()

    def on_epoch_end(self, epoch, logs):
        if self.interval != "epoch":
            return
        if is_plateau_scheduler(self.scheduler):
            monitor = self.monitor if self.monitor in logs else "loss"
            self.scheduler.step(_monitored(self, logs, monitor))
        else:
            self.scheduler.step()

    def state_dict(self):
        return self.scheduler.state_dict() if hasattr(self.scheduler, "state_dict") else {}

    def load_state_dict(self, state):
        if state and hasattr(self.scheduler, "load_state_dict"):
            self.scheduler.load_state_dict(state)
