"""``cupy.RawModule`` / ``cupy.RawKernel`` running the real CUDA source on the CPU emulator.

Arguments are converted exactly as CuPy converts them (``cupy/cuda/function.pyx``,
``_pointer``; CuPy docs "User-Defined Kernels", RawKernel: "the arguments are ... cupy.ndarray,
NumPy scalars or Python scalars"):

- a ``cupy.ndarray`` becomes its data pointer; ``None`` a NULL pointer;
- a NumPy scalar is passed as its own bytes (so its dtype must be the parameter's C type);
- a Python ``int`` (``bool`` included: it is an ``int``) becomes an int64, a ``float`` a
  double, a ``complex`` a complex128;
- anything else (a ``numpy.ndarray``, a list) is ``TypeError: Unsupported type ...``.

CuPy then hands those bytes to the driver unchecked: a Python float for a ``float`` parameter
silently becomes the low half of a double. The stand-in instead checks each converted
argument against the C signature the emulator exports and raises a TypeError that names the
argument and the fix. Pointers must point at a C-contiguous device array of the pointee's
dtype; a zero 8-byte integer (e.g. ``numpy.uint64(0)``) passes as NULL, since on hardware only
the 8 bytes matter. After every launch the guard bytes of every live allocation are checked.
"""
from __future__ import annotations

import numpy as np

from . import capture, memory
from ._core import ndarray
from .cuda import CompileException, driver

# NumPy scalar types CuPy passes by value ('?bhilqBHILQefdFD' in function.pyx).
_BY_VALUE = {np.dtype(c).type for c in "?bhilqBHILQefdFD"}
_NULL = object()


def _runtime():
    from cuda_emulator import runtime
    return runtime


def _source_of(path):
    """The CUDA source a PTX/CUBIN file at ``path`` was compiled from. The emulator cannot run
    PTX; it runs the source instead, which must lie next to the file under the same name with
    ``.cu`` (gradlab's kernel cache keeps it there: backend/cuda_kernels.compiled_module)."""
    from pathlib import Path

    binary = Path(path)
    if not binary.is_file():  # CuPy: cuModuleLoad fails on a missing file
        raise driver.CUDADriverError(f"CUDA_ERROR_FILE_NOT_FOUND: file not found ({path})")
    source = binary.with_suffix(".cu")
    if not source.is_file():
        raise NotImplementedError(
            f"the CuPy stand-in runs CUDA sources, not PTX or CUBIN: RawModule(path={path!r}) "
            f"needs the source it was compiled from next to it ({source.name})")
    return source.read_text(encoding="utf-8")


class RawModule:
    """Compiles ``code`` for the emulator on first use (``compile()`` or ``get_function``).
    ``path=``: a module NVRTC compiled, emulated by the source it was compiled from
    (_source_of), read at the first compile or get_function, when CuPy loads the file."""

    def __init__(self, code=None, *, path=None, options=(), backend="nvrtc",
                 translate_cucomplex=False, enable_cooperative_groups=False,
                 name_expressions=None, jitify=None):
        if (code is None) == (path is None):
            raise TypeError("Exactly one of code and path keyword arguments must be given.")
        if not isinstance(options, tuple):  # CuPy declares `tuple options`
            raise TypeError(f"Argument 'options' has incorrect type (expected tuple, got "
                            f"{type(options).__name__})")
        if name_expressions:
            raise NotImplementedError("name_expressions (C++ templates) are not modelled")
        self.code = code
        self.path = path  # read at the first compile, as CuPy loads the file then
        self.options = options
        self.backend = backend
        self._module = None
        self._kernels = {}

    def compile(self, log_stream=None):
        if self._module is None:
            if self.code is None:
                self.code = _source_of(self.path)
            rt = _runtime()
            try:
                self._module = rt.Module(self.code, filename="kernel.cu", options=self.options)
            except rt.CompileError as exc:
                raise CompileException(str(exc), self.code, "kernel.cu", self.options) \
                    from exc
        return self._module

    def get_function(self, name):
        kernel = self._kernels.get(name)
        if kernel is None:
            module = self.compile()
            try:
                emulated = module.get_kernel(name)
            except KeyError:
                raise driver.CUDADriverError(
                    f"CUDA_ERROR_NOT_FOUND: named symbol not found ({name!r}; the module "
                    f"has {list(module.names)})") from None
            kernel = RawKernel._bound(self, emulated)
            self._kernels[name] = kernel
        return kernel


class RawKernel:
    """One kernel. ``RawKernel(code, name, options)`` compiles its own module on first call;
    ``RawModule.get_function`` returns one bound to that module."""

    def __init__(self, code, name, options=(), backend="nvrtc", *,
                 translate_cucomplex=False, enable_cooperative_groups=False, jitify=False):
        self.code, self.name, self.options = code, name, tuple(options)
        self._module = RawModule(code=code, options=tuple(options))
        self._kernel = None

    @classmethod
    def _bound(cls, module, emulated):
        self = object.__new__(cls)
        self.code, self.name, self.options = module.code, emulated.name, module.options
        self._module, self._kernel = module, emulated
        return self

    @property
    def kernel(self):
        if self._kernel is None:
            self._kernel = self._module.get_function(self.name)._kernel
        return self._kernel

    def compile(self, log_stream=None):
        self.kernel  # noqa: B018  (compiles)

    @property
    def attributes(self):
        return {"max_threads_per_block": 1024, "shared_size_bytes": 0, "num_regs": 0}

    @property
    def max_threads_per_block(self):
        return 1024

    def __call__(self, grid, block, args, *, shared_mem=0, stream=None,
                 enable_cooperative_groups=False):
        # CuPy's Function.__call__ declares `tuple grid, tuple block`, pads them to three
        # entries and launches at least one block and thread per axis.
        for what, dims in (("grid", grid), ("block", block)):
            if not isinstance(dims, tuple):
                raise TypeError(f"Argument '{what}' has incorrect type (expected tuple, got "
                                f"{type(dims).__name__})")
        grid3 = tuple(max(1, int(d)) for d in (grid + (1, 1))[:3])
        block3 = tuple(max(1, int(d)) for d in (block + (1, 1))[:3])
        if shared_mem:
            raise NotImplementedError("dynamic shared memory is not modelled by the emulator")
        kernel = self.kernel
        converted = [_convert(kernel, i, a) for i, a in enumerate(args)]
        if len(converted) != len(kernel.params):
            raise TypeError(f"kernel '{kernel.name}' takes {len(kernel.params)} arguments "
                            f"({_signature(kernel)}), got {len(converted)}")
        values = [_check(kernel, p, c, a) for p, c, a in zip(kernel.params, converted, args)]
        rt = _runtime()
        try:
            kernel.launch(grid3, block3, values)
        except rt.LaunchConfigError as exc:
            # CUDA rejects such a launch with CUDA_ERROR_INVALID_VALUE; CuPy raises it.
            raise driver.CUDADriverError(f"CUDA_ERROR_INVALID_VALUE: invalid argument ({exc})") \
                from exc
        memory.check_guards(kernel.name)
        if capture.capturing() is not None and stream is None:
            # Repeated at each graph launch with the same pointers and scalars; the graph keeps
            # the buffers alive (capture.end).
            keep = [a._mem.raw for a in args if type(a) is ndarray]

            def thunk():
                keep  # noqa: B018
                kernel.launch(grid3, block3, values)
                memory.check_guards(kernel.name)
            capture.record(thunk)


def _signature(kernel):
    return ", ".join(f"{p.ctype} {p.name}".strip() for p in kernel.params)


def _convert(kernel, index, x):
    """CuPy's conversion of one argument: (kind, value) with kind 'array', 'null' or
    'scalar' (a NumPy scalar of the dtype CuPy would pass)."""
    if x is None:
        return "null", _NULL
    if type(x) is ndarray:
        return "array", x
    if type(x) in _BY_VALUE:
        return "scalar", x
    if isinstance(x, int):
        return "scalar", np.int64(x)
    if isinstance(x, float):
        return "scalar", np.float64(x)
    if isinstance(x, complex):
        return "scalar", np.complex128(x)
    where = _where(kernel, index)
    hint = ""
    if isinstance(x, np.ndarray):
        hint = "; copy it to the device with cupy.asarray() first"
    raise TypeError(f"Unsupported type {type(x)} for {where}{hint}")


def _where(kernel, index):
    if index < len(kernel.params):
        p = kernel.params[index]
        return f"argument {index} '{p.name}' ({p.ctype}) of kernel '{kernel.name}'"
    return f"argument {index} of kernel '{kernel.name}' ({_signature(kernel)})"


def _describe(original, value):
    if isinstance(original, bool):
        return "a Python bool, which CuPy passes as an 8-byte int64"
    if isinstance(original, int) and not isinstance(original, np.generic):
        return "a Python int, which CuPy passes as an 8-byte int64"
    if isinstance(original, float) and not isinstance(original, np.generic):
        return "a Python float, which CuPy passes as an 8-byte double"
    if type(original) is ndarray:
        return f"a {original.dtype} device array of shape {original.shape}"
    return f"numpy.{np.dtype(type(value)).name}({value!r})"


def _check(kernel, p, conv, original):
    kind, value = conv
    where = f"argument {p.index} '{p.name}' ({p.ctype}) of kernel '{kernel.name}'"
    if p.kind == "pointer":
        if kind == "null":
            return 0
        if kind == "array":
            if p.dtype is not None and value.dtype != p.dtype:
                raise TypeError(f"{where}: got {_describe(original, value)}; the kernel reads "
                                f"{p.dtype} elements, so pass a {p.dtype} array "
                                f"(a.astype(numpy.{p.dtype}))")
            if not value.flags.c_contiguous:
                raise TypeError(f"{where}: got a non-contiguous view (shape {value.shape}, "
                                f"strides {value.strides}); a raw pointer walks contiguous "
                                f"memory, so pass cupy.ascontiguousarray(a)")
            return value.data.ptr
        if value.dtype.kind in "iu" and value.dtype.itemsize == 8 and value == 0:
            return 0  # NULL: on hardware only the 8 bytes of a pointer argument matter
        raise TypeError(f"{where}: got {_describe(original, value)}; a pointer parameter takes "
                        f"a device array (or None / numpy.uint64(0) for NULL)")
    if kind != "scalar":
        raise TypeError(f"{where}: got {'None' if kind == 'null' else _describe(original, value)}"
                        f"; pass numpy.{p.dtype}(x)")
    if p.dtype is None:
        raise TypeError(f"{where}: the emulator cannot pass C type {p.ctype!r} by value")
    if value.dtype != p.dtype:
        raise TypeError(f"{where}: got {_describe(original, value)}, but the kernel reads "
                        f"{p.dtype.itemsize} byte(s) as {p.ctype}; pass numpy.{p.dtype}(x)")
    return value
