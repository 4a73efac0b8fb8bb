"""Device selection: auto, GRADLAB_DEVICE, and the errors when CUDA is missing."""
import os
import subprocess
import sys

import pytest

import devices
import gradlab as gl
from gradlab.backend import registry


def test_is_available_never_raises_and_reason_is_text():
    assert isinstance(gl.cuda.is_available(), bool)
    assert isinstance(gl.cuda.unavailable_reason(), str) and gl.cuda.unavailable_reason()


def test_env_var_overrides_auto(monkeypatch):
    monkeypatch.setenv("GRADLAB_DEVICE", "cpu")
    assert registry.default_device() == "cpu"
    assert gl.zeros(1).device == gl.device("cpu")
    monkeypatch.setenv("GRADLAB_DEVICE", "tpu")
    with pytest.raises(ValueError, match="GRADLAB_DEVICE='tpu'.*expected 'cpu', 'cuda'"):
        registry.default_device()


def test_auto_picks_cpu_without_cuda(monkeypatch):
    monkeypatch.delenv("GRADLAB_DEVICE", raising=False)
    monkeypatch.setattr(registry, "_cuda_status", (False, "CuPy is not installed"))
    assert registry.default_device() == gl.device("cpu")
    assert gl.tensor([1.0]).device.type == "cpu"


@pytest.mark.parametrize("reason", ["CuPy is not installed (ImportError); install it with "
                                    "`pip install gradlab[cuda13]`",
                                    "no usable NVIDIA driver was found",
                                    "the NVIDIA driver reports no GPU"])
def test_asking_for_cuda_without_it_says_why(monkeypatch, reason):
    monkeypatch.setattr(registry, "_cuda_status", (False, reason))
    monkeypatch.setattr(registry, "_cuda_backends", {})
    with pytest.raises(gl.DeviceUnavailableError, match="'cuda:0'.*CUDA is unavailable: " +
                       reason.split(" (")[0].replace("`", ".")):
        gl.zeros(2, device="cuda")
    # Every query answers from that one status, none probes the (present or emulated) GPU.
    assert gl.cuda.is_available() is False and gl.cuda.unavailable_reason() == reason
    assert gl.cuda.device_count() == 0


def test_real_cuda_status_is_consistent():
    ok, why = registry.cuda_status()
    if not ok:
        with pytest.raises(gl.DeviceUnavailableError, match="CUDA is unavailable"):
            gl.ones(1, device="cuda")
    else:  # a GPU, or the emulated device tests/conftest.py installs without one
        assert why.endswith("CUDA device(s) visible") and gl.cuda.device_count() >= 1
        assert gl.ones(1, device="cuda").device == gl.device("cuda:0")
        assert devices.REAL_GPU or devices.EMULATED


@pytest.mark.skipif(devices.REAL_GPU, reason="a GPU is present")
def test_without_a_gpu_a_fresh_process_says_why():
    # A child without the CuPy stand-in sees this machine as it is: no GPU.
    code = ("import gradlab as gl; print(gl.cuda.is_available()); "
            "print(gl.cuda.unavailable_reason())")
    env = {k: v for k, v in os.environ.items() if k != "GRADLAB_DEVICE"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    available, reason = proc.stdout.splitlines()[:2]
    assert available == "False"
    assert any(k in reason for k in ("CuPy is not installed", "no usable NVIDIA driver",
                                     "could not query the GPU", "reports no GPU")), reason


def test_device_parsing():
    assert gl.device("cuda") == gl.device("cuda:0") == "cuda:0"
    assert str(gl.device("CPU")) == "cpu" and gl.device("cuda:1").index == 1
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        gl.device("gpu")
    with pytest.raises(ValueError, match="bad device index"):
        gl.device("cuda:x")


def test_manual_seed_validates():
    with pytest.raises(TypeError, match="int"):
        gl.manual_seed(1.5)
    with pytest.raises(ValueError, match="non-negative"):
        gl.manual_seed(-1)
