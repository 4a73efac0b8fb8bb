"""Datasets: the map-style ``Dataset`` protocol, ``TensorDataset``, ``Subset`` and
``random_split`` (PyTorch's names and semantics).

Datasets whose samples are rows of arrays (TensorDataset, and Subsets of one) also expose
``_take(indices)``, which returns whole batches by fancy-indexing the arrays once; the
DataLoader uses it instead of calling ``__getitem__`` per sample.
"""
from __future__ import annotations

import math

import numpy as np

from ..autograd import Tensor
from ..autograd.creation import as_tensor


class Dataset:
    """A map-style dataset: ``len(ds)`` samples, ``ds[i]`` returns sample ``i``."""

    def __getitem__(self, index):
        raise NotImplementedError

    def __len__(self):
        raise NotImplementedError

    def __add__(self, other):
        return ConcatDataset([self, other])


def _host_array(data, what):
    """A NumPy array for ``data`` (a Tensor, an array or nested lists)."""
    if isinstance(data, Tensor):
        if data.requires_grad:
            data = data.detach()
        return data.backend.to_numpy(data._data)
    if hasattr(data, "__cuda_array_interface__"):
        return data.get()
    array = np.asarray(data)
    if array.dtype == object:
        raise TypeError(f"{what} is not a rectangular numeric array")
    return array


class TensorDataset(Dataset):
    """Samples are the rows of one or more arrays with the same first dimension.

    ``TensorDataset(X, y)`` accepts gl Tensors or NumPy arrays; the data is kept in host
    memory as NumPy arrays (``.arrays``) and ``ds[i]`` returns a tuple of CPU tensors.
    """

    def __init__(self, *tensors):
        if not tensors:
            raise ValueError("TensorDataset needs at least one array")
        arrays = tuple(_host_array(t, f"argument {i}") for i, t in enumerate(tensors))
        for i, a in enumerate(arrays):
            if a.ndim == 0:
                raise ValueError(f"TensorDataset argument {i} is a scalar; every argument "
                                 "needs a first (sample) dimension")
        sizes = [a.shape[0] for a in arrays]
        if len(set(sizes)) != 1:
            raise ValueError(f"TensorDataset arguments differ in their first dimension: "
                             f"{sizes}; every array needs one row per sample")
        self.arrays = arrays

    @property
    def tensors(self):
        return tuple(as_tensor(a) for a in self.arrays)

    def __len__(self):
        return self.arrays[0].shape[0]

    def __getitem__(self, index):
        return tuple(as_tensor(np.asarray(a[index])) for a in self.arrays)

    def _take(self, indices):
        return tuple(a[indices] for a in self.arrays)


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``, in that order."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(dataset)
        if self.indices.size and (self.indices.min() < -n or self.indices.max() >= n):
            raise IndexError(f"Subset indices must lie in [0, {n}) for a dataset of {n} "
                             "samples")

    def __len__(self):
        return int(self.indices.size)

    def __getitem__(self, index):
        return self.dataset[int(self.indices[index])]

    @property
    def arrays(self):
        """The selected rows as arrays (when the underlying dataset has arrays)."""
        return self._take(np.arange(len(self)))

    def _take(self, indices):
        return self.dataset._take(self.indices[indices])


class ConcatDataset(Dataset):
    """The samples of several datasets one after the other (``ds_a + ds_b`` too)."""

    def __init__(self, datasets):
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("ConcatDataset needs at least one dataset")
        for ds in self.datasets:
            check_dataset("ConcatDataset", ds)
        self.cumulative_sizes = np.cumsum([len(ds) for ds in self.datasets]).tolist()

    def __len__(self):
        return self.cumulative_sizes[-1]

    def __getitem__(self, index):
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} is out of range for a ConcatDataset of {n} "
                             "samples")
        index %= n
        which = int(np.searchsorted(self.cumulative_sizes, index, side="right"))
        start = self.cumulative_sizes[which - 1] if which else 0
        return self.datasets[which][index - start]


def check_dataset(who, dataset):
    """Refuse a plain tuple of arrays, e.g. ``(X, y)``: its length is the number of arrays,
    not of samples, so splitting or batching it silently gives garbage. (A list of
    per-sample arrays stays a valid map-style dataset.)"""
    if isinstance(dataset, tuple) and dataset and all(
            isinstance(a, Tensor) or hasattr(a, "shape") and getattr(a, "ndim", 0) >= 1
            for a in dataset):
        shapes = ", ".join(str(tuple(a.shape)) for a in dataset)
        raise TypeError(f"{who} got a {type(dataset).__name__} of {len(dataset)} arrays "
                        f"(shapes {shapes}), not a dataset; wrap them as "
                        f"gl.data.TensorDataset(X, y) so that samples are their rows")


def _subset_take_available(ds):
    return hasattr(ds, "_take") and (not isinstance(ds, Subset) or
                                     _subset_take_available(ds.dataset))


def supports_bulk(dataset) -> bool:
    """True when ``dataset`` can return whole batches with ``_take`` (array-backed)."""
    return _subset_take_available(dataset)


def dataset_arrays(dataset):
    """All samples of an array-backed dataset as a tuple of NumPy arrays, or, for any other
    dataset, by stacking ``dataset[i]`` for every i (slow; for small datasets)."""
    if supports_bulk(dataset):
        return dataset._take(np.arange(len(dataset)))
    samples = [dataset[i] for i in range(len(dataset))]
    if not samples:
        raise ValueError("the dataset is empty")
    if not isinstance(samples[0], (tuple, list)):
        samples = [(s,) for s in samples]
    return tuple(np.stack([_host_array(s[j], "sample") for s in samples])
                 for j in range(len(samples[0])))


def _generator(generator, seed):
    if generator is not None:
        return generator
    if seed is not None:
        return np.random.default_rng(seed)
    # Draw a seed from the CPU backend so gl.manual_seed makes the split reproducible.
    from ..backend import cpu_backend
    return np.random.default_rng(int(cpu_backend().random.generator.integers(2**63)))


def random_split(dataset, lengths, generator=None, seed=None):
    """Split ``dataset`` into non-overlapping Subsets of the given lengths, at random.

    ``lengths`` are sample counts summing to ``len(dataset)``, or fractions summing to 1
    (the remainder of the rounding goes to the first splits, as in PyTorch). The order is
    drawn from ``generator`` (a ``numpy.random.Generator``), else from ``seed``, else from
    the global gradlab seed.
    """
    check_dataset("random_split", dataset)
    n = len(dataset)
    lengths = list(lengths)
    if not lengths:
        raise ValueError("random_split needs at least one length")
    if all(isinstance(x, float) for x in lengths) and math.isclose(sum(lengths), 1.0) and \
            sum(lengths) <= 1.0 + 1e-9:
        if any(x < 0 for x in lengths):
            raise ValueError(f"random_split fractions must be >= 0, got {lengths}")
        counts = [int(math.floor(n * f)) for f in lengths]
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
        lengths = counts
    if any(int(x) != x or x < 0 for x in lengths) or sum(lengths) != n:
        raise ValueError(f"random_split lengths {lengths} must be non-negative integers "
                         f"summing to the dataset size {n}, or fractions summing to 1")
    order = _generator(generator, seed).permutation(n)
    out, start = [], 0
    for length in lengths:
        out.append(Subset(dataset, order[start:start + int(length)]))
        start += int(length)
    return out
