"""The process group: which engine moves the bytes, this process's rank, and collectives
that never block for ever.

One process group per process, as in PyTorch. The engines are existing libraries:

- ``"mpi"``: mpi4py over any MPI (``pip install gradlab[mpi]`` brings the ``mpich`` wheel, whose
  ``mpiexec`` runs as root without extra flags). Arrays on the host.
- ``"nccl"``: CuPy's NCCL bindings for GPU arrays; the NCCL unique id is broadcast over MPI,
  so the job is still launched with ``mpiexec`` (see ``gradlab.distributed.nccl``).

Every collective is started non-blocking (``Iallreduce``, ``Ibcast``, ``Iallgather``,
``Ibarrier``) and waited on by polling against a deadline, so a rank that died, hung or
stopped calling the same collectives turns into ``CollectiveTimeout`` on the others within
``timeout`` seconds (``init_process_group(timeout=)``, else ``GRADLAB_DIST_TIMEOUT``, else 60).
After a timeout the group is broken: the process exits through ``MPI_Abort`` at interpreter
exit (``MPI_Finalize`` would wait for the lost peer), which ends the whole job.
"""
from __future__ import annotations

import atexit
import os
import pickle
import sys
import time

import numpy as np

DEFAULT_TIMEOUT = 60.0
BACKENDS = ("mpi", "nccl")

_GROUP = None


class DistributedError(RuntimeError):
    """A distributed run cannot go on: the engine failed, or the ranks disagree."""


class CollectiveTimeout(DistributedError):
    """A collective did not complete within the group's timeout."""


def _timeout(timeout):
    if timeout is None:
        text = os.environ.get("GRADLAB_DIST_TIMEOUT")
        try:
            timeout = float(text) if text else DEFAULT_TIMEOUT
        except ValueError:
            raise ValueError(f"GRADLAB_DIST_TIMEOUT must be a number of seconds, got "
                             f"{text!r}") from None
    timeout = float(timeout)
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
    return timeout


def import_mpi():
    """mpi4py's MPI module, or a DistributedError saying how to install it."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise DistributedError(f"the 'mpi' backend needs mpi4py and an MPI library ({exc}); "
                               "install them with `pip install gradlab[mpi]` (mpi4py and the "
                               "mpich wheel) and launch with `mpiexec -n N ...`") from None
    return MPI


class MPIEngine:
    """Collectives over an MPI communicator (a duplicate of COMM_WORLD), with deadlines."""

    name = "mpi"

    def __init__(self, timeout):
        MPI = import_mpi()
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD.Dup()
        self.comm.Set_errhandler(MPI.ERRORS_RETURN)
        self.rank = self.comm.Get_rank()
        self.world_size = self.comm.Get_size()
        self.timeout = timeout
        self.broken = None          # the error that broke the group, if any
        self.calls = {}             # collective name -> times called (tests count allreduces)

    def _wait(self, request, what):
        """Poll ``request`` until it completes or the deadline passes."""
        if self.broken is not None:
            raise DistributedError(f"rank {self.rank}: the process group is broken "
                                   f"({self.broken}); no further collective can run")
        start = time.monotonic()
        deadline = start + self.timeout
        pause = 0.0
        try:
            while not request.Test():
                now = time.monotonic()
                if now > deadline:
                    err = CollectiveTimeout(
                        f"rank {self.rank} of {self.world_size}: {what} did not complete "
                        f"within {self.timeout:g} s: another rank has died, hung, or is not "
                        "calling the same collectives; stopping (set the limit with "
                        "init_process_group(timeout=) or GRADLAB_DIST_TIMEOUT)")
                    self.broken = str(err)
                    raise err
                # MPI moves a non-blocking collective forward only inside calls such as
                # Test(): sleeping between them stretches every round of an allreduce. So
                # spin for the first 50 ms (a gradient allreduce takes a few), then back
                # off to 1 ms, which is what a rank waiting on a slow or dead peer does.
                if now - start > 0.05:
                    if pause:
                        time.sleep(pause)
                    pause = min(max(pause * 2, 1e-5), 1e-3)
        except self.MPI.Exception as exc:
            self.broken = f"{what}: {exc.Get_error_string()}"
            raise DistributedError(f"rank {self.rank}: {what} failed in MPI: "
                                   f"{exc.Get_error_string()}") from None

    def _count(self, name):
        self.calls[name] = self.calls.get(name, 0) + 1

    def allreduce(self, array, op="sum"):
        """Reduce a contiguous host array over all ranks, in place; returns it."""
        self._count("allreduce")
        mpi_op = {"sum": self.MPI.SUM, "max": self.MPI.MAX, "min": self.MPI.MIN}[op]
        out = np.empty_like(array)
        self._wait(self.comm.Iallreduce(array, out, op=mpi_op),
                   f"allreduce({op}) of {array.size} {array.dtype} values")
        array[...] = out
        return array

    def broadcast(self, array, root=0):
        self._count("broadcast")
        self._wait(self.comm.Ibcast(array, root=root),
                   f"broadcast of {array.size} {array.dtype} values from rank {root}")
        return array

    def barrier(self):
        self._count("barrier")
        self._wait(self.comm.Ibarrier(), "barrier")

    def allgather_object(self, obj):
        """Every rank's ``obj`` (picklable), in rank order."""
        data = np.frombuffer(pickle.dumps(obj), dtype=np.uint8)
        size = np.array([data.size], dtype=np.int64)
        self.allreduce(size, "max")
        buf = np.zeros(int(size[0]) + 8, dtype=np.uint8)
        buf[:8] = np.frombuffer(np.int64(data.size).tobytes(), dtype=np.uint8)
        buf[8:8 + data.size] = data
        out = np.empty((self.world_size, buf.size), dtype=np.uint8)
        self._count("allgather")
        self._wait(self.comm.Iallgather(buf, out), f"allgather of {buf.size} bytes")
        objs = []
        for row in out:
            n = int(row[:8].view(np.int64)[0])
            objs.append(pickle.loads(row[8:8 + n].tobytes()))
        return objs

    def broadcast_object(self, obj, root=0):
        return self.allgather_object(obj if self.rank == root else None)[root]

    def abort(self, code=1):
        self.comm.Abort(code)

    def close(self):
        if self.broken is None:
            self.comm.Free()


class ProcessGroup:
    """What ``init_process_group`` made: the engine for gradients (``engine``) and the MPI
    engine for everything else (objects, barriers, decisions)."""

    def __init__(self, backend, engine, mpi):
        self.backend, self.engine, self.mpi = backend, engine, mpi
        self.rank, self.world_size = mpi.rank, mpi.world_size

    @property
    def broken(self):
        return self.mpi.broken or getattr(self.engine, "broken", None)


def init_process_group(backend="mpi", *, timeout=None):
    """Join the job's process group (PyTorch's name). Launch every rank with
    ``mpiexec -n N python script.py``; rank and world size come from MPI.

    ``backend``: 'mpi' (host arrays, mpi4py) or 'nccl' (GPU arrays, ``cupy.cuda.nccl``; one
    GPU per rank, the NCCL id broadcast over MPI). ``timeout``: seconds any collective may
    take before it raises ``CollectiveTimeout`` (default ``GRADLAB_DIST_TIMEOUT`` or 60)."""
    global _GROUP
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got "
                         f"{backend!r}")
    if _GROUP is not None:
        raise DistributedError("init_process_group: already initialized (rank "
                               f"{_GROUP.rank} of {_GROUP.world_size}, backend "
                               f"{_GROUP.backend!r}); call destroy_process_group() first")
    timeout = _timeout(timeout)
    mpi = MPIEngine(timeout)
    engine = mpi
    if backend == "nccl":
        from .nccl import NCCLEngine
        engine = NCCLEngine(mpi, timeout)
    _GROUP = ProcessGroup(backend, engine, mpi)
    return _GROUP


@atexit.register
def _exit_broken_group():
    # A broken group has a request that will never complete: MPI_Finalize could wait on it
    # for ever. Abort ends this process and, through mpiexec, the rest of the job.
    group = _GROUP
    if group is not None and group.broken:
        sys.stdout.flush()
        sys.stderr.flush()
        group.mpi.abort(1)


def group(required=True):
    """The current ProcessGroup; None (or an error when ``required``) before init."""
    if _GROUP is None and required:
        raise DistributedError("the default process group is not initialized: call "
                               "gl.distributed.init_process_group('mpi') first (and launch "
                               "with mpiexec -n N)")
    return _GROUP


def is_initialized():
    return _GROUP is not None


def get_rank():
    """This process's rank (0 .. world_size - 1)."""
    return group().rank


def get_world_size():
    return group().world_size


def barrier():
    """Wait until every rank arrives (with the group's timeout)."""
    group().mpi.barrier()


def is_main_process():
    """True on rank 0, and in a process that is not distributed: the one that writes files."""
    return _GROUP is None or _GROUP.rank == 0


def destroy_process_group():
    """Leave the process group (PyTorch's name); init_process_group may be called again."""
    global _GROUP
    if _GROUP is None:
        return
    g, _GROUP = _GROUP, None
    if g.broken:
        _GROUP = g  # keep it for the exit handler: only an abort can end a broken job
        return
    if g.engine is not g.mpi:
        g.engine.close()
    g.mpi.close()


def all_reduce(tensor, op="sum"):
    """Reduce ``tensor`` (a gl Tensor or a host array) over all ranks, in place ('sum', 'max'
    or 'min'; PyTorch's default SUM)."""
    g = group()
    data = getattr(tensor, "_data", tensor)
    engine = g.engine if not isinstance(data, np.ndarray) else g.mpi
    if isinstance(data, np.ndarray) and not data.flags.c_contiguous:
        raise ValueError("all_reduce needs a contiguous array")
    engine.allreduce(data, op)
    return tensor


def all_gather_object(obj):
    """Every rank's picklable ``obj`` as a list in rank order."""
    return group().mpi.allgather_object(obj)


def broadcast_object(obj, src=0):
    """Rank ``src``'s ``obj`` on every rank."""
    return group().mpi.broadcast_object(obj, src)
