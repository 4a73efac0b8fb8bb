import pytest

from .harness import torch


@pytest.fixture
def torch_or_skip():
    if torch is None:
        pytest.skip("torch is not installed: `pip install torch==2.13.0` for the comparison")
    return torch
