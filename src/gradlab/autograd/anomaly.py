"""Anomaly detection: find the op whose backward produced NaN or Inf.

Inside ``with gl.autograd.detect_anomaly():`` every op records where it was created (a
stack trace: slow, for debugging only) and the engine checks each gradient it computes;
the first non-finite one raises an error naming the forward op and that place.
"""
from __future__ import annotations

import traceback

from .grad_mode import _state


class AnomalyError(RuntimeError):
    """A backward function produced NaN or Inf while anomaly detection was on."""


def is_anomaly_enabled() -> bool:
    return _state.anomaly


class detect_anomaly:
    """Context manager (and decorator) turning anomaly detection on; ``check_nan=False``
    keeps the creation traces but skips the checks."""

    def __init__(self, check_nan=True):
        self.check_nan = check_nan

    def __enter__(self):
        self._prev = (_state.anomaly, _state.anomaly_check)
        _state.anomaly, _state.anomaly_check = True, self.check_nan
        return self

    def __exit__(self, *exc):
        _state.anomaly, _state.anomaly_check = self._prev
        return False

    def __call__(self, fn):
        def wrapper(*args, **kwargs):
            with detect_anomaly(self.check_nan):
                return fn(*args, **kwargs)
        wrapper.__wrapped__ = fn
        return wrapper


class set_detect_anomaly(detect_anomaly):
    """Turn anomaly detection on or off; restores the previous setting as a context manager."""

    def __init__(self, mode: bool, check_nan=True):
        super().__init__(check_nan)
        self._prev = (_state.anomaly, _state.anomaly_check)
        _state.anomaly, _state.anomaly_check = bool(mode), check_nan

    def __enter__(self):
        return self


def creation_trace() -> str:
    """Where the op being applied was called from, minus gradlab's own frames."""
    frames = [f for f in traceback.extract_stack()[:-2]
              if "/gradlab/autograd/" not in f.filename.replace("\\", "/")]
    return "".join(traceback.format_list(frames[-8:]))


def check_gradients(fn, grads):
    xp = fn.backend.xp
    for pos, g in enumerate(grads):
        if g is not None and not bool(xp.isfinite(g).all()):
            kind = "NaN" if bool(xp.isnan(g).any()) else "Inf"
            where = getattr(fn, "_creation_trace", None) or "(not recorded: the op ran " \
                "before anomaly detection was turned on)\n"
            raise AnomalyError(
                f"the backward of {fn.name()} produced {kind} in the gradient of its input "
                f"{pos}. The {fn.name()} op was created at:\n{where}\n"
                f"Check that op's inputs (e.g. log or sqrt of values <= 0, division by "
                f"zero, overflow in exp).")
