"""``gl.utils.data``: PyTorch's path to the data classes, which live in ``gl.data``."""
from ..data import DataLoader, Dataset, Subset, TensorDataset, default_collate, random_split
from ..data.dataset import ConcatDataset

# Left out on purpose: each name below raises on import with the gradlab way to do it.
_LEFT_OUT = {
    "IterableDataset": "gradlab's DataLoader indexes map-style datasets (len and "
                       "__getitem__); subclass gl.utils.data.Dataset instead",
    "Sampler": "pass shuffle=True (and seed=) to DataLoader, or select samples with Subset",
    "SequentialSampler": "that is DataLoader(..., shuffle=False), the default",
    "RandomSampler": "pass shuffle=True (and seed= or generator=) to DataLoader",
    "SubsetRandomSampler": "wrap the indices in Subset(dataset, indices) and pass "
                           "shuffle=True to DataLoader",
    "BatchSampler": "pass batch_size= and drop_last= to DataLoader",
    "WeightedRandomSampler": "resample the indices yourself (numpy's choice with p=) and wrap "
                             "them in Subset, or oversample with gl.data.smote",
    "DistributedSampler": "gradlab trains on one device per process",
    "get_worker_info": "gradlab's DataLoader loads in the main process (no workers)",
}


def __getattr__(name):
    if name in _LEFT_OUT:
        # ImportError, not AttributeError: `from ... import X` would replace an
        # AttributeError's message with its own generic one.
        raise ImportError(f"gl.utils.data.{name} is not part of gradlab: {_LEFT_OUT[name]}")
    raise AttributeError(f"module 'gradlab.utils.data' has no attribute {name!r}")


__all__ = ["DataLoader", "Dataset", "Subset", "TensorDataset", "ConcatDataset",
           "default_collate", "random_split"]
