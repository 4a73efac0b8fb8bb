"""The compiled training step (gl.train.compile_step): replays equal eager steps bit for bit,
and every guard records again or falls back to eager instead of replaying a wrong step."""
from __future__ import annotations

import dataclasses
import enum
import json
import types
import warnings

import numpy as np
import pytest

import gradlab as gl
from gradlab.nn import functional as F
from gradlab.train import compile_step
from tests.train import step_settings
from tests.train.compiled_runs import eager_step

OPTIMIZERS = {
    "sgd": lambda p: gl.optim.SGD(p, lr=0.05),
    "sgd_nesterov_wd": lambda p: gl.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True,
                                              weight_decay=1e-3),
    "adam": lambda p: gl.optim.Adam(p, lr=1e-2),
    "adam_amsgrad_wd": lambda p: gl.optim.Adam(p, lr=1e-2, weight_decay=1e-2, amsgrad=True),
    "adamw": lambda p: gl.optim.AdamW(p, lr=1e-2),
    "rmsprop_centered": lambda p: gl.optim.RMSprop(p, lr=1e-2, momentum=0.5, centered=True),
    "adagrad": lambda p: gl.optim.Adagrad(p, lr=0.05, weight_decay=1e-3),
    "adadelta": lambda p: gl.optim.Adadelta(p, lr=1.0),
    "adamax": lambda p: gl.optim.Adamax(p, lr=1e-2),
    "nadam": lambda p: gl.optim.NAdam(p, lr=1e-2),
    "radam": lambda p: gl.optim.RAdam(p, lr=1e-2),
}


def _model(seed=0, dropout=0.2, batchnorm=True, device="cpu"):
    gl.manual_seed(seed)
    layers = [gl.nn.Linear(4, 16)]
    if batchnorm:
        layers.append(gl.nn.BatchNorm1d(16))
    layers.append(gl.nn.ReLU())
    if dropout:
        layers.append(gl.nn.Dropout(dropout))
    layers += [gl.nn.Linear(16, 8), gl.nn.Tanh(), gl.nn.Linear(8, 3)]
    return gl.nn.Sequential(*layers).to(device)


def _batches(n, rows=(32,), seed=1, device="cpu"):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        r = rows[i % len(rows)]
        out.append((gl.tensor(rng.standard_normal((r, 4)).astype(np.float32), device=device),
                    gl.tensor(rng.integers(0, 3, r), device=device)))
    return out


def _state(model, optimizer):
    arrays = [gl.Tensor(p._data).cpu().numpy().copy() for p in model.parameters()]
    arrays += [b.cpu().numpy().copy() for b in model.buffers()]
    arrays.append(np.array([b._version[0] for b in model.buffers()]))  # in-place updates seen
    for st in optimizer.state.values():  # raw backend arrays, and the step counts
        arrays += [gl.Tensor(v).cpu().numpy().copy() if hasattr(v, "shape") else np.array(v)
                   for _, v in sorted(st.items())]
    return arrays


def _run(compiled, batches, make_opt, loss_fn=None, scheduler=None, **model_kw):
    model = _model(**model_kw)
    opt = make_opt(model.parameters())
    loss_fn = loss_fn or gl.nn.CrossEntropyLoss()
    sched = scheduler(opt) if scheduler else None
    step = compile_step(model, loss_fn, opt) if compiled else eager_step(model, loss_fn, opt)
    losses = []
    for x, y in batches:
        losses.append(step(x, y).item())
        if sched is not None:
            sched.step()
    return losses, _state(model, opt), step


def _assert_same(a, b):
    assert a[0] == b[0], "losses differ"
    assert len(a[1]) == len(b[1])
    for k, (u, v) in enumerate(zip(a[1], b[1])):
        assert u.dtype == v.dtype and np.array_equal(u, v), f"state array {k} differs"


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_replay_equals_eager_for_every_optimizer(name):
    """Dropout (its Philox offset advances at every replay) and BatchNorm (running stats)
    included; 8 steps = 2 recordings + 6 replays."""
    batches = _batches(8)
    eager = _run(False, batches, OPTIMIZERS[name])
    compiled = _run(True, batches, OPTIMIZERS[name])
    _assert_same(eager, compiled)
    info = compiled[2].info()
    assert info["recorded"] == 2 and info["replayed"] == 6 and info["eager_reasons"] == []
    # Every optimizer's step is one fused call per group: replayed through its prepared form
    assert compiled[2]._optimizer_fast is not None


@pytest.mark.parametrize("name", ["adam", "nadam", "radam"])
def test_replay_on_each_device(device, name):
    batches = _batches(7, device=device)  # RAdam (beta2 0.999) is rectified from step 6
    eager = _run(False, batches, OPTIMIZERS[name], device=device)
    compiled = _run(True, batches, OPTIMIZERS[name], device=device)
    _assert_same(eager, compiled)
    assert compiled[2].info()["replayed"] == 5


def test_a_scheduler_changes_the_lr_of_every_replay():
    batches = _batches(10)
    sched = lambda opt: gl.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10)  # noqa: E731
    eager = _run(False, batches, OPTIMIZERS["sgd_nesterov_wd"], scheduler=sched)
    compiled = _run(True, batches, OPTIMIZERS["sgd_nesterov_wd"], scheduler=sched)
    _assert_same(eager, compiled)
    # and the lr did change: a constant lr gives other weights
    constant = _run(True, batches, OPTIMIZERS["sgd_nesterov_wd"])
    assert not all(np.array_equal(u, v) for u, v in zip(constant[1], compiled[1]))


def test_a_short_last_batch_gets_its_own_recording():
    batches = _batches(12, rows=(32, 32, 7))  # epochs of 71 rows in batches of 32
    eager = _run(False, batches, OPTIMIZERS["adam"])
    compiled = _run(True, batches, OPTIMIZERS["adam"])
    _assert_same(eager, compiled)
    info = compiled[2].info()
    assert info["signatures"] == 2 and info["recorded"] == 4 and info["replayed"] == 8


def test_mse_regression_and_loss_closures():
    rng = np.random.default_rng(3)
    batches = [(gl.tensor(rng.standard_normal((16, 4)).astype(np.float32)),
                gl.tensor(rng.standard_normal((16, 3)).astype(np.float32))) for _ in range(6)]
    def loss_fn(out, y):
        return F.mse_loss(out, y) + 0.1 * F.l1_loss(out, y)
    eager = _run(False, batches, OPTIMIZERS["rmsprop_centered"], loss_fn=loss_fn)
    compiled = _run(True, batches, OPTIMIZERS["rmsprop_centered"], loss_fn=loss_fn)
    _assert_same(eager, compiled)
    assert compiled[2].info()["replayed"] == 4


# Losses that compute from the batch with ops that have no gradient (masks, argmax,
# indexing by the target, per-class weights picked by the target) or draw with the random
# factories (noise, a random mask), and a model that draws inside an op (RReLU). Both
# recordings of the signature see the same batch here, so comparing the two cannot tell a
# frozen array from a constant: the replay is right only because every such op is recorded
# as an op and recomputed from each batch.
_BATCH_DERIVED = {
    "multi_margin": lambda: gl.nn.MultiMarginLoss(p=2, weight=gl.tensor([0.5, 1.0, 2.0])),
    "multi_margin_p1": lambda: gl.nn.MultiMarginLoss(margin=0.5),
    "hinge_embedding": lambda: lambda o, y: F.hinge_embedding_loss(
        o[:, 0], (y == 0).float() * 2 - 1),
    "picked_log_probability": lambda: lambda o, y: -F.log_softmax(o, dim=1)[
        gl.arange(o.shape[0]), y].mean(),
    "masked_cross_entropy": lambda: lambda o, y: (
        F.cross_entropy(o, y, reduction="none") * (1.0 + (o.argmax(1) != y).float())
    ).mean() + 0.1 * o.max(1)[0].mean() * (y > 0).any().float(),
    "one_hot_mse": lambda: lambda o, y: F.mse_loss(o, F.one_hot(y, 3).float()),
    "gaussian_nll": lambda: lambda o, y: F.gaussian_nll_loss(
        o, (y[:, None] == gl.arange(3)).float(), F.softplus(o) + 0.1),
    "noisy_one_hot": lambda: lambda o, y: F.mse_loss(
        o + 0.05 * gl.randn_like(o), F.one_hot(y, 3).float() * gl.rand(1)),
    "gathered_log_probability": lambda: lambda o, y: -F.log_softmax(o, dim=1).gather(
        1, y.unsqueeze(1)).mean() + 0.1 * o.topk(2).values.mean(),
    "random_rows": lambda: lambda o, y: (
        F.cross_entropy(o, y, reduction="none") * (gl.randint(2, (o.shape[0],)) + 0.5)).mean(),
    # mixup's pairing: the rows of the batch in a fresh random order
    "shuffled_pairs": lambda: lambda o, y: F.mse_loss(
        o, 0.5 * (o + o[gl.randperm(o.shape[0])]).detach()) + F.cross_entropy(o, y),
}


@pytest.mark.parametrize("name", sorted(_BATCH_DERIVED))
def test_what_the_step_computes_from_the_batch_is_not_frozen(name):
    batches = _batches(7)
    x0, y0 = batches[0]
    batches[1] = (gl.tensor(x0.numpy()), gl.tensor(y0.numpy()))  # the same data again
    runs = []
    for compiled in (False, True):
        gl.manual_seed(0)
        model = gl.nn.Sequential(gl.nn.Linear(4, 16), gl.nn.RReLU(), gl.nn.Dropout(0.2),
                                 gl.nn.Linear(16, 3))
        opt = OPTIMIZERS["adam"](model.parameters())
        loss_fn = _BATCH_DERIVED[name]()
        step = compile_step(model, loss_fn, opt) if compiled else \
            eager_step(model, loss_fn, opt)
        runs.append(([step(x, y).item() for x, y in batches], _state(model, opt), step))
    _assert_same(*runs)
    info = runs[1][2].info()
    assert info["replayed"] == 5 and info["eager"] == 0


def test_loss_checks_on_the_targets_run_in_every_replay():
    batches = _batches(5)
    bad_y = gl.tensor(np.where(np.arange(32) == 9, -1, 0))
    for loss_fn, error, match in [
            (gl.nn.MultiMarginLoss(), IndexError, "target -1 is out of bounds"),
            (lambda o, y: F.gaussian_nll_loss(o, o.detach(), o[:, :1] * 0 + y[:, None] * 1.0),
             ValueError, "var has negative entries")]:
        model, opt, _ = _mlp_step()
        step = compile_step(model, loss_fn, opt)
        for x, y in batches[:4]:
            step(x, y)
        assert step.info()["replayed"] == 2
        with pytest.raises(error, match=match):
            step(batches[4][0], bad_y)
        step.discard()


class _Residual(gl.nn.Module):
    """Nodes with several consumers and a weight used twice: the replay must sum their
    gradients in the engine's order."""

    def __init__(self):
        super().__init__()
        self.inp = gl.nn.Linear(4, 8)
        self.shared = gl.nn.Linear(8, 8)
        self.out = gl.nn.Linear(8, 3)

    def forward(self, x):
        h = self.inp(x).relu()
        h = h + self.shared(h).tanh() + self.shared(h.sigmoid()) * h
        return self.out(F.layer_norm(h, (8,)))


def test_replay_sums_gradients_as_the_engine_does():
    batches = _batches(6)
    results = []
    for compiled in (False, True):
        gl.manual_seed(0)
        model = _Residual()
        opt = gl.optim.Adam(model.parameters(), lr=1e-2)
        loss_fn = gl.nn.CrossEntropyLoss(label_smoothing=0.1)
        step = compile_step(model, loss_fn, opt) if compiled else \
            eager_step(model, loss_fn, opt)
        results.append(([step(x, y).item() for x, y in batches], _state(model, opt)))
        if compiled:
            assert step.info()["replayed"] == 4
    _assert_same(*results)


def test_a_leaf_outside_the_optimizer_accumulates_its_grad_as_in_eager():
    """zero_grad clears only the optimizer's parameters: the first layer's weight, left out
    of it, sums its gradients over the steps in eager, and so must every replay."""
    batches = _batches(6)
    grads = []
    for compiled in (False, True):
        model = _model(dropout=0)
        first = model[0].weight
        opt = gl.optim.SGD([p for p in model.parameters() if p is not first], lr=0.05)
        loss_fn = gl.nn.CrossEntropyLoss()
        step = compile_step(model, loss_fn, opt) if compiled else \
            eager_step(model, loss_fn, opt)
        for x, y in batches:
            step(x, y)
        grads.append(first.grad.numpy().copy())
        if compiled:
            assert step.info()["replayed"] == 4
    assert np.array_equal(grads[0], grads[1])
    one = _model(dropout=0)
    gl.nn.CrossEntropyLoss()(one(batches[-1][0]), batches[-1][1]).backward()
    assert not np.allclose(grads[0], one[0].weight.grad.numpy())  # it did accumulate


# -- guards ------------------------------------------------------------------------------------
def _pair(**model_kw):
    """An eager and a compiled copy of the same model, optimizer and data."""
    made = []
    for compiled in (False, True):
        model = _model(**model_kw)
        opt = gl.optim.Adam(model.parameters(), lr=1e-2)
        loss_fn = gl.nn.CrossEntropyLoss()
        step = compile_step(model, loss_fn, opt) if compiled else \
            eager_step(model, loss_fn, opt)
        made.append((model, opt, step))
    return made


def _both(pair, x, y):
    """One step of each; the global generator is reseeded before each, so that both draw
    the same dropout masks although they take turns."""
    out = []
    for _, _, step in pair:
        gl.manual_seed(len(_both.calls))
        out.append(step(x, y).item())
    _both.calls.append(None)
    return out


_both.calls = []


def _states_equal(pair):
    (m1, o1, _), (m2, o2, _) = pair
    return all(np.array_equal(u, v) for u, v in zip(_state(m1, o1), _state(m2, o2)))


def test_input_shape_and_dtype_are_part_of_the_signature():
    pair = _pair()
    (x, y), = _batches(1)
    for _ in range(3):
        _both(pair, x, y)
    y32 = gl.tensor(y.numpy().astype(np.int32))
    for _ in range(3):
        a, b = _both(pair, x, y32)
        assert a == b
    assert _states_equal(pair)
    assert pair[1][2].info()["signatures"] == 2


def test_train_and_eval_modes_record_separately():
    pair = _pair()
    batches = _batches(12)
    for i, (x, y) in enumerate(batches):
        if i == 4:
            for m, _, _ in pair:
                m.eval()   # BatchNorm on running stats, dropout off: another step
        if i == 8:
            for m, _, _ in pair:
                m.train()  # back to the first recording, not a third one
        a, b = _both(pair, x, y)
        assert a == b
    assert _states_equal(pair)
    info = pair[1][2].info()
    assert info["signatures"] == 2 and info["recorded"] == 4 and info["replayed"] == 8


@pytest.mark.parametrize("switch", ["assign", "submodule_eval"])
def test_one_submodules_mode_changed_between_replays_records_again(switch):
    # The step reads the modes again only when a train()/eval() or a ``training``
    # assignment happened: both ways of switching one layer must be seen.
    pair = _pair()
    batches = _batches(10)
    for i, (x, y) in enumerate(batches):
        if i == 5:
            for m, _, _ in pair:
                dropout = next(d for d in m.modules() if isinstance(d, gl.nn.Dropout))
                if switch == "assign":
                    dropout.training = False
                else:
                    dropout.eval()
        a, b = _both(pair, x, y)
        assert a == b
    assert _states_equal(pair)
    info = pair[1][2].info()
    assert info["signatures"] == 2 and info["recorded"] == 4 and info["replayed"] == 6


def test_a_replaced_parameter_records_again_and_is_trained():
    pair = _pair()
    batches = _batches(8)
    for i, (x, y) in enumerate(batches):
        if i == 4:
            for m, opt, _ in pair:
                new = gl.nn.Parameter(gl.zeros(3))
                m[-1].bias = new
                opt.param_groups[0]["params"][-1] = new
        a, b = _both(pair, x, y)
        assert a == b
    assert _states_equal(pair)
    info = pair[1][2].info()
    assert info["rerecorded"] >= 1 and info["eager_reasons"] == []
    assert pair[1][0][-1].bias.grad is not None  # the new parameter got its gradient


def test_rebinding_data_and_changing_a_setting_record_again():
    pair = _pair()
    batches = _batches(10)
    for i, (x, y) in enumerate(batches):
        if i == 3:
            for m, _, _ in pair:
                m[0].weight.data = m[0].weight.detach() * 0.5   # new storage
        if i == 6:
            for m, _, _ in pair:
                m[3].p = 0.5                                    # Dropout.p
        a, b = _both(pair, x, y)
        assert a == b
    assert _states_equal(pair)
    assert pair[1][2].info()["rerecorded"] == 2


class _Scaled(gl.nn.Module):
    """Logits times a plain tensor attribute (neither a parameter nor a buffer)."""

    def __init__(self):
        super().__init__()
        self.body = _model(dropout=0.0)
        self.scale = gl.tensor([1.0])

    def forward(self, x):
        return self.body(x) * self.scale


def _same_with_changes(build, change, steps):
    """Eager and compiled runs of ``build()``'s (model, optimizer, loss_fn), with
    ``change(i, model, optimizer)`` made before step i in both; asserts that they end the
    same (every optimizer param included) and returns the compiled step."""
    runs = []
    for compiled in (False, True):
        model, opt, loss_fn = build()
        step = compile_step(model, loss_fn, opt) if compiled else \
            eager_step(model, loss_fn, opt)
        losses = []
        for i, (x, y) in enumerate(_batches(steps)):
            change(i, model, opt)
            losses.append(step(x, y).item())
        params = [p.detach().numpy().copy() for g in opt.param_groups for p in g["params"]]
        runs.append((losses, _state(model, opt) + params))
    _assert_same(*runs)
    return step


class _Mode(enum.Enum):
    PLAIN = 1
    DOUBLED = 2


COLUMNS = slice(0, 4)  # read by _Steered.forward as a global


class _Steered(gl.nn.Module):
    """A forward steered by values that are not numbers: a slice, a dtype, an Enum member,
    NumPy arrays (an attribute and a class attribute) that it wraps."""
    SHIFT = np.zeros(6, np.float32)

    def __init__(self):
        super().__init__()
        gl.manual_seed(0)
        self.cols = slice(0, 4)
        self.dtype = gl.float32
        self.mode = _Mode.PLAIN
        self.offset = np.zeros(6, np.float32)
        self.fc = gl.nn.Linear(4, 6)
        self.out = gl.nn.Linear(6, 3)

    def forward(self, x):
        h = self.fc(x[:, self.cols][:, COLUMNS])
        h = (h + gl.tensor(self.offset) + gl.tensor(_Steered.SHIFT)).tanh()
        if self.mode is _Mode.DOUBLED:
            h = h * 2.0
        return (self.out(h).to(self.dtype) / 3.0).float()  # (float64's quotient rounds anew)


_STEERS = {
    "slice": lambda m: setattr(m, "cols", slice(None, None, -1)),
    "dtype": lambda m: setattr(m, "dtype", gl.float64),
    "enum": lambda m: setattr(m, "mode", _Mode.DOUBLED),
    "ndarray": lambda m: setattr(m, "offset", np.full(6, 0.5, np.float32)),
    "class-ndarray": lambda m: setattr(_Steered, "SHIFT", np.full(6, 0.5, np.float32)),
    "global-slice": lambda m: globals().__setitem__("COLUMNS", slice(None, None, -1)),
}


@pytest.mark.parametrize("what", _STEERS)
def test_settings_that_are_not_numbers_record_again_when_changed(what, monkeypatch):
    monkeypatch.setattr(_Steered, "SHIFT", _Steered.SHIFT)
    monkeypatch.setitem(globals(), "COLUMNS", COLUMNS)

    def build():
        _Steered.SHIFT, globals()["COLUMNS"] = np.zeros(6, np.float32), slice(0, 4)
        model = _Steered()
        return model, gl.optim.Adam(model.parameters(), lr=1e-2), gl.nn.CrossEntropyLoss()

    def change(i, model, opt):
        if i == 4:
            _STEERS[what](model)
    assert _same_with_changes(build, change, 8).info()["rerecorded"] == 1


LOSS_CONFIG = {"weights": {"ce": 1.0, "l2": 0.0}}  # read by name in _configured_loss


HELPER_SHIFT, MIX_GAIN, PENALTY = 0.0, 1.0, 0.0  # read by helpers of the step's code


def _shifted(h):
    return h + HELPER_SHIFT


def _penalty(out):
    return (out ** 2).mean() * PENALTY


def _configured_loss(out, y):
    w = LOSS_CONFIG["weights"]
    return F.cross_entropy(out, y) * w["ce"] + (out ** 2).mean() * w["l2"] + _penalty(out)


@dataclasses.dataclass
class _Options:
    gain: float


class _PlainOptions:
    def __init__(self):
        self.floor = -10.0


class _Configured(gl.nn.Module):
    """A forward steered by a config dict and a list of rates kept on the module."""

    def __init__(self):
        super().__init__()
        gl.manual_seed(0)
        self.cfg = {"scale": 1.0, "act": "tanh"}
        self.rates = [0.0, (0.5, 2)]
        self._gain, self._opts = 1.0, {"shift": 0.0}
        self.ns, self.dc = types.SimpleNamespace(bias=0.0), _Options(gain=1.0)
        self.plain = _PlainOptions()
        self.fc = gl.nn.Linear(4, 6)
        self.out = gl.nn.Linear(6, 3)

    def forward(self, x):
        h = getattr(self.fc(x), self.cfg["act"])() * self.cfg["scale"]
        h = self._mix(_shifted(h + self._opts["shift"]) * self._gain)
        h = step_settings.scaled(h + step_settings.SHIFT)
        h = ((h + self.ns.bias) * self.dc.gain).clamp(min=self.plain.floor)
        return self.out(F.dropout(h, self.rates[0], self.training)) * self.rates[1][0]

    def _mix(self, h):
        return h * MIX_GAIN


_RECONFIGURES = {
    "dict-entry": lambda m: m.cfg.__setitem__("scale", 2.0),
    "dict-string": lambda m: m.cfg.__setitem__("act", "sigmoid"),
    "list-entry": lambda m: m.rates.__setitem__(0, 0.25),
    "nested-tuple": lambda m: m.rates.__setitem__(1, (0.75, 2)),
    "global-nested-dict": lambda m: LOSS_CONFIG["weights"].__setitem__("l2", 0.5),
    "private-number": lambda m: setattr(m, "_gain", 2.0),
    "private-dict-entry": lambda m: m._opts.__setitem__("shift", 0.25),
    "helper-global": lambda m: globals().__setitem__("HELPER_SHIFT", 0.5),
    "method-global": lambda m: globals().__setitem__("MIX_GAIN", 1.5),
    "loss-helper-global": lambda m: globals().__setitem__("PENALTY", 0.5),
    "own-module-attribute": lambda m: setattr(step_settings, "SHIFT", 0.5),
    "own-module-function": lambda m: setattr(step_settings, "FACTOR", 1.5),
    "namespace-attribute": lambda m: setattr(m.ns, "bias", 0.25),
    "dataclass-field": lambda m: setattr(m.dc, "gain", 1.5),
    "plain-object-attribute": lambda m: setattr(m.plain, "floor", 0.0),
}


@pytest.mark.parametrize("what", _RECONFIGURES)
def test_containers_of_settings_changed_in_place_record_again(what, monkeypatch):
    for name in ("LOSS_CONFIG", "HELPER_SHIFT", "MIX_GAIN", "PENALTY"):
        monkeypatch.setitem(globals(), name, globals()[name])
    monkeypatch.setattr(step_settings, "SHIFT", 0.0)
    monkeypatch.setattr(step_settings, "FACTOR", 1.0)

    def build():
        globals().update(LOSS_CONFIG={"weights": {"ce": 1.0, "l2": 0.0}}, HELPER_SHIFT=0.0,
                         MIX_GAIN=1.0, PENALTY=0.0)
        step_settings.SHIFT, step_settings.FACTOR = 0.0, 1.0
        model = _Configured()
        return model, gl.optim.Adam(model.parameters(), lr=1e-2), _configured_loss

    def change(i, model, opt):
        if i == 4:
            _RECONFIGURES[what](model)
    step = _same_with_changes(build, change, 8)
    info = step.info()
    assert info["rerecorded"] == 1 and info["replayed"] == 4 and info["eager_reasons"] == []


def test_a_large_list_is_data_not_a_setting():
    from gradlab.train import step_guards as guards
    small = [0.5] * guards._CONTAINER_ITEMS
    large = small + [0.5]
    assert guards._setting_value(small) is not guards._OTHER
    assert guards._setting_value(large) is guards._OTHER
    assert guards._setting_value([gl.tensor([1.0])]) is guards._OTHER
    t = gl.tensor([1.0])  # (read by name: a tensor entry by identity)
    assert guards._guarded([t]) == guards._guarded([t])
    assert guards._guarded([t]) != guards._guarded([gl.tensor([1.0])])
    assert guards._setting_value([object()]) is guards._OTHER
    thing = object()  # (read by name, beside settings: by identity)
    assert guards._guarded([0.5, thing]) == guards._guarded([0.5, thing])
    assert guards._guarded([0.5, thing]) != guards._guarded([0.6, thing])
    nested = [0.5]
    for _ in range(3):
        nested = [nested]
    assert guards._setting_value(nested[0]) is not guards._OTHER
    assert guards._setting_value(nested) is guards._OTHER  # deeper than three
    loop = [0.5]
    loop.append(loop)  # (a container holding itself must not recurse forever)
    assert guards._setting_value(loop) is guards._OTHER


@pytest.mark.parametrize("part", ["model", "loss_fn", "optimizer"])
def test_the_steps_model_loss_and_optimizer_cannot_be_replaced(part):
    model = _model()
    step = compile_step(model, gl.nn.CrossEntropyLoss(),
                        gl.optim.SGD(model.parameters(), lr=0.1))
    before = getattr(step, part)
    with pytest.raises(AttributeError, match=f"{part} cannot be replaced.*compile_step"):
        setattr(step, part, before)
    assert getattr(step, part) is before


@pytest.mark.parametrize("how", ["mul_", "load_state_dict"])
def test_a_saved_parameter_changed_between_forward_and_backward_step_raises_as_eager(how):
    def change(model):
        if how == "mul_":
            with gl.no_grad():
                model[0].weight.mul_(0.5)
        else:
            model.load_state_dict({k: v * 0.5 for k, v in model.state_dict().items()})

    errors = []
    for compiled in (False, True):
        model = _model(dropout=0.0, batchnorm=False)
        opt = gl.optim.SGD(model.parameters(), lr=0.1)
        loss_fn = gl.nn.CrossEntropyLoss()
        step = compile_step(model, loss_fn, opt)
        batches = _batches(6)
        for x, y in batches[:4]:  # (the compiled one replays from the third)
            if compiled:
                step(x, y)
            else:
                eager_step(model, loss_fn, opt)(x, y)
        x, y = batches[4]
        if compiled:
            step.forward(x, y)
            change(model)
            with pytest.raises(RuntimeError, match="modified in place") as err:
                step.backward_step()
            assert all(p.grad is None for p in model.parameters())
            state = _state(model, opt)
            step(*batches[5])  # the step goes on from there
            assert step.info()["replayed"] == 3
        else:
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            change(model)
            with pytest.raises(RuntimeError, match="modified in place") as err:
                loss.backward()
            state = _state(model, opt)
        errors.append((err.type, state))
    assert errors[0][0] is errors[1][0]
    _assert_same((None, errors[0][1]), (None, errors[1][1]))


@pytest.mark.parametrize("what", ["output", "batch", "output-not-saved"])
def test_a_saved_output_or_batch_changed_between_forward_and_backward_step_raises(what):
    """out * out saves the output, the first Linear the batch: changed in place between the
    two halves, eager's backward refuses, and so must a replay's. Cross-entropy saves no
    logits: changing them there changes no gradient, and neither refuses."""
    def loss_fn(out, y):
        if what == "output-not-saved":
            return gl.nn.functional.cross_entropy(out, y)
        return (out * out).mean() + gl.nn.functional.cross_entropy(out, y)

    outcomes = []
    for compiled in (False, True):
        model = _model(dropout=0.0, batchnorm=False)
        opt = gl.optim.SGD(model.parameters(), lr=0.1)
        step = compile_step(model, loss_fn, opt) if compiled else eager_step(model, loss_fn, opt)
        batches = _batches(6)
        for x, y in batches[:4]:
            step(x, y)
        x, y = batches[4]
        if compiled:
            out, loss = step.forward(x, y)
        else:
            opt.zero_grad()
            out = model(x)
            loss = loss_fn(out, y)
        with gl.no_grad():
            (x if what == "batch" else out).mul_(2.0)
        try:
            step.backward_step() if compiled else (loss.backward(), opt.step())
            outcomes.append(("trained", _state(model, opt)))
        except RuntimeError as e:
            assert "modified in place" in str(e)
            assert all(p.grad is None for p in model.parameters()) or not compiled
            outcomes.append(("refused", _state(model, opt)))
        if compiled:
            assert step.info()["replayed"] == 2 + (what == "output-not-saved")
    assert outcomes[0][0] == outcomes[1][0] == \
        ("trained" if what == "output-not-saved" else "refused")
    _assert_same((None, outcomes[0][1]), (None, outcomes[1][1]))


def test_a_tensor_attribute_set_anew_records_again():
    def build():
        model = _Scaled()
        return model, gl.optim.SGD(model.parameters(), lr=0.1), gl.nn.CrossEntropyLoss()

    def change(i, model, opt):
        if i == 4:
            model.scale = gl.tensor([2.0])
    assert _same_with_changes(build, change, 8).info()["rerecorded"] == 1


def test_a_parameter_outside_the_model_rebound_or_frozen_records_again():
    # A learnable temperature the loss closes over, trained by the same optimizer: the
    # recordings hold its array as a constant, so a new array, or freezing it, must drop
    # them.
    def build():
        model = _model(dropout=0.0)
        scale = gl.nn.Parameter(gl.ones(1))
        ce = gl.nn.CrossEntropyLoss()
        opt = gl.optim.SGD(list(model.parameters()) + [scale], lr=0.1)
        return model, opt, lambda out, y: ce(out * scale, y)

    def change(i, model, opt):
        scale = opt.param_groups[0]["params"][-1]
        if i == 4:
            scale.data = scale.detach() * 2
        if i == 8:
            scale.requires_grad_(False)
    info = _same_with_changes(build, change, 12).info()
    assert info["rerecorded"] == 2 and info["replayed"] == 6


WEIGHT = 0.0  # a loss weight in this module's globals, read by _weighted_loss


def _reset_weight():
    global WEIGHT
    WEIGHT = 0.0


def _weighted_loss(out, y):
    return F.cross_entropy(out, y) + WEIGHT * (out * out).mean()


class _WeightedLoss:
    def __init__(self):
        self.weight = 0.0

    def __call__(self, out, y):
        return F.cross_entropy(out, y) + self.weight * (out * out).mean()


@pytest.mark.parametrize("where", ["global", "closure", "attribute", "dict+reset"])
def test_a_python_number_the_loss_reads_is_not_baked_into_the_replay(where):
    """A recording bakes the numbers of the step in; a loss weight changed between epochs
    must record again (the closure, globals and attributes of the loss are guarded; for a
    number read elsewhere, reset())."""
    global WEIGHT
    runs = []
    for compiled in (False, True):
        model = _model(dropout=0.0)
        opt = gl.optim.SGD(model.parameters(), lr=0.1)
        closure_weight, box, obj = 0.0, {"weight": 0.0}, _WeightedLoss()

        # (the closures read the loop's variables on purpose: the guard must see them change)
        def closure_loss(out, y):
            return F.cross_entropy(out, y) + closure_weight * (out * out).mean()  # noqa: B023

        def dict_loss(out, y):
            return F.cross_entropy(out, y) + box["weight"] * (out * out).mean()  # noqa: B023
        loss_fn = {"global": _weighted_loss, "closure": closure_loss, "attribute": obj,
                   "dict+reset": dict_loss}[where]
        step = compile_step(model, loss_fn, opt) if compiled else \
            eager_step(model, loss_fn, opt)
        losses = []
        for i, (x, y) in enumerate(_batches(12)):
            if i % 4 == 0:  # a new "epoch"
                WEIGHT = closure_weight = box["weight"] = obj.weight = 0.1 * i
                if compiled and where == "dict+reset":
                    step.reset()
            losses.append(step(x, y).item())
        runs.append((losses, _state(model, opt), step))
    WEIGHT = 0.0
    _assert_same(runs[0], runs[1])
    info = runs[1][2].info()
    assert info["rerecorded"] == 2 and info["replayed"] == 6, info


class _Tempered(gl.nn.Module):
    """Logits divided by a temperature read from this module's globals (WEIGHT + 1)."""

    def __init__(self):
        super().__init__()
        self.body = _model(dropout=0.0)

    def forward(self, x):
        return self.body(x) * (1.0 / (1.0 + WEIGHT))


def test_a_python_number_a_models_forward_reads_is_not_baked_into_the_replay():
    def build():
        model = _Tempered()
        return model, gl.optim.SGD(model.parameters(), lr=0.1), gl.nn.CrossEntropyLoss()

    def change(i, model, opt):
        global WEIGHT
        if i % 4 == 0:
            WEIGHT = 0.5 * i
    try:
        assert _same_with_changes(build, change, 12).info()["rerecorded"] == 2
    finally:
        _reset_weight()


def test_freezing_and_unfreezing_a_parameter_record_again():
    pair = _pair()
    batches = _batches(11)
    for i, (x, y) in enumerate(batches):
        if i in (3, 7):
            for m, _, _ in pair:
                m[0].weight.requires_grad_(i == 7)   # frozen, then trained again
        if i == 3:
            frozen = pair[1][0][0].weight.detach().numpy().copy()
        a, b = _both(pair, x, y)
        assert a == b
        if 3 <= i < 7:
            assert pair[1][0][0].weight.grad is None
            assert np.array_equal(pair[1][0][0].weight.detach().numpy(), frozen)
    assert _states_equal(pair)
    info = pair[1][2].info()
    assert info["rerecorded"] == 2 and info["replayed"] == 11 - 3 * 2


def test_a_new_parameter_group_records_again():
    pair = _pair(batchnorm=False)
    batches = _batches(8)
    for i, (x, y) in enumerate(batches):
        if i == 4:
            for m, opt, _ in pair:
                # the last layer moves to a group of its own with another lr
                last = list(m[-1].parameters())
                opt.param_groups[0]["params"] = [p for p in opt.param_groups[0]["params"]
                                                 if all(p is not q for q in last)]
                opt.add_param_group({"params": last, "lr": 0.1})
        a, b = _both(pair, x, y)
        assert a == b
    assert _states_equal(pair)
    assert pair[1][2].info()["rerecorded"] == 1


def test_grad_mode_off_runs_eagerly_and_fails_as_eager_does():
    model = _model()
    step = compile_step(model, gl.nn.CrossEntropyLoss(), gl.optim.SGD(model.parameters(), 0.1))
    (x, y), = _batches(1)
    with gl.no_grad():
        with pytest.raises(RuntimeError, match="does not require grad"):
            step(x, y)


# -- what a replay cannot repeat runs eagerly, with a warning --------------------------------
class _Reads(gl.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = gl.nn.Linear(4, 3)

    def forward(self, x):
        h = self.fc(x)
        return h * 2.0 if h.sum().item() > 0 else h   # a Python decision on a value


class _NoiseSource:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)  # (on an object in a list: the watch misses it)

    def draw(self, shape):
        return self.rng.standard_normal(shape).astype(np.float32)


class _Noise(gl.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = gl.nn.Linear(4, 3)
        self._noise = [_NoiseSource(0)]

    def forward(self, x):
        # drawn outside gradlab (gl.randn_like is a recorded draw: it replays), from a
        # generator that the step cannot see: the two recordings differ
        return self.fc(x + 0.1 * gl.from_numpy(self._noise[0].draw(x.shape)))


class _Counts(gl.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = gl.nn.Linear(4, 3)
        self.register_buffer("seen", gl.zeros(()))

    def forward(self, x):
        with gl.no_grad():
            self.seen.add_(1)          # an in-place change outside any op
        return self.fc(x)


@pytest.mark.parametrize("cls, reason", [
    (_Reads, "reads a tensor's value"),
    (_Noise, "changes from batch to batch"),
    (_Counts, "changed in place outside"),
])
def test_untraceable_steps_run_eagerly_with_a_warning(cls, reason):
    results = []
    for compiled in (False, True):
        gl.manual_seed(0)
        model = cls()
        opt = gl.optim.SGD(model.parameters(), lr=0.1)
        loss_fn = gl.nn.CrossEntropyLoss()
        step = compile_step(model, loss_fn, opt) if compiled else \
            eager_step(model, loss_fn, opt)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            losses = [step(x, y).item() for x, y in _batches(6)]
        results.append((losses, _state(model, opt)))
        if compiled:
            assert reason in step.info()["eager_reasons"][0]
            assert len([w for w in caught if "running eagerly" in str(w.message)]) == 1
            assert step.info()["replayed"] == 0
    _assert_same(*results)



class _SharesByDLPack(gl.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = gl.nn.Linear(4, 3)

    def forward(self, x):
        h = self.fc(x)
        positive = (np.from_dlpack(x.detach()) > 0).sum()  # values read past gradlab's ops
        return h * 2.0 if positive > 64 else h


class _Prints(gl.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = gl.nn.Linear(4, 3)
        self.printed = []

    def forward(self, x):
        h = self.fc(x)
        self.printed.append(repr(h))   # a replay would print nothing
        return h


class _CountsMaskedRows(gl.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = gl.nn.Linear(4, 3)

    def forward(self, x):
        h = self.fc(x)
        picked = h[x[:, 0] > 0]
        return h * (1.0 + picked.shape[0] / 32)   # len(x[mask]) is a count of values


class _Reseeds(gl.nn.Module):
    """Dropout from a seed set in forward: eager draws the same mask at every step."""

    def __init__(self, how):
        super().__init__()
        self.fc = gl.nn.Linear(4, 3)
        self.drop = gl.nn.Dropout(0.5)
        self.how = how
        self.gen = gl.Generator().manual_seed(1)
        self.start = self.gen.get_state()

    def forward(self, x):
        if self.how == "manual_seed":
            gl.manual_seed(7)
        elif self.how == "generator":
            self.gen.manual_seed(7)
        else:  # a Generator's state restored: the same noise at every step
            self.gen.set_state(self.start)
        noise = gl.randn(*x.shape, generator=self.gen)
        return self.drop(self.fc(x + 0.1 * noise))


@pytest.mark.parametrize("how", ["manual_seed", "generator", "set_state"])
def test_a_step_that_reseeds_runs_eagerly(how):
    test_untraceable_steps_run_eagerly_with_a_warning(lambda: _Reseeds(how), "reseeds")


@pytest.mark.parametrize("cls, reason", [
    (_SharesByDLPack, "__dlpack__"),
    (_Prints, "repr()"),
    (_CountsMaskedRows, "shape depends on values"),
])
def test_reads_of_values_through_dlpack_repr_and_value_shapes_run_eagerly(cls, reason):
    test_untraceable_steps_run_eagerly_with_a_warning(cls, reason)


def test_a_value_shaped_tensor_whose_shape_is_not_read_still_replays():
    # (the masked rows' count changes from batch to batch; mean() reads it from the array)
    def loss(out, y):
        return ((out[:, 0] - y.float())[y > 0] ** 2).mean() + F.cross_entropy(out, y)
    runs = [_run(compiled, _batches(8), OPTIMIZERS["adam"], loss_fn=loss)
            for compiled in (False, True)]
    _assert_same(*runs)
    assert runs[1][2].info()["replayed"] == 6


def test_a_count_of_masked_rows_that_two_batches_share_is_not_baked_in():
    """The two recordings' batches have as many masked rows as each other, so comparing
    the recordings cannot see that the loss divides by that count: reading the shape of
    ``out[mask]`` must itself make the step eager."""
    rng = np.random.default_rng(3)
    batches = []
    for count in (10, 10, 4, 20, 13, 10):
        y = np.zeros(32, np.int64)
        y[rng.choice(32, count, replace=False)] = 1 + rng.integers(0, 2, count)
        batches.append((gl.tensor(rng.standard_normal((32, 4)).astype(np.float32)),
                        gl.tensor(y)))

    def loss(out, y):
        picked = out[y > 0]
        return (picked ** 2).sum() / picked.shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        runs = [_run(compiled, batches, OPTIMIZERS["sgd"], loss_fn=loss, dropout=0.0)
                for compiled in (False, True)]
    _assert_same(*runs)
    assert "shape depends on values" in runs[1][2].info()["eager_reasons"][0]


class _ConstantMask(gl.nn.Module):
    """Columns picked by a fixed mask, and rows centred on the mean of the positive ones:
    neither output's shape depends on the batch's values."""

    def __init__(self):
        super().__init__()
        self.keep = gl.tensor([True, False, True, True])
        self.fc = gl.nn.Linear(3, 3)

    def forward(self, x):
        h = x[:, self.keep]
        return self.fc(h - h[h[:, 0] > 0].mean(0, keepdim=True))


def _eager_and_compiled(make, batches):
    """(losses, end state, step) of an eager and a compiled run of ``make()``'s model with
    Adam and cross-entropy, each from seed 0; asserts that they are the same."""
    runs = []
    for compiled in (False, True):
        gl.manual_seed(0)
        model = make()
        opt = gl.optim.Adam(model.parameters(), lr=1e-2)
        loss_fn = gl.nn.CrossEntropyLoss()
        step = compile_step(model, loss_fn, opt) if compiled else \
            eager_step(model, loss_fn, opt)
        runs.append(([step(x, y).item() for x, y in batches], _state(model, opt), step))
    _assert_same(*runs)
    return runs


def test_a_constant_mask_or_a_reduced_masked_tensor_still_replays():
    runs = _eager_and_compiled(_ConstantMask, _batches(8))
    assert runs[1][2].info()["replayed"] == 6


out = None  # a script's global with the name of a module attribute (self.out)


class _HasOut(gl.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = _model(dropout=0.0)
        self.out = gl.nn.Linear(3, 3)

    def forward(self, x):
        return self.out(self.body(x))


def test_an_attribute_named_as_a_global_is_not_guarded_as_that_global():
    global out
    gl.manual_seed(0)
    model = _HasOut()
    step = compile_step(model, gl.nn.CrossEntropyLoss(),
                        gl.optim.SGD(model.parameters(), lr=0.1))
    try:
        for x, y in _batches(8):
            out = model(x)   # what a course script does to look at its model
            step(x, y)
    finally:
        out = None
    info = step.info()
    assert info["rerecorded"] == 0 and info["replayed"] == 6, info


class _KeepsLast:
    def __init__(self):
        self.last = None

    def __call__(self, out, y):
        self.last = F.cross_entropy(out, y)  # a tensor stored on the loss at each call
        return self.last


class _Weighted:
    def __init__(self):
        self.weight = 1.0

    def __call__(self, out, y):
        return F.cross_entropy(out, y) * self.weight


def _steps_with_loss(loss_fn, compiled, change=None, steps=10):
    model = _model(dropout=0.0)
    opt = gl.optim.SGD(model.parameters(), lr=0.1)
    step = compile_step(model, loss_fn, opt) if compiled else eager_step(model, loss_fn, opt)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        losses = []
        for i, (x, y) in enumerate(_batches(steps)):
            if change is not None:
                change(i)
            losses.append(step(x, y).item())
    return (losses, _state(model, opt), step), caught


def test_guarded_values_that_change_at_every_step_make_the_step_eager_with_a_warning():
    runs = []
    for compiled in (False, True):
        loss_fn = _Weighted()
        run, caught = _steps_with_loss(loss_fn, compiled,
                                       lambda i, f=loss_fn: setattr(f, "weight", 1.0 + i / 8))
        runs.append(run)
    _assert_same(*runs)
    info = runs[1][2].info()
    assert info["replayed"] == 0 and info["rerecorded"] == 3, info
    assert "changed before each of the last 3 replays" in info["eager_reasons"][0]
    assert "p.data -= lr * p.grad" in info["eager_reasons"][0]  # (a course optimizer's)
    assert "(last: attribute 'weight';" in info["eager_reasons"][0]  # (what changed)
    assert sum("running eagerly" in str(w.message) for w in caught) == 1
    runs[1][2].reset()
    assert runs[1][2].info()["eager_reasons"] == []


def test_a_tensor_the_loss_keeps_on_itself_at_each_call_makes_the_step_eager():
    runs = []
    for compiled in (False, True):
        loss_fn = _KeepsLast()
        run, caught = _steps_with_loss(loss_fn, compiled)
        runs.append(run)
        assert loss_fn.last.item() == run[0][-1]  # as eager leaves it
    _assert_same(*runs)
    info = runs[1][2].info()
    # The first recording might be a lazy set-up, so it is dropped; the second gives up
    assert info["replayed"] == 0 and info["recorded"] == 2, info
    assert "changes attribute 'last' of the loss" in info["eager_reasons"][0]
    assert sum("running eagerly" in str(w.message) for w in caught) == 1


def test_numpy_numbers_are_guarded_as_settings():
    """A Dropout.p or a loss weight from np.linspace (a NumPy scalar, not a Python float)
    changed between steps records again, as a float does."""
    global WEIGHT

    def build():
        global WEIGHT
        WEIGHT = np.float32(0.0)
        model = _model(dropout=np.float64(0.3))
        return model, gl.optim.SGD(model.parameters(), lr=0.1), _weighted_loss

    def change(i, model, opt):
        global WEIGHT
        if i == 4:
            model[3].p = np.float64(0.6)
        if i == 8:
            WEIGHT = np.float32(0.5)
    try:
        info = _same_with_changes(build, change, 12).info()
    finally:
        WEIGHT = 0.0
    assert info["rerecorded"] == 2 and info["replayed"] == 6, info


class _ClassScaled(gl.nn.Module):
    factor = 1.0  # a setting kept on the class, read as self.factor

    def __init__(self):
        super().__init__()
        self.body = _model(dropout=0.0)

    def forward(self, x):
        return self.body(x) * self.factor


def test_a_setting_on_a_module_class_of_your_own_is_guarded():
    def build():
        _ClassScaled.factor = 1.0
        model = _ClassScaled()
        return model, gl.optim.SGD(model.parameters(), lr=0.1), gl.nn.CrossEntropyLoss()

    def change(i, model, opt):
        if i == 4:
            _ClassScaled.factor = 3.0
    try:
        info = _same_with_changes(build, change, 8).info()
    finally:
        _ClassScaled.factor = 1.0
    assert info["rerecorded"] == 1 and info["replayed"] == 4, info


CLASS_WEIGHT = gl.tensor([1.0, 1.0, 1.0])  # read by _class_weighted_loss


def _class_weighted_loss(out, y):
    return F.cross_entropy(out, y, weight=CLASS_WEIGHT)


@pytest.mark.parametrize("where", ["global tensor", "attribute tensor", "closure module"])
def test_tensors_and_modules_the_loss_reads_by_name_are_guarded(where):
    """The recording holds the tensor (or the loss module) it saw: another one bound to the
    name, or a setting of a loss module the loss's closure holds, must record again."""
    global CLASS_WEIGHT
    obj = _WeightedLoss()

    def build():
        global CLASS_WEIGHT
        model = _model(dropout=0.0)
        opt = gl.optim.SGD(model.parameters(), lr=0.1)
        if where == "global tensor":
            CLASS_WEIGHT = gl.tensor([1.0, 1.0, 1.0])
            return model, opt, _class_weighted_loss
        if where == "attribute tensor":
            obj.scale = gl.tensor([1.0])
            return model, opt, lambda out, y: obj(out * obj.scale, y)
        ce = gl.nn.CrossEntropyLoss()
        return model, opt, lambda out, y: ce(out, y) + 0.0 * out.mean()

    def change(i, model, opt):
        global CLASS_WEIGHT
        if i != 4:
            return
        if where == "global tensor":
            CLASS_WEIGHT = gl.tensor([1.0, 3.0, 0.5])
        elif where == "attribute tensor":
            obj.scale = gl.tensor([2.0])
        else:
            ce = opt.loss_cell.cell_contents
            ce.label_smoothing = 0.2
    try:
        if where == "closure module":
            inner_build = build

            def build():  # noqa: F811 - the optimizer carries the cell for change()
                model, opt, loss_fn = inner_build()
                opt.loss_cell = loss_fn.__closure__[0]
                return model, opt, loss_fn
        info = _same_with_changes(build, change, 8).info()
    finally:
        CLASS_WEIGHT = gl.tensor([1.0, 1.0, 1.0])
    assert info["rerecorded"] == 1 and info["replayed"] == 4, info


ALPHA = 0.0  # read by _scaled_loss through a functools.partial


def _scaled_loss(out, y, scale):
    return F.cross_entropy(out * scale, y) + ALPHA * (out * out).mean()


@pytest.mark.parametrize("form", ["bound method", "partial", "partial of a module"])
def test_a_loss_given_as_a_bound_method_or_a_partial_is_guarded(form):
    import functools
    global ALPHA
    crit = {}

    def build():
        global ALPHA
        ALPHA = 0.0
        model = _model(dropout=0.0)
        crit["ce"] = ce = gl.nn.CrossEntropyLoss()
        loss_fn = {"bound method": ce.forward,
                   "partial": functools.partial(_scaled_loss, scale=2.0),
                   "partial of a module": functools.partial(lambda c, o, y: c(o, y), ce)}[form]
        return model, gl.optim.SGD(model.parameters(), lr=0.1), loss_fn

    def change(i, model, opt):
        global ALPHA
        if i == 4:
            crit["ce"].label_smoothing = 0.3
            ALPHA = 0.5
    try:
        info = _same_with_changes(build, change, 8).info()
    finally:
        ALPHA = 0.0
    assert info["rerecorded"] == 1 and info["replayed"] == 4, info


def test_fit_guards_what_its_loss_reads():
    """fit wraps the loss (with its L1 term) in a function of its own; a callback changing
    the loss module's label smoothing or a global the loss reads must record again."""
    global WEIGHT

    class Anneal(gl.train.Callback):
        def on_epoch_begin(self, epoch):
            global WEIGHT
            ce.label_smoothing = 0.1 * epoch
            WEIGHT = 0.05 * epoch

    def loss_fn(out, y):
        return ce(out, y) + WEIGHT * (out * out).mean()
    runs = []
    try:
        for compile in (False, True):
            ce = gl.nn.CrossEntropyLoss()
            WEIGHT = 0.0
            rng = np.random.default_rng(0)
            X = rng.standard_normal((96, 4)).astype(np.float32)
            y = rng.integers(0, 3, 96)
            model = _model(dropout=0.0)
            opt = gl.optim.SGD(model.parameters(), lr=0.1)
            loader = gl.data.DataLoader(gl.data.TensorDataset(X, y), batch_size=32)
            history = gl.train.fit(model, loss_fn, opt, loader, epochs=3, verbose=0,
                                   compile=compile, callbacks=[Anneal()])
            runs.append((history.history["loss"], _state(model, opt), history.compiled))
    finally:
        WEIGHT = 0.0
    assert runs[0][0] == runs[1][0]
    _assert_same(([], runs[0][1]), ([], runs[1][1]))
    assert runs[1][2]["rerecorded"] == 2, runs[1][2]


def test_a_hook_registered_after_the_step_recorded_runs_as_in_eager():
    def build():
        model = _model(dropout=0.0)
        return model, gl.optim.SGD(model.parameters(), lr=0.1), gl.nn.CrossEntropyLoss()
    handles = []

    def change(i, model, opt):
        if i == 4:
            handles.append(model[0].weight.register_hook(lambda g: g * 0))
        if i == 7:
            handles.pop().remove()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = _same_with_changes(build, change, 12).info()
    # steps 0-3 record twice and replay; 4-6 run eagerly (the hook runs while recording);
    # from 7, without the hook, record twice and replay again
    assert info["rerecorded"] == 2 and info["replayed"] == 2 + 3, info
    assert any("tensor hook" in str(w.message) for w in caught)


def test_inputs_that_require_grad_get_their_grad_as_in_eager():
    pair = _pair(dropout=0.0)
    batches = _batches(6)
    for i, (x, y) in enumerate(batches):
        inputs = []
        for _ in pair:
            xi = gl.tensor(x.numpy(), requires_grad=i >= 2)  # plain batches first: replayed
            inputs.append(xi)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            losses = [step(xi, y).item() for (_, _, step), xi in zip(pair, inputs)]
        assert losses[0] == losses[1]
        if i >= 2:
            assert inputs[1].grad is not None
            assert np.array_equal(inputs[0].grad.numpy(), inputs[1].grad.numpy())
        if i == 2:
            assert any("an input requires grad" in str(w.message) for w in caught)
    assert _states_equal(pair)
    info = pair[1][2].info()
    assert info["signatures"] == 2 and info["replayed"] == 0 and info["eager"] == 4

def test_bad_arguments_are_refused():
    model = _model()
    opt = gl.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="gl.nn.Module"):
        compile_step(lambda x: x, F.cross_entropy, opt)
    with pytest.raises(TypeError, match="optimizer"):
        compile_step(model, F.cross_entropy, object())
    with pytest.raises(ValueError, match="not both"):
        compile_step(model, F.cross_entropy, opt, clip_grad_norm=1.0, clip_grad_value=1.0)
    step = compile_step(model, F.cross_entropy, opt)
    with pytest.raises(TypeError, match="must be Tensors"):
        step(np.zeros((2, 4), np.float32), gl.tensor([0, 1]))
    with pytest.raises(RuntimeError, match="without a forward"):
        step.backward_step()


def _clipped_runs(make_model, max_norm):
    """An eager (clip_grad_norm_ between backward and step) and a compiled
    (clip_grad_norm=) run of SGD on the same batches: [(losses, state)] twice, and the
    compiled step."""
    batches = _batches(6)
    results = []
    for compiled in (False, True):
        model = make_model()
        opt = gl.optim.SGD(model.parameters(), lr=0.5)
        loss_fn = gl.nn.CrossEntropyLoss()
        if compiled:
            step = compile_step(model, loss_fn, opt, clip_grad_norm=max_norm)
            losses = [step(x, y).item() for x, y in batches]
        else:
            losses = []
            for x, y in batches:
                opt.zero_grad()
                loss = loss_fn(model(x), y)
                loss.backward()
                gl.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
                opt.step()
                losses.append(loss.item())
        results.append((losses, _state(model, opt)))
    return results, model, step


def test_clipping_inside_the_step():
    results, _, _ = _clipped_runs(_model, 0.1)
    _assert_same(*results)


class _SharedGrad(gl.nn.Module):
    """Add's backward hands both operands one array: left and right get the very same
    one, col a reshaped view of row's. Two leaves would share one gradient unless each
    first gradient is copied as the engine copies it (a view, or an array already handed
    to another leaf)."""

    def __init__(self):
        super().__init__()
        self.lin = gl.nn.Linear(4, 3)
        self.col = gl.nn.Parameter(gl.zeros(3, 1))
        self.row = gl.nn.Parameter(gl.zeros(3))
        self.left = gl.nn.Parameter(gl.zeros(32, 3))   # one per row of a batch of 32
        self.right = gl.nn.Parameter(gl.zeros(32, 3))

    def forward(self, x):
        return self.lin(x) + (self.col.reshape(3) + self.row) + (self.left + self.right)


def test_leaf_gradients_own_their_memory_as_in_eager():
    # In-place clipping scales each .grad once: a gradient shared by two leaves would be
    # scaled twice.
    def make():
        gl.manual_seed(0)
        return _SharedGrad()
    results, model, step = _clipped_runs(make, 1e-3)
    assert step.info()["replayed"] == 4
    grads = [p.grad._data for p in model.parameters()]
    assert all(g.base is None for g in grads)
    assert len({id(g) for g in grads}) == len(grads)
    _assert_same(*results)


# -- what a replay hands out, and whose code it runs ----------------------------------------
def _mlp_eager_and_compiled_agree(batches):
    """Runs _mlp_step's model eagerly and compiled on ``batches``, asserts that both end
    bitwise equal, and returns the compiled step."""
    results = []
    for compiled in (False, True):
        model, opt, step = _mlp_step()
        if not compiled:
            step = eager_step(model, gl.nn.CrossEntropyLoss(), opt)
        results.append(([step(x, y).item() for x, y in batches], _state(model, opt)))
    _assert_same(*results)
    return step


def _mlp_step(seed=0):
    gl.manual_seed(seed)
    model = gl.nn.Sequential(gl.nn.Linear(4, 16), gl.nn.ReLU(), gl.nn.Linear(16, 16),
                             gl.nn.ReLU(), gl.nn.Linear(16, 3))
    opt = gl.optim.Adam(model.parameters(), lr=1e-2)
    return model, opt, compile_step(model, gl.nn.CrossEntropyLoss(), opt)


class _ReadsThePreActivation(gl.nn.Module):
    """relu(linear(x)) + linear(x): the Linear's output has a second reader."""

    def __init__(self):
        super().__init__()
        self.lin = gl.nn.Linear(4, 16)
        self.out = gl.nn.Linear(16, 3)

    def forward(self, x):
        h = self.lin(x)
        return self.out(F.relu(h) + h)


_FUSION_CASES = {
    # name: (model maker, input shape, input dtype, pairs the replay fuses)
    "mlp": (lambda: gl.nn.Sequential(gl.nn.Linear(4, 16), gl.nn.ReLU(), gl.nn.Linear(16, 16),
                                     gl.nn.ReLU(), gl.nn.Linear(16, 3)), (32, 4), np.float32, 2),
    "dropout_after": (lambda: gl.nn.Sequential(gl.nn.Linear(4, 16), gl.nn.ReLU(),
                                               gl.nn.Dropout(0.3), gl.nn.Linear(16, 3)),
                      (32, 4), np.float32, 1),
    "float64": (lambda: gl.nn.Sequential(gl.nn.Linear(4, 16), gl.nn.ReLU(),
                                         gl.nn.Linear(16, 3)).double(), (32, 4), np.float64, 1),
    # one column: the bias gradient is NumPy's pairwise sum (the numba tier declines it)
    "one_unit": (lambda: gl.nn.Sequential(gl.nn.Linear(4, 1), gl.nn.ReLU(),
                                          gl.nn.Linear(1, 3)), (32, 4), np.float32, 1),
    # a batch of sequences: (8, 5, 16) activations, the reference tier
    "sequences": (lambda: gl.nn.Sequential(gl.nn.Linear(4, 16), gl.nn.ReLU(), gl.nn.Linear(16, 3),
                                           gl.nn.Flatten(), gl.nn.Linear(15, 3)),
                  (8, 5, 4), np.float32, 1),
    # what is not fused: no bias, a pre-activation read twice
    "no_bias": (lambda: gl.nn.Sequential(gl.nn.Linear(4, 16, bias=False), gl.nn.ReLU(),
                                         gl.nn.Linear(16, 3)), (32, 4), np.float32, 0),
    "read_twice": (_ReadsThePreActivation, (32, 4), np.float32, 0),
    # BatchNorm between Linear and ReLU: BatchNorm and the ReLU are the fused pair, with
    # batch statistics, without the affine map (y is xhat itself), without running
    # statistics, with the cumulative average, in eval mode (the running statistics), and
    # on (N, C, L) batches (the op's reference tier)
    "batchnorm_between": (lambda: _model(dropout=0.0), (32, 4), np.float32, 1),
    "batchnorm_no_affine": (lambda: _bn_mlp(affine=False), (32, 4), np.float32, 1),
    "batchnorm_no_running": (lambda: _bn_mlp(track_running_stats=False), (32, 4), np.float32,
                             1),
    "batchnorm_cumulative": (lambda: _bn_mlp(momentum=None).double(), (32, 4), np.float64, 1),
    "batchnorm_eval": (lambda: _bn_mlp().eval(), (32, 4), np.float32, 1),
    "batchnorm_sequences": (lambda: gl.nn.Sequential(gl.nn.BatchNorm1d(5), gl.nn.ReLU(),
                                                     gl.nn.Flatten(), gl.nn.Linear(20, 3)),
                            (8, 5, 4), np.float32, 1),
    # a Linear that no ReLU follows: its bias gradient through the prepared column sums
    # (fusions._prepare_linear_backward), on (N, C) and, reshaped, on (N, L, C); a
    # one-column output is summed by LinearFn itself (NumPy sums one column pairwise)
    "linear_alone_one_column": (lambda: gl.nn.Sequential(
        gl.nn.Linear(4, 16), gl.nn.ReLU(), gl.nn.Linear(16, 1), gl.nn.Linear(1, 3)).double(),
        (32, 4), np.float64, 1),
    # a BatchNorm that no ReLU follows: the normalization op prepared each way, unfused
    "batchnorm_then_tanh": (lambda: gl.nn.Sequential(
        gl.nn.Linear(4, 16), gl.nn.BatchNorm1d(16), gl.nn.Tanh(), gl.nn.Linear(16, 3)),
        (32, 4), np.float32, 0),
    "batchnorm_then_tanh_cumulative": (lambda: gl.nn.Sequential(
        gl.nn.Linear(4, 16), gl.nn.BatchNorm1d(16, momentum=None), gl.nn.Tanh(),
        gl.nn.Linear(16, 3)), (32, 4), np.float32, 0),
    "linear_alone_sequences": (lambda: gl.nn.Sequential(
        gl.nn.Linear(4, 6), gl.nn.Flatten(), gl.nn.Linear(30, 3)), (8, 5, 4), np.float32, 0),
}


def _bn_mlp(**options):
    model = gl.nn.Sequential(gl.nn.Linear(4, 16), gl.nn.BatchNorm1d(16, **options),
                             gl.nn.ReLU(), gl.nn.Linear(16, 3))
    for m in model.modules():  # running statistics away from 0 and 1, for the eval case
        if isinstance(m, gl.nn.BatchNorm1d) and m.running_mean is not None:
            m.running_mean.add_(0.3)
            m.running_var.mul_(2.5)
    return model


@pytest.mark.parametrize("case", sorted(_FUSION_CASES))
def test_a_fused_pair_gives_the_eager_bits(case):
    make, shape, dtype, fused = _FUSION_CASES[case]
    rng = np.random.default_rng(5)
    batches = [(gl.tensor(rng.standard_normal(shape).astype(dtype)),
                gl.tensor(rng.integers(0, 3, shape[0]))) for _ in range(7)]
    runs = _eager_and_compiled(make, batches)
    info = runs[1][2].info()
    assert info["replayed"] == 5 and info["eager_reasons"] == []
    assert info["fused"] == fused


def test_a_fusion_steps_aside_for_a_patched_function(monkeypatch):
    # A fusion stands for LinearFn's and Relu's code as registered: patch either and the
    # replay runs the patched code, unfused (test_a_replay_runs_the_functions_own_... too).
    from gradlab.functional.activation import Relu
    backward = Relu.backward
    monkeypatch.setattr(Relu, "backward", lambda ctx, g: backward(ctx, g * np.float32(2)))
    model, opt, step = _mlp_step()
    for x, y in _batches(4):
        step(x, y)
    assert step.info()["replayed"] == 2 and step.info()["fused"] == 0


@pytest.mark.parametrize("module, name, factor", [
    ("gradlab.functional.loss", "SoftmaxCrossEntropy", 3.0),
    ("gradlab.functional.matmul", "LinearFn", 0.5)])
def test_a_prepared_forward_steps_aside_for_a_patched_forward(module, name, factor,
                                                              monkeypatch):
    # The replay runs SoftmaxCrossEntropy, and a Linear that no ReLU follows, through the
    # backend op prepared for its arrays (functional/fusions.py); a patched forward is what
    # it must run instead.
    import importlib
    cls = getattr(importlib.import_module(module), name)
    forward = cls.forward
    monkeypatch.setattr(cls, "forward",
                        lambda ctx, *a, **k: forward(ctx, *a, **k) * np.float32(factor))
    step = _mlp_eager_and_compiled_agree(_batches(5))
    assert step.info()["replayed"] == 3


def test_the_last_linear_adds_its_bias_through_the_prepared_kernel(monkeypatch):
    # _mlp_step's last Linear has no ReLU after it: each replay adds its bias with the
    # prepared bias_add (fusions._prepare_linear), one kernel call, in eager's bits.
    from gradlab.backend import fused
    if not fused.AVAILABLE:
        pytest.skip("the numba tier is off: LinearFn's own forward runs")
    from gradlab.backend.fused.bias_relu import numba_cpu
    calls = []
    monkeypatch.setattr(numba_cpu, "_add_part",
                        lambda *a, kernel=numba_cpu._add_part: calls.append(1) or kernel(*a))
    step = _mlp_eager_and_compiled_agree(_batches(6))
    assert step.info()["replayed"] == 4 and len(calls) == 4


def _picked_ops(monkeypatch):
    """The names of the fused ops whose op table chooses a tier from now on, in call order
    (a replay's prepared calls make no such choice); skips where the numba tier is off."""
    from gradlab.backend import fused
    if not fused.AVAILABLE:
        pytest.skip("the numba tier is off: every op takes the plain dispatch")
    picked = []
    pick = fused.FusedOp.pick
    monkeypatch.setattr(fused.FusedOp, "pick",
                        lambda self, *a, **k: picked.append(self.name) or pick(self, *a, **k))
    return picked


def test_replays_call_the_prepared_kernels_without_the_op_tables(monkeypatch):
    picked = _picked_ops(monkeypatch)
    model, opt, step = _mlp_step()
    batches = _batches(6)
    for x, y in batches[:3]:   # two eager recordings, and a first replay that prepares Adam
        step(x, y)
    assert "softmax_cross_entropy" in picked
    picked.clear()
    for x, y in batches[3:]:
        step(x, y)
    assert step.info()["replayed"] == 4 and step.info()["fused"] == 2
    assert picked == []


def test_a_weight_changed_in_place_and_a_bad_target_in_a_replay_act_as_in_eager():
    batches = _batches(8)
    bad_x, bad_y = batches[6][0], gl.tensor(np.where(np.arange(32) == 9, 5, 0))
    runs = []
    for compiled in (False, True):
        model, opt, _ = _mlp_step()
        loss_fn = gl.nn.CrossEntropyLoss(weight=gl.tensor(np.array([1.0, 2.0, 0.5],
                                                                   np.float32)))
        step = compile_step(model, loss_fn, opt) if compiled else \
            eager_step(model, loss_fn, opt)
        losses = []
        for k, (x, y) in enumerate(batches):
            if k == 4:
                with gl.no_grad():
                    loss_fn.weight.mul_(3.0)   # the next replays read the new weights
            losses.append(step(x, y).item())
        with pytest.raises(IndexError, match="Target 5 is out of bounds"):
            step(bad_x, bad_y)
        if compiled:
            step.discard()
        runs.append((losses, _state(model, opt), step))
    _assert_same(*runs)
    assert runs[1][2].info()["replayed"] == 6


def test_a_replay_never_writes_into_what_an_earlier_step_handed_out():
    model, opt, step = _mlp_step()
    batches = _batches(6)
    kept = []
    for x, y in batches:
        out, loss = step.forward(x, y)
        step.backward_step()
        kept.append((out, loss, out.detach().numpy().copy(), loss.item(),
                     [p.grad for p in model.parameters()],
                     [p.grad.numpy().copy() for p in model.parameters()]))
    assert step.info()["replayed"] == 4
    for out, loss, out_then, loss_then, grads, grads_then in kept:
        assert np.array_equal(out.detach().numpy(), out_then) and loss.item() == loss_then
        for g, then in zip(grads, grads_then):
            assert np.array_equal(g.numpy(), then)  # no later step wrote into it
    # Each replayed step's output, loss and gradients are arrays of their own.
    for field in (lambda k: k[0]._data, lambda k: k[1]._data):
        assert len({id(field(k)) for k in kept}) == len(kept)
    for n in range(len(kept[0][4])):
        assert len({id(k[4][n]._data) for k in kept}) == len(kept)


def test_replays_of_batchnorm_models_make_no_op_table_choice(monkeypatch):
    # BatchNorm with and without a ReLU after it, a Linear with no ReLU after it: every
    # backend op of the replay is prepared (the op tables' rules ran at the first replay)
    picked = _picked_ops(monkeypatch)
    model = gl.nn.Sequential(gl.nn.Linear(4, 16), gl.nn.BatchNorm1d(16), gl.nn.ReLU(),
                             gl.nn.Linear(16, 8), gl.nn.BatchNorm1d(8), gl.nn.Tanh(),
                             gl.nn.Linear(8, 3))
    opt = gl.optim.Adam(model.parameters(), lr=1e-2)
    step = compile_step(model, gl.nn.CrossEntropyLoss(), opt)
    batches = _batches(6)
    for x, y in batches[:3]:
        step(x, y)
    assert {"normalize_forward", "normalize_backward"} <= set(picked)
    picked.clear()
    for x, y in batches[3:]:
        step(x, y)
    assert step.info()["replayed"] == 4 and picked == []


def test_a_replay_runs_the_functions_own_forward_and_backward(monkeypatch):
    # One home per formula: a change to LinearFn is what a replay computes (a replay
    # holding a copy of the formula would keep computing the old one).
    from gradlab.functional.matmul import LinearFn
    calls = {"forward": 0, "backward": 0}
    forward, backward = LinearFn.forward, LinearFn.backward

    def scaled_forward(ctx, *args, **kwargs):
        calls["forward"] += 1
        return forward(ctx, *args, **kwargs) * np.float32(0.5)

    def counted_backward(ctx, g):
        calls["backward"] += 1
        return backward(ctx, g * np.float32(0.5))
    monkeypatch.setattr(LinearFn, "forward", scaled_forward)
    monkeypatch.setattr(LinearFn, "backward", counted_backward)
    step = _mlp_eager_and_compiled_agree(_batches(6))
    assert step.info()["replayed"] == 4
    assert calls == {"forward": 2 * 6 * 3, "backward": 2 * 6 * 3}  # 3 Linears, 6 steps each


# -- the optimizer's prepared step (used by replays) -----------------------------------------
def _changes(opt, model, k):
    """Step k's change to the optimizer, between two replays: each kind of change the
    prepared step must notice (and then let step() run)."""
    if k == 4:
        opt.param_groups[0]["lr"] *= 0.5          # read at every call, never baked in
    elif k == 5:
        opt.param_groups[0]["betas"] = (0.8, 0.99)
    elif k == 6:
        opt.param_groups[0]["amsgrad"] = True    # needs a state array it did not have
    elif k == 7:
        opt.load_state_dict(opt.state_dict())     # a new state object
    elif k == 8:
        p = next(iter(model.parameters()))
        opt.state[p] = {k2: (v.copy() if hasattr(v, "copy") else v)
                        for k2, v in opt.state[p].items()}  # one param's state replaced


@pytest.mark.parametrize("make", [OPTIMIZERS["adam"], OPTIMIZERS["adamw"],
                                  OPTIMIZERS["adam_amsgrad_wd"]])
def test_the_prepared_optimizer_step_equals_step_through_changes(make):
    batches = _batches(12)
    results = []
    for compiled in (False, True):
        model = _model()
        opt = make(model.parameters())
        loss_fn = gl.nn.CrossEntropyLoss()
        step = compile_step(model, loss_fn, opt) if compiled else \
            eager_step(model, loss_fn, opt)
        losses = []
        for k, (x, y) in enumerate(batches):
            losses.append(step(x, y).item())
            _changes(opt, model, k)
        results.append((losses, _state(model, opt)))
        if compiled:
            assert step.info()["replayed"] == 10
            assert step._optimizer_fast is not None and step._optimizer_fast()  # in use
    _assert_same(*results)


def test_a_prepared_step_refuses_what_it_was_not_prepared_for():
    model = _model(dropout=0, batchnorm=False)
    opt = gl.optim.Adam(model.parameters(), lr=1e-2)
    assert opt._prepared_step() is None  # no gradients, no state yet
    x, y = _batches(1)[0]
    gl.nn.CrossEntropyLoss()(model(x), y).backward()
    opt.step()
    fast = opt._prepared_step()
    weights = lambda: [p.detach().numpy().copy() for p in model.parameters()]  # noqa: E731
    before = weights()
    assert fast() is True and opt.state[next(iter(model.parameters()))]["step"] == 2
    assert not all(np.array_equal(a, b) for a, b in zip(before, weights()))
    model[0].bias.grad = None
    after = weights()
    assert fast() is False  # a missing gradient: nothing done, step() must run
    assert all(np.array_equal(a, b) for a, b in zip(after, weights()))

    class Custom(gl.optim.Adam):  # rewrites the step: no prepared form may bypass it
        def _step_group(self, group):
            super()._step_group(group)

    other = Custom(model.parameters(), lr=1e-2)
    for p in model.parameters():
        p.grad = gl.zeros_like(p)
    other.step()
    assert other._prepared_step() is None


# -- fit and the command line ------------------------------------------------------------------
def _fit(compile, **kw):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((150, 4)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1)
    model = _model()
    opt = gl.optim.Adam(model.parameters(), lr=1e-2)
    loader = gl.data.DataLoader(gl.data.TensorDataset(X[:120], y[:120]), batch_size=32,
                                shuffle=True, seed=0, drop_last=True)
    val = gl.data.DataLoader(gl.data.TensorDataset(X[120:], y[120:]), batch_size=64)
    sched = gl.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4)
    history = gl.train.fit(model, gl.nn.CrossEntropyLoss(), opt, loader, val, epochs=4,
                           scheduler=sched, verbose=0, compile=compile, **kw)
    return history, _state(model, opt)


@pytest.mark.parametrize("kw", [{}, {"l1": 1e-3}])
def test_fit_compiled_equals_fit_eager(kw):
    (h1, s1), (h2, s2) = _fit(False, **kw), _fit(True, **kw)
    drop_time = lambda h: {k: v for k, v in h.history.items() if k != "time"}  # noqa: E731
    assert drop_time(h1) == drop_time(h2) and len(h1) == 4
    _assert_same(([], s1), ([], s2))
    # how the steps ran (3 batches of 32 per epoch, one signature): on the history
    assert h1.compiled is None
    assert {k: h2.compiled[k] for k in ("recorded", "replayed", "eager", "signatures")} == \
        {"recorded": 2, "replayed": 10, "eager": 0, "signatures": 1}


def test_cli_train_compile_says_how_steps_ran(tmp_path, capsys):
    from gradlab.cli.main import main
    from gradlab.cli.train_command import compiled_summary
    assert main(["train", "--epochs", "2", "--hidden", "16",   # compiled: the CPU default
                 "--out", str(tmp_path / "run")]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("compiled")]
    # digits: 1295 training rows, batch 32 with drop_last (BatchNorm is on): 40 per epoch
    assert lines == ["compiled step: 78 of 80 steps replayed, 2 recording steps for 1 input "
                     "signature"]
    # --no-compile: eager, and nothing to say about it
    assert main(["train", "--epochs", "1", "--hidden", "16", "--no-compile",
                 "--out", str(tmp_path / "eager")]) == 0
    assert not [ln for ln in capsys.readouterr().out.splitlines()
                if ln.startswith("compiled")]
    assert compiled_summary({"replayed": 0, "recorded": 1, "eager": 3, "signatures": 2,
                             "eager_reasons": ["grad mode is off"]}) == \
        "compiled step: 0 of 4 steps replayed, 1 recording step for 2 input signatures, " \
        "3 eager (grad mode is off)"


def test_cli_compile_defaults(monkeypatch):
    # train compiles by default on the CPU only (the CLI's models are gradlab's own
    # modules); search trials stay eager unless asked
    from gradlab.cli import search_command, train_command
    from gradlab.cli.main import build_parser
    seen = {}

    def fake_fit(*args, compile, **kwargs):
        seen["train"] = compile
        raise SystemExit(0)
    monkeypatch.setattr("gradlab.train.fit", fake_fit)
    for argv, want in ((["train"], True), (["train", "--no-compile"], False),
                       (["train", "--device", "cpu", "--compile"], True)):
        with pytest.raises(SystemExit):
            train_command.cmd_train(build_parser().parse_args(argv + ["--epochs", "1"]))
        assert seen.pop("train") is want, argv


    def fake_search(*args, compile, **kwargs):
        seen["search"] = compile
        raise SystemExit(0)
    monkeypatch.setattr("gradlab.train.random_search", fake_search)
    for argv, want in ((["search"], False), (["search", "--compile"], True)):
        with pytest.raises(SystemExit):
            search_command.cmd_search(build_parser().parse_args(
                argv + ["--quiet", "--param", "lr=loguniform:1e-4:1e-2"]))
        assert seen.pop("search") is want, argv


def test_cli_train_compile_gives_the_same_run(tmp_path):
    from gradlab.cli.main import main
    for name, extra in (("eager", ["--no-compile"]), ("compiled", ["--compile"])):
        code = main(["train", "--epochs", "3", "--hidden", "32", "--dropout", "0.1",
                     "--quiet", "--out", str(tmp_path / name), *extra])
        assert code == 0
    a, b = (json.loads((tmp_path / n / "metrics.json").read_text())
            for n in ("eager", "compiled"))
    for k in ("test_accuracy", "test_loss", "epochs_run", "best_epoch"):
        assert a[k] == b[k], k
    assert (tmp_path / "eager" / "best_model.gl").read_bytes() == \
        (tmp_path / "compiled" / "best_model.gl").read_bytes()


def test_anomaly_detection_runs_the_step_eagerly_so_each_gradient_is_checked():
    batches = _batches(7)
    bad = batches[4][0].detach().numpy().copy()
    bad[0, 0] = np.nan
    batches[4] = (gl.tensor(bad), batches[4][1])
    outcomes = []
    for compiled in (False, True):
        model = _model(dropout=0.0, batchnorm=False)
        opt = gl.optim.SGD(model.parameters(), lr=0.1)
        loss_fn = gl.nn.CrossEntropyLoss()
        step = compile_step(model, loss_fn, opt) if compiled else eager_step(model, loss_fn, opt)
        for x, y in batches[:3]:  # (compiled: recorded and replayed outside anomaly mode)
            step(x, y)
        errors = []
        with gl.autograd.detect_anomaly():
            for x, y in batches[3:6]:
                try:
                    step(x, y)
                except gl.autograd.AnomalyError as e:
                    errors.append(type(e))
        step(*batches[6])
        outcomes.append((errors, _state(model, opt)))
    assert outcomes[0][0] == outcomes[1][0] == [gl.autograd.AnomalyError]
    _assert_same((None, outcomes[0][1]), (None, outcomes[1][1]))
    info = step.info()
    assert info["replayed"] == 2 and info["eager"] == 2  # (one step raised)
    assert "anomaly detection is on" in info["eager_reasons"][0]


def test_the_warning_of_a_setting_changed_at_every_step_names_it():
    model = _model(dropout=0.2, batchnorm=False)  # (Dropout is model[2])
    step = compile_step(model, gl.nn.CrossEntropyLoss(), gl.optim.SGD(model.parameters(), 0.1))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        for i, (x, y) in enumerate(_batches(8)):
            model[2].p = 0.1 + i / 100
            step(x, y)
    assert "(last: model.2.p;" in step.info()["eager_reasons"][0]
