"""Engine overhead (issue 2): forward + backward of two small MLPs, gradlab vs PyTorch CPU
eager. pytest-benchmark groups each shape so both sides show up next to each other;
`python benchmarks/run.py` gives the interleaved ratios."""
import pytest

from .cases import MLP_SHAPES, mlp_forward_backward


@pytest.mark.parametrize("shape", ["tiny", "small"])
def test_mlp_fwd_bwd_gradlab(benchmark, shape):
    benchmark.group = f"mlp-fwd-bwd-{shape}"
    gl_step, _ = mlp_forward_backward(*MLP_SHAPES[shape], check=True)
    benchmark(gl_step)


@pytest.mark.parametrize("shape", ["tiny", "small"])
def test_mlp_fwd_bwd_torch(benchmark, shape, torch_or_skip):
    benchmark.group = f"mlp-fwd-bwd-{shape}"
    _, torch_step = mlp_forward_backward(*MLP_SHAPES[shape])
    benchmark(torch_step)
