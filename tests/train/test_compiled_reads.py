"""Code that a compiled step's guards must follow to see what the step reads: helper methods
of a loss object, properties, getattr with a computed name, vars(self), an attrgetter, a
__getattr__ fallback, functions kept in a dict on the module, methods of a helper object
or of a class read as a global, a decorator object around forward, a nested class, class
attributes. Each value is changed between steps here; the compiled run must end where the
eager one does, bit for bit, having recorded again."""
import dataclasses
import itertools
import operator
import pathlib
import sys
import types
import warnings

import pytest

import gradlab as gl
import gradlab.nn.functional as F
from gradlab.train import compile_step
from tests.train.compiled_runs import eager_step
from tests.train.test_compiled_held_objects import _batches, _Net, _runs

GAIN = 1.0


def _ce(out, y):
    return F.cross_entropy(out, y)


# -- the loss's own object ----------------------------------------------------------------------
class _HelperLoss:
    def __init__(self):
        self.beta = 0.0

    def __call__(self, out, y):
        return _ce(out, y) + self.penalty(out)

    def penalty(self, out):
        return self.beta * (out * out).mean()


class _Trainer:
    def __init__(self):
        self.beta = 0.0

    def loss(self, out, y):
        return _ce(out, y) + self.regularizer(out)

    def regularizer(self, out):
        return self.beta * (out * out).mean()


class _PropertyLoss:
    def __init__(self):
        self._beta = 0.0

    @property
    def beta(self):
        return self._beta

    def __call__(self, out, y):
        return _ce(out, y) + self.beta * (out * out).mean()


class _ClassSettingLoss:
    beta = 0.0

    def __call__(self, out, y):
        return _ce(out, y) + self.beta * (out * out).mean()


class _NamedLoss:
    def __init__(self):
        self.terms, self.w_sq = ["w_sq"], 0.0

    def __call__(self, out, y):
        loss = _ce(out, y)
        for name in self.terms:
            loss = loss + getattr(self, name) * (out * out).mean()
        return loss


def _set_on_class(model, loss_fn):
    _ClassSettingLoss.beta = 5.0


@pytest.mark.parametrize("make_loss, change", [
    (_HelperLoss, lambda model, loss_fn: setattr(loss_fn, "beta", 5.0)),
    (lambda: _Trainer().loss, lambda model, loss_fn: setattr(loss_fn.__self__, "beta", 5.0)),
    (_PropertyLoss, lambda model, loss_fn: setattr(loss_fn, "_beta", 5.0)),
    (_ClassSettingLoss, _set_on_class),
    (_NamedLoss, lambda model, loss_fn: setattr(loss_fn, "w_sq", 5.0)),
], ids=["helper-method", "bound-method-helper", "property", "class-attribute", "getattr"])
def test_what_a_loss_object_reads_through_its_own_code_is_guarded(make_loss, change,
                                                                  monkeypatch):
    monkeypatch.setattr(_ClassSettingLoss, "beta", 0.0)

    def fresh():
        _ClassSettingLoss.beta = 0.0
        return make_loss()
    assert _runs(_Net, fresh, change)["rerecorded"] == 1


# -- the model's code ----------------------------------------------------------------------------
class _Dispatches(_Net):
    kind = "scaled"

    def forward(self, x):
        return getattr(self, "_act_" + self.kind)(self.fc1(x))

    def _act_scaled(self, h):
        return self.fc2(F.relu(h) * GAIN)


class _KeepsLambdas(_Net):
    def __init__(self):
        super().__init__()
        self.ops = {"act": lambda h: F.relu(h) * GAIN}

    def forward(self, x):
        return self.fc2(self.ops["act"](self.fc1(x)))


class _Policy:
    def apply(self, h):
        return F.relu(h) * GAIN


class _HasAPolicy(_Net):
    def __init__(self):
        super().__init__()
        self.policy = _Policy()

    def forward(self, x):
        return self.fc2(self.policy.apply(self.fc1(x)))


class _Helper:
    @staticmethod
    def scale(module, h):
        return h * module.gain


class _CallsAGlobalClass(_Net):
    def forward(self, x):
        return self.fc2(_Helper.scale(self, F.relu(self.fc1(x))))


class _PrivateClassSetting(_Net):
    _gain = 1.0

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)) * self._gain)


class _FallsBack(_Net):
    def __init__(self):
        super().__init__()
        self.opts = {"gain": 1.0}

    def __getattr__(self, name):
        opts = self.__dict__.get("opts")
        if opts is not None and name in opts:
            return opts[name]
        return super().__getattr__(name)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)) * self.gain)


class _SumsItsMultipliers(_Net):
    def forward(self, x):
        gain = 1.0
        for name, v in vars(self).items():
            if name.startswith("mul_"):
                gain = gain * v
        return self.fc2(F.relu(self.fc1(x)) * gain)


class _GetsByAttrgetter(_Net):
    def __init__(self):
        super().__init__()
        self.get = operator.attrgetter("gain")

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)) * self.get(self))


class _Wraps:
    """A decorator object of your own: forward is an instance of it."""

    def __init__(self, fn):
        self.fn = fn

    def __get__(self, obj, kind=None):
        return lambda *args: self.fn(obj, *args)


class _WrappedForward(_Net):
    @_Wraps
    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)) * GAIN)


class _NestedHelper(_Net):
    class Inner:
        @staticmethod
        def scale(module, h):
            return h * module.gain

    def forward(self, x):
        return self.fc2(self.Inner.scale(self, F.relu(self.fc1(x))))


def _with(cls, **attrs):
    def make():
        model = cls()
        for k, v in attrs.items():
            setattr(model, k, v)
        return model
    return make


def _set_global(model, loss_fn):
    globals()["GAIN"] = 3.0


def _set(name, value):
    return lambda model, loss_fn: setattr(model, name, value)


@pytest.mark.parametrize("make_model, change", [
    (_Dispatches, _set_global),
    (_KeepsLambdas, _set_global),
    (_HasAPolicy, _set_global),
    (_with(_CallsAGlobalClass, gain=1.0), _set("gain", 3.0)),
    (_PrivateClassSetting, lambda model, loss_fn: setattr(type(model), "_gain", 3.0)),
    (_FallsBack, lambda model, loss_fn: model.opts.__setitem__("gain", 3.0)),
    (_with(_SumsItsMultipliers, mul_a=1.0), _set("mul_a", 3.0)),
    (_with(_GetsByAttrgetter, gain=1.0), _set("gain", 3.0)),
    (_WrappedForward, _set_global),
    (_with(_NestedHelper, gain=1.0), _set("gain", 3.0)),
], ids=["getattr-dispatch", "lambda-in-a-dict", "helper-object", "global-class",
        "private-class-setting", "getattr-fallback", "vars", "attrgetter", "decorator-object",
        "nested-class"])
def test_what_the_models_code_reads_by_ways_other_than_self_name_is_guarded(make_model,
                                                                            change,
                                                                            monkeypatch):
    monkeypatch.setitem(globals(), "GAIN", 1.0)
    monkeypatch.setattr(_PrivateClassSetting, "_gain", 1.0)

    def fresh():
        globals()["GAIN"] = 1.0
        _PrivateClassSetting._gain = 1.0
        return make_model()
    assert _runs(fresh, lambda: _ce, change)["rerecorded"] == 1


# -- containers ---------------------------------------------------------------------------------
def test_a_criterion_in_a_dict_beside_a_long_list_is_guarded():
    def make_loss():
        extra = {"history": [0.0] * 200, "crits": [gl.nn.CrossEntropyLoss()]}

        def loss_fn(out, y):
            return extra["crits"][0](out, y)
        loss_fn.extra = extra
        return loss_fn

    def change(model, loss_fn):
        loss_fn.extra["crits"][0].label_smoothing = 0.3
    assert _runs(_Net, make_loss, change)["rerecorded"] == 1


def test_a_setting_in_a_config_dict_beside_other_objects_is_guarded():
    def make_loss():
        cfg = {"beta": 0.0, "run_dir": pathlib.Path("runs")}

        def loss_fn(out, y):
            return _ce(out, y) + cfg["beta"] * (out * out).mean()
        loss_fn.cfg = cfg
        return loss_fn
    assert _runs(_Net, make_loss, lambda model, loss_fn: loss_fn.cfg.__setitem__("beta", 5.0))[
        "rerecorded"] == 1


# -- settings objects and iterators ------------------------------------------------------------
@dataclasses.dataclass(slots=True)
class _SlotsConfig:
    gain: float = 1.0


class _SlotsOptions:
    __slots__ = ("gain",)

    def __init__(self):
        self.gain = 1.0


class _HasOptions(_Net):
    def __init__(self, options):
        super().__init__()
        self.opts = options

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)) * self.opts.gain)


@pytest.mark.parametrize("make_options", [_SlotsConfig, _SlotsOptions],
                         ids=["slots-dataclass", "slots-class"])
def test_a_settings_object_with_slots_changed_in_place_is_guarded(make_options):
    def change(model, loss_fn):
        model.opts.gain = 3.0
    assert _runs(lambda: _HasOptions(make_options()), lambda: _ce, change)["rerecorded"] == 1


def _steps_of(kind):
    values = [1.0, 1.0, 3.0]
    if kind == "cycle":
        return itertools.cycle(values)
    if kind == "iter":
        return iter(values * 4)

    def schedule():
        while True:
            yield from values
    return schedule()


class _Scheduled(_Net):
    def __init__(self, kind):
        super().__init__()
        self.schedule = _steps_of(kind)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)) * next(self.schedule))


@pytest.mark.parametrize("kind", ["cycle", "iter", "generator"])
def test_an_iterator_that_forward_advances_runs_the_step_eagerly(kind):
    runs = []
    for compiled in (False, True):
        model = _Scheduled(kind)
        opt = gl.optim.SGD(model.parameters(), lr=0.1)
        step = compile_step(model, _ce, opt) if compiled else eager_step(model, _ce, opt)
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            runs.append([step(x, y).item() for x, y in _batches()])
    assert runs[0] == runs[1]
    info = step.info()
    assert info["replayed"] == 0 and "changes _Scheduled.schedule" in info["eager_reasons"][0]


# -- where the code lives, and odd objects ---------------------------------------------------------
_NOTEBOOK_CELL = '''
import gradlab.nn.functional as F

class CellLoss:
    def __init__(self):
        self.beta = 0.0

    def __call__(self, out, y):
        return F.cross_entropy(out, y) + self.penalty(out)

    def penalty(self, out):
        return self.beta * (out * out).mean()
'''


def test_classes_defined_in_a_notebook_are_your_own(monkeypatch):
    """A notebook's cells run in a __main__ module with no file: its classes are the user's,
    whose code the guards follow."""
    cell = types.ModuleType("__main__")
    monkeypatch.setitem(sys.modules, "__main__", cell)
    exec(compile(_NOTEBOOK_CELL, "<ipython-input-1>", "exec"), vars(cell))  # noqa: S102
    assert not hasattr(cell, "__file__")
    change = lambda model, loss_fn: setattr(loss_fn, "beta", 5.0)  # noqa: E731
    assert _runs(_Net, cell.CellLoss, change)["rerecorded"] == 1


class _LooksUp:
    """A loss object that answers attribute lookups from a dict: KeyError, not
    AttributeError, for a name it lacks (such as ``__self__``)."""

    def __init__(self):
        self.params = {"beta": 0.0}

    def __getattr__(self, name):
        return self.__dict__["params"][name]

    def __call__(self, out, y):
        return _ce(out, y) + self.beta * (out * out).mean()


def test_a_loss_whose_getattr_raises_key_error_compiles():
    change = lambda model, loss_fn: loss_fn.params.__setitem__("beta", 5.0)  # noqa: E731
    assert _runs(_Net, _LooksUp, change)["rerecorded"] == 1


def test_a_number_set_on_the_model_at_every_step_does_not_follow_the_code_again(monkeypatch):
    """Following the step's code again is needed where what it could follow changed, not
    for ``model.last_loss = loss.item()``: that would cost more than the replay saves."""
    from gradlab.train import compiled
    calls = []
    real = compiled._numbers_read_by
    monkeypatch.setattr(compiled, "_numbers_read_by",
                        lambda *args: calls.append(1) or real(*args))
    model = _Net()
    step = compile_step(model, _ce, gl.optim.SGD(model.parameters(), lr=0.1))
    for i, (x, y) in enumerate(_batches()):
        model.last_loss = float(i)
        step(x, y)
    assert len(calls) == 1 and step.info()["replayed"] == 6
    model.act = gl.tanh  # (what the code follows changed: it is followed again)
    step(*_batches()[0])
    assert len(calls) == 2
