"""Datasets that work offline: the bundled 8x8 digits and seeded 2-D toy problems.

Each function returns ``(X, y)`` as NumPy arrays: float32 features and int64 labels; wrap
them with ``TensorDataset(X, y)``.

digits.npz holds the UCI ML hand-written digits test set as distributed with
scikit-learn's ``load_digits`` (1,797 8x8 images, pixel values 0..16, labels 0..9;
source: UCI Machine Learning Repository, "Optical Recognition of Handwritten Digits",
Alpaydin & Kaynak, licensed CC BY 4.0). It is stored as uint8 so the wheel stays small.
"""
from __future__ import annotations

import os

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))


def load_digits(*, flatten=True, scale=True):
    """The 1,797 8x8 hand-written digits: X is (1797, 64) (or (1797, 8, 8) with
    ``flatten=False``), divided by 16 into [0, 1] when ``scale``; y holds 0..9."""
    with np.load(os.path.join(_HERE, "digits.npz")) as npz:
        images, labels = npz["images"], npz["labels"]
    X = images.astype(np.float32)
    if scale:
        X /= 16.0
    if flatten:
        X = X.reshape(len(X), -1)
    return X, labels.astype(np.int64)


def _check_n(n_samples, classes):
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or \
            n_samples < classes:
        raise ValueError(f"n_samples must be an integer >= {classes}, got {n_samples!r}")
    return int(n_samples)


def _finish(X, y, noise, rng, shuffle=True):
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    if noise:
        X = X + rng.normal(0.0, noise, X.shape)
    if shuffle:
        order = rng.permutation(len(X))
        X, y = X[order], y[order]
    return X.astype(np.float32), y.astype(np.int64)


def _split_counts(n, classes):
    return [n // classes + (1 if i < n % classes else 0) for i in range(classes)]


def make_spirals(n_samples=400, *, classes=2, turns=1.5, noise=0.03, seed=0):
    """Interleaved spiral arms (two by default), one class per arm; radius grows from 0
    to 1 over ``turns`` revolutions. Not linearly separable: a classic MLP test."""
    n = _check_n(n_samples, classes)
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c, count in enumerate(_split_counts(n, classes)):
        r = np.linspace(0.05, 1.0, count)
        theta = r * turns * 2 * np.pi + 2 * np.pi * c / classes
        xs.append(np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1))
        ys.append(np.full(count, c))
    return _finish(np.concatenate(xs), np.concatenate(ys), noise, rng)


def make_moons(n_samples=400, *, noise=0.1, seed=0):
    """Two interleaving half circles (class 0 on top, class 1 below, shifted)."""
    n = _check_n(n_samples, 2)
    rng = np.random.default_rng(seed)
    n0, n1 = _split_counts(n, 2)
    t0, t1 = np.linspace(0, np.pi, n0), np.linspace(0, np.pi, n1)
    top = np.stack([np.cos(t0), np.sin(t0)], axis=1)
    bottom = np.stack([1 - np.cos(t1), 0.5 - np.sin(t1)], axis=1)
    y = np.concatenate([np.zeros(n0), np.ones(n1)])
    return _finish(np.concatenate([top, bottom]), y, noise, rng)


def make_circles(n_samples=400, *, noise=0.05, factor=0.5, seed=0):
    """A small circle (class 1, radius ``factor``) inside a large one (class 0, radius 1)."""
    n = _check_n(n_samples, 2)
    if not 0 < factor < 1:
        raise ValueError(f"factor must be in (0, 1), got {factor}")
    rng = np.random.default_rng(seed)
    n_out, n_in = _split_counts(n, 2)
    t_out = np.linspace(0, 2 * np.pi, n_out, endpoint=False)
    t_in = np.linspace(0, 2 * np.pi, n_in, endpoint=False)
    outer = np.stack([np.cos(t_out), np.sin(t_out)], axis=1)
    inner = factor * np.stack([np.cos(t_in), np.sin(t_in)], axis=1)
    y = np.concatenate([np.zeros(n_out), np.ones(n_in)])
    return _finish(np.concatenate([outer, inner]), y, noise, rng)
