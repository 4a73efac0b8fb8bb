"""The CUDA tier of softmax cross-entropy: host-side launch preparation for
kernels/softmax_ce.cu (a warp per row up to _WARP_PER_ROW_MAX_C classes, else a block). The
kernel writes the rows; the reduction is the reference's reduce_rows, run with CuPy."""
from __future__ import annotations

import cupy
import numpy as np

from ... import checks
from ...cuda_kernels import get_function
from .reference import reduce_rows

_THREADS = 256
_WARP_PER_ROW_MAX_C = 1024


def softmax_cross_entropy(backend, logits, target, weight, ignore_index, label_smoothing,
                          reduction="none"):
    with backend._cuda_device:
        logits, target, weight, ignore_index, s = checks.softmax_ce_args(
            cupy, logits, target, weight, ignore_index, label_smoothing, reduction)
        loss, grad = _rows(backend, logits, target, weight, ignore_index, s)
        return reduce_rows(cupy, loss, grad, target, weight, ignore_index, reduction, s)


def _rows(backend, logits, target, weight, ignore_index, s):
    """The kernel's row losses and gradient (arguments as softmax_ce_args returns them);
    raises for a bad target, or, inside a graph capture, leaves it to the capture's
    deferred checks."""
    from ...cupy_backend import deferred_checks
    n, c = logits.shape
    loss = cupy.empty(n, dtype=logits.dtype)
    grad = cupy.empty((n, c), dtype=logits.dtype)
    if n == 0:
        return loss, grad
    if c == 0:  # no kernel: every non-ignored target is out of range
        backend.check(target != ignore_index,
                      lambda first: checks.bad_target_error(int(target[first]), c))
        loss.fill(0)
        return loss, grad
    bad_row = cupy.full(1, n, dtype=cupy.uint64)
    t = logits.dtype.type
    null = np.uint64(0)  # a zero pointer: the kernel reads w = 1 when weight is NULL
    args = (logits, target, null if weight is None else weight,
            null if weight is None else weight.sum(), np.int64(n), np.int64(c),
            np.int64(ignore_index), t(s), loss, grad, bad_row)
    if c <= _WARP_PER_ROW_MAX_C:
        fn = get_function("softmax_ce", "softmax_ce_warp", logits.dtype, backend._index)
        fn(backend._grid(n, _THREADS // 32), (_THREADS,), args)
    else:
        threads = 512 if c >= 8192 else 256
        fn = get_function("softmax_ce", "softmax_ce_block", logits.dtype, backend._index)
        fn(backend._grid(n), (threads,), args)
    deferred = deferred_checks()
    if deferred is not None:  # inside a graph capture: read after the launch
        deferred.add(bad_row, n, lambda first, target=target, c=c:
                     checks.bad_target_error(int(target[first].get()), c))
        return loss, grad
    # One 8-byte read (it waits for the kernel) instead of a device-side assert, which
    # would leave the CUDA context unusable.
    first_bad = int(bad_row.get()[0])
    if first_bad < n:
        raise checks.bad_target_error(int(target[first_bad].get()), c)
    return loss, grad
