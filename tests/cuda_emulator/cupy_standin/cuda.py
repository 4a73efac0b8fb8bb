"""``cupy.cuda`` of the stand-in: one emulated device, streams and events that are synchronous.

The device reports 2 multiprocessors, so gradlab's grids (a multiple of the SM count) are
smaller than the work and every grid-stride loop in the kernels wraps at least once.
Everything runs synchronously on the calling thread: a stream is only a context manager, an
event records the host clock, and an error surfaces at the call that caused it (on a GPU
many surface later, at a synchronisation point). See FIDELITY.md.
"""
from __future__ import annotations

import threading
import time
import types

from . import capture as _capture
from .capture import Graph, GraphMemoryError  # noqa: F401  (cupy.cuda.Graph)
from .memory import MemoryPool, using_allocator  # noqa: F401  (cupy.cuda.MemoryPool, ...)

MULTIPROCESSOR_COUNT = 2
DEVICE_NAME = b"gradlab emulated CUDA device"

_ATTRIBUTES = {
    "MultiProcessorCount": MULTIPROCESSOR_COUNT,
    "MaxThreadsPerBlock": 1024,
    "MaxBlockDimX": 1024, "MaxBlockDimY": 1024, "MaxBlockDimZ": 64,
    "MaxGridDimX": 2**31 - 1, "MaxGridDimY": 65535, "MaxGridDimZ": 65535,
    "WarpSize": 32,
    "MaxSharedMemoryPerBlock": 48 * 1024,
    "MaxRegistersPerBlock": 65536,
    "ComputeCapabilityMajor": 9, "ComputeCapabilityMinor": 0,
    "MaxThreadsPerMultiProcessor": 2048,
}


class _Runtime(types.ModuleType):
    """``cupy.cuda.runtime``: the calls gradlab makes, answered for one device."""

    class CUDARuntimeError(RuntimeError):
        def __init__(self, status, name="cudaErrorInvalidDevice", text="invalid device ordinal"):
            self.status = status
            super().__init__(f"{name}: {text}")

    is_hip = False
    streamCaptureModeGlobal, streamCaptureModeThreadLocal, streamCaptureModeRelaxed = 0, 1, 2
    cudaDevAttrMultiProcessorCount = 16

    def getDeviceCount(self):
        return 1

    def getDevice(self):
        return _current.id

    def setDevice(self, device):
        _check_ordinal(device)

    def deviceSynchronize(self):
        _capture.device_sync("cudaDeviceSynchronize")

    def runtimeGetVersion(self):
        return 13000

    def driverGetVersion(self):
        return 13000

    def getDeviceProperties(self, device):
        _check_ordinal(device)
        return {"name": DEVICE_NAME, "totalGlobalMem": 16 * 2**30,
                "multiProcessorCount": MULTIPROCESSOR_COUNT, "major": 9, "minor": 0,
                "warpSize": 32, "maxThreadsPerBlock": 1024, "sharedMemPerBlock": 48 * 1024,
                "maxThreadsDim": (1024, 1024, 64), "maxGridSize": (2**31 - 1, 65535, 65535),
                "clockRate": 1_000_000, "pciBusID": 0, "pciDeviceID": 0, "uuid": b"\0" * 16}

    def memGetInfo(self):
        return (16 * 2**30, 16 * 2**30)


runtime = _Runtime("cupy.cuda.runtime")
CUDARuntimeError = runtime.CUDARuntimeError


class _Driver(types.ModuleType):
    class CUDADriverError(RuntimeError):
        pass


driver = _Driver("cupy.cuda.driver")


def _check_ordinal(device):
    if not 0 <= int(device) < 1:
        raise CUDARuntimeError(101)


class Device:
    """``cupy.cuda.Device(i)``: a context manager selecting device ``i`` (only 0 exists;
    entering another raises cudaErrorInvalidDevice, as CuPy does)."""

    def __init__(self, device=None):
        if device is None:
            device = _current.id
        elif isinstance(device, Device):
            device = device.id
        self.id = int(device)
        self._stack = []

    def __int__(self):
        return self.id

    def __enter__(self):
        _check_ordinal(self.id)
        self._stack.append(_local.device)
        _local.device = self
        return self

    def __exit__(self, *exc):
        _local.device = self._stack.pop()
        return False

    def use(self):
        _check_ordinal(self.id)
        _local.device = self

    def synchronize(self):
        """Work is synchronous here, so there is nothing to wait for (but it is an error
        while a stream captures, as cudaDeviceSynchronize is on hardware)."""
        _capture.device_sync("Device.synchronize")

    @property
    def attributes(self):
        _check_ordinal(self.id)
        return dict(_ATTRIBUTES)

    @property
    def compute_capability(self):
        return "90"

    @property
    def mem_info(self):
        return runtime.memGetInfo()

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


class _Local(threading.local):
    def __init__(self):
        self.device = Device.__new__(Device)
        self.device.id, self.device._stack = 0, []
        self.stream = None


_local = _Local()


class _CurrentDevice:
    @property
    def id(self):
        return _local.device.id


_current = _CurrentDevice()


def get_device_id():
    return _local.device.id


def is_available():
    return True


class Stream:
    """A context manager; kernels run synchronously whatever the stream. Capture
    (``begin_capture``/``end_capture``) is modelled by ``capture.py``."""

    null = None

    def __init__(self, null=False, non_blocking=False, ptds=False, priority=None):
        self.ptr = 0 if null else id(self)
        self.device_id = -1 if null else 0
        self.non_blocking = bool(non_blocking) and not null

    def __enter__(self):
        self._prev = _local.stream
        _local.stream = self
        return self

    def __exit__(self, *exc):
        _local.stream = self._prev
        return False

    def use(self):
        _local.stream = self
        return self

    def synchronize(self):
        if _capture.active() is not None and _capture.active().stream is self:
            _capture.sync("Stream.synchronize")

    @property
    def done(self):
        if _capture.active() is not None and _capture.active().stream is self:
            _capture.sync("Stream.done (cudaStreamQuery)")
        return True

    def record(self, event=None):
        event = event or Event()
        event.record(self)
        return event

    def wait_event(self, event):
        pass

    def begin_capture(self, mode=None):
        """Start capturing (CuPy's default mode is relaxed, the only one modelled)."""
        if self.ptr == 0:
            raise RuntimeError("cannot capture on the default (legacy) stream")
        if mode is not None and mode != runtime.streamCaptureModeRelaxed:
            raise NotImplementedError("only the relaxed capture mode is modelled")
        _capture.begin(self)

    def end_capture(self):
        """Stop capturing; the Graph of what was captured."""
        return Graph._from(_capture.end(self))

    def is_capturing(self):
        cap = _capture.active()
        return cap is not None and cap.stream is self

    @property
    def is_non_blocking(self):
        return self.non_blocking


Stream.null = Stream(null=True)


def get_current_stream(device_id=None):
    return _local.stream or Stream.null


class Event:
    """Records the host clock: the emulated device has no timing of its own."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.disable_timing = disable_timing
        self._t = None

    def record(self, stream=None):
        self._t = time.perf_counter()

    def synchronize(self):
        pass

    @property
    def done(self):
        return True


def get_elapsed_time(start_event, end_event):
    """Milliseconds of HOST time between the two records (timing is not modelled: this is
    how long the emulation took, not what a GPU would take)."""
    if start_event._t is None or end_event._t is None:
        raise CUDARuntimeError(600, "cudaErrorNotReady", "event not recorded")
    return (end_event._t - start_event._t) * 1e3


class CompileException(Exception):
    """A kernel source failed to compile; ``get_message()`` returns the compiler log, as
    CuPy's ``cupy.cuda.compiler.CompileException`` does."""

    def __init__(self, msg, source="", name="", options=()):
        self._msg = msg
        self.source, self.name, self.options = source, name, tuple(options)
        super().__init__(msg)

    def get_message(self):
        return self._msg


compiler = types.ModuleType("cupy.cuda.compiler")
compiler.CompileException = CompileException


def __getattr__(name):
    # NVRTC is real when CuPy is installed: tests and tools/kernels_check.py compile the
    # kernels with it, which needs no GPU. It is imported from cupy_backends so that the
    # real cupy package (shadowed by this stand-in) is never imported.
    if name == "nvrtc":
        try:
            from ._real import nvrtc as load
            real = load()
        except Exception as exc:
            raise AttributeError(f"cupy.cuda.nvrtc: real CuPy/NVRTC is not installed ({exc})") \
                from None
        globals()["nvrtc"] = real
        return real
    raise AttributeError(f"module 'cupy.cuda' has no attribute {name!r} (not modelled by the "
                         f"CuPy stand-in)")
