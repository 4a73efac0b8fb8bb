"""Crash-safe training checkpoints for ``fit(..., checkpoint_dir=DIR)``.

A checkpoint is one ``gl.save`` file ``ckpt-<step>.gl`` holding everything ``fit`` needs to
continue bit for bit: model, optimizer, callbacks (the LR scheduler's wrapper included),
History, epoch, the batch reached in it, the epoch's running totals, the data loader's
generator as it was when the epoch began, and every loaded backend's RNG state.

``gl.save`` writes to a temporary file, fsyncs it, renames it into place and fsyncs the
directory, so a crash at any moment leaves either the old or the new file, never half of
one. The previous checkpoint is deleted only after the new one is in place, so the last
good one always survives. On resume a file that fails its checksum/format checks is
never used silently: ``latest`` warns, names it, and falls back to the one before.
"""
from __future__ import annotations

import os
import re
import warnings

from ..backend import loaded_backends
from ..serialization import SerializationError, load, save

KIND = "gradlab.train.checkpoint"
VERSION = 1
_NAME = re.compile(r"^ckpt-(\d{10})\.gl$")
_PARTIAL = re.compile(r"^\.ckpt-\d{10}\.gl\..+\.tmp$")  # gl.save's temporary file
_KEEP = 2  # the newest and the one before it, in case the newest turns out unreadable


class CheckpointError(RuntimeError):
    """No usable checkpoint to resume from, or one that does not match this run."""


def path_for(directory, step):
    return os.path.join(directory, f"ckpt-{int(step):010d}.gl")


def list_checkpoints(directory):
    """Checkpoint paths in ``directory``, oldest first (by step)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = sorted((int(m.group(1)), n) for n in names if (m := _NAME.match(n)))
    return [os.path.join(directory, n) for _, n in found]


def write(directory, state):
    """Save ``state`` as the checkpoint of step ``state['step']``, then prune old ones."""
    os.makedirs(directory, exist_ok=True)
    path = path_for(directory, state["step"])
    try:
        save({"kind": KIND, "version": VERSION, **state}, path)
    except OSError as exc:
        kept = list_checkpoints(directory)
        raise OSError(exc.errno, f"checkpoint of step {state['step']} could not be written "
                                 f"({exc.strerror or exc}); "
                                 + (f"the previous checkpoint {kept[-1]} is intact and "
                                    f"training can continue from it with resume=True "
                                    f"(gradlab train --resume DIR) once the problem is fixed"
                                    if kept else "no checkpoint was written yet")) from exc
    # Only now that the new file is durable may older ones go.
    for old in list_checkpoints(directory)[:-_KEEP]:
        try:
            os.unlink(old)
        except FileNotFoundError:
            pass
    return path


def read(path):
    """Load and check one checkpoint file; raises SerializationError/CheckpointError."""
    state = load(path, map_location="cpu")
    if not isinstance(state, dict) or state.get("kind") != KIND:
        raise CheckpointError(f"{path} is a gradlab file but not a training checkpoint "
                              "(gl.save of something else); resume from a directory that "
                              "fit(checkpoint_dir=...) or gradlab train --out wrote, or load "
                              "this file with gl.load")
    if not isinstance(state.get("version"), int) or state["version"] > VERSION:
        raise CheckpointError(f"{path} is a training checkpoint of version "
                              f"{state.get('version')!r}, newer than this gradlab reads "
                              f"({VERSION}); upgrade gradlab")
    return state


def latest(directory):
    """The newest readable checkpoint in ``directory`` as ``(path, state)``.

    A newer file that cannot be read is reported with a warning (never used) and left in
    place for inspection; raises CheckpointError when no file is usable."""
    paths = list_checkpoints(directory)
    _remove_partial_writes(directory)
    if not paths:
        raise CheckpointError(f"resume: no checkpoint (ckpt-*.gl) in {directory!r}; train "
                              "with checkpoint_dir/--out first, or drop resume")
    errors = []
    for path in reversed(paths):
        try:
            state = read(path)
        except (SerializationError, CheckpointError, OSError) as exc:
            errors.append(f"{path}: {exc}")
            warnings.warn(f"resume: skipping unusable checkpoint {path} ({exc}); trying the "
                          "previous one", RuntimeWarning, stacklevel=3)
            continue
        return path, state
    raise CheckpointError(f"resume: no usable checkpoint in {directory!r} (restore an "
                          "intact copy there, or train from scratch without resume):\n  "
                          + "\n  ".join(errors))


def _remove_partial_writes(directory):
    # A process killed inside gl.save leaves its temporary file behind; nothing else ever
    # reads it, and the run being resumed is the only writer of this directory.
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        if _PARTIAL.match(name):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass


def rng_states():
    out = []
    for backend in loaded_backends():
        r = backend.random
        try:
            state = r.get_state()
        except Exception:
            state = None
        if state is None or not isinstance(state.get("generator"), dict):
            # CuPy's generators expose no portable state (``bit_generator.state`` is a
            # method there). Keep the seed and the counter-based (Philox) stream that
            # dropout, rand/randn/randint and RReLU draw from there; the generator itself
            # (randperm's on CUDA) restarts from its seed.
            state = {"seed": r.seed, "generator": None, "philox_key": r.philox_key,
                     "philox_offset": r.philox_offset}
        out.append({"device": str(backend.device), "state": state})
    return out


def restore_rng(saved):
    from ..backend import get_backend
    for entry in saved:
        try:
            backend = get_backend(entry["device"])
        except Exception:
            # A GPU the saving machine had and this one lacks: its stream cannot matter here.
            if entry["device"] == "cpu":
                raise
            continue
        state = entry["state"]
        if state["generator"] is None:  # see rng_states
            backend.random.reseed(state["seed"])
            backend.random.philox_key = state["philox_key"]
            backend.random.philox_offset = state["philox_offset"]
        else:
            backend.random.set_state(state)
