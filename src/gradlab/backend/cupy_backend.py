"""The CUDA backend: arrays are CuPy arrays on one device.

Only imported once ``registry.cuda_status()`` has found CuPy, a driver and a device.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

import cupy
import cupyx
import numpy as np

from . import checks, determinism, optim_scalars
from .base import Backend, Device
from .cuda_kernels import get_function

_THREADS = 256
_CHUNK = 1 << 16          # elements of one tensor handled by one block of a multi-tensor launch
_TABLE_CACHE_SIZE = 64    # pointer tables kept per backend (one per live parameter group)
_WARP_PER_ROW_MAX_C = 1024  # softmax-CE: a warp per row up to this many classes, else a block


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
            self.flags = flags[0] if len(flags) == 1 else cupy.concatenate(flags)
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


_deferring = threading.local()  # .checks: the DeferredChecks launches report to, or None


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
    """

    def __init__(self, backend):
        self._backend = backend
        with backend._cuda_device:
            self._stream = cupy.cuda.Stream(non_blocking=True)
        self._pool = cupy.cuda.MemoryPool()
        self._graph = None
        self.checks = None

    def capture(self, fn):
        """``fn()`` captured (not executed: its results hold garbage until ``launch()``);
        returns what ``fn`` returned. Raises what ``fn`` or the capture raised, after ending
        the capture."""
        checks = DeferredChecks()
        with self._backend._cuda_device, self._stream, \
                cupy.cuda.using_allocator(self._pool.malloc):
            self._stream.begin_capture()
            prev, _deferring.checks = getattr(_deferring, "checks", None), checks
            try:
                result = fn()
                checks.gather()
            except BaseException:
                _deferring.checks = prev
                try:  # leave capture mode; an invalidated capture raises here too
                    self._stream.end_capture()
                except Exception:  # noqa: BLE001 - the first error is the one to report
                    pass
                raise
            _deferring.checks = prev
            self._graph = self._stream.end_capture()
        self.checks = checks
        return result

    def launch(self):
        """Run the captured work once on the current stream, then raise the first deferred
        check that failed."""
        with self._backend._cuda_device:
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
        self._tables = OrderedDict()
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


    # -- fused kernels (kernels/*.cu) ---------------------------------------------------------
    def _grid(self, work_items, per_block=1):
        return (max(1, min(-(-work_items // per_block), self._max_blocks)),)

    def _pointer_table(self, op, k, params, grads, states):
        """Device table for one multi-tensor launch, or None when there is nothing to do.

        Cached on the data pointers (and param sizes, so a freed-and-reused address with a
        different size misses): an optimizer calling step() on the same buffers pays one
        tuple of pointers per call instead of rebuilding and uploading the table. Arguments
        are validated on a miss only; a hit means the very same buffers as a validated call.
        """
        named_states = {f"state{i}": s for i, s in enumerate(states)}
        if not params:
            checks.group_dtype(op, params, grads, **named_states)
            return None
        key = (op, params[0].dtype.char, tuple(a.dtype.char for a in grads[:1]),
               tuple(a.data.ptr for a in params), tuple(a.size for a in params),
               tuple(a.data.ptr for a in grads),
               *(None if s is None else tuple(a.data.ptr for a in s) for s in states))
        entry = self._tables.get(key)
        if entry is not None:
            self._tables.move_to_end(key)
            return entry
        checks.group_dtype(op, params, grads, **named_states)
        columns = [params, grads, *states]
        live = [i for i, p in enumerate(params) if p.size]
        ptrs = np.zeros((len(live), k), dtype=np.int64)
        for row, i in enumerate(live):
            for col, arrays in enumerate(columns):
                if arrays is not None:
                    ptrs[row, col] = arrays[i].data.ptr
        sizes = np.array([params[i].size for i in live], dtype=np.int64)
        chunk_tensor = np.repeat(np.arange(len(live), dtype=np.int64), -(-sizes // _CHUNK))
        chunk_start = np.concatenate(
            [np.arange(0, n, _CHUNK, dtype=np.int64) for n in sizes] or [np.zeros(0, np.int64)])
        entry = None
        if live:
            with self._cuda_device:
                table = cupy.asarray(np.concatenate([ptrs.ravel(), sizes, chunk_tensor,
                                                     chunk_start]))
            entry = (table, np.int32(len(live)), np.int64(chunk_tensor.size), params[0].dtype)
        self._tables[key] = entry
        if len(self._tables) > _TABLE_CACHE_SIZE:
            self._tables.popitem(last=False)
        return entry

    def _multi_tensor(self, op, name, k, params, grads, states, scalars):
        entry = self._pointer_table(op, k, params, grads, states)
        if entry is None:
            return
        table, ntensors, nchunks, dtype = entry
        fn = get_function("optim", name, dtype, self._index)
        t = dtype.type
        args = [table, ntensors, nchunks, np.int64(_CHUNK)]
        args += [np.int32(v) if isinstance(v, bool) else t(v) for v in scalars]
        with self._cuda_device:
            fn(self._grid(int(nchunks)), (_THREADS,), tuple(args))

    def sgd_step(self, params, grads, momentum_buffers, *, lr, momentum, dampening, nesterov,
                 weight_decay, maximize, first_step):
        checks.require_state("sgd_step", "momentum != 0", momentum, "momentum_buffers",
                             momentum_buffers)
        bufs = momentum_buffers if momentum else None
        sc = optim_scalars.sgd_scalars(lr=lr, momentum=momentum, dampening=dampening,
                                       weight_decay=weight_decay)
        self._multi_tensor("sgd_step", "sgd_step", 3, params, grads, [bufs],
                           [*sc, bool(nesterov), bool(maximize), bool(first_step),
                            bool(momentum)])

    def adam_step(self, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, *, step, lr,
                  beta1, beta2, eps, weight_decay, decoupled_weight_decay, amsgrad, maximize):
        checks.require_state("adam_step", "amsgrad", amsgrad, "max_exp_avg_sqs",
                             max_exp_avg_sqs)
        sc = optim_scalars.adam_scalars(step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                                        weight_decay=weight_decay,
                                        decoupled_weight_decay=decoupled_weight_decay)
        self._multi_tensor("adam_step", "adam_step", 5, params, grads,
                           [exp_avgs, exp_avg_sqs, max_exp_avg_sqs if amsgrad else None],
                           [*sc, bool(amsgrad), bool(maximize)])

    def rmsprop_step(self, params, grads, square_avgs, momentum_buffers, grad_avgs, *, lr,
                     alpha, eps, weight_decay, momentum, centered, maximize):
        checks.require_state("rmsprop_step", "momentum != 0", momentum, "momentum_buffers",
                             momentum_buffers)
        checks.require_state("rmsprop_step", "centered", centered, "grad_avgs", grad_avgs)
        sc = optim_scalars.rmsprop_scalars(lr=lr, alpha=alpha, eps=eps,
                                           weight_decay=weight_decay, momentum=momentum)
        self._multi_tensor("rmsprop_step", "rmsprop_step", 5, params, grads,
                           [square_avgs, momentum_buffers if momentum else None,
                            grad_avgs if centered else None],
                           [*sc, bool(centered), bool(maximize)])

    def adagrad_step(self, params, grads, state_sums, *, step, lr, lr_decay, weight_decay,
                     eps, maximize):
        sc = optim_scalars.adagrad_scalars(step=step, lr=lr, lr_decay=lr_decay, eps=eps,
                                           weight_decay=weight_decay)
        self._multi_tensor("adagrad_step", "adagrad_step", 3, params, grads, [state_sums],
                           [*sc, bool(maximize)])

    def adadelta_step(self, params, grads, square_avgs, acc_deltas, *, lr, rho, eps,
                      weight_decay, maximize):
        sc = optim_scalars.adadelta_scalars(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay)
        self._multi_tensor("adadelta_step", "adadelta_step", 4, params, grads,
                           [square_avgs, acc_deltas], [*sc, bool(maximize)])

    def dropout_forward(self, x, p, key, offset):
        p = checks.dropout_p(p)
        key, offset = checks.philox_key_offset(key, offset)
        checks.check_float_array("dropout_forward", "x", x)
        with self._cuda_device:
            x = cupy.ascontiguousarray(x)
            n = x.size
            y = cupy.empty_like(x)
            mask = cupy.empty(checks.mask_words(n), dtype=cupy.uint32)
            if n:
                fn = get_function("dropout", "dropout_forward", x.dtype, self._index)
                tiles = -(-n // 128)
                fn(self._grid(tiles, _THREADS // 32), (_THREADS,),
                   (x, y, mask, np.int64(n), np.uint64(key), np.uint64(offset),
                    np.uint64(checks.dropout_threshold(p)),
                    x.dtype.type(checks.dropout_scale(p))))
        return y, mask

    def dropout_backward(self, grad, mask, p):
        p = checks.dropout_p(p)
        checks.check_float_array("dropout_backward", "grad", grad)
        checks.check_mask(mask, grad.size)
        with self._cuda_device:
            grad = cupy.ascontiguousarray(grad)
            mask = cupy.ascontiguousarray(mask)
            out = cupy.empty_like(grad)
            n = grad.size
            if n:
                fn = get_function("dropout", "dropout_backward", grad.dtype, self._index)
                fn(self._grid(n, _THREADS), (_THREADS,),
                   (grad, mask, out, np.int64(n), grad.dtype.type(checks.dropout_scale(p))))
        return out

    def softmax_cross_entropy(self, logits, target, weight, ignore_index, label_smoothing):
        with self._cuda_device:
            logits, target, weight, ignore_index, s = checks.softmax_ce_args(
                cupy, logits, target, weight, ignore_index, label_smoothing)
            n, c = logits.shape
            loss = cupy.empty(n, dtype=logits.dtype)
            grad = cupy.empty((n, c), dtype=logits.dtype)
            if n == 0:
                return loss, grad
            if c == 0:  # no kernel: every non-ignored target is out of range
                bad = target != ignore_index
                if bool(bad.any()):
                    raise checks.bad_target_error(int(target[int(bad.argmax())]), c)
                loss.fill(0)
                return loss, grad
            bad_row = cupy.full(1, n, dtype=cupy.uint64)
            t = logits.dtype.type
            null = np.uint64(0)  # a zero pointer: the kernel reads w = 1 when weight is NULL
            args = (logits, target, null if weight is None else weight,
                    null if weight is None else weight.sum(), np.int64(n), np.int64(c),
                    np.int64(ignore_index), t(s), loss, grad, bad_row)
            if c <= _WARP_PER_ROW_MAX_C:
                fn = get_function("softmax_ce", "softmax_ce_warp", logits.dtype, self._index)
                fn(self._grid(n, _THREADS // 32), (_THREADS,), args)
            else:
                threads = 512 if c >= 8192 else 256
                fn = get_function("softmax_ce", "softmax_ce_block", logits.dtype, self._index)
                fn(self._grid(n), (threads,), args)
            deferred = getattr(_deferring, "checks", None)
            if deferred is not None:  # inside a graph capture: read after the launch
                deferred.add(bad_row, n, lambda first, target=target, c=c:
                             checks.bad_target_error(int(target[first].get()), c))
                return loss, grad
            # One 8-byte read (it waits for the kernel) instead of a device-side assert,
            # which would leave the CUDA context unusable.
            first_bad = int(bad_row.get()[0])
            if first_bad < n:
                raise checks.bad_target_error(int(target[first_bad].get()), c)
        return loss, grad


__all__ = ["CupyBackend", "CudaGraph", "DeferredChecks"]
