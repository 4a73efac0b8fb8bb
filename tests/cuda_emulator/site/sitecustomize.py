"""Installs the CuPy stand-in in a child process started by a test with
GRADLAB_EMULATE_CUDA_CHILD=1 (tests/devices.py: child_env puts this folder and tests/ on
PYTHONPATH), so a CLI or kill-and-resume child runs on the emulated CUDA device too."""
import os

if os.environ.get("GRADLAB_EMULATE_CUDA_CHILD") == "1":
    from cuda_emulator.cupy_standin import install as _install

    if not _install.gpu_present() and _install.why_not() is None:
        _install.install()
