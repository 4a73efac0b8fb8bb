"""Put the CuPy stand-in in place of ``cupy`` / ``cupyx`` for a test process without a GPU.

``install()`` must run before gradlab is imported (tests/conftest.py does it at import, and
``sitecustomize.py`` in ``tests/cuda_emulator/site`` does it for child processes that set
``GRADLAB_EMULATE_CUDA_CHILD=1``). gradlab itself never knows: it imports ``cupy`` and gets
this package.
"""
from __future__ import annotations

import os
import shutil
import sys

ENV_DISABLE = "GRADLAB_EMULATE_CUDA"  # "0" turns the emulation off


def gpu_present() -> bool:
    """True when the real CuPy imports and sees at least one GPU. Never raises. (install()
    removes the real package from sys.modules again before putting the stand-in there.)"""
    if installed():
        return False
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def compiler_available() -> bool:
    return shutil.which("g++") is not None


def nvrtc_available() -> bool:
    """Whether the real NVRTC loads (gradlab's kernel loader compiles with it, on the
    emulated device too: backend/cuda_kernels.compiled_module)."""
    try:
        from ._real import nvrtc
        nvrtc().getVersion()
        return True
    except Exception:
        return False


def disabled() -> bool:
    return os.environ.get(ENV_DISABLE, "").strip() == "0"


def why_not() -> str | None:
    """Why the emulated device cannot be installed here, or None when it can."""
    if disabled():
        return f"CUDA emulation disabled by {ENV_DISABLE}=0"
    if not compiler_available():
        return "CUDA emulation needs g++ to compile kernels/*.cu for the CPU; none on PATH"
    if not nvrtc_available():
        return ("CUDA emulation runs gradlab's kernel loader, which compiles kernels/*.cu "
                "with NVRTC: install the nvrtc extra (pip install -e '.[nvrtc]')")
    return None


def installed() -> bool:
    mod = sys.modules.get("cupy")
    return mod is not None and getattr(mod, "__name__", "").endswith("cupy_standin")


def install():
    """Register the stand-in as cupy, cupy.cuda, cupy.cuda.runtime, cupy.cuda.driver,
    cupy.cuda.compiler, cupy.random, cupy.linalg and cupyx. Idempotent; refuses when gradlab
    already imported the real cupy (its backend would keep the real module)."""
    if installed():
        return sys.modules["cupy"]
    if "gradlab.backend.cupy_backend" in sys.modules:
        raise RuntimeError("install() must run before gradlab's CUDA backend is imported")
    from . import cuda, cupyx, linalg, random
    pkg = sys.modules[__package__]
    for name in [n for n in sys.modules if n == "cupy" or n.startswith(("cupy.", "cupyx"))]:
        del sys.modules[name]
    sys.modules.update({
        "cupy": pkg, "cupy.cuda": cuda, "cupy.cuda.runtime": cuda.runtime,
        "cupy.cuda.driver": cuda.driver, "cupy.cuda.compiler": cuda.compiler,
        "cupy.random": random, "cupy.linalg": linalg, "cupyx": cupyx,
    })
    return pkg
