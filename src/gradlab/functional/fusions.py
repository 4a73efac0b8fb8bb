"""Pairs of ops that a compiled step replays as one (autograd/tape.py: register_fusion).

While a step runs eagerly, each op is its own Function; a replay knows the whole recorded
pass, so where one node's output is read by the next node only, it may run the two as one
call, on one condition: the same bits as the two nodes. Each fusion computes with the ops'
own helpers and a backend kernel that gives their formulas' bits, and leaves both nodes'
saved arrays as their own forwards would (a backward that is not fused reads them).

- Linear then ReLU: the bias and the ReLU in one pass over the GEMM's output (in place:
  nothing else reads the output before the ReLU), and backward the ReLU's mask and the
  bias's gradient in one pass (backend.bias_relu_forward / bias_relu_backward).
"""
from __future__ import annotations

import numpy as np

from ..autograd.tape import register_fusion
from .activation import Relu
from .matmul import LinearFn, linear_input_grads, linear_product

_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class LinearRelu:
    first, second = LinearFn, Relu

    @staticmethod
    def fits(linear, relu, x, weight, bias=None):
        return bias is not None and x.dtype in _KERNEL_DTYPES and weight.ndim == 2 and \
            bias.shape == (weight.shape[0],) and bias.dtype == x.dtype

    @staticmethod
    def forward(linear, relu, x, weight, bias):
        out = linear.backend.bias_relu_forward(linear_product(linear, x, weight), bias)
        relu.save_for_backward(out)
        return out

    @staticmethod
    def backward(linear, relu, grad):
        out, = relu.saved_tensors
        grad_pre, grad_bias = linear.backend.bias_relu_backward(grad, out)
        grad_x, grad_weight = linear_input_grads(linear, grad_pre)
        return grad_x, grad_weight, grad_bias if linear.needs_input_grad[2] else None


register_fusion(LinearRelu)
