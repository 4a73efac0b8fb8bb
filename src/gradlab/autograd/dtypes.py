"""Public dtypes. They are NumPy dtype objects, which CuPy uses too."""
from __future__ import annotations

import builtins

import numpy as np

float16 = half = np.dtype(np.float16)
float32 = np.dtype(np.float32)
float64 = double = np.dtype(np.float64)
int8 = np.dtype(np.int8)
uint8 = np.dtype(np.uint8)
int16 = short = np.dtype(np.int16)
int32 = np.dtype(np.int32)
int64 = long = np.dtype(np.int64)
bool_ = np.dtype(np.bool_)

default_float = float32


def get_default_dtype():
    """The dtype of Python floats and of the float factories: float32."""
    return default_float


def set_default_dtype(dtype):
    """Only float32 is accepted: gradlab's default float dtype is fixed (its kernels and
    promotion rules assume it). Ask for float64 per tensor or per model instead."""
    if as_dtype(dtype) != default_float:
        raise TypeError(f"gl.set_default_dtype({dtype}): gradlab's default float dtype is "
                        f"fixed to float32; pass dtype=gl.float64 to the factories, or call "
                        f"model.double() / t.double()")

_BY_NAME = {"float16": float16, "half": float16, "float32": float32, "float": float32,
            "float64": float64, "double": float64, "int8": int8, "uint8": uint8,
            "int16": int16, "int32": int32, "int": int32, "int64": int64, "long": int64,
            "bool": bool_}


def as_dtype(dtype):
    """Normalize gl.float32, np.float32, 'float32', or the Python types float/int/bool.

    The Python types map as in PyTorch: float -> float32, int -> int64, bool -> bool.
    """
    if dtype is None or isinstance(dtype, np.dtype):
        return dtype
    if dtype is builtins.float:
        return float32
    if dtype is builtins.int:
        return int64
    if dtype is builtins.bool:
        return bool_
    if isinstance(dtype, str) and dtype in _BY_NAME:
        return _BY_NAME[dtype]
    try:
        return np.dtype(dtype)
    except TypeError:
        raise TypeError(f"not a dtype: {dtype!r}; use e.g. gl.float32 or gl.int64") from None
