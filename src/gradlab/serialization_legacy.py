"""Reading gradlab's earlier container, format 1 (magic ``GRADLAB\\x00``): kept so that
files written before the move to safetensors still load; nothing writes it any more.

Layout: the magic, the version (u32) and the header's length (u64), the JSON header
{"root": node, "tensors": [entries], "data_len": n}, padding to 64 bytes, the tensors'
bytes, then the SHA-256 of everything before it."""
from __future__ import annotations

import hashlib
import json
import struct

import numpy as np

from .serialization import _ALIGN, _DAMAGED, _DTYPES, LEGACY_VERSION, SerializationError, _Loader

PREFIX = struct.Struct("<8sIQ")  # magic, version, header length
DIGEST = 32  # the trailing SHA-256


def load_legacy(buf, where, map_location):
    """Format 1, gradlab's own container (magic, version, JSON header, data, SHA-256)."""
    if len(buf) < PREFIX.size:
        raise SerializationError(f"gl.load: {where} is truncated ({len(buf)} bytes); "
                                 f"{_DAMAGED}")
    _, version, header_len = PREFIX.unpack_from(buf, 0)
    if version > LEGACY_VERSION:
        raise SerializationError(f"gl.load: {where} has format version {version}, newer than "
                                 f"this gradlab reads ({LEGACY_VERSION}); upgrade gradlab")
    if version < 1:
        raise SerializationError(f"gl.load: {where} has an invalid format version {version}")
    if len(buf) < PREFIX.size + DIGEST or header_len > len(buf) - PREFIX.size - DIGEST:
        raise SerializationError(f"gl.load: {where} is truncated (header of {header_len} "
                                 f"bytes announced, file has {len(buf)} bytes); {_DAMAGED}")
    body, digest = buf[:-DIGEST], bytes(buf[-DIGEST:])
    if hashlib.sha256(body).digest() != digest:
        raise SerializationError(f"gl.load: {where} is corrupt or truncated (checksum "
                                 f"mismatch); {_DAMAGED}")
    hstart = PREFIX.size
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
    arrays = [read_array(buf, data_start, data_len, e, i, where) for i, e in
              enumerate(entries)]
    ctx = _Loader(arrays, entries, map_location, where)
    try:
        return ctx.decode(root, 0)
    except RecursionError:
        raise SerializationError(f"gl.load: {where} nests too deeply") from None


def read_array(buf, data_start, data_len, e, i, where):
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
