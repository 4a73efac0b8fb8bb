"""`gradlab search` on a Dask cluster (--scheduler), killed and resumed (--resume), with
successive halving (--halving), and the clear errors of each."""
import csv
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import dask_cluster
from gradlab.cli.main import main


def _env():
    return {**os.environ, "GRADLAB_DEVICE": "cpu"}


def gradlab(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "gradlab", *args], capture_output=True,
                          text=True, timeout=timeout, env=_env())


def _no_traceback(proc):
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout


def _table(path):
    """The results CSV without the wall-clock column."""
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


SEARCH = ["search", "--dataset", "moons", "--no-batchnorm", "--hidden", "16",
          "--param", "lr=loguniform:1e-3:1", "--param", "hidden=8|16"]


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    dask_cluster.require_dask()
    with dask_cluster.cluster(str(tmp_path_factory.mktemp("dask"))) as (address, _):
        yield address


def test_search_on_a_dask_cluster_writes_the_local_table(scheduler, tmp_path):
    local, dask = tmp_path / "local.csv", tmp_path / "dask.csv"
    args = [*SEARCH, "--trials", "5", "--epochs", "3", "--quiet"]
    proc = gradlab(*args, "--results", str(local))
    assert proc.returncode == 0, proc.stderr
    proc = gradlab(*args, "--results", str(dask), "--scheduler", scheduler)
    assert proc.returncode == 0, proc.stderr
    assert _table(dask) == _table(local) and len(_table(local)) == 5
    assert "best val_accuracy" in proc.stdout


def test_unreachable_scheduler_exits_2_with_a_message(tmp_path):
    dask_cluster.require_dask()
    proc = gradlab(*SEARCH, "--trials", "1", "--epochs", "1", "--results",
                   str(tmp_path / "r.csv"), "--scheduler", "tcp://127.0.0.1:9",
                   "--scheduler-timeout", "1")
    assert proc.returncode == 2 and "no Dask scheduler answered within 1 s" in proc.stderr
    assert "dask worker tcp://127.0.0.1:9" in proc.stderr
    _no_traceback(proc)


def test_missing_dask_mpi_and_a_bad_address_exit_2_with_a_message(tmp_path, capsys,
                                                                  monkeypatch):
    monkeypatch.setenv("GRADLAB_DEVICE", "cpu")
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    status = main([*SEARCH, "--trials", "1", "--epochs", "1", "--results",
                   str(tmp_path / "r.csv"), "--scheduler", "tcp://127.0.0.1:8786"])
    err = capsys.readouterr().err
    assert status == 2 and "pip install 'gradlab[dask]'" in err
    status = main([*SEARCH, "--executor", "mpi"])  # a lone process: no MPI workers
    err = capsys.readouterr().err
    assert status == 2 and "mpiexec -n N python -m mpi4py.futures -m gradlab search" in err
    assert "no MPI workers" in err or "pip install 'gradlab[mpi]'" in err
    status = main([*SEARCH, "--scheduler", "localhost:8786"])
    assert status == 2 and "expected a scheduler address" in capsys.readouterr().err


def test_search_under_mpiexec_writes_the_local_table(tmp_path):
    pytest.importorskip("mpi4py", reason="mpi4py is not installed: pip install '.[mpi]'")
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or \
        shutil.which("mpiexec")
    if mpiexec is None:
        pytest.skip("no mpiexec: pip install '.[mpi]' brings MPICH's")
    local, mpi = tmp_path / "local.csv", tmp_path / "mpi.csv"
    args = [*SEARCH, "--trials", "4", "--epochs", "3", "--quiet"]
    proc = gradlab(*args, "--results", str(local))
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([mpiexec, "-n", "3", sys.executable, "-m", "mpi4py.futures", "-m",
                           "gradlab", *args, "--executor", "mpi", "--results", str(mpi)],
                          capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode == 0, proc.stderr
    assert _table(mpi) == _table(local) and len(_table(local)) == 4


def test_killed_search_resumes_to_the_uninterrupted_table(tmp_path):
    args = [*SEARCH, "--trials", "6", "--epochs", "60"]
    whole = tmp_path / "whole.csv"
    proc = gradlab(*args, "--results", str(whole), "--quiet")
    assert proc.returncode == 0, proc.stderr
    log = tmp_path / "log.csv"
    child = subprocess.Popen([sys.executable, "-m", "gradlab", *args, "--results", str(log)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    deadline = time.monotonic() + 60
    while not (log.exists() and log.read_text().count("\n") >= 4):  # header + 3 trials
        assert child.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    kept = [r["trial"] for r in _table(log)]
    assert 3 <= len(kept) < 6, kept  # killed in the middle of the search
    proc = gradlab(*args, "--results", str(log), "--resume")
    assert proc.returncode == 0, proc.stderr
    ran = [line.split(":")[0] for line in proc.stdout.splitlines()
           if line.startswith("trial ")]
    assert sorted(ran) == sorted(f"trial {t}" for t in set("123456") - set(kept))
    assert _table(log) == _table(whole)
    # Another search (here: other epochs) is refused, and says what differs.
    proc = gradlab(*SEARCH, "--trials", "6", "--epochs", "59", "--results", str(log),
                   "--resume")
    assert proc.returncode == 2 and "comes from a different search" in proc.stderr
    _no_traceback(proc)
    assert _table(log) == _table(whole)  # left as it was


def test_halving_records_rungs_and_the_epochs_spent(tmp_path):
    results = tmp_path / "r.csv"
    proc = gradlab(*SEARCH, "--method", "grid", "--param", "lr=0.001|0.01|0.1", "--param",
                   "hidden=8|16|4,4", "--epochs", "9", "--halving", "--results", str(results))
    assert proc.returncode == 0, proc.stderr
    rows = _table(results)
    assert [(r["rung"], r["epochs"]) for r in rows][:1] == [("2", "9")]
    assert sorted({(r["rung"], r["epochs"]) for r in rows}) == [("0", "1"), ("1", "3"),
                                                                ("2", "9")]
    assert "successive halving: 27 epochs in all, 33% of the 81" in proc.stdout
    proc = gradlab(*SEARCH, "--param", "epochs=1|2", "--halving")
    assert proc.returncode == 2 and "do not search epochs" in proc.stderr
