"""Stream capture (CUDA graphs) of the stand-in: work is recorded, not executed.

On a GPU, while a stream captures, "all operations pushed into the stream will not be
executed, but will instead be captured into a graph" (cudaStreamBeginCapture); the graph's
``launch()`` runs them later on the very same buffers, and a synchronous device-host transfer
inside the capture is an error (CuPy's ``Stream.begin_capture`` note: "an exception would be
raised"). The stand-in models that as follows:

- Work issued on the capturing stream (array ops, copies, fills, kernel launches, scatters)
  is *run* at once, so that the shapes, dtypes and views the Python side sees are what CuPy
  would give, and each call is also appended to the capture as a thunk that repeats it on
  the same memory.
- ``end_capture()`` then undoes what the capture did: every allocation that existed before
  ``begin_capture`` gets its bytes back (a GPU never executed the writes), and every
  allocation made during the capture is poisoned (0xFF bytes: NaN, -1): until the graph
  runs, it holds nothing meaningful. ``Graph.launch()`` runs the thunks in order: the writes
  happen then, once per launch.
- A host synchronisation on the capturing stream (``get()``, ``float()``, ``bool()``,
  ``item()``, ``Stream.synchronize()``, ``Device.synchronize()``, an op whose output size
  depends on the data such as boolean-mask indexing) raises ``CUDARuntimeError:
  cudaErrorStreamCaptureUnsupported``; so does a host-to-device copy (its source would be
  read at every launch, from host memory the caller may reuse). The capture is then
  invalidated: ``end_capture()`` raises ``cudaErrorStreamCaptureInvalidated``.
- Memory: an allocation made during the capture belongs to the allocator current at that
  time (``cupy.cuda.using_allocator(pool.malloc)`` or the default pool). When the graph
  launches, every such allocation must still be owned: either by a live array, or by a live
  private ``MemoryPool`` (a pool keeps freed blocks for its own later allocations). Memory of
  the default pool whose arrays are gone has been handed back and may belong to anybody by
  now; a launch that would write into it raises ``GraphMemoryError`` (a GPU corrupts the new
  owner's data silently).

Work on another stream runs normally while a capture is active (a non-blocking capturing
stream does not synchronise with it); on the legacy default stream while a *blocking* stream
captures, it is ``cudaErrorStreamCaptureImplicit``, as on hardware.
"""
from __future__ import annotations

import weakref

from . import memory


class GraphMemoryError(RuntimeError):
    """A graph launch would write into device memory that was handed back after capture."""


_active = None  # the Capture in progress (one per process: the stand-in has one device)


class Capture:
    """The thunks of one capture and what ``end_capture`` must restore."""

    def __init__(self, stream):
        self.stream = stream
        self.thunks = []
        self.error = None
        # Bytes of every allocation that exists now: restored by end_capture.
        self.snapshot = [(a, a.raw.copy()) for a in memory.live_allocations()]
        self.born = []  # (weakref to the Allocation, its pool or None, raw buffer, bytes)

    def invalidate(self, exc):
        if self.error is None:
            self.error = exc


def begin(stream):
    global _active
    from .cuda import CUDARuntimeError
    if _active is not None:
        raise CUDARuntimeError(900, "cudaErrorStreamCaptureUnsupported",
                               "operation not permitted when stream is capturing")
    _active = Capture(stream)


def end(stream):
    """Stop capturing; restore pre-existing memory, poison what the capture allocated; return
    the Capture (raises if it was invalidated)."""
    global _active
    from .cuda import CUDARuntimeError
    cap = _active
    if cap is None or cap.stream is not stream:
        raise CUDARuntimeError(401, "cudaErrorIllegalState",
                               "the operation is not permitted in the current capture state")
    _active = None
    for alloc, saved in cap.snapshot:
        alloc.raw[...] = saved
    for ref, _, raw, _ in cap.born:
        alloc = ref()
        if alloc is not None:
            raw[alloc.start:alloc.start + alloc.nbytes] = memory.POISON
    # The graph keeps every buffer it may point at alive (kernels take raw pointers, and a
    # pointer table in device memory may name any allocation): host memory, unlike a GPU's,
    # would otherwise be reused by malloc and a launch would write into it.
    cap.keep = [alloc.raw for alloc, _ in cap.snapshot]
    cap.snapshot = None
    if cap.error is not None:
        raise CUDARuntimeError(901, "cudaErrorStreamCaptureInvalidated",
                               "operation failed due to a previous error during capture") \
            from cap.error
    return cap


def active():
    return _active


def capturing():
    """The Capture that work issued now on this thread's current stream goes into, or None
    (nothing captures, or the current stream is another one)."""
    cap = _active
    if cap is None:
        return None
    from .cuda import CUDARuntimeError, get_current_stream
    current = get_current_stream()
    if current is cap.stream:
        return cap
    if current.ptr == 0 and not cap.stream.non_blocking:
        exc = CUDARuntimeError(904, "cudaErrorStreamCaptureImplicit",
                               "operation would make the legacy stream depend on a capturing "
                               "blocking stream")
        cap.invalidate(exc)
        raise exc
    return None


def sync(what):
    """A host synchronisation (``what``): an error while the current stream captures."""
    cap = capturing()
    if cap is not None:
        _refuse(cap, what)


def device_sync(what):
    """A device-wide synchronisation: an error while any stream captures."""
    cap = _active
    if cap is not None:
        _refuse(cap, what)


def _refuse(cap, what):
    from .cuda import CUDARuntimeError
    exc = CUDARuntimeError(900, "cudaErrorStreamCaptureUnsupported",
                           f"operation not permitted when stream is capturing ({what})")
    cap.invalidate(exc)
    raise exc


def record(thunk):
    """Append ``thunk`` to the capture in progress (the caller has run the work already)."""
    _active.thunks.append(thunk)


def allocated(alloc, pool):
    """memory.Allocation reports each new allocation."""
    cap = _active
    if cap is not None:
        cap.born.append((weakref.ref(alloc), pool, alloc.raw, alloc.nbytes))


class Graph:
    """``cupy.cuda.Graph``: made by ``Stream.end_capture()``; ``launch()`` runs the work."""

    def __init__(self, *args, **kwargs):
        raise NotImplementedError("currently this class cannot be initiated by the user and "
                                  "must be created via stream capture")

    @classmethod
    def _from(cls, cap):
        self = object.__new__(cls)
        self._thunks = cap.thunks
        self._keep = cap.keep
        self._born = [(ref, None if pool is None else weakref.ref(pool), raw, n)
                      for ref, pool, raw, n in cap.born]
        return self

    def _check_memory(self):
        for ref, pool_ref, raw, nbytes in self._born:
            if ref() is not None:
                continue  # a live array still owns it
            pool = None if pool_ref is None else pool_ref()
            if pool is not None and pool.holds(raw):
                continue  # freed into a private pool that keeps it: still reserved
            where = ("the default memory pool" if pool_ref is None else
                     "a private memory pool that has let go of it since")
            raise GraphMemoryError(
                f"graph launch would write into a {nbytes}-byte block "
                f"allocated during capture from {where}: its arrays are gone, so the block "
                f"may belong to another array now. Capture under "
                f"cupy.cuda.using_allocator(pool.malloc) with a MemoryPool kept alive as long "
                f"as the graph (or keep the arrays)")

    def launch(self, stream=None):
        from .cuda import get_current_stream
        if _active is not None and (stream or get_current_stream()) is _active.stream:
            raise NotImplementedError("launching a graph inside a capture (a child graph) is "
                                      "not modelled by the CuPy stand-in")
        self._check_memory()
        for thunk in self._thunks:
            thunk()

    def upload(self, stream=None):
        self._check_memory()
