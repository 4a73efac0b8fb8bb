"""Module mechanics: registration, traversal, modes, zero_grad, to(), state_dict loading
with strict checks, repr, containers."""
from collections import OrderedDict

import numpy as np
import pytest

import gradlab as gl
import gradlab.nn as nn
from tests.conftest import to_numpy


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.act = nn.ReLU()
        self.block = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
        self.scale = nn.Parameter(gl.ones(1))
        self.register_buffer("steps", gl.zeros(1))
        self.register_buffer("cache", gl.zeros(2), persistent=False)
        self.plain = 3  # not registered

    def forward(self, x):
        return self.block(self.act(self.fc1(x))) * self.scale


def test_registration_and_names():
    net = Net()
    assert [n for n, _ in net.named_parameters()] == [
        "scale", "fc1.weight", "fc1.bias", "block.0.weight", "block.0.bias",
        "block.1.weight", "block.1.bias"]
    assert [n for n, _ in net.named_buffers()] == [
        "steps", "cache", "block.1.running_mean", "block.1.running_var",
        "block.1.num_batches_tracked"]
    assert [n for n, _ in net.named_modules()] == ["", "fc1", "act", "block", "block.0",
                                                  "block.1"]
    assert [n for n, _ in net.named_children()] == ["fc1", "act", "block"]
    assert isinstance(net.fc1.weight, nn.Parameter) and net.fc1.weight.requires_grad
    assert "cache" not in net.state_dict() and "steps" in net.state_dict()
    assert net.get_submodule("block.1") is net.block[1]


def test_reassign_and_delete_keep_dicts_in_sync():
    net = Net()
    net.fc1 = nn.Identity()
    assert "fc1.weight" not in dict(net.named_parameters())
    net.scale = None
    assert "scale" not in dict(net.named_parameters())
    with pytest.raises(TypeError, match="cannot assign Tensor as parameter 'scale'"):
        net.scale = gl.ones(1)
    del net.block
    assert not any(n.startswith("block") for n, _ in net.named_parameters())
    assert not hasattr(net, "block")


def test_shared_parameter_listed_once():
    lin = nn.Linear(2, 2)
    seq = nn.Sequential(lin, lin)
    assert len(list(seq.parameters())) == 2


def test_assigning_before_super_init_is_a_clear_error():
    class Bad(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(gl.ones(1))

    with pytest.raises(AttributeError, match="super\\(\\).__init__"):
        Bad()


def test_train_eval_propagate():
    net = Net()
    assert net.training and net.block[1].training
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())


def test_zero_grad_modes():
    net = Net()
    net(gl.randn(5, 3)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad(set_to_none=False)
    assert all(np.all(p.grad.numpy() == 0) for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_to_dtype_keeps_identity_and_casts_floats_only():
    net = Net()
    w = net.fc1.weight
    net.to(gl.float64)
    assert net.fc1.weight is w and w.dtype == gl.float64
    assert net.block[1].num_batches_tracked.dtype == gl.int64
    assert net(gl.randn(4, 3, dtype=gl.float64)).dtype == gl.float64


def test_state_dict_roundtrip_and_sharing():
    a, b = Net(), Net()
    sd = a.state_dict()
    assert list(sd) == ["scale", "steps", "fc1.weight", "fc1.bias", "block.0.weight",
                        "block.0.bias", "block.1.weight", "block.1.bias",
                        "block.1.running_mean", "block.1.running_var",
                        "block.1.num_batches_tracked"]
    assert not sd["fc1.weight"].requires_grad
    result = b.load_state_dict(sd)
    assert result.missing_keys == [] and result.unexpected_keys == []
    for k, v in b.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), sd[k].numpy())
    # loaded by copy, not aliasing
    with gl.no_grad():
        a.fc1.weight.fill_(7.0)
    assert not np.any(b.fc1.weight.detach().numpy() == 7.0)


def test_load_state_dict_lists_every_problem():
    net = Net()
    sd = net.state_dict()
    del sd["fc1.bias"]
    del sd["steps"]
    sd["extra.weight"] = gl.zeros(2)
    sd["fc1.weight"] = gl.zeros(5, 3)
    with pytest.raises(RuntimeError) as info:
        net.load_state_dict(sd)
    msg = str(info.value)
    assert "size mismatch for fc1.weight: checkpoint has shape (5, 3), the model (4, 3)" in msg
    assert "missing keys: 'steps', 'fc1.bias'" in msg
    assert "unexpected keys: 'extra.weight'" in msg


def test_load_state_dict_non_strict():
    net = Net()
    sd = net.state_dict()
    del sd["fc1.bias"]
    sd["junk"] = gl.zeros(1)
    res = net.load_state_dict(sd, strict=False)
    assert res.missing_keys == ["fc1.bias"] and res.unexpected_keys == ["junk"]
    sd["fc1.weight"] = gl.zeros(1)
    with pytest.raises(RuntimeError, match="size mismatch for fc1.weight"):
        net.load_state_dict(sd, strict=False)


def test_repr_is_readable():
    net = nn.Sequential(nn.Linear(2, 3, bias=False), nn.ReLU(),
                        nn.Sequential(nn.Dropout(0.25)))
    assert repr(net) == ("Sequential(\n"
                         "  (0): Linear(in_features=2, out_features=3, bias=False)\n"
                         "  (1): ReLU()\n"
                         "  (2): Sequential(\n"
                         "    (0): Dropout(p=0.25, inplace=False)\n"
                         "  )\n"
                         ")")


def test_sequential_indexing_slicing_and_ordered_dict():
    seq = nn.Sequential(OrderedDict([("fc", nn.Linear(2, 2)), ("act", nn.Tanh())]))
    assert [n for n, _ in seq.named_children()] == ["fc", "act"]
    assert isinstance(seq[-1], nn.Tanh) and len(seq) == 2
    assert isinstance(seq[:1], nn.Sequential) and len(seq[:1]) == 1
    seq.append(nn.Sigmoid())
    x = gl.randn(3, 2)
    np.testing.assert_allclose(seq(x).detach().numpy(),
                               gl.sigmoid(gl.tanh(seq.fc(x))).detach().numpy())
    with pytest.raises(IndexError, match="out of range"):
        seq[5]


def test_module_list_and_dict_register():
    ml = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    assert len(list(ml.parameters())) == 6 and len(ml) == 3
    md = nn.ModuleDict({"a": nn.Linear(1, 1)})
    md["b"] = nn.Linear(1, 2)
    assert sorted(n for n, _ in md.named_parameters()) == ["a.bias", "a.weight", "b.bias",
                                                           "b.weight"]


def test_slices_keep_sequential_names_and_renumber_a_module_list():
    seq = nn.Sequential(OrderedDict([("fc", nn.Linear(2, 2)), ("act", nn.Tanh()),
                                     ("out", nn.Sigmoid())]))
    assert [n for n, _ in seq[1:].named_children()] == ["act", "out"]
    ml = nn.ModuleList([nn.ReLU(), nn.Tanh(), nn.Sigmoid()])
    tail = ml[1:]
    assert type(tail) is nn.ModuleList and [n for n, _ in tail.named_children()] == ["0", "1"]
    assert tail[0] is ml[1] and list(tail) == [ml[1], ml[2]] and ml[-1] is ml[2]
    assert ml.append(nn.ReLU()) is ml and len(ml) == 4
    with pytest.raises(IndexError, match="index 4 is out of range for a container of 4"):
        ml[4]


def test_missing_forward_is_explained():
    with pytest.raises(NotImplementedError, match="has no forward"):
        nn.Module()(1)


def test_parameter_basics():
    p = nn.Parameter(gl.tensor([1.0, 2.0]))
    assert p.requires_grad and p.is_leaf and isinstance(p, gl.Tensor)
    assert repr(p).startswith("Parameter containing:")
    q = nn.Parameter(gl.zeros(2), requires_grad=False)
    assert not q.requires_grad


def test_deepcopy_of_a_model_and_of_its_state_dict(device):
    import copy
    import pickle
    model = Net().to(device)
    tied = nn.Sequential(model.fc1, model.act, model.fc1.__class__(4, 3))
    model.fc1.weight.grad = gl.ones_like(model.fc1.weight)
    model.block.eval()
    twin = copy.deepcopy(model)
    assert type(twin) is Net and type(twin.fc1.weight) is nn.Parameter
    assert twin.fc1.weight.requires_grad and twin.fc1.weight.device == gl.device(device)
    assert twin.training and not twin.block.training and not twin.block[1].training
    assert np.array_equal(to_numpy(twin.fc1.weight.grad), np.ones((4, 3), np.float32))
    for (name, a), (_, b) in zip(model.state_dict().items(), twin.state_dict().items()):
        assert a._data is not b._data and np.array_equal(to_numpy(a), to_numpy(b)), name
    assert "cache" in twin._buffers  # a non-persistent buffer is part of the model too
    # the best-weights snapshot of early stopping: unchanged by later training
    best = copy.deepcopy(model.state_dict())
    with gl.no_grad():
        model.fc1.weight.add_(1.0)
    assert np.array_equal(to_numpy(best["fc1.weight"]), to_numpy(twin.fc1.weight))
    twin.load_state_dict(best)
    # shared modules and parameters stay shared in the copy
    tied_twin = copy.deepcopy(tied)
    assert tied_twin[0] is not tied[0] and tied_twin[0].weight is tied_twin[0].weight
    both = copy.deepcopy([model.fc1, model.fc1.weight])
    assert both[1] is both[0].weight
    # an optimizer's state, for a snapshot of a run
    opt = gl.optim.Adam(model.parameters(), lr=0.1)
    model(gl.randn(2, 3, device=device)).sum().backward()
    opt.step()
    state = copy.deepcopy(opt.state_dict())
    opt.step()
    opt.load_state_dict(state)
    with pytest.raises(RuntimeError, match="only tensors created by the user"):
        copy.deepcopy(model.fc1.weight * 2)
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(model.fc1.weight)
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(gl.ones(2))
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(model)
