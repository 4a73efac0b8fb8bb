"""A Linear layer's bias and the ReLU after it, fused: the forward epilogue of the layer's
GEMM and the backward prologue of its two gradient GEMMs, each in one pass.

    bias_relu_forward(y, bias)   -> y, overwritten with max(y + bias, 0)
    bias_relu_backward(grad, out) -> (grad * (out > 0), its column sums)
    bias_grad(grad)              -> the column sums of grad: the gradient of a Linear's bias
                                    where no ReLU follows (LinearFn's backward)
    bias_add(y, bias)            -> y, overwritten with y + bias: a Linear's bias where no
                                    ReLU follows (LinearFn's forward)

Unfused, these are four NumPy calls forward and four backward, each a pass over the whole
(N, C) activation; on the course's MLPs the calls cost more than their arithmetic. A
compiled step (autograd/tape.py, functional/fusions.py) replays a Linear followed by a ReLU
with them, in place of the two recorded nodes.

Tiers: reference.py (eager's own calls), numba_cpu.py and cuda.py (host side of
kernels/bias_relu.cu; bias_add and bias_grad are CuPy's own calls there). All three give
the reference's bits: the same float32/64 additions and products, and the column sums in
the order eager sums them. The numba tier sums row by row from +0.0 and row 0, NumPy's
order for an (N, C >= 2) C-contiguous array; for a single column NumPy sums pairwise, so
the numba tier leaves those to the reference. The CUDA tier leaves the sums to CuPy's
reduction, as eager on a GPU does (tests/backend/fused).
"""
from .. import FusedOp

_PKG = __name__


def _on_numba_forward(y, bias):
    return _plain_2d(y) and bias.ndim == 1 and bias.flags.c_contiguous and \
        bias.dtype == y.dtype


def _on_numba_backward(grad, out):
    return _plain_2d(grad) and _plain_2d(out) and grad.shape == out.shape and \
        grad.dtype == out.dtype and grad.shape[1] >= 2


def _plain_2d(a):
    return getattr(a, "ndim", 0) == 2 and a.dtype.kind == "f" and a.dtype.itemsize in (4, 8) \
        and a.flags.c_contiguous


def _on_numba_bias_grad(grad):
    return _plain_2d(grad) and grad.shape[1] >= 2


bias_relu_forward = FusedOp("bias_relu_forward", _PKG, use_numba=_on_numba_forward)
bias_relu_backward = FusedOp("bias_relu_backward", _PKG, use_numba=_on_numba_backward)
bias_grad = FusedOp("bias_grad", _PKG, use_numba=_on_numba_bias_grad)
bias_add = FusedOp("bias_add", _PKG, use_numba=_on_numba_forward)

OPS = {op.name: op for op in (bias_relu_forward, bias_relu_backward, bias_grad, bias_add)}
