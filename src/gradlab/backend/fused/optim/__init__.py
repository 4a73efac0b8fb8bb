"""Optimizer update rules, fused: one call steps every tensor of a parameter group.

Tiers: reference.py (NumPy; also the single-tensor formulas Adamax, NAdam and RAdam step
with), numba_cpu.py, cuda.py (host side of kernels/optim.cu); scalars.py derives every scalar
all of them and gl.optim use. Every tier gives the same bits (tests/backend/fused).
"""
from .. import FusedOp

_PKG = __name__

sgd_step = FusedOp("sgd_step", _PKG)
adam_step = FusedOp("adam_step", _PKG)
rmsprop_step = FusedOp("rmsprop_step", _PKG)
adagrad_step = FusedOp("adagrad_step", _PKG)
adadelta_step = FusedOp("adadelta_step", _PKG)

OPS = {op.name: op for op in (sgd_step, adam_step, rmsprop_step, adagrad_step, adadelta_step)}
