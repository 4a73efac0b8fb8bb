"""Normalization over some axes with a learned affine map (BatchNorm, LayerNorm), forward
and backward, each as one op:

    normalize_forward(x, weight, bias, mean, var, eps, axes, pshape, running_mean=None,
                      running_var=None, momentum=0.0, relu=False)  -> (y, xhat, invstd)
    normalize_backward(grad, xhat, invstd, weight, axes, pshape, batch_stats, needs_input,
                       needs_weight, needs_bias, relu_out=None)    -> (dx, dw, db)

(``relu``: y through a ReLU, and backward the gradient of that output: a compiled step's
replay runs BatchNorm then ReLU so, functional/fusions.py.)

Written as array calls (reference.py), a BatchNorm layer is some twenty NumPy calls forward
and a dozen backward, each a pass over the (N, C) activation or a call on a C-vector; on
the course's MLPs (64 x 128) the calls cost several times their arithmetic, and BatchNorm was
most of a training step.

Tiers: reference.py (the formulas, for NumPy and CuPy), numba_cpu.py (BatchNorm's case: an
(N, C >= 2) C-contiguous input normalized over its rows, three passes forward and two
backward) and cuda.py (the reference on CuPy). The numba tier gives the reference's bits: the
same float32/64 operations in the same order, its column sums row by row from +0.0 as NumPy
sums an (N, C >= 2) array over axis 0, and its means divided as np.mean divides (in float64,
rounded once); a single column NumPy sums pairwise, so that case stays on the reference.
Scalars that NumPy would not treat as weak Python numbers (a NumPy float64 eps, say) and
statistics of another dtype than x stay on the reference too (tests/backend/fused).
"""
from ...checks import NATIVE_KERNEL_DTYPES
from .. import FusedOp

_PKG = __name__

_NUMBERS = (int, float)  # not bool, not NumPy scalars (which NumPy does not treat as weak)


def _rows_of(a):
    """Whether ``a`` is an (N >= 1, C >= 2) C-contiguous native float32/64 array."""
    return getattr(a, "ndim", 0) == 2 and a.dtype in NATIVE_KERNEL_DTYPES and \
        a.flags.c_contiguous and a.shape[0] >= 1 and a.shape[1] >= 2


def _vectors_of(x, *vectors):
    c, dt = x.shape[1], x.dtype
    for a in vectors:  # (a loop: these rules run at every BatchNorm call)
        if a is not None and (getattr(a, "ndim", 0) != 1 or a.shape[0] != c or
                              a.dtype != dt or not a.flags.c_contiguous):
            return False
    return True


def _on_numba_forward(x, weight, bias, mean, var, eps, axes, pshape, running_mean=None,
                      running_var=None, momentum=0.0, relu=False):
    return axes == (0,) and _rows_of(x) and pshape == (1, x.shape[1]) and \
        type(eps) in _NUMBERS and type(momentum) in _NUMBERS and \
        (mean is None) == (var is None) and (running_mean is None) == (running_var is None) \
        and _vectors_of(x, weight, bias, mean, var, running_mean, running_var)


def _on_numba_backward(grad, xhat, invstd, weight, axes, pshape, batch_stats, needs_input,
                       needs_weight, needs_bias, relu_out=None):
    return axes == (0,) and _rows_of(grad) and pshape == (1, grad.shape[1]) and \
        _like_grad(xhat, grad) and (relu_out is None or _like_grad(relu_out, grad)) and \
        getattr(invstd, "shape", None) == pshape and invstd.dtype == grad.dtype and \
        invstd.flags.c_contiguous and _vectors_of(grad, weight)


def _like_grad(a, grad):
    return _rows_of(a) and a.shape == grad.shape and a.dtype == grad.dtype


normalize_forward = FusedOp("normalize_forward", _PKG, use_numba=_on_numba_forward)
normalize_backward = FusedOp("normalize_backward", _PKG, use_numba=_on_numba_backward)

OPS = {op.name: op for op in (normalize_forward, normalize_backward)}
