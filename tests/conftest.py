"""Shared fixtures: every backend-independent test takes ``device`` and runs on the CPU and on
CUDA: a real GPU where there is one, else the emulated CUDA device (tests/devices.py installs
the CuPy stand-in before gradlab is imported; GRADLAB_EMULATE_CUDA=0 turns that off). The
CUDA case carries the ``cuda`` marker, so ``pytest -m cuda`` runs the CUDA half."""
import numpy as np
import pytest

import devices  # first: installs the CuPy stand-in before gradlab imports cupy
import gradlab as gl


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request):
    if request.param == "cuda" and not gl.cuda.is_available():
        why = f"; {devices.EMULATION_SKIPPED}" if devices.EMULATION_SKIPPED else ""
        pytest.skip(f"no CUDA device: {gl.cuda.unavailable_reason()}{why}")
    return request.param


@pytest.fixture(autouse=True)
def _seeded():
    gl.manual_seed(0)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def to_numpy(t):
    """Host copy of a tensor's data, whatever its device."""
    return t.detach().cpu().numpy()
