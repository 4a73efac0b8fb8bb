"""History: what ``fit`` records per epoch."""
from __future__ import annotations

import csv
import math


class History:
    """Per-epoch records of a training run.

    ``history.epochs`` is a list of dicts (``epoch`` (1-based), ``loss``, ``accuracy``,
    ``val_loss``, ``val_accuracy``, ``lr``, ``time`` ...); ``history["val_loss"]`` gives one
    column as a list, like Keras' ``history.history``. ``stop_reason`` says why training
    ended early (early stopping, a non-finite loss), or is None. ``compiled``: after
    ``fit(compile=True)``, the compiled step's ``info()`` (how many steps were replayed,
    recorded and run eagerly, and why any ran eagerly); None for eager training.
    """

    def __init__(self):
        self.epochs: list[dict] = []
        self.stop_reason: str | None = None
        self.compiled: dict | None = None

    def append(self, record: dict):
        self.epochs.append(dict(record))

    def __len__(self):
        return len(self.epochs)

    def keys(self):
        seen = []
        for rec in self.epochs:
            seen.extend(k for k in rec if k not in seen)
        return seen

    def __getitem__(self, key):
        if key not in self.keys():
            raise KeyError(f"history has no column {key!r}; it has {', '.join(self.keys())}")
        return [rec.get(key, math.nan) for rec in self.epochs]

    @property
    def history(self) -> dict:
        return {k: self[k] for k in self.keys()}

    def best_epoch(self, monitor="val_loss", mode="auto"):
        """1-based epoch with the best ``monitor`` value (None when never recorded)."""
        mode = resolve_mode(monitor, mode)
        best, best_epoch = None, None
        for rec in self.epochs:
            v = rec.get(monitor)
            if v is None or not math.isfinite(v):
                continue
            if best is None or (v < best if mode == "min" else v > best):
                best, best_epoch = v, rec["epoch"]
        return best_epoch

    def to_csv(self, path):
        keys = self.keys()
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            for rec in self.epochs:
                writer.writerow(rec)

    def state_dict(self):
        return {"epochs": [dict(r) for r in self.epochs], "stop_reason": self.stop_reason}

    def load_state_dict(self, state):
        self.epochs = [dict(r) for r in state["epochs"]]
        self.stop_reason = state.get("stop_reason")

    def __repr__(self):
        return f"History({len(self.epochs)} epochs, keys={self.keys()})"


def resolve_mode(monitor, mode):
    """'min' or 'max' for a monitored quantity; 'auto' means max for accuracy-like names."""
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode != "auto":
        return mode
    return "max" if any(w in monitor for w in ("acc", "auc", "f1", "score")) else "min"
