"""Where a search's trials run: inline, in a pool of spawned worker processes, or on any
``concurrent.futures.Executor`` (a Dask cluster, MPI); a trial an executor loses is
submitted once more, then recorded as failed."""
from __future__ import annotations

import concurrent.futures as cf
import functools
import math
import multiprocessing
import pickle
import time
import traceback

from .cv import cross_validate, train_on_split


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


def _safe_trial(build, config, X, y, settings):
    """A trial whose training diverges scores NaN (ranked last) instead of ending the
    search; other errors (bugs, bad configuration) propagate."""
    from .loop import NonFiniteLossError
    try:
        return run_trial(build, config, X, y, settings)
    except NonFiniteLossError as exc:
        return {"score": math.nan, "score_std": math.nan, "epochs_run": exc.epoch,
                "seconds": math.nan, "error": str(exc)}


LOST = "lost: "  # the error of a trial whose worker was lost twice (rerun by a resume)


def _worker_trial(build, config, X, y, settings):
    """A trial as an executor runs it: an exception of the trial itself comes back as a
    value, so that any exception the future raises means the executor lost the trial."""
    try:
        return _safe_trial(build, config, X, y, settings)
    except Exception as exc:
        try:
            pickle.dumps(exc)
        except Exception:
            exc = RuntimeError(f"{type(exc).__name__}: {exc}")
        return {"raised": exc, "traceback": traceback.format_exc()}


class _Trials:
    """Runs jobs (key, config, settings) inline, in an own pool of ``n_jobs`` spawned
    processes, or on a given executor, and hands each outcome to ``done`` as it finishes.
    A trial the executor loses (a killed worker, a broken pool) is submitted once more,
    then recorded as failed with the reason."""

    def __init__(self, build, X, y, executor, n_jobs, out_of_time):
        self.build, self.X, self.y = build, X, y
        self.executor, self.own = executor, executor is None and n_jobs > 1
        self.n_jobs, self.out_of_time = n_jobs, out_of_time
        self.pool = None

    def __enter__(self):
        if self.own:
            self.pool = self._new_pool()
        return self

    def __exit__(self, *exc):
        if self.own and self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def _new_pool(self):
        # Spawned workers: no inherited CUDA context or locks; `build` must be importable.
        ctx = multiprocessing.get_context("spawn")
        return cf.ProcessPoolExecutor(max_workers=self.n_jobs, mp_context=ctx)

    def _width(self):
        if self.n_jobs > 1:
            return self.n_jobs
        return getattr(self.executor, "_max_workers", None) or 8

    def _submit(self, job):
        pool = self.pool if self.own else self.executor
        _, config, settings = job
        try:
            return pool.submit(_worker_trial, self.build, config, self.X, self.y, settings)
        except cf.BrokenExecutor:
            if not self.own:
                raise
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = self._new_pool()
            return self.pool.submit(_worker_trial, self.build, config, self.X, self.y,
                                    settings)

    def run(self, jobs, done, started):
        """``started()``: whether any trial has a result already (the time budget lets the
        first trial run)."""
        if self.executor is None and not self.own:
            for job in jobs:
                if self.out_of_time() and started():
                    break
                done(job, _safe_trial(self.build, job[1], self.X, self.y, job[2]))
            return
        pending, tries, stream, exhausted = {}, {}, iter(jobs), False
        try:
            while True:
                while not exhausted and len(pending) < self._width() and not \
                        (self.out_of_time() and (started() or pending)):
                    job = next(stream, None)
                    if job is None:
                        exhausted = True
                        break
                    tries[job[0]] = 1
                    pending[self._submit(job)] = job
                if not pending:
                    break
                finished, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for fut in sorted(finished, key=lambda f: pending[f][0]):
                    job = pending.pop(fut)
                    try:
                        outcome = fut.result()
                    except Exception as exc:  # the executor lost it, not the trial failing
                        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
                        if tries[job[0]] < 2:
                            tries[job[0]] += 1
                            pending[self._submit(job)] = job
                            continue
                        outcome = {"score": math.nan, "score_std": math.nan,
                                   "epochs_run": 0, "seconds": math.nan,
                                   "error": f"{LOST}tried twice, the executor lost it "
                                            f"({reason[:300]})"}
                    if "raised" in outcome:
                        raise outcome["raised"]
                    done(job, outcome)
        finally:
            for fut in pending:
                fut.cancel()
