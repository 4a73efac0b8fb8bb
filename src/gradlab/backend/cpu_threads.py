"""The CPU kernels' threads: plain Python threads running nogil numba functions.

Why not numba's ``parallel=True``: its pool is an OpenMP one, and OpenMP threads busy-wait
after each parallel loop by default. In a training step that spinning takes the cores
NumPy's BLAS needs for the next GEMM (measured on 2 cores: the 784-512-256-10 Adam step
took 14-16 ms instead of 4.4 ms). Asking libgomp for passive waiting works only if the
environment says so before libgomp loads, and libgomp is shared by the whole process: a
torch imported first had already fixed the policy (same 14 ms), and a gradlab imported
first slowed torch's own small ops 2-3x. Threads that sleep on a lock between calls have
no such side effects. The cost is a wake-up per call (tens of microseconds), which is why
work below ``PARALLEL_MIN`` elements stays on the calling thread.

A kernel is split into parts: ``part(k, nparts, *args)`` does the k-th of ``nparts``
disjoint pieces of the work and must release the GIL (``numba.njit(nogil=True)``).
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

PARALLEL_MIN = 1 << 16  # elements from which a kernel is split across threads


def env_threads():
    """GRADLAB_NUM_THREADS as a thread count, None when unset or empty; ValueError saying
    what to set when it is not a positive integer (the CLI shows it as a usage error)."""
    env = os.environ.get("GRADLAB_NUM_THREADS")
    if not env:
        return None
    try:
        value = int(env)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"GRADLAB_NUM_THREADS={env!r} is not a positive integer; set it to "
                         "the number of CPU threads to use (e.g. 2), or unset it to use every "
                         "core this process may run on")
    return value


def _default_threads():
    value = env_threads()
    if value is not None:
        return value
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


# Read on first use, not at import: a bad GRADLAB_NUM_THREADS must reach the caller (the CLI
# turns it into a message), not break ``import gradlab``.
_threads = None
_pool = None          # a ThreadPoolExecutor with _pool_workers threads, made on first use
_pool_workers = 0
_pool_lock = threading.Lock()


def _forget_pool_after_fork():
    # A forked child inherits the pool object but not its threads: work submitted to it
    # would wait forever. The child makes its own pool on first use instead.
    global _pool, _pool_workers, _pool_lock
    _pool, _pool_workers, _pool_lock = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def get_num_threads() -> int:
    """Threads the CPU kernels split large work across (GRADLAB_NUM_THREADS, else the
    cores this process may use)."""
    global _threads
    if _threads is None:
        _threads = _default_threads()
    return _threads


def set_num_threads(n: int) -> None:
    """Change the number of threads the CPU kernels use (results do not depend on it)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"set_num_threads expects a positive integer, got {n!r}")
    global _threads
    with _pool_lock:
        _threads = n  # the next run_parts sizes the pool anew


def parts_for(work: int) -> int:
    """How many parts to cut ``work`` elements into: 1 below PARALLEL_MIN."""
    return 1 if work < PARALLEL_MIN else get_num_threads()


def _get_pool(workers):
    # A pool of another size is dropped, not shut down: a thread may still be using it, and
    # its idle workers exit once it is garbage.
    global _pool, _pool_workers
    with _pool_lock:
        if _pool is None or _pool_workers != workers:
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gradlab-cpu")
            _pool_workers = workers
        return _pool


def run_parts(part, nparts, *args):
    """``part(k, nparts, *args)`` for every k: part 0 on this thread, the others on the
    pool's threads, returning when all are done (and re-raising the first error)."""
    if nparts <= 1:
        part(0, 1, *args)
        return
    pool = _get_pool(nparts - 1)
    futures = [pool.submit(part, k, nparts, *args) for k in range(1, nparts)]
    try:
        part(0, nparts, *args)
    finally:
        for f in futures:
            f.result()
