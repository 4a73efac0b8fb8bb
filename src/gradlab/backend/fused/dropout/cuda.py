"""The CUDA tier of dropout: host-side launch preparation for kernels/dropout.cu (a warp per
tile of 128 elements, each mask word written once, whole)."""
from __future__ import annotations

import cupy
import numpy as np

from ... import checks
from ...cuda_kernels import get_function
from ...cupy_backend import graph_random

_THREADS = 256


def dropout_forward(backend, x, p, key, offset):
    p = checks.dropout_p(p)
    key, offset = checks.philox_key_offset(key, offset)
    checks.check_float_array("dropout_forward", "x", x)
    with backend._cuda_device:
        x = cupy.ascontiguousarray(x)
        n = x.size
        y = cupy.empty_like(x)
        mask = cupy.empty(checks.mask_words(n), dtype=cupy.uint32)
        if n:
            # While a CUDA graph captures, the key and base offset come from its device-side
            # state (GraphRandom), so that each launch draws anew; the same draws otherwise.
            rng = graph_random()
            name = "dropout_forward" if rng is None else "dropout_forward_graphed"
            stream = (np.uint64(key), np.uint64(offset)) if rng is None else \
                (rng.state, np.uint64(rng.delta(key, offset)))
            fn = get_function("dropout", name, x.dtype, backend._index)
            tiles = -(-n // 128)
            fn(backend._grid(tiles, _THREADS // 32), (_THREADS,),
               (x, y, mask, np.int64(n), *stream, np.uint64(checks.dropout_threshold(p)),
                x.dtype.type(checks.dropout_scale(p))))
    return y, mask


def dropout_backward(backend, grad, mask, p):
    p = checks.dropout_p(p)
    checks.check_float_array("dropout_backward", "grad", grad)
    checks.check_mask(mask, grad.size)
    with backend._cuda_device:
        grad = cupy.ascontiguousarray(grad)
        mask = cupy.ascontiguousarray(mask)
        out = cupy.empty_like(grad)
        n = grad.size
        if n:
            fn = get_function("dropout", "dropout_backward", grad.dtype, backend._index)
            fn(backend._grid(n, _THREADS), (_THREADS,),
               (grad, mask, out, np.int64(n), grad.dtype.type(checks.dropout_scale(p))))
    return out
