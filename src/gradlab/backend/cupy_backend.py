"""The CUDA backend: arrays are CuPy arrays on one device.

Only imported once ``registry.cuda_status()`` has found CuPy, a driver and a device.
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict

import cupy
import cupyx
import numpy as np

from . import determinism
from .base import Backend, Device, GraphCaptureUnsupported
from .cuda_kernels import get_function
from .fused import random as _random


class DeferredChecks:
    """Checks that kernels leave on the device instead of reading them back at once.

    In eager code a launch that can find bad input (softmax-CE's out-of-range target) reads
    its flag back right away and raises. Inside a CUDA graph capture no read-back is
    allowed, so while ``CudaGraph.capture`` runs, such a launch appends (flag, limit,
    error builder) here; the caller gathers the flags into one device array while still
    capturing (``gather``), and after each launch reads that array once (``raise_first``),
    raising the error the eager call would have raised (the first one in launch order)."""

    def __init__(self):
        self.pending = []   # (uint64 device flag of shape (1,), limit, builder(value) -> exc)
        self.flags = None

    def add(self, flag, limit, builder):
        self.pending.append((flag, limit, builder))

    def gather(self):
        """One device array of every flag (a copy kernel inside the capture), or None."""
        if self.pending:
            flags = [f for f, _, _ in self.pending]
            self.flags = flags[0] if len(flags) == 1 else _capturable_concatenate(flags, 0)
        return self.flags

    def raise_first(self):
        """Read the flags (one device-to-host copy, which waits for the work before it) and
        raise the first error they report."""
        if self.flags is None:
            return
        values = self.flags.get()
        for (_, limit, builder), value in zip(self.pending, values):
            if int(value) < limit:
                raise builder(int(value))


# CuPy joins more than this many arrays of one dtype with one kernel that reads their
# pointers from a table it copies from host memory (_concatenate_single_kernel): a copy a
# capturing stream must not make, so a capture joins them in groups of at most this many,
# each an elementwise copy per array. The bytes are the same either way.
_CONCAT_ONE_COPY_EACH = 8


def _capturable_concatenate(arrays, axis):
    """``cupy.concatenate(arrays, axis)``, made only of device-side copies."""
    arrays = list(arrays)
    while len(arrays) > _CONCAT_ONE_COPY_EACH:
        step = _CONCAT_ONE_COPY_EACH
        arrays = [cupy.concatenate(arrays[i:i + step], axis=axis)
                  for i in range(0, len(arrays), step)]
    return cupy.concatenate(arrays, axis=axis)


class GraphRandom:
    """The Philox stream of one CUDA graph (dropout's masks, rand/randn/randint, RReLU's),
    kept in device memory.

    Eager launches that draw (dropout's, kernels/random.cu's) take the Philox (key, offset)
    as scalars, which a graph would replay as captured: one mask forever. While a graph
    captures, they launch the kernel that reads the key and a base offset from ``state``
    (device memory) and takes only its offset within the step (``delta``) as a scalar; the
    capture ends with a kernel that advances ``state``'s offset by what the step drew
    (``total``). Each launch thus draws the next masks, as the next eager step would;
    ``CudaGraph.launch`` keeps the host's generator in step without reading the device, and
    writes the host's (key, offset) into ``state`` first whenever they are not what the last
    launch left there (a reseed, a draw outside the graph)."""

    def __init__(self, random):
        self.key, self.start = random.philox_key, random.philox_offset
        self.state = cupy.array([self.key, self.start], dtype=cupy.uint64)
        self.total = 0
        self.at = (self.key, self.start)  # (key, offset) that state holds now

    def delta(self, key, offset):
        """The ``delta`` of a draw at host (key, offset) taken while capturing."""
        if key != self.key:
            raise RuntimeError("the Philox key changed while a CUDA graph was capturing "
                               "(manual_seed inside the step)")
        return offset - self.start


_deferring = threading.local()  # .checks: the DeferredChecks launches report to, or None;
                                # .random: the GraphRandom of the capture, or None


def deferred_checks():
    """The DeferredChecks of the graph capture running on this thread, or None."""
    return getattr(_deferring, "checks", None)


def graph_random():
    """The GraphRandom of the graph capture running on this thread, or None."""
    return getattr(_deferring, "random", None)


class CudaGraph:
    """One CUDA graph: ``capture(fn)`` runs ``fn()`` under stream capture, ``launch()`` runs
    what it captured again, on the same buffers, with one call.

    - Capture runs on a private non-blocking stream: capture is not allowed on the legacy
      default stream, and a blocking capturing stream would make any work on the default
      stream (other code's) an error while it captures. The graph is launched on the
      *current* stream, so that it is ordered after the copies into its input buffers and
      before the optimizer step that reads its gradients, as eager work on that stream is.
    - Every allocation made during capture comes from a private ``cupy.cuda.MemoryPool``,
      kept as long as this object: a graph writes into the memory it was captured with at
      every launch, so that memory must never be handed to another array. Arrays freed during
      capture return to this pool only, which nobody else allocates from. (Capture uses
      CuPy's default relaxed mode, which lets the pool grow with cudaMalloc.)
    - Launches inside the capture that would read a flag back defer it (DeferredChecks);
      ``launch()`` reads all of them once and raises the eager error.
    - Dropout draws from a device-side state (GraphRandom): every launch draws the next
      masks. The host's generator is left where it was before the capture (nothing ran);
      each launch advances it by what the step draws, as an eager step would.
    """

    def __init__(self, backend):
        self._backend = backend
        with backend._cuda_device:
            self._stream = cupy.cuda.Stream(non_blocking=True)
        self._pool = cupy.cuda.MemoryPool()
        self._graph = None
        self.checks = None
        self.random = None  # the GraphRandom, when the captured work draws

    def capture(self, fn):
        """``fn()`` captured (not executed: its results hold garbage until ``launch()``);
        returns what ``fn`` returned. Raises what ``fn`` or the capture raised, after ending
        the capture."""
        checks = DeferredChecks()
        host_random = self._backend.random
        with self._backend._cuda_device, cupy.cuda.using_allocator(self._pool.malloc):
            # Uploaded before the capture, on the current stream: the stream launch() uses,
            # so the upload is ordered before the first launch.
            rng = GraphRandom(host_random)
        with self._backend._cuda_device, self._stream, \
                cupy.cuda.using_allocator(self._pool.malloc):
            self._stream.begin_capture()
            prev = getattr(_deferring, "checks", None), getattr(_deferring, "random", None)
            _deferring.checks, _deferring.random = checks, rng
            try:
                result = fn()
                checks.gather()
                rng.total = host_random.philox_offset - rng.start
                if rng.total:
                    rng.state[1:] += cupy.uint64(rng.total)  # the next launch's offset
            except BaseException:
                _deferring.checks, _deferring.random = prev
                host_random.philox_offset = rng.start
                try:  # leave capture mode; an invalidated capture raises here too
                    self._stream.end_capture()
                except Exception:  # noqa: BLE001 - the first error is the one to report
                    pass
                raise
            _deferring.checks, _deferring.random = prev
            host_random.philox_offset = rng.start  # captured, not drawn: launch() draws
            self._graph = self._stream.end_capture()
        self.checks = checks
        self.random = rng if rng.total else None
        return result

    def launch(self):
        """Run the captured work once on the current stream (its dropout draws from where
        the host's generator stands, which then advances past them), then raise the first
        deferred check that failed."""
        with self._backend._cuda_device:
            rng = self.random
            if rng is not None:
                host = self._backend.random
                now = (host.philox_key, host.philox_offset)
                if now != rng.at:  # stream-ordered before the launch
                    rng.state.set(np.array(now, dtype=np.uint64))
                rng.at = (now[0], now[1] + rng.total)
                host.philox_offset = now[1] + rng.total
            self._graph.launch(cupy.cuda.get_current_stream())
            self.checks.raise_first()

    def held_bytes(self):
        """Bytes of the private pool (the graph's intermediates, outputs and gradients)."""
        return int(self._pool.total_bytes())


class CupyBackend(Backend):
    name = "cupy"
    xp = cupy
    ndarray = cupy.ndarray

    def __init__(self, index=0):
        self._cuda_device = cupy.cuda.Device(index)
        self._index = index
        # Enough resident blocks to fill the GPU; grid-stride loops cover the rest.
        self._max_blocks = 32 * self._cuda_device.attributes["MultiProcessorCount"]
        self._tables = OrderedDict()  # the optimizer steps' device tables (fused/optim/cuda.py)
        super().__init__(Device("cuda", index))

    def _make_generator(self, seed):
        with self._cuda_device:
            return cupy.random.default_rng(seed)

    def asarray(self, data, dtype=None):
        with self._cuda_device:
            return cupy.asarray(data, dtype=dtype)

    def to_numpy(self, array):
        return cupy.asnumpy(array)

    def scatter_add(self, target, index, values):
        if determinism.are_deterministic_algorithms_enabled():
            with self._cuda_device:
                determinism.ordered_scatter_add(cupy, target, index, values)
        else:  # atomic adds: repeated indices sum in a scheduling-dependent order
            cupyx.scatter_add(target, index, values)

    def synchronize(self):
        self._cuda_device.synchronize()

    def cuda_graph(self):
        """A new, empty CudaGraph on this device (see CudaGraph)."""
        return CudaGraph(self)

    def concatenate(self, arrays, axis):
        with self._cuda_device:
            if len(arrays) > _CONCAT_ONE_COPY_EACH and \
                    cupy.cuda.get_current_stream().is_capturing():
                return _capturable_concatenate(arrays, axis)
            return cupy.concatenate(arrays, axis=axis)

    def stack(self, arrays, axis):
        with self._cuda_device:
            if len(arrays) > _CONCAT_ONE_COPY_EACH and \
                    cupy.cuda.get_current_stream().is_capturing() and \
                    len({a.shape for a in arrays}) == 1:  # (else cupy.stack's own error)
                ndim = arrays[0].ndim + 1
                if -ndim <= axis < ndim:
                    return _capturable_concatenate(
                        [cupy.expand_dims(a, axis) for a in arrays], axis)
            return cupy.stack(arrays, axis=axis)

    # Up to SMALL_GEMM_MAX multiply-adds (m * n * k), with sums of up to SMALL_GEMM_K_MAX
    # terms, a float32/64 matrix product is gradlab's kernel (kernels/matmul.cu), otherwise
    # cuBLAS's. In that range a GEMM's time on a GPU is mostly its launch (64 x 64 x 64, the
    # course's MLPs, is 2^18); a longer sum is one thread's serial loop, which cuBLAS splits.
    # Only gradlab's kernel can be captured into a CUDA graph (CuPy refuses cuBLAS while a
    # stream captures), so steps with a larger GEMM replay without one (compiled.py), where
    # the arithmetic dominates. Eager steps take the same route, so that a graphed step
    # gives their bits. Both limits are first guesses: make gpu-check times the kernel
    # against cuBLAS around them (benchmarks/test_kernels_gpu.py).
    SMALL_GEMM_MAX = 1 << 22
    SMALL_GEMM_K_MAX = 1024

    def matrix_product(self, a, b):
        m, k = a.shape
        n = b.shape[1]
        with self._cuda_device:
            why = self._for_cublas(a, b, m, k, n)
            if why is not None:
                if cupy.cuda.get_current_stream().is_capturing():
                    raise GraphCaptureUnsupported(
                        f"a {m} x {k} by {b.shape[0]} x {n} matrix product {why}, so cuBLAS "
                        f"runs it, which CuPy cannot capture")
                return a.dot(b)
            c = cupy.empty((m, n), dtype=a.dtype)
            if c.size:
                a_arg, a_rs, a_cs = _strided(a)
                b_arg, b_rs, b_cs = _strided(b)
                fn = get_function("matmul", "matmul", a.dtype, self._index)
                fn(self._grid(c.size, _GEMM_THREADS), (_GEMM_THREADS,),
                   (a_arg, a_rs, a_cs, b_arg, b_rs, b_cs, c, np.int64(m), np.int64(n),
                    np.int64(k)))
        return c

    def check(self, bad, error):
        deferred = deferred_checks()
        if deferred is None:
            return super().check(bad, error)
        flat = bad.reshape(-1)  # the first bad index, or the size where there is none
        first = cupy.where(flat.any(), flat.argmax(), flat.size)
        deferred.add(first.astype(cupy.uint64).reshape(1), flat.size, error)

    # RReLU's slopes and rand/randn/randint come from the Philox stream (fused/random,
    # kernels/random.cu), which a CUDA graph replays with fresh draws; randperm (an argsort
    # on the device) keeps CuPy's generator.
    def uniform(self, low, high, shape, dtype):
        return self._philox_draw("rand", shape, dtype, low, high)

    def draw(self, kind, size, dtype, generator=None, low=0, high=None):
        if generator is None and kind in ("rand", "randn"):
            return self._philox_draw(kind, size, dtype, 0.0, 1.0)
        if generator is None and kind == "randint" and high - low <= _random.INTEGERS_MAX_SPAN:
            return self._philox_draw(kind, size, dtype, low, high)
        with self._cuda_device:  # (randperm, a randint wider than the stream's integers)
            if cupy.cuda.get_current_stream().is_capturing():
                what = "of a range wider than 2**53 " if kind == "randint" else ""
                raise GraphCaptureUnsupported(
                    f"gl.{kind} {what}draws from CuPy's generator, whose state a CUDA graph "
                    f"would not keep in step with the host's")
            return super().draw(kind, size, dtype, generator, low, high)

    def _philox_draw(self, kind, shape, dtype, low, high):
        dtype = np.dtype(dtype)
        # float16 is drawn as float32; integers from float64 units
        drawn = np.dtype(np.float64) if kind == "randint" else \
            np.dtype(np.float32) if dtype == np.float16 else dtype
        shape = tuple(shape)
        key, offset = self.random.take_philox(_random.philox_blocks(math.prod(shape), drawn))
        if kind == "randint":
            return _random.integers(self, shape, dtype, low, high, key, offset)
        if kind == "randn":
            out = _random.normal(self, shape, drawn, key, offset)
        else:
            out = _random.uniform(self, shape, drawn, low, high, key, offset)
        return out.astype(dtype, copy=False)

    def _for_cublas(self, a, b, m, k, n):
        """Why a product is not gradlab's kernel's, or None where it is."""
        if b.shape[0] != k:
            return "has misfit shapes"  # (CuPy's dot raises its error)
        if a.dtype != b.dtype or a.dtype not in _KERNEL_DTYPES:
            return f"is of {a.dtype} by {b.dtype}, not float32 or float64 alone"
        if m * n * k > self.SMALL_GEMM_MAX:
            return (f"has {m * n * k} multiply-adds, above CupyBackend.SMALL_GEMM_MAX "
                    f"({self.SMALL_GEMM_MAX})")
        if k > self.SMALL_GEMM_K_MAX:
            return (f"sums {k} terms per element, above CupyBackend.SMALL_GEMM_K_MAX "
                    f"({self.SMALL_GEMM_K_MAX})")
        return None


    # -- fused kernels ------------------------------------------------------------------------
    # The entry points are Backend's; each op's table (backend/fused) runs its "cuda" tier,
    # fused/<family>/cuda.py, which launches kernels/<family>.cu with this grid.
    def _grid(self, work_items, per_block=1):
        return (max(1, min(-(-work_items // per_block), self._max_blocks)),)


_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_GEMM_THREADS = 256


def _strided(a):
    """(array to pass, row stride, column stride) of matrix ``a`` for kernels/matmul.cu: a
    C- or F-contiguous ``a`` as it is (an F-contiguous one as its C-contiguous transpose,
    which starts at the same address), element strides from its own; other layouts copied
    C-contiguous first."""
    if not (a.flags.c_contiguous or a.flags.f_contiguous):
        a = cupy.ascontiguousarray(a)
    size = a.itemsize
    rs, cs = np.int64(a.strides[0] // size), np.int64(a.strides[1] // size)
    return (a if a.flags.c_contiguous else a.T), rs, cs


__all__ = ["CupyBackend", "CudaGraph", "DeferredChecks", "GraphCaptureUnsupported"]
