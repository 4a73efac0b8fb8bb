"""Holdout splits (optionally stratified) and K-fold / repeated K-fold cross-validation
indices."""
from __future__ import annotations

import numpy as np

from .dataset import Dataset, Subset, _host_array, dataset_arrays


def _labels_of(dataset_or_labels):
    """Integer labels from an array/tensor, or the last field of a dataset."""
    if isinstance(dataset_or_labels, Dataset):
        return np.asarray(dataset_arrays(dataset_or_labels)[-1])
    return _host_array(dataset_or_labels, "labels")


def _check_fraction(name, value):
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be a fraction in (0, 1), got {value!r}")


def stratified_indices(labels, test_fraction, seed=0):
    """(train_idx, test_idx) with each class split in the same proportion.

    Every class with at least 2 samples puts at least one in each part; the parts' sizes
    add up to ``round(n * test_fraction)`` for the test side, up to rounding per class. A
    class of one sample goes whole to one side, so where every class has one, a part can
    be empty (the CLI says so with the part sizes; train_test_split moves one over).
    """
    _check_fraction("test_fraction", test_fraction)
    labels = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        k = int(round(idx.size * test_fraction))
        if idx.size >= 2:
            k = min(max(k, 1), idx.size - 1)
        test.append(idx[:k])
        train.append(idx[k:])
    train_idx, test_idx = np.concatenate(train), np.concatenate(test)
    return rng.permutation(train_idx), rng.permutation(test_idx)


def train_test_split(dataset, test_size=0.2, *, stratify=True, seed=0):
    """Split a dataset into (train, test) Subsets holding out ``test_size`` of the samples.

    With ``stratify=True`` the labels (the dataset's last field) keep their class
    proportions in both parts; otherwise the split is a plain random permutation.
    """
    _check_fraction("test_size", test_size)
    n = len(dataset)
    if n < 2:
        raise ValueError(f"cannot split a dataset of {n} sample(s) into train and test")
    if stratify:
        train_idx, test_idx = stratified_indices(_labels_of(dataset), test_size, seed)
        if not train_idx.size or not test_idx.size:
            # Every class has one sample and they all rounded to one side: one moves over
            # (the last of the shuffled side), so that both parts have one.
            full = train_idx if train_idx.size else test_idx
            moved, kept = full[-1:], full[:-1]
            train_idx, test_idx = (kept, moved) if train_idx.size else (moved, kept)
    else:
        order = np.random.default_rng(seed).permutation(n)
        k = min(max(int(round(n * test_size)), 1), n - 1)
        test_idx, train_idx = order[:k], order[k:]
    return Subset(dataset, train_idx), Subset(dataset, test_idx)


class KFold:
    """K-fold cross-validation: ``split(n_or_labels)`` yields (train_idx, val_idx) pairs.

    ``stratify=True`` (pass labels to ``split``) deals each class round-robin across folds
    so that every fold keeps the class proportions. With ``shuffle`` the assignment is
    drawn from ``seed``.
    """

    def __init__(self, n_splits=5, *, shuffle=True, stratify=False, seed=0):
        if isinstance(n_splits, bool) or not isinstance(n_splits, (int, np.integer)) or \
                n_splits < 2:
            raise ValueError(f"n_splits must be an integer >= 2, got {n_splits!r}")
        self.n_splits = int(n_splits)
        self.shuffle = shuffle
        self.stratify = stratify
        self.seed = seed

    def fold_of(self, n_or_labels, rng=None):
        """An array giving each sample's fold number."""
        rng = rng if rng is not None else np.random.default_rng(self.seed)
        if isinstance(n_or_labels, (int, np.integer)):
            n, labels = int(n_or_labels), None
        else:
            labels = _labels_of(n_or_labels).reshape(-1)
            n = labels.size
        if n < self.n_splits:
            raise ValueError(f"cannot make {self.n_splits} folds from {n} samples; use "
                             f"n_splits <= {n}")
        folds = np.empty(n, dtype=np.int64)
        if self.stratify and labels is not None:
            offset = 0
            for cls in np.unique(labels):
                idx = np.flatnonzero(labels == cls)
                if self.shuffle:
                    rng.shuffle(idx)
                # Continue the round-robin where the last class stopped so fold sizes
                # stay balanced even when classes are small.
                folds[idx] = (np.arange(idx.size) + offset) % self.n_splits
                offset += idx.size
        else:
            order = rng.permutation(n) if self.shuffle else np.arange(n)
            folds[order] = np.arange(n) * self.n_splits // n
        return folds

    def split(self, n_or_labels):
        folds = self.fold_of(n_or_labels)
        for k in range(self.n_splits):
            yield np.flatnonzero(folds != k), np.flatnonzero(folds == k)

    def get_n_splits(self):
        return self.n_splits


class RepeatedKFold(KFold):
    """K-fold repeated ``n_repeats`` times with a different shuffle each time (iterated
    K-fold); yields ``n_splits * n_repeats`` (train_idx, val_idx) pairs."""

    def __init__(self, n_splits=5, n_repeats=2, *, stratify=False, seed=0):
        super().__init__(n_splits, shuffle=True, stratify=stratify, seed=seed)
        if isinstance(n_repeats, bool) or not isinstance(n_repeats, (int, np.integer)) or \
                n_repeats < 1:
            raise ValueError(f"n_repeats must be a positive integer, got {n_repeats!r}")
        self.n_repeats = int(n_repeats)

    def split(self, n_or_labels):
        rng = np.random.default_rng(self.seed)
        for _ in range(self.n_repeats):
            folds = self.fold_of(n_or_labels, rng)
            for k in range(self.n_splits):
                yield np.flatnonzero(folds != k), np.flatnonzero(folds == k)

    def get_n_splits(self):
        return self.n_splits * self.n_repeats
