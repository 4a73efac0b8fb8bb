"""Recording one eager pass of Functions, and replaying it on new inputs without Tensors.

A ``Recorder`` is installed on the grad-mode state while a step runs eagerly:
``Function.apply`` reports every node it ran (its class, its ``ctx``, its arguments and its
output array), the backward engine reports the order in which nodes ran, and
``Tensor._bump`` reports in-place changes. From that, ``Recording.plan()`` builds a
``Replay``: the same forward and backward calls, made directly on backend arrays in the
recorded order. A replay builds no Tensor and no graph node and checks no version counter;
what it computes is what the eager step computes, bit for bit, because it runs the very
same ``forward``/``backward`` code on the same arrays in the same order (the gradient sums
of nodes with several consumers included). Two exceptions, each giving the same bits
(functional/fusions.py has them): a registered fusion (``register_fusion``), where two
adjacent nodes, the second the only reader of the first's output, run as one call each
way, built from the first's own helpers and a backend kernel; and a registered prepared
forward (``register_prepared``), the node's own forward calling a backend kernel prepared
once for the recorded arrays.

What a replay cannot repeat makes a recording *untraceable* (``Recording.broken`` says
why), and the caller then stays eager:

- a Python decision on a tensor's value (``item()``, ``bool(t)``, ``numpy()``, ...): the
  replay would bake the first batch's answer in. Reading the shape of a tensor whose shape
  depends on values (``x[mask]``, ``nonzero``, ``unique``, and what ops make of them; a
  Function says so with ``value_sizes``) counts as one: ``len(x[mask])`` is a count;
- an in-place change made outside a Function (``t.add_()`` under no_grad, say). Functions
  that change an input in place declare it (``mutates``, positions in ``forward``'s
  arguments; BatchNorm's running statistics), so the replay repeats the change;
- a second backward, a backward with an explicit gradient, or one from a leaf.

Arrays that reach a node without coming from an input, a known tensor (parameters,
buffers) or an earlier node are constants of the recording. gradlab's own ops that compute
from values are all Functions, those without a gradient too (comparisons, argmax, all/any,
integer casts, indexing by a tensor: ``Function.differentiable``), the random factories
draw inside one (``Draw``), and the losses check their targets inside their Functions, so
such constants come only from outside the ops: a factory (``zeros_like``, ``arange``) or an
array wrapped by hand. They are safe only if they do not depend on the batch; the caller
checks that by recording twice and comparing (``Recording.same_as``), which catches a
constant computed from the data unless both batches happen to give it the same value.

A constant made afresh by each step (another array in each recording) is frozen by a
replay either way, so a ``foldable`` node that reads only such constants (ToDevice: a CPU
``gl.arange(n)`` moved to index a CUDA tensor) is not run again: its recorded output is a
constant too. A constant that is the same array in both recordings (a tensor the loss
holds, maybe changed in place between steps) is read, and its nodes run, at every replay.
"""
from __future__ import annotations

import numpy as np

from .function import Function
from .grad_mode import _state
from .tensor import Tensor

# (first Function class, second Function class) -> (the fusion that replays the two as one,
# the four forward/backward functions it was written for)
_FUSIONS = {}


def register_fusion(fusion):
    """Let a replay run a node of ``fusion.first`` and the node of ``fusion.second`` that
    alone reads its output (as its only argument) as one call each way
    (functional/fusions.py has them). A fusion has ``fits(first_ctx, second_ctx,
    *first_args, **first_kwargs)`` (the recorded arguments: whether it applies to them)
    and ``prepare(first_ctx, second_ctx, *first_args, **first_kwargs)``, called once per
    replay, which returns (forward, backward): ``forward(first_ctx, second_ctx,
    *first_args, **first_kwargs)`` gives the second node's output and leaves both nodes'
    saved arrays as their own forwards leave them; ``backward(first_ctx, second_ctx, grad)``
    gives the first node's input gradients from the second's output gradient. Each must
    give the two nodes' bits. A pair is fused only while both classes keep the forward and
    backward they had here (a patched one is what the replay must run)."""
    _FUSIONS[(fusion.first, fusion.second)] = (fusion, _methods(fusion.first, fusion.second))


# Function class -> (the prepare of its replay's forward, the forward it was written for)
_PREPARED = {}


def register_prepared(cls, prepare):
    """Let a replay run the nodes of ``cls`` through ``prepare(ctx, *args, **kwargs)``:
    called once per replay and node with the recorded arguments, it returns the function to
    call in place of ``cls.forward`` at every replay (the same arguments and bits, less work
    per call: a backend op prepared for these arrays; functional/fusions.py). Used only
    while ``cls.forward`` is the one it had here."""
    _PREPARED[cls] = (prepare, cls.forward)


# Function class -> (the prepare of its replay's backward, the backward it was written for)
_PREPARED_BACKWARD = {}


def register_prepared_backward(cls, prepare):
    """Let a replay run the backward of ``cls``'s nodes through ``prepare(ctx, out)``:
    called once per replay and node with the node's recorded output (its gradient is an
    array like it), it returns the function to call in place of ``cls.backward`` at every
    replay (the same arguments and bits, less work per call), or None where ``cls.backward``
    itself should run. Used only while ``cls.backward`` is the one it had here."""
    _PREPARED_BACKWARD[cls] = (prepare, cls.backward)


def _backward_of(cls, ctx, out):
    """What a replay calls for the backward of node ``ctx`` of ``cls`` (output ``out``)."""
    prepare, written_for = _PREPARED_BACKWARD.get(cls, (None, None))
    if prepare is not None and written_for is cls.backward:
        prepared = prepare(ctx, out)
        if prepared is not None:
            return prepared
    return cls.backward


def _methods(first, second):
    return first.forward, first.backward, second.forward, second.backward


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
        self.const_tensors = []         # (tensor, its array, requires_grad) of the tensor
        #                                 constants, as they were while recording
        self.nodes = []                 # (cls, ctx, arg slots, kwargs, out slot)
        self._node_of = {}              # id(ctx) -> node index
        self.mutated = set()            # ids of arrays that recorded nodes change in place
        self.bumped = []                # tensors whose version counter the pass bumped
        self.root = None                # (node index, shape, dtype) of backward's root
        self.order = []                 # node indices in the order backward ran them
        self.window = None              # "forward" | "backward" | None (not recording)
        self.value_shaped = {}          # id(node output) -> the value-dependent sizes it
        #                                 has, or has a multiple of, among its dims

    def saved_known(self):
        """The version counters of the known tensors (parameters, buffers) whose arrays the
        recorded nodes saved for backward: changed in place between forward and backward,
        eager's backward refuses them, and a replay, which checks no versions, must ask."""
        known = {id(t._version) for t in self.known}
        out = {}
        for _, ctx, _, _, _ in self.nodes:
            for counter, _, _ in ctx._saved_versions:
                if id(counter) in known:
                    out[id(counter)] = counter
        return list(out.values())

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
        tensor = None
        if isinstance(value, Tensor):
            tensor, value = value, value._data
        if isinstance(value, self.ndarray):
            slot = self._slot_of.get(id(value))
            if slot is not None:
                return slot
        if tensor is not None:
            self.const_tensors.append((tensor, value, tensor._requires_grad))
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
        # A shape that depends on the values (x[mask], nonzero, unique, and what is computed
        # from them), read in Python, is a read of values: shape_read() below. What an op
        # makes of such an input keeps the mark where one of its dims has a marked size or
        # a multiple of one ((k, 3) -> k rows of logits, 3k elements); a reduction over the
        # marked dim ((k, 3) -> (3,)) drops it. (A coincidence of sizes marks too much, which
        # only makes a step eager.)
        if getattr(out, "ndim", 0):
            sizes = set(cls.value_sizes(args, kwargs, out, self._varies))
            for a in args:
                sizes.update(self.value_shaped.get(id(a._data if isinstance(a, Tensor) else a),
                                                   ()))
            if sizes and any(d == k or (k and d % k == 0) for d in out.shape for k in sizes):
                self.value_shaped[id(out)] = sizes
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

    def _varies(self, value):
        """Whether an op's argument changes from batch to batch: an input or what an op
        computed, not a constant or a known tensor (a constant mask's count is fixed)."""
        slot = self._slot_of.get(id(value._data if isinstance(value, Tensor) else value))
        return slot is None or self.kinds[slot] in ("input", "node")

    def shape_read(self, array):
        if id(array) in self.value_shaped:
            self.read("the shape of a tensor whose shape depends on values, such as x[mask]")

    def shown(self, what):
        # A print in forward: a replay would not print, and a decision on the text is one
        # on the values, so the step stays eager (with its prints).
        self.read(what)

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

    def fresh_constants(self, other):
        """The const slots whose arrays differ between this recording and ``other`` (the
        same step's, which ``same_as`` found equal): made afresh by each step, such as a
        ``gl.arange(n)`` inside the loss, so that no array outside the step holds them
        (unlike a tensor the loss closes over, which may be updated in place between steps,
        and whose array the replay must read at every call)."""
        return {slot for slot, kind in enumerate(self.kinds)
                if kind == "const" and self.values[slot] is not other.values[slot]}

    def plan(self, keep=(), fresh=()):
        """The Replay of this recording (which must not be broken); ``keep``: the slots the
        caller reads after the forward pass (the output, the loss); ``fresh``: const slots
        made afresh by each step (``fresh_constants``), whose ``foldable`` nodes a replay
        skips, reusing their recorded outputs."""
        return Replay(self, keep, fresh)


def constants_current(rec):
    """False when a tensor whose array the recording or replay ``rec`` holds as a constant
    (one outside the inputs and the known tensors: a tensor the loss closes over) has been
    given another array since (``t.data = ...``), which a replay would not read, or has
    been frozen or unfrozen, which would change its backward."""
    for tensor, array, requires_grad in rec.const_tensors:
        if tensor._data is not array or tensor._requires_grad != requires_grad:
            return False
    return True


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
        # (A constant may live on the host in a CUDA step: gl.arange(n) as an index.)
        if type(a) is not type(b):
            return False
        return a.shape == b.shape and a.dtype == b.dtype and \
            bool((np if isinstance(a, (np.ndarray, np.generic)) else xp).array_equal(a, b))
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:  # noqa: BLE001 - an object without a usable == is not "the same"
        return False


class Replay:
    """The recorded pass as straight-line Python: one generated function for the forward
    pass and one for the backward pass, each a flat sequence of the recorded Function calls
    on local variables (one per slot).

    Why generated code: on the small models a replay is for, interpreting a plan (a loop
    over node tuples, argument lists built per call, a set per backward, per-edge tuple
    unpacking) cost as much as the NumPy calls themselves. The generated functions make the
    same calls in the same order with the same arguments, so the arithmetic is unchanged;
    every decision that depends only on the recording (which slot feeds which argument, when
    a node output is last read, which edges exist, whether a gradient is a node's or a
    leaf's) is taken once, here.

    Results are allocated as eager allocates them. NumPy ``out=`` buffers kept per node
    (for Linear and ReLU) were tried and timed within noise of fresh arrays on the course's
    MLPs, while each needed a rule for who may see a buffer and a check that ``out=`` gives
    the same bytes; so a replay has none."""

    def __init__(self, rec: Recording, keep=(), fresh=()):
        self.ndarray = rec.ndarray
        self.input_slots = list(rec.input_slots)
        self.folded = _folded_nodes(rec, keep, fresh)
        # The slots' kinds as the replay sees them: a folded node's output is a constant.
        self.kinds = list(rec.kinds)
        for i in self.folded:
            self.kinds[rec.nodes[i][4]] = "const"
        self.root = rec.root
        self.bumped = [t._version for t in rec.bumped]
        self.n_nodes = len(rec.nodes)
        self._ctxs = [node[1] for i, node in enumerate(rec.nodes) if i not in self.folded]
        self._consts = [v for v, k in zip(rec.values, self.kinds) if k == "const"]
        self.const_tensors = rec.const_tensors
        nodes = rec.nodes
        # Leaves in the order backward first reaches them (the engine's order).
        leaves, leaf_of = [], {}
        plan = []
        for index in rec.order:
            edges = []
            for pos, nxt in enumerate(nodes[index][1].next_functions):
                if nxt is None:
                    continue
                if isinstance(nxt, Function):
                    edges.append((pos, True, rec._node_of[id(nxt)]))
                else:
                    if id(nxt) not in leaf_of:
                        leaf_of[id(nxt)] = len(leaves)
                        leaves.append(nxt)
                    edges.append((pos, False, leaf_of[id(nxt)]))
            plan.append((index, edges))
        self.leaves = leaves
        self.fused = _fused_pairs(rec, keep, self.folded)
        ns = {"ND": rec.ndarray, "_nd": _as_ndarray, "_own": _own_fast, "_cast": _cast_fast,
              "WRAP": Tensor._wrap, "__name__": __name__}  # (warnings name this module)
        self.source = (_forward_source(rec, self.kinds, keep, ns, self.fused, self.folded) +
                       "\n" +
                       _backward_source(nodes, plan, leaves, rec.root, ns, self.fused,
                                        rec.values))
        exec(compile(self.source, "<gradlab replay>", "exec"), ns)  # noqa: S102 - our code
        self.run_forward = ns["forward"]
        self.run_backward = ns["backward"]

    def held_bytes(self):
        """Bytes of the arrays this replay keeps between calls (constants, and what the
        recorded nodes keep on their ctx), not counting parameters and buffers."""
        seen, total = set(), 0
        arrays = list(self._consts)
        for ctx in self._ctxs:
            arrays += [v for v in vars(ctx).values() if isinstance(v, self.ndarray)]
        for a in arrays:
            if isinstance(a, self.ndarray) and id(a) not in seen:
                seen.add(id(a))
                total += a.nbytes
        return total


def _folded_nodes(rec, keep, fresh):
    """The nodes a replay skips: those of a ``foldable`` class whose inputs are all fresh
    constants (or outputs of nodes folded before them), that backward does not run, and
    whose output is neither kept by the caller nor changed in place. Their recorded outputs
    are what every replay would compute again: the fresh constants were equal in both
    recordings, and a replay reuses them anyway."""
    constant = set(fresh)
    in_backward = set(rec.order)
    folded = set()
    for i, (cls, _, slots, _, out) in enumerate(rec.nodes):
        if cls.foldable and slots and i not in in_backward and out not in keep and \
                all(s in constant for s in slots) and id(rec.values[out]) not in rec.mutated:
            folded.add(i)
            constant.add(out)
    return folded


def _fused_pairs(rec, keep, folded=()):
    """{index of a first node: its fusion's prepared (forward, backward)} for each registered
    pair (i, i + 1) of recorded nodes, neither folded, where node i's output is read by
    node i + 1 alone, as its only argument, and is neither kept by the caller nor changed
    in place, and the fusion fits the arguments."""
    nodes = rec.nodes
    readers = {}
    for node in nodes:
        for s in node[2]:
            readers[s] = readers.get(s, 0) + 1
    fused = {}
    i = 0
    while i + 1 < len(nodes):
        cls, ctx, slots, kwargs, out = nodes[i]
        second = nodes[i + 1]
        fusion, methods = _FUSIONS.get((cls, second[0]), (None, None))
        if fusion is not None and methods == _methods(cls, second[0]) \
                and i not in folded and i + 1 not in folded \
                and not second[3] and second[2] == (out,) and readers.get(out) == 1 \
                and out not in keep and id(rec.values[out]) not in rec.mutated \
                and fusion.fits(ctx, second[1], *(args := [rec.values[s] for s in slots]),
                                **kwargs):
            fused[i] = fusion.prepare(ctx, second[1], *args, **kwargs)
            i += 2
        else:
            i += 1
    return fused


def _forward_source(rec, kinds, keep, ns, fused, folded=()):
    """``forward(inputs)``: the recorded forward pass on new input arrays, less the
    ``folded`` nodes (``kinds``: the replay's, their outputs constants); returns
    {slot: array} for the ``keep`` slots (the caller's output and loss)."""
    for slot, kind in enumerate(kinds):
        if kind in ("const", "known"):
            ns[f"c{slot}"] = rec.values[slot]

    def ref(slot):
        return f"c{slot}" if kinds[slot] in ("const", "known") else f"s{slot}"

    # After each node, drop the node outputs no later node reads (unless the caller keeps
    # them): the replay holds what eager holds, not every activation at once.
    last_use = {}
    for i, (_, _, slots, _, out) in enumerate(rec.nodes):
        last_use[out] = i
        for s in slots:
            if kinds[s] == "node":
                last_use[s] = i
    free = [[] for _ in rec.nodes]
    for s, i in last_use.items():
        if s not in keep:
            free[i].append(s)
    lines = ["def forward(inputs):"]
    lines.append("    " + ", ".join(f"s{s}" for s in rec.input_slots) + ", = inputs")
    for i, (cls, ctx, slots, kwargs, out) in enumerate(rec.nodes):
        if i in folded:
            continue
        ns[f"X{i}"] = ctx
        if i - 1 in fused:
            # node i - 1 and this one ran as one call; free what either last read
            lines += [f"    s{s} = None" for s in sorted(free[i - 1] + free[i])]
            continue
        if i in fused:
            ns[f"F{i}"] = fused[i][0]
            args = [f"X{i}", f"X{i + 1}"]
            out = rec.nodes[i + 1][4]
        else:
            prepare, written_for = _PREPARED.get(cls, (None, None))
            ns[f"F{i}"] = cls.forward if prepare is None or written_for is not cls.forward \
                else prepare(ctx, *[rec.values[s] for s in slots], **kwargs)
            args = [f"X{i}"]
        args += [ref(s) for s in slots]
        for k, (name, value) in enumerate(kwargs.items()):
            ns[f"K{i}_{k}"] = value
            args.append(f"{name}=K{i}_{k}")
        lines.append(f"    s{out} = F{i}({', '.join(args)})")
        # NumPy hands back scalars for 0-d results; apply() makes them arrays, so do we.
        lines.append(f"    if s{out}.__class__ is not ND: s{out} = _nd(s{out}, X{i})")
        if i not in fused:
            lines += [f"    s{s} = None" for s in sorted(free[i])]
    for k, version in enumerate(rec.bumped):
        ns[f"V{k}"] = version._version
        lines.append(f"    V{k}[0] += 1")
    lines.append("    return {" + ", ".join(f"{s}: {ref(s)}" for s in keep) + "}")
    return "\n".join(lines) + "\n"


def _backward_source(nodes, plan, leaves, root, ns, fused, values):
    """``backward(xp)``: the recorded backward pass. Each leaf's ``.grad`` is accumulated
    exactly as the engine does it (a first gradient owning its memory becomes ``.grad``;
    later ones are added to it), node gradients are summed in the engine's order. A fused
    pair whose backward ran back to back (the second node, then the first) runs as one."""
    index, shape, dtype = root
    ns["ROOT_SHAPE"], ns["ROOT_DTYPE"] = shape, dtype
    ns["ROOT"] = None  # the root gradient's ones, made at the first call with its xp
    lines = ["def backward(xp):", "    global ROOT", "    H = set()"]
    lines += [f"    g{i} = None" for i, _ in plan[1:]]
    # A copy of ones made once: the engine's xp.ones, at a fraction of its cost
    lines.append("    if ROOT is None: ROOT = xp.ones(ROOT_SHAPE, dtype=ROOT_DTYPE)")
    lines.append(f"    g{index} = ROOT.copy()")
    for k, leaf in enumerate(leaves):
        ns[f"LEAF{k}"], ns[f"LDT{k}"], ns[f"BE{k}"] = leaf, leaf._data.dtype, leaf._backend
    # A leaf's first gradient becomes its .grad when it owns its memory (_own_fast's rule);
    # the usual case is tested inline, the call made only for the others. CuPy arrays have
    # no writeable flag (they are always writeable).
    fast = _owns_test(ns["ND"])
    skip = None
    for k, (i, edges) in enumerate(plan):
        if i == skip:
            continue
        ctx = nodes[i][1]
        ns[f"X{i}"] = ctx
        first = i - 1
        if first in fused and k + 1 < len(plan) and plan[k + 1][0] == first and \
                edges == [(0, True, first)]:
            ns[f"B{i}"] = fused[first][1]
            ns[f"X{first}"] = nodes[first][1]
            lines.append(f"    r = B{i}(X{first}, X{i}, g{i})")
            lines.append(f"    g{i} = None")
            lines.append(f"    X{i}.saved_tensors = ()")
            i, edges, skip = first, plan[k + 1][1], first
        else:
            ns[f"B{i}"] = _backward_of(nodes[i][0], ctx, values[nodes[i][4]])
            lines.append(f"    r = B{i}(X{i}, g{i})")
            lines.append(f"    g{i} = None")
        lines.append("    if r.__class__ is not tuple: r = (r,)")
        lines.append(f"    X{i}.saved_tensors = ()")
        if edges:
            lines.append("    n = len(r)")
        for pos, is_node, j in edges:
            lines.append(f"    x = r[{pos}] if n > {pos} else None")
            lines.append("    if x is not None:")
            if is_node:
                lines.append(f"        g{j} = x if g{j} is None else g{j} + x")
            else:
                lines.append(f"        lg = LEAF{j}.grad")
                lines.append("        if lg is None:")
                if fast is None:
                    lines.append(f"            x = _own(x, LDT{j}, BE{j}, H)")
                else:
                    lines.append(f"            if x.__class__ is ND and x.dtype is LDT{j} and "
                                 f"x.base is None and id(x) not in H{fast}: H.add(id(x))")
                    lines.append(f"            else: x = _own(x, LDT{j}, BE{j}, H)")
                lines.append(f"            LEAF{j}.grad = WRAP(x, BE{j})")
                lines.append(f"        else: lg._data = lg._data + _cast(x, LDT{j}, BE{j})")
    lines.append("    r = x = None")
    return "\n".join(lines) + "\n"


def _owns_test(ndarray):
    """The tail of the inline test of _own_fast's rule for arrays of type ``ndarray``: the
    writeable check where the type has that flag (NumPy), none where it has not (CuPy:
    always writeable); None where that cannot be told (every gradient goes to _own)."""
    try:
        flags = ndarray((0,)).flags
    except Exception:  # noqa: BLE001
        return None
    return " and x.flags.writeable" if hasattr(flags, "writeable") else ""


def _as_ndarray(out, ctx):
    if isinstance(out, ctx.backend.ndarray):
        return out
    return ctx.xp.asarray(out)


def _cast_fast(g, dtype, backend):
    if not isinstance(g, backend.ndarray):
        g = backend.xp.asarray(g)
    if g.dtype != dtype:
        g = g.astype(dtype)
    return g


def _own_fast(g, dtype, backend, handed_out):
    """The first gradient of a leaf, owning its memory (engine._accumulate_leaf's rule)."""
    if g.__class__ is not backend.ndarray or g.dtype is not dtype:
        g = _cast_fast(g, dtype, backend)
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
