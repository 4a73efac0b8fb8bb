"""gl.save / gl.load: round trips of tensors and nested state, atomic writes, and clear
errors (never code execution) for truncated, corrupt, foreign and newer files."""
import hashlib
import io
import json
import os
import pickle
import struct

import numpy as np
import pytest

import gradlab as gl
import gradlab.nn as nn
from gradlab.serialization import LEGACY_MAGIC as MAGIC
from gradlab.serialization import LEGACY_VERSION as FORMAT_VERSION
from gradlab.serialization import SerializationError


def _roundtrip(obj, **kw):
    buf = io.BytesIO()
    gl.save(obj, buf)
    return gl.load(io.BytesIO(buf.getvalue()), **kw), buf.getvalue()


def test_nested_roundtrip_keeps_types_values_and_order(device):
    t64 = gl.tensor(np.arange(6.0).reshape(2, 3), dtype=gl.float64, device=device)
    obj = {
        "b": {"w": t64, "i": gl.tensor([1, -2], device=device),
              "flag": gl.tensor([True, False], device=device)},
        "a": [1, 2.5, float("inf"), float("nan"), None, True, "text", (3, "x")],
        7: {"int key": 0.1},
        "scalar": gl.tensor(3.5, device=device),
        "empty": gl.zeros(0, 4, device=device),
        "np": np.array([[1, 2]], dtype=np.int32),
        "half": gl.tensor([1.5], dtype=gl.float16, device=device),
    }
    out, _ = _roundtrip(obj)
    assert list(out) == ["b", "a", 7, "scalar", "empty", "np", "half"]
    assert out["b"]["w"].dtype == gl.float64 and out["b"]["w"].device == t64.device
    np.testing.assert_array_equal(out["b"]["w"].cpu().numpy(), t64.cpu().numpy())
    assert out["b"]["i"].dtype == gl.int64 and out["b"]["i"].tolist() == [1, -2]
    assert out["b"]["flag"].tolist() == [True, False]
    a = out["a"]
    assert a[:3] == [1, 2.5, float("inf")] and np.isnan(a[3]) and a[4:7] == [None, True, "text"]
    assert a[7] == (3, "x") and isinstance(a[7], tuple)
    assert out[7] == {"int key": 0.1}  # exact float round trip
    assert out["scalar"].shape == () and out["scalar"].item() == 3.5
    assert out["empty"].shape == (0, 4)
    assert isinstance(out["np"], np.ndarray) and out["np"].dtype == np.int32
    assert out["half"].dtype == gl.float16


def test_requires_grad_and_non_contiguous_tensors():
    p = nn.Parameter(gl.randn(3, 4))
    out, _ = _roundtrip({"p": p, "pt": p.detach().T})
    assert out["p"].requires_grad and out["p"].is_leaf
    np.testing.assert_array_equal(out["pt"].numpy(), p.detach().numpy().T)


def test_model_and_optimizer_checkpoint_to_a_path(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    opt = gl.optim.Adam(model.parameters(), lr=0.01)
    model(gl.randn(8, 3)).sum().backward()
    opt.step()
    path = tmp_path / "ckpt.gl"
    gl.save({"model": model.state_dict(), "optim": opt.state_dict(), "epoch": 3}, path)
    assert os.listdir(tmp_path) == ["ckpt.gl"]  # no temporary file left behind
    ck = gl.load(str(path))
    fresh = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    fresh.load_state_dict(ck["model"])
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[k].numpy(), v.numpy())
    opt2 = gl.optim.Adam(fresh.parameters(), lr=0.01)
    opt2.load_state_dict(ck["optim"])
    assert opt2.state_dict()["state"][0]["step"] == 1 and ck["epoch"] == 3


def test_map_location_cpu(device):
    out, _ = _roundtrip({"x": gl.ones(2, device=device)}, map_location="cpu")
    assert out["x"].device == gl.device("cpu")


def test_failed_save_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "state.gl"
    gl.save({"x": gl.ones(2)}, path)
    before = path.read_bytes()
    with pytest.raises(SerializationError, match="can't store a builtins.object"):
        gl.save({"x": gl.ones(3), "bad": object()}, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["state.gl"]


def test_saving_unsupported_values_is_a_clear_error():
    with pytest.raises(SerializationError, match="save model.state_dict\\(\\), not the model"):
        gl.save(nn.Linear(2, 2), io.BytesIO())
    with pytest.raises(SerializationError, match="dict keys"):
        gl.save({(1, 2): 3}, io.BytesIO())


# -- bad files --------------------------------------------------------------------------------
def _good_bytes():
    return _roundtrip({"w": gl.randn(4, 4), "n": 1})[1]


@pytest.mark.parametrize("cut", [0, 5, 12, 30, -40, -1])
def test_truncated_file(cut):
    data = _good_bytes()[:cut]
    with pytest.raises(SerializationError, match="truncated|checksum|not a gradlab file"):
        gl.load(io.BytesIO(data))


@pytest.mark.parametrize("where", [25, 100, -100, -5])
def test_corrupted_byte_fails_the_checksum(where):
    data = bytearray(_good_bytes())
    data[where] ^= 0xFF
    with pytest.raises(SerializationError, match="checksum|malformed|truncated"):
        gl.load(io.BytesIO(bytes(data)))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_foreign_files_are_rejected_without_unpickling(tmp_path):
    for blob in (pickle.dumps(_Evil()), b"PK\x03\x04 zip file", b"", b"\x00" * 100):
        with pytest.raises(SerializationError, match="not a gradlab file|truncated"):
            gl.load(io.BytesIO(blob))


def _forge(header, data=b"", version=FORMAT_VERSION):
    """A file with a valid checksum around an arbitrary header (what an attacker could
    write): the loader must still validate every field."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    head = struct.pack("<8sIQ", MAGIC, version, len(raw)) + raw
    head += b"\0" * ((-len(head)) % 64)
    body = head + data
    return body + hashlib.sha256(body).digest()


def test_newer_version_is_rejected():
    blob = _forge({"root": None, "tensors": [], "data_len": 0}, version=FORMAT_VERSION + 1)
    with pytest.raises(SerializationError, match="newer than this gradlab reads"):
        gl.load(io.BytesIO(blob))


@pytest.mark.parametrize("header,data,msg", [
    ({"root": {"t": 0}, "tensors": [{"dtype": "float32", "shape": [4], "offset": 0,
                                     "nbytes": 16}], "data_len": 8}, b"\0" * 8,
     "does not fit"),
    ({"root": {"t": 0}, "tensors": [{"dtype": "object", "shape": [1], "offset": 0,
                                     "nbytes": 8}], "data_len": 8}, b"\0" * 8,
     "unsupported dtype"),
    ({"root": {"t": 3}, "tensors": [], "data_len": 0}, b"", "out of range"),
    ({"root": {"pickle": "cos\nsystem"}, "tensors": [], "data_len": 0}, b"",
     "unknown node kind"),
    ({"root": None, "tensors": [], "data_len": 99}, b"", "data section"),
    ({"nothing": 1}, b"", "malformed header"),
])
def test_forged_headers_are_validated(header, data, msg):
    with pytest.raises(SerializationError, match=msg):
        gl.load(io.BytesIO(_forge(header, data)))


def test_deeply_nested_forgery_is_an_error_not_a_crash():
    for depth in (300, 100_000):  # past our limit; past the JSON parser's recursion limit
        root = '{"l":[' * depth + "null" + "]}" * depth
        raw = ('{"root":' + root + ',"tensors":[],"data_len":0}').encode()
        with pytest.raises(SerializationError, match="too deep|malformed header"):
            gl.load(io.BytesIO(_forge(raw)))


def test_serialization_error_is_a_value_error():
    assert issubclass(SerializationError, ValueError)
    assert gl.SerializationError is SerializationError


def test_save_refuses_to_replace_a_device_or_directory(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(gl.SerializationError, match="not a regular file"):
        gl.save({"a": 1}, str(fifo))
    assert fifo.is_fifo()  # still the FIFO, not replaced by a file
    with pytest.raises(IsADirectoryError, match="is a directory"):
        gl.save({"a": 1}, str(tmp_path))
