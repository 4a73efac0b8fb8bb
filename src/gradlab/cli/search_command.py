"""``gradlab search``: the searched options parsed from --param/--spec and checked like
the options themselves, the executors trials run on (worker processes, MPI, Dask), and the
search's report."""
from __future__ import annotations

import json
import math
import os
import time

import numpy as np

from .inputs import (
    check_env,
    check_model_fits,
    check_ranges,
    check_writable,
    choose_device,
    load_splits,
    run_config,
    say,
)
from .main import UsageError
from .model import ACTIVATIONS, OPTIMIZERS, SCHEDULES, build_trial, default_lr, parse_hidden

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
    from ..train import search_space as S
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
    from ..train import search_space as S
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
    check_ranges(args)
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
    device = choose_device(args.device)
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
    if args.lr is None and "optimizer" not in space:
        args.lr = default_lr(args.optimizer)  # (a searched optimizer: each trial's own)
    fixed = {**run_config(args, device), "in_features": data["features"],
             "classes": data["classes"], "n_train": len(y)}
    del fixed["device"]  # where trials run is not part of the search (nor of its resume)
    build = functools.partial(build_trial, fixed)
    if args.resume and not os.path.exists(args.results):
        say(args, f"gradlab search: --resume: {args.results} does not exist yet; starting "
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
                  compile=bool(args.compile), executor=executor, results_csv=args.results,
                  resume=args.resume, halving=args.halving, eta=args.eta,
                  min_epochs=args.min_epochs)
    say(args, f"gradlab search: {method} search over {', '.join(space)} on {args.dataset} "
               f"({scoring} scoring, {where}"
               + (f", successive halving with eta={args.eta}" if args.halving else "") + ")")
    if _values(space, "batchnorm", args.batchnorm) != {False}:
        say(args, "note: trials with BatchNorm train on batches with drop_last=True (as in "
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
    say(args, result.table(top=10))
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
    from ..train import search_space as S
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
