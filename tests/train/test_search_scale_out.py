"""Search over any executor (a real Dask cluster on loopback among them), a lost worker,
the results log and resuming from it, and successive halving."""
import concurrent.futures as cf
import csv
import functools
import os
import signal
import threading
import time

import pytest

import dask_cluster
from gradlab.cli.model import build_trial
from gradlab.data import make_moons
from gradlab.train import grid_search, loguniform, random_search
from gradlab.train.search import halving_schedule

FIXED = {"in_features": 2, "classes": 2, "n_train": 64, "hidden": "8", "activation": "tanh",
         "dropout": 0.0, "batchnorm": False, "optimizer": "sgd", "lr": 0.1, "momentum": 0.0,
         "weight_decay": 0.0, "epochs": 2, "batch_size": 16, "schedule": "none"}
BUILD = functools.partial(build_trial, FIXED)  # importable: worker processes can load it


def _data(n=80, noise=0.1):
    return make_moons(n, noise=noise, seed=0)


def _table(result):
    """The results table without the wall-clock column."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in result.results]


class LastFirst(cf.Executor):
    """Runs nothing until ``n`` trials are submitted, then finishes them last first, one at
    a time: the opposite of the order a local run finishes them in."""

    def __init__(self, n):
        self.n, self.jobs = n, []

    def submit(self, fn, *args, **kwargs):
        future = cf.Future()
        self.jobs.append((future, fn, args, kwargs))
        if len(self.jobs) == self.n:
            threading.Thread(target=self._run).start()
        return future

    def _run(self):
        for future, fn, args, kwargs in reversed(self.jobs):
            future.set_result(fn(*args, **kwargs))
            time.sleep(0.02)


def test_any_executor_gives_the_local_table_whatever_the_finishing_order():
    X, y = _data()
    space = {"lr": [0.3, 0.01, 0.3, 0.1]}  # two equal trials: the tie goes to trial 2
    local = grid_search(BUILD, space, (X, y), epochs=2, refit=False, seed=1)
    reversed_order = grid_search(BUILD, space, (X, y), epochs=2, refit=False, seed=1,
                                 executor=LastFirst(4))
    with cf.ThreadPoolExecutor(2) as pool:
        threads = grid_search(BUILD, space, (X, y), epochs=2, refit=False, seed=1,
                              executor=pool)
    assert _table(reversed_order) == _table(local) == _table(threads)
    assert [r["trial"] for r in local.results][:2] == [1, 3]  # equal scores, lower trial first
    with pytest.raises(TypeError, match="concurrent.futures.Executor"):
        grid_search(BUILD, space, (X, y), executor=object())


class Flaky(cf.ThreadPoolExecutor):
    """Loses the trials with lr in ``lose`` the first ``times`` times (as if their worker
    died), by failing their futures with the error an executor gives then."""

    def __init__(self, lose, times):
        super().__init__(2)
        self.lose, self.times, self.lost = lose, times, {}

    def submit(self, fn, *args, **kwargs):
        lr = args[1]["lr"]
        if lr in self.lose and self.lost.get(lr, 0) < self.times:
            self.lost[lr] = self.lost.get(lr, 0) + 1
            future = cf.Future()
            future.set_exception(cf.BrokenExecutor("worker died (test)"))
            return future
        return super().submit(fn, *args, **kwargs)


def test_a_lost_trial_is_submitted_again_then_recorded_as_failed():
    X, y = _data()
    space = {"lr": [0.01, 0.1, 0.3]}
    local = grid_search(BUILD, space, (X, y), epochs=2, refit=False)
    with Flaky(lose={0.1}, times=1) as pool:  # lost once: the second try runs it
        once = grid_search(BUILD, space, (X, y), epochs=2, refit=False, executor=pool)
    assert _table(once) == _table(local) and pool.lost == {0.1: 1}
    with Flaky(lose={0.1}, times=5) as pool:  # lost every time: failed, the rest complete
        always = grid_search(BUILD, space, (X, y), epochs=2, refit=False, executor=pool)
    assert pool.lost == {0.1: 2}
    failed = always.results[-1]
    assert failed["lr"] == 0.1 and failed["score"] != failed["score"]
    assert failed["error"].startswith("lost: tried twice") and "worker died" in failed["error"]
    assert [r["score"] for r in always.results[:2]] == \
        [r["score"] for r in local.results if r["lr"] != 0.1]


@pytest.fixture(scope="module")
def dask_client(tmp_path_factory):
    dask_cluster.require_dask()
    with dask_cluster.cluster(str(tmp_path_factory.mktemp("dask"))) as (address, client):
        yield client


def test_dask_cluster_gives_the_local_table(dask_client):
    X, y = _data()
    space = {"lr": loguniform(1e-3, 1.0), "hidden": ["8", "4"]}
    local = random_search(BUILD, space, (X, y), n_trials=6, epochs=2, refit=False, seed=3)
    dask = random_search(BUILD, space, (X, y), n_trials=6, epochs=2, refit=False, seed=3,
                         executor=dask_client.get_executor())
    assert _table(dask) == _table(local)
    workers = {w["name"] for w in dask_client.scheduler_info()["workers"].values()}
    assert workers == {"w0", "w1"}


def test_a_worker_killed_mid_trial_loses_no_work(dask_client, tmp_path):
    X, y = _data(120)
    space = {"epochs": [2, 1500, 3, 2]}  # trial 2 is slow: about a second
    local = grid_search(BUILD, space, (X, y), refit=False)
    build = functools.partial(dask_cluster.marked_build, str(tmp_path), FIXED)
    done = {}

    def search():
        done["result"] = grid_search(build, space, (X, y), refit=False,
                                     executor=dask_client.get_executor())

    thread = threading.Thread(target=search)
    thread.start()
    deadline = time.monotonic() + 60
    while not any(n.startswith("1500-") for n in os.listdir(tmp_path)):
        assert time.monotonic() < deadline, "the slow trial never started"
        time.sleep(0.02)
    victim = int(next(n for n in os.listdir(tmp_path) if n.startswith("1500-")).split("-")[1])
    time.sleep(0.2)
    os.kill(victim, signal.SIGKILL)  # the worker process itself, in the middle of the trial
    thread.join(timeout=120)
    assert not thread.is_alive()
    starts = sorted(n for n in os.listdir(tmp_path) if n.startswith("1500-"))
    assert len(starts) == 2 and str(victim) in starts[0] + starts[1]  # ran again elsewhere
    result = done["result"]
    assert _table(result) == _table(local)  # nothing lost, nothing different
    assert all(r.get("error") is None for r in result.results)


def test_own_worker_processes_killed_mid_trial_are_replaced(tmp_path):
    # n_jobs=2 is the executor path with an own pool: killing one of its processes breaks
    # the pool, which is rebuilt, and the trials it held run again.
    X, y = _data(120)
    space = {"epochs": [2, 1500, 3]}
    local = grid_search(BUILD, space, (X, y), refit=False)
    build = functools.partial(dask_cluster.marked_build, str(tmp_path), FIXED)
    done = {}
    thread = threading.Thread(target=lambda: done.update(result=grid_search(
        build, space, (X, y), refit=False, n_jobs=2)))
    thread.start()
    deadline = time.monotonic() + 60
    while not any(n.startswith("1500-") for n in os.listdir(tmp_path)):
        assert time.monotonic() < deadline, "the slow trial never started"
        time.sleep(0.02)
    time.sleep(0.2)
    os.kill(int(next(n for n in os.listdir(tmp_path) if n.startswith("1500-"))[5:]),
            signal.SIGKILL)
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert len([n for n in os.listdir(tmp_path) if n.startswith("1500-")]) == 2
    assert _table(done["result"]) == _table(local)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_results_log_row_by_row_and_resume_gives_the_uninterrupted_table(tmp_path):
    X, y = _data()
    space = {"lr": loguniform(1e-3, 1.0)}
    full = random_search(BUILD, space, (X, y), n_trials=5, epochs=2, refit=False, seed=2)
    log = tmp_path / "log.csv"
    first = random_search(BUILD, space, (X, y), n_trials=5, epochs=2, refit=False, seed=2,
                          results_csv=log)
    rows = _rows(log)  # in finishing order, one row per trial, before any ranking
    assert [r["trial"] for r in rows] == ["1", "2", "3", "4", "5"] and "rank" not in rows[0]
    assert _table(first) == _table(full)
    # As a kill leaves it: two rows and half of a third.
    text = log.read_text().splitlines(keepends=True)
    log.write_text("".join(text[:3]) + text[3][:12])
    resumed = random_search(BUILD, space, (X, y), n_trials=5, epochs=2, refit=False, seed=2,
                            results_csv=log, resume=True)
    assert _table(resumed) == _table(full)
    kept = {r["trial"]: r["seconds"] for r in resumed.results}
    assert [repr(kept[1]), repr(kept[2])] == [rows[0]["seconds"], rows[1]["seconds"]]
    assert sorted(int(r["trial"]) for r in _rows(log)) == [1, 2, 3, 4, 5]
    # A log of another search is refused, naming what differs.
    with pytest.raises(ValueError, match="different search: its n_trials is 5"):
        random_search(BUILD, space, (X, y), n_trials=6, epochs=2, refit=False, seed=2,
                      results_csv=log, resume=True)
    with pytest.raises(ValueError, match="different search: its space"):
        random_search(BUILD, {"lr": loguniform(1e-2, 1.0)}, (X, y), n_trials=5, epochs=2,
                      refit=False, seed=2, results_csv=log, resume=True)
    os.remove(str(log) + ".search.json")
    with pytest.raises(ValueError, match="cannot be checked"):
        random_search(BUILD, space, (X, y), n_trials=5, epochs=2, refit=False, seed=2,
                      results_csv=log, resume=True)
    with pytest.raises(ValueError, match="needs results_csv"):
        random_search(BUILD, space, (X, y), n_trials=5, resume=True)


def test_halving_schedule_rungs():
    assert halving_schedule(27, 27) == [(27, 1), (9, 3), (3, 9), (1, 27)]
    assert halving_schedule(9, 27) == [(9, 3), (3, 9), (1, 27)]
    assert halving_schedule(30, 10, eta=2, min_epochs=2) == [(30, 2), (15, 5), (8, 10)]
    with pytest.raises(ValueError, match="eta"):
        halving_schedule(9, 9, eta=1)


def test_halving_finds_the_full_search_best_with_a_third_of_the_epochs():
    # SGD on noisy moons: of these learning rates 3.0 is clearly best after 27 epochs (val
    # loss 0.159 against 0.203 for 1.0; 10.0 is unstable), and successive halving finds it.
    X, y = make_moons(240, noise=0.2, seed=0)
    fixed = {**FIXED, "n_train": 190, "hidden": "16", "batch_size": 64}
    build = functools.partial(build_trial, fixed)
    space = {"lr": [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0]}
    common = dict(epochs=27, batch_size=64, metric="val_loss", refit=False, seed=0)
    full = grid_search(build, space, (X, y), **common)
    halved = grid_search(build, space, (X, y), halving=True, **common)
    assert full.best_config == halved.best_config == {"lr": 3.0}
    assert full.epochs_planned == 9 * 27 and halved.epochs_planned == 9 * 3 + 3 * 9 + 1 * 27
    rungs = [(r["rung"], r["epochs"]) for r in halved.results]
    assert sorted(set(rungs)) == [(0, 3), (1, 9), (2, 27)]
    assert [rungs.count(k) for k in sorted(set(rungs))] == [9, 3, 1]
    assert halved.results[0]["rung"] == 2  # the top rung ranks first
    # The top rung trains as the full search does: the same score, exactly.
    assert halved.best_score == full.best_score
    assert "rung" in halved.table().splitlines()[0]
    with pytest.raises(ValueError, match="take 'epochs' out of the space"):
        grid_search(build, {**space, "epochs": [3]}, (X, y), halving=True, **common)
