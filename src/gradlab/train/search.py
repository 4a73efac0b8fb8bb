"""Hyper-parameter search: grid and random search over a space, scored on a holdout split
or by k-fold cross-validation, optionally with trials in parallel worker processes.

A space maps names to a fixed value, a list (a choice), or a distribution from this
module: ``choice``, ``uniform``, ``loguniform``, ``int_range``. ``build(config)`` gets one
sampled configuration (a dict) and returns ``(model, loss_fn, optimizer[, scheduler])``;
the keys ``epochs`` and ``batch_size``, when present in the configuration, set the
training length and batch size of that trial.
"""
from __future__ import annotations

import concurrent.futures as cf
import csv
import functools
import itertools
import math
import multiprocessing
import time

import numpy as np

from .cv import _arrays, cross_validate, resolve_drop_last, train_on_split, unpack_build


class Choice:
    def __init__(self, values):
        self.values = list(values)
        if not self.values:
            raise ValueError("choice() needs at least one value")

    def sample(self, rng):
        return self.values[int(rng.integers(len(self.values)))]

    def grid(self):
        return list(self.values)

    def __repr__(self):
        return f"choice({self.values!r})"


class Uniform:
    def __init__(self, low, high, grid_points=5):
        if not low < high:
            raise ValueError(f"uniform(low, high) needs low < high, got {low}, {high}")
        self.low, self.high, self.grid_points = float(low), float(high), int(grid_points)

    def sample(self, rng):
        return float(rng.uniform(self.low, self.high))

    def grid(self):
        return [float(v) for v in np.linspace(self.low, self.high, self.grid_points)]

    def __repr__(self):
        return f"uniform({self.low}, {self.high})"


class LogUniform(Uniform):
    def __init__(self, low, high, grid_points=5):
        if low <= 0:
            raise ValueError(f"loguniform(low, high) needs low > 0, got {low}")
        super().__init__(low, high, grid_points)

    def sample(self, rng):
        return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))

    def grid(self):
        return [float(v) for v in np.geomspace(self.low, self.high, self.grid_points)]

    def __repr__(self):
        return f"loguniform({self.low}, {self.high})"


class IntRange:
    """Integers low, low + step, ..., up to and including high."""

    def __init__(self, low, high, step=1):
        if int(low) != low or int(high) != high or int(step) != step or step < 1 or low > high:
            raise ValueError(f"int_range(low, high, step) needs integers low <= high and "
                             f"step >= 1, got {low}, {high}, {step}")
        self.values = list(range(int(low), int(high) + 1, int(step)))

    def sample(self, rng):
        return self.values[int(rng.integers(len(self.values)))]

    def grid(self):
        return list(self.values)

    def __repr__(self):
        return f"int_range({self.values[0]}, {self.values[-1]})"


def choice(values):
    """One of ``values``, uniformly."""
    return Choice(values)


def uniform(low, high, grid_points=5):
    """A float uniform in [low, high] (``grid_points`` evenly spaced values in a grid)."""
    return Uniform(low, high, grid_points)


def loguniform(low, high, grid_points=5):
    """A float whose log is uniform in [log low, log high] (for learning rates, decays)."""
    return LogUniform(low, high, grid_points)


def int_range(low, high, step=1):
    """An integer in low..high inclusive, in steps of ``step``."""
    return IntRange(low, high, step)


_DISTS = (Choice, Uniform, IntRange)


def _dimension(value):
    if isinstance(value, _DISTS):
        return value
    if isinstance(value, (list, tuple)):
        return Choice(value)
    return Choice([value])


def parse_space(spec):
    """A space from JSON-like data: lists are choices; ``{"uniform": [a, b]}``,
    ``{"loguniform": [a, b]}``, ``{"int_range": [a, b]}`` (or ``[a, b, step]``) and
    ``{"choice": [...]}`` are distributions; anything else is a fixed value."""
    makers = {"choice": lambda a: Choice(a), "uniform": lambda a: Uniform(*a),
              "loguniform": lambda a: LogUniform(*a), "int_range": lambda a: IntRange(*a)}
    space = {}
    for name, value in spec.items():
        if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in makers:
            kind, args = next(iter(value.items()))
            space[name] = makers[kind](args)
        elif isinstance(value, dict):
            raise ValueError(f"search space entry {name!r}: {value!r} is not a distribution; "
                             f"use one of {', '.join(makers)} (e.g. {{\"uniform\": [0, 1]}})")
        else:
            space[name] = _dimension(value)
    return space


def grid_configs(space):
    """Every combination of the space's grid values, in order."""
    dims = {k: _dimension(v).grid() for k, v in space.items()}
    names = list(dims)
    for combo in itertools.product(*(dims[n] for n in names)):
        yield dict(zip(names, combo))


def random_configs(space, seed=0):
    """An endless stream of configurations sampled from the space."""
    rng = np.random.default_rng(seed)
    dims = {k: _dimension(v) for k, v in space.items()}
    while True:
        yield {k: d.sample(rng) for k, d in dims.items()}


def _python(value):
    return value.item() if isinstance(value, np.generic) else value


def run_trial(build, config, X, y, settings):
    """Score one configuration (module level so worker processes can run it)."""
    from ..backend import manual_seed
    manual_seed(settings["seed"])
    start = time.perf_counter()
    epochs = int(config.get("epochs", settings["epochs"]))
    batch_size = int(config.get("batch_size", settings["batch_size"]))
    trial_build = functools.partial(build, config)
    common = dict(epochs=epochs, batch_size=batch_size, standardize=settings["standardize"],
                  early_stopping=settings["early_stopping"], metrics=settings["metrics"],
                  device=settings["device"], drop_last=settings["drop_last"],
                  compile=settings["compile"])
    if settings["scoring"] == "kfold":
        result = cross_validate(trial_build, (X, y), k=settings["k"], stratify=True,
                                seed=settings["seed"], **common)
        score, std = result.mean[settings["metric"]], result.std[settings["metric"]]
        epochs_run = result.mean["epochs"]
    else:
        from ..data.splits import stratified_indices
        tr, va = stratified_indices(y, settings["val_fraction"], settings["split_seed"])
        scores = train_on_split(trial_build, X, y, tr, va, seed=settings["seed"], **common)
        score, std, epochs_run = scores[settings["metric"]], 0.0, scores["epochs"]
    return {"score": float(score), "score_std": float(std), "epochs_run": epochs_run,
            "seconds": time.perf_counter() - start}


class SearchResult:
    """Trials sorted best first (``results``: dicts with rank, trial, score, score_std,
    seconds, epochs_run and the configuration's keys), the ``best_config``, ``best_score``,
    and — when ``refit`` — the ``best_model`` retrained on all the data."""

    def __init__(self, results, metric, mode, param_names):
        self.metric, self.mode, self.param_names = metric, mode, param_names
        finite = [r for r in results if math.isfinite(r["score"])]
        broken = [r for r in results if not math.isfinite(r["score"])]
        finite.sort(key=lambda r: r["score"], reverse=(mode == "max"))
        self.results = finite + broken
        for rank, r in enumerate(self.results, 1):
            r["rank"] = rank
        self.best_model = None
        self.best_scaler = None

    @property
    def best_config(self):
        return {k: self.results[0][k] for k in self.param_names}

    @property
    def best_score(self):
        return self.results[0]["score"]

    def columns(self):
        return ["rank", "trial", "score", "score_std", "epochs_run", "seconds",
                *self.param_names]

    def to_csv(self, path):
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns(), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.results)

    def table(self, top=None):
        """The results as aligned text, best first."""
        cols = self.columns()
        rows = [[_fmt(r.get(c)) for c in cols] for r in self.results[:top]]
        widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
        line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))
        return "\n".join([line(cols)] + [line(r) for r in rows])

    def __repr__(self):
        return (f"SearchResult({len(self.results)} trials, best {self.metric}="
                f"{self.best_score:.4g} with {self.best_config})")


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _search(build, configs, X, y, *, metric, mode, n_trials, time_budget, n_jobs, settings,
            param_names, refit, verbose):
    if n_trials is not None and n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    if time_budget is not None and time_budget <= 0:
        raise ValueError(f"time_budget must be > 0 seconds, got {time_budget}")
    deadline = time.monotonic() + time_budget if time_budget else None
    configs = itertools.islice(configs, n_trials) if n_trials else configs
    results = []

    def record(trial, config, outcome):
        row = {"trial": trial, **{k: _python(v) for k, v in config.items()}, **outcome}
        results.append(row)
        if verbose:
            print(f"trial {trial}: {metric}={outcome['score']:.4g}  {config}", flush=True)

    def out_of_time():
        return deadline is not None and time.monotonic() >= deadline

    if n_jobs == 1:
        for trial, config in enumerate(configs, 1):
            if out_of_time() and results:
                break
            record(trial, config, _safe_trial(build, config, X, y, settings))
    else:
        # Spawned workers: no inherited CUDA context or locks; `build` must be importable.
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=n_jobs, mp_context=ctx) as pool:
            pending = {}
            stream = enumerate(configs, 1)
            exhausted = False
            while True:
                while not exhausted and len(pending) < n_jobs and not \
                        (out_of_time() and (results or pending)):
                    nxt = next(stream, None)
                    if nxt is None:
                        exhausted = True
                        break
                    trial, config = nxt
                    pending[pool.submit(_safe_trial, build, config, X, y, settings)] = \
                        (trial, config)
                if not pending:
                    break
                done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    trial, config = pending.pop(fut)
                    record(trial, config, fut.result())
    if not results:
        raise ValueError("the search ran no trial: the space or budget is empty")
    result = SearchResult(results, metric, mode, param_names)
    if refit and math.isfinite(result.best_score):
        _refit(build, result, X, y, settings)
    return result


def _safe_trial(build, config, X, y, settings):
    """A trial whose training diverges scores NaN (ranked last) instead of ending the
    search; other errors (bugs, bad configuration) propagate."""
    from .loop import NonFiniteLossError
    try:
        return run_trial(build, config, X, y, settings)
    except NonFiniteLossError as exc:
        return {"score": math.nan, "score_std": math.nan, "epochs_run": exc.epoch,
                "seconds": math.nan, "error": str(exc)}


def _refit(build, result, X, y, settings):
    from ..backend import manual_seed
    from ..data import DataLoader, StandardScaler, TensorDataset
    from .loop import fit
    manual_seed(settings["seed"])
    config = result.best_config
    if settings["standardize"]:
        result.best_scaler = StandardScaler().fit(X)
        X = result.best_scaler.transform(X)
    model, loss_fn, optimizer, scheduler = unpack_build(build(config))
    batch_size = int(config.get("batch_size", settings["batch_size"]))
    loader = DataLoader(TensorDataset(X, y), batch_size=batch_size, shuffle=True,
                        seed=settings["seed"], device=settings["device"],
                        drop_last=resolve_drop_last(settings["drop_last"], model, len(X),
                                                    batch_size))
    epochs = result.results[0]["epochs_run"] if settings["early_stopping"] else \
        int(config.get("epochs", settings["epochs"]))
    fit(model, loss_fn, optimizer, loader, epochs=max(1, int(round(epochs))),
        scheduler=None if scheduler is not None and
        type(scheduler).__name__ == "ReduceLROnPlateau" else scheduler,
        metrics=settings["metrics"], device=settings["device"], verbose=0,
        compile=settings["compile"])
    result.best_model = model


def _settings(metric, scoring, k, val_fraction, epochs, batch_size, standardize,
              early_stopping, metrics, seed, device, drop_last=False, compile=False):
    if scoring not in ("holdout", "kfold"):
        raise ValueError(f"scoring must be 'holdout' or 'kfold', got {scoring!r}")
    from .metrics import resolve_metrics
    valid = ["val_loss"] + [f"val_{name}" for name, _ in resolve_metrics(metrics)]
    if metric not in valid:
        raise ValueError(f"metric {metric!r} is not recorded; valid choices: "
                         f"{', '.join(valid)}")
    return {"metric": metric, "scoring": scoring, "k": k, "val_fraction": val_fraction,
            "epochs": epochs, "batch_size": batch_size, "standardize": standardize,
            "early_stopping": early_stopping, "metrics": tuple(metrics), "seed": seed,
            "split_seed": seed, "device": device, "drop_last": drop_last,
            "compile": bool(compile)}


def _metric_mode(metric, mode):
    from .history import resolve_mode
    return resolve_mode(metric, mode)


def grid_search(build, space, dataset, *, scoring="holdout", k=3, val_fraction=0.2,
                epochs=10, batch_size=32, metric="val_accuracy", mode="auto",
                n_trials=None, time_budget=None, n_jobs=1, standardize=False,
                early_stopping=None, metrics=("accuracy",), refit=True, seed=0, device=None,
                verbose=0, drop_last=False, compile=False):
    """Try every combination of the space's values (uniform/loguniform contribute
    ``grid_points`` values each), stopping early at ``n_trials`` trials or after
    ``time_budget`` seconds (the trial running at the deadline finishes). Each trial is
    scored on a stratified holdout split (``val_fraction``) or by ``k``-fold
    cross-validation (``scoring="kfold"``). ``n_jobs`` > 1 runs trials in that many worker
    processes (``build`` must then be a module-level function). ``drop_last`` applies to the
    training batches: True, False, or "auto" (True for models with BatchNorm1d, which
    cannot train on a 1-row batch). ``compile``: every trial trains with a compiled step
    (see ``fit``). Returns a SearchResult; with ``refit`` the best configuration is
    retrained on all of ``dataset``."""
    X, y = _arrays(dataset)
    settings = _settings(metric, scoring, k, val_fraction, epochs, batch_size, standardize,
                         early_stopping, metrics, seed, device,
                         drop_last, compile)
    return _search(build, grid_configs(space), X, y, metric=metric,
                   mode=_metric_mode(metric, mode), n_trials=n_trials,
                   time_budget=time_budget, n_jobs=n_jobs, settings=settings,
                   param_names=list(space), refit=refit, verbose=verbose)


def random_search(build, space, dataset, *, n_trials=20, time_budget=None,
                  scoring="holdout", k=3, val_fraction=0.2, epochs=10, batch_size=32,
                  metric="val_accuracy", mode="auto", n_jobs=1, standardize=False,
                  early_stopping=None, metrics=("accuracy",), refit=True, seed=0,
                  device=None, verbose=0, drop_last=False, compile=False):
    """Sample configurations from the space (seeded by ``seed``) until ``n_trials`` trials
    have run or ``time_budget`` seconds have passed (give ``n_trials=None`` for a budget in
    seconds only). Scoring, parallelism and refitting as in ``grid_search``."""
    if n_trials is None and time_budget is None:
        raise ValueError("random_search needs a budget: n_trials, time_budget or both")
    X, y = _arrays(dataset)
    settings = _settings(metric, scoring, k, val_fraction, epochs, batch_size, standardize,
                         early_stopping, metrics, seed, device,
                         drop_last, compile)
    return _search(build, random_configs(space, seed), X, y, metric=metric,
                   mode=_metric_mode(metric, mode), n_trials=n_trials,
                   time_budget=time_budget, n_jobs=n_jobs, settings=settings,
                   param_names=list(space), refit=refit, verbose=verbose)
