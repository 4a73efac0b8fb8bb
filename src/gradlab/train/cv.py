"""K-fold cross-validation of a model builder."""
from __future__ import annotations

import numpy as np

from ..data.dataset import TensorDataset, dataset_arrays
from ..data.loader import DataLoader
from ..data.preprocessing import StandardScaler
from ..data.splits import KFold, RepeatedKFold
from .callbacks import EarlyStopping
from .loop import evaluate, fit


def unpack_build(built):
    """(model, loss_fn, optimizer, scheduler) from what a build function returned: a tuple
    of 3 or 4, or a dict with those keys."""
    if isinstance(built, dict):
        try:
            return built["model"], built["loss_fn"], built["optimizer"], built.get("scheduler")
        except KeyError as exc:
            raise ValueError(f"build() returned a dict without {exc}; it needs model, "
                             "loss_fn, optimizer (and optionally scheduler)") from None
    if isinstance(built, (tuple, list)) and len(built) in (3, 4):
        return (*built, None)[:4] if len(built) == 3 else tuple(built)
    raise ValueError("build() must return (model, loss_fn, optimizer[, scheduler]) or a dict "
                     f"with those keys, got {type(built).__name__}")


def has_batchnorm(model):
    from ..nn.layers import BatchNorm1d
    return any(isinstance(m, BatchNorm1d) for m in getattr(model, "modules", list)())


def resolve_drop_last(drop_last, model, n, batch_size):
    """``drop_last`` for a training loader: True/False as given; "auto" means True when the
    model has BatchNorm1d (a 1-row batch has no batch statistics) and the rows fill at
    least one batch."""
    if drop_last == "auto":
        return has_batchnorm(model) and n >= batch_size
    if not isinstance(drop_last, bool):
        raise ValueError(f"drop_last must be True, False or 'auto', got {drop_last!r}")
    return drop_last


def train_on_split(build, X, y, train_idx, val_idx, *, epochs=10, batch_size=32,
                   standardize=False, early_stopping=None, metrics=("accuracy",), seed=0,
                   device=None, verbose=0, drop_last=False, compile=False):
    """Build a fresh model, train it on rows ``train_idx`` and return its validation scores
    (``val_loss``, ``val_<metric>``, ``epochs``). The scaler, when asked for, is fitted on the
    training rows only. ``drop_last``: for the training loader (see ``resolve_drop_last``).
    ``compile``: as in ``fit``."""
    X_tr, X_val = X[train_idx], X[val_idx]
    if standardize:
        scaler = StandardScaler().fit(X_tr)
        X_tr, X_val = scaler.transform(X_tr), scaler.transform(X_val)
    # (The loaders draw from their own seeded generators, so building the model first
    # changes no random number.)
    model, loss_fn, optimizer, scheduler = unpack_build(build())
    train_loader = DataLoader(TensorDataset(X_tr, y[train_idx]), batch_size=batch_size,
                              shuffle=True, seed=seed, device=device,
                              drop_last=resolve_drop_last(drop_last, model, len(X_tr),
                                                          batch_size))
    val_loader = DataLoader(TensorDataset(X_val, y[val_idx]), batch_size=1024, device=device)
    callbacks = []
    if early_stopping:
        callbacks.append(EarlyStopping(patience=early_stopping, restore_best_weights=True))
    history = fit(model, loss_fn, optimizer, train_loader, val_loader, epochs=epochs,
                  scheduler=scheduler, callbacks=callbacks, metrics=metrics, device=device,
                  verbose=verbose, compile=compile)
    scores = {f"val_{k}": v for k, v in evaluate(model, loss_fn, val_loader, metrics).items()}
    scores["epochs"] = len(history)
    return scores


class CVResult:
    """Per-fold scores (``folds``: list of dicts with fold, repeat, val_loss, val_accuracy,
    epochs) and their ``mean`` and ``std`` (dicts keyed like the folds)."""

    def __init__(self, folds):
        self.folds = folds
        keys = [k for k in folds[0] if k not in ("fold", "repeat")]
        self.mean = {k: float(np.mean([f[k] for f in folds])) for k in keys}
        self.std = {k: float(np.std([f[k] for f in folds])) for k in keys}

    def __repr__(self):
        body = ", ".join(f"{k}={self.mean[k]:.4g}±{self.std[k]:.2g}" for k in self.mean)
        return f"CVResult({len(self.folds)} folds: {body})"


def cross_validate(build, dataset, k=5, repeats=1, *, epochs=10, batch_size=32,
                   stratify=True, standardize=False, early_stopping=None,
                   metrics=("accuracy",), seed=0, device=None, verbose=0, drop_last=False,
                   compile=False):
    """K-fold (``repeats`` > 1: repeated K-fold) cross-validation.

    ``build()`` returns a fresh ``(model, loss_fn, optimizer[, scheduler])`` for every fold.
    ``dataset`` is array-backed (e.g. ``TensorDataset(X, y)``) or ``(X, y)`` arrays. Folds are
    stratified by label when ``stratify``; with ``standardize`` each fold's scaler is fitted
    on that fold's training part only. ``drop_last`` and ``compile`` as in
    ``train_on_split``. Returns a CVResult.
    """
    X, y = _arrays(dataset)
    if repeats < 1 or int(repeats) != repeats:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    splitter = RepeatedKFold(k, repeats, stratify=stratify, seed=seed) if repeats > 1 else \
        KFold(k, shuffle=True, stratify=stratify, seed=seed)
    folds = []
    for i, (tr, va) in enumerate(splitter.split(y if stratify else len(y))):
        scores = train_on_split(build, X, y, tr, va, epochs=epochs, batch_size=batch_size,
                                standardize=standardize, early_stopping=early_stopping,
                                metrics=metrics, seed=seed + i, device=device,
                                verbose=verbose, drop_last=drop_last, compile=compile)
        folds.append({"fold": i % k + 1, "repeat": i // k + 1, **scores})
    return CVResult(folds)


def _arrays(dataset):
    if isinstance(dataset, (tuple, list)) and len(dataset) == 2:
        X, y = (np.asarray(a) for a in dataset)
    else:
        X, y = dataset_arrays(dataset)[:2]
    if len(X) != len(y):
        raise ValueError(f"features have {len(X)} rows but labels have {len(y)}")
    return X, y

