"""Softmax cross-entropy, fused: per-row loss and its gradient in one op.

Tiers: reference.py (NumPy), numba_cpu.py (narrow rows only, to rounding), cuda.py (host
side of kernels/softmax_ce.cu, a warp or a block per row).
"""
from .. import FusedOp

_PKG = __name__

# The numba kernel runs rows of up to this many classes; wider ones go to the reference
# (each row's max and sum are sequential there, NumPy's vectorized: measured crossover in
# numba_cpu.py).
MAX_CLASSES = 64


def _on_numba(logits, target, weight, ignore_index, label_smoothing, reduction="none"):
    shape = getattr(logits, "shape", ())
    return len(shape) == 2 and shape[1] <= MAX_CLASSES


softmax_cross_entropy = FusedOp("softmax_cross_entropy", _PKG, use_numba=_on_numba)

OPS = {softmax_cross_entropy.name: softmax_cross_entropy}
