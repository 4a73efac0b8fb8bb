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


def check_label_smoothing(op, label_smoothing):
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be in [0, 1], got {label_smoothing}")


def check_margin_power(op, p):
    if p not in (1, 2):
        raise ValueError(f"{op}: p must be 1 or 2, got {p}")
