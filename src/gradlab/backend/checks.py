"""Argument checks shared by the NumPy and CuPy kernel entry points, so both backends reject
the same inputs with the same exception types and messages."""
from __future__ import annotations

import math
import numbers

import numpy as np

KERNEL_DTYPES = ("float32", "float64")
# The same as dtype objects (native byte order): comparing dtypes is cheap, str(dtype) costs
# microseconds, which the small steps of a compiled replay feel.
NATIVE_KERNEL_DTYPES = tuple(np.dtype(name) for name in KERNEL_DTYPES)


def group_dtype(op, params, grads, **states):
    """Check one optimizer group and return its dtype (None for an empty group).

    params/grads/each state list: same length, same shape per index, one float dtype
    (float32 or float64), C-contiguous (the update is in place, so no copy can stand in).
    A state passed as None is an option that is off.
    """
    n = len(params)
    lists = {"grads": grads, **{k: v for k, v in states.items() if v is not None}}
    for name, arrays in lists.items():
        if len(arrays) != n:
            raise ValueError(f"{op}: {n} params but {len(arrays)} {name}")
    if n == 0:
        return None
    dtype = params[0].dtype
    if dtype not in NATIVE_KERNEL_DTYPES:
        raise TypeError(f"{op}: params must be float32 or float64, got {dtype}")
    for name, arrays in (("params", params), *lists.items()):
        for i, a in enumerate(arrays):
            if a.dtype != dtype:
                hint = "" if name in ("params", "grads") else (
                    " (the optimizer's state was made for the parameters' old dtype: create "
                    "the optimizer after converting the model with .double() or .float())")
                raise TypeError(f"{op}: {name}[{i}] has dtype {a.dtype} but params[0] has "
                                f"{dtype}; every tensor of a group must share one dtype{hint}")
            if a.shape != params[i].shape:
                raise ValueError(f"{op}: {name}[{i}] has shape {tuple(a.shape)} but params[{i}]"
                                 f" has {tuple(params[i].shape)}")
            if not a.flags.c_contiguous:
                raise ValueError(f"{op}: {name}[{i}] is not contiguous; fused optimizer steps "
                                 f"update tensors in place and need contiguous storage")
    return dtype


def check_float_array(op, name, a):
    if a.dtype not in NATIVE_KERNEL_DTYPES:
        raise TypeError(f"{op}: {name} must be float32 or float64, got {a.dtype}")


def dropout_p(p, op="dropout") -> float:
    """Dropout's probability as a float, checked: the one check of it, for nn.Dropout (at
    construction), F.dropout (eval mode too) and every backend's dropout kernels."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"{op}: p must be a number (a probability in [0, 1]), got "
                        f"{p!r} ({type(p).__name__})")
    if not 0.0 <= p <= 1.0:  # also rejects NaN
        raise ValueError(f"{op}: p must be a probability in [0, 1] (the fraction of elements "
                         f"zeroed, e.g. 0.5), got {p}")
    return float(p)


def dropout_threshold(p: float) -> int:
    """Keep element i when its 32-bit draw w >= this: u = w / 2^32 >= p  <=>  w >= ceil(p 2^32).
    Computed once on the host (p * 2^32 is exact in float64) so both backends agree bit for
    bit; 0 keeps everything, 2^32 nothing."""
    return math.ceil(p * 4294967296.0)


def dropout_scale(p: float) -> float:
    return 0.0 if p == 1.0 else 1.0 / (1.0 - p)


def philox_key_offset(key, offset, op="dropout"):
    for name, v in (("key", key), ("offset", offset)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not 0 <= v < 2**64:
            raise ValueError(f"{op} {name} must be an int in [0, 2**64), got {v!r}")
    return int(key), int(offset)


def mask_words(n: int) -> int:
    return (n + 31) // 32


def check_mask(mask, n):
    if str(mask.dtype) != "uint32" or mask.ndim != 1 or mask.shape[0] != mask_words(n):
        raise ValueError(f"dropout_backward: mask must be a uint32 vector of {mask_words(n)} "
                         f"words for {n} elements (from dropout_forward), got "
                         f"{mask.dtype} of shape {tuple(mask.shape)}")


_CE_REDUCTIONS = ("none", "sum", "mean")


def softmax_ce_args(xp, logits, target, weight, ignore_index, label_smoothing,
                    reduction="none"):
    """Validate and normalize softmax_cross_entropy's arguments: logits (N, C) float32/64
    made contiguous, target (N,) int64 contiguous, weight (C,) of the logits' dtype;
    reduction is checked, not returned."""
    op = "softmax_cross_entropy"
    if reduction not in _CE_REDUCTIONS:
        raise ValueError(f"{op}: reduction must be 'none', 'sum' or 'mean', got "
                         f"{reduction!r}")
    if logits.ndim != 2:
        raise ValueError(f"{op}: logits must be 2-D (N, C), got shape {tuple(logits.shape)}")
    check_float_array(op, "logits", logits)
    n, c = logits.shape
    if target.ndim != 1 or target.shape[0] != n:
        raise ValueError(f"{op}: target must have shape ({n},) for logits of shape "
                         f"{tuple(logits.shape)}, got {tuple(target.shape)}")
    if target.dtype.kind not in "iu":
        raise TypeError(f"{op}: target must hold integer class indices, got {target.dtype}")
    if weight is not None:
        if weight.ndim != 1 or weight.shape[0] != c:
            raise ValueError(f"{op}: weight must have shape ({c},), got {tuple(weight.shape)}")
        weight = xp.ascontiguousarray(weight, dtype=logits.dtype)
    # A plain int first: the Integral ABC's isinstance was half of this function's time.
    if type(ignore_index) is not int and (isinstance(ignore_index, bool) or
                                          not isinstance(ignore_index, numbers.Integral)):
        raise TypeError(f"{op}: ignore_index must be an int, got {ignore_index!r}")
    s = float(label_smoothing)
    if not 0.0 <= s <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be between 0.0 and 1.0, got {s}")
    logits = xp.ascontiguousarray(logits)
    target = xp.ascontiguousarray(target, dtype=xp.int64)
    return logits, target, weight, int(ignore_index), s


def bias_relu_forward_args(y, bias, op="bias_relu_forward"):
    """y (..., C) float32/64 and a bias (C,) of its dtype (bias_relu_forward and bias_add
    overwrite y)."""
    check_float_array(op, "y", y)
    if y.ndim < 1 or bias.shape != (y.shape[-1],) or bias.dtype != y.dtype:
        raise ValueError(f"{op}: bias must have shape ({y.shape[-1] if y.ndim else '?'},) "
                         f"and dtype {y.dtype} for y of shape {tuple(y.shape)}, got "
                         f"{tuple(bias.shape)} {bias.dtype}")


def bias_relu_backward_args(grad, out):
    """grad and the ReLU's output: one shape, one float32/64 dtype."""
    op = "bias_relu_backward"
    check_float_array(op, "grad", grad)
    if grad.ndim < 1 or grad.shape != out.shape or grad.dtype != out.dtype:
        raise ValueError(f"{op}: grad and out must have one shape and dtype, got "
                         f"{tuple(grad.shape)} {grad.dtype} and {tuple(out.shape)} "
                         f"{out.dtype}")


def bias_grad_args(grad):
    """The gradient of a Linear's output: (..., C) of a float dtype (any: LinearFn sums
    whatever gradient it is given; the numba tier takes float32/64 only)."""
    if grad.dtype.kind != "f":
        raise TypeError(f"bias_grad: grad must have a float dtype, got {grad.dtype}")
    if grad.ndim < 1:
        raise ValueError("bias_grad: grad must have at least one dim (the features), got a "
                         "0-d array")


def bad_target_error(value, n_classes):
    return IndexError(f"Target {int(value)} is out of bounds: class indices must be in "
                      f"[0, {n_classes}) or equal ignore_index")


def check_targets(target, ignore_index, n_classes):
    """Raise bad_target_error for the first target outside [0, n_classes) that is not
    ignore_index. min/max first: in the usual all-valid case that is the whole cost."""
    if target.size and (target.min() < 0 or target.max() >= n_classes):
        bad = (target != ignore_index) & ((target < 0) | (target >= n_classes))
        if bad.any():
            raise bad_target_error(target[bad.argmax()], n_classes)


def require_state(op, option, enabled, list_name, states):
    """An optimizer option that keeps state needs its list of buffers."""
    if enabled and states is None:
        raise ValueError(f"{op}: {option} needs {list_name} (got None)")
