"""NCCL through CuPy (``cupy.cuda.nccl``) for GPU arrays.

Rank 0 makes the NCCL unique id and broadcasts it over MPI; each rank then joins a
``NcclCommunicator`` on GPU ``rank % device_count``. Collectives run on the current CuPy
stream; the host polls an event recorded after them against the group's deadline and, past
it, aborts the communicator and raises ``CollectiveTimeout``. Objects, barriers and
decisions still go over MPI.

Untested on more than one GPU: a machine with one GPU runs the one-rank communicator
(``tests/distributed/test_nccl.py``, in ``make gpu-check``), which goes through the whole path.
NCCL's own communicator setup blocks without a deadline.
"""
from __future__ import annotations

import time

from .group import CollectiveTimeout, DistributedError


class NCCLEngine:
    name = "nccl"

    def __init__(self, mpi, timeout):
        try:
            import cupy
            from cupy.cuda import nccl
        except ImportError as exc:
            raise DistributedError(f"the 'nccl' backend needs CuPy with NCCL ({exc}); install "
                                   "gradlab[cuda12] or [cuda13], or use backend='mpi'") from None
        if not getattr(nccl, "available", True):
            raise DistributedError("the 'nccl' backend: this CuPy was built without NCCL; "
                                   "install a CuPy wheel with NCCL, or use backend='mpi'")
        self.cupy, self.nccl, self.timeout = cupy, nccl, timeout
        self.rank, self.world_size = mpi.rank, mpi.world_size
        count = cupy.cuda.runtime.getDeviceCount()
        if count < 1:
            raise DistributedError("the 'nccl' backend: no CUDA device on this machine")
        self.device = cupy.cuda.Device(self.rank % count)
        self.device.use()
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = mpi.broadcast_object(uid, 0)
        self.comm = nccl.NcclCommunicator(self.world_size, uid, self.rank)
        self.broken = None
        self.calls = {}
        self._types = {"float16": nccl.NCCL_FLOAT16, "float32": nccl.NCCL_FLOAT32,
                       "float64": nccl.NCCL_FLOAT64, "int32": nccl.NCCL_INT32,
                       "int64": nccl.NCCL_INT64}
        self._ops = {"sum": nccl.NCCL_SUM, "max": nccl.NCCL_MAX, "min": nccl.NCCL_MIN}

    def _dtype(self, array):
        try:
            return self._types[array.dtype.name]
        except KeyError:
            raise DistributedError(f"nccl: no NCCL type for {array.dtype}") from None

    def _wait(self, stream, what):
        if self.broken is not None:
            raise DistributedError(f"rank {self.rank}: the NCCL communicator is broken "
                                   f"({self.broken})")
        event = stream.record()
        deadline = time.monotonic() + self.timeout
        while not event.done:
            if time.monotonic() > deadline:
                self.broken = f"{what} timed out"
                self.comm.abort()
                raise CollectiveTimeout(f"rank {self.rank} of {self.world_size}: NCCL {what} "
                                        f"did not complete within {self.timeout:g} s; the "
                                        "communicator was aborted")
            time.sleep(1e-4)

    def allreduce(self, array, op="sum"):
        """Reduce a contiguous CuPy array over all ranks, in place."""
        self.calls["allreduce"] = self.calls.get("allreduce", 0) + 1
        stream = self.cupy.cuda.get_current_stream()
        self.comm.allReduce(array.data.ptr, array.data.ptr, array.size, self._dtype(array),
                            self._ops[op], stream.ptr)
        self._wait(stream, f"allreduce({op}) of {array.size} {array.dtype} values")
        return array

    def broadcast(self, array, root=0):
        self.calls["broadcast"] = self.calls.get("broadcast", 0) + 1
        stream = self.cupy.cuda.get_current_stream()
        self.comm.bcast(array.data.ptr, array.size, self._dtype(array), root, stream.ptr)
        self._wait(stream, f"broadcast of {array.size} {array.dtype} values")
        return array

    def close(self):
        if self.broken is None:
            self.comm.destroy()
