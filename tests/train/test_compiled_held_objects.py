"""What a compiled step's recording holds by identity or reads from a tensor it was given:
a function or callable object kept on a module or bound to a global, criteria and tensors
kept in containers, modules kept in a plain list, a loss's class weights, and one array
passed as both x and y. Each is changed between steps here; the compiled run must end where
the eager one does, bit for bit, and go on replaying after the change."""
import collections
import functools
import types

import numpy as np
import pytest

import gradlab as gl
import gradlab.nn.functional as F
from gradlab.train import compile_step
from tests.train.compiled_runs import eager_step

STEPS, AT = 8, 4  # steps 0-1 record, 2-3 replay; the change comes before step AT


def _batches(n=STEPS, binary=False):
    rng = np.random.default_rng(1)
    out = []
    for _ in range(n):
        x = gl.tensor(rng.standard_normal((16, 4)).astype(np.float32))
        y = rng.integers(0, 3, 16)
        y = gl.tensor((y == 0).astype(np.float32)[:, None].repeat(3, 1) if binary else y)
        out.append((x, y))
    return out


class _Net(gl.nn.Module):
    def __init__(self, act=F.relu):
        super().__init__()
        gl.manual_seed(0)
        self.fc1, self.fc2 = gl.nn.Linear(4, 16), gl.nn.Linear(16, 3)
        self.act = act

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def _runs(make_model, make_loss, change, batches=None):
    """Eager and compiled runs, ``change(model, loss_fn)`` before step AT. Asserts the same
    losses and end weights; returns the compiled step's info()."""
    batches = batches or _batches()
    runs = []
    for compiled in (False, True):
        model, loss_fn = make_model(), make_loss()
        opt = gl.optim.SGD(model.parameters(), lr=0.1)
        step = compile_step(model, loss_fn, opt) if compiled else \
            eager_step(model, loss_fn, opt)
        losses = []
        for i, (x, y) in enumerate(batches):
            if i == AT:
                change(model, loss_fn)
            losses.append(step(x, y).item())
        runs.append((losses, [p.detach().numpy().copy() for p in model.parameters()]))
    (eager_losses, eager_weights), (losses, weights) = runs
    assert losses == eager_losses
    for a, b in zip(eager_weights, weights):
        np.testing.assert_array_equal(a, b)
    info = step.info()
    assert info["eager"] == 0 and info["replayed"] > 2, info  # replays after the change too
    return info


def _k_times(h):
    return h * 0.5


class _Scale:
    def __init__(self, s):
        self.s = s

    def __call__(self, h):
        return F.relu(h) * self.s


def _set(name, value):
    return lambda model, loss_fn: setattr(model, name, value)


@pytest.mark.parametrize("make_model, change", [
    (_Net, _set("act", gl.tanh)),
    (_Net, _set("act", _k_times)),
    (_Net, _set("act", lambda h: h * h)),
    (lambda: _Net(functools.partial(F.leaky_relu, negative_slope=0.01)),
     _set("act", functools.partial(F.leaky_relu, negative_slope=0.3))),
    (lambda: _Net(_Scale(1.0)), lambda model, loss_fn: setattr(model.act, "s", 3.0)),
], ids=["library-function", "own-function", "lambda", "partial", "callable-object-setting"])
def test_a_callable_kept_on_a_module_changed_records_again(make_model, change):
    assert _runs(make_model, gl.nn.CrossEntropyLoss, change)["rerecorded"] == 1


CRITERION = functools.partial(F.cross_entropy, label_smoothing=0.0)
ACT = _Scale(1.0)


def _global_criterion_loss(out, y):
    return CRITERION(out, y)


def _global_act(h):
    return ACT(h)


@pytest.mark.parametrize("name, value", [
    ("CRITERION", functools.partial(F.cross_entropy, label_smoothing=0.3)),
    ("ACT", _Scale(2.0)),
], ids=["partial", "callable-object"])
def test_a_global_rebound_to_another_callable_records_again(name, value, monkeypatch):
    first = {"CRITERION": CRITERION, "ACT": ACT}

    def make_loss():  # (each run starts from the first binding)
        monkeypatch.setitem(globals(), name, first[name])
        return _global_criterion_loss

    def rebind(model, loss_fn):
        monkeypatch.setitem(globals(), name, value)
    assert _runs(lambda: _Net(_global_act), make_loss, rebind)["rerecorded"] == 1


@pytest.mark.parametrize("holder, change", [
    (lambda: {"ce": gl.nn.CrossEntropyLoss()},
     lambda held: setattr(held["ce"], "label_smoothing", 0.3)),
    (lambda: [gl.nn.CrossEntropyLoss()],
     lambda held: setattr(held[0], "label_smoothing", 0.3)),
    (lambda: types.SimpleNamespace(ce=gl.nn.CrossEntropyLoss()),
     lambda held: setattr(held.ce, "label_smoothing", 0.3)),
    (lambda: {"ce": gl.nn.CrossEntropyLoss(), "scale": gl.tensor(1.0)},
     lambda held: held.__setitem__("scale", gl.tensor(2.0))),
], ids=["dict-of-criteria", "list-of-criteria", "namespace", "tensor-in-dict"])
def test_criteria_and_tensors_in_a_container_the_loss_holds(holder, change):
    def make_loss():
        held = holder()

        def loss_fn(out, y):  # (through the container at every call, as multi-task code)
            if isinstance(held, dict):
                return held["ce"](out, y) * held.get("scale", 1.0)
            return held[0](out, y) if isinstance(held, list) else held.ce(out, y)
        loss_fn.held = held
        return loss_fn

    assert _runs(_Net, make_loss, lambda model, loss_fn: change(loss_fn.held))[
        "rerecorded"] == 1


class _PlainListOfModules(gl.nn.Module):
    """Modules in a plain list: not registered, so model.modules() leaves them out."""

    def __init__(self):
        super().__init__()
        gl.manual_seed(0)
        self.layers = [gl.nn.Linear(4, 16), gl.nn.ReLU(), gl.nn.Dropout(0.0),
                       gl.nn.Linear(16, 3)]

    def parameters(self, recurse=True):
        return [p for m in self.layers for p in m.parameters()]

    def forward(self, x):
        for m in self.layers:
            x = m(x)
        return x


def test_modules_kept_in_a_plain_list_are_guarded():
    def change(model, loss_fn):
        model.layers[2].p = 0.5
    gl.manual_seed(3)
    _runs(_PlainListOfModules, gl.nn.CrossEntropyLoss, change)


# -- class weights ---------------------------------------------------------------------------
def _in_place(name, values):
    def change(model, loss_fn):
        with gl.no_grad():
            getattr(loss_fn, name).copy_(gl.tensor(np.array(values)))
    return change


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("loss", ["cross_entropy", "nll", "bce", "bce_with_logits"])
def test_a_class_weight_changed_in_place_is_read_at_every_replay(loss, dtype):
    w = np.array([1.0, 2.0, 3.0], dtype=dtype)
    binary = loss.startswith("bce")
    if loss == "cross_entropy":
        make_loss = lambda: gl.nn.CrossEntropyLoss(weight=gl.tensor(w))  # noqa: E731
    elif loss == "nll":
        def make_loss():
            crit = gl.nn.NLLLoss(weight=gl.tensor(w))

            def loss_fn(out, y):
                return crit(F.log_softmax(out, dim=1), y)
            loss_fn.weight = crit.weight
            return loss_fn
    elif loss == "bce":
        def make_loss():
            crit = gl.nn.BCELoss(weight=gl.tensor(w))

            def loss_fn(out, y):
                return crit(F.sigmoid(out), y)
            loss_fn.weight = crit.weight
            return loss_fn
    else:
        make_loss = lambda: gl.nn.BCEWithLogitsLoss(pos_weight=gl.tensor(w))  # noqa: E731
    name = "pos_weight" if loss == "bce_with_logits" else "weight"
    _runs(_Net, make_loss, _in_place(name, [5.0, 1.0, 0.5]), _batches(binary=binary))


@pytest.mark.parametrize("loss", ["cross_entropy", "nll", "bce_with_logits"])
def test_a_class_weight_in_the_closure_given_another_array_records_again(loss):
    binary = loss == "bce_with_logits"

    def make_loss():
        w = gl.tensor(np.array([1.0, 2.0, 3.0], dtype=np.float32))

        def loss_fn(out, y):
            if loss == "cross_entropy":
                return F.cross_entropy(out, y, weight=w)
            if loss == "nll":
                return F.nll_loss(F.log_softmax(out, dim=1), y, weight=w)
            return F.binary_cross_entropy_with_logits(out, y, weight=w)
        loss_fn.w = w
        return loss_fn

    def rebind(model, loss_fn):
        loss_fn.w.data = gl.tensor(np.array([3.0, 1.0, 1.0], dtype=np.float32))
    assert _runs(_Net, make_loss, rebind, _batches(binary=binary))["rerecorded"] == 1


def test_an_elementwise_weight_that_does_not_broadcast_says_so():
    x, y = gl.zeros((4, 3)), gl.zeros((4, 3))
    with pytest.raises(ValueError, match=r"pos_weight of shape \(2,\) does not broadcast to "
                                         r"the input's shape \(4, 3\)"):
        F.binary_cross_entropy_with_logits(x, y, pos_weight=gl.ones(2))
    with pytest.raises(ValueError, match=r"binary_cross_entropy: weight of shape \(4, 3, 1\)"):
        F.binary_cross_entropy(x, y, weight=gl.ones((4, 3, 1)))


def test_running_statistics_in_the_closure_given_another_array_records_again():
    class _FunctionalNorm(_Net):
        def __init__(self):
            super().__init__()
            self.stats = None  # (set below: plain tensors, not buffers)

        def forward(self, x):  # (normalized by the running statistics: eval's form)
            h = F.batch_norm(self.fc1(x), *self.stats, training=False)
            return self.fc2(F.relu(h))

    def make_model():
        model = _FunctionalNorm()
        model.stats = [gl.zeros(16), gl.ones(16)]
        return model

    def rebind(model, loss_fn):
        model.stats[0].data = gl.full((16,), 0.5)
    _runs(make_model, gl.nn.CrossEntropyLoss, rebind)


# -- inputs ----------------------------------------------------------------------------------
def test_x_is_y_and_then_not_are_two_signatures():
    """An autoencoder trained on step(x, x), then on noisy inputs step(x + noise, x): a
    recording of the first cannot tell the model's reads from the loss's."""
    class _Auto(gl.nn.Module):
        def __init__(self):
            super().__init__()
            gl.manual_seed(0)
            self.enc, self.dec = gl.nn.Linear(4, 2), gl.nn.Linear(2, 4)

        def forward(self, x):
            return self.dec(F.relu(self.enc(x)))

    rng = np.random.default_rng(2)
    xs = [gl.tensor(rng.standard_normal((16, 4)).astype(np.float32)) for _ in range(STEPS)]
    noisy = [gl.tensor(x.numpy() + rng.standard_normal((16, 4)).astype(np.float32))
             for x in xs]
    runs = []
    for compiled in (False, True):
        model = _Auto()
        opt = gl.optim.SGD(model.parameters(), lr=0.1)
        loss_fn = gl.nn.MSELoss()
        step = compile_step(model, loss_fn, opt) if compiled else \
            eager_step(model, loss_fn, opt)
        runs.append([step(x, x).item() for x in xs[:4]] +
                    [step(n, x).item() for n, x in zip(noisy[4:], xs[4:])])
    assert runs[0] == runs[1]
    assert step.info()["signatures"] == 2 and step.info()["replayed"] == 4


# -- a loss object's private settings ---------------------------------------------------------
class _PenalizedLoss:
    def __init__(self):
        self._beta = 0.0

    def __call__(self, out, y):
        return F.cross_entropy(out, y) + self._beta * (out ** 2).mean()


def test_a_private_setting_of_a_loss_object_is_guarded():
    _runs(_Net, _PenalizedLoss, lambda model, loss_fn: setattr(loss_fn, "_beta", 10.0))


class _Options:
    def __init__(self):
        self.beta, self.offset = 0.0, gl.tensor(0.0)


def test_a_setting_on_an_object_that_also_holds_a_tensor_is_guarded():
    def make_loss():
        opts = _Options()

        def loss_fn(out, y):
            return F.cross_entropy(out, y) + opts.beta * ((out - opts.offset) ** 2).mean()
        loss_fn.opts = opts
        return loss_fn
    info = _runs(_Net, make_loss, lambda model, loss_fn: setattr(loss_fn.opts, "beta", 5.0))
    assert info["rerecorded"] == 1


@pytest.mark.parametrize("make, change", [
    (lambda: collections.OrderedDict(beta=0.0), lambda held: held.__setitem__("beta", 5.0)),
    (lambda: collections.defaultdict(float), lambda held: held.__setitem__("beta", 5.0)),
    (lambda: {"flags": {"penalize"}}, lambda held: held["flags"].discard("penalize")),
], ids=["ordereddict", "defaultdict", "set"])
def test_settings_in_other_dicts_and_sets_are_compared_by_value(make, change):
    def make_loss():
        held = make()
        if isinstance(held, collections.defaultdict):
            held["beta"] = 0.0

        def loss_fn(out, y):
            if "flags" in held:
                beta = 5.0 if "penalize" in held["flags"] else 0.0
            else:
                beta = held["beta"]
            return F.cross_entropy(out, y) + beta * (out ** 2).mean()
        loss_fn.held = held
        return loss_fn
    info = _runs(_Net, make_loss, lambda model, loss_fn: change(loss_fn.held))
    assert info["rerecorded"] == 1


# -- what the guards leave alone: what the training loop keeps where no step code reads it --
class _Bar:
    """Stands for a library's object (a progress bar, a logger, a datetime): no setting."""


def _keeps(where, value):
    def keep(model, loss_fn, i):
        (model if where == "model" else loss_fn).kept = value(i)
    return keep


@pytest.mark.parametrize("where", ["model", "loss"])
@pytest.mark.parametrize("value", [lambda i: float(i), lambda i: gl.tensor(float(i)),
                                   lambda i: (gl.tensor(float(i)), i), lambda i: _Bar(),
                                   lambda i: [float(k) for k in range(i)]],
                         ids=["float", "tensor", "tuple", "object", "history"])
def test_what_the_loop_keeps_on_the_model_or_loss_where_no_code_reads_it_changes_nothing(
        where, value):
    model = _Net()
    loss_fn = _PenalizedLoss()
    step = compile_step(model, loss_fn, gl.optim.SGD(model.parameters(), lr=0.1))
    keep = _keeps(where, value)
    for i, (x, y) in enumerate(_batches()):
        keep(model, loss_fn, i)  # at every step, before it
        step(x, y)
    info = step.info()
    assert info["replayed"] == STEPS - 2 and info["rerecorded"] == 0, info


class _Stats:
    def __init__(self):
        self.seen, self.scale = 0, 1.0

    def apply(self, h):
        return h * self.scale


def test_a_bound_method_kept_on_a_module_is_guarded_by_what_it_reads():
    def make_model():
        model = _Net()
        model.stats = _Stats()
        model.act = model.stats.apply  # (forward calls self.act)
        return model

    runs = []
    for compiled in (False, True):
        model = make_model()
        opt = gl.optim.SGD(model.parameters(), lr=0.1)
        step = compile_step(model, gl.nn.CrossEntropyLoss(), opt) if compiled else \
            eager_step(model, gl.nn.CrossEntropyLoss(), opt)
        losses = []
        for i, (x, y) in enumerate(_batches()):
            model.stats.seen += len(x)  # not read by apply: no re-recording
            if i == AT:
                model.stats.scale = 2.0  # read by apply: records again
            losses.append(step(x, y).item())
        runs.append(losses)
    assert runs[0] == runs[1]
    assert step.info()["rerecorded"] == 1 and step.info()["replayed"] == STEPS - 4


class _AttrBag:
    """No __dict__, and a __getattr__ that raises KeyError (not AttributeError)."""
    __slots__ = ("_d",)

    def __init__(self, **kw):
        object.__setattr__(self, "_d", kw)

    def __getattr__(self, k):
        return self._d[k]


def test_odd_objects_the_step_reads_do_not_crash_the_guards():
    model = _Net()
    model.opts = _AttrBag(scale=1.0)
    bag = _AttrBag(beta=0.0)
    deep = [[[0.5] * 128] * 128] * 4  # (not looked into beyond _CONTAINER_ITEMS * 4)

    def loss_fn(out, y):
        return F.cross_entropy(out, y) * (1.0 + 0 * len(deep)) + 0 * (bag is None)
    step = compile_step(model, loss_fn, gl.optim.SGD(model.parameters(), lr=0.1))
    for x, y in _batches():
        step(x, y)
    assert step.info()["replayed"] == STEPS - 2
