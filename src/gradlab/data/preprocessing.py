"""Feature standardization, fitted on the training split only."""
from __future__ import annotations

import numpy as np

from .dataset import _host_array


def _check_finite(who, X):
    """NaN/Inf would silently turn a whole column's mean (and every scaled value in it)
    into NaN; name the first bad cell instead."""
    if X.dtype.kind in "fc":
        bad = ~np.isfinite(X)
        if bad.any():
            r, c = (int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{who}: X[{r}, {c}] is {X[r, c]} ({int(bad.sum())} non-finite "
                             f"value(s) in all); remove or impute NaN/Inf before scaling")


class StandardScaler:
    """z = (x - mean) / std per feature, with mean and std learned by ``fit`` on the
    training data only (fitting on validation or test data would leak them into training).
    Features with zero variance get std 1 so they pass through centred, not divided by 0.
    """

    def __init__(self, eps=1e-12):
        self.eps = eps
        self.mean = None
        self.scale = None

    def fit(self, X):
        X = _host_array(X, "X").astype(np.float64)
        if X.ndim != 2 or len(X) == 0:
            raise ValueError(f"StandardScaler.fit expects a non-empty (samples, features) "
                             f"array, got shape {X.shape}")
        _check_finite("StandardScaler.fit", X)
        self.mean = X.mean(axis=0)
        std = X.std(axis=0)
        self.scale = np.where(std > self.eps, std, 1.0)
        return self

    def _check(self, X, who):
        if self.mean is None:
            raise RuntimeError("StandardScaler is not fitted; call fit(X_train) first")
        X = _host_array(X, "X")
        if X.ndim != 2 or X.shape[1] != self.mean.size:
            raise ValueError(f"StandardScaler was fitted on {self.mean.size} features, got "
                             f"an array of shape {X.shape}")
        _check_finite(f"StandardScaler.{who}", X)
        return X

    def transform(self, X):
        X = self._check(X, "transform")
        dtype = X.dtype if X.dtype.kind == "f" else np.float32
        return ((X - self.mean) / self.scale).astype(dtype)

    def fit_transform(self, X):
        return self.fit(X).transform(X)

    def inverse_transform(self, Z):
        Z = self._check(Z, "inverse_transform")
        return (Z * self.scale + self.mean).astype(Z.dtype)

    def state_dict(self):
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist()}

    def load_state_dict(self, state):
        self.mean = np.asarray(state["mean"], dtype=np.float64)
        self.scale = np.asarray(state["scale"], dtype=np.float64)
