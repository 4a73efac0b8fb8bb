"""Emulated device memory: every allocation is host memory with guard bytes on both sides.

A kernel that writes past either end of a buffer corrupts the guards; ``check_guards`` runs
after every launch and names the kernel, the buffer and how far the write went. Real CUDA
reports nothing in that case (or an asynchronous illegal-address error much later), so this
is stricter than hardware on purpose; see FIDELITY.md.

Data starts 256-byte aligned, as CuPy's memory pool hands out blocks rounded to 512 bytes
(CuPy docs, "Memory Management": allocations are rounded up to a multiple of 512 bytes), so
kernels that rely on aligned vector loads behave as on a GPU.
"""
from __future__ import annotations

import threading
import weakref

import numpy as np

GUARD = 64
ALIGN = 256
# Fixed, position-dependent pattern: a kernel storing zeros, NaNs or copies of nearby data
# cannot accidentally rewrite it unchanged.
PATTERN = bytes((0xA5 ^ (i * 37)) & 0xFF for i in range(GUARD))
POISON = 0xFF  # empty()/empty_like(): all-ones bytes read as NaN in float32/float64

_live: "weakref.WeakSet[Allocation]" = weakref.WeakSet()
_live_lock = threading.Lock()  # threads allocate while a launch walks the set


class GuardError(RuntimeError):
    """A kernel wrote outside an allocation (into its guard bytes)."""


class Allocation:
    """One device allocation: ``nbytes`` of data between two guard regions."""

    __slots__ = ("raw", "start", "nbytes", "ptr", "label", "pool", "_lo", "_hi", "__weakref__")

    def __init__(self, nbytes: int, poison: bool = True):
        nbytes = int(nbytes)
        raw = np.empty(nbytes + 2 * GUARD + ALIGN, dtype=np.uint8)
        base = raw.__array_interface__["data"][0]
        start = GUARD + (-(base + GUARD)) % ALIGN
        self.raw = raw
        self.start = start
        self.nbytes = nbytes
        self.ptr = base + start
        self.label = f"{nbytes}-byte buffer"
        if poison:
            raw[start:start + nbytes] = POISON
        raw[start - GUARD:start] = np.frombuffer(PATTERN, np.uint8)
        raw[start + nbytes:start + nbytes + GUARD] = np.frombuffer(PATTERN, np.uint8)
        self._lo = memoryview(raw)[start - GUARD:start]
        self._hi = memoryview(raw)[start + nbytes:start + nbytes + GUARD]
        with _live_lock:
            _live.add(self)
        # The allocator current on this thread (cupy.cuda.using_allocator): a private pool
        # keeps the block reserved for itself after the array is gone (capture.Graph checks it).
        self.pool = _allocator.pool
        if self.pool is not None:
            self.pool._add(self)
        from . import capture
        capture.allocated(self, self.pool)

    def view(self, dtype, shape) -> np.ndarray:
        """The data as a C-contiguous numpy array (the stand-in's "device memory")."""
        data = self.raw[self.start:self.start + self.nbytes]
        return data.view(dtype).reshape(shape)

    def contains(self, address: int) -> bool:
        return self.ptr <= address <= self.ptr + self.nbytes

    def damage(self):
        """(bytes written before the start, bytes written past the end): the distance from
        the data to the farthest changed guard byte on each side, 0 when intact."""
        before = after = 0
        if self._lo != PATTERN:
            lo = bytes(self._lo)
            before = GUARD - next(i for i in range(GUARD) if lo[i] != PATTERN[i])
        if self._hi != PATTERN:
            hi = bytes(self._hi)
            after = 1 + max(i for i in range(GUARD) if hi[i] != PATTERN[i])
        return before, after

    def repair(self):
        self._lo[:] = PATTERN
        self._hi[:] = PATTERN


def live_allocations():
    with _live_lock:
        return list(_live)


def check_guards(kernel_name: str):
    """Raise GuardError if any live allocation's guards changed (then restore them, so one
    overflow is reported once)."""
    bad = []
    for alloc in live_allocations():
        if alloc._lo != PATTERN or alloc._hi != PATTERN:
            before, after = alloc.damage()
            alloc.repair()
            where = []
            if after:
                where.append(f"up to {after} byte(s) past the end")
            if before:
                where.append(f"up to {before} byte(s) before the start")
            bad.append(f"{alloc.label} at 0x{alloc.ptr:x}: {' and '.join(where)}")
    if bad:
        raise GuardError(f"kernel {kernel_name} wrote outside its buffers (guard bytes of "
                         f"{GUARD} B on each side changed): " + "; ".join(bad))


class _Allocator(threading.local):
    def __init__(self):
        self.pool = None  # None: the default pool


_allocator = _Allocator()


class MemoryPool:
    """``cupy.cuda.MemoryPool``: a private pool. Arrays are allocated from it inside
    ``cupy.cuda.using_allocator(pool.malloc)``. A block stays reserved for this pool after its
    array is freed (CuPy keeps freed blocks for the pool's later allocations) until
    ``free_all_blocks()`` or the pool's end; blocks are not reused here (each allocation is
    fresh memory, see FIDELITY.md)."""

    def __init__(self, allocator=None):
        if allocator is not None:
            raise NotImplementedError("MemoryPool(allocator=...) is not modelled by the CuPy "
                                      "stand-in")
        self._blocks = []  # [weakref to the Allocation, its raw buffer, its size]

    def _add(self, alloc):
        self._blocks.append((weakref.ref(alloc), alloc.raw, alloc.nbytes))

    def holds(self, raw):
        """True while the block of buffer ``raw`` is reserved by this pool."""
        return any(r is raw for _, r, _ in self._blocks)

    def malloc(self, size):
        """A MemoryPointer to ``size`` new bytes of this pool."""
        from ._core import MemoryPointer
        prev, _allocator.pool = _allocator.pool, self
        try:
            mem = Allocation(size)
        finally:
            _allocator.pool = prev
        return MemoryPointer(mem, mem.ptr)

    def used_bytes(self):
        return sum(n for ref, _, n in self._blocks if ref() is not None)

    def total_bytes(self):
        return sum(n for _, _, n in self._blocks)

    def free_bytes(self):
        return self.total_bytes() - self.used_bytes()

    def n_free_blocks(self):
        return sum(ref() is None for ref, _, _ in self._blocks)

    def free_all_blocks(self, stream=None):
        """Give back the blocks whose arrays are gone."""
        self._blocks = [b for b in self._blocks if b[0]() is not None]


class using_allocator:
    """``cupy.cuda.using_allocator(pool.malloc)``: allocations on this thread come from that
    pool inside the block. Only a stand-in MemoryPool's ``malloc`` is modelled."""

    def __init__(self, allocator=None):
        pool = getattr(allocator, "__self__", None)
        if not isinstance(pool, MemoryPool) or getattr(allocator, "__name__", "") != "malloc":
            raise NotImplementedError("the CuPy stand-in models using_allocator(pool.malloc) "
                                      "for a cupy.cuda.MemoryPool only")
        self._pool = pool

    def __enter__(self):
        self._prev = _allocator.pool
        _allocator.pool = self._pool
        return self

    def __exit__(self, *exc):
        _allocator.pool = self._prev
        return False
