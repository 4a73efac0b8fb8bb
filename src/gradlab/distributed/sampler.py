"""DistributedSampler: each rank's disjoint share of a dataset's indices."""
from __future__ import annotations

import numpy as np


class DistributedSampler:
    """The indices rank ``rank`` of ``num_replicas`` trains on (PyTorch's semantics).

    Each epoch the whole index range is put in one order, a permutation drawn from
    ``seed + epoch`` (``shuffle=True``) or 0..N-1, and rank r takes every
    ``num_replicas``-th index from position r. So with local batches of B / W rows, the W
    ranks' batch k together are exactly the rows of batch k of ONE loader over the same
    order at batch B: the global step sees the same data as a one-process run. Call
    ``set_epoch(e)`` before each epoch for a new order (``fit`` does it); the seed must be
    the same on every rank.

    N not a multiple of W: with ``drop_last=False`` the order is padded with its own first
    indices up to a multiple of W (those rows count twice in that epoch, and each rank gets
    ceil(N / W) indices); with ``drop_last=True`` its last N mod W indices are dropped (a
    different few each epoch when shuffled), floor(N / W) each. The DataLoader's own
    ``drop_last`` then applies to each rank's share: keep local batches the same size on
    every rank so that the average over ranks weighs every row alike.

    Pass it as ``gl.data.DataLoader(dataset, batch_size=B // W, sampler=sampler)``.
    """

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0,
                 drop_last=False):
        if num_replicas is None or rank is None:
            from .group import group
            g = group()
            num_replicas = g.world_size if num_replicas is None else num_replicas
            rank = g.rank if rank is None else rank
        if int(num_replicas) != num_replicas or num_replicas < 1:
            raise ValueError(f"num_replicas must be a positive integer, got {num_replicas!r}")
        if int(rank) != rank or not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas - 1}], got {rank!r}")
        self.n = len(dataset)
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.shuffle, self.seed, self.drop_last = bool(shuffle), int(seed), bool(drop_last)
        if self.drop_last:
            self.num_samples = self.n // self.num_replicas
        else:
            self.num_samples = -(-self.n // self.num_replicas)
        if self.num_samples == 0:
            raise ValueError(f"DistributedSampler: {self.n} samples over {self.num_replicas} "
                             "ranks with drop_last=True leaves rank nothing")
        self.total_size = self.num_samples * self.num_replicas
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def order(self):
        """The epoch's global order (padded or cut to ``total_size``), before sharding."""
        if self.shuffle:
            order = np.random.default_rng(self.seed + self.epoch).permutation(self.n)
        else:
            order = np.arange(self.n)
        if self.total_size > self.n:
            order = np.concatenate([order, np.resize(order, self.total_size - self.n)])
        return order[:self.total_size]

    def __iter__(self):
        return iter(self.order()[self.rank::self.num_replicas].tolist())

    def __len__(self):
        return self.num_samples
