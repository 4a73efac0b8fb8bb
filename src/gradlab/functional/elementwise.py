"""Elementwise ops with broadcasting: arithmetic, transcendental functions, comparisons."""
from __future__ import annotations

import numpy as np

from ..autograd.function import Function
from ..autograd.tensor import Tensor
from .out import binary, named, unary, write_out


def unbroadcast(g, shape):
    """Sum a broadcast gradient back to ``shape`` (the input's shape before broadcasting)."""
    if g.shape == shape:
        return g
    extra = g.ndim - len(shape)
    if extra > 0:
        g = g.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


def _shape(x):
    return getattr(x, "shape", ())


def _broadcast_error(op, a, b):
    return RuntimeError(f"{op}: shapes {tuple(_shape(a))} and {tuple(_shape(b))} cannot be "
                        "broadcast together (trailing dimensions must be equal or 1)")


# -- dtype promotion (PyTorch's rules, not NumPy's) ------------------------------------------
# PyTorch ranks operands: tensors with dimensions, then 0-d tensors, then Python (and NumPy)
# scalars. A lower rank only changes the result when it is of a higher category (bool < int <
# float < complex), so float32 * np.float64(2) stays float32 and int64 * 0.5 is float32
# (the default float). NumPy instead lets a float64 scalar or an int64 array widen float32 to
# float64, which doubles memory and time without anyone asking for it.
_CATEGORY = {"b": 0, "i": 1, "u": 1, "f": 2, "c": 3}
_SCALAR_DTYPES = {bool: np.dtype(np.bool_), int: np.dtype(np.int64),
                  float: np.dtype(np.float32), complex: np.dtype(np.complex64)}


def _promote_pair(x, y):
    """PyTorch's promote_types: within a category NumPy's rule; across, the higher category
    wins with its own dtype (int64 + float32 is float32, where NumPy says float64)."""
    cx, cy = _CATEGORY[x.kind], _CATEGORY[y.kind]
    if cx == cy:
        return np.promote_types(x, y)
    if cx == 3 or cy == 3:  # complex with a float keeps the float's precision
        c, other = (x, y) if cx == 3 else (y, x)
        return np.promote_types(c, other) if other.kind == "f" else c
    return x if cx > cy else y


def _combine(higher, lower):
    """A higher-ranked result, updated by a lower-ranked one only across categories."""
    if higher is None:
        return lower
    if lower is None or _CATEGORY[higher.kind] >= _CATEGORY[lower.kind]:
        return higher
    return _promote_pair(higher, lower)


def _scalar_dtype(x):
    kind = x.dtype.kind if isinstance(x, np.generic) else None
    if kind is None:
        return _SCALAR_DTYPES.get(type(x)) or _SCALAR_DTYPES.get(
            next((t for t in (bool, int, float, complex) if isinstance(x, t)), None))
    return _SCALAR_DTYPES[{"b": bool, "i": int, "u": int, "f": float, "c": complex}[kind]]


def result_type(*operands):
    """The dtype PyTorch gives an elementwise op of these raw operands (backend arrays keep
    their rank by ndim; Python and NumPy scalars rank lowest). None when nothing has one."""
    ranks = [None, None, None]  # dimensioned, 0-d, scalar
    for x in operands:
        if x is None:
            continue
        if isinstance(x, np.generic) or not hasattr(x, "dtype"):
            rank, dt = 2, _scalar_dtype(x)
            if dt is None:
                continue
        else:
            rank, dt = (0 if x.ndim else 1), x.dtype
        ranks[rank] = dt if ranks[rank] is None else _promote_pair(ranks[rank], dt)
    return _combine(ranks[0], _combine(ranks[1], ranks[2]))


def _cast_operand(x, dtype):
    """x ready for NumPy to compute in ``dtype``: arrays cast, scalars made Python scalars
    (weak under NumPy 2, so they never widen the result)."""
    if isinstance(x, np.generic):
        return x.item()
    if hasattr(x, "dtype") and x.dtype != dtype:
        return x.astype(dtype)
    return x


def _same_float(x, y):
    """True when x is a float array and y is a Python number or an array of x's dtype: the
    result dtype is then x's under both libraries' rules (Python scalars are weak)."""
    dx = getattr(x, "dtype", None)
    if dx is None or dx.kind != "f" or isinstance(x, np.generic):
        return False
    ty = y.__class__
    return ty is float or ty is int or (getattr(y, "dtype", None) == dx
                                        and not isinstance(y, np.generic))


def promote(a, b, true_divide=False):
    """(a, b) cast to their PyTorch result dtype; true division of integers gives float32."""
    # The cases of a training step, without the general ranking below (it costs microseconds
    # per recorded op, as much as the op itself on small arrays).
    if _same_float(a, b) or _same_float(b, a):
        return a, b
    dtype = result_type(a, b)
    if dtype is None:
        return a, b
    if true_divide and dtype.kind in "biu":
        dtype = np.dtype(np.float32)
    return _cast_operand(a, dtype), _cast_operand(b, dtype)


class _Binary(Function):
    """Shared forward plumbing: PyTorch's dtype promotion, the shapes, and NumPy's broadcast
    error restated."""

    op_name = "?"
    true_divide = False

    def forward(ctx, a, b):
        ctx.a_shape, ctx.b_shape = _shape(a), _shape(b)
        a, b = promote(a, b, ctx.true_divide)
        try:
            return ctx.compute(a, b)
        except ValueError as exc:
            if "broadcast" in str(exc):
                raise _broadcast_error(ctx.op_name, a, b) from None
            raise


class Add(_Binary):
    op_name = "add"

    def compute(ctx, a, b):
        return a + b

    def backward(ctx, g):
        na, nb = ctx.needs_input_grad
        return (unbroadcast(g, ctx.a_shape) if na else None,
                unbroadcast(g, ctx.b_shape) if nb else None)


class Sub(_Binary):
    op_name = "sub"

    def compute(ctx, a, b):
        return a - b

    def backward(ctx, g):
        na, nb = ctx.needs_input_grad
        return (unbroadcast(g, ctx.a_shape) if na else None,
                unbroadcast(-g, ctx.b_shape) if nb else None)


class Mul(_Binary):
    op_name = "mul"

    def compute(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    def backward(ctx, g):
        a, b = ctx.saved_tensors
        na, nb = ctx.needs_input_grad
        return (unbroadcast(g * b, ctx.a_shape) if na else None,
                unbroadcast(g * a, ctx.b_shape) if nb else None)


class Div(_Binary):
    op_name = "div"
    true_divide = True

    def compute(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a / b

    def backward(ctx, g):
        a, b = ctx.saved_tensors
        na, nb = ctx.needs_input_grad
        ga = g / b
        return (unbroadcast(ga, ctx.a_shape) if na else None,
                unbroadcast(-ga * a / b, ctx.b_shape) if nb else None)


class Pow(_Binary):
    op_name = "pow"

    def compute(ctx, a, b):
        out = ctx.xp.power(a, b)
        ctx.save_for_backward(a, b, out)
        return out

    def backward(ctx, g):
        xp = ctx.xp
        a, b, out = ctx.saved_tensors
        na, nb = ctx.needs_input_grad
        ga = gb = None
        if na:
            # d(a^0)/da = 0 everywhere (PyTorch's rule), where b * a^(b-1) would give
            # 0 * inf = NaN at a = 0 (and NaN at a = NaN)
            if b.__class__ in (int, float):
                ga = xp.zeros_like(g) if b == 0 else g * b * xp.power(a, b - 1)
            else:
                ga = xp.where(b == 0, xp.zeros((), g.dtype), g * b * xp.power(a, b - 1))
            ga = unbroadcast(ga, ctx.a_shape)
        if nb:
            # d(a^b)/db = a^b log a; defined as 0 where a == 0 (the limit for b > 0).
            # (in out's dtype: for a Python number a, where() gives a float64 0-d array,
            # which would make the gradient float64)
            log_a = xp.log(xp.where(a == 0, 1, a)).astype(out.dtype, copy=False)
            gb = unbroadcast(g * out * log_a, ctx.b_shape)
        return ga, gb


def _refuse_integer_zero(ctx, a, b):
    """PyTorch's error for an integer floor division or remainder by 0, where NumPy gives 0
    (floats keep their inf and nan). Only integer operands pay for the check."""
    dtype = a.dtype if hasattr(a, "dtype") else b.dtype
    if dtype.kind not in "iu":
        return
    op = ctx.op_name

    def error(first=None):
        at = "" if first is None else f" (element {first} of the divisor)"
        return RuntimeError(f"ZeroDivisionError: {op} of {dtype} tensors by 0{at}, which "
                            "PyTorch refuses too; convert to a floating-point dtype first "
                            "(.float()) for inf or nan there")
    if not hasattr(b, "dtype"):
        if b == 0:
            raise error()
        return
    ctx.backend.check(b == 0, error)


class Remainder(_Binary):
    """a mod b with the sign of b (Python's %, PyTorch's remainder); d/da = 1,
    d/db = -floor(a / b). Integers by 0 raise, as PyTorch."""
    op_name = "remainder"

    def compute(ctx, a, b):
        _refuse_integer_zero(ctx, a, b)
        ctx.save_for_backward(a, b)
        return ctx.xp.remainder(a, b)

    def backward(ctx, g):
        a, b = ctx.saved_tensors
        na, nb = ctx.needs_input_grad
        return (unbroadcast(g, ctx.a_shape) if na else None,
                unbroadcast(-g * ctx.xp.floor_divide(a, b), ctx.b_shape) if nb else None)


class FloorDivide(_Binary):
    """floor(a / b) (Python's //), no gradient (as in PyTorch). Integers by 0 raise, as
    PyTorch."""
    op_name = "floor_divide"
    differentiable = False

    def compute(ctx, a, b):
        _refuse_integer_zero(ctx, a, b)
        return ctx.xp.floor_divide(a, b)


class _Pick(_Binary):
    """max/min of two: the gradient goes to the winning input, split in half on ties (as
    PyTorch)."""

    wins = None  # the array comparison that says where ``a`` wins

    def compute(ctx, a, b):
        ctx.save_for_backward(a, b)
        return getattr(ctx.xp, ctx.op_name)(a, b)

    def backward(ctx, g):
        a, b = ctx.saved_tensors
        # 0, 1/2 or 1, in g's dtype (bools and 0.5 alone make float64)
        share_a = (getattr(ctx.xp, ctx.wins)(a, b) + 0.5 * (a == b)).astype(g.dtype,
                                                                            copy=False)
        na, nb = ctx.needs_input_grad
        return (unbroadcast(g * share_a, ctx.a_shape) if na else None,
                unbroadcast(g * (1 - share_a), ctx.b_shape) if nb else None)


class Maximum(_Pick):
    op_name, wins = "maximum", "greater"


class Minimum(_Pick):
    op_name, wins = "minimum", "less"


class Neg(Function):
    def forward(ctx, x):
        return -x

    def backward(ctx, g):
        return -g


class _Pointwise(Function):
    """y = f(x) for the one-input ops of the table below: forward saves the one array the
    derivative reads (x, or y where it is cheaper from the output), backward applies
    ``grad(xp, g, saved)``."""

    ufunc = None
    grad = None
    from_output = False

    def forward(ctx, x):
        y = getattr(ctx.xp, ctx.ufunc)(x)
        ctx.save_for_backward(y if ctx.from_output else x)
        return y

    def backward(ctx, g):
        saved, = ctx.saved_tensors
        return ctx.grad(ctx.xp, g, saved)


def _pointwise(name, ufunc, grad, from_output=False):
    return type(name, (_Pointwise,), {"__module__": __name__, "__qualname__": name,
                                      "ufunc": ufunc, "grad": staticmethod(grad),
                                      "from_output": from_output})


# name, the array function, and the gradient from (xp, g, the saved x or y)
Exp = _pointwise("Exp", "exp", lambda xp, g, y: g * y, from_output=True)
Log = _pointwise("Log", "log", lambda xp, g, x: g / x)
Sqrt = _pointwise("Sqrt", "sqrt", lambda xp, g, y: g / (2 * y), from_output=True)
Abs = _pointwise("Abs", "abs", lambda xp, g, x: g * xp.sign(x))
Sin = _pointwise("Sin", "sin", lambda xp, g, x: g * xp.cos(x))
Cos = _pointwise("Cos", "cos", lambda xp, g, x: -g * xp.sin(x))
Log1p = _pointwise("Log1p", "log1p", lambda xp, g, x: g / (1 + x))
Expm1 = _pointwise("Expm1", "expm1", lambda xp, g, y: g * (y + 1), from_output=True)


class Clamp(Function):
    """x limited to [min, max] (numbers, or None for no bound); d/dx = 1 where
    min <= x <= max, else 0."""

    def forward(ctx, x, min=None, max=None):
        if min is None and max is None:
            raise ValueError("clamp: give at least one of min and max")
        ctx.save_for_backward(x)
        ctx.bounds = (min, max)
        return ctx.xp.clip(x, min, max)

    def backward(ctx, g):
        x, = ctx.saved_tensors
        lo, hi = ctx.bounds
        inside = True
        if lo is not None:
            inside = x >= lo
        if hi is not None:
            inside = inside & (x <= hi) if lo is not None else x <= hi
        return g * inside


class ClampTensor(Function):
    """``clamp`` with a tensor bound: minimum(maximum(x, lo), hi), a bound that is None left
    out, with PyTorch's gradients (not those of maximum and minimum, which split ties):
    x's passes where lo <= x <= hi; lo's where x < lo < hi; hi's where x > hi or hi < lo
    (the bound the output is). NaN in x passes to none of them."""

    def forward(ctx, x, lo, hi):
        ctx.shapes = tuple(_shape(v) for v in (x, lo, hi))
        dtype = result_type(x, lo, hi)
        x, lo, hi = (_cast_operand(v, dtype) for v in (x, lo, hi))
        xp = ctx.xp
        try:
            out = x if lo is None else xp.maximum(x, lo)
            out = out if hi is None else xp.minimum(out, hi)
        except ValueError:
            raise RuntimeError(f"clamp: input {tuple(_shape(x))}, min {tuple(_shape(lo))} and "
                               f"max {tuple(_shape(hi))} cannot be broadcast together "
                               "(trailing dimensions must be equal or 1)") from None
        ctx.save_for_backward(x, lo, hi)
        return out

    def backward(ctx, g):
        xp = ctx.xp
        x, lo, hi = ctx.saved_tensors
        nx, nlo, nhi = ctx.needs_input_grad
        zero = xp.zeros((), dtype=g.dtype)

        def passed(where, shape):
            return unbroadcast(xp.where(where, g, zero), shape)
        gx = glo = ghi = None
        if nx:
            if lo is None:
                gx = passed(x <= hi, ctx.shapes[0])
            elif hi is None:
                gx = passed(x >= lo, ctx.shapes[0])
            else:
                gx = passed((x >= lo) & (x <= hi), ctx.shapes[0])
        if nlo:  # (lo is a tensor)
            glo = passed(x < lo if hi is None else (x < lo) & (lo < hi), ctx.shapes[1])
        if nhi:
            ghi = passed(x > hi if lo is None else (x > hi) | (hi < lo), ctx.shapes[2])
        return gx, glo, ghi


class Where(Function):
    def forward(ctx, cond, a, b):
        ctx.save_for_backward(cond)
        ctx.a_shape, ctx.b_shape = _shape(a), _shape(b)
        a, b = promote(a, b)
        try:
            return ctx.xp.where(cond, a, b)
        except ValueError as exc:
            raise RuntimeError(f"where: condition {tuple(_shape(cond))}, input "
                               f"{tuple(_shape(a))} and other {tuple(_shape(b))} cannot be "
                               "broadcast together") from exc

    def backward(ctx, g):
        cond, = ctx.saved_tensors
        _, na, nb = ctx.needs_input_grad
        zero = ctx.xp.zeros((), dtype=g.dtype)
        return (None,
                unbroadcast(ctx.xp.where(cond, g, zero), ctx.a_shape) if na else None,
                unbroadcast(ctx.xp.where(cond, zero, g), ctx.b_shape) if nb else None)


# -- the operators' graph-free fast path ------------------------------------------------------
# It lives with Tensor (autograd/tensor.py, _arithmetic), whose operators it is; the functional
# forms below call it too. Its general path is Add/Sub/Mul/Div.apply.
_add, _sub, _mul, _div = Tensor.__add__, Tensor.__sub__, Tensor.__mul__, Tensor.__truediv__


# -- functional wrappers ---------------------------------------------------------------------
# (The operators are _add, _sub, _mul, _div; these add PyTorch's keywords.)
def add(input, other, *, alpha=1, out=None):
    """input + alpha * other, broadcast (PyTorch's type promotion)."""
    if out is not None:
        return write_out("add", out, (input, other), lambda: add(input, other, alpha=alpha))
    return _add(input, other) if alpha == 1 else Add.apply(input, _mul(other, alpha))


def sub(input, other, *, alpha=1, out=None):
    """input - alpha * other, broadcast."""
    if out is not None:
        return write_out("sub", out, (input, other), lambda: sub(input, other, alpha=alpha))
    return _sub(input, other) if alpha == 1 else Sub.apply(input, _mul(other, alpha))


def mul(input, other, *, out=None):
    """input * other, broadcast."""
    if out is not None:
        return write_out("mul", out, (input, other), lambda: _mul(input, other))
    return _mul(input, other)


def div(input, other, *, out=None):
    """input / other, broadcast; true division (integers give float32)."""
    if out is not None:
        return write_out("div", out, (input, other), lambda: _div(input, other))
    return _div(input, other)


def pow(input, exponent, *, out=None):
    """input ** exponent, broadcast; d/d(exponent) is 0 where input == 0."""
    if out is not None:
        return write_out("pow", out, (input, exponent), lambda: Pow.apply(input, exponent))
    return Pow.apply(input, exponent)


neg = unary("neg", Neg, "-x.", with_out=True)
# The float functions take integer and bool tensors as float32 (``floating``), as PyTorch.
exp = unary("exp", Exp, "e^x; d/dx = e^x.", with_out=True, floating=True)
log = unary("log", Log, "Natural logarithm; d/dx = 1 / x.", with_out=True, floating=True)
sqrt = unary("sqrt", Sqrt, "x^(1/2); d/dx = 1 / (2 sqrt(x)).", with_out=True, floating=True)
abs = unary("abs", Abs, "|x|; d/dx = sign(x) (0 at 0).", with_out=True)
sin = unary("sin", Sin, "sin(x); d/dx = cos(x).", with_out=True, floating=True)
cos = unary("cos", Cos, "cos(x); d/dx = -sin(x).", with_out=True, floating=True)
log1p = unary("log1p", Log1p, "log(1 + x), accurate for small x; d/dx = 1 / (1 + x).",
              with_out=True, floating=True)
expm1 = unary("expm1", Expm1, "e^x - 1, accurate for small x; d/dx = e^x.", with_out=True,
              floating=True)


def square(input):
    """x * x."""
    return _mul(input, input)


def reciprocal(input):
    """1 / x (integers give float32, as true division)."""
    return Tensor.__rtruediv__(input, 1.0)


def rsqrt(input):
    """1 / sqrt(x)."""
    return Tensor.__rtruediv__(sqrt(input), 1.0)


def clamp(input, min=None, max=None, *, out=None):
    """Limit values to [min, max]; min/max may be numbers or tensors. The result's dtype is
    PyTorch's promotion of the three (an integer tensor with min=2.5 gives float32); the
    gradient passes to x where min <= x <= max, and to a tensor bound where the output is
    that bound (``ClampTensor``)."""
    if out is not None:
        return write_out("clamp", out, (input, min, max), lambda: clamp(input, min, max))
    if isinstance(min, Tensor) or isinstance(max, Tensor):
        return ClampTensor.apply(input, min, max)
    if isinstance(input, Tensor) and input._data.dtype.kind not in "fc":
        dtype = result_type(input._data, min, max)
        if dtype is not None and dtype != input._data.dtype:
            input = input.to(dtype)
    # (a NumPy scalar bound as a Python number: NumPy would let a float64 one widen x)
    min, max = (v.item() if isinstance(v, np.generic) else v for v in (min, max))
    return Clamp.apply(input, min=min, max=max)


clip = clamp


remainder = binary("remainder", Remainder, "a mod b, with the sign of b (``a % b``).")
floor_divide = binary("floor_divide", FloorDivide, "floor(a / b) (``a // b``); no gradient.")
maximum = binary("maximum", Maximum, "The elementwise larger of the two (ties split the "
                                     "gradient in half).")
minimum = binary("minimum", Minimum, "The elementwise smaller of the two (ties split the "
                                     "gradient in half).")


def where(condition, input, other, *, out=None):
    """Elements of ``input`` where ``condition`` holds, else of ``other`` (no grad for the
    condition)."""
    if out is not None:
        return write_out("where", out, (input, other),
                         lambda: Where.apply(condition, input, other))
    return Where.apply(condition, input, other)


# -- comparisons and predicates: no gradient --------------------------------------------------
class Compare(Function):
    """``ufunc(a, b)`` for one of NumPy's comparison, logical or bitwise ufuncs (a bool
    result, or integers for bitwise ops on integers); no gradient."""
    differentiable = False

    def forward(ctx, a, b, ufunc):
        return getattr(ctx.xp, ufunc)(a, b)


class Predicate(Function):
    """``ufunc(x)`` (isnan, sign, floor, ...), no gradient."""
    differentiable = False

    def forward(ctx, x, ufunc):
        return getattr(ctx.xp, ufunc)(x)


def _compare(name, ufunc_name):
    def compare(input, other):
        if isinstance(input, Tensor) and isinstance(other, Tensor) and \
                input._backend is not other._backend:
            raise RuntimeError(f"{name}: expected both tensors on one device, but found "
                               f"{input.device} and {other.device}")
        try:
            return Compare.apply(input, other, ufunc=ufunc_name)
        except ValueError:
            a = input._data if isinstance(input, Tensor) else input
            b = other._data if isinstance(other, Tensor) else other
            raise _broadcast_error(name, a, b) from None
    return named(compare, name, __name__,
                 f"Elementwise ``{ufunc_name}`` as a bool tensor (no gradient).")


eq, ne, lt, le, gt, ge = (_compare(name, ufunc) for name, ufunc in (
    ("eq", "equal"), ("ne", "not_equal"), ("lt", "less"), ("le", "less_equal"),
    ("gt", "greater"), ("ge", "greater_equal")))


class Close(Function):
    """|a - b| <= atol + rtol |b| elementwise (NumPy's and PyTorch's isclose); no gradient."""
    differentiable = False

    def forward(ctx, a, b, rtol, atol, equal_nan):
        return ctx.xp.isclose(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan)


def isclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    """Where ``input`` and ``other`` agree to |a - b| <= atol + rtol |b|, as a bool tensor."""
    if isinstance(input, Tensor) and isinstance(other, Tensor) and \
            input._backend is not other._backend:
        raise RuntimeError(f"isclose: expected both tensors on one device, but found "
                           f"{input.device} and {other.device}")
    return Close.apply(input, other, rtol=rtol, atol=atol, equal_nan=equal_nan)


def allclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    """True when every element is close (``isclose``): a Python bool."""
    return bool(isclose(input, other, rtol, atol, equal_nan).all())


def equal(input, other):
    """True when both have the same shape and elements: a Python bool."""
    return tuple(input.shape) == tuple(other.shape) and bool((input == other).all())


logical_and, logical_or, logical_xor = (_compare(name, name) for name in (
    "logical_and", "logical_or", "logical_xor"))


def _bitwise(name, symbol):
    compare = _compare(name, name)

    def bitwise(input, other):
        """PyTorch's bitwise op: logical on bool tensors (masks), bitwise on integers."""
        for v in (input, other):
            dtype = v.dtype if hasattr(v, "dtype") else np.result_type(v)
            if np.dtype(dtype).kind not in "biu":
                raise TypeError(f"{name} ({symbol}): needs bool or integer tensors, got "
                                f"{dtype}; for a mask, compare first: (x > 0) {symbol} "
                                f"(y < 1)")
        return compare(input, other)
    return named(bitwise, name, __name__,
                 f"``{symbol}``: elementwise ``{name}`` of bool or integer tensors (no "
                 f"gradient).")


bitwise_and, bitwise_or, bitwise_xor = (_bitwise(name, symbol) for name, symbol in (
    ("bitwise_and", "&"), ("bitwise_or", "|"), ("bitwise_xor", "^")))


def _predicate(name):
    def predicate(input):
        return Predicate.apply(input, ufunc=name)
    return named(predicate, name, __name__,
                 f"Elementwise ``{name}`` as a new tensor (no gradient).")


isnan, isinf, isfinite, sign, floor, ceil, round, logical_not = (_predicate(name) for name in (
    "isnan", "isinf", "isfinite", "sign", "floor", "ceil", "round", "logical_not"))


def bitwise_not(input):
    """``~``: the logical NOT of a bool tensor (a mask), the bitwise NOT of an integer one
    (``~1 == -2``), as in PyTorch; no gradient."""
    kind = input._data.dtype.kind
    if kind == "b":
        return logical_not(input)  # (the same bits as invert; ONNX's Not exports it)
    if kind not in "iu":
        raise TypeError(f"bitwise_not (~): needs a bool or integer tensor, got {input.dtype}; "
                        "for a mask, compare first: ~(x > 0), or use gl.logical_not(x)")
    return Predicate.apply(input, ufunc="invert")
