"""Optimizer update rules, fused: one call steps every tensor of a parameter group.

Tiers: reference.py (NumPy), numba_cpu.py, cuda.py (host side of kernels/optim.cu);
scalars.py derives every scalar all of them use. Every tier gives the same bits
(tests/backend/fused).
"""
from .. import FusedOp

_PKG = __name__

sgd_step = FusedOp("sgd_step", _PKG)
adam_step = FusedOp("adam_step", _PKG)
rmsprop_step = FusedOp("rmsprop_step", _PKG)
adagrad_step = FusedOp("adagrad_step", _PKG)
adadelta_step = FusedOp("adadelta_step", _PKG)
adamax_step = FusedOp("adamax_step", _PKG)
nadam_step = FusedOp("nadam_step", _PKG)
radam_step = FusedOp("radam_step", _PKG)

OPS = {op.name: op for op in (sgd_step, adam_step, rmsprop_step, adagrad_step, adadelta_step,
                              adamax_step, nadam_step, radam_step)}


def prepare_step(backend, op, params, states, **flags):
    """Backend.prepare_optimizer_step: ``run(grads, options)`` for a caller that steps the
    same arrays again and again. The tier is the one chosen now; at a call that would
    choose another (GRADLAB_NO_JIT changed) run returns False and does nothing, and so does
    the numba tier's run when the grads do not fit what it checked (the caller then makes
    the plain call, which copies or raises as usual)."""
    fused = OPS[op]
    tier = fused.tier_for(backend)
    if tier == "numba":
        # (numba imports once; then only GRADLAB_NO_JIT can change the tier, and this run
        # reads it itself: one Python call less at each step)
        from .numba_cpu import prepared_step
        return prepared_step(op, params, states, **flags)
    plain = fused.pick(backend)

    def run(grads, options):
        if fused.tier_for(backend) != tier:
            return False
        plain(params, grads, *states, **flags, **options)
        return True
    return run
