"""Shared fixtures: every backend-independent test takes ``device`` and runs on the CPU
and, where a GPU is present, on CUDA (skipped with the reason otherwise)."""
import numpy as np
import pytest

import gradlab as gl


@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    if request.param == "cuda" and not gl.cuda.is_available():
        pytest.skip(f"no CUDA device: {gl.cuda.unavailable_reason()}")
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
