"""The NCCL engine on a real GPU: a one-rank communicator runs its whole path (unique id over
MPI, allreduce and broadcast on the current stream, the polled deadline). Skipped without a
real GPU (the emulated device has no NCCL) or without mpi4py; `make gpu-check` runs it."""
from __future__ import annotations

import pytest

from tests.devices import REAL_GPU

pytestmark = pytest.mark.cuda


@pytest.mark.skipif(not REAL_GPU, reason="needs a real CUDA GPU with NCCL (not the emulator)")
def test_one_rank_nccl_group_averages_gradients_on_the_gpu():
    pytest.importorskip("mpi4py", reason="the NCCL id travels over MPI: pip install .[mpi]")
    from cupy.cuda import nccl
    if not getattr(nccl, "available", True):
        pytest.skip("this CuPy has no NCCL")
    import gradlab as gl
    import gradlab.distributed as dist
    g = dist.init_process_group("nccl", timeout=30)
    try:
        assert (dist.get_rank(), dist.get_world_size(), g.engine.name) == (0, 1, "nccl")
        gl.manual_seed(0)
        model = dist.DistributedDataParallel(gl.nn.Linear(4, 3).to("cuda"))
        x = gl.randn(8, 4, device="cuda")
        model(x).sum().backward()
        before = [p.grad.numpy().copy() for p in model.parameters()]
        model.sync_gradients()
        assert g.engine.calls["allreduce"] == 1  # weight and bias in one bucket
        for b, p in zip(before, model.parameters()):
            assert (p.grad.numpy() == b).all()  # the mean over one rank is the value
        t = gl.ones(5, device="cuda")
        dist.all_reduce(t)
        assert t.numpy().tolist() == [1.0] * 5
    finally:
        dist.destroy_process_group()
