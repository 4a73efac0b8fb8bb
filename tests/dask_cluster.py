"""A real Dask cluster on loopback for the search tests: one `dask scheduler` and two
`dask worker` processes (one thread each), as a user starts them (see README)."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest


def require_dask():
    """The `distributed` module, or a skip that says how to get it."""
    return pytest.importorskip(
        "distributed", reason="dask.distributed is not installed: pip install '.[dask]'")


def _dask_command():
    """The `dask` command of this environment (installed with distributed)."""
    return [os.path.join(os.path.dirname(sys.executable), "dask")]


def _stop(proc):
    """Stop a process we started, with everything in its session (a worker's nanny and
    its worker process), by the group id it was given at start."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def marked_build(directory, fixed, config):
    """build_trial that first leaves a file ``<epochs>-<pid>`` naming the process that
    runs the trial (so a test can kill it in the middle)."""
    from gradlab.cli.model import build_trial
    open(os.path.join(directory, f"{config['epochs']}-{os.getpid()}"), "w").close()
    return build_trial(fixed, config)


@contextlib.contextmanager
def cluster(directory, workers=2, timeout=60):
    """Yield (address, client) of a fresh scheduler on 127.0.0.1 (a free port chosen by the
    scheduler itself) with ``workers`` workers; everything is stopped on exit."""
    distributed = require_dask()
    dask = _dask_command()
    # This directory on the workers' path, so a trial can use marked_build below.
    here = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "GRADLAB_DEVICE": "cpu",
           "PYTHONPATH": os.pathsep.join([here, *filter(None, [os.environ.get("PYTHONPATH")])])}
    sched_file = os.path.join(directory, "scheduler.json")
    procs = []
    client = None
    try:
        log = open(os.path.join(directory, "scheduler.log"), "w")
        procs.append(subprocess.Popen(
            [*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", sched_file], stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True))
        deadline = time.monotonic() + timeout
        while not os.path.exists(sched_file):
            if procs[0].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("dask scheduler did not start: "
                                   + open(log.name).read()[-2000:])
            time.sleep(0.05)
        time.sleep(0.1)  # the file is written in one go, but be sure it is complete
        with open(sched_file) as f:
            address = json.load(f)["address"]
        for i in range(workers):
            wlog = open(os.path.join(directory, f"worker{i}.log"), "w")
            procs.append(subprocess.Popen(
                [*dask, "worker", address, "--nworkers", "1", "--nthreads", "1",
                 "--no-dashboard", "--name", f"w{i}", "--memory-limit", "0",
                 "--local-directory", directory], stdout=wlog, stderr=subprocess.STDOUT,
                env=env, start_new_session=True))
        client = distributed.Client(address, timeout=timeout)
        client.wait_for_workers(workers, timeout=timeout)
        yield address, client
    finally:
        if client is not None:
            client.close()
        for proc in reversed(procs):
            _stop(proc)
