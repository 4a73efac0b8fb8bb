"""Augmentation: Gaussian noise and random shifts for small images (batch transforms for
``DataLoader(transform=...)``), and SMOTE oversampling for imbalanced tabular data.

Batch transforms are callables ``t(x, rng) -> x`` on a NumPy batch, drawing from the
generator they are given, so that an augmented run is reproducible from the loader's seed.
"""
from __future__ import annotations

import numpy as np


class GaussianNoise:
    """x + N(0, std^2), independently per element."""

    def __init__(self, std=0.1):
        if std < 0:
            raise ValueError(f"GaussianNoise std must be >= 0, got {std}")
        self.std = float(std)

    def __call__(self, x, rng):
        return (x + rng.normal(0.0, self.std, x.shape)).astype(x.dtype, copy=False)


class RandomShift:
    """Shift each image by a random whole number of pixels in [-max_shift, max_shift] along
    each axis, filling the uncovered border with ``fill``. Images are rows of ``shape``
    (e.g. (8, 8) for flattened digits) or arrays already shaped (N, H, W)."""

    def __init__(self, max_shift=1, shape=None, fill=0.0):
        if int(max_shift) != max_shift or max_shift < 0:
            raise ValueError(f"max_shift must be a non-negative integer, got {max_shift}")
        self.max_shift = int(max_shift)
        self.shape = tuple(shape) if shape is not None else None
        self.fill = fill

    def __call__(self, x, rng):
        flat = self.shape is not None
        imgs = x.reshape((len(x),) + self.shape) if flat else x
        if imgs.ndim != 3:
            raise ValueError(f"RandomShift needs (N, H, W) images or rows with shape=(H, W); "
                             f"got an array of shape {x.shape}")
        n, h, w = imgs.shape
        m = self.max_shift
        padded = np.full((n, h + 2 * m, w + 2 * m), self.fill, dtype=imgs.dtype)
        padded[:, m:m + h, m:m + w] = imgs
        dy = rng.integers(-m, m + 1, n)
        dx = rng.integers(-m, m + 1, n)
        # Gather each shifted window at once: rows (m - dy + i), cols (m - dx + j).
        rows = (m - dy)[:, None] + np.arange(h)[None, :]
        cols = (m - dx)[:, None] + np.arange(w)[None, :]
        out = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
        return out.reshape(x.shape)


def smote(X, y, *, k=5, target=None, seed=0):
    """SMOTE (Chawla et al., 2002): oversample minority classes with synthetic samples
    on the segments between a sample and one of its ``k`` nearest same-class neighbours.

    ``target`` is the count every class is raised to (default: the majority count).
    Returns new ``(X, y)`` with the originals first and the synthetic samples after.
    """
    X = np.asarray(X)
    y = np.asarray(y).reshape(-1)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"smote expects X of shape (N, F) and y of shape (N,), got "
                         f"{X.shape} and {y.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    goal = int(counts.max() if target is None else target)
    new_x, new_y = [X], [y]
    for cls, count in zip(classes, counts):
        need = goal - count
        if need <= 0:
            continue
        members = X[y == cls].astype(np.float64)
        if len(members) < 2:
            raise ValueError(f"class {cls} has {len(members)} sample; SMOTE needs at least 2 "
                             "samples of a class to interpolate between")
        kk = min(k, len(members) - 1)
        d = ((members[:, None, :] - members[None, :, :]) ** 2).sum(-1)
        np.fill_diagonal(d, np.inf)
        neighbours = np.argsort(d, axis=1)[:, :kk]
        base = rng.integers(0, len(members), need)
        other = neighbours[base, rng.integers(0, kk, need)]
        gap = rng.random((need, 1))
        new_x.append((members[base] + gap * (members[other] - members[base])).astype(X.dtype))
        new_y.append(np.full(need, cls, dtype=y.dtype))
    return np.concatenate(new_x), np.concatenate(new_y)
