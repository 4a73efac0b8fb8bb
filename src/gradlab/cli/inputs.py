"""What ``gradlab train`` and ``gradlab search`` share: checking their options, the
environment and the output directory, choosing the device, loading the dataset's
train/val/test splits, and refusing a model too large for memory."""
from __future__ import annotations

import math
import os
import tempfile

import numpy as np

from .._host import available_memory
from .main import UsageError
from .model import parse_hidden


def check_ranges(args):
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
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):  # (NaN, inf)
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
    from ..backend.cpu_threads import env_threads
    try:
        env_threads()
    except ValueError as exc:
        raise UsageError(str(exc)) from None


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


def choose_device(spec):
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


def check_model_fits(features, classes, hidden, batch_size, n_train, where="--hidden"):
    """Refuse a model whose parameters, gradients, optimizer state and activations cannot
    fit in memory, before allocating any of it."""
    widths = [features, *hidden, classes]
    params = sum(a * b + b for a, b in zip(widths, widths[1:]))
    # float32: the weights, their gradients, up to two optimizer buffers (Adam) and a copy
    # kept by the best-epoch tracker; activations of one batch, forward and backward.
    need = 4 * (5 * params + 4 * min(batch_size, n_train) * sum(widths) + 1024 * sum(widths))
    have = available_memory()
    if have is not None and need > have:
        gib = 2**30
        raise UsageError(f"{where} {','.join(map(str, hidden)) or 'none'}: a "
                         f"{'-'.join(map(str, widths))} MLP has {params:,} parameters and "
                         f"needs about {need / gib:.1f} GiB to train, but this machine has "
                         f"{have / gib:.1f} GiB available; choose smaller layer widths")


def run_config(args, device):
    keys = ("dataset", "label", "delimiter", "hidden", "activation", "dropout", "batchnorm",
            "optimizer", "lr", "momentum", "weight_decay", "l1", "epochs", "batch_size",
            "schedule", "early_stopping", "val_split", "test_split", "seed")
    config = {k: getattr(args, k) for k in keys}
    config["hidden"] = parse_hidden(args.hidden)
    config["device"] = str(device)
    return config


def say(args, *text):
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
