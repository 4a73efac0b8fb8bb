"""Loads the CUDA sources in ``kernels/`` and compiles them with NVRTC.

Importing this module never imports CuPy; only compiling does. The same source text and
options serve three users: the runtime loader (``get_function``), ``tools/kernels_check.py``
(NVRTC compile for several architectures on machines without a GPU) and ``kernel_report``
(what ``gradlab info`` prints).

The loader compiles with NVRTC itself and hands CuPy the CUBIN (``cupy.RawModule(path=...)``),
rather than the source (``RawModule(code=...)``): CuPy appends ``-ftz=true`` to the options of
every source it compiles, after the caller's (NVRTC honours the last), and flushing float32
subnormals to zero would break the kernels' bitwise agreement with the NumPy reference. The
module is cached on disk (``kernel_cache_dir``), keyed by the source text, the options, the
architecture and NVRTC's version, next to the source it was compiled from.

Headers (``#include "x.cuh"``) are pasted into the source here rather than found through an
include path, so that the cache key is the whole text: a header edit recompiles.
``#line`` directives around each pasted header keep compiler messages (NVRTC's, and the CUDA
emulator's in the tests) pointing at the original file and line.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import threading
from pathlib import Path

# Module name -> entry points without the dtype suffix. Every entry point exists as
# ``<name>_f32`` and ``<name>_f64``.
MODULES = {
    "optim": ["sgd_step", "adam_step", "rmsprop_step", "adagrad_step", "adadelta_step",
              "adamax_step", "nadam_step", "radam_step"],
    "dropout": ["dropout_forward", "dropout_forward_graphed", "dropout_backward"],
    "random": ["random_uniform", "random_uniform_graphed", "random_normal",
               "random_normal_graphed"],
    "softmax_ce": ["softmax_ce_warp", "softmax_ce_block"],
    "bias_relu": ["bias_relu_forward", "bias_relu_backward"],
    "matmul": ["matmul"],
}
DTYPE_SUFFIX = {"float32": "f32", "float64": "f64"}

# Options given to NVRTC at run time and by tools/kernels_check.py, each adding the target
# architecture. --fmad=false: NVRTC contracts a * b + c into one fused multiply-add by
# default, which rounds once instead of twice; without contraction the optimizer and dropout
# kernels give the NumPy reference's bits (the kernels are memory-bound, so the FMAs buy no
# speed). --ftz=false (NVRTC's default, said here because CuPy's own compile says the
# opposite): float32 subnormals are kept, as NumPy keeps them.
NVRTC_OPTIONS = ("--std=c++17", "--fmad=false", "--ftz=false")
CHECK_ARCHS = ("compute_75", "compute_80", "compute_90")

_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([^"]+)"[ \t]*$', re.MULTILINE)


class KernelCompileError(RuntimeError):
    """A kernel source failed to compile; the message carries the NVRTC log."""


def kernel_dir() -> Path:
    """The folder holding the .cu sources: ``gradlab/kernels`` in an installed wheel, else the
    top-level ``kernels/`` of a source checkout."""
    here = Path(__file__).resolve()
    installed = here.parent.parent / "kernels"
    if installed.is_dir():
        return installed
    checkout = here.parents[3] / "kernels"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(
        f"gradlab's CUDA kernel sources were not found: looked in {installed} (installed "
        f"package) and {checkout} (source checkout); reinstall gradlab")


def kernel_source(module: str) -> str:
    """The full source of ``kernels/<module>.cu`` with its local headers pasted in, each
    between ``#line`` directives naming ``kernels/<file>`` and its original line numbers."""
    if module not in MODULES:
        raise KeyError(f"unknown kernel module {module!r}; known: {sorted(MODULES)}")
    root = kernel_dir()

    def expand(path: Path, seen: tuple) -> str:
        if path.name in seen:
            raise ValueError(f"kernel header include cycle: {' -> '.join(seen + (path.name,))}")
        text = path.read_text(encoding="utf-8")

        def paste(match):
            header = root / match.group(1)
            if not header.is_file():
                raise FileNotFoundError(f"{path.name} includes missing header {header}")
            resume = text.count("\n", 0, match.start()) + 2  # the line after the #include
            return (f'#line 1 "kernels/{header.name}"\n'
                    f'{expand(header, seen + (path.name,)).rstrip()}\n'
                    f'#line {resume} "kernels/{path.name}"')

        return _INCLUDE.sub(paste, text)

    return f'#line 1 "kernels/{module}.cu"\n' + expand(root / f"{module}.cu", ())


def entry_points(module: str) -> list[str]:
    return [f"{name}_{suffix}" for name in MODULES[module] for suffix in DTYPE_SUFFIX.values()]


def nvrtc_compile(module: str, arch: str, binary: bool = False) -> tuple[bool, str, str]:
    """Compile one module with NVRTC for ``arch`` (e.g. 'compute_90') without a GPU.

    Returns (ok, log, ptx); ok is False on a compile error, and the log is NVRTC's text
    (warnings included). With ``binary`` (a real architecture, 'sm_90'), the third item is
    the CUBIN's bytes instead. Raises ImportError when CuPy is not installed.
    """
    from cupy.cuda import nvrtc

    source = kernel_source(module)
    prog = nvrtc.createProgram(source, f"{module}.cu", [], [])
    try:
        try:
            nvrtc.compileProgram(prog, [*NVRTC_OPTIONS, f"--gpu-architecture={arch}"])
            ok = True
        except nvrtc.NVRTCError:
            ok = False
        log = nvrtc.getProgramLog(prog)
        log = log.decode() if isinstance(log, bytes) else log
        out = ""
        if ok and binary:
            out = nvrtc.getCUBIN(prog)
        elif ok:
            out = nvrtc.getPTX(prog)
            out = out.decode() if isinstance(out, bytes) else out
    finally:
        nvrtc.destroyProgram(prog)
    return ok, log.strip("\x00").strip(), out


def missing_entry_points(module: str, ptx: str) -> list[str]:
    return [name for name in entry_points(module)
            if not re.search(rf"\.entry\s+{re.escape(name)}\s*\(", ptx)]


# -- runtime loading (needs a GPU) ----------------------------------------------------------
_lock = threading.Lock()
_modules: dict = {}
_functions: dict = {}


def kernel_cache_dir() -> Path:
    """Where compiled kernels are kept: $GRADLAB_KERNEL_CACHE, else
    $XDG_CACHE_HOME/gradlab/kernels (~/.cache/gradlab/kernels)."""
    env = os.environ.get("GRADLAB_KERNEL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gradlab" / "kernels"


def compiled_module(module: str, arch: str) -> Path:
    """The compiled ``kernels/<module>.cu`` for ``arch``: a CUBIN for a real architecture
    ('sm_90'), a PTX for a virtual one ('compute_90'), compiled by NVRTC with NVRTC_OPTIONS
    on a cache miss; the source it was compiled from lies next to it (the same name,
    ``.cu``). Raises KernelCompileError with NVRTC's log."""
    from cupy.cuda import nvrtc

    source = kernel_source(module)
    options = (*NVRTC_OPTIONS, f"--gpu-architecture={arch}")
    key = hashlib.sha256(repr((source, options, tuple(nvrtc.getVersion()))).encode())
    folder = kernel_cache_dir()
    binary = arch.startswith("sm_")
    path = folder / f"{module}-{arch}-{key.hexdigest()[:24]}.{'cubin' if binary else 'ptx'}"
    if path.is_file():
        return path
    ok, log, compiled = nvrtc_compile(module, arch, binary=binary)
    if not ok:
        raise KernelCompileError(f"compiling kernels/{module}.cu for {arch} failed:\n{log}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # The source first, then the module, each written whole (another process may be
        # loading the same pair): a module that is there always has its source beside it.
        _write_atomically(path.with_suffix(".cu"), f"// nvrtc {' '.join(options)}\n{source}")
        _write_atomically(path, compiled)
    except OSError as exc:
        raise KernelCompileError(
            f"kernels/{module}.cu compiled, but it cannot be written to {folder} "
            f"({exc.strerror or exc}); set GRADLAB_KERNEL_CACHE to a writable folder") from exc
    return path


def _write_atomically(path: Path, data):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _arch(compute_capability: str) -> str:
    """What to compile for on a device of ``compute_capability`` ('90'), as CuPy's own
    compile chooses: the device itself ('sm_90': a CUBIN, which needs no driver JIT) where
    this NVRTC knows it, else the newest virtual architecture it knows below ('compute_89':
    PTX that the driver compiles for the device)."""
    from cupy.cuda import nvrtc

    cc = int(compute_capability)
    try:
        supported = list(nvrtc.getSupportedArchs())
    except Exception:  # noqa: BLE001 - an NVRTC before 11.2 cannot list them: try the device's
        return f"sm_{cc}"
    if cc in supported:
        return f"sm_{cc}"
    older = [a for a in supported if a < cc]
    if not older:
        major, minor = divmod(cc, 10)
        raise KernelCompileError(
            f"this GPU has compute capability {major}.{minor}, older than any this NVRTC "
            f"{'.'.join(map(str, nvrtc.getVersion()))} compiles for (from "
            f"{min(supported) // 10}.{min(supported) % 10}); install a CuPy and NVRTC for an "
            f"older CUDA (e.g. the cuda12 extra), or use device='cpu'")
    return f"compute_{max(older)}"


def _module(module: str, device_id: int):
    key = (module, device_id)
    mod = _modules.get(key)
    if mod is not None:
        return mod
    import cupy

    with _lock:
        mod = _modules.get(key)
        if mod is None:
            device = cupy.cuda.Device(device_id)
            with device:
                path = compiled_module(module, _arch(device.compute_capability))
                mod = cupy.RawModule(path=str(path))
                # Every entry point now, not at its first launch: a kernel first launched
                # inside a CUDA graph capture (dropout's graphed variant) would otherwise be
                # loaded there, which drivers before CUDA 12.3 refuse.
                try:
                    functions = {(module, base, suffix, device_id):
                                 mod.get_function(f"{base}_{suffix}")
                                 for base in MODULES[module] for suffix in DTYPE_SUFFIX.values()}
                except Exception as exc:  # noqa: BLE001 - the driver's refusal, said in words
                    raise KernelCompileError(
                        f"loading {path} (kernels/{module}.cu, compiled) on cuda:{device_id} "
                        f"failed: {type(exc).__name__}: {exc}. A driver older than the NVRTC "
                        f"that compiled it cannot load it: update the driver, or install a "
                        f"CuPy and NVRTC for the driver's CUDA; a damaged file: delete it, "
                        f"and it is compiled again") from exc
                _functions.update(functions)
            _modules[key] = mod
    return mod


def get_function(module: str, name: str, dtype, device_id: int):
    """The compiled ``<name>_<f32|f64>`` of ``kernels/<module>.cu`` on ``device_id``;
    compiled on first use per device and memoized (and cached on disk: compiled_module)."""
    suffix = DTYPE_SUFFIX[str(dtype)]
    key = (module, name, suffix, device_id)
    fn = _functions.get(key)
    if fn is None:
        fn = _module(module, device_id).get_function(f"{name}_{suffix}")
        _functions[key] = fn
    return fn


def kernel_report() -> list[dict]:
    """One entry per kernel module: its entry points and whether it builds here.

    With a usable GPU each module is compiled and loaded on cuda:0 (status 'loaded'); with
    CuPy but no GPU it is compiled by NVRTC for compute_90 only (status 'compiles'); without
    CuPy nothing can be checked (status 'unchecked'). A failure gives status 'error' and the
    log in 'detail'.
    """
    from .registry import cuda_status

    gpu, why = cuda_status()
    try:
        import cupy  # noqa: F401
        have_cupy = True
    except Exception:
        have_cupy = False
    report = []
    for module in MODULES:
        entry = {"module": module, "source": f"kernels/{module}.cu",
                 "entry_points": entry_points(module)}
        try:
            if gpu:
                mod = _module(module, 0)
                for name in entry["entry_points"]:
                    mod.get_function(name)
                entry.update(status="loaded", detail="compiled and loaded on cuda:0")
            elif have_cupy:
                ok, log, ptx = nvrtc_compile(module, CHECK_ARCHS[-1])
                missing = missing_entry_points(module, ptx) if ok else []
                if ok and not missing:
                    entry.update(status="compiles",
                                 detail=f"NVRTC compile for {CHECK_ARCHS[-1]} only (no GPU: "
                                        f"{why})")
                else:
                    entry.update(status="error",
                                 detail=log or f"entry points missing from PTX: {missing}")
            else:
                entry.update(status="unchecked",
                             detail="CuPy is not installed; install the `nvrtc` extra to "
                                    "compile-check the kernels")
        except Exception as exc:
            entry.update(status="error", detail=f"{type(exc).__name__}: {exc}")
        report.append(entry)
    return report
