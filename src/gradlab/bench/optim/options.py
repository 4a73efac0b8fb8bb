"""The options of ``gradlab bench optim``, all checked before anything is timed or
written: the sweep's sizes, the optimizers, the device, the results directory, and
whether the largest case fits in memory."""
from __future__ import annotations

import datetime
import math
import os
import time
from dataclasses import dataclass

import numpy as np

from ..._host import available_memory
from .cases import DEFAULT_SIZES, FILE_STEM, POINTS_PER_DECADE, SPECS, TORCH_VARIANTS, InputError


@dataclass
class Config:
    optimizers: list
    sizes: list
    tensors: int
    dtype: np.dtype
    device: str
    out: str
    overwrite: bool
    repeats: int
    block_time: float
    torch: bool


_SIZES_HELP = ("write e.g. 1e4:1e7 (log-spaced, 3 points per decade), 1e4:1e7:7 (7 points) "
               "or 1e5,1e6")


def _count(text, spec):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 1 and value == int(value) and value <= 1e11):
        raise InputError(f"--sizes {spec!r}: {text.strip()!r} is not a whole number of "
                         f"parameters from 1 to 1e11; {_SIZES_HELP}")
    return int(value)


def parse_sizes(spec):
    """Total sizes of the sweep from ``A:B``, ``A:B:N`` or ``A,B,C`` (sorted, unique)."""
    text = spec.strip()
    if not text:
        raise InputError(f"--sizes is empty; {_SIZES_HELP}")
    if ":" not in text:
        return sorted({_count(t, spec) for t in text.split(",")})
    parts = text.split(":")
    if len(parts) > 3:
        raise InputError(f"--sizes {spec!r} has {len(parts) - 1} colons; {_SIZES_HELP}")
    lo, hi = _count(parts[0], spec), _count(parts[1], spec)
    if hi < lo:
        raise InputError(f"--sizes {spec!r}: the range runs downwards ({lo} > {hi}); give "
                         "the smaller size first")
    if len(parts) == 3:
        try:
            points = int(parts[2])
        except ValueError:
            points = 0
        if points < 1:
            raise InputError(f"--sizes {spec!r}: {parts[2]!r} is not a number of points >= 1; "
                             f"{_SIZES_HELP}")
    else:
        points = max(2, round(POINTS_PER_DECADE * math.log10(hi / lo)) + 1)
    if lo == hi or points == 1:
        return [lo] if points == 1 or lo == hi else [lo, hi]
    return sorted({int(round(v)) for v in np.geomspace(lo, hi, points)})


def parse_optimizers(text):
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    if names == ["all"]:
        return list(SPECS)
    unknown = [n for n in names if n not in SPECS]
    if unknown or not names:
        what = f"unknown optimizer {unknown[0]!r}" if unknown else "no optimizer named"
        raise InputError(f"--optimizers {text!r}: {what}; valid: {','.join(SPECS)} or all "
                         "(the optimizers gradlab fuses)")
    return list(dict.fromkeys(names))


def _check_device(spec):
    from ...backend import get_backend
    text = spec.strip().lower()
    if text != "cpu" and not (text == "cuda" or text.startswith("cuda:")):
        raise InputError(f"--device {spec!r}: valid choices are cpu, cuda and cuda:N")
    try:
        get_backend(text)  # DeviceUnavailableError says why CUDA is missing
    except ValueError as exc:
        raise InputError(f"--device {spec!r}: {exc}; valid choices are cpu, cuda and "
                         "cuda:N") from None
    return text


def config_from_args(args, today=None):
    """Check every option (nothing is written or timed yet); raises InputError."""
    if args.tensors < 1:
        raise InputError(f"--tensors must be >= 1, got {args.tensors}")
    if args.repeats < 1:
        raise InputError(f"--repeats must be >= 1, got {args.repeats} (7 gives a median "
                         "with a meaningful spread)")
    if not (math.isfinite(args.block_time) and 0 <= args.block_time <= 60):
        raise InputError(f"--block-time must be seconds from 0 to 60, got {args.block_time}")
    optimizers = parse_optimizers(args.optimizers)
    device = _check_device(args.device)
    kind = "cpu" if device == "cpu" else "cuda"
    sizes = parse_sizes(args.sizes if args.sizes is not None else DEFAULT_SIZES[kind])
    if sizes[0] < args.tensors:
        raise InputError(f"--sizes starts at {sizes[0]} parameters, fewer than --tensors "
                         f"{args.tensors}: every tensor needs at least one; raise the sizes "
                         "or lower --tensors")
    today = today or datetime.date.today().isoformat()
    out = args.out if args.out is not None else f"gradlab-bench-{today}"
    cfg = Config(optimizers, sizes, args.tensors, np.dtype(args.dtype), device,
                 os.path.abspath(out), args.overwrite, args.repeats, args.block_time,
                 not args.no_torch)
    check_out_dir(cfg.out, cfg.overwrite, given=args.out is not None)
    check_memory(cfg)
    return cfg


def check_out_dir(directory, overwrite, given=True):
    """Refuse a file, or a directory holding anything, unless ``overwrite``. Reads only."""
    flag = "--out" if given else "the default results directory"
    if not os.path.exists(directory):
        return
    if not os.path.isdir(directory):
        raise InputError(f"{flag} {directory!r} is an existing file, not a directory; give "
                         "the path of a directory (it is created if missing)")
    entries = sorted(os.listdir(directory))
    if entries and not overwrite:
        shown = ", ".join(entries[:4]) + (f" and {len(entries) - 4} more"
                                          if len(entries) > 4 else "")
        raise InputError(f"{flag} {directory!r} already holds {shown}; choose another --out, "
                         f"or pass --overwrite to move them aside to "
                         f"{directory.rstrip(os.sep)}.old-<time>")


def _available_bytes(device):
    if device == "cpu":
        return available_memory(physical_fallback=False)
    try:
        import cupy
        index = int(device.split(":")[1]) if ":" in device else 0
        with cupy.cuda.Device(index):
            return int(cupy.cuda.runtime.memGetInfo()[0])
    except Exception:  # a stand-in or an old CuPy without memGetInfo: no check
        return None


def needed_bytes(cfg):
    """Peak bytes of one case: every implementation's arrays live at once (one set for
    gradlab, one per torch variant), plus the roofline's two buffers and a torch
    temporary or two."""
    sets = 1 + (len(TORCH_VARIANTS) if cfg.torch else 0)
    arrays = max(SPECS[n].arrays for n in cfg.optimizers) * sets + 4
    return arrays * max(cfg.sizes) * cfg.dtype.itemsize


def check_memory(cfg):
    need, have = needed_bytes(cfg), _available_bytes(cfg.device)
    if have is not None and need > 0.8 * have:
        raise InputError(f"--sizes up to {max(cfg.sizes):.3g} needs about {need / 1e9:.1f} GB "
                         f"on {cfg.device} but {have / 1e9:.1f} GB is free; lower the largest "
                         "size (or pass --no-torch, which keeps one set of arrays)")


def prepare_out_dir(directory, overwrite):
    """Create ``directory``, prove it is writable, and with ``overwrite`` move what it holds
    to a new sibling DIR.old-<time>. Returns that path or None."""
    moved = None
    try:
        os.makedirs(directory, exist_ok=True)
        entries = sorted(os.listdir(directory))
        if entries and overwrite:
            base = directory.rstrip(os.sep)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            moved, n = f"{base}.old-{stamp}", 1
            while os.path.exists(moved):
                n += 1
                moved = f"{base}.old-{stamp}-{n}"
            os.mkdir(moved)
            for name in entries:
                os.rename(os.path.join(directory, name), os.path.join(moved, name))
        probe = os.path.join(directory, f".{FILE_STEM}-probe")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as exc:
        raise InputError(f"--out {directory!r} cannot be written: {exc.strerror or exc}; "
                         "choose a directory you can write to") from None
    return moved
