"""The argument checks the losses share: ``F.*_loss`` at each call and ``nn.*Loss`` at
construction, so that each rule and its message is written once."""
from __future__ import annotations

REDUCTIONS = ("none", "mean", "sum")


def check_reduction(op, reduction, allowed=REDUCTIONS):
    if reduction not in allowed:
        raise ValueError(f"{op}: reduction must be one of {', '.join(map(repr, allowed))}, "
                         f"got {reduction!r}")


def check_same_shape(op, input, target):
    if tuple(input.shape) != tuple(target.shape):
        raise ValueError(f"{op}: input shape {tuple(input.shape)} and target shape "
                         f"{tuple(target.shape)} differ; they must be equal")
