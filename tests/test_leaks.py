"""No leaks: graphs die by reference counting alone, very deep graphs backprop (and are freed)
without recursion and in linear time, and training steps do not grow resident memory.

The gc-based weakref test lives in tests/autograd/test_engine.py; these go further. The
long versions are marked slow (``make test-slow``); CI runs the short ones.
"""
from __future__ import annotations

import gc
import os
import sys
import time
import weakref

import numpy as np
import pytest

import gradlab as gl


# -- graphs are freed -----------------------------------------------------------------------
def test_graph_is_freed_by_refcounting_alone_without_the_cycle_collector():
    # A cycle (node -> output tensor -> node) would only die at the next gc run: in a
    # training loop that is memory held for a while, so there must be none.
    gc.collect()
    gc.disable()
    try:
        x = gl.ones(1000, requires_grad=True)
        y = ((x * 2).exp() + x).sum()
        nodes = [weakref.ref(y.grad_fn), weakref.ref(y.grad_fn.next_functions[0])]
        del y
        assert [n() for n in nodes] == [None, None]
        # And after backward: the graph is released, the leaf's grad stays.
        y = ((x * 2).exp() + x).sum()
        node = weakref.ref(y.grad_fn)
        y.backward()
        del y
        assert node() is None and x.grad is not None
    finally:
        gc.enable()


def test_a_training_step_leaves_no_graph_behind():
    model = gl.nn.Sequential(gl.nn.Linear(8, 16), gl.nn.ReLU(), gl.nn.Dropout(0.5),
                             gl.nn.Linear(16, 3))
    opt = gl.optim.Adam(model.parameters(), lr=1e-3)
    x, y = gl.randn(32, 8), gl.randint(0, 3, (32,))
    gc.collect()
    gc.disable()
    try:
        loss = gl.nn.functional.cross_entropy(model(x), y)
        node = weakref.ref(loss.grad_fn)
        opt.zero_grad()
        loss.backward()
        opt.step()
        del loss
        assert node() is None
    finally:
        gc.enable()


def _chain(n):
    # float64 so that the product's rounding stays far below the tolerance at 100k ops
    x = gl.tensor([1.0], dtype=gl.float64, requires_grad=True)
    y = x
    for _ in range(n):
        y = y * 1.00001
    return x, y


def _backprop_chain(n):
    x, y = _chain(n)
    start = time.perf_counter()
    y.sum().backward()
    elapsed = time.perf_counter() - start
    # n roundings of about 1.1e-16 each: 1e-10 holds for n = 100k, and one node dropped or
    # run twice (a factor 1.00001) or a float32 step (~6e-8 each) is far outside it.
    assert np.isclose(x.grad.item(), 1.00001 ** n, rtol=1e-10, atol=0)
    return elapsed


@pytest.mark.parametrize("n", [20_000, pytest.param(100_000, marks=pytest.mark.slow)])
def test_very_long_chain_backprops_without_recursion_in_linear_time(n):
    assert n > 10 * sys.getrecursionlimit()
    small = min(_backprop_chain(n // 10) for _ in range(3))
    large = _backprop_chain(n)
    # Linear time gives a ratio near 10; quadratic would give ~100. 40 leaves room for noise.
    assert large < 40 * small + 0.05, f"{n} ops took {large:.3f} s, {n // 10} took {small:.3f} s"


@pytest.mark.parametrize("n", [20_000, pytest.param(100_000, marks=pytest.mark.slow)])
def test_very_long_chain_is_freed_without_backward(n):
    # Dropping the last output of a deep graph must not recurse node by node through
    # deallocation (a C stack overflow would crash the interpreter, not raise).
    _, y = _chain(n)
    node = weakref.ref(y.grad_fn)
    del y
    assert node() is None


# -- resident memory over training steps -----------------------------------------------------
def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _memory_growth(steps, warmup):
    """Relative resident-memory growth of ``steps`` training steps of the 784-512-256-10 MLP
    after ``warmup`` steps (allocator pools, caches and optimizer state are filled by then)."""
    gl.manual_seed(0)
    model = gl.nn.Sequential(gl.nn.Linear(784, 512), gl.nn.ReLU(), gl.nn.Dropout(0.1),
                             gl.nn.Linear(512, 256), gl.nn.ReLU(), gl.nn.Linear(256, 10))
    opt = gl.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    batches = [(gl.tensor(rng.normal(size=(64, 784)).astype(np.float32)),
                gl.tensor(rng.integers(0, 10, 64))) for _ in range(8)]

    def step(i):
        x, y = batches[i % len(batches)]
        loss = gl.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    for i in range(warmup):
        step(i)
    gc.collect()
    before = _rss_bytes()
    for i in range(steps):
        step(i)
    gc.collect()
    after = _rss_bytes()
    return (after - before) / before, before, after


needs_proc = pytest.mark.skipif(not os.path.exists("/proc/self/statm"),
                                reason="resident memory is read from /proc/self/statm (Linux)")


@needs_proc
def test_training_steps_do_not_grow_resident_memory_short():
    growth, before, after = _memory_growth(steps=300, warmup=30)
    assert growth < 0.05, f"RSS grew {growth:.1%} over 300 steps ({before} -> {after} bytes)"


@needs_proc
@pytest.mark.slow
def test_training_steps_do_not_grow_resident_memory_5000_steps():
    growth, before, after = _memory_growth(steps=5000, warmup=100)
    assert growth < 0.05, f"RSS grew {growth:.1%} over 5000 steps ({before} -> {after} bytes)"
