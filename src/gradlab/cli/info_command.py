"""``gradlab info`` (versions, devices, kernel tiers) and ``gradlab bench`` (the packaged
optimizer benchmark, or the source checkout's suite)."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

from .inputs import check_env
from .main import UsageError


def _version(module):
    try:
        mod = __import__(module)
        return getattr(mod, "__version__", "installed")
    except Exception:
        return "not installed"


def _cpu_tier():
    """Which implementation the CPU backend's fused ops (optimizer steps, dropout,
    softmax-CE) run, and why when it is the slower NumPy one."""
    from ..backend import fused
    if fused.AVAILABLE:
        return "numba (one-pass compiled optimizer, dropout and softmax-CE kernels)"
    why = fused.UNAVAILABLE_REASON
    if fused.jit_disabled():
        return f"NumPy fallback ({why}; unset it for the numba kernels)"
    return (f"NumPy fallback, slower (numba does not import: {why}); gradlab installs numba "
            "wherever numba has wheels for this Python and platform")


def cmd_info(args):
    """Versions, the selected device, CuPy/GPU status and which kernels compile."""
    import gradlab as gl

    from ..backend import cuda_status, default_device
    print(f"gradlab {gl.__version__} ({os.path.dirname(gl.__file__)})")
    print(f"python {platform.python_version()} on {platform.platform()}")
    for name in ("numpy", "numba", "cupy", "matplotlib", "tqdm"):
        print(f"{name:<11}{_version(name)}")
    print(f"CPU kernels: {_cpu_tier()}")
    ok, why = cuda_status()
    print(f"CUDA: {'available' if ok else 'unavailable'}: {why}")
    try:
        print(f"selected device (auto): {default_device()}")
    except ValueError as exc:
        print(f"selected device: error: {exc}")
    try:
        from ..backend.cuda_kernels import kernel_report
    except ImportError:
        print("kernels: report unavailable (this build has no kernel report)")
        return 0
    try:
        report = kernel_report()
    except Exception as exc:  # the report is diagnostics: never crash `info` over it
        print(f"kernels: report failed: {type(exc).__name__}: {exc}")
        return 0
    print("kernels:")
    for entry in report:
        detail = str(entry.get("detail", "")).splitlines()[0][:120] if entry.get("detail") \
            else ""
        print(f"  {entry.get('module', '?'):<12}{entry.get('status', '?'):<10}{detail}")
    return 0


def _find_benchmarks():
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [os.path.join(os.getcwd(), "benchmarks", "run.py"),
                  os.path.normpath(os.path.join(here, "..", "..", "..", "benchmarks",
                                                "run.py"))]
    return next((c for c in candidates if os.path.isfile(c)), None)


def cmd_bench(args):
    """``bench optim``: the packaged optimizer benchmark; else benchmarks/run.py (--quick
    unless --full) from a source checkout."""
    if getattr(args, "bench_command", None) == "optim":
        from ..bench import optim
        check_env()
        try:
            return optim.main(args)
        except optim.InputError as exc:
            raise UsageError(str(exc)) from None
    script = _find_benchmarks()
    if script is None:
        print("gradlab bench: benchmarks/run.py not found; the benchmark suite ships with the "
              "source repository, not the wheel: run `gradlab bench` (or `make bench`) from "
              "a checkout", file=sys.stderr)
        return 2
    cmd = [sys.executable, script] + ([] if args.full else ["--quick"])
    print("running: " + " ".join(cmd), flush=True)
    return subprocess.call(cmd)
