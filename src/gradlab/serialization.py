"""``gl.save`` / ``gl.load``: safetensors files that never run code.

A file is a standard safetensors file (https://huggingface.co/docs/safetensors):

    header_len u64 (little-endian), the JSON header padded with spaces to 8 bytes, then the
    tensors' raw bytes (C order, little-endian), one after the other with no gaps.

Every tensor and NumPy array of the saved object is one safetensors tensor, named by its
path in the object (``"0.weight"`` for ``model.state_dict()``, ``"model.0.weight"`` inside a
checkpoint dict), so ``safetensors.numpy.load_file`` and ``safetensors.torch.load_file``
read it. The header's ``__metadata__`` holds what safetensors cannot: ``gradlab.format``
("2"), ``gradlab.structure`` (the object as JSON nodes, below) and ``gradlab.sha256``, the
SHA-256 of the whole file with those 64 hex digits read as zeros.

A node is JSON describing one value: null/true/false/ints/strings as themselves, floats
as {"f": hex} (exact, NaN/inf included), {"d": [[key, value], ...]} (dict; keys may be
str, int, float, bool or None), {"l": [...]} (list), {"u": [...]} (tuple), {"t": name,
"dev": device, "rg": requires_grad} (tensor) and {"a": name} (NumPy array).

Loading builds only these types and checks the checksum, every length and offset, and the
dtype against an allow-list, so a truncated, corrupt, foreign or hostile file gives a
SerializationError, never code execution. A safetensors file from elsewhere (no gradlab
metadata, e.g. a PyTorch state_dict saved with ``safetensors.torch.save_file``) loads as a
dict {name: CPU tensor}, checked for structure (it carries no checksum). Files of gradlab's
earlier container (format 1, magic ``GRADLAB\\x00``) still load. Writes are atomic: a
temporary file in the same directory, flushed and fsynced, then renamed over the target.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import struct
import tempfile

import numpy as np

from .autograd.tensor import Tensor
from .backend import get_backend

FORMAT_VERSION = 2  # the safetensors layout; 1 was gradlab's own container
LEGACY_MAGIC = b"GRADLAB\x00"
LEGACY_VERSION = 1
_ST_DTYPES = {"bool": "BOOL", "int8": "I8", "uint8": "U8", "int16": "I16", "uint16": "U16",
              "int32": "I32", "uint32": "U32", "int64": "I64", "uint64": "U64",
              "float16": "F16", "float32": "F32", "float64": "F64", "complex64": "C64"}
_NP_DTYPES = {v: k for k, v in _ST_DTYPES.items()}
_MAX_HEADER = 100_000_000  # safetensors' own limit
_ALIGN = 64
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
    root = _encode(obj, blobs, 0, ())
    parts = _safetensors_parts(root, blobs)
    if hasattr(f, "write"):
        for c in parts:
            f.write(c)
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
            for c in parts:
                out.write(c)
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


def _tensor_name(path, blobs, taken):
    """The safetensors name of the tensor at ``path``: its keys joined by dots, as PyTorch
    names a state_dict, made unique if two paths join to one name ({"a.b": x, "a": {"b":
    y}})."""
    name = ".".join(str(k) for k in path) or "tensor"
    if name in taken or name == "__metadata__":
        i = 1
        while f"{name}.{i}" in taken:
            i += 1
        name = f"{name}.{i}"
    taken.add(name)
    return name


def _table(blobs):
    """The safetensors header entries and the data chunks of ``blobs``."""
    table, chunks, pos = {}, [], 0
    for name, arr in blobs:
        # (np.ascontiguousarray would turn a 0-d array into shape (1,))
        data = arr if arr.flags.c_contiguous else arr.copy(order="C")
        if data.dtype.byteorder == ">":
            data = data.astype(data.dtype.newbyteorder("<"))
        raw = data.tobytes()
        table[name] = {"dtype": _ST_DTYPES[data.dtype.name], "shape": list(data.shape),
                       "data_offsets": [pos, pos + len(raw)]}
        chunks.append(raw)
        pos += len(raw)
    return table, chunks


_SHA_FIELD = b'"gradlab.sha256":"'
_SHA_BLANK = b"0" * 64


def _digest(header, chunks):
    """SHA-256 of the whole file with the digest's own 64 hex digits read as zeros: it covers
    every header byte too, and is checked before the header is parsed, so a damaged header
    reads as a checksum mismatch rather than as whatever the damage parses to."""
    at = header.rfind(_SHA_FIELD) + len(_SHA_FIELD)
    h = hashlib.sha256(bytes(header[:at]))
    h.update(_SHA_BLANK)
    h.update(bytes(header[at + 64:]))
    for c in chunks:
        h.update(c)
    return h.hexdigest().encode("ascii"), at


def _safetensors_parts(root, blobs):
    table, chunks = _table(blobs)
    structure = json.dumps(root, separators=(",", ":"), allow_nan=False)
    meta = {"format": "pt", "gradlab.format": str(FORMAT_VERSION),
            "gradlab.structure": structure, "gradlab.sha256": _SHA_BLANK.decode()}
    header = json.dumps({"__metadata__": meta, **table}, separators=(",", ":")).encode("utf-8")
    header += b" " * ((-len(header)) % 8)  # safetensors aligns the data to 8 bytes
    digest, at = _digest(header, chunks)
    header = header[:at] + digest + header[at + 64:]
    return [struct.pack("<Q", len(header)), header, *chunks]


def _encode(obj, blobs, depth, path, taken=None):
    taken = set() if taken is None else taken
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
    if isinstance(obj, (Tensor, np.ndarray)):
        arr = obj._backend.to_numpy(obj._data) if isinstance(obj, Tensor) else obj
        if arr.dtype.name not in _ST_DTYPES:
            raise SerializationError(
                f"gl.save: {'tensors' if isinstance(obj, Tensor) else 'arrays'} of dtype "
                f"{arr.dtype} can't be saved (safetensors has no such dtype); convert it, "
                f"e.g. to float64 or complex64")
        name = _tensor_name(path, blobs, taken)
        blobs.append((name, arr))
        if isinstance(obj, np.ndarray):
            return {"a": name}
        return {"t": name, "dev": str(obj.device), "rg": bool(obj.requires_grad)}
    if hasattr(obj, "__cuda_array_interface__"):
        raise SerializationError("gl.save: wrap CuPy arrays in a gl.Tensor before saving")
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if not (k is None or isinstance(k, (str, int, float, bool, np.integer))):
                raise SerializationError(f"gl.save: dict keys must be str, int, float, bool "
                                         f"or None, got {type(k).__name__}")
            items.append([_encode(k, blobs, depth + 1, path, taken),
                          _encode(v, blobs, depth + 1, path + (k,), taken)])
        return {"d": items}
    if isinstance(obj, (list, tuple)):
        return {"l" if isinstance(obj, list) else "u":
                [_encode(v, blobs, depth + 1, path + (i,), taken) for i, v in enumerate(obj)]}
    raise SerializationError(f"gl.save can't store a {type(obj).__module__}."
                             f"{type(obj).__name__}; it stores tensors, NumPy arrays, "
                             f"numbers, strings, bools, None and dicts/lists/tuples of them "
                             f"(save model.state_dict(), not the model)")


# -- load -----------------------------------------------------------------------------------
def load(f, map_location=None, weights_only=True):
    """Read what ``save`` wrote. Tensors go back to the device they were saved from, or to
    ``map_location`` ('cpu', 'cuda', a gl.device, or a dict {saved device: new device}).
    Raises SerializationError for anything that is not an intact gradlab file.

    ``weights_only`` is accepted for PyTorch code and changes nothing: a gradlab file only
    ever holds data, so loading is always weights-only."""
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
    if bytes(buf[:8]) == LEGACY_MAGIC:
        from .serialization_legacy import load_legacy
        return load_legacy(buf, where, map_location)
    return _load_safetensors(buf, where, map_location)


def _not_ours(where, why):
    return SerializationError(f"gl.load: {where} is not a gradlab file ({why}; it may be a "
                              f"PyTorch/pickle file (.pt, .pth) or another format, which "
                              f"gradlab does not read); give a file written by gl.save or a "
                              f"safetensors "
                              f"file (in PyTorch: safetensors.torch.save_file(model."
                              f"state_dict(), path))")


def _load_safetensors(buf, where, map_location):
    if len(buf) < 8:
        if not len(buf) or bytes(buf) == LEGACY_MAGIC[:len(buf)]:
            raise SerializationError(f"gl.load: {where} is truncated ({len(buf)} bytes); "
                                     f"{_DAMAGED}")
        raise _not_ours(where, f"only {len(buf)} bytes")
    header_len, = struct.unpack_from("<Q", buf, 0)
    if header_len < 2 or header_len > _MAX_HEADER or (len(buf) > 8 and buf[8] != ord("{")):
        raise _not_ours(where, "no safetensors header")
    if 8 + header_len > len(buf):
        raise SerializationError(f"gl.load: {where} is truncated (header of {header_len} "
                                 f"bytes announced, file has {len(buf)} bytes); {_DAMAGED}")
    raw = bytes(buf[8:8 + header_len])
    data = buf[8 + header_len:]
    # The version first: a newer gradlab may checksum differently.
    version = re.search(rb'"gradlab\.format":"(\d+)"', raw)
    if version and int(version.group(1)) > FORMAT_VERSION:
        raise SerializationError(f"gl.load: {where} has format version "
                                 f"{int(version.group(1))}, newer than this gradlab reads "
                                 f"({FORMAT_VERSION}); upgrade gradlab")
    marked = raw.rfind(_SHA_FIELD)
    if marked >= 0:
        stored = raw[marked + len(_SHA_FIELD):marked + len(_SHA_FIELD) + 64]
        if _digest(raw, [data])[0] != stored:
            raise SerializationError(f"gl.load: {where} is corrupt or truncated (checksum "
                                     f"mismatch); {_DAMAGED}")
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise TypeError("the header is not a JSON object")
        meta = header.pop("__metadata__", None) or {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise TypeError("__metadata__ is not a map of strings")
    except (ValueError, TypeError, RecursionError) as exc:
        raise SerializationError(f"gl.load: {where} has a malformed header ({exc}); "
                                 f"{_DAMAGED}") from None
    arrays = _read_table(header, data, where)
    if "gradlab.format" not in meta:
        # Someone else's safetensors file (PyTorch, JAX, ...): a flat state_dict on the CPU.
        ctx = _Loader(arrays, None, map_location, where)
        return {k: ctx.tensor(a, "cpu", False) for k, a in arrays.items()}
    try:
        version = int(meta["gradlab.format"])
        structure = meta["gradlab.structure"]
        meta["gradlab.sha256"]  # (checked above, before parsing)
    except (KeyError, ValueError):
        raise SerializationError(f"gl.load: {where} has malformed gradlab metadata; "
                                 f"{_DAMAGED}") from None
    if version > FORMAT_VERSION:
        raise SerializationError(f"gl.load: {where} has format version {version}, newer than "
                                 f"this gradlab reads ({FORMAT_VERSION}); upgrade gradlab")
    try:
        root = json.loads(structure)
    except (ValueError, RecursionError) as exc:
        raise SerializationError(f"gl.load: {where} has a malformed structure ({exc}); "
                                 f"{_DAMAGED}") from None
    ctx = _Loader(arrays, None, map_location, where)
    try:
        return ctx.decode(root, 0)
    except RecursionError:
        raise SerializationError(f"gl.load: {where} nests too deeply") from None


def _read_table(header, data, where):
    """{name: array} for a safetensors header, with every field checked: known dtype,
    sizes that fit the bytes, and tensors that tile the data section without gaps."""
    arrays, spans = {}, []
    for name, e in header.items():
        try:
            dtype, shape = e["dtype"], [int(x) for x in e["shape"]]
            begin, end = (int(x) for x in e["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise SerializationError(f"gl.load: {where}: tensor {name!r} has a malformed "
                                     f"entry; {_DAMAGED}") from None
        if dtype not in _NP_DTYPES:
            hint = " (convert bfloat16 to float32 before saving)" if dtype == "BF16" else ""
            raise SerializationError(f"gl.load: {where}: tensor {name!r} has unsupported "
                                     f"dtype {dtype!r}{hint}")
        dt = np.dtype(_NP_DTYPES[dtype]).newbyteorder("<")
        if any(x < 0 for x in shape) or begin < 0 or end < begin:
            raise SerializationError(f"gl.load: {where}: tensor {name!r} has a negative size "
                                     f"or offset; {_DAMAGED}")
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if count * dt.itemsize != end - begin:
            raise SerializationError(f"gl.load: {where}: tensor {name!r} (shape {shape}, "
                                     f"{dtype}) does not fit its {end - begin} bytes; "
                                     f"{_DAMAGED}")
        spans.append((begin, end, name, dt, shape, count))
    spans.sort()
    pos = 0
    for begin, end, name, *_ in spans:
        if begin != pos:
            raise SerializationError(f"gl.load: {where} is malformed (tensor {name!r} starts "
                                     f"at {begin}, expected {pos}); {_DAMAGED}")
        pos = end
    if pos != len(data):
        what = "truncated" if pos > len(data) else "malformed"
        raise SerializationError(f"gl.load: {where} is {what} (tensors take {pos} bytes, the "
                                 f"data section has {len(data)}); {_DAMAGED}")
    order = {name: i for i, name in enumerate(header)}  # keep the file's (save) order
    for begin, _end, name, dt, shape, count in sorted(spans, key=lambda s: order[s[2]]):
        arr = np.frombuffer(data, dtype=dt, count=count, offset=begin)
        arrays[name] = arr.reshape(shape).astype(dt.newbyteorder("="), copy=True)
    return arrays


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

    def tensor(self, arr, device, requires_grad):
        be = self._backend_for(device)
        data = be.asarray(arr) if be.device.type != "cpu" else arr
        t = Tensor._wrap(data, be)
        if requires_grad and data.dtype.kind in "fc":
            t.requires_grad = True
        return t

    def decode(self, node, depth):
        if depth > _MAX_DEPTH:
            raise self._bad("nesting too deep")
        if node is None or isinstance(node, (bool, str, int)):
            return node
        if isinstance(node, float):
            return node
        extra = {}
        if isinstance(node, dict) and "t" in node and self.entries is None:
            extra = {k: v for k, v in node.items() if k != "t"}
            if set(extra) - {"dev", "rg"}:
                raise self._bad(f"unexpected tensor node {str(node)[:60]!r}")
            node = {"t": node["t"]}
        if not isinstance(node, dict) or len(node) != 1:
            raise self._bad(f"unexpected node {str(node)[:60]!r}")
        (kind, val), = node.items()
        if kind == "f":
            try:
                return float.fromhex(val)
            except (TypeError, ValueError):
                raise self._bad(f"bad float {val!r}") from None
        if kind in ("t", "a"):
            if self.entries is None:  # format 2: referenced by name
                if not isinstance(val, str) or val not in self.arrays:
                    raise self._bad(f"tensor reference {str(val)[:60]!r} is not in the file")
            elif not isinstance(val, int) or not 0 <= val < len(self.arrays):
                raise self._bad(f"tensor reference {val!r} out of range")
            arr = self.arrays[val]
            if kind == "a":
                return arr
            e = self.entries[val] if self.entries is not None else extra
            return self.tensor(arr, str(e.get("dev", e.get("device", "cpu"))),
                               bool(e.get("rg", e.get("requires_grad"))))
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


__all__ = ["save", "load", "SerializationError", "FORMAT_VERSION", "LEGACY_VERSION"]
