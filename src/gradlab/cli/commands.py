"""The ``gradlab`` sub-commands. Each returns an exit code; bad input raises UsageError
(or a data/device error) which ``main`` prints without a traceback."""
from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

from .main import UsageError
from .model import ACTIVATIONS, OPTIMIZERS, SCHEDULES, build_trial, parse_hidden

CHECKPOINT = "best_model.gl"


# -- shared pieces ---------------------------------------------------------------------------
def _check_ranges(args):
    if args.epochs < 1:
        raise UsageError(f"--epochs must be >= 1, got {args.epochs}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not 0 <= args.seed < 2**32:
        raise UsageError(f"--seed must be an integer in [0, 2**32), got {args.seed}")
    if not 0.0 <= args.val_split < 1.0:
        raise UsageError(f"--val-split must be in [0, 1), got {args.val_split}")
    if not 0.0 < args.test_split < 1.0:
        raise UsageError(f"--test-split must be in (0, 1), got {args.test_split}")
    if not 0.0 <= args.dropout < 1.0:
        raise UsageError(f"--dropout must be in [0, 1), got {args.dropout}")
    if not (math.isfinite(args.lr) and args.lr > 0):  # (NaN and inf too)
        raise UsageError(f"--lr must be a finite number > 0, got {args.lr}")
    for name in ("momentum", "weight_decay", "l1", "early_stopping"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value >= 0):
            raise UsageError(f"--{name.replace('_', '-')} must be a finite number >= 0, got "
                             f"{value}")
    _delimiter(args.delimiter)
    parse_hidden(args.hidden)


def check_env():
    """Environment variables the backend reads: checked here so that a bad value is a
    usage error, also when gradlab was imported before the variable was set."""
    threads = os.environ.get("GRADLAB_NUM_THREADS")
    if threads:
        try:
            ok = int(threads) >= 1
        except ValueError:
            ok = False
        if not ok:
            raise UsageError(f"GRADLAB_NUM_THREADS={threads!r} is not a positive integer; "
                             "set it to the number of CPU threads to use (e.g. 2), or unset "
                             "it to use every core")


def check_writable(directory):
    """Create ``directory`` if needed and prove a file can be written there, before any
    training time is spent."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise UsageError(f"{directory!r} is an existing file, not a directory; give a path "
                         "in a directory you can write to")
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".gradlab-probe-"):
            pass
    except OSError as exc:
        raise UsageError(f"{directory!r} cannot be written: {exc.strerror or exc}; "
                         "choose a directory you can write to") from None


def _device(spec):
    from ..backend import get_backend
    env = os.environ.get("GRADLAB_DEVICE", "").strip()
    if spec == "auto" and env:
        spec, where = env, f"GRADLAB_DEVICE={env!r}"
    else:
        where = f"--device {spec!r}"
    if spec not in ("auto", "cpu") and not spec.startswith("cuda"):
        raise UsageError(f"{where}: unknown device {spec!r}; valid choices: auto, cpu, cuda, "
                         "cuda:N")
    try:
        return get_backend(spec).device  # DeviceUnavailableError says why CUDA is missing
    except ValueError as exc:
        raise UsageError(f"{where}: {exc}; valid choices: auto, cpu, cuda, cuda:N (N a "
                         "device number, e.g. cuda:0)") from None


def _label(text):
    try:
        return int(text)
    except ValueError:
        return text


def _delimiter(text):
    named = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "space": " "}
    value = named.get(text, text)
    if len(value) != 1 or value in "\r\n\"":
        raise UsageError(f"--delimiter {text!r} must be one character (e.g. ';'), or tab")
    return value


_MAX_CLASSES_PER_LABEL = 10  # more implied classes than this per distinct label: not 0..K-1


def _check_labels(y, spec):
    values = np.unique(y)
    top = int(values[-1])
    if top + 1 > max(1000, _MAX_CLASSES_PER_LABEL * values.size):
        raise UsageError(f"dataset {spec!r}: class labels go up to {top} but only "
                         f"{values.size} distinct labels occur, so the model would need "
                         f"{top + 1} outputs; classification needs labels 0..K-1: remap "
                         "them first (e.g. np.unique(y, return_inverse=True)[1])")


def _sizes_message(spec, args, n, train, val, test):
    hint = []
    if not test:
        hint.append("raise --test-split")
    if not val and args.val_split > 0:
        hint.append("lower --test-split or --val-split, or pass --val-split 0")
    if not train:
        hint.append("lower --test-split and --val-split")
    return (f"dataset {spec!r} ({n} rows) splits into {train} training, {val} validation and "
            f"{test} test rows with --test-split {args.test_split:g} --val-split "
            f"{args.val_split:g}; every part needs at least one row (at least 2 per class "
            f"for the test split): {', '.join(dict.fromkeys(hint))}, or use more data")


def load_splits(args):
    """Train/val/test arrays for the CLI options, the scaler fitted on the train part only.
    Returns a dict with X/y for each split, the dataset's size and class count, and the
    data's fingerprint."""
    from ..data import StandardScaler, load_dataset, stratified_indices
    from ..data.registry import BUILTIN, generator_params
    from . import rundir
    try:
        X, y, test = load_dataset(args.dataset, seed=args.seed, label=_label(args.label),
                                  delimiter=_delimiter(args.delimiter))
    except ValueError as exc:
        if "unknown dataset" in str(exc):
            raise UsageError(str(exc)) from None
        raise
    if X.ndim != 2 or X.shape[1] < 1:
        raise UsageError(f"dataset {args.dataset!r}: the features have shape {X.shape}; a "
                         "model needs at least one feature column")
    if np.unique(y).size < 2:
        raise UsageError(f"dataset {args.dataset!r} has a single class; classification needs "
                         "at least 2")
    _check_labels(np.concatenate([y, test[1]]) if test else y, args.dataset)
    classes = int(max(y.max(), test[1].max() if test else 0)) + 1
    arrays = (X, y) if test is None else (X, y, *test)
    generator = generator_params(args.dataset, args.seed) if args.dataset in BUILTIN else None
    fingerprint = rundir.fingerprint(args.dataset, generator, arrays, classes)
    if test is None:
        tr, te = stratified_indices(y, args.test_split, seed=args.seed)
        (X_tr, y_tr), (X_te, y_te) = (X[tr], y[tr]), (X[te], y[te])
    else:
        (X_tr, y_tr), (X_te, y_te) = (X, y), test
    if X_te.shape[1] != X_tr.shape[1]:
        raise UsageError(f"the test set has {X_te.shape[1]} features, the training set "
                         f"{X_tr.shape[1]}")
    X_val = y_val = None
    if args.val_split > 0 and len(y_tr):
        tr, va = stratified_indices(y_tr, args.val_split, seed=args.seed + 1)
        X_tr, y_tr, X_val, y_val = X_tr[tr], y_tr[tr], X_tr[va], y_tr[va]
    n_val = 0 if y_val is None else len(y_val)
    if not len(y_tr) or not len(y_te) or (args.val_split > 0 and not n_val):
        raise UsageError(_sizes_message(args.dataset, args, len(y) + (len(test[1]) if test
                                                                      else 0),
                                        len(y_tr), n_val, len(y_te)))
    scaler = StandardScaler().fit(X_tr)
    out = {"train": (scaler.transform(X_tr), y_tr), "test": (scaler.transform(X_te), y_te),
           "val": None if X_val is None else (scaler.transform(X_val), y_val),
           "scaler": scaler, "classes": classes, "features": X_tr.shape[1],
           "samples": len(y) + (len(test[1]) if test else 0), "fingerprint": fingerprint}
    return out


def _available_memory():
    """Bytes this machine can still give (MemAvailable), else its physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_model_fits(features, classes, hidden, batch_size, n_train, where="--hidden"):
    """Refuse a model whose parameters, gradients, optimizer state and activations cannot
    fit in memory, before allocating any of it."""
    widths = [features, *hidden, classes]
    params = sum(a * b + b for a, b in zip(widths, widths[1:]))
    # float32: the weights, their gradients, up to two optimizer buffers (Adam) and a copy
    # kept by the best-epoch tracker; activations of one batch, forward and backward.
    need = 4 * (5 * params + 4 * min(batch_size, n_train) * sum(widths) + 1024 * sum(widths))
    have = _available_memory()
    if have is not None and need > have:
        gib = 2**30
        raise UsageError(f"{where} {','.join(map(str, hidden)) or 'none'}: a "
                         f"{'-'.join(map(str, widths))} MLP has {params:,} parameters and "
                         f"needs about {need / gib:.1f} GiB to train, but this machine has "
                         f"{have / gib:.1f} GiB available; choose smaller layer widths")


def _config(args, device):
    keys = ("dataset", "label", "delimiter", "hidden", "activation", "dropout", "batchnorm",
            "optimizer", "lr", "momentum", "weight_decay", "l1", "epochs", "batch_size",
            "schedule", "early_stopping", "val_split", "test_split", "seed")
    config = {k: getattr(args, k) for k in keys}
    config["hidden"] = parse_hidden(args.hidden)
    config["device"] = str(device)
    return config


def _say(args, *text):
    if not args.quiet and getattr(args, "_main", True):  # rank 0 only under --distributed
        print(*text, flush=True)


def drop_last_rule(batchnorm, n_train, batch_size):
    """The rule for BatchNorm's 1-row batches, as in PyTorch practice: with BatchNorm on,
    training batches use drop_last=True (a 1-row batch has no batch variance), unless
    that would leave no batch at all. Returns (drop_last, a note for the user or None)."""
    if not batchnorm:
        return False, None
    if batch_size < 2:
        raise UsageError("--batch-size 1 with BatchNorm (on by default): a 1-row batch has "
                         "no batch statistics; use --batch-size 2 or more, or --no-batchnorm")
    if n_train < batch_size:
        if n_train < 2:
            raise UsageError(f"only {n_train} training row(s): BatchNorm needs batches of at "
                             "least 2 rows; use more data or --no-batchnorm")
        return False, None  # one batch of all the rows, at least 2 of them
    dropped = n_train % batch_size
    note = (f"note: BatchNorm is on, so training batches use drop_last=True (as in PyTorch): "
            f"each epoch skips {dropped} of {n_train} rows (a different {dropped} each "
            "epoch, since batches are shuffled)") if dropped else None
    return True, note


# -- gradlab train ---------------------------------------------------------------------------
# Options a resumed run keeps from its manifest: none may change, except --epochs, which
# may grow (a longer run), when the schedule does not depend on it.
_RUN_LOCAL = ("command", "resume", "out", "quiet", "overwrite", "tensorboard",
              "histogram_every",  # logging only: a resumed run may log elsewhere
              "compile",  # how steps run, not what they compute
              "distributed")  # how too; the world size is kept in the config and checked
_EPOCH_SCHEDULES = ("step", "cosine", "onecycle")


def cmd_train(args):
    """Train an MLP on the chosen dataset; print (and with --out, write) the test result."""
    from ..distributed import destroy_process_group, is_initialized
    joins = args.distributed and not is_initialized()
    try:
        return _cmd_train(args)
    finally:
        # A group this command joined is left at its end, so that the process (a test, a
        # notebook calling main()) can run other commands after it.
        if joins and is_initialized():
            destroy_process_group()


def _cmd_train(args):
    from . import rundir
    check_env()
    manifest = _resume_manifest(args) if args.resume else None
    _check_ranges(args)
    if args.checkpoint_every is not None and args.checkpoint_every < 1:
        raise UsageError(f"--checkpoint-every must be >= 1, got {args.checkpoint_every}")
    if args.overwrite and not args.out:
        raise UsageError("--overwrite applies to --out DIR; give the directory to reuse")
    if args.out and not args.resume:
        rundir.check_out(args.out, args.overwrite)
    board = _tensorboard(args)
    device = _device(args.device)
    world = _init_distributed(args, device, manifest)
    import gradlab as gl

    from ..data import DataLoader, TensorDataset
    from ..train import CSVLogger, EarlyStopping, ModelCheckpoint

    data = load_splits(args)
    if manifest is not None:
        change = rundir.describe_change(manifest["data"], data["fingerprint"])
        if change:
            raise UsageError(f"--resume {args.resume!r}: the data changed since the run "
                             f"started ({change}); resuming would train on other rows than "
                             "the checkpoints did: restore the original data, or start a new "
                             "run with --out NEWDIR")
    X_tr, y_tr = data["train"]
    config = _config(args, device)
    check_model_fits(data["features"], data["classes"], config["hidden"], args.batch_size,
                     len(y_tr))
    if world > 1:
        config["world_size"] = world
    drop_last, bn_note = drop_last_rule(args.batchnorm, len(y_tr), args.batch_size)
    gl.manual_seed(args.seed)
    fixed = {**config, "in_features": data["features"], "classes": data["classes"],
             "n_train": len(y_tr) // args.batch_size * args.batch_size if drop_last
             else len(y_tr)}
    model, loss_fn, optimizer, scheduler = build_trial(fixed, {})
    model.to(device)
    if args.distributed:
        from ..distributed import DistributedDataParallel, DistributedSampler
        model = DistributedDataParallel(model)
        sampler = DistributedSampler(TensorDataset(X_tr, y_tr), seed=args.seed,
                                     drop_last=drop_last)
        train_loader = DataLoader(TensorDataset(X_tr, y_tr), batch_size=args.batch_size // world,
                                  sampler=sampler, drop_last=drop_last, seed=args.seed,
                                  device=device)
    else:
        train_loader = DataLoader(TensorDataset(X_tr, y_tr), batch_size=args.batch_size,
                                  shuffle=True, drop_last=drop_last, seed=args.seed,
                                  device=device)
    val_loader = None if data["val"] is None else \
        DataLoader(TensorDataset(*data["val"]), batch_size=1024, device=device)
    test_loader = DataLoader(TensorDataset(*data["test"]), batch_size=1024, device=device)
    monitor = "val_loss" if val_loader is not None else "loss"
    # The reported model is the best epoch's (lowest monitored loss): without
    # --early-stopping the tracker's patience outlasts the run, so it only restores.
    best = EarlyStopping(monitor=monitor, patience=args.early_stopping or args.epochs,
                         restore_best_weights=True)
    callbacks = [best]
    checkpoint = lock = None
    resume = False
    if args.out and not args._main:  # rank > 0: rank 0 sets up --out and says how it went
        manifest, resume = _from_rank_0(None)
    if args.out and args._main:
        try:
            lock, manifest, resume = _claim_out(args, manifest, config, data)
        except Exception as exc:
            if args.distributed:
                _from_rank_0(exc)
            raise
        if args.distributed:
            _from_rank_0((manifest, resume))
    if args.out:
        checkpoint = os.path.join(args.out, CHECKPOINT)
        # (history.csv is rewritten whole from the History at the end of the run)
        callbacks += [CSVLogger(os.path.join(args.out, "history.csv"), append=resume),
                      ModelCheckpoint(checkpoint, monitor=monitor, save_best_only=True)]

    if board is not None:
        callbacks.append(board)
    return _train(args, gl, data, config, device, model, loss_fn, optimizer, scheduler,
                  train_loader, val_loader, test_loader, monitor, best, callbacks, checkpoint,
                  lock, resume, manifest, bn_note, world)


def _init_distributed(args, device, manifest):
    """Join the process group under --distributed (MPI; NCCL on CUDA); returns the world
    size (1 without it) and checks it against a resumed run's."""
    args._main = True
    world = 1
    if args.distributed:
        from ..distributed import get_world_size, init_process_group, is_initialized
        if not is_initialized():
            init_process_group("nccl" if device.type == "cuda" else "mpi")
        from ..distributed import get_rank
        world, args._main = get_world_size(), get_rank() == 0
        if args.batch_size % world:
            raise UsageError(f"--distributed: --batch-size {args.batch_size} (the global "
                             f"batch) must be a multiple of the {world} ranks")
        if args.batchnorm and args.batch_size // world < 2:
            raise UsageError(f"--distributed: --batch-size {args.batch_size} over {world} "
                             "ranks leaves 1 row per rank, too few for BatchNorm's batch "
                             "statistics; use a larger --batch-size or --no-batchnorm")
        if args.compile:
            raise UsageError("--distributed trains eagerly: drop --compile")
    if manifest is not None and manifest["config"].get("world_size", 1) != world:
        raise UsageError(f"--resume: the run trained on {manifest['config'].get('world_size', 1)} "
                         f"rank(s), this one has {world}: resume it with the same "
                         "`mpiexec -n N ... --distributed`")
    return world


def _from_rank_0(value):
    """Rank 0's ``value`` on every rank; an exception there is raised on the others too."""
    from ..distributed import broadcast_object
    kind, payload = broadcast_object(("error", str(value)) if isinstance(value, BaseException)
                                     else ("ok", value), 0)
    if kind == "error":
        raise UsageError(f"rank 0 could not set up --out: {payload}")
    return payload


def _claim_out(args, manifest, config, data):
    """Claim --out (lock, manifest); returns (lock, manifest, resume)."""
    from ..train import checkpoint as ckpt
    from . import rundir
    resume = False
    # Every input is checked: only now is anything written into the directory.
    lock, moved = rundir.claim(args.out, args.overwrite,
                               manifest["run_id"] if manifest is not None else None)
    if moved:
        _say(args, f"--overwrite: moved the old contents of {args.out} to {moved}")
    if manifest is None:
        manifest = rundir.new_manifest(_run_args(args), config, data["fingerprint"])
        rundir.write_manifest(args.out, manifest)
    else:
        resume = bool(ckpt.list_checkpoints(args.out))
        if not resume:
            _say(args, f"--resume: no checkpoint in {args.out} yet (the run stopped "
                       "before its first one); starting it over from step 0")
        if args.epochs != manifest["args"]["epochs"]:
            manifest["extended"].append({"from": manifest["args"]["epochs"],
                                         "to": args.epochs,
                                         "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
            manifest["args"]["epochs"] = manifest["config"]["epochs"] = args.epochs
            rundir.write_manifest(args.out, manifest)
    return lock, manifest, resume


def _train(args, gl, data, config, device, model, loss_fn, optimizer, scheduler, train_loader,
           val_loader, test_loader, monitor, best, callbacks, checkpoint, lock, resume,
           manifest, bn_note, world):
    from ..train import evaluate, fit
    from ..train.loop import NonFiniteLossError
    layers = "-".join(str(s) for s in [data["features"], *config["hidden"], data["classes"]])
    _say(args, f"gradlab train: {args.dataset} ({data['samples']} samples, "
               f"{data['features']} features, {data['classes']} classes) on {device}")
    _say(args, f"model {layers} {args.activation}, {args.optimizer} lr={args.lr:g}, "
               f"up to {args.epochs} epochs, batch {args.batch_size}")
    if bn_note:
        _say(args, bn_note)
    start = time.perf_counter()
    try:
        history = fit(model, loss_fn, optimizer, train_loader, val_loader, epochs=args.epochs,
                      scheduler=scheduler, callbacks=callbacks, device=device,
                      verbose=0 if args.quiet else 1, l1=args.l1, monitor=monitor,
                      checkpoint_dir=args.out or None,
                      checkpoint_every=(args.checkpoint_every or len(train_loader))
                      if args.out else None, resume=resume, compile=args.compile)
        train_seconds = time.perf_counter() - start
        test = evaluate(model, loss_fn, test_loader, device=device)
        metrics = {"test_accuracy": test["accuracy"], "test_loss": test["loss"],
                   "test_samples": len(data["test"][1]), "epochs_run": len(history),
                   "best_epoch": best.best_epoch, "train_seconds": round(train_seconds, 3),
                   "device": str(device), "stop_reason": history.stop_reason,
                   "gradlab_version": gl.__version__, "config": config,
                   "run_id": manifest["run_id"] if manifest else None}
        if world > 1:
            metrics["world_size"] = world
        if args.out and args._main:
            _write_outputs(args.out, metrics, history, data, model)
    except NonFiniteLossError as exc:
        kept = f"; the last good checkpoint is kept in {checkpoint}" if checkpoint and \
            os.path.exists(checkpoint) else ""
        raise NonFiniteLossError(f"{exc}{kept}", exc.epoch, exc.batch, exc.history) from None
    finally:
        if lock is not None:
            lock.release()
    if history.stop_reason:
        _say(args, history.stop_reason)
    if not args._main:
        return 0
    print(f"test accuracy: {test['accuracy']:.4f}  (test loss {test['loss']:.4f}, "
          f"{metrics['test_samples']} samples, best epoch {best.best_epoch} of "
          f"{len(history)}, {train_seconds:.1f} s on {device})", flush=True)
    return 0


def _tensorboard(args):
    """The TensorBoard callback --tensorboard asks for (checked now; it writes nothing until
    training begins), or None."""
    if args.tensorboard is None:
        return None
    if args.histogram_every < 0:
        raise UsageError(f"--histogram-every must be >= 0 (0: no histograms), got "
                         f"{args.histogram_every}")
    directory, default = args.tensorboard, not args.tensorboard
    if default:
        if not args.out:
            raise UsageError("--tensorboard needs a directory (--tensorboard DIR), or --out "
                             "DIR to log under DIR/tensorboard")
        directory = os.path.join(args.out, "tensorboard")
    from ..train import TensorBoard
    try:
        # A resumed run continues its own event files rather than refusing them; under
        # --out --overwrite the old OUT/tensorboard is moved aside with the rest of OUT.
        return TensorBoard(directory, histogram_every=args.histogram_every,
                           append=bool(args.resume) or (default and args.overwrite))
    except (ValueError, ImportError) as exc:
        raise UsageError(f"--tensorboard: {exc}") from None


def _run_args(args):
    return {k: v for k, v in vars(args).items() if k not in _RUN_LOCAL and
            not k.startswith("_")}


def _check_type(path, name, value, action):
    import argparse
    if isinstance(action, (argparse.BooleanOptionalAction, argparse._StoreTrueAction)):
        ok, kind = isinstance(value, bool), "true or false"
    elif value is None:
        ok, kind = action.default is None, "a value"
    elif action.type is int:
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif action.type is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        kind = "a number"
    else:
        ok, kind = isinstance(value, str), "a string"
    if ok and action.choices is not None and value not in action.choices:
        ok, kind = False, f"one of {', '.join(map(str, action.choices))}"
    if not ok:
        raise UsageError(f"--resume: {path}: {name!r} is {value!r}, expected {kind}; the "
                         "file was edited or damaged: restore it, or start a new run with "
                         "--out NEWDIR")


def _resume_manifest(args):
    """Read DIR's manifest, check its options' types, refuse options that would change the
    run, and set ``args`` to the run's options (--out becomes DIR). Returns the manifest."""
    from . import rundir
    from .main import build_parser
    directory = args.resume
    if not os.path.isdir(directory):
        raise UsageError(f"--resume {directory!r}: no such directory; give the --out "
                         "directory of an earlier `gradlab train` run")
    manifest = rundir.read_manifest(directory)
    if manifest is None:
        legacy = os.path.exists(os.path.join(directory, rundir.LEGACY_ARGS))
        raise UsageError(
            f"--resume {directory!r}: no {rundir.MANIFEST} there" +
            (f" ({rundir.LEGACY_ARGS} was written by an older gradlab, which recorded no "
             "data fingerprint, so an exact resume cannot be checked); start a new run with "
             "--out NEWDIR" if legacy else
             "; resume a directory that a `gradlab train --out DIR` run wrote"))
    if args.out and os.path.abspath(args.out) != os.path.abspath(directory):
        raise UsageError("--resume DIR continues in DIR; drop --out (or give the same DIR)")
    if args.overwrite:
        raise UsageError("--resume continues the run in DIR; --overwrite would move it aside: "
                         "drop one of them")
    path = os.path.join(directory, rundir.MANIFEST)
    actions = {a.dest: a for a in build_parser().commands["train"]._actions}
    saved = manifest["args"]
    missing = [k for k in actions if k not in saved and k not in _RUN_LOCAL and k != "help"]
    if missing:
        raise UsageError(f"--resume: {path} lacks {', '.join(missing)}; the file was edited "
                         "or damaged: restore it, or start a new run with --out NEWDIR")
    for name, value in saved.items():
        if name in actions and name not in _RUN_LOCAL:
            _check_type(path, name, value, actions[name])
    given = getattr(args, "_given", set())
    for name in sorted(given - set(_RUN_LOCAL)):
        if name not in saved or getattr(args, name) == saved[name]:
            continue
        flag = "--" + name.replace("_", "-")
        if name == "epochs":
            if args.epochs < saved["epochs"]:
                raise UsageError(f"--resume: --epochs {args.epochs} is fewer than the run's "
                                 f"{saved['epochs']}; --epochs may only extend a run")
            if saved["schedule"] in _EPOCH_SCHEDULES:
                raise UsageError(f"--resume: --epochs cannot extend this run: its --schedule "
                                 f"{saved['schedule']} was planned over {saved['epochs']} "
                                 "epochs; start a new run with --out NEWDIR")
            print(f"gradlab train: --resume: extending the run from {saved['epochs']} to "
                  f"{args.epochs} epochs", file=sys.stderr)
            continue
        raise UsageError(f"--resume: {flag} {getattr(args, name)!r} differs from the run's "
                         f"{saved[name]!r}: the run's config is fixed; start a new run with "
                         "--out NEWDIR (only --epochs may change, to extend the run)")
    for name, value in saved.items():
        if name in actions and name not in _RUN_LOCAL and not (name == "epochs" and
                                                               "epochs" in given):
            setattr(args, name, value)
    args.out = directory
    return manifest


def _write_outputs(out, metrics, history, data, model):
    from ..train import plot_decision_boundary, plot_history
    metrics = dict(metrics)
    metrics["checkpoint"] = CHECKPOINT
    metrics["standardization"] = {"note": "fitted on the training split; apply "
                                          "(x - mean) / scale before the model",
                                  **data["scaler"].state_dict()}
    name = "history.csv"
    try:
        _atomic(os.path.join(out, name), history.to_csv)
        try:
            name = "curves.png"
            _atomic(os.path.join(out, name), lambda p: plot_history(history, p))
            if data["features"] == 2:
                X, y = data["train"]
                name = "decision_boundary.png"
                _atomic(os.path.join(out, name),
                        lambda p: plot_decision_boundary(model, X, y, p))
            metrics["plots"] = True
        except ImportError as exc:
            metrics["plots"] = False
            print(f"note: no curves.png: {exc}", file=sys.stderr)
        name = "metrics.json"
        _atomic(os.path.join(out, name), lambda p: _dump_json(metrics, p))
    except OSError as exc:
        raise UsageError(f"writing {os.path.join(out, name)} failed: {exc.strerror or exc}; "
                         f"the trained model and checkpoints are kept in {out}: free some "
                         f"disk space, then run `gradlab train --resume {out}` to write the "
                         "results") from None


def _dump_json(obj, path):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def _atomic(path, write):
    """``write(tmp)`` then rename onto ``path``: a failure leaves no half-written file."""
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp{ext}"  # (matplotlib picks the format from the extension)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# -- gradlab search --------------------------------------------------------------------------
_SEARCHABLE = {"hidden": str, "activation": str, "dropout": float, "batchnorm": bool,
               "optimizer": str, "lr": float, "momentum": float, "weight_decay": float,
               "epochs": int, "batch_size": int, "schedule": str}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _parse_value(name, text, where="--param"):
    """One value of a searched option, from text (--param) or JSON (--spec): typed the
    way the option is (so "false" is False, not a true non-empty string) and range-checked
    like the option itself."""
    kind = _SEARCHABLE[name]
    if kind is bool:
        if isinstance(text, bool):
            return text
        if isinstance(text, str) and text.strip().lower() in _TRUE + _FALSE:
            return text.strip().lower() in _TRUE
        raise UsageError(f"{where} {name}: {text!r} is not a boolean; use true or false")
    if kind is str:
        if name == "hidden" and isinstance(text, int) and not isinstance(text, bool):
            text = str(text)
        if not isinstance(text, str):
            raise UsageError(f"{where} {name}: {text!r} is not a string"
                             + ("; give widths as text, e.g. \"128,64\"" if name == "hidden"
                                else ""))
        value = text.strip()
    elif isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise UsageError(f"{where} {name}: {text!r} is not a valid {kind.__name__}")
    else:
        try:
            value = float(text) if kind is float else _to_int(text)
        except ValueError:
            raise UsageError(f"{where} {name}: {text!r} is not a valid {kind.__name__}"
                             ) from None
    _check_searched(name, value, where)
    return value


def _to_int(text):
    value = float(text) if isinstance(text, (str, float)) else text
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(text)
    return int(value)


def _check_searched(name, value, where):
    allowed = {"activation": ACTIVATIONS, "optimizer": OPTIMIZERS, "schedule": SCHEDULES}
    if name in allowed and value not in allowed[name]:
        raise UsageError(f"{where} {name}: unknown value {value!r}; valid choices: "
                         f"{', '.join(allowed[name])}")
    bad = None
    if name in ("epochs", "batch_size") and value < 1:
        bad = "must be >= 1"
    elif name == "lr" and not (math.isfinite(value) and value > 0):
        bad = "must be a finite number > 0"
    elif name == "dropout" and not 0.0 <= value < 1.0:
        bad = "must be in [0, 1)"
    elif name in ("momentum", "weight_decay") and not (math.isfinite(value) and value >= 0):
        bad = "must be a finite number >= 0"
    if bad:
        raise UsageError(f"{where} {name}={value!r}: {name} {bad}")
    if name == "hidden":
        try:
            parse_hidden(value)
        except ValueError as exc:
            raise UsageError(f"{where} {name}: {exc}") from None


def parse_param(text):
    """'lr=loguniform:1e-4:1e-1' -> ('lr', LogUniform(...)); 'hidden=64|128,64' -> choice."""
    from ..train import search as S
    name, sep, spec = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not spec:
        raise UsageError(f"--param {text!r}: expected NAME=SPEC, e.g. lr=loguniform:1e-4:1e-2")
    if name not in _SEARCHABLE:
        raise UsageError(f"--param {name!r} cannot be searched; valid names: "
                         f"{', '.join(_SEARCHABLE)}")
    kind, _, rest = spec.partition(":")
    if kind in ("uniform", "loguniform", "int") and rest:
        parts = rest.split(":")
        try:
            nums = [float(p) for p in parts]
            if kind == "int":
                dim = S.int_range(*[_to_int(n) for n in nums])
            elif len(nums) != 2:
                raise ValueError("needs exactly two bounds")
            else:
                dim = (S.uniform if kind == "uniform" else S.loguniform)(*nums)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"--param {text!r}: {exc}") from None
        return name, _checked_dimension(name, dim, "--param")
    return name, S.choice([_parse_value(name, v) for v in spec.split("|")])


def _checked_dimension(name, dim, where):
    """A distribution over a searched option whose every value is valid for it."""
    from ..train import search as S
    if isinstance(dim, S.Choice):
        return S.choice([_parse_value(name, v, where) for v in dim.values])
    if _SEARCHABLE[name] not in (int, float):
        raise UsageError(f"{where} {name}: a {type(dim).__name__} range needs a numeric "
                         "option; list the values instead")
    ends = [dim.values[0], dim.values[-1]] if isinstance(dim, S.IntRange) else \
        [dim.low, dim.high]
    for value in ends:
        _check_searched(name, value, where)
    if isinstance(dim, S.Uniform) and _SEARCHABLE[name] is int:
        raise UsageError(f"{where} {name}: takes whole numbers; use int_range (--param "
                         f"{name}=int:A:B) instead of a float range")
    return dim


def _load_spec(text):
    stripped = text.strip()
    if not stripped.startswith(("{", "[")) and not os.path.exists(text):
        raise UsageError(f"--spec {text!r}: no such file, and not inline JSON text either; "
                         "check the path, or give the JSON itself, e.g. --spec "
                         "'{\"space\": {\"lr\": [0.01, 0.1]}}'")
    try:
        if os.path.exists(text):
            if os.path.isdir(text):
                raise UsageError(f"--spec {text!r} is a directory; give a JSON file")
            with open(text) as f:
                return json.load(f)
        return json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"--spec {text!r}: not a readable JSON file or JSON text ({exc}); "
                         "fix the JSON") from None


_SPEC_SETTINGS = ("space", "method", "trials", "time_budget", "scoring", "folds")


def _spec_value(spec, key, check, expected, default):
    if key not in spec:
        return default
    value = spec[key]
    if not check(value):
        raise UsageError(f"--spec: {key!r} is {value!r}; expected {expected}")
    return value


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def cmd_search(args):
    """Grid or random search; write the results table as CSV and print the best."""
    from ..train import grid_search, parse_space, random_search
    check_env()
    _check_ranges(args)
    method, trials, budget = args.method, args.trials, args.time_budget
    scoring, folds = args.scoring, args.folds
    space = {}
    if args.spec:
        spec = _load_spec(args.spec)
        raw = spec.get("space", spec) if isinstance(spec, dict) else None
        if not isinstance(raw, dict) or not raw:
            raise UsageError("--spec needs a JSON object with a non-empty 'space' object")
        if "space" in spec:  # a misspelt setting would otherwise be ignored without a word
            stray = sorted(set(spec) - set(_SPEC_SETTINGS))
            if stray:
                raise UsageError(f"--spec: unknown setting(s) {', '.join(map(repr, stray))}; "
                                 f"valid settings: {', '.join(_SPEC_SETTINGS)}")
        unknown = [k for k in raw if k not in _SEARCHABLE]
        if unknown:
            raise UsageError(f"--spec: {', '.join(unknown)} cannot be searched; valid names: "
                             f"{', '.join(_SEARCHABLE)}")
        try:
            parsed = parse_space(raw)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"--spec: {exc}") from None
        space.update({k: _checked_dimension(k, d, "--spec") for k, d in parsed.items()})
        method = _spec_value(spec, "method", lambda v: v in ("grid", "random"),
                             "'grid' or 'random'", method)
        trials = _spec_value(spec, "trials", lambda v: _is_int(v) and v >= 1,
                             "a whole number >= 1", trials)
        budget = _spec_value(spec, "time_budget", lambda v: _is_number(v) and v > 0,
                             "a number of seconds > 0", budget)
        scoring = _spec_value(spec, "scoring", lambda v: v in ("holdout", "kfold"),
                              "'holdout' or 'kfold'", scoring)
        folds = _spec_value(spec, "folds", lambda v: _is_int(v) and v >= 2,
                            "a whole number >= 2", folds)
    for text in args.param:
        name, dim = parse_param(text)
        space[name] = dim
    if not space:
        raise UsageError("nothing to search: give --param NAME=SPEC (e.g. "
                         "--param lr=loguniform:1e-4:1e-2) or --spec FILE")
    if trials is not None and trials < 1:
        raise UsageError(f"--trials must be >= 1, got {trials}")
    if budget is not None and not (math.isfinite(budget) and budget > 0):
        raise UsageError(f"--time-budget must be a number of seconds > 0, got {budget}")
    if folds < 2:
        raise UsageError(f"--folds must be >= 2 (k-fold cross-validation needs at least 2 "
                         f"folds), got {folds}")
    if args.jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {args.jobs}")
    if args.executor == "mpi" and args.scheduler:
        raise UsageError("--executor mpi and --scheduler each say where trials run; give one")
    if args.halving:
        if "epochs" in space:
            raise UsageError("--halving sets each rung's epochs itself; do not search epochs "
                             "(--epochs is the top rung's)")
        if args.eta < 2:
            raise UsageError(f"--eta must be >= 2, got {args.eta}")
        if not 1 <= args.min_epochs <= args.epochs:
            raise UsageError(f"--min-epochs must be in 1..--epochs ({args.epochs}), got "
                             f"{args.min_epochs}")
        if method == "random" and trials is None and budget is not None:
            raise UsageError("--halving needs --trials (the trials of the first rung)")
    if not (math.isfinite(args.scheduler_timeout) and args.scheduler_timeout > 0):
        raise UsageError(f"--scheduler-timeout must be a number of seconds > 0, got "
                         f"{args.scheduler_timeout}")
    if os.path.isdir(args.results):
        raise UsageError(f"--results {args.results!r} is a directory; give a file path, e.g. "
                         f"{os.path.join(args.results, 'search_results.csv')!r}")
    device = _device(args.device)
    data = load_splits(args)
    # Search on train + validation (the search makes its own splits); the test set stays out.
    X = data["train"][0] if data["val"] is None else \
        np.concatenate([data["train"][0], data["val"][0]])
    y = data["train"][1] if data["val"] is None else \
        np.concatenate([data["train"][1], data["val"][1]])
    _check_search_sizes(args, space, data, len(y), scoring, folds)
    results_dir = os.path.dirname(os.path.abspath(args.results))
    check_writable(results_dir)
    import functools
    fixed = {**_config(args, device), "in_features": data["features"],
             "classes": data["classes"], "n_train": len(y)}
    del fixed["device"]  # where trials run is not part of the search (nor of its resume)
    build = functools.partial(build_trial, fixed)
    if args.resume and not os.path.exists(args.results):
        _say(args, f"gradlab search: --resume: {args.results} does not exist yet; starting "
                   "the search")
    client, executor, jobs, where = None, None, args.jobs, f"{args.jobs} worker(s)"
    if args.scheduler:
        client = _dask_client(args.scheduler, args.scheduler_timeout)
        executor = client.get_executor()
        threads = sum(client.nthreads().values())
        jobs = args.jobs if "jobs" in getattr(args, "_given", ()) else max(1, threads)
        where = f"Dask cluster {args.scheduler}, {threads} worker thread(s)"
    elif args.executor == "mpi":
        executor = _mpi_executor()
        jobs = args.jobs if "jobs" in getattr(args, "_given", ()) else executor.num_workers
        where = f"{executor.num_workers} MPI worker process(es)"
    common = dict(scoring=scoring, k=folds, epochs=args.epochs, batch_size=args.batch_size,
                  early_stopping=args.early_stopping or None, n_jobs=jobs,
                  seed=args.seed, device=None if jobs > 1 or executor else str(device),
                  time_budget=budget, verbose=0 if args.quiet else 1, drop_last="auto",
                  compile=args.compile, executor=executor, results_csv=args.results,
                  resume=args.resume, halving=args.halving, eta=args.eta,
                  min_epochs=args.min_epochs)
    _say(args, f"gradlab search: {method} search over {', '.join(space)} on {args.dataset} "
               f"({scoring} scoring, {where}"
               + (f", successive halving with eta={args.eta}" if args.halving else "") + ")")
    if _values(space, "batchnorm", args.batchnorm) != {False}:
        _say(args, "note: trials with BatchNorm train on batches with drop_last=True (as in "
                   "PyTorch), so no training batch holds a single row")
    start = time.perf_counter()
    from ..train.search import ResumeError
    try:
        if method == "grid":
            result = grid_search(build, space, (X, y), n_trials=trials, **common)
        else:
            result = random_search(build, space, (X, y),
                                   n_trials=trials if trials is not None or budget else 10,
                                   **common)
    except ResumeError as exc:
        raise UsageError(f"--resume: {exc}".replace("resume: ", "", 1)) from None
    except OSError as exc:
        if exc.filename and os.path.abspath(exc.filename).startswith(
                os.path.abspath(args.results)):
            raise UsageError(f"--results {args.results!r} cannot be written: "
                             f"{exc.strerror or exc}; choose a path you can write to") from None
        raise
    finally:
        if client is not None:
            client.close()
        if executor is not None and client is None:
            executor.shutdown(wait=True)
    try:
        result.to_csv(args.results)
    except OSError as exc:
        raise UsageError(f"--results {args.results!r} cannot be written: "
                         f"{exc.strerror or exc}; choose a path you can write to") from None
    _say(args, result.table(top=10))
    from ..data import DataLoader, TensorDataset
    from ..train import evaluate
    model = result.best_model
    test = None
    if model is not None:
        loader = DataLoader(TensorDataset(*data["test"]), batch_size=1024,
                            device=str(device))
        import gradlab as gl
        test = evaluate(model.to(device), gl.nn.CrossEntropyLoss(), loader, device=device)
    print(f"best {result.metric}: {result.best_score:.4f} with {result.best_config}"
          + (f"; retrained on train+val, test accuracy {test['accuracy']:.4f}" if test else "")
          + f"  ({len({r['trial'] for r in result.results})} trials"
          + (f", {len(result.results)} runs over the rungs" if args.halving else "")
          + f", {time.perf_counter() - start:.1f} s; results "
            f"in {args.results})", flush=True)
    if args.halving:
        full = len({r["trial"] for r in result.results}) * args.epochs
        print(f"successive halving: {result.epochs_planned} epochs in all, "
              f"{result.epochs_planned / full:.0%} of the {full} a full search of these "
              "trials takes", flush=True)
    return 0


_MPI_HOW = ("start it as `mpiexec -n N python -m mpi4py.futures -m gradlab search "
            "--executor mpi ...`: rank 0 runs the search, the other N-1 ranks the trials")


def _mpi_executor():
    """The mpi4py.futures pool of the MPI processes this search was started with, or a
    UsageError that says how to start it (spawning workers from a lone process is not
    supported: MPICH's singleton cannot spawn without mpiexec)."""
    try:
        from mpi4py import MPI
        from mpi4py.futures import MPIPoolExecutor, _core
    except ImportError:
        raise UsageError("--executor mpi needs mpi4py and an MPI: pip install 'gradlab[mpi]'; "
                         f"then {_MPI_HOW}") from None
    if MPI.COMM_WORLD.Get_size() < 2 or getattr(_core, "SharedPool", True) is None:
        raise UsageError(f"--executor mpi: this process has no MPI workers; {_MPI_HOW}")
    return MPIPoolExecutor()


def _dask_client(address, timeout):
    """A dask.distributed Client of the scheduler at ``address`` with at least one worker,
    or a UsageError that says why not."""
    import re
    if not re.fullmatch(r"(tcp|tls|ws|wss|ucx)://(\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):\d+",
                        address):
        raise UsageError(f"--scheduler {address!r}: expected a scheduler address such as "
                         "tcp://127.0.0.1:8786 (what `dask scheduler` prints as 'Scheduler "
                         "at')")
    try:
        from distributed import Client
    except ImportError:
        raise UsageError("--scheduler needs dask.distributed, which is not installed: pip "
                         "install 'gradlab[dask]' (or pip install 'dask[distributed]')"
                         ) from None
    try:
        client = Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError, TypeError) as exc:
        raise UsageError(f"--scheduler {address!r}: no Dask scheduler answered within "
                         f"{timeout:g} s ({type(exc).__name__}: {exc}); start one with `dask "
                         f"scheduler` and workers with `dask worker {address}`, or fix the "
                         "address") from None
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        client.close()
        raise UsageError(f"--scheduler {address!r}: the scheduler has no worker after "
                         f"{timeout:g} s ({type(exc).__name__}); start some with `dask worker "
                         f"{address}`") from None
    return client


def _values(space, name, default):
    """Every value option ``name`` takes in the search (its fixed value if not searched)."""
    from ..train import search as S
    dim = space.get(name)
    if dim is None:
        return {default}
    return set(dim.values) if isinstance(dim, (S.Choice, S.IntRange)) else {dim.low, dim.high}


def _check_search_sizes(args, space, data, n, scoring, folds):
    batch_sizes = _values(space, "batch_size", args.batch_size)
    if True in _values(space, "batchnorm", args.batchnorm) and min(batch_sizes) < 2:
        raise UsageError("--batch-size 1 with BatchNorm (on by default): a 1-row batch has no "
                         "batch statistics; search batch sizes of 2 or more, or pass "
                         "--no-batchnorm")
    if scoring == "kfold" and n < folds:
        raise UsageError(f"--folds {folds}: the data for the search has only {n} rows; use "
                         f"--folds {max(2, n)} or fewer, or more data")
    for hidden in _values(space, "hidden", args.hidden):
        check_model_fits(data["features"], data["classes"], parse_hidden(hidden),
                         max(batch_sizes), n)


# -- gradlab info ----------------------------------------------------------------------------
def _version(module):
    try:
        mod = __import__(module)
        return getattr(mod, "__version__", "installed")
    except Exception:
        return "not installed"


def _cpu_tier():
    """Which implementation the CPU backend's fused ops (optimizer steps, dropout,
    softmax-CE) run, and why when it is the slower NumPy one."""
    from ..backend import cpu_jit
    if cpu_jit.AVAILABLE:
        return "numba (one-pass compiled optimizer, dropout and softmax-CE kernels)"
    why = cpu_jit.UNAVAILABLE_REASON
    if os.environ.get("GRADLAB_NO_JIT"):
        return f"NumPy fallback ({why}; unset it for the numba kernels)"
    return (f"NumPy fallback, slower (numba does not import: {why}); gradlab installs numba "
            "wherever numba has wheels for this Python and platform")


def cmd_info(args):
    """Versions, the selected device, CuPy/GPU status and which kernels compile."""
    import gradlab as gl

    from ..backend import cuda_status, default_device
    print(f"gradlab {gl.__version__} ({os.path.dirname(gl.__file__)})")
    print(f"python {platform.python_version()} on {platform.platform()}")
    for name in ("numpy", "numba", "cupy", "matplotlib", "tqdm"):
        print(f"{name:<11}{_version(name)}")
    print(f"CPU kernels: {_cpu_tier()}")
    ok, why = cuda_status()
    print(f"CUDA: {'available' if ok else 'unavailable'}: {why}")
    try:
        print(f"selected device (auto): {default_device()}")
    except ValueError as exc:
        print(f"selected device: error: {exc}")
    try:
        from ..backend.cuda_kernels import kernel_report
    except ImportError:
        print("kernels: report unavailable (this build has no kernel report)")
        return 0
    try:
        report = kernel_report()
    except Exception as exc:  # the report is diagnostics: never crash `info` over it
        print(f"kernels: report failed: {type(exc).__name__}: {exc}")
        return 0
    print("kernels:")
    for entry in report:
        detail = str(entry.get("detail", "")).splitlines()[0][:120] if entry.get("detail") \
            else ""
        print(f"  {entry.get('module', '?'):<12}{entry.get('status', '?'):<10}{detail}")
    return 0


# -- gradlab bench ---------------------------------------------------------------------------
def _find_benchmarks():
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [os.path.join(os.getcwd(), "benchmarks", "run.py"),
                  os.path.normpath(os.path.join(here, "..", "..", "..", "benchmarks",
                                                "run.py"))]
    return next((c for c in candidates if os.path.isfile(c)), None)


def cmd_bench(args):
    """``bench optim``: the packaged optimizer benchmark; else benchmarks/run.py (--quick
    unless --full) from a source checkout."""
    if getattr(args, "bench_command", None) == "optim":
        from ..bench import optim
        check_env()
        try:
            return optim.main(args)
        except optim.InputError as exc:
            raise UsageError(str(exc)) from None
    script = _find_benchmarks()
    if script is None:
        print("gradlab bench: benchmarks/run.py not found; the benchmark suite ships with the "
              "source repository, not the wheel: run `gradlab bench` (or `make bench`) from "
              "a checkout", file=sys.stderr)
        return 2
    cmd = [sys.executable, script] + ([] if args.full else ["--quick"])
    print("running: " + " ".join(cmd), flush=True)
    return subprocess.call(cmd)


# -- gradlab export --------------------------------------------------------------------------
def cmd_export(args):
    """Write a run's best model as ONNX (see cli/export.py)."""
    from .export import cmd_export as export
    return export(args)
