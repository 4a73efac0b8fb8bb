"""The CUDA tier of bias + ReLU: host-side launch preparation for kernels/bias_relu.cu (a
grid-stride pass each way). The bias gradient is CuPy's own column sum of the masked
gradient, the reduction an eager step runs, so that a graphed step keeps eager's bits (a sum
of our own would add in another order); a bias that no ReLU follows is CuPy's own in-place
add, as in eager. Nothing is read back, so all of them can be captured into a CUDA graph."""
from __future__ import annotations

import cupy
import numpy as np

from ... import checks
from ...cuda_kernels import get_function
from .reference import column_sums

_THREADS = 256


def bias_relu_forward(backend, y, bias):
    checks.bias_relu_forward_args(y, bias)
    with backend._cuda_device:
        if not y.flags.c_contiguous:
            y = cupy.ascontiguousarray(y)  # a new array: the caller uses the result
        bias = cupy.ascontiguousarray(bias)
        if y.size:
            fn = get_function("bias_relu", "bias_relu_forward", y.dtype, backend._index)
            fn(backend._grid(y.size, _THREADS), (_THREADS,),
               (y, bias, np.int64(y.size), np.int64(y.shape[-1])))
    return y


def bias_relu_backward(backend, grad, out):
    checks.bias_relu_backward_args(grad, out)
    with backend._cuda_device:
        grad = cupy.ascontiguousarray(grad)
        out = cupy.ascontiguousarray(out)
        grad_pre = cupy.empty_like(grad)
        if grad.size:
            fn = get_function("bias_relu", "bias_relu_backward", grad.dtype, backend._index)
            fn(backend._grid(grad.size, _THREADS), (_THREADS,),
               (grad, out, grad_pre, np.int64(grad.size)))
        return grad_pre, column_sums(grad_pre)


def bias_grad(backend, grad):
    checks.bias_grad_args(grad)
    with backend._cuda_device:
        return column_sums(grad)


def bias_add(backend, y, bias):
    # CuPy's own in-place add, the call an eager GPU step makes (LinearFn's forward)
    checks.bias_relu_forward_args(y, bias, "bias_add")
    with backend._cuda_device:
        y += bias
    return y
