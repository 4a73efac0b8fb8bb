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
RUN_ARGS = "run_args.json"  # the options of a run with --out, so that --resume can reuse them
_NOT_RESUMED = ("command", "resume", "out", "quiet")


# -- shared pieces ---------------------------------------------------------------------------
def _check_ranges(args):
    if args.epochs < 1:
        raise UsageError(f"--epochs must be >= 1, got {args.epochs}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
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
    parse_hidden(args.hidden)


def check_writable(directory):
    """Create ``directory`` if needed and prove a file can be written there, before any
    training time is spent."""
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".gradlab-probe-"):
            pass
    except OSError as exc:
        raise UsageError(f"--out {directory!r} cannot be written: {exc.strerror or exc}; "
                         "choose a directory you can write to") from None


def _device(spec):
    from ..backend import get_backend
    if spec not in ("auto", "cpu") and not spec.startswith("cuda"):
        raise UsageError(f"unknown device {spec!r}; valid choices: auto, cpu, cuda, cuda:N")
    return get_backend(spec).device  # DeviceUnavailableError says why CUDA is missing


def _label(text):
    try:
        return int(text)
    except ValueError:
        return text


def load_splits(args):
    """Train/val/test arrays for the CLI options, the scaler fitted on the train part only.
    Returns a dict with X/y for each split, and the dataset's size and class count."""
    from ..data import StandardScaler, load_dataset, stratified_indices
    try:
        X, y, test = load_dataset(args.dataset, seed=args.seed, label=_label(args.label))
    except ValueError as exc:
        if "unknown dataset" in str(exc):
            raise UsageError(str(exc)) from None
        raise
    classes = int(max(y.max(), test[1].max() if test else 0)) + 1
    if np.unique(y).size < 2:
        raise UsageError(f"dataset {args.dataset!r} has a single class; classification needs "
                         "at least 2")
    if test is None:
        tr, te = stratified_indices(y, args.test_split, seed=args.seed)
        (X_tr, y_tr), (X_te, y_te) = (X[tr], y[tr]), (X[te], y[te])
    else:
        (X_tr, y_tr), (X_te, y_te) = (X, y), test
    if X_te.shape[1] != X_tr.shape[1]:
        raise UsageError(f"the test set has {X_te.shape[1]} features, the training set "
                         f"{X_tr.shape[1]}")
    X_val = y_val = None
    if args.val_split > 0:
        tr, va = stratified_indices(y_tr, args.val_split, seed=args.seed + 1)
        X_tr, y_tr, X_val, y_val = X_tr[tr], y_tr[tr], X_tr[va], y_tr[va]
    scaler = StandardScaler().fit(X_tr)
    out = {"train": (scaler.transform(X_tr), y_tr), "test": (scaler.transform(X_te), y_te),
           "val": None if X_val is None else (scaler.transform(X_val), y_val),
           "scaler": scaler, "classes": classes, "features": X_tr.shape[1],
           "samples": len(y) + (len(test[1]) if test else 0)}
    return out


def _config(args, device):
    keys = ("dataset", "label", "hidden", "activation", "dropout", "batchnorm", "optimizer",
            "lr", "momentum", "weight_decay", "l1", "epochs", "batch_size", "schedule",
            "early_stopping", "val_split", "test_split", "seed")
    config = {k: getattr(args, k) for k in keys}
    config["hidden"] = parse_hidden(args.hidden)
    config["device"] = str(device)
    return config


def _say(args, *text):
    if not args.quiet:
        print(*text, flush=True)


# -- gradlab train ---------------------------------------------------------------------------
def cmd_train(args):
    """Train an MLP on the chosen dataset; print (and with --out, write) the test result."""
    if args.resume:
        _load_run_args(args)
    _check_ranges(args)
    if args.checkpoint_every is not None and args.checkpoint_every < 1:
        raise UsageError(f"--checkpoint-every must be >= 1, got {args.checkpoint_every}")
    if args.out:
        check_writable(args.out)
        if not args.resume:
            _save_run_args(args)
    device = _device(args.device)
    import gradlab as gl

    from ..data import DataLoader, TensorDataset
    from ..train import CSVLogger, EarlyStopping, ModelCheckpoint, evaluate, fit
    from ..train.loop import NonFiniteLossError

    data = load_splits(args)
    X_tr, y_tr = data["train"]
    config = _config(args, device)
    gl.manual_seed(args.seed)
    fixed = {**config, "in_features": data["features"], "classes": data["classes"],
             "n_train": len(y_tr)}
    model, loss_fn, optimizer, scheduler = build_trial(fixed, {})
    model.to(device)
    train_loader = DataLoader(TensorDataset(X_tr, y_tr), batch_size=args.batch_size,
                              shuffle=True, seed=args.seed, device=device)
    val_loader = None if data["val"] is None else \
        DataLoader(TensorDataset(*data["val"]), batch_size=1024, device=device)
    test_loader = DataLoader(TensorDataset(*data["test"]), batch_size=1024, device=device)
    monitor = "val_loss" if val_loader is not None else "loss"
    # The reported model is the best epoch's (lowest monitored loss): without
    # --early-stopping the tracker's patience outlasts the run, so it only restores.
    best = EarlyStopping(monitor=monitor, patience=args.early_stopping or args.epochs,
                         restore_best_weights=True)
    callbacks = [best]
    checkpoint = None
    if args.out:
        checkpoint = os.path.join(args.out, CHECKPOINT)
        # (history.csv is rewritten whole from the History at the end of the run)
        callbacks += [CSVLogger(os.path.join(args.out, "history.csv"),
                                append=bool(args.resume)),
                      ModelCheckpoint(checkpoint, monitor=monitor, save_best_only=True)]

    layers = "-".join(str(s) for s in [data["features"], *config["hidden"], data["classes"]])
    _say(args, f"gradlab train: {args.dataset} ({data['samples']} samples, "
               f"{data['features']} features, {data['classes']} classes) on {device}")
    _say(args, f"model {layers} {args.activation}, {args.optimizer} lr={args.lr:g}, "
               f"up to {args.epochs} epochs, batch {args.batch_size}")
    start = time.perf_counter()
    try:
        history = fit(model, loss_fn, optimizer, train_loader, val_loader, epochs=args.epochs,
                      scheduler=scheduler, callbacks=callbacks, device=device,
                      verbose=0 if args.quiet else 1, l1=args.l1, monitor=monitor,
                      checkpoint_dir=args.out or None,
                      checkpoint_every=(args.checkpoint_every or len(train_loader))
                      if args.out else None, resume=bool(args.resume))
    except NonFiniteLossError as exc:
        kept = f"; the last good checkpoint is kept in {checkpoint}" if checkpoint and \
            os.path.exists(checkpoint) else ""
        raise NonFiniteLossError(f"{exc}{kept}", exc.epoch, exc.batch, exc.history) from None
    train_seconds = time.perf_counter() - start
    test = evaluate(model, loss_fn, test_loader, device=device)

    metrics = {"test_accuracy": test["accuracy"], "test_loss": test["loss"],
               "test_samples": len(data["test"][1]), "epochs_run": len(history),
               "best_epoch": best.best_epoch, "train_seconds": round(train_seconds, 3),
               "device": str(device), "stop_reason": history.stop_reason,
               "gradlab_version": gl.__version__, "config": config}
    if args.out:
        _write_outputs(args.out, metrics, history, data, model)
    if history.stop_reason:
        _say(args, history.stop_reason)
    print(f"test accuracy: {test['accuracy']:.4f}  (test loss {test['loss']:.4f}, "
          f"{metrics['test_samples']} samples, best epoch {best.best_epoch} of "
          f"{len(history)}, {train_seconds:.1f} s on {device})", flush=True)
    return 0


def _save_run_args(args):
    saved = {k: v for k, v in vars(args).items() if k not in _NOT_RESUMED}
    path = os.path.join(args.out, RUN_ARGS)
    with open(path + ".tmp", "w") as f:
        json.dump(saved, f, indent=2)
        f.write("\n")
    os.replace(path + ".tmp", path)


def _load_run_args(args):
    """Take the resumed run's options from DIR/run_args.json; --out becomes DIR."""
    path = os.path.join(args.resume, RUN_ARGS)
    try:
        with open(path) as f:
            saved = json.load(f)
    except FileNotFoundError:
        raise UsageError(f"--resume {args.resume!r}: no {RUN_ARGS} there; resume a directory "
                         "that a `gradlab train --out DIR` run wrote") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"--resume: {path} cannot be read ({exc})") from None
    if not isinstance(saved, dict):
        raise UsageError(f"--resume: {path} is not a JSON object")
    if args.out and os.path.abspath(args.out) != os.path.abspath(args.resume):
        raise UsageError("--resume DIR continues in DIR; drop --out (or give the same DIR)")
    for k, v in saved.items():
        if k not in _NOT_RESUMED and hasattr(args, k):
            setattr(args, k, v)
    args.out = args.resume


def _write_outputs(out, metrics, history, data, model):
    from ..train import plot_decision_boundary, plot_history
    metrics = dict(metrics)
    metrics["checkpoint"] = CHECKPOINT
    metrics["standardization"] = {"note": "fitted on the training split; apply "
                                          "(x - mean) / scale before the model",
                                  **data["scaler"].state_dict()}
    history.to_csv(os.path.join(out, "history.csv"))
    try:
        plot_history(history, os.path.join(out, "curves.png"))
        if data["features"] == 2:
            X, y = data["train"]
            plot_decision_boundary(model, X, y, os.path.join(out, "decision_boundary.png"))
        metrics["plots"] = True
    except ImportError as exc:
        metrics["plots"] = False
        print(f"note: no curves.png: {exc}", file=sys.stderr)
    path = os.path.join(out, "metrics.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(metrics, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


# -- gradlab search --------------------------------------------------------------------------
_SEARCHABLE = {"hidden": str, "activation": str, "dropout": float, "batchnorm": bool,
               "optimizer": str, "lr": float, "momentum": float, "weight_decay": float,
               "epochs": int, "batch_size": int, "schedule": str}


def _parse_value(name, text):
    kind = _SEARCHABLE[name]
    if kind is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"--param {name}: {text!r} is not a boolean (true/false)")
    try:
        value = kind(text)
    except ValueError:
        raise UsageError(f"--param {name}: {text!r} is not a valid {kind.__name__}") from None
    allowed = {"activation": ACTIVATIONS, "optimizer": OPTIMIZERS, "schedule": SCHEDULES}
    if name in allowed and value not in allowed[name]:
        raise UsageError(f"--param {name}: unknown value {value!r}; valid choices: "
                         f"{', '.join(allowed[name])}")
    return value


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
                return name, S.int_range(*[int(n) for n in nums])
            if len(nums) != 2:
                raise ValueError("needs exactly two bounds")
            return name, (S.uniform if kind == "uniform" else S.loguniform)(*nums)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"--param {text!r}: {exc}") from None
    return name, S.choice([_parse_value(name, v) for v in spec.split("|")])


def _load_spec(text):
    try:
        if os.path.exists(text):
            with open(text) as f:
                return json.load(f)
        return json.loads(text)
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"--spec {text!r}: not a readable JSON file or JSON text ({exc})") \
            from None


def cmd_search(args):
    """Grid or random search; write the results table as CSV and print the best."""
    from ..train import grid_search, parse_space, random_search
    _check_ranges(args)
    method, trials, budget = args.method, args.trials, args.time_budget
    scoring, folds = args.scoring, args.folds
    space = {}
    if args.spec:
        spec = _load_spec(args.spec)
        raw = spec.get("space", spec) if isinstance(spec, dict) else None
        if not isinstance(raw, dict) or not raw:
            raise UsageError("--spec needs a JSON object with a non-empty 'space' object")
        unknown = [k for k in raw if k not in _SEARCHABLE]
        if unknown:
            raise UsageError(f"--spec: {', '.join(unknown)} cannot be searched; valid names: "
                             f"{', '.join(_SEARCHABLE)}")
        try:
            space.update(parse_space(raw))
        except (TypeError, ValueError) as exc:
            raise UsageError(f"--spec: {exc}") from None
        method = spec.get("method", method)
        trials = spec.get("trials", trials)
        budget = spec.get("time_budget", budget)
        scoring = spec.get("scoring", scoring)
        folds = spec.get("folds", folds)
    for text in args.param:
        name, dim = parse_param(text)
        space[name] = dim
    if not space:
        raise UsageError("nothing to search: give --param NAME=SPEC (e.g. "
                         "--param lr=loguniform:1e-4:1e-2) or --spec FILE")
    if method not in ("grid", "random"):
        raise UsageError(f"unknown method {method!r}; valid choices: grid, random")
    if args.jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {args.jobs}")
    results_dir = os.path.dirname(os.path.abspath(args.results))
    check_writable(results_dir)
    device = _device(args.device)
    data = load_splits(args)
    # Search on train + validation (the search makes its own splits); the test set stays out.
    X = data["train"][0] if data["val"] is None else \
        np.concatenate([data["train"][0], data["val"][0]])
    y = data["train"][1] if data["val"] is None else \
        np.concatenate([data["train"][1], data["val"][1]])
    import functools
    fixed = {**_config(args, device), "in_features": data["features"],
             "classes": data["classes"], "n_train": len(y)}
    build = functools.partial(build_trial, fixed)
    common = dict(scoring=scoring, k=folds, epochs=args.epochs, batch_size=args.batch_size,
                  early_stopping=args.early_stopping or None, n_jobs=args.jobs,
                  seed=args.seed, device=None if args.jobs > 1 else str(device),
                  time_budget=budget, verbose=0 if args.quiet else 1)
    _say(args, f"gradlab search: {method} search over {', '.join(space)} on {args.dataset} "
               f"({scoring} scoring, {args.jobs} worker(s))")
    start = time.perf_counter()
    if method == "grid":
        result = grid_search(build, space, (X, y), n_trials=trials, **common)
    else:
        result = random_search(build, space, (X, y),
                               n_trials=trials if trials or budget else 10, **common)
    result.to_csv(args.results)
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
          + f"  ({len(result.results)} trials, {time.perf_counter() - start:.1f} s; results "
            f"in {args.results})", flush=True)
    return 0


# -- gradlab info ----------------------------------------------------------------------------
def _version(module):
    try:
        mod = __import__(module)
        return getattr(mod, "__version__", "installed")
    except Exception:
        return "not installed"


def cmd_info(args):
    """Versions, the selected device, CuPy/GPU status and which kernels compile."""
    import gradlab as gl

    from ..backend import cuda_status, default_device
    print(f"gradlab {gl.__version__} ({os.path.dirname(gl.__file__)})")
    print(f"python {platform.python_version()} on {platform.platform()}")
    for name in ("numpy", "cupy", "matplotlib", "tqdm"):
        print(f"{name:<11}{_version(name)}")
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
    """Run benchmarks/run.py (--quick unless --full) from a source checkout."""
    script = _find_benchmarks()
    if script is None:
        print("gradlab bench: benchmarks/run.py not found; the benchmark suite ships with the "
              "source repository, not the wheel: run `gradlab bench` (or `make bench`) from "
              "a checkout", file=sys.stderr)
        return 2
    cmd = [sys.executable, script] + ([] if args.full else ["--quick"])
    print("running: " + " ".join(cmd), flush=True)
    return subprocess.call(cmd)
