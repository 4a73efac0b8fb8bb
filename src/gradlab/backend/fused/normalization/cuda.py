"""The CUDA tier of normalization: the reference's formulas run with CuPy (the calls an eager
GPU step made before this op existed; no kernel of our own yet). Nothing is read back, so a
CUDA graph can capture them."""
from __future__ import annotations

import cupy

from . import reference


def normalize_forward(backend, x, weight, bias, mean, var, eps, axes, pshape,
                      running_mean=None, running_var=None, momentum=0.0, relu=False):
    with backend._cuda_device:
        return reference.normalize_forward(x, weight, bias, mean, var, eps, axes, pshape,
                                           running_mean, running_var, momentum, relu, xp=cupy)


def normalize_backward(backend, grad, xhat, invstd, weight, axes, pshape, batch_stats,
                       needs_input, needs_weight, needs_bias, relu_out=None):
    with backend._cuda_device:
        return reference.normalize_backward(grad, xhat, invstd, weight, axes, pshape,
                                            batch_stats, needs_input, needs_weight, needs_bias,
                                            relu_out)
