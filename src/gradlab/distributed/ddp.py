"""DistributedDataParallel: the same model on every rank, gradients averaged over ranks.

At construction every rank's parameter and buffer list (names, shapes, dtypes) is compared
with rank 0's, and a difference fails on every rank with the first mismatch named; then
rank 0's values are broadcast so all ranks start from the same weights.

After ``loss.backward()``, ``sync_gradients()`` averages the gradients: they are packed into
flat buckets of about ``bucket_cap_mb`` MB (one per dtype and device, in parameter order;
a parameter larger than the cap has its own bucket), each bucket is summed with ONE
allreduce and divided by the world size, and the result is unpacked into ``p.grad``.
``fit`` calls it between backward and the optimizer step; a hand-written loop calls it
there too. (PyTorch starts bucket allreduces from backward hooks, overlapping them with
backward; gradlab's engine has no hooks, so the buckets are reduced after backward.)

BatchNorm: each rank normalizes with its own batch statistics during the epoch, and
``sync_buffers()`` averages the floating-point buffers (running_mean, running_var) over the
ranks; ``fit`` calls it at the end of every epoch, before validation and checkpoints. It is
not SyncBatchNorm: batch statistics stay per rank. (PyTorch's DDP instead broadcasts rank
0's buffers before every forward.)

``state_dict``/``load_state_dict`` are the wrapped module's, without PyTorch's ``module.``
prefix: a checkpoint of a distributed run loads into the plain model.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Tensor, no_grad
from ..nn import Module
from .group import DistributedError, group


def _host(array):
    return array if isinstance(array, np.ndarray) else array.get()


def _reduce(g, flat, op="sum"):
    """Allreduce ``flat`` in place on the engine that can reach it."""
    if isinstance(flat, np.ndarray):
        g.mpi.allreduce(flat, op)
    elif g.engine is not g.mpi:
        g.engine.allreduce(flat, op)
    else:  # a GPU array under the MPI backend: through the host
        host = g.mpi.allreduce(_host(flat), op)
        flat.set(host)
    return flat


def _broadcast(g, flat, root=0):
    if isinstance(flat, np.ndarray):
        g.mpi.broadcast(flat, root)
    elif g.engine is not g.mpi:
        g.engine.broadcast(flat, root)
    else:
        flat.set(g.mpi.broadcast(_host(flat), root))
    return flat


def describe(module):
    """(kind, name, shape, dtype) of every parameter and buffer, in registration order."""
    out = [("parameter", n, tuple(p.shape), str(p.dtype))
           for n, p in module.named_parameters()]
    out += [("buffer", n, tuple(b.shape), str(b.dtype)) for n, b in module.named_buffers()]
    return out


def first_mismatch(layouts):
    """The first difference of any rank's layout from rank 0's, as a sentence, or None."""
    ref = layouts[0]
    for rank, mine in enumerate(layouts[1:], 1):
        for i in range(max(len(ref), len(mine))):
            a = ref[i] if i < len(ref) else None
            b = mine[i] if i < len(mine) else None
            if a == b:
                continue
            if a is None:
                return (f"rank {rank} has an extra {b[0]} {b[1]!r} (shape {b[2]}) that rank 0 "
                        f"lacks ({len(mine)} tensors against {len(ref)})")
            if b is None:
                return (f"rank {rank} lacks {a[0]} {a[1]!r} (shape {a[2]}) that rank 0 has "
                        f"({len(mine)} tensors against {len(ref)})")
            if a[:2] != b[:2]:
                return (f"tensor {i} is {a[0]} {a[1]!r} on rank 0 but {b[0]} {b[1]!r} on rank "
                        f"{rank}")
            return (f"{a[0]} {a[1]!r} has shape {b[2]} {b[3]} on rank {rank} but {a[2]} "
                    f"{a[3]} on rank 0")
    return None


def make_buckets(tensors, cap_bytes):
    """Group tensors (in order) into lists of at most ``cap_bytes`` per (dtype, device)."""
    buckets, open_ = [], {}
    for t in tensors:
        key = (str(t.dtype), str(t.device))
        nbytes = t.numel() * t._data.dtype.itemsize
        bucket = open_.get(key)
        if bucket is None or (bucket["bytes"] and bucket["bytes"] + nbytes > cap_bytes):
            bucket = open_[key] = {"tensors": [], "bytes": 0}
            buckets.append(bucket)
        bucket["tensors"].append(t)
        bucket["bytes"] += nbytes
    return [b["tensors"] for b in buckets]


class DistributedDataParallel(Module):
    """Wrap ``module`` for data-parallel training on the initialized process group.

    ``bucket_cap_mb``: size of a gradient bucket (PyTorch's default 25 MB). Every rank must
    build the same model; the constructor checks it and copies rank 0's weights to all."""

    def __init__(self, module, bucket_cap_mb=25):
        super().__init__()
        if not bucket_cap_mb > 0:
            raise ValueError(f"bucket_cap_mb must be > 0, got {bucket_cap_mb!r}")
        g = group()
        self.module = module
        self.bucket_cap_mb = bucket_cap_mb
        problem = first_mismatch(g.mpi.allgather_object(describe(module)))
        if problem:
            raise DistributedError(f"DistributedDataParallel: the ranks build different "
                                   f"models: {problem}; every rank must construct the same "
                                   "model")
        params = [p for p in module.parameters() if p.requires_grad]
        cap = int(bucket_cap_mb * 2**20)
        self._buckets = make_buckets(params, cap)
        self._name = {id(p): n for n, p in module.named_parameters()}
        with no_grad():
            for bucket in make_buckets(list(module.parameters()) + list(module.buffers()), cap):
                flat = self._pack(bucket, lambda t: t._data)
                self._unpack(bucket, _broadcast(g, flat, 0), grads=False)

    @property
    def buckets(self):
        """The gradient buckets as lists of parameter names (one allreduce each)."""
        return [[self._name[id(p)] for p in b] for b in self._buckets]

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    @staticmethod
    def _pack(bucket, get):
        xp = bucket[0]._backend.xp
        flat = xp.empty(sum(t.numel() for t in bucket), dtype=bucket[0]._data.dtype)
        offset = 0
        for t in bucket:
            n = t.numel()
            value = get(t)
            if value is None:
                flat[offset:offset + n] = 0
            else:
                flat[offset:offset + n] = value.reshape(-1)
            offset += n
        return flat

    @staticmethod
    def _unpack(bucket, flat, grads):
        offset = 0
        for t in bucket:
            n = t.numel()
            piece = flat[offset:offset + n].reshape(t._data.shape)
            if not grads:
                t._data[...] = piece
                t._version[0] += 1
            elif t.grad is None:
                t.grad = Tensor._wrap(piece.copy(), t._backend)
            else:
                t.grad._data[...] = piece
            offset += n

    def sync_gradients(self):
        """Average every parameter's gradient over the ranks: one allreduce per bucket. A
        parameter without a gradient counts as zeros (and gets the average)."""
        g = group()
        for bucket in self._buckets:
            flat = self._pack(bucket, lambda p: None if p.grad is None else p.grad._data)
            _reduce(g, flat)
            flat /= g.world_size
            self._unpack(bucket, flat, grads=True)

    def sync_buffers(self):
        """Average the floating-point buffers (BatchNorm's running statistics) over ranks."""
        g = group()
        floats = [b for b in self.module.buffers() if b._data.dtype.kind == "f"]
        if not floats:
            return
        with no_grad():
            for bucket in make_buckets(floats, int(self.bucket_cap_mb * 2**20)):
                flat = self._pack(bucket, lambda t: t._data)
                _reduce(g, flat)
                flat /= g.world_size
                self._unpack(bucket, flat, grads=False)

    def state_dict(self, destination=None, prefix="", keep_vars=False):
        return self.module.state_dict(destination, prefix, keep_vars)

    def load_state_dict(self, state_dict, strict=True):
        return self.module.load_state_dict(state_dict, strict)

    def extra_repr(self):
        return f"world_size={group().world_size}, buckets={len(self._buckets)}"
