"""gl.save writes safetensors files: readable by the safetensors package and by PyTorch, a
PyTorch state_dict saved with safetensors loads into the gradlab model, gradlab's checksum
and structure ride in __metadata__, and files of the earlier container still load."""
import hashlib
import io
import json
import struct

import numpy as np
import pytest

import gradlab as gl
import gradlab.nn as nn
from gradlab.serialization import LEGACY_MAGIC, SerializationError


def _mlp(lib):
    return lib.nn.Sequential(lib.nn.Linear(4, 8), lib.nn.BatchNorm1d(8), lib.nn.ReLU(),
                             lib.nn.Linear(8, 3))


def _trained_gradlab_mlp():
    gl.manual_seed(0)
    model = _mlp(gl)
    opt = gl.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):  # moves the BatchNorm running stats and num_batches_tracked
        opt.zero_grad()
        model(gl.randn(16, 4)).pow(2).mean().backward()
        opt.step()
    return model.eval()


def _header(path):
    raw = open(path, "rb").read()
    n, = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n])


def test_state_dict_file_is_plain_safetensors(tmp_path):
    st_numpy = pytest.importorskip("safetensors.numpy", reason="safetensors is not installed")
    model = _trained_gradlab_mlp()
    path = tmp_path / "m.safetensors"
    gl.save(model.state_dict(), path)
    arrays = st_numpy.load_file(str(path))
    assert list(arrays) == list(model.state_dict()) or set(arrays) == set(model.state_dict())
    for k, v in model.state_dict().items():
        assert arrays[k].dtype == v.dtype and arrays[k].shape == v.shape
        np.testing.assert_array_equal(arrays[k], v.numpy())
    meta = _header(path)["__metadata__"]
    assert meta["gradlab.format"] == "2" and len(meta["gradlab.sha256"]) == 64


def test_nested_checkpoint_names_and_structure(tmp_path):
    model = nn.Linear(2, 2)
    opt = gl.optim.Adam(model.parameters(), lr=0.01)
    model(gl.ones(1, 2)).sum().backward()
    opt.step()
    path = tmp_path / "ckpt.safetensors"
    gl.save({"model": model.state_dict(), "optim": opt.state_dict(), "epoch": 4,
             "clash": {"a.b": gl.ones(1), "a": {"b": gl.zeros(1)}}}, path)
    names = set(_header(path)) - {"__metadata__"}
    assert {"model.weight", "model.bias", "optim.state.0.exp_avg", "clash.a.b",
            "clash.a.b.1"} <= names
    ck = gl.load(path)
    assert ck["epoch"] == 4 and ck["clash"]["a.b"].item() == 1 and \
        ck["clash"]["a"]["b"].item() == 0
    opt2 = gl.optim.Adam(nn.Linear(2, 2).parameters(), lr=0.01)
    opt2.load_state_dict(ck["optim"])
    np.testing.assert_array_equal(ck["optim"]["state"][0]["exp_avg"].numpy(),
                                  opt.state_dict()["state"][0]["exp_avg"].numpy())


def test_a_changed_tensor_entry_fails_the_checksum(tmp_path):
    path = tmp_path / "m.safetensors"
    gl.save({"w": gl.ones(2, 2, dtype=gl.float32)}, path)
    raw = open(path, "rb").read()
    n, = struct.unpack("<Q", raw[:8])
    # Same size, other dtype: structurally valid, so only the checksum can catch it.
    forged = raw[:8 + n].replace(b'"dtype":"F32"', b'"dtype":"I32"') + raw[8 + n:]
    assert forged != raw
    with pytest.raises(SerializationError, match="checksum"):
        gl.load(io.BytesIO(forged))


@pytest.mark.parametrize("entry,msg", [
    ({"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}, "does not fit"),
    ({"dtype": "BF16", "shape": [4], "data_offsets": [0, 8]}, "convert bfloat16"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}, "starts at 4"),
    ({"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "truncated"),
])
def test_forged_safetensors_entries_are_refused(entry, msg):
    header = json.dumps({"x": entry}).encode()
    blob = struct.pack("<Q", len(header)) + header + b"\0" * 8
    with pytest.raises(SerializationError, match=msg):
        gl.load(io.BytesIO(blob))


def test_a_foreign_safetensors_file_loads_as_a_flat_dict():
    header = json.dumps({"w": {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]},
                         "__metadata__": {"format": "np"}}).encode()
    blob = struct.pack("<Q", len(header)) + header + np.array([1.5, -2.0]).tobytes()
    out = gl.load(io.BytesIO(blob))
    assert list(out) == ["w"] and out["w"].dtype == gl.float64
    assert out["w"].tolist() == [1.5, -2.0]


def _legacy_file(obj_node, arrays):
    """A format-1 file as gradlab 0.1 wrote it (magic, version, JSON header, 64-byte aligned
    data, SHA-256 of everything before it)."""
    entries, data = [], b""
    for a in arrays:
        data += b"\0" * ((-len(data)) % 64)
        entries.append({"dtype": a.dtype.name, "shape": list(a.shape), "offset": len(data),
                        "nbytes": a.nbytes, "device": "cpu", "requires_grad": True})
        data += a.tobytes()
    raw = json.dumps({"root": obj_node, "tensors": entries, "data_len": len(data)}).encode()
    head = struct.pack("<8sIQ", LEGACY_MAGIC, 1, len(raw)) + raw
    head += b"\0" * ((-len(head)) % 64)
    return head + data + hashlib.sha256(head + data).digest()


def test_version_1_checkpoints_still_load():
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    blob = _legacy_file({"d": [["weight", {"t": 0}], ["epoch", 2]]}, [w])
    out = gl.load(io.BytesIO(blob))
    assert out["epoch"] == 2 and out["weight"].requires_grad
    np.testing.assert_array_equal(out["weight"].detach().numpy(), w)


# -- to and from PyTorch (optional: skips without torch) --------------------------------------
def test_weights_move_to_and_from_pytorch(tmp_path):
    torch = pytest.importorskip("torch", reason="torch is not installed (optional; "
                                "`make bench` installs torch==2.13.0 CPU)")
    st_torch = pytest.importorskip("safetensors.torch", reason="safetensors is not installed")
    model = _trained_gradlab_mlp()
    x = np.random.default_rng(1).standard_normal((37, 4)).astype(np.float32)
    path = tmp_path / "from_gradlab.safetensors"
    gl.save(model.state_dict(), path)
    tmodel = _mlp(torch)
    result = tmodel.load_state_dict(st_torch.load_file(str(path)))
    assert not result.missing_keys and not result.unexpected_keys
    tmodel.eval()
    with torch.no_grad():
        t_out = tmodel(torch.from_numpy(x)).numpy()
    with gl.no_grad():
        g_out = model(gl.from_numpy(x)).numpy()
    np.testing.assert_allclose(t_out, g_out, rtol=0, atol=1e-6)
    assert int(tmodel[1].num_batches_tracked) == 3

    torch.manual_seed(5)
    tmodel2 = _mlp(torch)
    with torch.no_grad():  # give BatchNorm non-trivial running stats and affine params
        tmodel2[1].running_mean.uniform_(-1, 1)
        tmodel2[1].running_var.uniform_(0.5, 2)
        tmodel2[1].weight.uniform_(0.5, 2)
    tmodel2.eval()
    path2 = tmp_path / "from_torch.safetensors"
    st_torch.save_file(tmodel2.state_dict(), str(path2))
    model2 = _mlp(gl)
    model2.load_state_dict(gl.load(path2))
    model2.eval()
    with torch.no_grad():
        t_out2 = tmodel2(torch.from_numpy(x)).numpy()
    with gl.no_grad():
        g_out2 = model2(gl.from_numpy(x)).numpy()
    np.testing.assert_allclose(g_out2, t_out2, rtol=0, atol=1e-6)
