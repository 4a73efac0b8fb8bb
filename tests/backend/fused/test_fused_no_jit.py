"""GRADLAB_NO_JIT is read at every fused call, through os.environ's own bytes dict where
there is one (backend/fused/__init__.py): every way of setting, emptying and deleting the
variable is seen at the next call, and the public read gives the same answers."""
import os

import pytest

from gradlab.backend import fused


def _answers():
    out = []
    for action in ("1", "", "yes", None):
        if action is None:
            os.environ.pop("GRADLAB_NO_JIT", None)
        else:
            os.environ["GRADLAB_NO_JIT"] = action
        out.append(fused.jit_disabled())
    return out


@pytest.mark.parametrize("read", ["bytes dict", "public"])
def test_every_change_is_seen_at_the_next_call(monkeypatch, read):
    monkeypatch.delenv("GRADLAB_NO_JIT", raising=False)
    if read == "public":
        monkeypatch.setattr(fused, "_ENV", None)
    assert fused.jit_disabled() is False
    assert _answers() == [True, False, True, False]
    monkeypatch.setenv("GRADLAB_NO_JIT", "1")
    assert fused.jit_disabled() is True
    assert fused.numba_status() == (False, "GRADLAB_NO_JIT is set")
    monkeypatch.delenv("GRADLAB_NO_JIT")
    assert fused.jit_disabled() is False
