"""Recording one eager pass of Functions, and replaying it on new inputs without Tensors.

A ``Recorder`` is installed on the grad-mode state while a step runs eagerly:
``Function.apply`` reports every node it ran (its class, its ``ctx``, its arguments and its
output array), the backward engine reports the order in which nodes ran, and
``Tensor._bump`` reports in-place changes. From that, ``Recording.plan()`` builds a
``Replay``: the same forward and backward calls, made directly on backend arrays in the
recorded order. A replay builds no Tensor and no graph node and checks no version counter;
what it computes is what the eager step computes, bit for bit, because it runs the very
same ``forward``/``backward`` code on the same arrays in the same order (the gradient sums
of nodes with several consumers included).

What a replay cannot repeat makes a recording *untraceable* (``Recording.broken`` says
why), and the caller then stays eager:

- a Python decision on a tensor's value (``item()``, ``bool(t)``, ``numpy()``, ...): the
  replay would bake the first batch's answer in;
- an in-place change made outside a Function (``t.add_()`` under no_grad, say). Functions
  that change an input in place declare it (``mutates``, positions in ``forward``'s
  arguments; BatchNorm's running statistics), so the replay repeats the change;
- a second backward, a backward with an explicit gradient, or one from a leaf.

Arrays that reach a node without coming from an input, a known tensor (parameters,
buffers) or an earlier node are constants of the recording. They are safe only if they do
not depend on the batch; the caller checks that by recording twice and comparing
(``Recording.same_as``): a constant computed from the data differs between two batches.
"""
from __future__ import annotations

from .function import Function
from .grad_mode import _state
from .tensor import Tensor


class Recording:
    """What one eager pass did, in terms the replay can repeat."""

    def __init__(self, inputs, known, ndarray):
        self.ndarray = ndarray          # the backend's array type
        self.xp = inputs[0]._backend.xp
        self.broken = None              # why this pass cannot be replayed, or None
        self.values = []                # slot -> the value that filled it while recording
        self.kinds = []                 # slot -> "input" | "known" | "const" | "node"
        self._slot_of = {}              # id(array) -> slot (arrays are kept alive below)
        self.input_slots = [self._add(t._data, "input") for t in inputs]
        self.known = list(known)
        for t in self.known:
            if id(t._data) not in self._slot_of:
                self._add(t._data, "known")
        self.nodes = []                 # (cls, ctx, arg slots, kwargs, out slot)
        self._node_of = {}              # id(ctx) -> node index
        self.mutated = set()            # ids of arrays that recorded nodes change in place
        self.bumped = []                # tensors whose version counter the pass bumped
        self.root = None                # (node index, shape, dtype) of backward's root
        self.order = []                 # node indices in the order backward ran them
        self.window = None              # "forward" | "backward" | None (not recording)

    # -- reports from the engine (called only while this recording is installed) -----------
    def _add(self, value, kind):
        self.values.append(value)
        self.kinds.append(kind)
        slot = len(self.values) - 1
        if isinstance(value, self.ndarray):
            self._slot_of[id(value)] = slot
        return slot

    def slot_of(self, tensor):
        """The slot of a tensor's array, or None if no input or recorded op made it."""
        slot = self._slot_of.get(id(tensor._data))
        return slot if slot is not None and self.kinds[slot] in ("node", "input") else None

    def _slot(self, value):
        if isinstance(value, Tensor):
            value = value._data
        if isinstance(value, self.ndarray):
            slot = self._slot_of.get(id(value))
            if slot is not None:
                return slot
        return self._add(value, "const")

    def node(self, cls, ctx, args, kwargs, out):
        if self.window != "forward":
            self.fail(f"{cls.__name__} ran outside the recorded forward pass")
            return
        slots = tuple(self._slot(a) for a in args)
        for pos in getattr(cls, "mutates", ()):
            if pos < len(args) and args[pos] is not None:
                self.mutated.add(id(args[pos]._data if isinstance(args[pos], Tensor)
                                    else args[pos]))
        out_slot = self._add(out, "node")
        self._node_of[id(ctx)] = len(self.nodes)
        self.nodes.append((cls, ctx, slots, dict(kwargs), out_slot))

    def backward_root(self, root, implicit):
        if self.window != "backward" or self.root is not None:
            return self.fail("backward ran twice, or outside the step's backward")
        if not implicit:
            return self.fail("backward() was given an explicit gradient")
        index = self._node_of.get(id(root.grad_fn)) if root.grad_fn is not None else None
        if index is None:
            return self.fail("backward() started from a tensor no recorded op produced")
        self.root = (index, root._data.shape, root._data.dtype)

    def ran(self, fn):
        index = self._node_of.get(id(fn))
        if index is None:
            return self.fail(f"backward reached a {fn.name()} node recorded in an earlier "
                             "step")
        self.order.append(index)

    def bump(self, tensor):
        if id(tensor._data) in self.mutated:
            self.bumped.append(tensor)
        else:
            self.fail("a tensor was changed in place outside a gradlab op (e.g. t.add_() or "
                      "t[...] = v inside forward)")

    def read(self, what):
        self.fail(f"the step reads a tensor's value in Python ({what}); a replay would "
                  "repeat the first batch's decision")

    def fail(self, reason):
        if self.broken is None:
            self.broken = reason

    # -- after the pass ------------------------------------------------------------------
    def same_as(self, other, xp):
        """None if ``other`` (a recording of the next batch) did the same thing, else what
        differs. Constants must be the same array or equal arrays."""
        if len(self.nodes) != len(other.nodes):
            return "the step ran a different number of ops on another batch"
        if self.order != other.order or self.root[1:] != other.root[1:]:
            return "backward ran in another order on another batch"
        if self.kinds != other.kinds:
            return "the step's ops are wired differently on another batch"
        for a, b in zip(self.nodes, other.nodes):
            if a[0] is not b[0] or a[2] != b[2] or a[4] != b[4]:
                return f"the step's ops differ on another batch ({a[0].__name__})"
            if not _same(a[3], b[3], xp):
                return f"{a[0].__name__}'s arguments change from batch to batch"
        for slot, kind in enumerate(self.kinds):
            if kind == "const" and not _same(self.values[slot], other.values[slot], xp):
                return ("an array computed outside gradlab ops changes from batch to batch "
                        "(it would be frozen at the first batch's value)")
        if [id(t) for t in self.bumped] != [id(t) for t in other.bumped]:
            return "the step changes other tensors in place on another batch"
        return None

    def plan(self, keep=()):
        """The Replay of this recording (which must not be broken); ``keep``: the slots the
        caller reads after the forward pass (the output, the loss)."""
        return Replay(self, keep)


def _same(a, b, xp):
    if a is b:
        return True
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and \
            all(_same(a[k], b[k], xp) for k in a)
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and \
            all(_same(x, y, xp) for x, y in zip(a, b))
    if hasattr(a, "shape") and hasattr(a, "dtype"):
        return hasattr(b, "shape") and a.shape == b.shape and a.dtype == b.dtype and \
            bool(xp.array_equal(a, b))
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:  # noqa: BLE001 - an object without a usable == is not "the same"
        return False


class Replay:
    """The recorded pass as a flat program over slots of backend arrays."""

    def __init__(self, rec: Recording, keep=()):
        self.ndarray = rec.ndarray
        self.input_slots = rec.input_slots
        # Constants and known tensors keep their recorded values; node outputs are refilled
        # on every replay (and dropped after backward, as eager frees its graph).
        self.template = [v if k in ("const", "known") else None
                         for v, k in zip(rec.values, rec.kinds)]
        self.kinds = rec.kinds
        # After each node, drop the node outputs that no later node reads (unless the caller
        # keeps them): the replay holds what eager holds, not every activation at once.
        last_use = {}
        for i, (_, _, slots, _, out) in enumerate(rec.nodes):
            last_use[out] = i
            for s in slots:
                if rec.kinds[s] == "node":
                    last_use[s] = i
        free = [[] for _ in rec.nodes]
        for s, i in last_use.items():
            if s not in keep:
                free[i].append(s)
        self.forward = [(cls.forward, ctx, slots, kwargs, out, tuple(free[i]))
                        for i, (cls, ctx, slots, kwargs, out) in enumerate(rec.nodes)]
        self.bumped = [t._version for t in rec.bumped]
        self.root = rec.root
        leaves, leaf_of = [], {}
        nodes = rec.nodes
        backward = []
        for index in rec.order:
            cls, ctx = nodes[index][0], nodes[index][1]
            edges = []  # (input position, is a node, node or leaf index), inputs with edges only
            for pos, nxt in enumerate(ctx.next_functions):
                if nxt is None:
                    continue
                if isinstance(nxt, Function):
                    edges.append((pos, True, rec._node_of[id(nxt)]))
                else:
                    if id(nxt) not in leaf_of:
                        leaf_of[id(nxt)] = len(leaves)
                        leaves.append(nxt)
                    edges.append((pos, False, leaf_of[id(nxt)]))
            backward.append((index, cls.backward, ctx, tuple(edges)))
        self.backward_plan = backward
        self.leaves = leaves
        self.n_nodes = len(nodes)

    def held_bytes(self):
        """Bytes of the arrays this replay keeps between calls (constants, and what the
        recorded nodes keep on their ctx), not counting parameters and buffers."""
        seen, total = set(), 0
        arrays = [v for v, k in zip(self.template, self.kinds) if k == "const"]
        for _, ctx, _, _, _, _ in self.forward:
            arrays += [v for v in vars(ctx).values() if isinstance(v, self.ndarray)]
        for a in arrays:
            if isinstance(a, self.ndarray) and id(a) not in seen:
                seen.add(id(a))
                total += a.nbytes
        return total

    def run_forward(self, inputs):
        """The recorded forward pass on new input arrays; returns the slot values."""
        vals = list(self.template)
        for slot, arr in zip(self.input_slots, inputs):
            vals[slot] = arr
        nd = self.ndarray
        for forward, ctx, slots, kwargs, out_slot, free in self.forward:
            out = forward(ctx, *[vals[s] for s in slots], **kwargs)
            if out.__class__ is not nd and not isinstance(out, nd):
                out = ctx.xp.asarray(out)
            vals[out_slot] = out
            for s in free:
                vals[s] = None
        for version in self.bumped:
            version[0] += 1

        return vals

    def run_backward(self, xp):
        """The recorded backward pass; leaves' ``.grad`` are set as eager backward sets them
        after ``zero_grad(set_to_none=True)``, summing in the engine's order."""
        index, shape, dtype = self.root
        grads = [None] * self.n_nodes
        grads[index] = xp.ones(shape, dtype=dtype)
        leaves = self.leaves
        leaf_grads = [None] * len(leaves)
        handed_out = set()
        for index, backward, ctx, edges in self.backward_plan:
            in_grads = backward(ctx, grads[index])
            grads[index] = None
            if in_grads.__class__ is not tuple:
                in_grads = (in_grads,)
            ctx.saved_tensors = ()
            for pos, is_node, j in edges:
                ig = in_grads[pos] if pos < len(in_grads) else None
                if ig is None:
                    continue
                if is_node:
                    prev = grads[j]
                    grads[j] = ig if prev is None else prev + ig
                else:
                    prev = leaf_grads[j]
                    if prev is None:
                        leaf_grads[j] = _own(leaves[j], ig, handed_out)
                    else:
                        leaf_grads[j] = prev + _cast(leaves[j], ig)
        for leaf, g in zip(leaves, leaf_grads):
            if g is None:
                leaf.grad = None
            elif leaf.grad is None:
                leaf.grad = Tensor._wrap(g, leaf._backend)
            else:
                leaf.grad._data = g  # the same Tensor object, as with zero_grad(set_to_none=False)


def _cast(leaf, g):
    backend = leaf._backend
    if not isinstance(g, backend.ndarray):
        g = backend.xp.asarray(g)
    if g.dtype != leaf._data.dtype:
        g = g.astype(leaf._data.dtype)
    return g


def _own(leaf, g, handed_out):
    """The first gradient of a leaf, owning its memory (engine._accumulate_leaf's rule)."""
    g = _cast(leaf, g)
    if g.base is not None or id(g) in handed_out or not getattr(g.flags, "writeable", True):
        g = g.copy()
    handed_out.add(id(g))
    return g


class recording:
    """``with recording(rec, "forward"):`` installs ``rec`` for the ops run inside."""

    def __init__(self, rec, window):
        self.rec, self.window = rec, window

    def __enter__(self):
        if _state.tape is not None:
            raise RuntimeError("a step is already being recorded in this thread")
        self.rec.window = self.window
        _state.tape = self.rec
        return self.rec

    def __exit__(self, *exc):
        _state.tape = None
        self.rec.window = None
        return False
