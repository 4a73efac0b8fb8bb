"""Dataset names as the CLI spells them: digits, spirals, moons, circles, csv:PATH,
npz:PATH, idx:DIR."""
from __future__ import annotations

from .datasets import load_digits, make_circles, make_moons, make_spirals
from .files import load_csv, load_idx, load_npz

_GENERATED = 600  # samples of each generated toy dataset
BUILTIN = {"digits": lambda seed: load_digits(),
           "spirals": lambda seed: make_spirals(_GENERATED, seed=seed),
           "moons": lambda seed: make_moons(_GENERATED, seed=seed),
           "circles": lambda seed: make_circles(_GENERATED, seed=seed)}
FILE_KINDS = ("csv", "npz", "idx")
CHOICES = tuple(BUILTIN) + ("csv:PATH", "npz:PATH", "idx:DIR")


def generator_params(spec, seed):
    """How a bundled or generated dataset is made (recorded in a run's data fingerprint)."""
    if spec == "digits":
        return {"name": "digits", "bundled": "digits.npz"}
    return {"name": spec, "n_samples": _GENERATED, "seed": seed}


def load_dataset(spec, *, seed=0, label=-1, delimiter=","):
    """``(X, y, test)`` for a dataset spec; ``test`` is ``(X_test, y_test)`` when the source
    defines its own test split (IDX t10k files), else None. ``label`` picks the CSV label
    column (index or name), ``delimiter`` the CSV cell separator."""
    if spec in BUILTIN:
        X, y = BUILTIN[spec](seed)
        return X, y, None
    kind, sep, path = spec.partition(":")
    if not sep or kind not in FILE_KINDS or not path:
        raise ValueError(f"unknown dataset {spec!r}; valid choices: {', '.join(CHOICES)}")
    if kind == "csv":
        X, y = load_csv(path, label=label, delimiter=delimiter)
        return X, y, None
    if kind == "npz":
        X, y = load_npz(path)
        return X, y, None
    train, test = load_idx(path)
    return train[0], train[1], test
