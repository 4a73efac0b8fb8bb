"""The NumPy tier of bias + ReLU, and the oracle of the other tiers: the very calls that an
eager LinearFn then Relu make (functional/matmul.py, functional/activation.py), so a replay
that uses them gives eager's bits."""
from __future__ import annotations

import numpy as np

from ... import checks


def bias_relu_forward(y, bias):
    checks.bias_relu_forward_args(y, bias)
    y += bias
    np.maximum(y, 0, out=y)
    return y


def bias_relu_backward(grad, out):
    checks.bias_relu_backward_args(grad, out)
    grad_pre = grad * (out > 0)
    return grad_pre, column_sums(grad_pre)


def column_sums(a):
    """The sums over every dim but the last, as LinearFn sums its bias gradient (the CUDA
    tier's too: CuPy's reduction is what an eager GPU step runs)."""
    return a.reshape(-1, a.shape[-1]).sum(axis=0)
