"""Dropout, fused: the Philox mask, its packing and the scaling in one pass.

Tiers: reference.py (NumPy: the stream and mask definitions), numba_cpu.py, cuda.py (host
side of kernels/dropout.cu). All three give the same bits (tests/backend/fused).
"""
from ... import checks
from .. import FusedOp

_PKG = __name__


def needs_draws(thr, n):
    """Whether a forward with this threshold draws anything (p strictly between 0 and 1 and a
    non-empty input); p == 0 and p == 1 are a copy or zeros, which the reference does."""
    return 0 < thr < 2**32 and n > 0


def _forward_on_numba(x, p, key, offset):
    try:
        thr = checks.dropout_threshold(checks.dropout_p(p))
    except (TypeError, ValueError):  # the reference raises the error
        return False
    return needs_draws(thr, getattr(x, "size", 0))


dropout_forward = FusedOp("dropout_forward", _PKG, use_numba=_forward_on_numba)
dropout_backward = FusedOp("dropout_backward", _PKG)

OPS = {op.name: op for op in (dropout_forward, dropout_backward)}
