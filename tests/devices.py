"""Which CUDA device the tests run on: a real GPU, the emulated device, or none.

tests/conftest.py installs the CuPy stand-in (tests/cuda_emulator/cupy_standin) before gradlab
is imported when no GPU is present, so ``gl.cuda.is_available()`` is True on the emulated
device too. Tests whose logic is about "no GPU here" ask these flags instead.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from cuda_emulator.cupy_standin import install as _install  # noqa: E402

REAL_GPU = _install.gpu_present()
# Why the emulated device is not installed (None when it is or a real GPU is used).
EMULATION_SKIPPED = None if REAL_GPU else _install.why_not()
EMULATED = not REAL_GPU and EMULATION_SKIPPED is None
if EMULATED:
    _install.install()
# device="auto" means the CPU in the test process (unless GRADLAB_DEVICE says otherwise), on
# a GPU machine as on the emulated device: the un-parametrized tests build models and data on
# the default device and expect the CPU. The `device` fixture's "cuda" case and tests that
# ask for "cuda" run on the GPU or the emulated device; tests of "auto" itself unset this.
os.environ.setdefault("GRADLAB_DEVICE", "cpu")

# For child processes (CLI, kill-and-resume): a PYTHONPATH entry whose sitecustomize.py
# installs the stand-in when GRADLAB_EMULATE_CUDA_CHILD=1.
SITE_DIR = TESTS / "cuda_emulator" / "site"


def child_env(env=None, *, emulate=None):
    """Environment for a child Python process: with the emulated device when this process
    has one (or ``emulate`` says so)."""
    env = dict(os.environ if env is None else env)
    if EMULATED if emulate is None else emulate:
        env["GRADLAB_EMULATE_CUDA_CHILD"] = "1"
        path = [str(SITE_DIR), str(TESTS)]
        if env.get("PYTHONPATH"):
            path.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(path)
    return env
