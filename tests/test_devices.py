"""Device selection: auto, GRADLAB_DEVICE, and the errors when CUDA is missing."""
import pytest

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
    assert not gl.cuda.is_available() or registry._cuda_status[0]


def test_real_cuda_status_is_consistent():
    ok, why = registry.cuda_status()
    if not ok:
        with pytest.raises(gl.DeviceUnavailableError, match="CUDA is unavailable"):
            gl.ones(1, device="cuda")


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
