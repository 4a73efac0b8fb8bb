"""cpu_threads: parts run on plain Python threads; a forked child gets a working pool."""
import multiprocessing
import os
import sys

import numpy as np
import pytest

from gradlab.backend import cpu_threads


def _record(k, nparts, out):
    out[k] = nparts


def test_every_part_runs_once():
    out = np.full(5, -1)
    cpu_threads.run_parts(_record, 5, out)
    assert out.tolist() == [5] * 5
    out = np.full(1, -1)
    cpu_threads.run_parts(_record, 1, out)
    assert out.tolist() == [1]


def _fail(k, nparts):
    if k == 1:
        raise ValueError("part 1 failed")


def test_an_error_in_a_worker_part_reaches_the_caller():
    with pytest.raises(ValueError, match="part 1 failed"):
        cpu_threads.run_parts(_fail, 3)


def test_thread_count_setting():
    before = cpu_threads.get_num_threads()
    try:
        cpu_threads.set_num_threads(3)
        assert cpu_threads.get_num_threads() == 3
        assert cpu_threads.parts_for(cpu_threads.PARALLEL_MIN) == 3
        assert cpu_threads.parts_for(cpu_threads.PARALLEL_MIN - 1) == 1
        with pytest.raises(ValueError, match="positive integer, got 0"):
            cpu_threads.set_num_threads(0)
    finally:
        cpu_threads.set_num_threads(before)


def _child_step(queue):
    import gradlab as gl
    p = gl.nn.Parameter(gl.zeros(1 << 18))
    p.grad = gl.ones(1 << 18)
    gl.optim.Adam([p], lr=0.1).step()
    queue.put(float(p.data[0]))


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin",
                    reason="needs the fork start method")
def test_a_forked_child_can_use_the_threads():
    cpu_threads.set_num_threads(max(2, cpu_threads.get_num_threads()))
    cpu_threads.run_parts(_record, 2, np.zeros(2))  # the parent's pool exists now
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_step, args=(queue,))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung in its first multi-threaded step")
    assert child.exitcode == 0
    assert queue.get(timeout=5) == pytest.approx(-0.1)


@pytest.mark.parametrize("value, expected", [(None, None), ("", None), ("3", 3), ("1", 1),
                                             ("0", ValueError), ("-2", ValueError),
                                             ("two", ValueError), ("1.5", ValueError)])
def test_the_thread_count_variable_is_read_by_one_rule(monkeypatch, value, expected):
    # The backend and the CLI (inputs.check_env) both use env_threads
    from gradlab.cli.inputs import UsageError, check_env
    if value is None:
        monkeypatch.delenv("GRADLAB_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("GRADLAB_NUM_THREADS", value)
    if expected is ValueError:
        with pytest.raises(ValueError, match=f"GRADLAB_NUM_THREADS={value!r} is not a "
                                             "positive integer.*unset it"):
            cpu_threads.env_threads()
        with pytest.raises(UsageError, match="set it to the number of CPU threads"):
            check_env()
    else:
        assert cpu_threads.env_threads() == expected
        check_env()
