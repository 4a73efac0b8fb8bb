"""Backend.check: an op's check of its inputs' values (a loss's targets), raised at once in
eager code and, inside a CUDA graph capture, read after each launch."""
from __future__ import annotations

import numpy as np
import pytest

import gradlab as gl
from gradlab.backend import get_backend


def _error(first):
    return IndexError(f"element {first} is bad")


def test_check_raises_for_the_first_bad_element(device):
    be = get_backend(device)
    be.check(be.asarray(np.zeros((2, 3), bool)), _error)  # nothing bad: no error
    bad = np.zeros((2, 3), bool)
    bad[1, 0] = bad[1, 2] = True
    with pytest.raises(IndexError, match="element 3 is bad"):  # the flat index of [1, 0]
        be.check(be.asarray(bad), _error)


@pytest.mark.cuda
@pytest.mark.skipif(not gl.cuda.is_available(), reason="no CUDA device (real or emulated)")
def test_inside_a_capture_the_check_is_read_after_each_launch():
    be = get_backend("cuda")
    values = be.asarray(np.array([1, 2, 3]))
    graph = be.cuda_graph()
    graph.capture(lambda: be.check(values > 2, _error))  # captured, nothing raised yet
    with pytest.raises(IndexError, match="element 2 is bad"):
        graph.launch()
    values[...] = be.asarray(np.array([1, 2, 0]))  # the graph reads these at its next launch
    graph.launch()
    values[0] = 5
    with pytest.raises(IndexError, match="element 0 is bad"):
        graph.launch()
