"""The CUDA tier of the optimizer steps: host-side launch preparation for kernels/optim.cu.

One step of a group is one multi-tensor launch over an int64 device table (pointers, sizes,
chunk map: see the head of kernels/optim.cu). The table is cached per backend on the data
pointers (and param sizes, so a freed-and-reused address with a different size misses): an
optimizer calling step() on the same buffers pays one tuple of pointers per call instead of
rebuilding and uploading the table. Arguments are validated on a miss only; a hit means the
very same buffers as a validated call. Scalars come from scalars.py, rounded once to the
dtype, so the kernels reproduce reference.py bit for bit (compiled with --fmad=false).
"""
from __future__ import annotations

import cupy
import numpy as np

from ... import checks
from ...cuda_kernels import get_function
from . import scalars

_THREADS = 256
_CHUNK = 1 << 16          # elements of one tensor handled by one block of a multi-tensor launch
_TABLE_CACHE_SIZE = 64    # pointer tables kept per backend (one per live parameter group)


def _pointer_table(backend, op, k, params, grads, states):
    """Device table for one multi-tensor launch, or None when there is nothing to do."""
    named_states = {f"state{i}": s for i, s in enumerate(states)}
    if not params:
        checks.group_dtype(op, params, grads, **named_states)
        return None
    key = (op, params[0].dtype.char, tuple(a.dtype.char for a in grads[:1]),
           tuple(a.data.ptr for a in params), tuple(a.size for a in params),
           tuple(a.data.ptr for a in grads),
           *(None if s is None else tuple(a.data.ptr for a in s) for s in states))
    tables = backend._tables
    entry = tables.get(key)
    if entry is not None:
        tables.move_to_end(key)
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
        with backend._cuda_device:
            table = cupy.asarray(np.concatenate([ptrs.ravel(), sizes, chunk_tensor,
                                                 chunk_start]))
        entry = (table, np.int32(len(live)), np.int64(chunk_tensor.size), params[0].dtype)
    tables[key] = entry
    if len(tables) > _TABLE_CACHE_SIZE:
        tables.popitem(last=False)
    return entry


def _launch(backend, op, k, params, grads, states, scalars_):
    """One launch of ``<op>_<f32|f64>`` with ``k`` columns (param, grad, states)."""
    entry = _pointer_table(backend, op, k, params, grads, states)
    if entry is None:
        return
    table, ntensors, nchunks, dtype = entry
    fn = get_function("optim", op, dtype, backend._index)
    t = dtype.type
    args = [table, ntensors, nchunks, np.int64(_CHUNK)]
    args += [np.int32(v) if isinstance(v, bool) else t(v) for v in scalars_]
    with backend._cuda_device:
        fn(backend._grid(int(nchunks)), (_THREADS,), tuple(args))


def sgd_step(backend, params, grads, momentum_buffers, *, lr, momentum, dampening, nesterov,
             weight_decay, maximize, first_step):
    checks.require_state("sgd_step", "momentum != 0", momentum, "momentum_buffers",
                         momentum_buffers)
    sc = scalars.sgd_scalars(lr=lr, momentum=momentum, dampening=dampening,
                             weight_decay=weight_decay)
    _launch(backend, "sgd_step", 3, params, grads, [momentum_buffers if momentum else None],
            [*sc, bool(nesterov), bool(maximize), bool(first_step), bool(momentum)])


def adam_step(backend, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, *, step, lr,
              beta1, beta2, eps, weight_decay, decoupled_weight_decay, amsgrad, maximize):
    checks.require_state("adam_step", "amsgrad", amsgrad, "max_exp_avg_sqs", max_exp_avg_sqs)
    sc = scalars.adam_scalars(step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                              weight_decay=weight_decay,
                              decoupled_weight_decay=decoupled_weight_decay)
    _launch(backend, "adam_step", 5, params, grads,
            [exp_avgs, exp_avg_sqs, max_exp_avg_sqs if amsgrad else None],
            [*sc, bool(amsgrad), bool(maximize)])


def rmsprop_step(backend, params, grads, square_avgs, momentum_buffers, grad_avgs, *, lr,
                 alpha, eps, weight_decay, momentum, centered, maximize):
    checks.require_state("rmsprop_step", "momentum != 0", momentum, "momentum_buffers",
                         momentum_buffers)
    checks.require_state("rmsprop_step", "centered", centered, "grad_avgs", grad_avgs)
    sc = scalars.rmsprop_scalars(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                 momentum=momentum)
    _launch(backend, "rmsprop_step", 5, params, grads,
            [square_avgs, momentum_buffers if momentum else None,
             grad_avgs if centered else None],
            [*sc, bool(centered), bool(maximize)])


def _stateful_step(op, scalars_of, *state_names):
    """The launch of a rule whose states are all on and whose only flag is maximize:
    ``step(backend, params, grads, *state_lists, maximize, **options)``."""
    def step(backend, params, grads, *states, maximize, **options):
        if len(states) != len(state_names):  # a missing list would be a 0 pointer column
            raise TypeError(f"{op} takes the state lists {', '.join(state_names)}; got "
                            f"{len(states)} lists")
        _launch(backend, op, 2 + len(states), params, grads, list(states),
                [*scalars_of(**options), bool(maximize)])
    step.__name__ = step.__qualname__ = op
    return step


adagrad_step = _stateful_step("adagrad_step", scalars.adagrad_scalars, "state_sums")
adadelta_step = _stateful_step("adadelta_step", scalars.adadelta_scalars, "square_avgs",
                               "acc_deltas")
adamax_step = _stateful_step("adamax_step", scalars.adamax_scalars, "exp_avgs", "exp_infs")
nadam_step = _stateful_step("nadam_step", scalars.nadam_scalars, "exp_avgs", "exp_avg_sqs")
radam_step = _stateful_step("radam_step", scalars.radam_scalars, "exp_avgs", "exp_avg_sqs")
