"""Tensor creation, dtype rules, metadata, host conversion and in-place rules."""
import numpy as np
import pytest

import gradlab as gl
from tests.conftest import to_numpy


def test_python_scalar_dtype_rules(device):
    assert gl.tensor(1.5, device=device).dtype == gl.float32
    assert gl.tensor([1, 2, 3], device=device).dtype == gl.int64
    assert gl.tensor([1, 2.5], device=device).dtype == gl.float32
    assert gl.tensor([True, False], device=device).dtype == gl.bool
    assert gl.tensor([[1.0, 2.0]], dtype=gl.float64, device=device).dtype == gl.float64
    assert gl.tensor([1, 2], dtype=float, device=device).dtype == gl.float32
    assert gl.tensor([1.7, 2.2], dtype=int, device=device).dtype == gl.int64


def test_numpy_array_keeps_dtype_and_is_copied(device):
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    t = gl.tensor(a, device=device)
    assert t.dtype == gl.float64 and t.shape == (2, 3)
    a[0, 0] = 100.0
    assert to_numpy(t)[0, 0] == 0.0  # tensor() copies
    assert gl.tensor(a.astype(np.int32), device=device).dtype == gl.int32
    assert gl.tensor(np.float16(2.0), device=device).dtype == gl.float16


def test_from_numpy_and_numpy_share_memory():
    a = np.zeros(3, dtype=np.float32)
    t = gl.from_numpy(a)
    a[1] = 7.0
    assert t.tolist() == [0.0, 7.0, 0.0]
    t.numpy()[2] = 3.0
    assert a[2] == 3.0
    assert np.asarray(t) is a
    with pytest.raises(TypeError, match="numpy.ndarray"):
        gl.from_numpy([1, 2])


def test_numpy_on_grad_tensor_says_detach():
    t = gl.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"detach\(\)\.numpy\(\)"):
        t.numpy()
    assert t.detach().numpy().tolist() == [1.0, 1.0]


def test_factories(device):
    assert to_numpy(gl.zeros(2, 3, device=device)).tolist() == [[0.0] * 3] * 2
    assert gl.ones((2, 2), device=device, dtype=gl.int64).dtype == gl.int64
    assert to_numpy(gl.full((2,), 3.5, device=device)).tolist() == [3.5, 3.5]
    assert gl.full((2,), 3, device=device).dtype == gl.int64
    assert gl.empty(4, device=device).shape == (4,)
    assert to_numpy(gl.arange(5, device=device)).tolist() == [0, 1, 2, 3, 4]
    assert gl.arange(5, device=device).dtype == gl.int64
    assert gl.arange(0, 1, 0.25, device=device).dtype == gl.float32
    assert np.allclose(to_numpy(gl.linspace(0, 1, 5, device=device)), [0, .25, .5, .75, 1])
    assert to_numpy(gl.eye(2, device=device)).tolist() == [[1, 0], [0, 1]]
    x = gl.randn(3, 4, device=device)
    assert to_numpy(gl.zeros_like(x)).shape == (3, 4)
    assert to_numpy(gl.ones_like(x)).sum() == 12
    r = to_numpy(gl.rand(1000, device=device))
    assert r.min() >= 0 and r.max() < 1 and 0.4 < r.mean() < 0.6
    n = to_numpy(gl.randn(10000, device=device))
    assert abs(n.mean()) < 0.05 and 0.95 < n.std() < 1.05
    i = to_numpy(gl.randint(3, 7, (1000,), device=device))
    assert i.min() == 3 and i.max() == 6 and i.dtype == np.int64
    j = gl.randint(4, (2, 500), device=device, dtype=gl.int32)  # PyTorch's randint(high, size)
    assert j.shape == (2, 500) and j.dtype == gl.int32 and set(to_numpy(j).ravel()) == {0, 1, 2, 3}
    assert gl.randn(3, device=device, dtype=gl.float16).dtype == gl.float16
    assert not gl.randn(3, device=device).requires_grad
    leaf = gl.randn(3, device=device, requires_grad=True)
    assert leaf.requires_grad and leaf.is_leaf


def test_manual_seed_reproduces_draws(device):
    gl.manual_seed(42)
    a = to_numpy(gl.randn(5, device=device))
    gl.manual_seed(42)
    b = to_numpy(gl.randn(5, device=device))
    gl.manual_seed(43)
    c = to_numpy(gl.randn(5, device=device))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_metadata_and_host_values(device):
    t = gl.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], device=device)
    assert t.shape == (2, 3) and t.ndim == 2 and t.size() == (2, 3) and t.size(1) == 3
    assert t.numel() == 6 and len(t) == 2 and t.dim() == 2
    assert t.device == gl.device(device) and str(t.device).startswith(device)
    assert t.T.shape == (3, 2)
    assert t.tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    assert t[1, 2].item() == 6.0 and float(t[0, 0]) == 1.0 and int(t[1, 0]) == 4
    with pytest.raises(ValueError, match="one element"):
        t.item()
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(t)
    assert [row.tolist() for row in t] == t.tolist()


def test_repr_shows_grad_state():
    assert repr(gl.tensor([1.0, 2.0])) == "tensor([1., 2.])"
    assert "requires_grad=True" in repr(gl.ones(2, requires_grad=True))
    assert "grad_fn=<MulBackward>" in repr(gl.ones(2, requires_grad=True) * 2)
    assert "dtype=float64" in repr(gl.zeros(1, dtype=gl.float64))


def test_to_and_conversions(device):
    t = gl.tensor([1.5, -2.5], device=device)
    assert t.to(gl.float64).dtype == gl.float64
    assert t.double().dtype == gl.float64 and t.half().dtype == gl.float16
    assert t.long().tolist() == [1, -2]
    assert t.to("cpu").device == gl.device("cpu")
    assert t.cpu().device.type == "cpu"
    assert t.to(device) is t  # no copy when nothing changes
    assert t.to(t.double()).dtype == gl.float64


def test_cast_is_differentiable(device):
    x = gl.tensor([1.0, 2.0], dtype=gl.float64, device=device, requires_grad=True)
    y = x.float() * 3
    assert y.dtype == gl.float32
    y.sum().backward()
    assert x.grad.dtype == gl.float64 and to_numpy(x.grad).tolist() == [3.0, 3.0]


def test_integer_tensors_cannot_require_grad(device):
    with pytest.raises(RuntimeError, match="only floating-point tensors can require "
                                           "gradients.*int64"):
        gl.tensor([1, 2], device=device, requires_grad=True)
    t = gl.arange(3, device=device)
    with pytest.raises(RuntimeError, match="floating-point"):
        t.requires_grad_()
    with pytest.raises(RuntimeError, match="bool"):
        gl.tensor([True], device=device).requires_grad = True


def test_float16_supported(device):
    x = gl.tensor([1.0, 2.0], dtype=gl.float16, device=device, requires_grad=True)
    (x * x).sum().backward()
    assert x.grad.dtype == gl.float16 and to_numpy(x.grad).tolist() == [2.0, 4.0]


def test_inplace_rules(device):
    w = gl.ones(3, device=device, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad.*no_grad"):
        w.add_(1)
    with gl.no_grad():
        w.add_(1).mul_(2)
    assert to_numpy(w).tolist() == [4.0, 4.0, 4.0]
    y = w * 2
    with pytest.raises(RuntimeError, match="part of a graph.*out-of-place"):
        y[0] = 5.0
    plain = gl.zeros(3, device=device)
    plain[1] = 2.0
    plain.fill_(1.0).add_(gl.ones(3, device=device), alpha=2)
    assert to_numpy(plain).tolist() == [3.0, 3.0, 3.0]


def test_detach_shares_data_and_cuts_graph():
    x = gl.ones(2, requires_grad=True)
    y = (x * 3).detach()
    assert not y.requires_grad and y.grad_fn is None
    z = x * 2
    d = z.detach()
    assert d._data is z._data
    assert d._version is z._version  # shared, as in torch; t.data has its own
    assert z.data._version is not z._version


def test_data_is_a_view_that_autograd_does_not_see(device):
    # PyTorch's t.data: shares memory, requires_grad=False, no grad_fn, its own version
    # counter (so a change through it is not caught by the saved-tensor check).
    w = gl.tensor([1.0, 2.0], device=device, requires_grad=True)
    y = (w * w).sum()
    d = w.data
    assert type(d) is gl.Tensor and not d.requires_grad and d.grad_fn is None
    assert d._data is w._data and d.device == w.device
    d.mul_(10.0)  # outside no_grad, allowed: d does not require grad
    assert to_numpy(w).tolist() == [10.0, 20.0] and w._version[0] == 0
    y.backward()  # Mul saved w's array, which now holds 10, 20: not detected, as in torch
    assert to_numpy(w.grad).tolist() == [20.0, 40.0]
    assert to_numpy(w.grad.data).tolist() == [20.0, 40.0]
    shape_changes = gl.autograd.tensor.structure_version[0]
    w.data -= 0.5 * w.grad.data  # the old tutorials' manual SGD step
    assert gl.autograd.tensor.structure_version[0] == shape_changes  # a compiled step stays
    assert to_numpy(w).tolist() == [0.0, 0.0] and w.requires_grad and w.is_leaf
    assert (w * 2).grad_fn is not None and (w.data * 2).grad_fn is None
    z = (w * 3).data
    assert z.grad_fn is None and not z.requires_grad


def test_data_setter_replaces_storage(device):
    w = gl.nn.Parameter(gl.zeros(2, device=device))
    w.grad = gl.ones(2, device=device)
    w.data = gl.arange(6, dtype=gl.float64, device=device).reshape(2, 3)
    assert isinstance(w, gl.nn.Parameter) and w.requires_grad and w.is_leaf
    assert w.shape == (2, 3) and w.dtype == gl.float64
    assert to_numpy(w).tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    w.data = gl.ones(3)  # to the CPU, as torch allows
    assert w.device == gl.device("cpu") and to_numpy(w.grad).tolist() == [1.0, 1.0]
    with pytest.raises(TypeError, match="must be set to a Tensor, not list"):
        w.data = [1.0, 2.0]
    with pytest.raises(RuntimeError, match="requires grad.*floating-point, not int64"):
        w.data = gl.tensor([1, 2])
    assert to_numpy(w).tolist() == [1.0, 1.0, 1.0]


def test_augmented_assignment_is_in_place(device):
    w = gl.ones(2, device=device, requires_grad=True)
    (w * 3).sum().backward()
    before = w
    with gl.no_grad():
        w -= 0.5 * w.grad
    assert w is before and w.is_leaf and w.requires_grad
    assert to_numpy(w).tolist() == [-0.5, -0.5]
    with pytest.raises(RuntimeError, match="no_grad"):
        w += 1
