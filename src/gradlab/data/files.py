"""Loaders for user files: CSV, NPZ and MNIST-style IDX. Each returns ``(X, y)`` NumPy
arrays (float32 features; int64 labels for classification, float32 for regression).

Errors name the file and, for CSV, the line and column, so a person can find the cell.
"""
from __future__ import annotations

import csv
import gzip
import os
import zlib

import numpy as np


class DataFormatError(ValueError):
    """A data file that cannot be read as asked; the message says where and why."""


def _to_labels(values, where, task):
    """Integer class labels from floats/strings, or float targets for regression."""
    if task == "regression":
        return np.asarray(values, dtype=np.float32)
    if task != "classification":
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
    out = np.empty(len(values), dtype=np.int64)
    for i, (v, loc) in enumerate(zip(values, where)):
        v = float(v)
        if not v.is_integer() or v < 0:
            raise DataFormatError(
                f"{loc}: label {v:g} is not a non-negative integer class index; "
                "classification needs labels 0, 1, 2, ... (map class names to integers "
                "first, or use task='regression')")
        if v >= 2**53:  # (not an exact integer in float64 any more, nor a usable class)
            raise DataFormatError(f"{loc}: label {v:g} is far too large for a class index; "
                                  "classification needs labels 0, 1, 2, ...: map the "
                                  "classes to 0..K-1 first")
        out[i] = int(v)
    return out


def _check_file(path, what):
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file; check the path (expected {what})")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory; expected {what}: give the path of "
                                "the file inside it")


def _read_text(path):
    _check_file(path, "a CSV file")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            return f.read()
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: not UTF-8 text (byte {exc.start}); save the file "
                              "as UTF-8 CSV") from None


def load_csv(path, label=-1, *, header="auto", delimiter=",", task="classification"):
    """Read a numeric CSV file; one column is the label, the others the features.

    ``label`` is a column index (negative counts from the end) or a column name from the
    header row. ``header="auto"`` treats the first row as a header when any of its cells
    is not a number. Ragged rows and non-numeric cells raise ``DataFormatError`` naming the
    file, the line and the column; so do classification labels that are not integers.
    """
    text = _read_text(path)
    rows = [(i + 1, row) for i, row in enumerate(csv.reader(text.splitlines(),
                                                              delimiter=delimiter))
            if row and any(cell.strip() for cell in row)]
    if not rows:
        raise DataFormatError(f"{path}: the file holds no data rows")

    def numeric(cell):
        try:
            float(cell)
            return True
        except ValueError:
            return False

    names = None
    first_line, first = rows[0]
    if header is True or (header == "auto" and not all(numeric(c) for c in first)):
        names = [c.strip() for c in first]
        rows = rows[1:]
        if not rows:
            raise DataFormatError(f"{path}: the file has a header but no data rows")
    width = len(names) if names is not None else len(rows[0][1])
    if width < 2:
        raise DataFormatError(f"{path}: needs at least 2 columns (features and a label), "
                              f"line {rows[0][0]} has {width}" + _delimiter_hint(first,
                                                                                 delimiter))

    if isinstance(label, str):
        if names is None:
            raise DataFormatError(f"{path}: label column {label!r} asked by name, but the "
                                  "file has no header row; give a column index instead")
        if label not in names:
            raise DataFormatError(f"{path}: no column named {label!r}; the columns are "
                                  f"{', '.join(names)}")
        label_col = names.index(label)
    elif isinstance(label, (int, np.integer)) and not isinstance(label, bool):
        if not -width <= label < width:
            raise DataFormatError(f"{path}: label column {label} is out of range for "
                                  f"{width} columns (valid: 0..{width - 1} or -1..-{width})")
        label_col = label % width
    else:
        raise TypeError(f"label must be a column index or name, got {label!r}")

    data = np.empty((len(rows), width), dtype=np.float64)
    hint = _delimiter_hint(rows[0][1], delimiter)
    for r, (line, row) in enumerate(rows):
        if len(row) != width:
            raise DataFormatError(f"{path}, line {line}: expected {width} columns, found "
                                  f"{len(row)} (ragged row)")
        for c, cell in enumerate(row):
            try:
                data[r, c] = float(cell)
            except ValueError:
                col = f"column {c + 1}" + (f" ({names[c]!r})" if names else "")
                raise DataFormatError(f"{path}, line {line}, {col}: {cell.strip()!r} is not "
                                      "a number" + hint) from None
    bad = ~np.isfinite(data)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DataFormatError(f"{path}, line {rows[r][0]}, column {c + 1}: value "
                              f"{data[r, c]} is not finite; remove or impute it")
    # Features (and regression targets) become float32: a larger value would turn into inf
    too_big = np.abs(data) > np.finfo(np.float32).max
    if task != "regression":
        too_big[:, label_col] = False  # class labels have their own checks
    if too_big.any():
        r, c = (int(i) for i in np.argwhere(too_big)[0])
        raise DataFormatError(f"{path}, line {rows[r][0]}, column {c + 1}: value "
                              f"{data[r, c]:g} is beyond float32's range "
                              f"(±{np.finfo(np.float32).max:.3g}), which gradlab trains in "
                              f"({int(too_big.sum())} such values); rescale the column (e.g. "
                              "standardize it) first")
    X = np.delete(data, label_col, axis=1).astype(np.float32)
    where = [f"{path}, line {line}, column {label_col + 1}" for line, _ in rows]
    return X, _to_labels(data[:, label_col], where, task)


def _delimiter_hint(cells, delimiter):
    """A hint when the cells look separated by another character than ``delimiter``."""
    text = delimiter.join(cells)
    for other, name in ((";", "';'"), ("\t", "tab"), ("|", "'|'"), (" ", "' '")):
        if other != delimiter and other in text.strip():
            return (f"; the rows look separated by {name}, not {delimiter!r}: pass "
                    f"delimiter={other!r} (gradlab: --delimiter "
                    f"{'tab' if other == chr(9) else repr(other)})")
    return ""


def load_npz(path, *, x_key=None, y_key=None, task="classification"):
    """Read features and labels from a ``.npz`` file. Keys default to the first of
    X/x/data/features/images and y/Y/labels/target/targets present in the file."""
    _check_file(path, "a .npz file")
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DataFormatError(f"{path}: not a readable .npz file ({exc})") from None
    with npz:
        keys = list(npz.files)

        def pick(given, candidates, what):
            if given is not None:
                if given not in keys:
                    raise DataFormatError(f"{path}: no array named {given!r}; it holds "
                                          f"{', '.join(keys)}")
                return given
            for k in candidates:
                if k in keys:
                    return k
            raise DataFormatError(f"{path}: no {what} array found (looked for "
                                  f"{', '.join(candidates)}; it holds {', '.join(keys)}); "
                                  f"name it with {'x_key' if what == 'feature' else 'y_key'}")

        xk = pick(x_key, ("X", "x", "data", "features", "images"), "feature")
        yk = pick(y_key, ("y", "Y", "labels", "target", "targets"), "label")
        X, y = npz[xk], npz[yk]
    if X.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":
        raise DataFormatError(f"{path}: arrays must be numeric, got {X.dtype} and {y.dtype}")
    if X.ndim == 0 or y.ndim == 0:
        raise DataFormatError(f"{path}: {xk!r} and {yk!r} must be arrays with one row per "
                              f"sample, got shapes {X.shape} and {y.shape}")
    if len(X) != len(y):
        raise DataFormatError(f"{path}: {xk!r} has {len(X)} rows but {yk!r} has {len(y)}")
    if len(X) == 0:
        raise DataFormatError(f"{path}: {xk!r} holds no rows (shape {X.shape}); save the "
                              "data with one row per sample")
    if X.ndim == 0 or 0 in X.shape[1:]:
        raise DataFormatError(f"{path}: {xk!r} has shape {X.shape}; it needs one row per "
                              "sample with at least one feature, shape (samples, features)")
    if task != "regression" and y.ndim > 1 and y[0].size != 1:
        raise DataFormatError(f"{path}: {yk!r} has shape {y.shape}; classification needs one "
                              "class index per row, shape (samples,): for one-hot labels "
                              f"save {yk}.argmax(axis=1) instead")
    X = X.reshape(len(X), -1)
    if X.dtype.kind == "f" and X.dtype.itemsize > 4:
        too_big = np.isfinite(X) & (np.abs(X) > np.finfo(np.float32).max)
        if too_big.any():
            r, c = (int(i) for i in np.argwhere(too_big)[0])
            raise DataFormatError(f"{path}: {xk}[{r}] has {X[r, c]:g} in column {c}, beyond "
                                  f"float32's range (±{np.finfo(np.float32).max:.3g}), which "
                                  f"gradlab trains in ({int(too_big.sum())} such values); "
                                  "rescale the features (e.g. standardize) before saving")
    X = X.astype(np.float32)
    bad = ~np.isfinite(X)
    if bad.any():
        r, c = (int(i) for i in np.argwhere(bad)[0])
        raise DataFormatError(f"{path}: {xk!r} holds NaN or Inf values ({xk}[{r}] has "
                              f"{X[r, c]} in column {c}, {int(bad.sum())} in all); remove or "
                              "impute them")
    y = y.reshape(-1)
    if task == "regression":
        return X, y.astype(np.float32)
    if y.dtype.kind == "f":
        return X, _to_labels(y.astype(np.float64),
                             [f"{path}, {yk}[{i}]" for i in range(len(y))], task)
    return X, _int_labels(y, path, yk)


def _int_labels(y, path, key):
    if (y < 0).any():
        i = int(np.flatnonzero(y < 0)[0])
        raise DataFormatError(f"{path}: {key}[{i}] = {y[i]} is negative; class labels must "
                              "be 0, 1, 2, ...")
    return y.astype(np.int64)


_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
              0x0E: ">f8"}


def read_idx(path):
    """One MNIST-style IDX file (optionally gzipped) as a NumPy array."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataFormatError(f"{path}: a corrupt or truncated gzip file ({exc}); download "
                              "or copy it again (or unpack it, if it is not compressed)"
                              ) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataFormatError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFormatError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataFormatError(f"{path}: header says shape {shape} ({expected} bytes) but the "
                              f"file holds {len(raw) - header} bytes of data")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find(directory, stem):
    for name in sorted(os.listdir(directory)):
        low = name.lower()
        if low.startswith(stem) and ("idx" in low or low.endswith(".gz")):
            return os.path.join(directory, name)
    return None


def load_idx(directory, *, scale=True):
    """MNIST-style data from a directory holding ``train-images-idx3-ubyte`` and
    ``train-labels-idx1-ubyte`` (and optionally ``t10k-*`` test files; ``.gz`` works).

    Returns ``((X_train, y_train), (X_test, y_test) or None)``; images are flattened to
    rows and, when ``scale``, uint8 pixels divided by 255.
    """
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory}: not a directory (expected one holding "
                                "train-images-idx3-ubyte and train-labels-idx1-ubyte)")
    parts = []
    for prefix in ("train", "t10k"):
        img, lab = _find(directory, f"{prefix}-images"), _find(directory, f"{prefix}-labels")
        if img is None or lab is None:
            if prefix == "train":
                raise DataFormatError(f"{directory}: missing train-images-idx3-ubyte or "
                                      "train-labels-idx1-ubyte")
            parts.append(None)
            continue
        X, y = read_idx(img), read_idx(lab)
        if len(X) != len(y):
            raise DataFormatError(f"{img} holds {len(X)} images but {lab} holds {len(y)} "
                                  "labels")
        X = X.reshape(len(X), -1).astype(np.float32)
        if scale and X.max(initial=0) > 1:
            X /= 255.0
        parts.append((X, _int_labels(y.reshape(-1).astype(np.int64), lab, "labels")))
    return parts[0], parts[1]
