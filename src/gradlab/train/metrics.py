"""Metrics computed batch by batch during fit/evaluate.

A metric is a name from ``METRICS`` or a callable ``fn(output, target) -> float`` giving
the batch mean; fit averages batch values weighted by batch size.
"""
from __future__ import annotations

import numpy as np


def _host(t):
    return t.backend.to_numpy(t.detach()._data if t.requires_grad else t._data)


def accuracy(output, target):
    """Fraction of rows whose argmax (or, for a single output column, logit > 0) equals the
    target class."""
    out, tgt = _host(output), _host(target).reshape(-1)
    if out.ndim == 2 and out.shape[1] > 1:
        pred = out.argmax(axis=1)
    else:
        pred = (out.reshape(-1) > 0).astype(np.int64)
    return float((pred == tgt).mean())


def mae(output, target):
    return float(np.abs(_host(output).reshape(-1) - _host(target).reshape(-1)).mean())


def mse(output, target):
    return float(((_host(output).reshape(-1) - _host(target).reshape(-1)) ** 2).mean())


METRICS = {"accuracy": accuracy, "acc": accuracy, "mae": mae, "mse": mse}


def resolve_metrics(metrics):
    """[(name, fn)] for names or callables."""
    out = []
    for m in metrics or ():
        if isinstance(m, tuple) and len(m) == 2 and callable(m[1]):
            out.append(m)  # already resolved
        elif callable(m):
            out.append((getattr(m, "__name__", "metric"), m))
        elif m in METRICS:
            out.append(("accuracy" if m == "acc" else m, METRICS[m]))
        else:
            raise ValueError(f"unknown metric {m!r}; valid choices: {', '.join(METRICS)} or a "
                             "callable fn(output, target) -> float")
    return out
