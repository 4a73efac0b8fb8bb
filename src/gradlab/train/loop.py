"""The training loop: ``fit``, ``evaluate`` and ``predict``."""
from __future__ import annotations

import math
import sys
import time

import numpy as np

from ..autograd import no_grad
from ..backend import get_backend
from . import checkpoint as ckpt
from .callbacks import Callback, LRSchedulerCallback
from .history import History
from .metrics import resolve_metrics


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or Inf; ``epoch`` and ``batch`` (both 1-based) say where, and
    ``history`` holds the epochs completed before it."""

    def __init__(self, message, epoch, batch, history=None):
        super().__init__(message)
        self.epoch, self.batch, self.history = epoch, batch, history


class Run:
    """What callbacks see of a training run in progress."""

    def __init__(self, model, optimizer, scheduler, history, device, epochs):
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.history = history
        self.device = device
        self.epochs = epochs
        self.epoch = 0        # the current (1-based) epoch, or the last finished one
        self.step = 0         # optimizer steps taken in this run
        self.stop_training = False
        self.stop_reason = None
        self.main_process = True  # False on ranks > 0 of a distributed run: they write nothing


def _to_device(t, device):
    return t if device is None or t.device == device else t.to(device)


def _lr(optimizer):
    groups = getattr(optimizer, "param_groups", None)
    return float(groups[0]["lr"]) if groups else None


def _progress(total, desc, verbose):
    """A tqdm bar on a terminal; None when quiet (verbose=0, output not a TTY, no tqdm)."""
    if verbose < 1 or not sys.stderr.isatty():
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, leave=False, unit="batch", file=sys.stderr)


def _check_loader(name, loader):
    """A DataLoader (or any sized iterable of batches), not the raw (X, y) arrays."""
    if isinstance(loader, tuple) and loader and all(hasattr(a, "shape") for a in loader):
        raise TypeError(f"fit: {name} is a tuple of {len(loader)} arrays, not a loader; wrap "
                        "them as gl.data.DataLoader(gl.data.TensorDataset(X, y), "
                        "batch_size=...)")
    if not hasattr(loader, "__len__") or not hasattr(loader, "__iter__"):
        raise TypeError(f"fit: {name} must be a gl.data.DataLoader (a sized iterable of "
                        f"batches), got {type(loader).__name__}")


def _l1_penalty(model):
    # Weights only (ndim >= 2), not biases or normalization parameters, as usual for L1/L2.
    terms = [p.abs().sum() for p in model.parameters() if p.ndim >= 2]
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


def evaluate(model, loss_fn, loader, metrics=("accuracy",), device=None):
    """Mean loss and metrics of ``model`` over ``loader`` in eval mode without gradients.
    Returns ``{"loss": ..., "<metric>": ...}`` (weighted by batch size)."""
    fns = resolve_metrics(metrics)
    device = get_backend(device).device if device is not None else None
    was_training = getattr(model, "training", False)
    model.eval()
    totals = {"loss": 0.0, **{name: 0.0 for name, _ in fns}}
    count = 0
    try:
        with no_grad():
            for batch in loader:
                x, y = (_to_device(t, device) for t in batch[:2])
                out = model(x)
                n = len(x)
                totals["loss"] += loss_fn(out, y).item() * n
                for name, fn in fns:
                    totals[name] += fn(out, y) * n
                count += n
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("evaluate: the loader yielded no samples")
    return {k: v / count for k, v in totals.items()}


def predict(model, x, batch_size=1024):
    """Model outputs for the rows of tensor ``x`` in eval mode, batch by batch."""
    was_training = getattr(model, "training", False)
    model.eval()
    outs = []
    try:
        with no_grad():
            for start in range(0, len(x), batch_size):
                outs.append(model(x[start:start + batch_size]))
    finally:
        model.train(was_training)
    if not outs:  # no rows: the model's output for the empty batch, e.g. shape (0, C)
        with no_grad():
            model.eval()
            try:
                return model(x)
            finally:
                model.train(was_training)
    from ..functional import cat
    return cat(outs) if len(outs) > 1 else outs[0]


def fit(model, loss_fn, optimizer, train_loader, val_loader=None, epochs=10, scheduler=None,
        callbacks=(), metrics=("accuracy",), device=None, verbose=1, *, l1=0.0,
        on_nonfinite="raise", monitor=None, checkpoint_dir=None, checkpoint_every=None,
        resume=False, compile=False):
    """Train ``model`` for ``epochs`` passes over ``train_loader``; returns a ``History``.

    Each batch: ``out = model(x)``, ``loss = loss_fn(out, y)`` (+ ``l1`` * sum |w| over weight
    matrices), ``zero_grad``, ``backward``, ``step``. After each epoch the model is evaluated
    on ``val_loader`` (if any), and the record (``loss``, metrics, ``val_loss``,
    ``val_<metric>``, ``lr``, ``time``) goes to the History and to the callbacks.

    - ``scheduler``: stepped per epoch (ReduceLROnPlateau with the ``monitor`` value,
      default ``val_loss`` or ``loss`` without validation data), or per batch for
      OneCycleLR/CyclicLR; see ``LRSchedulerCallback``.
    - ``device``: where the model and batches go (None: leave both where they are).
    - ``verbose``: 0 silent; 1 a tqdm progress bar when stderr is a terminal; 2 also one
      summary line per epoch whatever the output is.
    - ``on_nonfinite``: a NaN/Inf loss stops training BEFORE the bad step touches the
      weights. 'raise' raises NonFiniteLossError naming epoch and batch; 'stop' ends
      training and records the reason in ``history.stop_reason``; 'skip_batch' drops that
      batch and goes on (an epoch that drops every batch ends training, with the reason).
      Callbacks' ``on_train_end`` runs in every case, so checkpoints already written stay
      the last good ones.
    - ``checkpoint_dir``/``checkpoint_every``: every ``checkpoint_every`` optimizer steps
      (and once at the end) write a crash-safe checkpoint (see ``gl.train.checkpoint``)
      with the model, optimizer, callbacks (scheduler included), History, epoch, batch,
      the loader's shuffling state and every RNG state. ``resume=True`` continues from the
      newest usable checkpoint there, mid-epoch included, so that a killed and resumed run
      ends with the same weights, bit for bit on the CPU, as one never interrupted. Build
      the model, optimizer, scheduler, loaders and callbacks exactly as for the first run.
    - ``compile``: train with a compiled step (``gl.train.compile_step``): each batch shape
      is recorded in two eager steps, then replayed without building graphs (as a CUDA
      graph on a GPU). The weights and the History are the same as eager training, bit for
      bit on the CPU. Off by default: recording costs two eager steps per batch shape, and
      a model it cannot replay runs eagerly with a warning.
    - Distributed (``model`` a ``gl.distributed.DistributedDataParallel`` on an initialized
      process group): gradients are averaged over the ranks before each step, the epoch's
      train loss and metrics are summed over the ranks (so every rank logs the global
      values), BatchNorm running statistics are averaged at the end of each epoch, a
      non-finite loss on any rank is handled alike on all, and rank 0's stop decision
      (early stopping, a callback) is broadcast. Only rank 0 writes checkpoints, logs and
      files; resume reads the same checkpoint on every rank. ``fit`` calls the train
      loader's ``sampler.set_epoch(epoch - 1)`` (a DistributedSampler) before each epoch.
    """
    if int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if on_nonfinite not in ("raise", "stop", "skip_batch"):
        raise ValueError(f"on_nonfinite must be 'raise', 'stop' or 'skip_batch', got "
                         f"{on_nonfinite!r}")
    if l1 < 0:
        raise ValueError(f"l1 must be >= 0, got {l1}")
    if l1 and not any(p.ndim >= 2 for p in model.parameters()):
        raise ValueError(f"fit: l1={l1} penalizes the weight matrices (parameters of 2 or "
                         "more dims), and this model has none; pass l1=0, or add the "
                         "penalty you want to loss_fn")
    if checkpoint_every is not None and (int(checkpoint_every) != checkpoint_every
                                         or checkpoint_every < 1):
        raise ValueError(f"checkpoint_every must be a positive integer (steps), got "
                         f"{checkpoint_every!r}")
    if (checkpoint_every is not None or resume) and checkpoint_dir is None:
        raise ValueError("checkpoint_every and resume need checkpoint_dir")
    if not isinstance(compile, (bool, np.bool_)):  # (compile="no" would compile)
        raise TypeError(f"fit: compile must be True or False, got {compile!r}")
    _check_loader("train_loader", train_loader)
    if val_loader is not None:
        _check_loader("val_loader", val_loader)
    if len(train_loader) == 0:
        raise ValueError("train_loader yields no batches (is drop_last=True with a "
                         "batch_size larger than the dataset?)")
    if device is not None:
        device = get_backend(device).device  # raises the core's clear error if unavailable
        if hasattr(model, "to"):
            model.to(device)
    fns = resolve_metrics(metrics)
    dist = _process_group(model)
    if dist is not None and compile:
        raise ValueError("fit: compile=True is not supported for a DistributedDataParallel "
                         "model (the compiled step has no place for the gradient allreduce); "
                         "train it eagerly")
    monitor = monitor or ("val_loss" if val_loader is not None else "loss")
    callbacks = list(callbacks)
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks must be Callback instances, got {type(cb).__name__}")
    if scheduler is not None:
        bound = getattr(scheduler, "optimizer", optimizer)
        if bound is not optimizer:
            raise ValueError(f"fit: the scheduler ({type(scheduler).__name__}) was built on "
                             f"another optimizer ({type(bound).__name__}) than the one "
                             f"passed to fit ({type(optimizer).__name__}), so it would change "
                             "the learning rate of an optimizer that does not train; build "
                             "the scheduler on the optimizer you pass to fit")
        callbacks.append(LRSchedulerCallback(scheduler, monitor=monitor))

    step = None
    if compile:
        from .compiled import CompiledStep

        def objective_and_loss(out, y):
            loss = loss_fn(out, y)
            return (loss + l1 * _l1_penalty(model), loss) if l1 else loss
        step = CompiledStep(model, objective_and_loss, optimizer)

    history = History()
    run = Run(model, optimizer, scheduler, history, device, int(epochs))
    run.main_process = dist is None or dist.rank == 0
    for cb in callbacks:
        cb.set_run(run)
    for cb in callbacks:
        cb.on_train_begin()
    # Where a resumed run picks up: (epoch, batches of it already done, their totals).
    first_epoch, skip, carried, done = 1, 0, None, False
    if resume:
        first_epoch, skip, carried, done = _resume(checkpoint_dir, run, callbacks, train_loader)
        if dist is not None:
            _same_on_every_rank(dist, "resume: the checkpoint step", run.step)

    sampler = getattr(train_loader, "sampler", None)
    if not hasattr(sampler, "set_epoch"):
        sampler = None

    def save_checkpoint(epoch, batch, loader_state, totals, count, lr, finished):
        if not run.main_process:
            return
        ckpt.write(checkpoint_dir, {
            "epoch": epoch, "batch": batch, "step": run.step, "epochs": int(epochs),
            "finished": finished, "stop_reason": run.stop_reason,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "callbacks": [cb.state_dict() for cb in callbacks],
            "callback_types": [type(cb).__name__ for cb in callbacks],
            "history": history.state_dict(), "loader": loader_state,
            "totals": dict(totals), "count": count, "lr": lr, "rng": ckpt.rng_states()})

    try:
        for epoch in range(first_epoch, 1 if done else int(epochs) + 1):
            run.epoch = epoch
            if sampler is not None:
                sampler.set_epoch(epoch - 1)
            # The loader's generator before it draws this epoch's order: resuming replays
            # the order from it and skips the batches already trained on.
            loader_state = train_loader.state_dict() if checkpoint_dir is not None else None
            if epoch != first_epoch or not skip:
                for cb in callbacks:
                    cb.on_epoch_begin(epoch)
            start = time.perf_counter()
            lr = _lr(optimizer)
            model.train()
            totals = {"loss": 0.0, **{name: 0.0 for name, _ in fns}}
            count = 0
            if epoch == first_epoch and carried is not None:
                totals, count, lr = carried
            bar = _progress(len(train_loader), f"epoch {epoch}/{epochs}",
                            verbose if run.main_process else 0)
            for b, batch in enumerate(train_loader, 1):
                if epoch == first_epoch and b <= skip:
                    # Drawn (so transforms consume the same random numbers) but not trained.
                    continue
                x, y = (_to_device(t, device) for t in batch[:2])
                if x.ndim and x.shape[0] == 0:
                    raise ValueError(f"fit: batch {b} of epoch {epoch} is empty (inputs of "
                                     f"shape {tuple(x.shape)}); its mean loss is undefined: "
                                     "make the loader yield only non-empty batches")
                if x.ndim and x.shape[0] == 1 and _has_batchnorm(model):
                    raise ValueError(
                        f"fit: batch {b} of epoch {epoch} holds 1 row and the model has "
                        "BatchNorm, which cannot compute batch statistics from one row in "
                        "training mode; build the train loader with drop_last=True (as "
                        "PyTorch users do), or choose a batch_size that does not leave a "
                        "last batch of 1 row")
                if step is not None:
                    out, loss = step.forward(x, y)
                    objective, loss = loss if l1 else (loss, loss)
                else:
                    out = model(x)
                    loss = loss_fn(out, y)
                    objective = loss + l1 * _l1_penalty(model) if l1 else loss
                value = loss.item()
                finite = math.isfinite(value) and not (l1 and not math.isfinite(objective.item()))
                if dist is not None:
                    finite = _on_every_rank(dist, finite)
                if not finite:
                    bad = value if not math.isfinite(value) else objective.item()
                    if dist is not None and math.isfinite(bad):
                        bad = "non-finite on another rank"
                    msg = (f"loss is {bad} at epoch {epoch}, batch {b}; the weights were not "
                           "updated with it (try a lower learning rate, gradient clipping, "
                           "or check the data for NaN/Inf)")
                    if step is not None:
                        step.discard()
                    if on_nonfinite == "skip_batch":
                        optimizer.zero_grad()
                        continue
                    run.stop_reason = msg
                    if on_nonfinite == "raise":
                        raise NonFiniteLossError(msg, epoch, b, history)
                    run.stop_training = True
                    break
                if step is not None:
                    step.backward_step()
                else:
                    optimizer.zero_grad()
                    objective.backward()
                    if dist is not None:
                        model.sync_gradients()  # one allreduce per bucket
                    optimizer.step()
                run.step += 1
                n = len(x)
                totals["loss"] += value * n
                for name, fn in fns:
                    totals[name] += fn(out, y) * n
                count += n
                for cb in callbacks:
                    cb.on_batch_end(b, value)
                if checkpoint_every and run.step % checkpoint_every == 0:
                    save_checkpoint(epoch, b, loader_state, totals, count, lr, False)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{totals['loss'] / count:.4f}", refresh=False)
            if bar is not None:
                bar.close()
            if dist is not None:
                totals, count = _sum_over_ranks(dist, totals, count)
                model.sync_buffers()  # BatchNorm running statistics: the ranks' mean
            if count == 0:  # a non-finite loss stopped, or skipped, the epoch before any step
                if run.stop_reason is None:
                    # Skipping on would only repeat it: the weights no longer change.
                    run.stop_reason = (f"every batch of epoch {epoch} had a non-finite loss "
                                       "and was skipped (on_nonfinite='skip_batch'); "
                                       "training stopped")
                break
            logs = {"epoch": epoch, **{k: v / count for k, v in totals.items()}}
            if val_loader is not None:
                val = evaluate(model, loss_fn, val_loader, fns, device)
                logs.update({f"val_{k}": v for k, v in val.items()})
            logs["lr"] = lr
            logs["time"] = time.perf_counter() - start
            history.append(logs)
            for cb in callbacks:
                cb.on_epoch_end(epoch, logs)
            if dist is not None:  # every rank stops where rank 0 decides to
                run.stop_training, run.stop_reason = dist.mpi.broadcast_object(
                    (run.stop_training, run.stop_reason))
            if run.main_process and (verbose >= 2 or (verbose == 1 and sys.stderr.isatty())):
                print(_summary(logs, epochs), file=sys.stderr if verbose == 1 else sys.stdout,
                      flush=True)
            if run.stop_training:
                break
        if checkpoint_dir is not None and not done:
            save_checkpoint(run.epoch, len(train_loader), train_loader.state_dict(), {}, 0,
                            _lr(optimizer), True)
    finally:
        history.stop_reason = run.stop_reason
        if step is not None:
            history.compiled = step.info()
        for cb in callbacks:
            cb.on_train_end()
    return history


def _process_group(model):
    """The initialized process group when ``model`` is a DistributedDataParallel, else None."""
    if not hasattr(model, "sync_gradients"):
        return None
    from ..distributed.group import group
    return group(required=True)


def _on_every_rank(dist, flag):
    """True when ``flag`` is True on every rank."""
    import numpy as np
    return bool(dist.mpi.allreduce(np.array([0 if flag else 1], dtype=np.int64), "max")[0] == 0)


def _sum_over_ranks(dist, totals, count):
    import numpy as np
    keys = list(totals)
    flat = np.array([float(count)] + [float(totals[k]) for k in keys], dtype=np.float64)
    dist.mpi.allreduce(flat, "sum")
    return {k: float(v) for k, v in zip(keys, flat[1:])}, int(round(flat[0]))


def _same_on_every_rank(dist, what, value):
    values = dist.mpi.allgather_object(value)
    if any(v != values[0] for v in values):
        from ..distributed import DistributedError
        raise DistributedError(f"{what} differs between ranks: "
                               + ", ".join(f"rank {r}: {v!r}" for r, v in enumerate(values))
                               + "; every rank must read the same checkpoint directory")


def _has_batchnorm(model):
    from ..nn.layers import BatchNorm1d
    modules = model.modules() if hasattr(model, "modules") else []
    return any(isinstance(m, BatchNorm1d) and m.training for m in modules)


# Callback types under their earlier names, as checkpoints written before a rename record
# them: such a checkpoint still resumes.
_RENAMED_CALLBACKS = {"LRScheduler": "LRSchedulerCallback"}


def _resume(directory, run, callbacks, loader):
    """Load the newest usable checkpoint into the run's objects; returns
    (epoch to start at, batches of it to skip, (totals, count, lr) or None, finished)."""
    path, state = ckpt.latest(directory)
    types = [type(cb).__name__ for cb in callbacks]
    if [_RENAMED_CALLBACKS.get(t, t) for t in state["callback_types"]] != types:
        raise ckpt.CheckpointError(
            f"resume: {path} was written with callbacks {state['callback_types']} but this "
            f"run has {types}; pass the same callbacks (and scheduler) as the first run")
    if state["epochs"] > run.epochs:
        raise ckpt.CheckpointError(f"resume: {path} is from a run of {state['epochs']} "
                                   f"epochs, more than epochs={run.epochs}")
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    for cb, cb_state in zip(callbacks, state["callbacks"]):
        cb.load_state_dict(cb_state)
    run.history.load_state_dict(state["history"])
    run.step, run.epoch, run.stop_reason = state["step"], state["epoch"], state["stop_reason"]
    # A finished run given more epochs goes on from where it ended, as if it had been
    # asked for them from the start (unless it stopped early: that decision stands).
    extend = state["finished"] and run.epochs > state["epochs"] and not state["stop_reason"]
    if state["finished"] and not extend:
        return state["epoch"], 0, None, True
    loader.load_state_dict(state["loader"])
    ckpt.restore_rng(state["rng"])
    if extend:
        return state["epoch"] + 1, 0, None, False
    return state["epoch"], state["batch"], (state["totals"], state["count"], state["lr"]), False


def _summary(logs, epochs):
    parts = [f"epoch {logs['epoch']}/{epochs}"]
    for k, v in logs.items():
        if k in ("epoch",) or v is None:
            continue
        parts.append(f"{k} {v:.3g}s" if k == "time" else f"{k} {v:.4g}")
    return "  ".join(parts)
