"""Compile every CUDA kernel with NVRTC for compute_75, compute_80 and compute_90.

Needs no GPU: CuPy's NVRTC bindings with the nvidia-cuda-nvrtc wheel compile anywhere.
Uses the runtime loader's own source expansion and options (gradlab.backend.cuda_kernels),
checks that every declared entry point is in the PTX, and fails on any error or warning
(NVRTC prints nothing on a clean compile, so any log text counts as a warning).

    python tools/kernels_check.py        # exit status 0 when everything is clean
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from gradlab.backend import cuda_kernels  # noqa: E402


def main() -> int:
    try:
        from cupy.cuda import nvrtc  # noqa: F401
    except Exception as exc:
        print(f"kernels_check: CuPy's NVRTC bindings are not importable ({type(exc).__name__}: "
              f"{exc}).\nInstall the `nvrtc` extra: pip install -e '.[nvrtc]' (or `make install`).",
              file=sys.stderr)
        return 2
    failures = 0
    for module in cuda_kernels.MODULES:
        for arch in cuda_kernels.CHECK_ARCHS:
            try:
                ok, log, ptx = cuda_kernels.nvrtc_compile(module, arch)
            except Exception as exc:  # NVRTC library missing, unreadable source, ...
                ok, log, ptx = False, f"{type(exc).__name__}: {exc}", ""
            missing = cuda_kernels.missing_entry_points(module, ptx) if ok else []
            if ok and not log and not missing:
                print(f"ok    {module}.cu  {arch}")
                continue
            failures += 1
            what = "error" if not ok else ("warning" if log else "missing entry points")
            print(f"FAIL  {module}.cu  {arch}  ({what})")
            if log:
                print("      " + log.replace("\n", "\n      "))
            if missing:
                print(f"      not in PTX: {', '.join(missing)}")
    if failures:
        print(f"kernels_check: {failures} compile(s) failed", file=sys.stderr)
        return 1
    print(f"kernels_check: {len(cuda_kernels.MODULES)} modules x "
          f"{len(cuda_kernels.CHECK_ARCHS)} architectures compiled cleanly")
    return 0


if __name__ == "__main__":
    sys.exit(main())
