"""The pieces of the real CuPy the stand-in reuses without importing the real ``cupy``
package: NVRTC (compiles without a GPU) and ``cupy._environment``, which NVRTC's loader asks
for the library paths."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def environment():
    """The real ``cupy/_environment.py`` (stdlib-only), loaded as ``cupy._environment``."""
    mod = sys.modules.get("cupy._environment")
    if mod is not None:
        return mod
    backends = importlib.util.find_spec("cupy_backends")
    if backends is None or not backends.submodule_search_locations:
        raise ImportError("real CuPy is not installed")
    path = Path(list(backends.submodule_search_locations)[0]).parent / "cupy" / "_environment.py"
    spec = importlib.util.spec_from_file_location("cupy._environment", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["cupy._environment"] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules["cupy._environment"]
        raise
    return mod


def nvrtc():
    environment()
    from cupy_backends.cuda.libs import nvrtc as real
    return real
