"""Jobs the 2-rank tests launch with ``mpiexec -n N python worker.py JOB OUT``.

Each job writes what the test checks into OUT (one file per rank where ranks differ)."""
from __future__ import annotations

import json
import os
import signal
import sys
import time

import numpy as np

import gradlab as gl
import gradlab.distributed as dist


def data(n=256, features=8, classes=3, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, features)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(np.int64) + (X[:, 3] > 1).astype(np.int64)
    return X, np.minimum(y, classes - 1)


def build(hidden=16, features=8, classes=3, batchnorm=False):
    gl.manual_seed(0)
    layers = [gl.nn.Linear(features, hidden)]
    if batchnorm:
        layers.append(gl.nn.BatchNorm1d(hidden))
    layers += [gl.nn.ReLU(), gl.nn.Linear(hidden, classes)]
    return gl.nn.Sequential(*layers)


def loaders(global_batch, X, y, seed=0, shuffle=True):
    world = dist.get_world_size()
    ds = gl.data.TensorDataset(X, y)
    sampler = dist.DistributedSampler(ds, shuffle=shuffle, seed=seed)
    return gl.data.DataLoader(ds, batch_size=global_batch // world, sampler=sampler)


def weights(model):
    return {k: v.numpy() for k, v in model.state_dict().items()}


def job_fit(out, epochs="4", batchnorm="0", resume="0", ckpt="", patience="0"):
    """fit() on a DDP model; rank r saves its final weights and history."""
    rank = dist.get_rank()
    X, y = data()
    model = dist.DistributedDataParallel(build(batchnorm=batchnorm == "1"))
    opt = gl.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    callbacks = []
    if int(patience):
        callbacks.append(gl.train.EarlyStopping(monitor="loss", patience=int(patience),
                                                min_delta=0.05))
    history = gl.train.fit(model, gl.nn.CrossEntropyLoss(), opt, loaders(32, X, y),
                           epochs=int(epochs), verbose=0, callbacks=callbacks,
                           checkpoint_dir=ckpt or None, resume=resume == "1")
    np.savez(os.path.join(out, f"weights-{rank}.npz"), **weights(model))
    with open(os.path.join(out, f"history-{rank}.json"), "w") as f:
        json.dump({"loss": history["loss"], "stop_reason": history.stop_reason,
                   "allreduce": dist.group.group().mpi.calls.get("allreduce", 0)}, f)


def job_files(out):
    """Each rank points its writers at its own directory: only rank 0's gets files."""
    rank = dist.get_rank()
    X, y = data(n=64)
    mine = os.path.join(out, f"rank{rank}")
    model = dist.DistributedDataParallel(build())
    opt = gl.optim.SGD(model.parameters(), lr=0.1)
    cbs = [gl.train.CSVLogger(os.path.join(mine, "history.csv")) if rank == 0 else
           gl.train.CSVLogger(os.path.join(out, "rank1-history.csv")),
           gl.train.ModelCheckpoint(os.path.join(out, f"model-{rank}.gl"), monitor="loss")]
    os.makedirs(mine, exist_ok=True)
    gl.train.fit(model, gl.nn.CrossEntropyLoss(), opt, loaders(16, X, y), epochs=2,
                 verbose=0, callbacks=cbs, checkpoint_dir=os.path.join(mine, "ckpt"))


def job_units(out):
    """Gradient averaging, buckets, BatchNorm buffers, sampler shards: values to rank 0."""
    rank, world = dist.get_rank(), dist.get_world_size()
    model = dist.DistributedDataParallel(build(hidden=300, features=200, batchnorm=True),
                                         bucket_cap_mb=0.1)
    params = list(model.parameters())
    for i, p in enumerate(params):
        p.grad = gl.full(p.shape, float(rank + 1) * (i + 1))
    params[-1].grad = None if rank == 0 else params[-1].grad
    calls = dist.group.group().mpi.calls
    before = calls.get("allreduce", 0)
    model.sync_gradients()
    reduces = calls["allreduce"] - before
    grads = [float(p.grad.numpy().ravel()[0]) for p in params]
    bn = model.module[1]
    bn.running_mean._data[...] = rank + 1.0
    bn.running_var._data[...] = 10.0 * (rank + 1)
    bn.num_batches_tracked._data[...] = 7
    model.sync_buffers()
    sampler = dist.DistributedSampler(range(11), seed=3)
    sampler.set_epoch(2)
    shards = dist.all_gather_object(list(sampler))
    dropped = dist.DistributedSampler(range(11), seed=3, drop_last=True)
    dropped.set_epoch(2)
    result = {"buckets": model.buckets, "reduces": reduces, "grads": grads,
              "running_mean": bn.running_mean.numpy().tolist()[:2],
              "running_var": bn.running_var.numpy().tolist()[:2],
              "tracked": int(bn.num_batches_tracked.item()),
              "shards": shards, "order": sampler.order().tolist(),
              "dropped": dist.all_gather_object(list(dropped)), "world": world}
    with open(os.path.join(out, f"units-{rank}.json"), "w") as f:
        json.dump(result, f)


def job_mismatch(out):
    rank = dist.get_rank()
    try:
        dist.DistributedDataParallel(build(hidden=16 if rank == 0 else 12))
    except dist.DistributedError as exc:
        with open(os.path.join(out, f"error-{rank}.txt"), "w") as f:
            f.write(str(exc))
        sys.exit(3)


def job_die(out, how="kill"):
    """Rank 1 dies (SIGKILL) or hangs (SIGSTOP) at step 5; rank 0 must not hang."""
    rank = dist.get_rank()
    X, y = data(n=4096)
    model = dist.DistributedDataParallel(build())
    opt = gl.optim.SGD(model.parameters(), lr=0.01)

    class Die(gl.train.Callback):
        def on_batch_end(self, batch, loss):
            if rank == 1 and self.run.step == 5:
                with open(os.path.join(out, "died-at"), "w") as f:
                    f.write(repr(time.time()))
                os.kill(os.getpid(), signal.SIGKILL if how == "kill" else signal.SIGSTOP)

    try:
        gl.train.fit(model, gl.nn.CrossEntropyLoss(), opt, loaders(32, X, y), epochs=50,
                     verbose=0, callbacks=[Die()])
    except dist.DistributedError as exc:
        with open(os.path.join(out, f"error-{rank}.txt"), "w") as f:
            f.write(f"{time.time()!r}\n{exc}")
        print(f"rank {rank}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        sys.exit(4)


if __name__ == "__main__":
    job, out, *rest = sys.argv[1:]
    dist.init_process_group("mpi")
    globals()[f"job_{job}"](out, *rest)
    dist.destroy_process_group()
