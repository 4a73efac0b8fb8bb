"""Tensor hooks (autograd/hooks.py): register_hook on leaves and node outputs, retain_grad,
their order, removal, their errors, and a compiled step that meets one."""
from __future__ import annotations

import gc
import warnings

import numpy as np
import pytest

import gradlab as gl
from gradlab.autograd import hooks
from tests.conftest import to_numpy
from tests.train.compiled_runs import eager_step


def _w(device):
    return gl.tensor([1.0, 2.0, 3.0], device=device, requires_grad=True)


def test_retain_grad_keeps_a_hidden_gradient(device):
    w = _w(device)
    h = w * 2
    assert not h.retains_grad
    h.retain_grad()
    h.retain_grad()  # (once is enough)
    assert h.retains_grad and not w.retains_grad
    (h ** 2).sum().backward(retain_graph=True)
    assert to_numpy(h.grad).tolist() == [4.0, 8.0, 12.0]  # d(h^2)/dh = 2h
    assert to_numpy(w.grad).tolist() == [8.0, 16.0, 24.0]
    (h ** 2).sum().backward()  # a second backward adds to it, as to a leaf's
    assert to_numpy(h.grad).tolist() == [8.0, 16.0, 24.0]
    w.retain_grad()  # a leaf keeps its .grad anyway
    with pytest.raises(RuntimeError, match="does not require grad"):
        gl.ones(2, device=device).retain_grad()


def test_hooks_see_and_replace_gradients_in_order(device):
    w = _w(device)
    h = w * 2
    seen = []
    h.register_hook(lambda g: seen.append(("first", to_numpy(g).tolist())))
    h.register_hook(lambda g: g * 10)          # what flows on from h
    h.retain_grad()                            # registered early, runs last: sees the * 10
    h.register_hook(lambda g: seen.append(("after", to_numpy(g).tolist())))
    leaf_seen = []
    w.register_hook(lambda g: leaf_seen.append(to_numpy(g).tolist()))
    handle = w.register_hook(lambda g: g + 1)  # a leaf's hook runs before .grad is set
    h.sum().backward()
    assert seen == [("first", [1.0, 1.0, 1.0]), ("after", [10.0, 10.0, 10.0])]
    assert to_numpy(h.grad).tolist() == [10.0, 10.0, 10.0]
    assert leaf_seen == [[20.0, 20.0, 20.0]]
    assert to_numpy(w.grad).tolist() == [21.0, 21.0, 21.0]
    handle.remove()
    handle.remove()  # (twice is harmless)
    w.grad = None
    (w * 2).sum().backward()
    assert to_numpy(w.grad).tolist() == [2.0, 2.0, 2.0] and len(leaf_seen) == 2


def test_hook_errors(device):
    w = _w(device)
    with pytest.raises(TypeError, match="hook must be callable"):
        w.register_hook(3)
    with pytest.raises(RuntimeError, match="does not require grad"):
        gl.ones(3, device=device).register_hook(lambda g: g)
    h = w * 1
    h.register_hook(lambda g: gl.ones(2, device=device))
    with pytest.raises(RuntimeError, match=r"a hook returned Tensor \(2,\) for a gradient of "
                                           r"shape \(3,\)"):
        h.sum().backward()


def test_no_hook_left_means_none_is_checked():
    w = _w("cpu")
    h = w * 2
    handle = w.register_hook(lambda g: None)
    h.retain_grad()
    assert hooks.any_registered()
    handle.remove()
    del h
    gc.collect()
    assert not hooks.any_registered()  # the leaf's entry went with its last hook, the
    #                                    node's hooks with the node


def test_a_compiled_step_with_a_hook_runs_eagerly_as_eager_does():
    from gradlab.train import compile_step

    def run(compiled):
        gl.manual_seed(0)
        model = gl.nn.Sequential(gl.nn.Linear(4, 8), gl.nn.Tanh(), gl.nn.Linear(8, 3))
        opt = gl.optim.SGD(model.parameters(), lr=0.1)
        norms = []

        class Watched(gl.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = model

            def forward(self, x):
                h = self.inner[1](self.inner[0](x))
                h.register_hook(lambda g: norms.append(float((g * g).sum())))
                return self.inner[2](h)
        net = Watched()
        loss_fn = gl.nn.CrossEntropyLoss()
        step = (compile_step if compiled else eager_step)(net, loss_fn, opt)
        rng = np.random.default_rng(1)
        losses = [step(gl.tensor(rng.standard_normal((8, 4)).astype(np.float32)),
                       gl.tensor(rng.integers(0, 3, 8))).item() for _ in range(5)]
        return losses, norms, step
    eager_losses, eager_norms, _ = run(False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        losses, norms, step = run(True)
    assert losses == eager_losses and norms == eager_norms and len(norms) == 5
    assert step.info()["replayed"] == 0
    assert any("a tensor hook" in str(w.message) for w in caught)
