"""Grad mode: whether ops record the graph. Thread-local, like PyTorch's."""
from __future__ import annotations

import functools
import threading


class _GradState(threading.local):
    enabled = True
    anomaly = False
    anomaly_check = True
    tape = None  # the autograd.tape.Recording of a step being recorded, or None


_state = _GradState()


def is_grad_enabled() -> bool:
    return _state.enabled


class _GradModeContext:
    """Base of no_grad / enable_grad / set_grad_enabled: a context manager and decorator."""

    _target = True

    def __enter__(self):
        self._prev = _state.enabled
        _state.enabled = self._target

    def __exit__(self, *exc):
        _state.enabled = self._prev
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self._fresh():
                return fn(*args, **kwargs)
        return wrapper

    def _fresh(self):
        return type(self)()


class no_grad(_GradModeContext):
    """Ops inside do not record the graph: ``with gl.no_grad(): ...`` or as a decorator."""

    _target = False


class inference_mode(_GradModeContext):
    """PyTorch's faster no_grad; in gradlab the same as ``no_grad`` (``mode=False`` records
    the graph as usual)."""

    def __init__(self, mode: bool = True):
        self._target = not mode

    def _fresh(self):
        return inference_mode(not self._target)


class enable_grad(_GradModeContext):
    """Re-enable graph recording inside a ``no_grad`` block."""

    _target = True


class set_grad_enabled(_GradModeContext):
    """Set grad mode to ``mode``; takes effect at once, and as a context manager restores it."""

    def __init__(self, mode: bool):
        self._prev = _state.enabled
        self._target = bool(mode)
        _state.enabled = self._target

    def __enter__(self):
        pass

    def _fresh(self):
        return set_grad_enabled(self._target)
