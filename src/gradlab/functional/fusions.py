"""What a compiled step's replay runs in place of some recorded ops' own calls
(autograd/tape.py: register_fusion, register_prepared), each giving those ops' bits.

While a step runs eagerly, each op is its own Function and each backend kernel is chosen
from its op table at the call. A replay knows the whole recorded pass and its arrays:

- Fused pairs. Where one node's output is read by the next node only, the two may run as
  one call. Each fusion computes with the ops' own helpers and a backend kernel that gives
  their formulas' bits, and leaves both nodes' saved arrays as their own forwards would (a
  backward that is not fused reads them).
  - Linear then ReLU: the bias and the ReLU in one pass over the GEMM's output (in place:
    nothing else reads the output before the ReLU), and backward the ReLU's mask and the
    bias's gradient in one pass (Backend.prepare_bias_relu).
  - BatchNorm then ReLU: the normalization op with its ReLU (Backend.normalize_forward's
    ``relu``): the ReLU ends the op's last pass forward, and backward each of its passes
    masks the gradient first (``relu_out``); both ops prepared for the node's arrays at the
    first replay (Backend.prepare_normalize_forward / _backward).
- Prepared calls. A node whose forward is a backend kernel runs it through the kernel
  prepared for the recorded arrays (FusedOp.prepare): the table's choice and the argument
  checks are made once, and each call only checks that its arrays are still like those.
  - Softmax cross-entropy (Backend.prepare_softmax_cross_entropy).
  - Backward, a Linear's bias gradient where no ReLU follows it (Backend.prepare_bias_grad).
  - BatchNorm where no ReLU follows it, both ways (Backend.prepare_normalize_forward /
    _backward, as in BatchNormRelu).

On the course's MLPs the dispatch around these kernels was a large part of a replayed
step (the figures: benchmarks/results/cpu-2core-compiled-2026-12-03*).
"""
from __future__ import annotations

import functools

import numpy as np

from ..autograd.tape import register_fusion, register_prepared, register_prepared_backward
from ..backend import checks
from .activation import Relu
from .loss import SoftmaxCrossEntropy, cross_entropy_forward
from .matmul import LinearFn, linear_input_grads, linear_product
from .normalization import BatchNorm


class LinearRelu:
    first, second = LinearFn, Relu

    @staticmethod
    def fits(linear, relu, x, weight, bias=None):
        # native float32/64 only: the kernels' dtypes, and the GEMM's output is native
        return bias is not None and x.dtype in checks.NATIVE_KERNEL_DTYPES and \
            weight.ndim == 2 and bias.shape == (weight.shape[0],) and bias.dtype == x.dtype

    @staticmethod
    def prepare(linear, relu, x, weight, bias):
        # an array like every step's pre-activation (the GEMM's output: C order)
        bias_relu_forward, bias_relu_backward = linear.backend.prepare_bias_relu(
            linear.xp.empty(x.shape[:-1] + (weight.shape[0],), dtype=x.dtype), bias)

        def forward(linear, relu, x, weight, bias):
            out = bias_relu_forward(linear_product(linear, x, weight), bias)
            relu.saved_tensors = (out,)  # (save_for_backward's work, one call less)
            return out

        def backward(linear, relu, grad):
            out, = relu.saved_tensors
            grad_pre, grad_bias = bias_relu_backward(grad, out)
            grad_x, grad_weight = linear_input_grads(linear, grad_pre)
            return grad_x, grad_weight, grad_bias if linear.needs_input_grad[2] else None
        return forward, backward


register_fusion(LinearRelu)


class BatchNormRelu:
    first, second = BatchNorm, Relu

    @staticmethod
    def fits(norm, relu, *args, **kwargs):
        return True  # every tier of the op takes the ReLU wherever it takes the rest

    @staticmethod
    def prepare(norm, relu, *args, **kwargs):
        prepared = {}  # the normalization op, prepared at the first replay (_Normalize)

        def forward(norm, relu, *args, **kwargs):
            out = norm.normalize(*args, **kwargs, relu=True, prepared=prepared)
            relu.saved_tensors = (out,)  # (save_for_backward's work)
            return out

        def backward(norm, relu, grad):
            out, = relu.saved_tensors
            return norm.input_grads(grad, relu_out=out, prepared=prepared)
        return forward, backward


register_fusion(BatchNormRelu)


def _prepare_cross_entropy(ctx, logits, target, weight, ignore_index, label_smoothing,
                           reduction):
    kernel = ctx.backend.prepare_softmax_cross_entropy(
        logits, target.astype(np.int64, copy=False), weight, ignore_index, label_smoothing,
        reduction)
    return functools.partial(cross_entropy_forward, kernel)


register_prepared(SoftmaxCrossEntropy, _prepare_cross_entropy)


def _prepare_linear(ctx, x, weight, bias=None):
    # A Linear with a bias that no ReLU follows (the classifier's last layer, one before a
    # BatchNorm): LinearFn's product, then its in-place bias add through the prepared
    # kernel, where the numba tier has one; LinearFn's own forward elsewhere. (Its argument
    # checks passed while recording, on these very arrays: a replay's input slots keep the
    # recorded shapes and dtypes, its weight and bias are the recorded ones.)
    if bias is None or x.ndim != 2 or x.dtype not in checks.NATIVE_KERNEL_DTYPES:
        return LinearFn.forward
    add = ctx.backend.prepare_bias_add(ctx.xp.empty((x.shape[0], weight.shape[0]), x.dtype),
                                       bias)
    if add is None:
        return LinearFn.forward

    def forward(ctx, x, weight, bias):
        return add(linear_product(ctx, x, weight), bias)
    return forward


register_prepared(LinearFn, _prepare_linear)


def _prepare_linear_backward(ctx, out):
    # A Linear with a bias that no ReLU follows (the classifier's last layer, one before a
    # BatchNorm): its bias gradient through the prepared column sums (Backend.bias_grad:
    # LinearFn's sum, in NumPy's order), where the numba tier has them; LinearFn's own
    # backward elsewhere.
    needs = ctx.needs_input_grad
    if len(needs) < 3 or not needs[2] or out.dtype not in checks.NATIVE_KERNEL_DTYPES:
        return None
    bias_grad = ctx.backend.prepare_bias_grad(out.reshape(-1, out.shape[-1]))
    if bias_grad is None:
        return None

    def backward(ctx, g):
        gx, gw = linear_input_grads(ctx, g)
        return gx, gw, bias_grad(g.reshape(-1, g.shape[-1]) if g.ndim != 2 else g)
    return backward


register_prepared_backward(LinearFn, _prepare_linear_backward)


# A BatchNorm that no ReLU follows (another activation, a dropout, the model's end): its
# normalization op prepared at the node's first replay, each way, as in BatchNormRelu.
def _prepare_batch_norm(ctx, *args, **kwargs):
    prepared = {}

    def forward(ctx, *args, **kwargs):
        return ctx.normalize(*args, **kwargs, prepared=prepared)
    return forward


def _prepare_batch_norm_backward(ctx, out):
    prepared = {}

    def backward(ctx, g):
        return ctx.input_grads(g, prepared=prepared)
    return backward


register_prepared(BatchNorm, _prepare_batch_norm)
register_prepared_backward(BatchNorm, _prepare_batch_norm_backward)
