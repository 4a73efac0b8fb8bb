"""Python side of the CUDA emulator: load a compiled module, check arguments against the C
signature its launchers export, and launch under a chosen resume order.

Launches are serialized by one lock: ctypes releases the GIL, and each shared object holds a
single scheduler and fiber pool.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .build import CompileError, build

__all__ = ["EmulatorError", "LaunchConfigError", "CompileError", "Param", "Module", "Kernel",
           "schedule", "allow_early_exit", "current_order", "guarded"]

ORDERS = {"forward": 0, "reverse": 1, "shuffle": 2}
GRID_MAX = (2**31 - 1, 65535, 65535)
BLOCK_MAX = (1024, 1024, 64)
_MSG_LEN = 4096
_RC_MISUSE, _RC_CONFIG = 1, 2

_launch_lock = threading.Lock()
_state_lock = threading.Lock()
_order_override: list = []  # stack of (order, seed) set by schedule()
_early_exit: list = []  # stack of flags set by allow_early_exit()

_CTYPES = {
    "bool": np.bool_, "char": np.int8, "signed char": np.int8, "unsigned char": np.uint8,
    "short": np.int16, "unsigned short": np.uint16, "int": np.int32, "unsigned int": np.uint32,
    "long": np.int64, "unsigned long": np.uint64, "long long": np.int64,
    "unsigned long long": np.uint64, "float": np.float32, "double": np.float64,
}


class EmulatorError(RuntimeError):
    """Misuse found during a launch; the message names the kernel and the file:line."""


class LaunchConfigError(EmulatorError):
    """Grid or block dimensions outside CUDA's limits (or zero); nothing was run."""


class _Cfg(ctypes.Structure):
    # Mirrors gl_emu::LaunchCfg in cuda_emu.h.
    _fields_ = [("grid", ctypes.c_uint * 3), ("block", ctypes.c_uint * 3),
                ("order", ctypes.c_int), ("allow_early_exit", ctypes.c_int),
                ("seed", ctypes.c_ulonglong), ("err", ctypes.c_char_p),
                ("errlen", ctypes.c_ulonglong)]


@dataclass(frozen=True)
class Param:
    index: int
    name: str
    ctype: str
    kind: str  # "pointer" or "value"
    dtype: np.dtype | None  # the value's dtype, or the pointee's (None for void * or unknown)


def _param(index: int, name: str, ctype: str) -> Param:
    if ctype.endswith("*"):
        pointee = ctype[:-1].strip()
        for q in ("const ", "volatile "):
            pointee = pointee.replace(q, "")
        pointee = pointee.strip()
        dt = _CTYPES.get(pointee)
        return Param(index, name, ctype, "pointer", np.dtype(dt) if dt is not None else None)
    dt = _CTYPES.get(ctype)
    return Param(index, name, ctype, "value", np.dtype(dt) if dt is not None else None)


def _parse_order(text: str) -> tuple:
    text = text.strip()
    if text in ("forward", "reverse"):
        return text, 0
    if text == "shuffle":
        return "shuffle", 0
    if text.startswith("shuffle:"):
        try:
            return "shuffle", int(text[len("shuffle:"):])
        except ValueError:
            pass
    raise ValueError(f"GRADLAB_EMU_ORDER={text!r}: expected 'forward', 'reverse' or "
                     f"'shuffle:<seed>'")


def current_order() -> tuple:
    """(order, seed) the next launch uses: the innermost schedule(), else GRADLAB_EMU_ORDER,
    else forward."""
    with _state_lock:
        if _order_override:
            return _order_override[-1]
    return _parse_order(os.environ.get("GRADLAB_EMU_ORDER", "forward") or "forward")


@contextlib.contextmanager
def schedule(order: str = "forward", seed: int = 0):
    """Resume fibers (within a block) and blocks (within a grid) in `order`: 'forward',
    'reverse' or 'shuffle' (seeded). Process-wide while the block runs."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {sorted(ORDERS)}, got {order!r}")
    with _state_lock:
        _order_override.append((order, int(seed)))
    try:
        yield
    finally:
        with _state_lock:
            _order_override.pop()


@contextlib.contextmanager
def allow_early_exit(flag: bool = True):
    """Permit threads to return while others of their block wait at a barrier (hardware
    tolerates it; by default the emulator reports it)."""
    with _state_lock:
        _early_exit.append(bool(flag))
    try:
        yield
    finally:
        with _state_lock:
            _early_exit.pop()


def _early_exit_allowed() -> bool:
    with _state_lock:
        return _early_exit[-1] if _early_exit else False


def _dims(what: str, dims, kernel: str) -> tuple:
    if isinstance(dims, (int, np.integer)):
        dims = (dims,)
    dims = tuple(dims)
    if not 1 <= len(dims) <= 3:
        raise LaunchConfigError(f"kernel '{kernel}': {what} needs 1 to 3 dimensions, got {dims}")
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)):
            raise LaunchConfigError(f"kernel '{kernel}': {what} {dims} has a non-integer entry")
    return tuple(int(d) for d in dims) + (1,) * (3 - len(dims))


def check_launch_config(kernel: str, grid, block) -> tuple:
    """Normalised (grid, block); LaunchConfigError when outside CUDA's limits."""
    grid, block = _dims("grid", grid, kernel), _dims("block", block, kernel)
    for what, dims, limit in (("grid", grid, GRID_MAX), ("block", block, BLOCK_MAX)):
        for axis, d, lim in zip("xyz", dims, limit):
            if d < 1 or d > lim:
                raise LaunchConfigError(
                    f"kernel '{kernel}': {what} {dims} is out of range on axis {axis} "
                    f"(each {what} dimension must be 1..{lim} there; limits {limit})")
    threads = block[0] * block[1] * block[2]
    if threads > 1024:
        raise LaunchConfigError(f"kernel '{kernel}': block {block} has {threads} threads; at "
                                f"most 1024 per block")
    return grid, block


class Kernel:
    """One entry point of a Module. launch() takes the arguments already converted: an int
    address per pointer parameter, a NumPy scalar of exactly param.dtype per value."""

    def __init__(self, module: "Module", name: str, params: tuple, fn):
        self.module = module
        self.name = name
        self.params = params
        self._fn = fn
        self._nparams = len(params)
        self._slot = ctypes.c_uint64 * max(1, len(params))
        self._ptrs = ctypes.c_void_p * max(1, len(params))

    def __repr__(self):
        sig = ", ".join(f"{p.ctype} {p.name}".strip() for p in self.params)
        return f"<emulated kernel {self.name}({sig})>"

    def _pack(self, args: Sequence):
        if len(args) != self._nparams:
            raise TypeError(f"kernel '{self.name}' takes {self._nparams} arguments, got "
                            f"{len(args)}")
        slots = self._slot()
        for p, a in zip(self.params, args):
            if p.kind == "pointer":
                if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer)):
                    raise TypeError(f"kernel '{self.name}' argument {p.index} '{p.name}' "
                                    f"({p.ctype}) must be an int device address, got "
                                    f"{type(a).__name__}")
                addr = int(a)
                if not 0 <= addr < 2**64:
                    raise TypeError(f"kernel '{self.name}' argument {p.index} '{p.name}' "
                                    f"({p.ctype}): address {addr} is out of range")
                slots[p.index] = addr
            else:
                if p.dtype is None:
                    raise TypeError(f"kernel '{self.name}' argument {p.index} '{p.name}' has C "
                                    f"type {p.ctype}, which the emulator cannot pass")
                if not isinstance(a, np.generic) or a.dtype != p.dtype:
                    got = (f"numpy.{a.dtype}" if isinstance(a, np.generic)
                           else type(a).__name__)
                    raise TypeError(f"kernel '{self.name}' argument {p.index} '{p.name}' "
                                    f"({p.ctype}) must be a numpy.{p.dtype} scalar, got {got}")
                raw = a.tobytes()
                ctypes.memmove(ctypes.addressof(slots) + 8 * p.index, raw, len(raw))
        base = ctypes.addressof(slots)
        ptrs = self._ptrs(*(base + 8 * i for i in range(self._nparams)))
        return slots, ptrs

    def launch(self, grid, block, args: Sequence) -> None:
        grid, block = check_launch_config(self.name, grid, block)
        slots, ptrs = self._pack(args)
        order, seed = current_order()
        err = ctypes.create_string_buffer(_MSG_LEN)
        cfg = _Cfg((ctypes.c_uint * 3)(*grid), (ctypes.c_uint * 3)(*block), ORDERS[order],
                   int(_early_exit_allowed()), seed & (2**64 - 1),
                   ctypes.cast(err, ctypes.c_char_p), _MSG_LEN)
        with _launch_lock:
            rc = self._fn(ctypes.byref(cfg), ptrs)
        del slots
        if rc == 0:
            return
        msg = err.value.decode("utf-8", "replace")
        if rc == _RC_CONFIG:
            raise LaunchConfigError(msg)
        raise EmulatorError(msg or f"kernel '{self.name}': launch failed with code {rc}")


class Module:
    """A CUDA source compiled for the emulator; finds its extern "C" __global__ entry points
    itself. `options` are NVRTC options; only macro definitions (-D/-U) carry over."""

    def __init__(self, source: str, *, filename: str = "kernel.cu", options: tuple = ()):
        built = build(source, filename=filename, options=tuple(options))
        self.filename = filename
        self.so_path = built.so_path
        self.cache_hit = not built.built
        self._lib = ctypes.CDLL(str(built.so_path))
        kernels = {}
        for name, pnames in built.entries:
            sig_fn = getattr(self._lib, f"gl_emu_signature_{name}")
            sig_fn.restype = ctypes.c_char_p
            sig_fn.argtypes = []
            sig = sig_fn().decode()
            ctypes_ = sig.split(";") if sig else []
            names = list(pnames) if len(pnames) == len(ctypes_) else [""] * len(ctypes_)
            params = tuple(_param(i, n, c) for i, (n, c) in enumerate(zip(names, ctypes_)))
            fn = getattr(self._lib, f"gl_emu_launch_{name}")
            fn.restype = ctypes.c_int
            fn.argtypes = [ctypes.POINTER(_Cfg), ctypes.c_void_p]
            kernels[name] = Kernel(self, name, params, fn)
        self._kernels = kernels
        self.names = tuple(kernels)

    def get_kernel(self, name: str) -> Kernel:
        try:
            return self._kernels[name]
        except KeyError:
            raise KeyError(f"{self.filename} has no extern \"C\" __global__ entry point "
                           f"{name!r}; known: {list(self.names)}") from None


def guarded(nbytes: int, *, guard: int = 64, fill: int = 0xFF, pattern: int = 0xA5):
    """A host buffer of `nbytes` bytes between two guard zones, for use as a device buffer.

    Returns (view, check): `view` is a uint8 array of the buffer (filled with `fill`, 0xFF
    by default so unwritten floats read as NaN), `check()` raises EmulatorError when a
    guard byte changed, naming how far before or past the buffer the write landed.
    """
    raw = np.full(nbytes + 2 * guard, pattern, dtype=np.uint8)
    view = raw[guard:guard + nbytes]
    view[:] = fill

    def check(what: str = "buffer") -> None:
        before = np.flatnonzero(raw[:guard] != pattern)
        after = np.flatnonzero(raw[guard + nbytes:] != pattern)
        if before.size:
            raise EmulatorError(f"{what}: write {guard - before[0]} byte(s) before the start "
                                f"of a {nbytes}-byte buffer")
        if after.size:
            raise EmulatorError(f"{what}: write at byte offset {nbytes + after[0]} of a "
                                f"{nbytes}-byte buffer, past its end")

    return view, check
