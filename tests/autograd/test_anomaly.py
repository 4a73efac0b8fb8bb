"""detect_anomaly names the forward op (and where it was created) behind a NaN/Inf grad."""
import numpy as np
import pytest

import gradlab as gl
from gradlab.autograd import AnomalyError, detect_anomaly


def _make_inf_gradient(x):
    return x.sqrt().sum()  # d sqrt(x)/dx is infinite at 0


def test_detect_anomaly_names_op_and_creation_site(device):
    x = gl.tensor([0.0, 4.0], device=device, requires_grad=True)
    with detect_anomaly(), np.errstate(divide="ignore"):
        loss = _make_inf_gradient(x)
        with pytest.raises(AnomalyError, match=r"backward of Sqrt produced Inf.*input 0") as info:
            loss.backward()
    assert "_make_inf_gradient" in str(info.value)
    assert "test_anomaly.py" in str(info.value)
    assert not gl.autograd.is_anomaly_enabled()


def test_nan_is_reported_as_nan():
    x = gl.tensor([-1.0, 1.0], requires_grad=True)
    with detect_anomaly(), np.errstate(invalid="ignore"):
        loss = x.log().sum() * 0 + (x * float("nan")).sum()
        with pytest.raises(AnomalyError, match="produced NaN"):
            loss.backward()


def test_without_anomaly_mode_nonfinite_grads_pass_silently():
    x = gl.tensor([0.0], requires_grad=True)
    with np.errstate(divide="ignore"):
        x.sqrt().sum().backward()
    assert np.isinf(x.grad.item())


def test_finite_graph_is_unaffected_by_anomaly_mode():
    x = gl.tensor([1.0, 2.0], dtype=gl.float64, requires_grad=True)
    with detect_anomaly():
        (x * x).sum().backward()
    assert x.grad.tolist() == [2.0, 4.0]
