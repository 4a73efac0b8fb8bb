"""The CUDA tier of the counter-based draws: host-side launch preparation for
kernels/random.cu (one thread per Philox block)."""
from __future__ import annotations

import cupy
import numpy as np

from ...cuda_kernels import get_function
from ...cupy_backend import graph_random
from . import philox_blocks
from .reference import check_draw, check_span

_THREADS = 256


def _launch(backend, name, shape, dtype, key, offset, *tail):
    with backend._cuda_device:
        out = cupy.empty(shape, dtype=dtype)
        n = out.size
        if n:
            # While a CUDA graph captures, the key and base offset come from its device-side
            # state (GraphRandom), so that each launch draws anew, as dropout does.
            rng = graph_random()
            stream = (np.uint64(key), np.uint64(offset)) if rng is None else \
                (rng.state, np.uint64(rng.delta(key, offset)))
            fn = get_function("random", name if rng is None else f"{name}_graphed", dtype,
                              backend._index)
            fn(backend._grid(philox_blocks(n, dtype), _THREADS), (_THREADS,),
               (out, np.int64(n), *stream, *tail))
    return out


def uniform(backend, shape, dtype, low, high, key, offset):
    shape, _, dtype, key, offset = check_draw("uniform", shape, dtype, key, offset)
    t = dtype.type
    return _launch(backend, "random_uniform", shape, dtype, key, offset, t(low), t(high))


def normal(backend, shape, dtype, key, offset):
    shape, _, dtype, key, offset = check_draw("normal", shape, dtype, key, offset)
    return _launch(backend, "random_normal", shape, dtype, key, offset)


def integers(backend, shape, dtype, low, high, key, offset):
    # (reference.py's formula, in CuPy's elementwise ops, which a graph captures)
    span = check_span(low, high)
    u = uniform(backend, shape, np.float64, 0.0, 1.0, key, offset)
    with backend._cuda_device:
        k = cupy.minimum(cupy.floor(u * np.float64(span)), np.float64(span - 1))
        return (k.astype(cupy.int64) + np.int64(low)).astype(dtype, copy=False)
