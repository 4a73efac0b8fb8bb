"""Deterministic mode: ``gl.use_deterministic_algorithms(True)``, as in PyTorch.

On the CPU every op is already run-to-run deterministic: NumPy's ``add.at`` adds in index
order, the numba kernels are elementwise, and BLAS gives the same result for the same
thread count. On a GPU one op is not: the gradient of advanced indexing scatters with
atomic adds (``cupyx.scatter_add``), so where an index repeats, the order of the float
additions — and so the last bits of the gradient — depend on thread scheduling. In
deterministic mode the CUDA backend scatters with :func:`ordered_scatter_add` instead.
README's "Determinism" section lists what is and is not covered.
"""
from __future__ import annotations

import threading

_lock = threading.Lock()
_enabled = False


def use_deterministic_algorithms(mode: bool) -> None:
    """Make every op pick a run-to-run deterministic implementation (process-wide, like
    PyTorch's switch of the same name). Slower only where an index repeats in the backward
    of advanced indexing on a GPU."""
    if not isinstance(mode, bool):
        raise TypeError(f"use_deterministic_algorithms expects True or False, got {mode!r}")
    global _enabled
    with _lock:
        _enabled = mode


def are_deterministic_algorithms_enabled() -> bool:
    return _enabled


def _stable_argsort(xp, a):
    # NumPy's default sort is not stable; CuPy's argsort always is, and some CuPy versions
    # take no ``kind`` argument at all.
    return xp.argsort(a, kind="stable") if xp.__name__ == "numpy" else xp.argsort(a)


def ordered_scatter_add(xp, target, index, values):
    """``target[index] += values`` where repeated positions add up in index order, exactly
    as NumPy's ``add.at`` does (so the result is bitwise NumPy's), without atomics.

    Every element of ``values`` is given its flat target position and its rank among the
    elements aimed at that position (0 for the first in index order, 1 for the next, ...).
    Pass k adds all rank-k elements at once; their positions are distinct, so a plain
    fancy-indexed add has no collisions. Cost: a stable sort plus one pass per repeat of
    the most repeated position.
    """
    positions = xp.arange(target.size).reshape(target.shape)[index].reshape(-1)
    if positions.size == 0:
        return
    values = xp.broadcast_to(xp.asarray(values, dtype=target.dtype),
                             target[index].shape).reshape(-1)
    order = _stable_argsort(xp, positions)
    sorted_pos = positions[order]
    starts_group = xp.ones(sorted_pos.size, dtype=bool)
    starts_group[1:] = sorted_pos[1:] != sorted_pos[:-1]
    group_of = xp.cumsum(starts_group) - 1
    first_of_group = xp.nonzero(starts_group)[0]
    rank = xp.arange(sorted_pos.size) - first_of_group[group_of]
    by_rank = _stable_argsort(xp, rank)  # keeps index order within each rank
    elements = order[by_rank]
    counts = xp.bincount(rank)
    bounds = [0]
    for c in counts.tolist():  # one host transfer; the pass count is the largest repeat
        bounds.append(bounds[-1] + c)
    work = target if target.flags.c_contiguous else xp.ascontiguousarray(target)
    flat = work.reshape(-1)  # a view, so the passes write into ``work``
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        chosen = elements[lo:hi]
        where = positions[chosen]
        flat[where] = flat[where] + values[chosen]
    if work is not target:
        target[...] = work
