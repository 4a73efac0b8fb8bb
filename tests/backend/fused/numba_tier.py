"""The numba tier of a fused family for its tier tests, or a skip of the whole test module
saying why it cannot run here."""
import pytest

from gradlab.backend import fused


def numba_tier(family):
    module = pytest.importorskip(f"gradlab.backend.fused.{family}.numba_cpu",
                                 reason="numba is not installed")
    if not fused.AVAILABLE:
        pytest.skip("the numba tier is off (GRADLAB_NO_JIT is set)", allow_module_level=True)
    return module
