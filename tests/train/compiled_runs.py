"""What the compiled-step tests share: the eager step a compiled one is held to, a run's end
state, and the checks that a compiled run is the eager one bit for bit."""
from __future__ import annotations

import numpy as np


def eager_step(model, loss_fn, optimizer):
    """The plain training step that ``compile_step(model, loss_fn, optimizer)`` stands for."""
    def step(x, y):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return loss
    return step


def end_state(model):
    """Host copies of every parameter and buffer."""
    state = [p.detach().cpu().numpy().copy() for p in model.parameters()]
    return state + [b.cpu().numpy().copy() for b in model.buffers()]


def assert_compiled_run_is_eager(eager, compiled, cfg, *, graphs):
    """``eager``/``compiled``: (losses, end state, step) of the two runs of ``cfg``; with
    ``graphs`` (a CUDA device and nothing that declines capture) every signature must
    replay as CUDA graphs too."""
    assert np.array_equal(eager[0], compiled[0], equal_nan=True), cfg
    for a, b in zip(eager[1], compiled[1]):
        assert np.array_equal(a, b, equal_nan=True), cfg
    info = compiled[2].info()
    assert info["eager"] == 0 and info["replayed"] > 0, (cfg, info)
    if graphs:
        assert info["graphed"] > 0 and not info["ungraphed_reasons"], (cfg, info)
