"""A search's results log: the CSV a row is appended to (flushed, fsynced) as each trial
finishes, with the search's identity beside it, so that a killed search resumes from it
and a log of another search is refused."""
from __future__ import annotations

import csv
import functools
import hashlib
import json
import math
import os

import numpy as np

from .search_space import describe, dimension, python_value
from .search_trials import LOST


def atomic_write(path, write):
    """``write(f)`` into a temporary file beside ``path``, fsynced, then renamed over it:
    the file is never left half written."""
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", newline="") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _log_columns(param_names, halving):
    return ["trial", *(("rung", "epochs") if halving else ()), "score", "score_std",
            "epochs_run", "seconds", *param_names, "error"]


class ResumeError(ValueError):
    """A results log that cannot be resumed by this search (another search wrote it)."""


def _manifest_path(results_csv):
    return os.fspath(results_csv) + ".search.json"


def _number(text):
    if text is None or text == "":
        return math.nan
    if any(c in text.lower() for c in ".en"):
        return float(text)
    return int(text)


class _Log:
    """The results CSV written as trials finish (one flushed, fsynced row each), with the
    search's identity beside it (``<csv>.search.json``), so a killed search resumes."""

    def __init__(self, path, identity, param_names, halving, resume):
        self.path, self.param_names, self.halving = os.fspath(path), param_names, halving
        self.columns = _log_columns(param_names, halving)
        self.done = {}
        manifest = _manifest_path(self.path)
        if resume and os.path.exists(self.path):
            self._check_identity(manifest, identity)
            self.done = self._read()
        else:
            atomic_write(manifest, lambda f: json.dump(identity, f, indent=1, sort_keys=True))
        if not self.done:
            atomic_write(self.path, lambda f: csv.writer(f).writerow(self.columns))
        else:  # rewrite what was read, so the rows a resume appends line up with the header
            def write(f):
                writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(self.done.values())
            atomic_write(self.path, write)

    def _check_identity(self, manifest, identity):
        if not os.path.exists(manifest):
            raise ResumeError(f"resume: {self.path} has no {os.path.basename(manifest)} beside "
                             "it, so it cannot be checked to come from this search; start a "
                             "new search (without resume) or give another results file")
        with open(manifest) as f:
            saved = json.load(f)
        for key in sorted(set(saved) | set(identity)):
            if saved.get(key) != identity.get(key):
                raise ResumeError(
                    f"resume: {self.path} comes from a different search: its {key} is "
                    f"{saved.get(key)!r}, this search's is {identity.get(key)!r}; resume "
                    "with the same space and settings, or write to another results file")

    def _read(self):
        with open(self.path, newline="") as f:
            rows = list(csv.DictReader(f))
        done = {}
        for row in rows:
            if None in row.values() or None in row or not row.get("trial"):
                continue  # a row cut short by the kill
            if (row.get("error") or "").startswith(LOST):
                continue  # lost by the executor: run it again
            key = (int(row["trial"]), int(row.get("rung") or 0))
            done[key] = row
        return done

    def restored(self, key, config):
        """The outcome of an already finished job, or None; refuses a row whose
        configuration differs from the one this search gives that trial."""
        row = self.done.get(key)
        if row is None:
            return None
        for name in self.param_names:
            if row.get(name) != str(python_value(config[name])):
                raise ResumeError(
                    f"resume: {self.path}, trial {key[0]}: {name} is {row.get(name)!r} there "
                    f"but {python_value(config[name])!r} in this search; the file comes from a "
                    "different search: resume with the same space and seed, or write to "
                    "another results file")
        outcome = {k: _number(row.get(k)) for k in ("score", "score_std", "epochs_run",
                                                    "seconds")}
        if row.get("error"):
            outcome["error"] = row["error"]
        return outcome

    def append(self, row):
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore").writerow(row)
            f.flush()
            os.fsync(f.fileno())


def search_identity(method, space, settings, n_trials, build, X, y, halving):
    """What a resumed search must share with the one that wrote the log (not where or how
    fast it runs: device, compile, n_jobs, executor, time_budget)."""
    digest = hashlib.sha256()
    for a in (np.ascontiguousarray(X), np.ascontiguousarray(y)):
        digest.update(f"{a.dtype}{a.shape}".encode())
        digest.update(a.tobytes())
    kept = {k: v for k, v in settings.items() if k not in ("device", "compile")}
    identity = {"method": method, "space": {k: describe(dimension(v))
                                            for k, v in space.items()},
                "settings": kept, "n_trials": n_trials, "build": _describe_build(build),
                "data": digest.hexdigest(), "halving": halving}
    return json.loads(json.dumps(identity, default=repr))


def _describe_build(build):
    if isinstance(build, functools.partial):
        return (f"{_describe_build(build.func)}(*{build.args!r}, "
                f"**{sorted(build.keywords.items())!r})")
    return f"{getattr(build, '__module__', '?')}.{getattr(build, '__qualname__', repr(build))}"
