"""DataLoader: mini-batches of a dataset as gl tensors on a chosen device."""
from __future__ import annotations

import numpy as np

from ..autograd import Tensor
from ..autograd.creation import as_tensor
from ..backend import get_backend
from .dataset import _host_array, check_dataset, supports_bulk


def default_collate(samples):
    """Stack a list of samples (tuples of tensors/arrays/numbers) field by field into
    NumPy arrays."""
    first = samples[0]
    if isinstance(first, (tuple, list)):
        return tuple(np.stack([_host_array(s[j], "sample field") for s in samples])
                     for j in range(len(first)))
    return (np.stack([_host_array(s, "sample") for s in samples]),)


def _check_torch_options(num_workers, sampler, batch_sampler):
    """PyTorch's DataLoader options: worker counts give the same batches (gradlab loads in
    the main process, gathering whole batches at once), samplers have gradlab equivalents."""
    if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) or \
            num_workers < 0:
        raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
    # A distributed sampler (gl.distributed.DistributedSampler: it has set_epoch) is taken.
    if (sampler is not None and not hasattr(sampler, "set_epoch")) or \
            batch_sampler is not None:
        raise TypeError("DataLoader(sampler=/batch_sampler=) is not part of gradlab: pass "
                        "shuffle=True (with seed= or generator=) for a random order, or "
                        "select samples with gl.data.Subset(dataset, indices)")


class DataLoader:
    """Iterate over ``dataset`` in mini-batches.

    - ``batch_size``: samples per batch (``len(dataset)`` gives full-batch gradient descent,
      1 gives stochastic gradient descent).
    - ``shuffle``: a new order every epoch, drawn from the loader's OWN generator, seeded
      with ``seed`` (or drawn from the global gradlab seed when ``seed`` is None), so that
      the order does not depend on what else consumes random numbers.
    - ``drop_last``: drop the final incomplete batch.
    - ``device``: where the yielded tensors live ('cpu', 'cuda', 'auto' or None = CPU).
      Array-backed datasets are copied to a GPU once and batches are gathered there.
    - ``transform``: an optional callable ``transform(x_batch, rng) -> x_batch`` applied
      to the first field of every batch on the host (augmentation, see ``gl.data.augment``),
      with the loader's generator as ``rng``.
    - ``collate_fn``: turns a list of samples into a tuple of arrays (generic datasets).
    - ``sampler``: a ``gl.distributed.DistributedSampler``, whose indices (this rank's share)
      are the order, instead of ``shuffle``; ``fit`` calls its ``set_epoch`` each epoch.
    - PyTorch's ``num_workers`` and ``pin_memory`` are accepted and change nothing (batches
      are gathered in the main process); ``generator`` (a ``gl.Generator``) seeds the order.

    Each iteration yields a tuple of tensors, one per dataset field (e.g. ``(x, y)``).
    Array-backed datasets (TensorDataset and its Subsets) are indexed in bulk.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, *, seed=None,
                 device=None, transform=None, collate_fn=None, num_workers=0,
                 pin_memory=False, generator=None, sampler=None, batch_sampler=None):
        _check_torch_options(num_workers, sampler, batch_sampler)
        if generator is not None and seed is None:  # PyTorch's way to seed the order
            seed = int(generator.integers(2**63))
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or \
                batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        check_dataset("DataLoader", dataset)
        n = len(dataset)
        if n == 0:
            raise ValueError("the dataset is empty (0 samples): a DataLoader needs at least "
                             "one sample; check how the dataset was built or filtered")
        if drop_last and batch_size > n:
            raise ValueError(f"batch_size={batch_size} is larger than the dataset ({n} "
                             "samples) and drop_last=True would yield no batch; lower "
                             "batch_size or set drop_last=False")
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler and shuffle=True exclude each other; the "
                             "sampler decides the order (DistributedSampler(shuffle=True))")
        self.dataset = dataset
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.transform = transform
        self.collate_fn = collate_fn or default_collate
        self.backend = get_backend(device if device is not None else "cpu")
        if seed is None:
            from ..backend import cpu_backend
            seed = int(cpu_backend().random.generator.integers(2**63))
        self.seed = int(seed)
        self.generator = np.random.default_rng(self.seed)
        self.epoch = 0  # completed passes; state for resuming (see state_dict)
        self._bulk = supports_bulk(dataset)
        self._device_arrays = None

    @property
    def device(self):
        return self.backend.device

    def __len__(self):
        n = len(self.dataset) if self.sampler is None else len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _order(self):
        if self.sampler is not None:
            return np.fromiter(iter(self.sampler), dtype=np.int64)
        n = len(self.dataset)
        return self.generator.permutation(n) if self.shuffle else np.arange(n)

    def _gather(self, idx):
        if not self._bulk:
            return self.collate_fn([self.dataset[int(i)] for i in idx])
        if self.backend.device.type == "cpu" or self.transform is not None:
            return self.dataset._take(idx)
        # GPU: keep the whole (array-backed) dataset on the device and gather there.
        if self._device_arrays is None:
            everything = self.dataset._take(np.arange(len(self.dataset)))
            self._device_arrays = tuple(self.backend.asarray(a) for a in everything)
        didx = self.backend.asarray(idx)
        return tuple(a[didx] for a in self._device_arrays)

    def _wrap(self, array):
        if isinstance(array, Tensor):
            return array.to(self.backend.device)
        if isinstance(array, np.ndarray):
            if self.backend.device.type == "cpu":
                return as_tensor(array)
            return Tensor._wrap(self.backend.asarray(array), self.backend)
        return Tensor._wrap(array, self.backend)  # already a device array

    def __iter__(self):
        order = self._order()
        stop = len(self) * self.batch_size
        for start in range(0, min(stop, order.size), self.batch_size):
            fields = self._gather(order[start:start + self.batch_size])
            if self.transform is not None:
                fields = (self.transform(fields[0], self.generator), *fields[1:])
            yield tuple(self._wrap(f) for f in fields)
        self.epoch += 1

    def state_dict(self):
        """The shuffling generator's state and the epoch count (for exact resumption)."""
        return {"seed": self.seed, "epoch": self.epoch,
                "generator": self.generator.bit_generator.state}

    def load_state_dict(self, state):
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self.generator = np.random.default_rng(self.seed)
        self.generator.bit_generator.state = state["generator"]
