"""Tensor hooks: ``t.register_hook(fn)`` and ``t.retain_grad()``, as in PyTorch.

A hook sees the gradient of its tensor as backward computes it, as a Tensor, and may return
a replacement of the same shape. On a leaf it runs before the gradient is added to
``.grad``; on a node's output it runs before the node's backward, so its result is what
flows on. ``retain_grad()`` is a hook that keeps a copy of the gradient in a non-leaf's
``.grad`` (summed over backward calls, as a leaf's is).

Where they are kept, so that a backward without hooks pays one check per node: a node
output's hooks on its graph node (``Function._grad_hooks``), a leaf's in a table by id
(a leaf has no node; a weak reference drops its entry with it). A compiled step cannot
repeat a hook (its replay runs no Python around the ops), so a hook that runs while a step
records makes that step eager (autograd/tape.py).
"""
from __future__ import annotations

import weakref

from .tensor import Tensor, structure_version

_leaf_hooks = {}       # id(leaf) -> (weak reference to the leaf, [hook, ...])
_node_hook_count = [0]  # hooks held by graph nodes now (a node's go with it)


class RemovableHandle:
    """What ``register_hook`` returns: ``handle.remove()`` takes the hook off again."""

    def __init__(self, hooks, hook, on_remove=None):
        self._hooks, self._hook, self._on_remove = hooks, hook, on_remove

    def remove(self):
        if self._hooks is not None and self._hook in self._hooks:
            self._hooks.remove(self._hook)
            if self._on_remove is not None:
                self._on_remove()
        self._hooks = None


def _forget_leaf(key):
    _leaf_hooks.pop(key, None)


def register(tensor, hook):
    if not callable(hook):
        raise TypeError(f"register_hook: hook must be callable as hook(grad), got "
                        f"{type(hook).__name__}")
    if not tensor.requires_grad:
        raise RuntimeError("register_hook: this tensor does not require grad, so backward "
                           "never computes its gradient; set requires_grad=True first")
    fn = tensor.grad_fn
    if fn is None:
        key = id(tensor)
        entry = _leaf_hooks.get(key)
        if entry is None:
            ref = weakref.ref(tensor, lambda _, key=key: _forget_leaf(key))
            entry = _leaf_hooks[key] = (ref, [])
        entry[1].append(hook)
        # A compiled step's replay runs no hook: one added on a parameter (or removed) after
        # the step recorded must make it record again (train/compiled.py: leaf_hook_count).
        structure_version[0] += 1

        def removed():
            structure_version[0] += 1
            if not entry[1] and _leaf_hooks.get(key) is entry:
                del _leaf_hooks[key]
        return RemovableHandle(entry[1], hook, removed)
    if not fn._grad_hooks:
        fn._grad_hooks = []
        weakref.finalize(fn, _node_hooks_gone, fn._grad_hooks)
    fn._grad_hooks.append(hook)
    _node_hook_count[0] += 1

    def removed():
        _node_hook_count[0] -= 1
    return RemovableHandle(fn._grad_hooks, hook, removed)


def _node_hooks_gone(hooks):
    _node_hook_count[0] -= len(hooks)


def retain(tensor):
    if not tensor.requires_grad:
        raise RuntimeError("retain_grad: this tensor does not require grad, so it has no "
                           "gradient to keep")
    if tensor.grad_fn is None or tensor_retains(tensor):
        return  # a leaf keeps its .grad anyway
    ref = weakref.ref(tensor)

    def keep(grad):
        t = ref()
        if t is not None:
            g = grad._data.copy()  # its own memory: a leaf's .grad may be this very array
            t.grad = Tensor._wrap(g if t.grad is None else t.grad._data + g, t._backend)
    keep.retains = True
    register(tensor, keep)


def tensor_retains(tensor):
    fn = tensor.grad_fn
    return fn is not None and any(getattr(h, "retains", False) for h in fn._grad_hooks)


def any_registered():
    return bool(_leaf_hooks) or _node_hook_count[0] > 0


def leaf_hook_count(leaf):
    """How many hooks ``leaf`` has (0 for a tensor that is not a leaf's key here)."""
    return len(of_leaf(leaf))


def of_leaf(leaf):
    entry = _leaf_hooks.get(id(leaf))
    return entry[1] if entry is not None and entry[0]() is leaf else ()


def run(hooks, g, backend, tape):
    """``g`` through ``hooks`` in the order they were registered, ``retain_grad``'s last
    (it keeps what the others made of the gradient, as in PyTorch)."""
    if tape is not None:
        tape.fail("a tensor hook (register_hook, retain_grad) ran in backward; a replay "
                  "would not run it")
    retaining = [h for h in hooks if getattr(h, "retains", False)]
    for hook in [h for h in hooks if h not in retaining] + retaining:
        out = hook(Tensor._wrap(g, backend))
        if out is not None:
            if not isinstance(out, Tensor) or out._data.shape != g.shape:
                raise RuntimeError(f"a hook returned {type(out).__name__} "
                                   f"{tuple(getattr(out, 'shape', ()))} for a gradient of "
                                   f"shape {tuple(g.shape)}: return a tensor of that shape, "
                                   f"or None to keep the gradient")
            g = out._data
    return g
