"""The NumPy tier of bias + ReLU, and the oracle of the other tiers: the very calls that an
eager LinearFn then Relu make (functional/matmul.py, functional/activation.py), so a replay
that uses them gives eager's bits."""
from __future__ import annotations

import numpy as np

from ... import checks


def bias_relu_forward(y, bias):
    checks.bias_relu_forward_args(y, bias)
    y += bias
    return relu(y, out=y)


def bias_relu_backward(grad, out):
    checks.bias_relu_backward_args(grad, out)
    grad_pre = relu_grad(grad, out)
    return grad_pre, column_sums(grad_pre)


def bias_grad(grad):
    checks.bias_grad_args(grad)
    return column_sums(grad)


def bias_add(y, bias):
    checks.bias_relu_forward_args(y, bias, "bias_add")
    y += bias
    return y


# The ReLU's two formulas as the Relu Function computes them (functional/activation.py),
# for every reference tier that ends in a ReLU (this one, normalization's); xp is the
# arrays' module.
def relu(y, out=None, xp=np):
    """max(y, 0): NaN stays NaN, -0.0 becomes +0.0."""
    return xp.maximum(y, 0, out=out)


def relu_grad(grad, out):
    """The gradient before a ReLU whose output is ``out``: grad * (out > 0)."""
    return grad * (out > 0)


def column_sums(a):
    """The sums over every dim but the last, as LinearFn sums its bias gradient (the CUDA
    tier's too: CuPy's reduction is what an eager GPU step runs)."""
    return a.reshape(-1, a.shape[-1]).sum(axis=0)
