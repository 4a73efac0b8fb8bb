"""Run directories: one run per ``--out`` directory.

A run directory holds a manifest (``gradlab-run.json``: format version, run id, creation
time, the run's options and a fingerprint of its data) and a lock file (``.lock``) that
the run holds with ``fcntl.flock`` while it trains, so a second process on the same
directory fails at once instead of interleaving files with the first.

Nothing here writes anything until ``claim`` is called, and ``claim`` is called only after
every input has been checked: a command that fails leaves the directory as it was.
"""
from __future__ import annotations

import datetime
import errno
import hashlib
import json
import os
import time
import uuid

import numpy as np

from .main import UsageError

MANIFEST = "gradlab-run.json"
LOCK = ".lock"
LEGACY_ARGS = "run_args.json"  # what gradlab wrote before run manifests existed
FORMAT = "gradlab.run"
VERSION = 1


# -- data fingerprint ------------------------------------------------------------------------
def fingerprint(spec, generator, arrays, classes):
    """What a resume must find again: the source and how it was generated, its shapes and
    class count, and a sha256 over the loaded arrays' dtypes, shapes and bytes (the values
    training sees, so any edit of a data file that changes them is caught)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    out = {"source": spec, "generator": generator, "samples": int(len(arrays[1])),
           "features": int(arrays[0].shape[1]) if arrays[0].ndim == 2 else None,
           "classes": int(classes), "sha256": h.hexdigest()}
    if len(arrays) == 4:
        out["test_samples"] = int(len(arrays[3]))
    return out


def describe_change(old, new):
    """A sentence saying how the data differ, or None when the fingerprints agree."""
    if old == new:
        return None
    changes = [f"{key} {old.get(key)!r} -> {new.get(key)!r}"
               for key in ("source", "generator", "samples", "test_samples", "features",
                           "classes") if old.get(key) != new.get(key)]
    if not changes:
        changes = [f"same shapes but different values (sha256 {str(old.get('sha256'))[:12]}"
                   f"... -> {new['sha256'][:12]}...)"]
    return "; ".join(changes)


# -- inspecting a directory (read-only) ------------------------------------------------------
def read_manifest(directory):
    """The manifest of ``directory`` as a dict, or None when it has none."""
    path = os.path.join(directory, MANIFEST)
    try:
        with open(path) as f:
            manifest = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path} cannot be read ({exc}); it is damaged: restore it from a "
                         "copy, or start a new run with --out NEWDIR") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UsageError(f"{path} is not a gradlab run manifest; restore it from a copy, or "
                         "start a new run with --out NEWDIR")
    if not isinstance(manifest.get("version"), int) or manifest["version"] > VERSION:
        raise UsageError(f"{path} has format version {manifest.get('version')!r}, newer than "
                         f"this gradlab reads ({VERSION}); upgrade gradlab")
    # (config: a resume reads its world size, export its model options; extended: an
    # extension appends to it)
    for key, kind in (("run_id", str), ("args", dict), ("config", dict), ("data", dict),
                      ("extended", list)):
        if not isinstance(manifest.get(key), kind):
            raise UsageError(f"{path}: {key!r} is missing or not a {kind.__name__}; the file "
                             "was edited or damaged: restore it, or start a new run with "
                             "--out NEWDIR")
    return manifest


def _entries(directory):
    return sorted(n for n in os.listdir(directory) if n != LOCK)


def check_out(directory, overwrite):
    """Refuse an ``--out`` that is a file, or that holds another run or files gradlab did
    not write (unless ``overwrite``). Reads only."""
    if not os.path.exists(directory):
        return
    if not os.path.isdir(directory):
        raise UsageError(f"--out {directory!r} is an existing file, not a directory; give "
                         "the path of a directory (it is created if missing)")
    if overwrite:
        return
    entries = _entries(directory)
    if not entries:
        return
    manifest = None
    try:
        manifest = read_manifest(directory)
    except UsageError:
        pass
    if manifest is not None:
        raise UsageError(f"--out {directory!r} holds run {manifest['run_id']} (started "
                         f"{manifest.get('created', '?')}); continue it with --resume "
                         f"{directory}, choose another --out, or pass --overwrite to move "
                         f"its files aside to {directory.rstrip(os.sep)}.old-<time>")
    shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5
                                      else "")
    older = " (written by an older gradlab without run manifests)" \
        if LEGACY_ARGS in entries else ""
    raise UsageError(f"--out {directory!r} is not empty: it holds {shown}{older}; gradlab "
                     "writes a run only into a new or empty directory: choose another --out, "
                     "or pass --overwrite to move these files aside to "
                     f"{directory.rstrip(os.sep)}.old-<time>")


# -- claiming a directory (writes) -----------------------------------------------------------
class RunLock:
    """An exclusive ``flock`` on DIR/.lock, held until ``release`` (or process exit)."""

    def __init__(self, directory):
        import fcntl
        self.path = os.path.join(directory, LOCK)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            pid = _read_pid(self.fd)
            os.close(self.fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                who = f"process {pid}" if pid else "another process"
                raise UsageError(f"{directory!r} is in use by {who}, which holds its lock "
                                 f"({self.path}); wait for it to finish, or give this run "
                                 "another --out") from None
            raise
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())

    def release(self):
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None


def _read_pid(fd):
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text.isdigit() else None
    except (OSError, ValueError):
        return None


def _move_aside(directory):
    """Move every entry but the lock into a new sibling DIR.old-<time>; returns its path.
    The directory itself stays (it may be the working directory)."""
    base = os.path.abspath(directory).rstrip(os.sep)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, n = f"{base}.old-{stamp}", 1
    while os.path.exists(target):
        n += 1
        target = f"{base}.old-{stamp}-{n}"
    entries = _entries(directory)
    if not entries:
        return None
    os.mkdir(target)
    for name in entries:
        os.rename(os.path.join(directory, name), os.path.join(target, name))
    return target


def claim(directory, overwrite, run_id=None):
    """Create ``directory`` if needed, take its lock and (with ``overwrite``) move the old
    contents aside; to resume (``run_id`` given), check the directory still holds that run.
    Returns ``(lock, moved_to or None)``. Call only after every input has been checked."""
    try:
        os.makedirs(directory, exist_ok=True)
        lock = RunLock(directory)
    except OSError as exc:
        raise UsageError(f"--out {directory!r} cannot be written: {exc.strerror or exc}; "
                         "choose a directory you can write to") from None
    try:
        # Checked again under the lock: another run may have claimed it since check_out.
        moved = None
        if run_id is None:
            check_out(directory, overwrite)
            moved = _move_aside(directory) if overwrite else None
        elif (read_manifest(directory) or {}).get("run_id") != run_id:
            raise UsageError(f"--resume {directory!r}: the directory was given to another run "
                             "while this one started; check what else writes there")
    except BaseException:
        lock.release()
        raise
    return lock, moved


def new_manifest(args_dict, config, data):
    return {"format": FORMAT, "version": VERSION, "run_id": uuid.uuid4().hex,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "args": args_dict, "config": config, "data": data, "extended": []}


def write_manifest(directory, manifest):
    """Atomically (temporary file, fsync, rename)."""
    path = os.path.join(directory, MANIFEST)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
