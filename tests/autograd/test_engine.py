"""The backward engine: accumulation, broadcasting, graph freeing, grad mode, errors."""
import gc
import sys
import threading
import weakref

import numpy as np
import pytest

import gradlab as gl
from gradlab.autograd import Function, Tensor
from gradlab.backend import Device
from gradlab.backend.numpy_backend import NumpyBackend
from tests.conftest import to_numpy


def test_fan_out_accumulates(device):
    x = gl.tensor([2.0, 3.0], device=device, requires_grad=True)
    y = x * x + x * 3 + x  # dy/dx = 2x + 4
    y.sum().backward()
    assert to_numpy(x.grad).tolist() == [8.0, 10.0]


def test_gradients_accumulate_across_backward_calls(device):
    x = gl.tensor([1.0], device=device, requires_grad=True)
    (x * 2).sum().backward()
    (x * 5).sum().backward()
    assert to_numpy(x.grad).tolist() == [7.0]


def test_broadcast_gradient_is_summed_to_input_shape(device):
    a = gl.ones(2, 3, device=device, requires_grad=True)
    b = gl.ones(3, device=device, requires_grad=True)
    c = gl.ones(2, 1, device=device, requires_grad=True)
    ((a + b) * c).sum().backward()
    assert b.grad.shape == (3,) and to_numpy(b.grad).tolist() == [2.0, 2.0, 2.0]
    assert c.grad.shape == (2, 1) and to_numpy(c.grad).tolist() == [[6.0], [6.0]]


def test_leaf_grads_do_not_alias(device):
    a = gl.zeros(3, device=device, requires_grad=True)
    b = gl.zeros(3, device=device, requires_grad=True)
    (a + b).sum().backward()
    with gl.no_grad():
        a.grad.mul_(10)
    assert to_numpy(b.grad).tolist() == [1.0, 1.0, 1.0]


def test_repeated_index_accumulates(device):
    x = gl.zeros(4, device=device, requires_grad=True)
    idx = gl.tensor([0, 2, 0, 0, 3], device=device)
    x[idx].sum().backward()
    assert to_numpy(x.grad).tolist() == [3.0, 0.0, 1.0, 1.0]


def test_non_scalar_backward_needs_gradient(device):
    x = gl.ones(2, 2, device=device, requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError, match=r"only for tensors with one element.*shape \(2, 2\)"
                                            r".*gradient="):
        y.backward()
    y.backward(gl.ones_like(y))
    assert to_numpy(x.grad).tolist() == [[2.0, 2.0], [2.0, 2.0]]
    with pytest.raises(RuntimeError, match=r"gradient has shape \(3,\)"):
        (x * 2).backward(gl.ones(3, device=device))


def test_second_backward_through_freed_graph_says_retain_graph(device):
    x = gl.ones(3, device=device, requires_grad=True)
    y = (x.exp() * 2).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time.*retain_graph=True"):
        y.backward()


def test_retain_graph_allows_second_backward(device):
    x = gl.tensor([1.0, 2.0], device=device, requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    assert to_numpy(x.grad).tolist() == [4.0, 8.0]


def test_saved_arrays_are_released_after_backward():
    x = gl.ones(3, requires_grad=True)
    h = x * 2
    saved = weakref.ref(h._data)  # Sin saves its input: only the graph keeps it alive
    y = h.sin()
    del h
    gc.collect()
    assert saved() is not None
    y.sum().backward()
    gc.collect()
    assert saved() is None


def test_backward_on_tensor_without_grad_says_why():
    with pytest.raises(RuntimeError, match="does not require grad"):
        gl.ones(2).sum().backward()


def test_long_chain_has_no_recursion_limit():
    x = gl.tensor([1.0], requires_grad=True)
    y = x
    n = 10_000
    assert n > sys.getrecursionlimit()
    for _ in range(n):
        y = y * 1.0001
    y.sum().backward()
    assert np.isclose(x.grad.item(), 1.0001 ** n, rtol=1e-3)


def test_graph_is_freed_when_output_goes_out_of_scope():
    x = gl.ones(1000, requires_grad=True)
    y = (x * 2).exp()
    node = weakref.ref(y.grad_fn)
    del y
    gc.collect()
    assert node() is None


def test_no_grad_and_enable_grad():
    x = gl.ones(2, requires_grad=True)
    with gl.no_grad():
        assert not gl.is_grad_enabled()
        y = x * 2
        with gl.enable_grad():
            z = x * 2
    assert gl.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None
    assert z.requires_grad

    @gl.no_grad()
    def f(t):
        return t * 3
    assert not f(x).requires_grad
    with gl.set_grad_enabled(False):
        assert not (x * 1).requires_grad
    assert gl.is_grad_enabled()


def test_grad_mode_is_thread_local():
    seen = {}
    started, release = threading.Event(), threading.Event()

    def other():
        started.wait()
        seen["other"] = gl.is_grad_enabled()
        release.set()

    t = threading.Thread(target=other)
    t.start()
    with gl.no_grad():
        started.set()
        release.wait()
        seen["main"] = gl.is_grad_enabled()
    t.join()
    assert seen == {"main": False, "other": True}


def test_inplace_change_of_saved_input_raises(device):
    x = gl.ones(3, device=device, requires_grad=True)
    h = x * 2
    w = gl.ones(3, device=device)
    y = h * w  # Mul saves w
    with gl.no_grad():
        w.mul_(5)
    with pytest.raises(RuntimeError, match=r"\(input 1\) was modified in place.*would be wrong"):
        y.sum().backward()


def test_inplace_change_of_saved_output_raises():
    x = gl.ones(3, requires_grad=True)
    y = x.exp()  # Exp saves its output
    z = y.detach()
    z.zero_()  # shares memory but is not the saved tensor's version counter
    with gl.no_grad():
        y.mul_(2)
    with pytest.raises(RuntimeError, match="its output"):
        y.sum().backward()


def test_custom_function():
    class Cube(Function):
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x ** 3

        def backward(ctx, g):
            x, = ctx.saved_tensors
            return 3 * x * x * g

    x = gl.tensor([1.0, 2.0], dtype=gl.float64, requires_grad=True)
    assert gl.autograd.gradcheck(Cube.apply, [x])
    Cube.apply(x).sum().backward()
    assert x.grad.tolist() == [3.0, 12.0]


class _FakeCuda(NumpyBackend):
    """A NumPy backend that claims to be another device: exercises the device check
    without a GPU."""

    def __init__(self):
        super().__init__()
        self.device = Device("cuda:7")


def test_ops_across_devices_fail_naming_both():
    a = gl.ones(2)
    b = Tensor(np.ones(2, dtype=np.float32), backend=_FakeCuda())
    with pytest.raises(RuntimeError, match=r"cpu and cuda:7.*\.to\(\)"):
        a + b
    with pytest.raises(RuntimeError, match="cpu and cuda:7"):
        gl.matmul(a, b)
    with pytest.raises(RuntimeError, match="cpu and cuda:7"):
        _ = a < b
    assert a.data.tolist() == [1.0, 1.0] and b.data.tolist() == [1.0, 1.0]


def test_random_state_is_thread_local():
    gl.manual_seed(7)
    expected = gl.randn(4).tolist()
    gl.manual_seed(7)
    drawn_in_thread = {}

    def other():
        drawn_in_thread["values"] = gl.randn(1000).tolist()  # must not advance our stream

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert gl.randn(4).tolist() == expected
    gl.manual_seed(7)
    assert drawn_in_thread["values"][:4] == expected  # new threads start from the seed


class _ScaledBy(Function):
    """x * w with a gradient for x only: backward gives None for w, an input that may
    require grad (as a loss's class weight does)."""

    def forward(ctx, x, w):
        ctx.save_for_backward(w)
        return x * w

    def backward(ctx, g):
        w, = ctx.saved_tensors
        return g * w, None


def test_a_none_gradient_still_counts_as_the_edge_done(device):
    # a feeds both inputs: through x (a gradient) and through w (None). The engine must
    # not wait for w's edge forever: a's node runs, and the leaf gets the x-path gradient.
    leaf = gl.tensor([1.0, 2.0, 3.0], device=device, requires_grad=True)
    a = leaf * 2.0
    _ScaledBy.apply(a + 1.0, a.sigmoid()).sum().backward()
    w = 1 / (1 + np.exp(-2 * np.array([1.0, 2.0, 3.0])))
    np.testing.assert_allclose(to_numpy(leaf.grad), 2 * w, rtol=1e-6)
    # a node that only None reaches does not run, and passes None on: no gradient there
    other = gl.tensor([1.0, 1.0, 1.0], device=device, requires_grad=True)
    _ScaledBy.apply(leaf * 1.0, (other * 3.0).exp()).sum().backward()
    assert other.grad is None


@pytest.mark.parametrize("loss", ["bce_with_logits", "cross_entropy", "nll", "bce"])
def test_a_loss_weight_computed_from_the_output_leaves_the_models_gradient(loss, device):
    """A focal-style weight, computed from the logits (it requires grad): the op gives it
    no gradient, as before it took the weight as a tensor, and the model's gradient is the
    one of the weight's values as constants."""
    F = gl.nn.functional
    rng = np.random.default_rng(0)
    x = gl.tensor(rng.standard_normal((4, 3)).astype(np.float32), device=device)
    t = gl.tensor((np.arange(12).reshape(4, 3) % 2).astype(np.float32), device=device)
    y = gl.tensor([0, 1, 2, 1], device=device)
    grads = []
    for detached in (False, True):
        gl.manual_seed(0)
        lin = gl.nn.Linear(3, 3).to(device)
        logits = lin(x)
        if loss.startswith("bce"):
            p = logits.sigmoid()
            w = (1 - (p * t + (1 - p) * (1 - t))) ** 2
        else:
            w = F.softmax(logits, dim=1).mean(0)
        w = w.detach() if detached else w
        if loss == "bce_with_logits":
            out = F.binary_cross_entropy_with_logits(logits, t, weight=w)
        elif loss == "bce":
            out = F.binary_cross_entropy(logits.sigmoid(), t, weight=w)
        elif loss == "cross_entropy":
            out = F.cross_entropy(logits, y, weight=w)
        else:
            out = F.nll_loss(F.log_softmax(logits, dim=1), y, weight=w)
        out.backward()
        grads.append((to_numpy(lin.weight.grad), to_numpy(lin.bias.grad)))
    for a, b in zip(*grads):
        np.testing.assert_array_equal(a, b)
