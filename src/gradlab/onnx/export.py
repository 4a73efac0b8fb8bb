"""ONNX export of a model's forward, traced op by op.

How it works: the model runs once on the example input (in eval mode, without grad) with a
``_Trace`` installed where a compiled step's recording goes (autograd/tape.py). Every op
reports itself there as it runs (its Function class, ``ctx``, arguments and output), and
the emitter of its class (onnx/ops.py) writes its ONNX nodes. So whatever a ``forward``
computes with gradlab ops is exported, modules or not: ``x + self.fc(x)``, ``F.relu``,
slicing, ``torch.cat``-style concatenation. What has no ONNX form is refused with a message
naming the op and the module it ran in: an op without an emitter, a random draw, a value
read in Python (``item()``, ``if t > 0``), an in-place change outside an op.

Parameters, buffers and any other tensor an op reads that the trace did not compute become
initializers holding their values at export time. Dim 0 is the batch axis: it is dynamic in
the file, so ops that would bake the example's batch size in (a reshape that merges it, a
permute that moves it) are refused. The file is then run with onnx's reference evaluator at
the example's batch size and at another one and compared with the model, so that a graph
that would compute something else (a constant built from ``x.shape[0]``, say) is never
written.

Limits: tensors in and out (a tuple of them, not a dict); BatchNorm needs running statistics
(track_running_stats=True); the graph holds the parameters as they are at export time.
"""
from __future__ import annotations

import inspect
import os

import numpy as np

from .ops import EMITTERS, ExportError, supported_ops

OPSET = 17  # LayerNormalization first appears in opset 17; every other op used is older
_IR_VERSION = 8  # the IR version of opset 17, so older runtimes load the file too


def _import_onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("gl.onnx.export needs the onnx package: pip install "
                          "gradlab[onnx] (or pip install onnx)") from None
    return onnx


class _Graph:
    """Collects nodes and initializers; every value gets a fresh unique name."""

    def __init__(self, onnx, dtype):
        self.onnx, self.dtype = onnx, np.dtype(dtype)
        self.nodes, self.initializers, self._count = [], [], 0

    def fresh(self, hint):
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, hint, value, dtype=None):
        """An initializer holding ``value`` (in ``dtype``; the graph's float dtype if None)."""
        # (np.array, not np.ascontiguousarray: that one makes a 0-d value 1-d, and a Gather
        # index or a CumSum axis must stay 0-d)
        array = np.array(value, dtype=dtype or self.dtype, order="C")
        name = self.fresh(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def op(self, op_type, *inputs, **attrs):
        return self.op_outputs(op_type, 1, *inputs, **attrs)[0]

    def op_outputs(self, op_type, count, *inputs, **attrs):
        """A node with ``count`` outputs (TopK's values and indices); returns their names."""
        outs = [self.fresh(op_type.lower()) for _ in range(count)]
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), outs, name=outs[0],
                                                     **attrs))
        return outs


_SIGNATURES = {}  # Function class -> its forward's signature without ctx


def _parameters_of(cls):
    sig = _SIGNATURES.get(cls)
    if sig is None:
        params = list(inspect.signature(cls.forward).parameters.values())[1:]
        sig = _SIGNATURES[cls] = inspect.Signature(params)
    return sig


class Call:
    """One op as the trace saw it run, as its emitter reads it: ``call["alpha"]`` is an
    argument of the Function's ``forward`` by name (arrays for tensors), ``call.input(name)``
    the ONNX value that holds it, ``call.out`` the output array."""

    def __init__(self, trace, cls, ctx, args, kwargs, out):
        self.trace, self.cls, self.ctx, self.out = trace, cls, ctx, out
        self.args = tuple(a._data if hasattr(a, "_data") else a for a in args)
        bound = _parameters_of(cls).bind(*self.args, **kwargs)
        bound.apply_defaults()
        self.values = bound.arguments

    def __getitem__(self, name):
        return self.values[name]

    def __contains__(self, name):
        return name in self.values

    def refuse(self, why):
        raise ExportError(f"{self.trace.where()}: {why}")

    # -- the ONNX values of the arguments ----------------------------------------------------
    def input(self, name, dtype=None):
        """The ONNX value of argument ``name``, cast to ``dtype`` where it differs ("" for
        None, an optional input left out)."""
        return self.trace.value(self.values[name], dtype)

    def input_at(self, i, dtype=None):
        """The same for the ``i``-th positional argument (for ``forward(ctx, *arrays)``)."""
        return self.trace.value(self.args[i], dtype)

    def scalar(self, value):
        """A constant in the output's dtype."""
        return self.trace.g.const("c", value, self.out.dtype)

    def transposed(self, name):
        """The transpose of a 2-D argument: a transposed initializer where it is a constant
        (a Linear's weight), else a Transpose node."""
        return self.trace.value(self.values[name], transposed=True)

    # -- what the trace knows of an argument -------------------------------------------------
    def shape_of(self, name):
        return tuple(self.values[name].shape)

    def dtype_of(self, name):
        value = self.values[name]
        return value.dtype if hasattr(value, "dtype") and hasattr(value, "shape") else None

    def dtype_and_ndim(self, name):
        value = self.values[name]
        return value.dtype, value.ndim

    def batched(self, name):
        """Whether the argument's dim 0 is the (dynamic) batch axis."""
        return id(self.values[name]) in self.trace.batched


class _Trace:
    """Installed as the tape (``_state.tape``) while the model runs once: each op the model
    runs becomes ONNX nodes as it runs. Knows which arrays the graph computes (by id; the
    arrays are kept alive so ids stay unique), which of them carry the batch axis at dim 0,
    and which module is running, for the messages."""

    def __init__(self, g, inputs, input_names, param_names, backend):
        self.g, self.backend, self.param_names = g, backend, param_names
        self.batch = inputs[0].shape[0]
        self.names = {id(x._data): name for x, name in zip(inputs, input_names)}
        self.batched = {id(x._data) for x in inputs}
        self.alive = [x._data for x in inputs]
        self.constants = {}  # (id(array), dtype, transposed) -> initializer name
        self.modules = []    # the labels of the modules running, innermost last

    def where(self):
        return self.modules[-1] if self.modules else "the model"

    def value(self, v, dtype=None, transposed=False):
        if v is None:
            return ""
        ndarray = self.backend.ndarray
        if isinstance(v, ndarray) and id(v) in self.names:
            name = self.names[id(v)]
            if transposed:
                name = self.g.op("Transpose", name, perm=[1, 0])
            if dtype is not None and np.dtype(dtype) != v.dtype:
                name = self.g.op("Cast", name, to=self.g.onnx.helper.np_dtype_to_tensor_dtype(
                    np.dtype(dtype)))
            return name
        if isinstance(v, ndarray):  # a parameter, a buffer, or another tensor's values
            key = (id(v), None if dtype is None else np.dtype(dtype), transposed)
            if key not in self.constants:
                host = self.backend.to_numpy(v)
                hint = self.param_names.get(id(v), "const")
                self.constants[key] = self.g.const(hint + ("_t" if transposed else ""),
                                                   host.T if transposed else host,
                                                   dtype or host.dtype)
                self.alive.append(v)
            return self.constants[key]
        return self.g.const("c", v, dtype)  # a Python number

    # -- the tape's interface (autograd/tape.py's Recording has the same) --------------------
    def node(self, cls, ctx, args, kwargs, out):
        emit = EMITTERS.get(cls)
        if emit is None:
            raise ExportError(f"{self.where()}: the op {cls.__name__} has no ONNX form in "
                              f"gl.onnx.export; it converts {', '.join(supported_ops())}")
        call = Call(self, cls, ctx, args, kwargs, out)
        self.names[id(out)] = emit(self.g, call)
        self.alive.append(out)
        if out.ndim and out.shape[0] == self.batch and any(
                id(a) in self.batched for a in call.args):
            self.batched.add(id(out))

    def read(self, what):
        raise ExportError(f"{self.where()}: the forward reads a tensor's value in Python "
                          f"({what}); the graph would keep the example batch's answer. "
                          "Compute with gradlab ops instead (gl.where for a choice)")

    def shape_read(self, array):
        pass  # a number taken from a shape is checked by the run at a second batch size

    def shown(self, what):
        pass  # a print in forward: the graph computes the same without it

    def bump(self, tensor):
        raise ExportError(f"{self.where()}: a tensor is changed in place outside a gradlab "
                          "op (t.add_(), t[...] = v); export traces ops only, so write "
                          "t = t + v")

    def fail(self, reason):
        raise ExportError(f"{self.where()}: {reason}")


def _trace(model, inputs, trace):
    """Run ``model(*inputs)`` once with ``trace`` installed; each module's forward is wrapped
    to name the module in messages. Returns the outputs as a list."""
    from ..autograd.grad_mode import _state
    from ..autograd.tensor import Tensor

    def labelled(label, forward):
        def wrapper(*args, **kwargs):
            trace.modules.append(label)
            try:
                return forward(*args, **kwargs)
            finally:
                trace.modules.pop()
        return wrapper

    if _state.tape is not None:
        raise RuntimeError("gl.onnx.export cannot run inside a compiled step's recording")
    wrapped = []
    try:
        for path, module in model.named_modules():
            wrapped.append((module, module.__dict__.get("forward")))
            module.__dict__["forward"] = labelled(
                f"{path or 'the model'} ({type(module).__name__})", module.forward)
        _state.tape = trace
        out = model(*inputs)
    finally:
        _state.tape = None
        for module, previous in wrapped:
            if previous is None:
                del module.__dict__["forward"]
            else:
                module.__dict__["forward"] = previous
    several = isinstance(out, (tuple, list))
    outs = list(out) if several else [out]
    bad = [type(o).__name__ for o in outs if not isinstance(o, Tensor)]
    if bad or not outs:
        raise ExportError(f"the model returned {type(out).__name__}"
                          f"{' holding ' + bad[0] if several and bad else ''}; export "
                          "supports a model that returns a tensor or a tuple of tensors")
    return outs


def _other_batch(inputs):
    """Inputs of another batch size than ``inputs``, made of their rows (so in the same
    range)."""
    import gradlab as gl
    if inputs[0].shape[0] > 1:
        return [x[:-1] for x in inputs]
    return [gl.cat([x, x]) for x in inputs]


def _as_outputs(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _check_against_model(proto, model, inputs, input_names, output_names):
    """The file must compute what the model computes, at the example's batch size and at
    another one (a graph that baked the batch size in fails the second)."""
    from onnx.reference import ReferenceEvaluator
    evaluator = ReferenceEvaluator(proto)
    for batch in (inputs, _other_batch(inputs)):
        n = batch[0].shape[0]
        wants = [o.detach().cpu().numpy() for o in _as_outputs(model(*batch))]
        feeds = {name: x.detach().cpu().numpy() for name, x in zip(input_names, batch)}
        try:
            gots = evaluator.run(None, feeds)
        except Exception as exc:  # noqa: BLE001 -- any failure of the graph is the news
            raise ExportError(f"the exported graph fails at batch size {n} "
                              f"({type(exc).__name__}: {exc}); the forward probably builds "
                              "a tensor from the example's batch size (x.shape[0])") from None
        for name, got, want in zip(output_names, gots, wants):
            tol = 1e-9 if want.dtype == np.float64 else 1e-4
            scale = max(1.0, float(np.abs(want[np.isfinite(want)]).max(initial=0.0))) \
                if want.dtype.kind == "f" else 1.0
            if got.shape == want.shape and (np.allclose(got, want, rtol=tol, atol=tol * scale,
                                                        equal_nan=True)
                                            if want.dtype.kind == "f" else
                                            np.array_equal(got, want)):
                continue
            detail = f"shape {got.shape} vs {want.shape}" if got.shape != want.shape else \
                f"max difference {float(np.nanmax(np.abs(got - want))):.3g}"
            where = f"output {name!r}" if len(output_names) > 1 else "the output"
            raise ExportError(f"the exported graph computes other values than the model at "
                              f"batch size {n} ({where}: {detail}); the forward probably "
                              "builds a tensor from the example's batch size (x.shape[0]) "
                              "or from its values")


def _names(kind, given, default, n):
    """The graph's input or output names: ``given`` (a list), else ``default`` for one
    value and ``default_0``, ``default_1``, ... for several."""
    if given is None:
        return [default] if n == 1 else [f"{default}_{i}" for i in range(n)]
    names = [given] if isinstance(given, str) else list(given)
    if len(names) != n or not all(isinstance(name, str) and name for name in names):
        raise ExportError(f"{kind}_names: need {n} non-empty string(s), one per model "
                          f"{kind}, got {given!r}")
    return names


def export(model, example_input, path, input_name="input", output_name="output", *,
           input_names=None, output_names=None, check=True):
    """Write ``model`` as an ONNX file (opset 17) at ``path`` and return the ModelProto.

    ``example_input`` is one batch: a tensor (or array-like), or a tuple of them for a forward
    that takes several (dim 0 of each is the batch axis, exported as dynamic; the other dims
    are fixed). The model may return a tensor or a tuple of tensors. The graph's inputs and
    outputs are named ``input_names`` and ``output_names`` (lists, as in torch.onnx.export),
    else ``input_name`` / ``output_name`` for one and ``input_0``, ``input_1``, ... for
    several. The model is exported in eval mode (Dropout is the identity, BatchNorm1d uses its
    running statistics); each module's train/eval mode is restored afterwards. Every op its
    forward runs is converted (``supported_ops()`` lists them), in modules or between them. The
    graph is checked with ``onnx.checker.check_model`` and, with ``check``, run with onnx's
    reference evaluator at two batch sizes against the model; it is written only then,
    atomically (a failed export leaves no partial file). An example batch of one row is
    traced as two copies of it, so that dims of size 1 are not taken for the batch axis.
    Anything that cannot be exported raises ExportError naming the op and its module."""
    onnx = _import_onnx()
    import gradlab as gl

    from ..autograd.tensor import Tensor
    from ..nn import Module
    if not isinstance(model, Module):
        raise ExportError(f"export needs a gl.nn.Module, got {type(model).__name__}")
    # (a tuple holds one input per forward argument, as torch.onnx.export's args; a list is
    # data for one tensor)
    given = list(example_input) if isinstance(example_input, tuple) else [example_input]
    if not given:
        raise ExportError("example_input is an empty tuple; give one example tensor per "
                          "argument of the model's forward")
    inputs = [(x if isinstance(x, Tensor) else gl.tensor(x)).detach() for x in given]
    if any(x.ndim < 1 for x in inputs):
        raise ExportError("example_input must have a batch axis (dim 0); got a 0-d tensor")
    if len({x.shape[0] for x in inputs}) > 1:
        raise ExportError("the example inputs have different batch sizes (dim 0: "
                          f"{', '.join(str(x.shape[0]) for x in inputs)}); dim 0 of each is "
                          "the one batch axis of the graph")
    if len({x._backend for x in inputs}) > 1:
        raise ExportError("the example inputs are on different devices")
    if inputs[0].shape[0] == 1:
        # In a batch of one, a dim of size 1 that a reduction over the batch left (a sum
        # with keepdim) looks like the batch axis; two copies of the row tell them apart.
        # The check then runs at 2 and at the example's 1 (_other_batch).
        inputs = _other_batch(inputs)
    in_names = _names("input", input_names, input_name, len(inputs))
    g = _Graph(onnx, np.dtype(inputs[0].dtype))
    params = {id(t._data): name for name, t in
              [*model.named_parameters(), *model.named_buffers()] if t is not None}
    trace = _Trace(g, inputs, in_names, params, inputs[0]._backend)
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with gl.no_grad():
            outs = _trace(model, inputs, trace)
            out_names = _names("output", output_names, output_name, len(outs))
            clash = set(in_names) & set(out_names)
            if clash or len(set(in_names)) < len(in_names) or \
                    len(set(out_names)) < len(out_names):
                raise ExportError(f"the graph's input and output names must all differ: "
                                  f"inputs {in_names}, outputs {out_names}")
            for out, name in zip(outs, out_names):
                if id(out._data) not in trace.names:
                    raise ExportError(f"the model's output {name!r} was not computed from its "
                                      "input by gradlab ops (it returns a constant or a new "
                                      "tensor)")
                g.nodes.append(onnx.helper.make_node("Identity", [trace.names[id(out._data)]],
                                                     [name], name=name))
            proto = _model_proto(onnx, g, model, inputs, in_names, outs, out_names,
                                 [id(o._data) in trace.batched for o in outs])
            onnx.checker.check_model(proto, full_check=True)
            if check:
                _check_against_model(proto, model, inputs, in_names, out_names)
    finally:
        for m, mode in modes:
            m.training = mode
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        onnx.save(proto, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return proto


def _model_proto(onnx, g, model, inputs, in_names, outs, out_names, out_batched):
    import gradlab as gl
    helper = onnx.helper

    def info(name, tensor, batched):
        shape = list(tensor.shape)
        if batched:
            shape[0] = "batch"
        return helper.make_tensor_value_info(
            name, helper.np_dtype_to_tensor_dtype(np.dtype(tensor.dtype)), shape)

    graph = helper.make_graph(g.nodes, type(model).__name__,
                              [info(n, x, True) for n, x in zip(in_names, inputs)],
                              [info(n, o, b) for n, o, b in zip(out_names, outs, out_batched)],
                              initializer=g.initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="gradlab", producer_version=gl.__version__)
    proto.ir_version = _IR_VERSION
    return proto
