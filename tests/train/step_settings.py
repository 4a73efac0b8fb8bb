"""Settings kept in a Python module of the user's own, read by a test model's forward as
``step_settings.SHIFT`` and ``step_settings.scaled(h)`` (tests/train/test_compiled.py)."""
SHIFT = 0.0
FACTOR = 1.0


def scaled(h):
    return h * FACTOR
