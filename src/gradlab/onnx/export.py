"""ONNX export of the modules an MLP uses.

How it works: the model runs once on the example input (in eval mode, without grad) while a
recorder wraps every module that has an ONNX form. Each recorded call becomes a few ONNX
nodes; a call's input must be the model's input or an earlier recorded call's output, so
anything a ``forward`` computes *between* modules (``x + y``, ``F.relu(x)``, indexing) is
refused with a message rather than silently left out of the graph. Containers (Sequential,
or any module whose ``forward`` only chains its children) are traced through.

Limits: one tensor in, one tensor out; dim 0 is the batch axis and is the only dynamic one
(the other dims are fixed to the example input's); BatchNorm1d needs running statistics
(track_running_stats=True); the graph holds the parameters as they are at export time.
"""
from __future__ import annotations

import math
import os

import numpy as np

OPSET = 17  # LayerNormalization first appears in opset 17; every other op used is older
_IR_VERSION = 8  # the IR version of opset 17, so older runtimes load the file too


class ExportError(ValueError):
    """The model (or the example input) has something ONNX export cannot express."""


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
        array = np.ascontiguousarray(np.asarray(value, dtype=dtype or self.dtype))
        name = self.fresh(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def param(self, hint, tensor):
        return self.const(hint, tensor.detach().cpu().numpy())

    def op(self, op_type, *inputs, **attrs):
        out = self.fresh(op_type.lower())
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [out], name=out,
                                                     **attrs))
        return out


# -- one emitter per module type: (graph, module, input name, input shape) -> output name ---

def _linear(g, m, x, shape):
    y = g.op("MatMul", x, g.const("weight_t", m.weight.detach().cpu().numpy().T))
    return y if m.bias is None else g.op("Add", y, g.param("bias", m.bias))


def _single(op_type, **attrs):
    return lambda g, m, x, shape: g.op(op_type, x, **attrs)


def _passthrough(g, m, x, shape):
    return x  # Identity, and Dropout in eval mode


def _leaky_relu(g, m, x, shape):
    return g.op("LeakyRelu", x, alpha=float(m.negative_slope))


def _rrelu(g, m, x, shape):
    return g.op("LeakyRelu", x, alpha=(m.lower + m.upper) / 2)  # eval mode's fixed slope


def _prelu(g, m, x, shape):
    a = m.weight.detach().cpu().numpy()
    if a.size != 1:  # one slope per channel (dim 1), as gradlab broadcasts it
        a = a.reshape((-1,) + (1,) * (len(shape) - 2))
    return g.op("PRelu", x, g.const("slope", a.reshape(-1) if a.size == 1 else a))


def _elu(g, m, x, shape):
    return g.op("Elu", x, alpha=float(m.alpha))


def _selu(g, m, x, shape):
    from ..functional.activation import Selu
    return g.op("Selu", x, alpha=Selu.ALPHA, gamma=Selu.SCALE)


def _binary_step(g, m, x, shape):
    return g.op("Cast", g.op("GreaterOrEqual", x, g.const("zero", 0)),
                to=_elem_type(g.onnx, g.dtype))


def _isru(g, m, x, shape):
    den = g.op("Sqrt", g.op("Add", g.const("one", 1), g.op("Mul", g.const("alpha", m.alpha),
                                                            g.op("Mul", x, x))))
    return g.op("Div", x, den)


def _isrlu(g, m, x, shape):
    # min(x, 0) inside the root: the branch for x >= 0 is discarded, so keep it finite.
    neg = g.op("Min", x, g.const("zero", 0))
    den = g.op("Sqrt", g.op("Add", g.const("one", 1), g.op("Mul", g.const("alpha", m.alpha),
                                                            g.op("Mul", neg, neg))))
    return g.op("Where", g.op("GreaterOrEqual", x, g.const("zero", 0)), x,
                g.op("Div", x, den))


def _sqnl(g, m, x, shape):
    c = g.op("Clip", x, g.const("lo", -2), g.const("hi", 2))
    return g.op("Sub", c, g.op("Mul", c, g.op("Mul", g.op("Abs", c), g.const("quarter", 0.25))))


def _bipolar_relu(g, m, x, shape):
    odd = g.const("odd", np.arange(shape[-1]) % 2 == 1, dtype=bool)
    return g.op("Where", odd, g.op("Min", x, g.const("zero", 0)), g.op("Relu", x))


def _silu(g, m, x, shape):
    return g.op("Mul", x, g.op("Sigmoid", x))


def _softplus(g, m, x, shape):
    # ONNX's Softplus has no beta/threshold and may overflow: max(z, 0) + log(1 + e^-|z|)
    # with z = beta x is finite for every z, then x itself where z > threshold (as PyTorch).
    bx = g.op("Mul", x, g.const("beta", m.beta))
    tail = g.op("Log", g.op("Add", g.const("one", 1),
                            g.op("Exp", g.op("Neg", g.op("Abs", bx)))))
    soft = g.op("Div", g.op("Add", g.op("Relu", bx), tail), g.const("beta", m.beta))
    return g.op("Where", g.op("Greater", bx, g.const("threshold", m.threshold)), x, soft)


def _gelu(g, m, x, shape):
    half_x = g.op("Mul", x, g.const("half", 0.5))
    if m.approximate == "tanh":
        cube = g.op("Mul", g.op("Mul", x, x), x)
        inner = g.op("Add", x, g.op("Mul", cube, g.const("c", 0.044715)))
        t = g.op("Tanh", g.op("Mul", inner, g.const("k", math.sqrt(2 / math.pi))))
        return g.op("Mul", half_x, g.op("Add", g.const("one", 1), t))
    erf = g.op("Erf", g.op("Div", x, g.const("sqrt2", math.sqrt(2))))  # Gelu op is opset 20
    return g.op("Mul", half_x, g.op("Add", g.const("one", 1), erf))


def _axis(dim, ndim):
    dim = -1 if dim is None else dim
    return dim + ndim if dim < 0 else dim


def _softmax(op_type):
    return lambda g, m, x, shape: g.op(op_type, x, axis=_axis(m.dim, len(shape)))


def _flatten(g, m, x, shape):
    start, end = _axis(m.start_dim, len(shape)), _axis(m.end_dim, len(shape))
    if start == 0:
        raise ExportError(f"Flatten(start_dim={m.start_dim}) merges the batch axis (dim 0) "
                          "into the others; the export keeps dim 0 as a dynamic batch axis, "
                          "so flatten from dim 1")
    # 0 copies the input's dim, so the batch size stays dynamic.
    target = [0] * start + [-1] + list(shape[end + 1:])
    return g.op("Reshape", x, g.const("shape", target, dtype=np.int64))


def _batch_norm(g, m, x, shape):
    if m.running_mean is None:
        raise ExportError("BatchNorm1d(track_running_stats=False) normalizes with each batch's "
                          "own statistics even in eval mode; export needs running statistics "
                          "(track_running_stats=True)")
    n = m.num_features
    scale = g.param("scale", m.weight) if m.weight is not None else g.const("scale", np.ones(n))
    bias = g.param("bias", m.bias) if m.bias is not None else g.const("bias", np.zeros(n))
    return g.op("BatchNormalization", x, scale, bias, g.param("mean", m.running_mean),
                g.param("var", m.running_var), epsilon=float(m.eps))


def _layer_norm(g, m, x, shape):
    ns = m.normalized_shape
    inputs = [x, g.param("scale", m.weight) if m.weight is not None
              else g.const("scale", np.ones(ns))]
    if m.bias is not None:
        inputs.append(g.param("bias", m.bias))
    return g.op("LayerNormalization", *inputs, axis=-len(ns), epsilon=float(m.eps))


def _emitters():
    from .. import nn
    return {
        nn.Linear: _linear, nn.Identity: _passthrough, nn.Dropout: _passthrough,
        nn.Flatten: _flatten, nn.BatchNorm1d: _batch_norm, nn.LayerNorm: _layer_norm,
        nn.Sigmoid: _single("Sigmoid"), nn.Tanh: _single("Tanh"), nn.ReLU: _single("Relu"),
        nn.ArcTan: _single("Atan"), nn.Softsign: _single("Softsign"),
        nn.LeakyReLU: _leaky_relu, nn.RReLU: _rrelu, nn.PReLU: _prelu, nn.ELU: _elu,
        nn.SELU: _selu, nn.BinaryStep: _binary_step, nn.ISRU: _isru, nn.ISRLU: _isrlu,
        nn.SQNL: _sqnl, nn.BipolarReLU: _bipolar_relu, nn.SiLU: _silu,
        nn.Softplus: _softplus, nn.GELU: _gelu, nn.Softmax: _softmax("Softmax"),
        nn.LogSoftmax: _softmax("LogSoftmax"),
    }


def supported_modules():
    """The names of the module classes ``export`` converts (containers are traced through)."""
    return sorted(cls.__name__ for cls in _emitters())


def _emitter_for(module, table):
    """The emitter of the module's class, or of a base class whose forward it keeps (a
    subclass that overrides forward computes something else)."""
    for cls in type(module).__mro__:
        if cls in table:
            return table[cls] if type(module).forward is cls.forward else None
    return None


def _elem_type(onnx, dtype):
    return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


# -- tracing ---------------------------------------------------------------------------------

def _trace(model, x, table):
    """Run ``model(x)`` once, recording each call of a convertible module as
    (path, module, emitter, input, output). Returns (calls, output)."""
    from ..autograd.tensor import Tensor
    calls, wrapped = [], []

    def recorder(path, module, emit, forward):
        def wrapper(*args, **kwargs):
            if len(args) != 1 or kwargs or not isinstance(args[0], Tensor):
                raise ExportError(f"{path or 'the model'} ({type(module).__name__}) is called "
                                  "with other than one tensor; export supports one tensor "
                                  "per module call")
            out = forward(*args)
            calls.append((path, module, emit, args[0], out))
            return out
        return wrapper

    def refuser(path, module):
        def wrapper(*args, **kwargs):
            raise ExportError(f"{path or 'the model'} ({type(module).__name__}) cannot be "
                              "exported to ONNX: export converts "
                              f"{', '.join(supported_modules())}, and containers of them")
        return wrapper

    try:
        for path, module in model.named_modules():
            emit = _emitter_for(module, table)
            if emit is not None:
                wrapper = recorder(path, module, emit, module.forward)
            elif not module._modules:  # a leaf without an ONNX form
                wrapper = refuser(path, module)
            else:
                continue  # a container: its forward runs and calls the recorded children
            wrapped.append((module, module.__dict__.get("forward")))
            module.__dict__["forward"] = wrapper
        out = model(x)
    finally:
        for module, previous in wrapped:
            if previous is None:
                del module.__dict__["forward"]
            else:
                module.__dict__["forward"] = previous
    if not isinstance(out, Tensor):
        raise ExportError(f"the model returned {type(out).__name__}; export supports a model "
                          "that returns one tensor")
    return calls, out


def export(model, example_input, path, input_name="input", output_name="output"):
    """Write ``model`` as an ONNX file (opset 17) at ``path`` and return the ModelProto.

    ``example_input`` is one batch (dim 0 is the batch axis, exported as dynamic; the other
    dims are fixed). The model is exported in eval mode (Dropout is the identity,
    BatchNorm1d uses its running statistics); each module's train/eval mode is restored
    afterwards. The graph is checked with ``onnx.checker.check_model`` before it is written
    (atomically: a failed export leaves no partial file).

    Supported: see ``supported_modules()``, inside Sequential or a ``forward`` that only
    chains them. Anything else raises ExportError naming the module."""
    onnx = _import_onnx()
    import gradlab as gl

    from ..autograd.tensor import Tensor
    from ..nn import Module
    if not isinstance(model, Module):
        raise ExportError(f"export needs a gl.nn.Module, got {type(model).__name__}")
    x = example_input if isinstance(example_input, Tensor) else gl.tensor(example_input)
    if x.ndim < 1:
        raise ExportError("example_input must have a batch axis (dim 0); got a 0-d tensor")
    table = _emitters()
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with gl.no_grad():
            calls, out = _trace(model, x, table)
    finally:
        for m, mode in modes:
            m.training = mode

    dtype = x.detach().cpu().numpy().dtype
    g = _Graph(onnx, dtype)
    names = {id(x): input_name}
    for call_path, module, emit, inp, result in calls:
        if id(inp) not in names:
            raise ExportError(
                f"{call_path} ({type(module).__name__}) receives a tensor that no exportable "
                "module produced: the forward computes something between modules (e.g. "
                "x + y, F.relu(x), indexing) that export cannot see; use module forms "
                "(nn.ReLU() instead of F.relu) in a Sequential")
        names[id(result)] = emit(g, module, names[id(inp)], tuple(inp.shape))
    if id(out) not in names:
        raise ExportError("the model's output is not the output of an exportable module: its "
                          "forward computes the result after the last module call; end the "
                          "forward with a module call")
    g.nodes.append(onnx.helper.make_node("Identity", [names[id(out)]], [output_name],
                                         name=output_name))

    elem = _elem_type(onnx, dtype)
    helper = onnx.helper
    graph = helper.make_graph(
        g.nodes, type(model).__name__,
        [helper.make_tensor_value_info(input_name, elem, ["batch", *x.shape[1:]])],
        [helper.make_tensor_value_info(output_name, elem, ["batch", *out.shape[1:]])],
        initializer=g.initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="gradlab", producer_version=gl.__version__)
    proto.ir_version = _IR_VERSION
    onnx.checker.check_model(proto, full_check=True)
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        onnx.save(proto, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return proto
