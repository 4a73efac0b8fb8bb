"""Data-parallel training over processes (``gl.distributed``), with PyTorch's names.

    # mpiexec -n 2 python train.py
    import gradlab as gl
    import gradlab.distributed as dist
    dist.init_process_group("mpi")
    model = dist.DistributedDataParallel(build_model())
    sampler = dist.DistributedSampler(train_set, seed=0)
    loader = gl.data.DataLoader(train_set, batch_size=B // dist.get_world_size(),
                                sampler=sampler)
    gl.train.fit(model, loss_fn, optimizer, loader, ...)   # rank 0 writes the files

Nothing here imports mpi4py or CuPy until ``init_process_group`` is called.
"""
from .ddp import DistributedDataParallel
from .group import (
    CollectiveTimeout,
    DistributedError,
    all_gather_object,
    all_reduce,
    barrier,
    broadcast_object,
    destroy_process_group,
    get_rank,
    get_world_size,
    init_process_group,
    is_initialized,
    is_main_process,
)
from .sampler import DistributedSampler

__all__ = ["init_process_group", "destroy_process_group", "is_initialized", "get_rank",
           "get_world_size", "barrier", "all_reduce", "all_gather_object", "broadcast_object",
           "is_main_process", "DistributedDataParallel", "DistributedSampler",
           "DistributedError", "CollectiveTimeout"]
