"""``gl.save`` / ``gl.load``: a self-describing file format that never runs code.

Layout (all integers little-endian):

    magic      8 bytes   b"GRADLAB\\x00"
    version    u32       FORMAT_VERSION
    header_len u64       length of the JSON header
    header     JSON      {"root": node, "tensors": [{dtype, shape, offset, nbytes, device,
                          requires_grad}], "data_len": n}
    padding    to a 64-byte boundary
    data       the tensors' raw bytes (C order, little-endian), each 64-byte aligned
    checksum   32 bytes  SHA-256 of everything before it

A node is JSON describing one value: null/true/false/ints/strings as themselves, floats
as {"f": hex} (exact, NaN/inf included), and {"d": [[key, value], ...]} (dict; keys may
be str, int, float, bool or None), {"l": [...]} (list), {"u": [...]} (tuple),
{"t": i} (tensor i), {"a": i} (NumPy array i). Loading only ever builds these types, and
checks the checksum, every length and offset, and the dtype against an allow-list, so a
truncated, corrupt, foreign or hostile file gives a SerializationError, never code
execution. Writes are atomic: a temporary file in the same directory, flushed and
fsynced, then renamed over the target.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import struct
import tempfile

import numpy as np

from .autograd.tensor import Tensor
from .backend import get_backend

MAGIC = b"GRADLAB\x00"
FORMAT_VERSION = 1
_ALIGN = 64
_PREFIX = struct.Struct("<8sIQ")
_DIGEST = 32
_MAX_DEPTH = 200
_DAMAGED = ("it cannot be used: load an intact copy (a backup, or an earlier checkpoint) or "
            "save it again")
_DTYPES = {"bool", "int8", "uint8", "int16", "int32", "int64", "uint16", "uint32", "uint64",
           "float16", "float32", "float64", "complex64", "complex128"}


class SerializationError(ValueError):
    """A file could not be read as a gradlab checkpoint (or a value cannot be saved)."""


# -- save -----------------------------------------------------------------------------------
def save(obj, f):
    """Write ``obj`` (a tensor, or nested dicts/lists/tuples of tensors, NumPy arrays,
    numbers, strings, bools and None, e.g. ``model.state_dict()`` or an optimizer's) to
    ``f``, a path or a binary file object. Writing to a path is atomic."""
    blobs = []
    root = _encode(obj, blobs, 0)
    entries, chunks, pos = [], [], 0
    for arr, device, requires_grad, _kind in blobs:
        pad = (-pos) % _ALIGN
        if pad:
            chunks.append(b"\0" * pad)
            pos += pad
        # (np.ascontiguousarray would turn a 0-d array into shape (1,))
        data = arr if arr.flags.c_contiguous else arr.copy(order="C")
        if data.dtype.byteorder == ">":
            data = data.astype(data.dtype.newbyteorder("<"))
        raw = data.tobytes()
        entries.append({"dtype": data.dtype.name, "shape": list(data.shape), "offset": pos,
                        "nbytes": len(raw), "device": device, "requires_grad": requires_grad})
        chunks.append(raw)
        pos += len(raw)
    header = json.dumps({"root": root, "tensors": entries, "data_len": pos},
                        separators=(",", ":"), allow_nan=False).encode("utf-8")
    head = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)) + header
    head += b"\0" * ((-len(head)) % _ALIGN)
    digest = hashlib.sha256()
    digest.update(head)
    for c in chunks:
        digest.update(c)

    if hasattr(f, "write"):
        f.write(head)
        for c in chunks:
            f.write(c)
        f.write(digest.digest())
        return
    path = os.fspath(f)
    if os.path.isdir(path):
        raise IsADirectoryError(f"gl.save: {path!r} is a directory; give a file path inside it")
    if os.path.exists(path) and not os.path.isfile(path):
        # The atomic rename would replace a device or FIFO (e.g. /dev/null) with a file.
        raise SerializationError(f"gl.save: {path!r} exists and is not a regular file; "
                                 "give the path of a regular file, or an open file object")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(errno.ENOENT, f"gl.save: the directory {directory!r} of "
                                f"{path!r} does not exist; create it first (os.makedirs) or "
                                f"save elsewhere")
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                                   dir=directory)
    except OSError as exc:
        raise _write_error(exc, path) from exc
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(head)
            for c in chunks:
                out.write(c)
            out.write(digest.digest())
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise _write_error(exc, path) from exc
        raise
    try:  # make the rename itself durable; not possible on every platform/filesystem
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _write_error(exc, path):
    """The OSError of a failed write (disk full, no permission, ...) restated for the user:
    which file, that it was left as it was, and what to do. Same errno, so the same
    OSError subclass (PermissionError, ...)."""
    reason = exc.strerror or str(exc)
    hint = {errno.ENOSPC: "free some disk space or save to another disk",
            errno.EACCES: "save to a directory you can write to",
            errno.EROFS: "save to a writable file system"}.get(exc.errno, "save elsewhere")
    return OSError(exc.errno, f"gl.save: could not write {path!r} ({reason}); the file was "
                              f"left as it was (no partial file remains): {hint}")


def _encode(obj, blobs, depth):
    if depth > _MAX_DEPTH:
        raise SerializationError(f"gl.save: nesting deeper than {_MAX_DEPTH} levels")
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return {"f": float(obj).hex()}
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Tensor):
        be = obj._backend
        blobs.append((be.to_numpy(obj.data), str(obj.device), bool(obj.requires_grad), "t"))
        return {"t": len(blobs) - 1}
    if isinstance(obj, np.ndarray):
        if obj.dtype.name not in _DTYPES:
            raise SerializationError(f"gl.save: arrays of dtype {obj.dtype} can't be saved")
        blobs.append((obj, "cpu", False, "a"))
        return {"a": len(blobs) - 1}
    if hasattr(obj, "__cuda_array_interface__"):
        raise SerializationError("gl.save: wrap CuPy arrays in a gl.Tensor before saving")
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if not (k is None or isinstance(k, (str, int, float, bool, np.integer))):
                raise SerializationError(f"gl.save: dict keys must be str, int, float, bool "
                                         f"or None, got {type(k).__name__}")
            items.append([_encode(k, blobs, depth + 1), _encode(v, blobs, depth + 1)])
        return {"d": items}
    if isinstance(obj, list):
        return {"l": [_encode(v, blobs, depth + 1) for v in obj]}
    if isinstance(obj, tuple):
        return {"u": [_encode(v, blobs, depth + 1) for v in obj]}
    raise SerializationError(f"gl.save can't store a {type(obj).__module__}."
                             f"{type(obj).__name__}; it stores tensors, NumPy arrays, "
                             f"numbers, strings, bools, None and dicts/lists/tuples of them "
                             f"(save model.state_dict(), not the model)")


# -- load -----------------------------------------------------------------------------------
def load(f, map_location=None):
    """Read what ``save`` wrote. Tensors go back to the device they were saved from, or to
    ``map_location`` ('cpu', 'cuda', a gl.device, or a dict {saved device: new device}).
    Raises SerializationError for anything that is not an intact gradlab file."""
    if hasattr(f, "read"):
        buf = f.read()
        name = getattr(f, "name", "<file object>")
    else:
        name = os.fspath(f)
        if os.path.isdir(name):
            raise IsADirectoryError(errno.EISDIR, f"gl.load: {name!r} is a directory; give "
                                    f"the path of a file written by gl.save inside it")
        if not os.path.exists(name):
            raise FileNotFoundError(errno.ENOENT, f"gl.load: {name!r} does not exist; check "
                                    f"the path (files are written by gl.save)")
        with open(name, "rb") as fh:
            buf = fh.read()
    buf = memoryview(buf) if not isinstance(buf, memoryview) else buf
    where = f"{name!s}"
    if len(buf) < _PREFIX.size or bytes(buf[:8]) != MAGIC:
        if len(buf) < 8 and MAGIC.startswith(bytes(buf)):
            raise SerializationError(f"gl.load: {where} is truncated ({len(buf)} bytes); "
                                     f"{_DAMAGED}")
        raise SerializationError(f"gl.load: {where} is not a gradlab file (wrong magic bytes;"
                                 f" it may be a PyTorch/pickle or other file, which gradlab "
                                 f"does not read); give a file written by gl.save")
    _, version, header_len = _PREFIX.unpack_from(buf, 0)
    if version > FORMAT_VERSION:
        raise SerializationError(f"gl.load: {where} has format version {version}, newer than "
                                 f"this gradlab reads ({FORMAT_VERSION}); upgrade gradlab")
    if version < 1:
        raise SerializationError(f"gl.load: {where} has an invalid format version {version}")
    if len(buf) < _PREFIX.size + _DIGEST or header_len > len(buf) - _PREFIX.size - _DIGEST:
        raise SerializationError(f"gl.load: {where} is truncated (header of {header_len} "
                                 f"bytes announced, file has {len(buf)} bytes); {_DAMAGED}")
    body, digest = buf[:-_DIGEST], bytes(buf[-_DIGEST:])
    if hashlib.sha256(body).digest() != digest:
        raise SerializationError(f"gl.load: {where} is corrupt or truncated (checksum "
                                 f"mismatch); {_DAMAGED}")
    hstart = _PREFIX.size
    try:
        header = json.loads(bytes(buf[hstart:hstart + header_len]).decode("utf-8"))
        root, entries, data_len = header["root"], header["tensors"], int(header["data_len"])
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise SerializationError(f"gl.load: {where} has a malformed header ({exc}); "
                                 f"{_DAMAGED}") from None
    data_start = hstart + header_len + ((-(hstart + header_len)) % _ALIGN)
    if data_start + data_len != len(body) or not isinstance(entries, list):
        raise SerializationError(f"gl.load: {where} is malformed (data section of "
                                 f"{len(body) - data_start} bytes, header says {data_len}); "
                                 f"{_DAMAGED}")
    arrays = [_read_array(buf, data_start, data_len, e, i, where) for i, e in
              enumerate(entries)]
    ctx = _Loader(arrays, entries, map_location, where)
    try:
        return ctx.decode(root, 0)
    except RecursionError:
        raise SerializationError(f"gl.load: {where} nests too deeply") from None


def _read_array(buf, data_start, data_len, e, i, where):
    try:
        dtype, shape = e["dtype"], [int(s) for s in e["shape"]]
        offset, nbytes = int(e["offset"]), int(e["nbytes"])
    except (KeyError, TypeError, ValueError):
        raise SerializationError(f"gl.load: {where}: tensor entry {i} is malformed") from None
    if dtype not in _DTYPES:
        raise SerializationError(f"gl.load: {where}: tensor {i} has unsupported dtype "
                                 f"{dtype!r}")
    dt = np.dtype(dtype).newbyteorder("<")
    count = 1
    for s in shape:
        if s < 0:
            raise SerializationError(f"gl.load: {where}: tensor {i} has a negative size")
        count *= s
    if count * dt.itemsize != nbytes or offset < 0 or offset + nbytes > data_len:
        raise SerializationError(f"gl.load: {where}: tensor {i} (shape {shape}, {dtype}) does "
                                 f"not fit its {nbytes} bytes at offset {offset}")
    arr = np.frombuffer(buf, dtype=dt, count=count, offset=data_start + offset)
    return arr.reshape(shape).astype(dt.newbyteorder("="), copy=True)


class _Loader:
    def __init__(self, arrays, entries, map_location, where):
        self.arrays, self.entries, self.where = arrays, entries, where
        self.map_location = map_location

    def _bad(self, what):
        return SerializationError(f"gl.load: {self.where} is malformed ({what}); {_DAMAGED}")

    def _backend_for(self, saved):
        loc = self.map_location
        if isinstance(loc, dict):
            loc = loc.get(saved, saved)
        target = saved if loc is None else loc
        try:
            return get_backend(target)
        except Exception as exc:
            if loc is not None and loc != saved:  # the asked-for device is at fault
                raise type(exc)(f"gl.load: map_location={loc!r} is not a device this machine "
                                f"can use ({exc}); pass 'cpu', 'cuda', 'cuda:N', a gl.device "
                                "or a dict {saved device: new device}") from None
            raise type(exc)(f"gl.load: the file holds tensors saved on '{saved}', which is "
                            f"not available here ({exc}); pass map_location='cpu'") from None

    def decode(self, node, depth):
        if depth > _MAX_DEPTH:
            raise self._bad("nesting too deep")
        if node is None or isinstance(node, (bool, str, int)):
            return node
        if isinstance(node, float):
            return node
        if not isinstance(node, dict) or len(node) != 1:
            raise self._bad(f"unexpected node {str(node)[:60]!r}")
        (kind, val), = node.items()
        if kind == "f":
            try:
                return float.fromhex(val)
            except (TypeError, ValueError):
                raise self._bad(f"bad float {val!r}") from None
        if kind in ("t", "a"):
            if not isinstance(val, int) or not 0 <= val < len(self.arrays):
                raise self._bad(f"tensor reference {val!r} out of range")
            arr = self.arrays[val]
            if kind == "a":
                return arr
            e = self.entries[val]
            be = self._backend_for(str(e.get("device", "cpu")))
            data = be.asarray(arr) if be.device.type != "cpu" else arr
            t = Tensor._wrap(data, be)
            if e.get("requires_grad") and data.dtype.kind in "fc":
                t.requires_grad = True
            return t
        if kind == "d":
            if not isinstance(val, list):
                raise self._bad("dict node is not a list of pairs")
            out = {}
            for pair in val:
                if not isinstance(pair, list) or len(pair) != 2:
                    raise self._bad("dict item is not a [key, value] pair")
                key = self.decode(pair[0], depth + 1)
                if not (key is None or isinstance(key, (str, int, float, bool))):
                    raise self._bad("dict key of an unhashable type")
                out[key] = self.decode(pair[1], depth + 1)
            return out
        if kind in ("l", "u"):
            if not isinstance(val, list):
                raise self._bad("list node is not a list")
            items = [self.decode(v, depth + 1) for v in val]
            return items if kind == "l" else tuple(items)
        raise self._bad(f"unknown node kind {kind!r}")


__all__ = ["save", "load", "SerializationError", "FORMAT_VERSION"]
