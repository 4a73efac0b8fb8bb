"""The backward engine: an iterative walk of the graph in topological order.

No recursion (a 100,000-op chain must not hit Python's recursion limit), gradients of
nodes with several consumers are summed before the node runs, and each node's saved
arrays are released as soon as it has run unless ``retain_graph=True``.
"""
from __future__ import annotations

from . import hooks
from .anomaly import check_gradients
from .function import _FREED, Function
from .grad_mode import _state
from .tensor import Tensor


def backward(root: Tensor, gradient=None, retain_graph=False, create_graph=False):
    if create_graph:
        raise NotImplementedError("create_graph=True (higher-order gradients) is not "
                                  "supported yet")
    if not root._requires_grad:
        raise RuntimeError("backward(): this tensor does not require grad and has no "
                           "grad_fn; set requires_grad=True on the leaves you want "
                           "gradients for, and compute it outside gl.no_grad()")
    xp = root._backend.xp
    if gradient is None:
        if root._data.size != 1:
            raise RuntimeError(
                f"backward(): grad can be created implicitly only for tensors with one "
                f"element, this one has shape {tuple(root.shape)}; pass "
                f"gradient=<tensor of that shape> (e.g. gl.ones_like(out)) or reduce it "
                f"first (out.sum().backward())")
        grad = xp.ones(root._data.shape, dtype=root._data.dtype)
    else:
        if isinstance(gradient, Tensor):
            if gradient._backend is not root._backend:
                raise RuntimeError(f"backward(): gradient is on {gradient.device} but the "
                                   f"tensor is on {root.device}")
            grad = gradient._data.copy()
        else:
            grad = root._backend.asarray(gradient, dtype=root._data.dtype).copy()
        if grad.shape != root._data.shape:
            raise RuntimeError(f"backward(): gradient has shape {tuple(grad.shape)} but the "
                               f"tensor has shape {tuple(root.shape)}")

    handed_out = set()
    root_fn = root.grad_fn
    tape = _state.tape
    if tape is not None:
        tape.backward_root(root, gradient is None)
    hooked = hooks.any_registered()
    if root_fn is None:
        _accumulate_leaf(root, grad, handed_out, hooked, tape)
        return

    # Count, for every node, how many edges of the graph point at it.
    pending = {root_fn: 0}
    stack = [root_fn]
    while stack:
        fn = stack.pop()
        if fn.saved_tensors is _FREED:
            raise RuntimeError(
                f"backward(): trying to backward through the graph a second time (the "
                f"{fn.name()} node's saved values were freed after the first backward). "
                f"Pass retain_graph=True to the first backward() if you need to call it "
                f"again, or recompute the forward pass")
        for nxt in fn.next_functions:
            if isinstance(nxt, Function):
                count = pending.get(nxt)
                if count is None:
                    pending[nxt] = 1
                    stack.append(nxt)
                else:
                    pending[nxt] = count + 1

    check_anomalies = _state.anomaly and _state.anomaly_check
    grads = {root_fn: grad}
    ready = [root_fn]
    while ready:
        fn = ready.pop()
        g = grads.pop(fn)
        if tape is not None:
            tape.ran(fn)
        if hooked and fn._grad_hooks:  # the hooks of the tensor this node made
            g = hooks.run(fn._grad_hooks, g, fn.backend, tape)
        if fn._saved_versions:
            _check_versions(fn, fn._saved_versions)
        in_grads = type(fn).backward(fn, g)  # (a @staticmethod backward takes ctx first)
        if not isinstance(in_grads, tuple):
            in_grads = (in_grads,)
        if check_anomalies:
            check_gradients(fn, in_grads)
        if not retain_graph:
            fn.release()
        for edge, ig in zip(fn.next_functions, in_grads):
            if edge is None:
                continue
            if isinstance(edge, Function):
                if ig is not None:
                    prev = grads.get(edge)
                    grads[edge] = ig if prev is None else prev + ig
                left = pending[edge] - 1
                pending[edge] = left
                if left == 0:
                    if edge in grads:
                        ready.append(edge)
                    else:
                        _runs_not(edge, grads, pending, ready, retain_graph)
            elif ig is not None:
                _accumulate_leaf(edge, ig, handed_out, hooked, tape)


def _accumulate_leaf(leaf: Tensor, g, handed_out: set, hooked=False, tape=None):
    backend = leaf._backend
    if hooked:
        leaf_hooks = hooks.of_leaf(leaf)
        if leaf_hooks:
            g = hooks.run(leaf_hooks, g, backend, tape)
    if not isinstance(g, backend.ndarray):
        g = backend.xp.asarray(g)
    if g.dtype != leaf._data.dtype:
        g = g.astype(leaf._data.dtype)
    if g.shape != leaf._data.shape:
        raise RuntimeError(f"internal error: gradient of shape {g.shape} for a leaf of shape "
                           f"{leaf._data.shape}")
    if leaf.grad is None:
        # Leaf gradients must own their memory: optimizers and clip_grad_* update them in
        # place, and backward functions may return views or the same array twice. CuPy's
        # flags have no `writeable` (device arrays are always writable).
        if g.base is not None or id(g) in handed_out or \
                not getattr(g.flags, "writeable", True):
            g = g.copy()
        handed_out.add(id(g))
        leaf.grad = Tensor._wrap(g, backend)
    else:
        leaf.grad._data = leaf.grad._data + g


def _runs_not(fn, grads, pending, ready, retain_graph):
    """``fn``, whose every edge in has been done and got no gradient (a None, as a loss
    gives its class weight: that still counts as the edge done, as in PyTorch), does not
    run, and counts its own edges done in turn; else the nodes below it, which other paths
    reach too, would wait for it forever and their leaves would get no gradient."""
    todo = [fn]
    while todo:
        fn = todo.pop()
        if not retain_graph:
            fn.release()
        for edge in fn.next_functions:
            if isinstance(edge, Function):
                left = pending[edge] - 1
                pending[edge] = left
                if left == 0:
                    (ready if edge in grads else todo).append(edge)


def _check_versions(fn, versions):
    for counter, seen, pos in versions:
        if counter[0] != seen:
            which = "its output" if pos < 0 else f"input {pos}"
            raise RuntimeError(
                f"backward(): a value the {fn.name()} node saved for its gradient ({which}) "
                f"was modified in place after the forward pass (version {counter[0]}, "
                f"expected {seen}); the gradient would be wrong. Use an out-of-place op "
                f"instead, or clone() the tensor before changing it")
