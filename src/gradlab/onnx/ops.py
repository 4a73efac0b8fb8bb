"""The ONNX form of each gradlab op: one emitter per Function class.

An emitter gets the graph being built and the ``Call`` of one op as the trace saw it run
(its arguments by the names of the Function's ``forward``, its ``ctx`` and its output
array) and returns the name of the ONNX value that holds the op's output. It writes the
forward formula of the Function, in ONNX operators, for the arguments of this call; where a
call has no ONNX form (a draw, dropout in training, batch statistics) it raises ExportError
saying what to change. Where ONNX has no single operator (SELU's scale aside, GELU before
opset 20, Softplus with beta and threshold, ISRU, SQNL, ...) the formula is spelled with
several, the same one the Function computes.
"""
from __future__ import annotations

import math

import numpy as np

from ..functional import activation as A
from ..functional import elementwise as E
from ..functional import normalization as N
from ..functional import reduce as R
from ..functional import shape as S
from ..functional import sorting as Sorting
from ..functional.dropout import DropoutFn
from ..functional.matmul import LinearFn, Matmul

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min


class ExportError(ValueError):
    """The model (or the example input) has something ONNX export cannot express."""


EMITTERS = {}  # Function class -> emitter(graph, call) -> output name


def emits(*classes):
    def register(emitter):
        for cls in classes:
            EMITTERS[cls] = emitter
        return emitter
    return register


def supported_ops():
    """The names of the ops (as in ``grad_fn=<...Backward>``) that ``export`` converts."""
    return sorted(cls.__name__ for cls in EMITTERS)


def _elem(onnx, dtype):
    return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _axes(g, axes):
    return g.const("axes", list(axes), dtype=np.int64)


# -- elementwise -----------------------------------------------------------------------------

def _binary(op_type):
    def emit(g, c):
        dtype = c.out.dtype
        return g.op(op_type, c.input("a", dtype), c.input("b", dtype))
    return emit


for _cls, _op_type in ((E.Add, "Add"), (E.Sub, "Sub"), (E.Mul, "Mul"), (E.Div, "Div"),
                       (E.Maximum, "Max"), (E.Minimum, "Min")):
    emits(_cls)(_binary(_op_type))


def _divmod(g, c):
    """(floor(a / b), a mod b with the sign of b) as NumPy computes them (its npy_divmod):
    on floats from C's fmod (ONNX's Mod with fmod=1, exact), moved by b where its sign is
    not b's, the quotient (a - fmod) / b rounded to the integer it is up to rounding, a / b
    where b == 0 (fmod is NaN there); on integers from ONNX's Mod with fmod=0, Python's, with
    0 for both where b == 0 (an integer division by zero would fault the runtime; the eager
    op raises there, as PyTorch). Signed zeros aside, the same values as the model's."""
    dtype = c.out.dtype
    a, b = c.input("a", dtype), c.input("b", dtype)
    zero = g.const("zero", 0, dtype)
    b_zero = g.op("Equal", b, zero)
    if not np.issubdtype(dtype, np.floating):
        safe_b = g.op("Where", b_zero, g.const("one", 1, dtype), b)
        mod = g.op("Mod", a, safe_b, fmod=0)
        quotient = g.op("Div", g.op("Sub", a, mod), safe_b)  # exact: b divides a - mod
        return g.op("Where", b_zero, zero, quotient), g.op("Where", b_zero, zero, mod)
    fmod = g.op("Mod", a, b, fmod=1)
    moved = g.op("And", g.op("Not", g.op("Equal", fmod, zero)),
                 g.op("Xor", g.op("Less", b, zero), g.op("Less", fmod, zero)))
    mod = g.op("Where", moved, g.op("Add", fmod, b), fmod)
    exact = g.op("Div", g.op("Sub", a, fmod), b)
    exact = g.op("Where", moved, g.op("Sub", exact, g.const("one", 1, dtype)), exact)
    quotient = g.op("Where", b_zero, g.op("Div", a, b), g.op("Round", exact))
    return quotient, mod


@emits(E.FloorDivide)
def _floor_divide(g, c):
    return _divmod(g, c)[0]


@emits(E.Remainder)
def _remainder(g, c):
    return _divmod(g, c)[1]


@emits(E.Pow)
def _pow(g, c):
    return g.op("Pow", c.input("a", c.out.dtype), c.input("b", c.out.dtype))


def _unary(op_type):
    return lambda g, c: g.op(op_type, c.input("x"))


for _cls, _op_type in ((E.Neg, "Neg"), (E.Exp, "Exp"), (E.Log, "Log"), (E.Sqrt, "Sqrt"),
                       (E.Abs, "Abs"), (E.Sin, "Sin"), (E.Cos, "Cos"), (A.Relu, "Relu"),
                       (A.SigmoidFn, "Sigmoid"), (A.TanhFn, "Tanh"), (A.Arctan, "Atan"),
                       (A.SoftsignFn, "Softsign"), (A.IdentityFn, "Identity"),
                       (S.Copy, "Identity"), (S.ToDevice, "Identity")):
    emits(_cls)(_unary(_op_type))


@emits(E.Log1p)
def _log1p(g, c):
    return g.op("Log", g.op("Add", c.input("x"), c.scalar(1)))


@emits(E.Expm1)
def _expm1(g, c):
    return g.op("Sub", g.op("Exp", c.input("x")), c.scalar(1))


@emits(E.Clamp)
def _clamp(g, c):
    bounds = [c.scalar(c[k]) if c[k] is not None else "" for k in ("min", "max")]
    return g.op("Clip", c.input("x"), *bounds)


@emits(E.ClampTensor)
def _clamp_tensor(g, c):
    # Max then Min: the forward's maximum(x, lo), then minimum(., hi)
    dtype = c.out.dtype
    out = c.input("x", dtype)
    if c["lo"] is not None:
        out = g.op("Max", out, c.input("lo", dtype))
    if c["hi"] is not None:
        out = g.op("Min", out, c.input("hi", dtype))
    return out


@emits(E.Where)
def _where(g, c):
    dtype = c.out.dtype
    return g.op("Where", c.input("cond", np.bool_), c.input("a", dtype), c.input("b", dtype))


@emits(S.MaskedFill)
def _masked_fill(g, c):
    dtype = c.out.dtype
    return g.op("Where", c.input("mask", np.bool_), c.input("value", dtype),
                c.input("x", dtype))


_COMPARE = {"greater": "Greater", "less": "Less", "equal": "Equal",
            "greater_equal": "GreaterOrEqual", "less_equal": "LessOrEqual",
            "logical_and": "And", "logical_or": "Or", "logical_xor": "Xor"}


@emits(E.Compare)
def _compare(g, c):
    ufunc = c["ufunc"]
    if ufunc.startswith("bitwise_") and c.out.dtype == np.bool_:
        ufunc = ufunc.replace("bitwise_", "logical_")  # & | ^ of masks
    if ufunc.startswith("logical_"):  # And/Or/Xor take bools
        a, b = c.input("a", np.bool_), c.input("b", np.bool_)
    else:
        dtype = np.result_type(*(c.dtype_of(k) for k in ("a", "b")))
        a, b = c.input("a", dtype), c.input("b", dtype)
    if ufunc == "not_equal":
        return g.op("Not", g.op("Equal", a, b))
    if ufunc not in _COMPARE:
        c.refuse(f"{ufunc} has no ONNX form in gl.onnx.export")
    return g.op(_COMPARE[ufunc], a, b)


# (ONNX's Round, as NumPy's, takes halves to even)
_PREDICATE = {"isnan": "IsNaN", "isinf": "IsInf", "sign": "Sign", "floor": "Floor",
              "ceil": "Ceil", "round": "Round", "logical_not": "Not"}


@emits(E.Predicate)
def _predicate(g, c):
    if c["ufunc"] == "isfinite":
        x = c.input("x")
        return g.op("Not", g.op("Or", g.op("IsNaN", x), g.op("IsInf", x)))
    if c["ufunc"] not in _PREDICATE:
        c.refuse(f"{c['ufunc']} has no ONNX form in gl.onnx.export")
    return g.op(_PREDICATE[c["ufunc"]], c.input("x"))


# -- activations -----------------------------------------------------------------------------

@emits(A.LeakyRelu)
def _leaky_relu(g, c):
    return g.op("LeakyRelu", c.input("x"), alpha=float(c["slope"]))


@emits(A.Rrelu)
def _rrelu(g, c):
    if c["training"]:
        c.refuse("RReLU in training mode draws random slopes; export runs the model in eval "
                 "mode, so call rrelu with training=self.training")
    return g.op("LeakyRelu", c.input("x"), alpha=(c["lower"] + c["upper"]) / 2)


@emits(A.Prelu)
def _prelu(g, c):
    a, x = c["a"], c.out
    # One slope per channel (dim 1) broadcasts as (C, 1, ...) against (N, C, ...).
    shape = (-1,) if a.size == 1 else (-1,) + (1,) * (x.ndim - 2)
    return g.op("PRelu", c.input("x"), g.op("Reshape", c.input("a"),
                                            g.const("shape", shape, dtype=np.int64)))


@emits(A.Elu)
def _elu(g, c):
    return g.op("Elu", c.input("x"), alpha=float(c["alpha"]))


@emits(A.Selu)
def _selu(g, c):
    return g.op("Selu", c.input("x"), alpha=A.Selu.ALPHA, gamma=A.Selu.SCALE)


@emits(A.BinaryStepFn)
def _binary_step(g, c):
    return g.op("Cast", g.op("GreaterOrEqual", c.input("x"), c.scalar(0)),
                to=_elem(g.onnx, c.out.dtype))


@emits(A.Isru)
def _isru(g, c):
    x = c.input("x")
    return g.op("Div", x, _inverse_root(g, c, x))


def _inverse_root(g, c, v):
    """sqrt(1 + alpha v^2), ISRU's and ISRLU's denominator."""
    return g.op("Sqrt", g.op("Add", c.scalar(1), g.op("Mul", c.scalar(c["alpha"]),
                                                      g.op("Mul", v, v))))


@emits(A.Isrlu)
def _isrlu(g, c):
    x = c.input("x")
    # min(x, 0) inside the root: the branch for x >= 0 is discarded, so keep it finite.
    den = _inverse_root(g, c, g.op("Min", x, c.scalar(0)))
    return g.op("Where", g.op("GreaterOrEqual", x, c.scalar(0)), x, g.op("Div", x, den))


@emits(A.Sqnl)
def _sqnl(g, c):
    clipped = g.op("Clip", c.input("x"), c.scalar(-2), c.scalar(2))
    return g.op("Sub", clipped, g.op("Mul", clipped, g.op("Mul", g.op("Abs", clipped),
                                                          c.scalar(0.25))))


@emits(A.BipolarRelu)
def _bipolar_relu(g, c):
    x = c.input("x")
    odd = g.const("odd", np.arange(c.out.shape[-1]) % 2 == 1, dtype=bool)
    return g.op("Where", odd, g.op("Min", x, c.scalar(0)), g.op("Relu", x))


@emits(A.Silu)
def _silu(g, c):
    x = c.input("x")
    return g.op("Mul", x, g.op("Sigmoid", x))


@emits(A.SoftplusFn)
def _softplus(g, c):
    # ONNX's Softplus has no beta/threshold and may overflow: max(z, 0) + log(1 + e^-|z|)
    # with z = beta x is finite for every z, then x itself where z > threshold (as PyTorch).
    x, beta = c.input("x"), c.scalar(c["beta"])
    bx = g.op("Mul", x, beta)
    tail = g.op("Log", g.op("Add", c.scalar(1), g.op("Exp", g.op("Neg", g.op("Abs", bx)))))
    soft = g.op("Div", g.op("Add", g.op("Relu", bx), tail), beta)
    return g.op("Where", g.op("Greater", bx, c.scalar(c["threshold"])), x, soft)


@emits(A.Gelu)
def _gelu(g, c):
    x = c.input("x")
    half_x = g.op("Mul", x, c.scalar(0.5))
    if c["approximate"] == "tanh":
        cube = g.op("Mul", g.op("Mul", x, x), x)
        inner = g.op("Add", x, g.op("Mul", cube, c.scalar(0.044715)))
        t = g.op("Tanh", g.op("Mul", inner, c.scalar(math.sqrt(2 / math.pi))))
        return g.op("Mul", half_x, g.op("Add", c.scalar(1), t))
    erf = g.op("Erf", g.op("Div", x, c.scalar(math.sqrt(2))))  # the Gelu op is opset 20
    return g.op("Mul", half_x, g.op("Add", c.scalar(1), erf))


@emits(A.SoftmaxFn)
def _softmax(g, c):
    return g.op("Softmax", c.input("x"), axis=int(c["dim"]))


@emits(A.LogSoftmaxFn)
def _log_softmax(g, c):
    return g.op("LogSoftmax", c.input("x"), axis=int(c["dim"]))


@emits(DropoutFn)
def _dropout(g, c):
    c.refuse("dropout runs in training mode (F.dropout's training=True is its default); "
             "export runs the model in eval mode, so pass training=self.training or use "
             "nn.Dropout")


# -- products and normalization --------------------------------------------------------------

@emits(Matmul)
def _matmul(g, c):
    dtype = c.out.dtype
    return g.op("MatMul", c.input("a", dtype), c.input("b", dtype))


@emits(LinearFn)
def _linear(g, c):
    y = g.op("MatMul", c.input("x"), c.transposed("weight"))
    return y if c["bias"] is None else g.op("Add", y, c.input("bias"))


@emits(N.BatchNorm)
def _batch_norm(g, c):
    if c["mean"] is None:
        c.refuse("batch norm normalizes with each batch's own statistics even in eval mode "
                 "(BatchNorm1d(track_running_stats=False), or batch_norm(training=True)); "
                 "export needs running statistics (track_running_stats=True)")
    n = c.out.shape[1]
    scale = c.input("w") if c["w"] is not None else g.const("scale", np.ones(n), c.out.dtype)
    bias = c.input("b") if c["b"] is not None else g.const("bias", np.zeros(n), c.out.dtype)
    return g.op("BatchNormalization", c.input("x"), scale, bias, c.input("mean"),
                c.input("var"), epsilon=float(c["eps"]))


@emits(N.LayerNormFn)
def _layer_norm(g, c):
    n_dims = c["n_dims"]
    shape = c.out.shape[c.out.ndim - n_dims:]
    inputs = [c.input("x"), c.input("w") if c["w"] is not None
              else g.const("scale", np.ones(shape), c.out.dtype)]
    if c["b"] is not None:
        inputs.append(c.input("b"))
    return g.op("LayerNormalization", *inputs, axis=-n_dims, epsilon=float(c["eps"]))


# -- reductions ------------------------------------------------------------------------------

def _reduce(op_type):
    """A reduction over ``axes`` (a tuple; all axes when None): ReduceSum takes its axes as
    an input since opset 13, the others as an attribute until opset 18."""
    def emit(g, c):
        axes = c["axes"] if "axes" in c else c["axis"]
        ndim = c.dtype_and_ndim("x")[1]
        axes = tuple(range(ndim)) if axes is None else \
            (axes,) if isinstance(axes, int) else tuple(axes)
        keep = int(bool(c["keepdim"]))
        if not axes:  # a 0-d input: nothing to reduce
            return g.op("Identity", c.input("x"))
        if op_type == "ReduceSum":
            return g.op(op_type, c.input("x"), _axes(g, axes), keepdims=keep)
        return g.op(op_type, c.input("x"), axes=list(axes), keepdims=keep)
    return emit


for _cls, _op_type in ((R.Sum, "ReduceSum"), (R.Mean, "ReduceMean"), (R.Amax, "ReduceMax"),
                       (R.Amin, "ReduceMin"), (R.Max, "ReduceMax"), (R.Min, "ReduceMin"),
                       (R.Logsumexp, "ReduceLogSumExp"), (R.Norm, "ReduceL2"),
                       (R.Prod, "ReduceProd")):
    emits(_cls)(_reduce(_op_type))


@emits(R.Var)
def _var(g, c):
    x, axes = c.input("x"), list(c["axes"])
    shape = c.shape_of("x")
    if 0 in axes and c.batched("x") and c["correction"]:
        c.refuse("var over the batch axis divides by (batch size - correction), which the "
                 "exported graph cannot know; use correction=0 or reduce other dims")
    mean = g.op("ReduceMean", x, axes=axes, keepdims=1)
    diff = g.op("Sub", x, mean)
    square_mean = g.op("ReduceMean", g.op("Mul", diff, diff), axes=axes,
                       keepdims=int(bool(c["keepdim"])))
    n = int(np.prod([shape[a] for a in axes]))
    if not c["correction"]:
        return square_mean
    return g.op("Mul", square_mean, c.scalar(n / (n - c["correction"])))


@emits(R.Std)
def _std(g, c):
    return g.op("Sqrt", _var(g, c))


@emits(R.ArgExtreme)
def _arg_extreme(g, c):
    x, axis = c.input("x"), c["axis"]
    op_type = {"argmax": "ArgMax", "argmin": "ArgMin"}[c["op"]]
    if axis is None:
        flat = g.op("Reshape", x, g.const("shape", [-1], dtype=np.int64))
        out = g.op(op_type, flat, axis=0, keepdims=0, select_last_index=0)
        return g.op("Reshape", out, g.const("shape", list(c.out.shape), dtype=np.int64))
    return g.op(op_type, x, axis=int(axis), keepdims=int(bool(c["keepdim"])),
                select_last_index=0)


@emits(R.Cumsum)
def _cumsum(g, c):
    return g.op("CumSum", c.input("x"), g.const("axis", c["axis"], dtype=np.int64))


# -- shapes ----------------------------------------------------------------------------------

@emits(Sorting.ArgSort)
def _argsort(g, c):
    # ONNX's TopK breaks ties by the lower index, both ways: with largest=0 and k the whole
    # axis that is ArgSort's stable ascending order; descending, ArgSort reverses it (ties
    # come higher index first), so the export reverses it too. k is read from the input's
    # shape, so sorting along the batch axis follows the batch. (NaN: ONNX does not say
    # where TopK puts it; gradlab sorts it last.)
    axis = int(c["axis"])
    x = c.input("x")
    k = g.op("Shape", x, start=axis, end=axis + 1)
    _, order = g.op_outputs("TopK", 2, x, k, axis=axis, largest=0, sorted=1)
    if c["descending"]:
        order = g.op("Slice", order, *(g.const(hint, [v], dtype=np.int64) for hint, v in (
            ("starts", -1), ("ends", INT64_MIN), ("axes", axis), ("steps", -1))))
    return order


@emits(Sorting.StableArgSortDescending)
def _stable_argsort_descending(g, c):
    # TopK with largest=1 breaks ties by the lower index too: the stable descending order
    axis = int(c["axis"])
    x = c.input("x")
    k = g.op("Shape", x, start=axis, end=axis + 1)
    return g.op_outputs("TopK", 2, x, k, axis=axis, largest=1, sorted=1)[1]


@emits(S.Reshape)
def _reshape(g, c):
    out = c.out.shape
    if c.batched("x"):
        if not out or out[0] != c.shape_of("x")[0]:
            c.refuse(f"reshaping {tuple(c.shape_of('x'))} to {tuple(out)} merges the batch "
                     "axis (dim 0) into the others; the export keeps dim 0 as a dynamic "
                     "batch axis, so keep it first (flatten from dim 1, x.reshape(len(x), "
                     "-1))")
        target = [0] + list(out[1:])  # 0 copies the input's dim: the batch stays dynamic
    else:
        target = list(out)
    return g.op("Reshape", c.input("x"), g.const("shape", target, dtype=np.int64))


@emits(S.Permute)
def _permute(g, c):
    dims = [int(d) for d in c["dims"]]
    if c.batched("x") and dims[0] != 0:
        c.refuse(f"permute{tuple(dims)} moves the batch axis (dim 0) elsewhere; the export "
                 "keeps dim 0 as the dynamic batch axis of the input and the output")
    return g.op("Transpose", c.input("x"), perm=dims)


@emits(S.Expand)
def _expand(g, c):
    target = list(c["shape"])
    if c.batched("x"):
        target[0] = 1  # broadcasting keeps the input's (dynamic) batch size
    return g.op("Expand", c.input("x"), g.const("shape", target, dtype=np.int64))


@emits(S.Cat)
def _cat(g, c):
    dtype = c.out.dtype
    return g.op("Concat", *(c.input_at(i, dtype) for i in range(len(c.args))),
                axis=int(c["axis"]))


@emits(S.Stack)
def _stack(g, c):
    dtype, axis = c.out.dtype, int(c["axis"])
    parts = [g.op("Unsqueeze", c.input_at(i, dtype), _axes(g, [axis]))
             for i in range(len(c.args))]
    return g.op("Concat", *parts, axis=axis)


@emits(S.Cast, S.IntegerCast)
def _cast(g, c):
    return g.op("Cast", c.input("x"), to=_elem(g.onnx, c.out.dtype))


@emits(S.Gather)
def _gather(g, c):
    return g.op("GatherElements", c.input("x"), c.input("index", np.int64),
                axis=int(c["axis"]))


@emits(S.Index)
def _index(g, c):
    if c["advanced"]:
        return _take(g, c)
    index = c["index"]
    items = list(index) if isinstance(index, tuple) else [index]
    ndim = c.dtype_and_ndim("x")[1]
    if Ellipsis in items:
        at = items.index(Ellipsis)
        fill = ndim - sum(1 for i in items if i is not None and i is not Ellipsis)
        items[at:at + 1] = [slice(None)] * fill
    starts, ends, axes, steps, picks, new_axes = [], [], [], [], [], []
    dim = 0  # the input's dim that the next item indexes
    kept = 0  # the result's dims so far (for the new axes of None)
    for item in items:
        if item is None:
            new_axes.append(kept)
            kept += 1
            continue
        if isinstance(item, slice):
            if item != slice(None):
                step = 1 if item.step is None else int(item.step)
                default = (0, INT64_MAX) if step > 0 else (-1, INT64_MIN)
                starts.append(default[0] if item.start is None else int(item.start))
                ends.append(default[1] if item.stop is None else int(item.stop))
                axes.append(dim)
                steps.append(step)
            kept += 1
        else:
            picks.append((dim, int(item)))
        dim += 1
    x = c.input("x")
    if axes:
        x = g.op("Slice", x, *(g.const(hint, v, dtype=np.int64) for hint, v in (
            ("starts", starts), ("ends", ends), ("axes", axes), ("steps", steps))))
    for offset, (axis, i) in enumerate(picks):  # each pick drops one axis before it
        x = g.op("Gather", x, g.const("index", i, dtype=np.int64), axis=axis - offset)
    if new_axes:
        x = g.op("Unsqueeze", x, _axes(g, new_axes))
    return x


def _take(g, c):
    """x[..., idx, ...] with one integer index array (a list, an array or a tensor) among
    full slices: ONNX's Gather along that dim, which gives NumPy's shape (the index's dims
    in place of the dim) and takes negative indices as NumPy does. Masks, several index
    arrays, and an index into the batch axis have no such form here."""
    index = c["index"]
    items = list(index) if isinstance(index, tuple) else [index]
    arrays = iter(c.args[1:])  # the tensors' arrays, in the order of their places
    ndim = c.dtype_and_ndim("x")[1]
    picked = []
    for dim, item in enumerate(items):
        if item is S.TENSOR:
            item = next(arrays)
        elif isinstance(item, list):
            item = np.asarray(item)
        if isinstance(item, slice) and item == slice(None):
            continue
        if not hasattr(item, "dtype") or item.dtype.kind not in "iu" or picked:
            picked = None
            break
        picked = [(dim, item)]
    if not picked or len(items) > ndim:
        c.refuse("indexing with a mask, with several index arrays, or with an index array "
                 "beside ints, partial slices, None or ... has no ONNX form in "
                 "gl.onnx.export; index one dim with one integer array among full slices "
                 "(x[:, idx]), or use gl.gather")
    dim, array = picked[0]
    if dim == 0 and c.batched("x"):
        c.refuse("indexing the batch axis (dim 0) with an index array picks rows of the "
                 "example's batch; the export keeps dim 0 as a dynamic batch axis")
    return g.op("Gather", c.input("x"), c.trace.value(array, np.int64), axis=dim)
