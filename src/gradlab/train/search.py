"""Hyper-parameter search: grid and random search over a space, scored on a holdout split
or by k-fold cross-validation; trials run here, in local worker processes or on any
``concurrent.futures.Executor`` (a Dask cluster), log their results to a CSV a killed search
resumes from, and can share a budget of epochs by successive halving.

A space maps names to a fixed value, a list (a choice), or a distribution from this
module: ``choice``, ``uniform``, ``loguniform``, ``int_range``. ``build(config)`` gets one
sampled configuration (a dict) and returns ``(model, loss_fn, optimizer[, scheduler])``;
the keys ``epochs`` and ``batch_size``, when present in the configuration, set the
training length and batch size of that trial.
"""
from __future__ import annotations

import concurrent.futures as cf
import csv
import itertools
import math
import time

import numpy as np

from .cv import _arrays, resolve_drop_last, unpack_build
from .search_log import ResumeError, _Log, atomic_write, search_identity
from .search_space import grid_configs, python_value, random_configs
from .search_trials import _Trials, run_trial

__all__ = ["ResumeError", "SearchResult", "grid_search", "halving_schedule", "random_search",
           "run_trial"]


class SearchResult:
    """Trials sorted best first (``results``: dicts with rank, trial, score, score_std,
    seconds, epochs_run and the configuration's keys; with successive halving also rung and
    epochs, the top rung first), the ``best_config``, ``best_score``, and — when ``refit`` —
    the ``best_model`` retrained on all the data. ``epochs_planned``: the epochs all trials
    together were given (their sum over the rows, before any early stopping)."""

    def __init__(self, results, metric, mode, param_names, halving=False):
        self.metric, self.mode, self.param_names = metric, mode, param_names
        self.halving = halving
        self.results = sorted(results, key=lambda r: _rank_key(r, mode))
        for rank, r in enumerate(self.results, 1):
            r["rank"] = rank
        self.best_model = None
        self.best_scaler = None
        self.epochs_planned = None

    @property
    def best_config(self):
        return {k: self.results[0][k] for k in self.param_names}

    @property
    def best_score(self):
        return self.results[0]["score"]

    def columns(self):
        cols = ["rank", "trial", *(("rung", "epochs") if self.halving else ()), "score",
                "score_std", "epochs_run", "seconds", *self.param_names]
        if any(r.get("error") for r in self.results):
            cols.append("error")
        return cols

    def to_csv(self, path):
        """The table, best first; written to a temporary file then renamed over ``path``,
        so a search's results log is never left half written."""
        def write(f):
            writer = csv.DictWriter(f, fieldnames=self.columns(), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.results)
        atomic_write(path, write)

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


def _rank_key(row, mode):
    """Top rung first; then finite scores best first, ties by trial number; NaN last."""
    score = row["score"]
    finite = math.isfinite(score)
    return (-int(row.get("rung", 0)), not finite,
            (-score if mode == "max" else score) if finite else 0.0, row["trial"])


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


# -- successive halving ----------------------------------------------------------------------
def halving_schedule(n_candidates, max_epochs, eta=3, min_epochs=1):
    """Rungs of successive halving as ``[(candidates, epochs), ...]``: rung 0 trains all
    ``n_candidates`` for few epochs, each next rung the best ``ceil(n / eta)`` of the one
    before for ``eta`` times the epochs, the last for ``max_epochs`` (as scikit-learn's
    HalvingRandomSearchCV with ``min_resources="exhaust"``, the resource being epochs)."""
    if eta < 2 or int(eta) != eta:
        raise ValueError(f"eta must be a whole number >= 2, got {eta}")
    if min_epochs < 1 or min_epochs > max_epochs:
        raise ValueError(f"min_epochs must be in 1..epochs ({max_epochs}), got {min_epochs}")
    by_candidates = int(math.floor(math.log(n_candidates) / math.log(eta) + 1e-9))
    by_epochs = int(math.floor(math.log(max_epochs / min_epochs) / math.log(eta) + 1e-9))
    n_rungs = 1 + min(by_candidates, by_epochs)
    rungs, n = [], n_candidates
    for k in range(n_rungs):
        epochs = max(min_epochs, int(round(max_epochs / eta ** (n_rungs - 1 - k))))
        rungs.append((n, epochs))
        n = max(1, math.ceil(n / eta))
    return rungs


# -- the search ------------------------------------------------------------------------------
def _search(build, configs, X, y, *, metric, mode, n_trials, time_budget, n_jobs, settings,
            param_names, refit, verbose, executor=None, halving=None, results_csv=None,
            resume=False, identity=None):
    if n_trials is not None and n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    if time_budget is not None and time_budget <= 0:
        raise ValueError(f"time_budget must be > 0 seconds, got {time_budget}")
    if n_jobs < 1:
        raise ValueError(f"n_jobs must be >= 1, got {n_jobs}")
    if executor is not None and not isinstance(executor, cf.Executor):
        raise TypeError(f"executor must be a concurrent.futures.Executor, got "
                        f"{type(executor).__name__}")
    if resume and results_csv is None:
        raise ValueError("resume=True needs results_csv, the log of the search to resume")
    deadline = time.monotonic() + time_budget if time_budget else None
    configs = itertools.islice(configs, n_trials) if n_trials else configs
    log = _Log(results_csv, identity, param_names, halving is not None, resume) \
        if results_csv is not None else None
    results, planned = [], [0]

    def out_of_time():
        return deadline is not None and time.monotonic() >= deadline

    def record(job, outcome, restored=False):
        (trial, rung), config, rung_settings = job
        row = {"trial": trial, **{k: python_value(v) for k, v in config.items()}, **outcome}
        if halving is not None:
            row.update(rung=rung, epochs=rung_settings["epochs"])
        results.append(row)
        planned[0] += int(config.get("epochs", rung_settings["epochs"]))
        if log is not None and not restored:
            log.append(row)
        if verbose and not restored:
            where = f" (rung {rung}, {rung_settings['epochs']} epochs)" if halving else ""
            shown = {k: v for k, v in config.items() if k in param_names}
            print(f"trial {trial}{where}: {metric}={outcome['score']:.4g}  {shown}",
                  flush=True)

    def jobs(pairs, rung, rung_settings):
        """The jobs of one rung that the log does not already hold."""
        for trial, config in pairs:
            job = ((trial, rung), config, rung_settings)
            outcome = log.restored(job[0], config) if log else None
            if outcome is not None:
                record(job, outcome, restored=True)
            else:
                yield job

    with _Trials(build, X, y, executor, n_jobs, out_of_time) as trials:
        if halving is None:
            trials.run(jobs(enumerate(configs, 1), 0, settings), record, lambda: results)
        else:
            candidates = list(enumerate(configs, 1))
            for rung, (count, epochs) in enumerate(halving_schedule(
                    len(candidates), settings["epochs"], *halving)):
                if rung:  # promote the best `count` of the rung before (ties: lower trial)
                    before = sorted((r for r in results if r["rung"] == rung - 1
                                     and math.isfinite(r["score"])),
                                    key=lambda r: _rank_key(r, mode))
                    keep = {r["trial"] for r in before[:count]}
                    candidates = [c for c in candidates if c[0] in keep]
                    if not candidates or out_of_time():
                        break
                # The build sees the rung's epochs too (an LR schedule spans them).
                trials.run(jobs([(t, {**c, "epochs": epochs}) for t, c in candidates], rung,
                                {**settings, "epochs": epochs}), record, lambda: results)
    if not results:
        raise ValueError("the search ran no trial: the space or budget is empty")
    result = SearchResult(results, metric, mode, param_names, halving=halving is not None)
    result.epochs_planned = planned[0]
    if refit and math.isfinite(result.best_score):
        _refit(build, result, X, y, settings)
    return result


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
    if not isinstance(compile, (bool, np.bool_)):  # (compile="no" would compile)
        raise TypeError(f"compile must be True or False, got {compile!r}")
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


def _halving(halving, eta, min_epochs, space, epochs):
    if not halving:
        return None
    if "epochs" in space:
        raise ValueError("halving=True sets each rung's epochs itself; take 'epochs' out of "
                         "the space (the epochs argument is the top rung's)")
    halving_schedule(1, int(epochs), eta, min_epochs)  # checks eta and min_epochs
    return [int(eta), int(min_epochs)]


def _run_search(method, build, space, dataset, configs, *, n_trials, metric, mode, settings,
                time_budget, n_jobs, executor, halving, eta, min_epochs, results_csv, resume,
                refit, verbose):
    X, y = _arrays(dataset)
    halving = _halving(halving, eta, min_epochs, space, settings["epochs"])
    if halving is not None and n_trials is None and method == "random":
        raise ValueError("halving=True needs n_trials: the number of rung-0 candidates")
    identity = search_identity(method, space, settings, n_trials, build, X, y, halving) \
        if results_csv is not None else None
    return _search(build, configs, X, y, metric=metric, mode=_metric_mode(metric, mode),
                   n_trials=n_trials, time_budget=time_budget, n_jobs=n_jobs,
                   settings=settings, param_names=list(space), refit=refit, verbose=verbose,
                   executor=executor, halving=halving, results_csv=results_csv,
                   resume=resume, identity=identity)


def grid_search(build, space, dataset, *, scoring="holdout", k=3, val_fraction=0.2,
                epochs=10, batch_size=32, metric="val_accuracy", mode="auto",
                n_trials=None, time_budget=None, n_jobs=1, standardize=False,
                early_stopping=None, metrics=("accuracy",), refit=True, seed=0, device=None,
                verbose=0, drop_last=False, compile=False, executor=None, results_csv=None,
                resume=False, halving=False, eta=3, min_epochs=1):
    """Try every combination of the space's values (uniform/loguniform contribute
    ``grid_points`` values each), stopping early at ``n_trials`` trials or after
    ``time_budget`` seconds (the trial running at the deadline finishes). Each trial is
    scored on a stratified holdout split (``val_fraction``) or by ``k``-fold
    cross-validation (``scoring="kfold"``). ``drop_last`` applies to the
    training batches: True, False, or "auto" (True for models with BatchNorm1d, which
    cannot train on a 1-row batch). ``compile``: every trial trains with a compiled step
    (see ``fit``). Returns a SearchResult; with ``refit`` the best configuration is
    retrained on all of ``dataset``.

    Where trials run: one after the other in this process; with ``n_jobs`` > 1 in that
    many spawned worker processes (``build`` must then be importable, e.g. a module-level
    function or a ``functools.partial`` of one); or on ``executor``, any
    ``concurrent.futures.Executor`` (a Dask ``Client(address).get_executor()``, an
    ``mpi4py.futures.MPIPoolExecutor``, a ProcessPoolExecutor), ``n_jobs`` then being how
    many trials are in flight at once (default: the executor's ``max_workers``, else 8).
    Every trial seeds itself from ``seed`` alone, and the table is assembled by trial
    number, so the results are the same wherever and in whatever order trials finish. A
    trial the executor loses (its worker killed) is submitted once more, then recorded as
    failed with the reason (score NaN, ranked last); the search goes on.

    ``results_csv``: a file the results are appended to as each trial finishes (flushed
    and fsynced), with the search's identity beside it in ``<results_csv>.search.json``;
    ``resume=True`` keeps the trials already there (matched by trial number and
    configuration) and runs the rest, ending with the same table as a search that was never
    stopped. A log from another search (other space, settings, data or build) is refused.

    ``halving=True``: successive halving over epochs (see ``halving_schedule``): all
    candidates train for a few epochs, the best 1/``eta`` of them for ``eta`` times as
    many, and so on up to ``epochs``; each rung trains from scratch, as scikit-learn's
    HalvingRandomSearchCV does (``build`` sees the rung's ``config["epochs"]``). The table
    has one row per trial and rung, with its rung and epochs, the top rung first;
    ``result.epochs_planned`` is the epochs spent."""
    settings = _settings(metric, scoring, k, val_fraction, epochs, batch_size, standardize,
                         early_stopping, metrics, seed, device,
                         drop_last, compile)
    return _run_search("grid", build, space, dataset, grid_configs(space), n_trials=n_trials,
                       metric=metric, mode=mode, settings=settings, time_budget=time_budget,
                       n_jobs=n_jobs, executor=executor, halving=halving, eta=eta,
                       min_epochs=min_epochs, results_csv=results_csv, resume=resume,
                       refit=refit, verbose=verbose)


def random_search(build, space, dataset, *, n_trials=20, time_budget=None,
                  scoring="holdout", k=3, val_fraction=0.2, epochs=10, batch_size=32,
                  metric="val_accuracy", mode="auto", n_jobs=1, standardize=False,
                  early_stopping=None, metrics=("accuracy",), refit=True, seed=0,
                  device=None, verbose=0, drop_last=False, compile=False, executor=None,
                  results_csv=None, resume=False, halving=False, eta=3, min_epochs=1):
    """Sample configurations from the space (seeded by ``seed``) until ``n_trials`` trials
    have run or ``time_budget`` seconds have passed (give ``n_trials=None`` for a budget in
    seconds only). Scoring, where trials run, the results log and resuming, halving and
    refitting as in ``grid_search``; with ``halving=True``, ``n_trials`` is the number of
    rung-0 candidates."""
    if n_trials is None and time_budget is None:
        raise ValueError("random_search needs a budget: n_trials, time_budget or both")
    settings = _settings(metric, scoring, k, val_fraction, epochs, batch_size, standardize,
                         early_stopping, metrics, seed, device,
                         drop_last, compile)
    return _run_search("random", build, space, dataset, random_configs(space, seed),
                       n_trials=n_trials, metric=metric, mode=mode, settings=settings,
                       time_budget=time_budget, n_jobs=n_jobs, executor=executor,
                       halving=halving, eta=eta, min_epochs=min_epochs,
                       results_csv=results_csv, resume=resume, refit=refit, verbose=verbose)
