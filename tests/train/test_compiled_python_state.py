"""A compiled step whose own Python code changes state as it runs (a counter, an output kept
on the module, a draw from Python's or NumPy's random generators): a replay runs no Python
code, so it would freeze that state, or repeat the recording's branch and draw. Such a step
runs eagerly, with one warning naming what changed, and ends bit for bit as eager does."""
from __future__ import annotations

import collections
import itertools
import random
import warnings

import numpy as np
import pytest

import gradlab as gl
from gradlab.train import compile_step
from tests.train.compiled_runs import eager_step
from tests.train.test_compiled import _assert_same, _batches, _state

_GLOBAL_RNG = random.Random(5)  # read by name in a forward: found among its globals
_LAST_OUT = None  # written by a forward, never read


class _Net(gl.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = gl.nn.Linear(4, 3)

    def forward(self, x):
        h = self.fc(x)
        return h * 2.0 if self.flip() else h

    def flip(self):
        return False


class _CountsCalls(_Net):
    def __init__(self):
        super().__init__()
        self._calls = 0

    def flip(self):
        self._calls += 1
        return self._calls % 3 == 0


class _KeepsOutput(_Net):
    def forward(self, x):
        self._last = super().forward(x)
        return self._last


class _PythonRandom(_Net):
    def flip(self):
        return random.random() < 0.5


class _NumpyGlobalRandom(_Net):
    def flip(self):
        return np.random.rand() < 0.5


class _OwnGenerator(_Net):
    def __init__(self, kind):
        super().__init__()
        self.rng = {"generator": np.random.default_rng(3), "randomstate":
                    np.random.RandomState(3), "random": random.Random(3)}[kind]

    def flip(self):
        return self.rng.random() < 0.5


class _KeepsActivations(_Net):
    def __init__(self):
        super().__init__()
        self.acts = []

    def forward(self, x):
        h = self.fc(x)
        self.acts.append(h)  # a replay would append nothing
        return h


class _WritesAGlobal(_Net):
    def forward(self, x):
        global _LAST_OUT
        h = _LAST_OUT = self.fc(x)  # (stored, never loaded)
        return h


class _GeneratorsInADict(_Net):
    def __init__(self):
        super().__init__()
        self.rngs = {"flip": np.random.default_rng(3)}

    def flip(self):
        return self.rngs["flip"].random() < 0.5


class _GlobalGenerator(_Net):
    def forward(self, x):
        h = self.fc(x)
        return h * 2.0 if _GLOBAL_RNG.random() < 0.5 else h


class _CountsInAnArray(_Net):
    def __init__(self):
        super().__init__()
        self.calls = np.zeros(1, np.int64)

    def flip(self):
        self.calls += 1  # (in place: the same array object)
        return self.calls[0] % 3 == 0


class _CountsIn(_Net):
    """A counter kept in a container that is no plain dict or list."""

    def __init__(self, kind):
        super().__init__()
        self.seen = {"defaultdict": lambda: collections.defaultdict(int),
                     "counter": collections.Counter, "deque": collections.deque,
                     "set": set, "count": itertools.count}[kind]()

    def flip(self):
        seen = self.seen
        if isinstance(seen, itertools.count):
            return next(seen) % 3 == 0
        if isinstance(seen, dict):
            seen["calls"] += 1
            return seen["calls"] % 3 == 0
        (seen.append if isinstance(seen, collections.deque) else seen.add)(len(seen))
        return len(seen) % 3 == 0


class _CountsInADefault(_Net):
    def __init__(self):
        super().__init__()
        _CountsInADefault.flip.__defaults__[0][0] = 0  # (each run counts from 0)

    def flip(self, calls=[0]):  # noqa: B006 - the mutable default is the point
        calls[0] += 1
        return calls[0] % 3 == 0


class _CountsOnTheFunction(_Net):
    def __init__(self):
        super().__init__()
        _CountsOnTheFunction.flip.calls = 0

    def flip(self):
        _CountsOnTheFunction.flip.calls += 1
        return _CountsOnTheFunction.flip.calls % 3 == 0


class _DrawsFromAGradlabGenerator(_Net):
    def __init__(self, ops_too=False):
        super().__init__()
        self.g = gl.Generator().manual_seed(3)
        self.ops_too = ops_too

    def forward(self, x):
        if self.ops_too:  # (an op draws from it as well: a replay would repeat that one)
            x = x + 0.1 * gl.rand(*x.shape, generator=self.g)
        return super().forward(x)

    def flip(self):
        return self.g.random() < 0.5  # in Python: a replay would repeat the first answer


def _run(make_model, compiled, loss_fn=None, steps=8):
    gl.manual_seed(0)
    random.seed(11)
    np.random.seed(11)
    _GLOBAL_RNG.seed(5)
    model = make_model()
    opt = gl.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = loss_fn() if loss_fn else gl.nn.CrossEntropyLoss()
    step = compile_step(model, loss_fn, opt) if compiled else eager_step(model, loss_fn, opt)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        losses = [step(x, y).item() for x, y in _batches(steps)]
    return (losses, _state(model, opt)), step, model, caught


@pytest.mark.parametrize("make_model, reason", [
    (_CountsCalls, "changes _CountsCalls._calls"),
    (_KeepsOutput, "changes _KeepsOutput._last"),
    (_PythonRandom, "random generator outside gradlab's ops (random)"),
    (_NumpyGlobalRandom, "random generator outside gradlab's ops (numpy.random)"),
    (lambda: _OwnGenerator("generator"), "outside gradlab's ops (Generator)"),
    (lambda: _OwnGenerator("randomstate"), "outside gradlab's ops (RandomState)"),
    (lambda: _OwnGenerator("random"), "outside gradlab's ops (Random)"),
    (_GlobalGenerator, "outside gradlab's ops (Random)"),
    (_KeepsActivations, "changes _KeepsActivations.acts"),
    (_WritesAGlobal, "changes the global '_LAST_OUT'"),
    (_GeneratorsInADict, "outside gradlab's ops (Generator)"),
    (_CountsInAnArray, "changes _CountsInAnArray.calls"),
    (lambda: _CountsIn("defaultdict"), "changes _CountsIn.seen"),
    (lambda: _CountsIn("counter"), "changes _CountsIn.seen"),
    (lambda: _CountsIn("deque"), "changes _CountsIn.seen"),
    (lambda: _CountsIn("set"), "changes _CountsIn.seen"),
    (lambda: _CountsIn("count"), "changes _CountsIn.seen"),
    (_CountsInADefault, "changes the default of 'calls' in _CountsInADefault.flip()"),
    (_CountsOnTheFunction, "changes attribute 'calls' of the loss, a function"),
    (_DrawsFromAGradlabGenerator, "outside gradlab's ops (gl.Generator, in Python)"),
    (lambda: _DrawsFromAGradlabGenerator(ops_too=True),
     "outside gradlab's ops (gl.Generator, in Python)"),
], ids=["counter", "kept-output", "python-random", "numpy-random", "generator",
        "randomstate", "random-instance", "global-generator", "appended-activations",
        "written-global", "generator-in-a-dict", "numpy-array-counter", "defaultdict",
        "collections-counter", "deque", "set", "itertools-count", "mutable-default",
        "function-attribute", "gradlab-generator", "gradlab-generator-ops-too"])
def test_python_state_changed_by_the_step_runs_it_eagerly(make_model, reason):
    eager, _, eager_model, _ = _run(make_model, False)
    compiled, step, model, caught = _run(make_model, True)
    _assert_same(eager, compiled)
    info = step.info()
    assert info["replayed"] == 0 and len(info["eager_reasons"]) == 1
    assert reason in info["eager_reasons"][0]
    assert len([w for w in caught if "running eagerly" in str(w.message)]) == 1
    if isinstance(model, _CountsCalls):  # the counter went on counting: every call ran
        assert model._calls == eager_model._calls == 8
    if isinstance(model, _KeepsOutput):  # the kept output is the last step's
        assert np.array_equal(model._last.detach().numpy(), eager_model._last.detach().numpy())
    if isinstance(model, _KeepsActivations):  # one per step, as eager keeps them
        assert len(model.acts) == len(eager_model.acts) == 8


def test_a_loss_that_counts_in_its_closure_runs_eagerly():
    def make_loss():
        calls = 0
        ce = gl.nn.CrossEntropyLoss()

        def loss(out, y):
            nonlocal calls
            calls += 1
            return ce(out, y) * (2.0 if calls % 2 else 1.0)
        return loss
    eager, *_ = _run(_Net, False, loss_fn=make_loss)
    compiled, step, _, _ = _run(_Net, True, loss_fn=make_loss)
    _assert_same(eager, compiled)
    assert step.info()["replayed"] == 0
    assert "a variable in a closure" in step.info()["eager_reasons"][0]


_HELPER_CALLS = 0


def _counted(h):
    global _HELPER_CALLS
    _HELPER_CALLS += 1  # a helper of forward that counts in its own global
    return h * 2.0 if _HELPER_CALLS % 3 == 0 else h


class _CallsACountingHelper(_Net):
    def forward(self, x):
        return _counted(self.fc(x))


def test_a_helper_that_counts_in_its_own_global_runs_eagerly():
    global _HELPER_CALLS
    _HELPER_CALLS = 0
    eager, *_ = _run(_CallsACountingHelper, False)
    _HELPER_CALLS = 0
    compiled, step, _, _ = _run(_CallsACountingHelper, True)
    _assert_same(eager, compiled)
    assert step.info()["replayed"] == 0 and _HELPER_CALLS == 8
    assert "changes the global '_HELPER_CALLS'" in step.info()["eager_reasons"][0]


class _LazySetUp(_Net):
    """Sets itself up at its first call only: that recording is dropped, the next two agree,
    and the step replays."""

    def __init__(self):
        super().__init__()
        self._scale = None

    def forward(self, x):
        if self._scale is None:
            self._scale = 0.5
        return self.fc(x) * self._scale


def test_a_lazy_set_up_at_the_first_call_still_replays():
    eager, *_ = _run(_LazySetUp, False)
    compiled, step, _, caught = _run(_LazySetUp, True)
    _assert_same(eager, compiled)
    info = step.info()
    assert info["recorded"] == 3 and info["replayed"] == 5 and info["eager_reasons"] == []
    assert not [w for w in caught if "running eagerly" in str(w.message)]


def test_an_equal_number_assigned_anew_at_each_call_still_replays():
    class Rescales(_Net):
        def __init__(self):
            super().__init__()
            self._scale = 0.5

        def forward(self, x):
            self._scale = float(np.float32(0.5))  # a new float object, the same value
            return self.fc(x) * self._scale
    eager, *_ = _run(Rescales, False)
    compiled, step, _, _ = _run(Rescales, True)
    _assert_same(eager, compiled)
    assert step.info()["replayed"] == 6


def test_random_draws_outside_the_step_do_not_stop_its_replays():
    gl.manual_seed(0)
    model = _Net()
    opt = gl.optim.SGD(model.parameters(), lr=0.1)
    step = compile_step(model, gl.nn.CrossEntropyLoss(), opt)
    for x, y in _batches(6):
        random.random(), np.random.rand()  # a data pipeline's draws between steps
        step(x, y)
    assert step.info()["replayed"] == 4


def _replays(make_model, steps=8, between=None):
    gl.manual_seed(0)
    model = make_model()
    step = compile_step(model, gl.nn.CrossEntropyLoss(),
                        gl.optim.SGD(model.parameters(), lr=0.1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for i, (x, y) in enumerate(_batches(steps)):
            if between is not None:
                between(i, model)
            step(x, y)
    return step.info()


def _same_as_eager(make_model, between, steps=8):
    """Eager and compiled runs of ``make_model()`` with ``between(i, model)`` before each
    step i: asserts that they end the same, and returns the compiled step."""
    runs = []
    for compiled in (False, True):
        gl.manual_seed(0)
        model = make_model()
        opt = gl.optim.SGD(model.parameters(), lr=0.1)
        step = compile_step(model, gl.nn.CrossEntropyLoss(), opt) if compiled else \
            eager_step(model, gl.nn.CrossEntropyLoss(), opt)
        losses = []
        for i, (x, y) in enumerate(_batches(steps)):
            between(i, model)
            losses.append(step(x, y).item())
        runs.append((losses, _state(model, opt)))
    _assert_same(*runs)
    return step


def test_a_system_random_generator_on_a_module_does_not_stop_the_step():
    class Holds(_Net):
        def __init__(self):
            super().__init__()
            self.rng = random.SystemRandom()  # (no state to read; nothing to replay wrongly)
    assert _replays(Holds)["replayed"] == 6


@pytest.mark.parametrize("value", [lambda: np.int64(4), lambda: np.float32(0.5),
                                   lambda: slice(0, 3), lambda: {"k": np.float32(0.5)}],
                         ids=["int64", "float32", "slice", "dict"])
def test_an_equal_setting_of_any_kind_assigned_anew_in_forward_still_replays(value):
    class Assigns(_Net):
        def __init__(self):
            super().__init__()
            self._v = value()

        def forward(self, x):
            self._v = value()  # a new object at every call, always the same value
            return self.fc(x)
    info = _replays(Assigns)
    assert info["replayed"] == 6 and info["eager_reasons"] == []


class _CachesInverse(_Net):
    """A lazy recompute, once after each change of a guarded setting."""

    def __init__(self):
        super().__init__()
        self.temperature, self._for, self._inv = 1.0, None, None

    def forward(self, x):
        if self._for != self.temperature:
            self._for, self._inv = self.temperature, 1.0 / self.temperature
        return self.fc(x) * self._inv


def test_a_lazy_recompute_after_each_setting_change_replays_again():
    def change(i, model):
        if i in (4, 8):
            model.temperature += 1.0
    info = _replays(_CachesInverse, steps=12, between=change)
    # steps 0-3, 4-7 and 8-11: a recording dropped (the recompute), two that agree, and a
    # replay each time
    assert info["replayed"] == 3 and info["recorded"] == 9 and info["eager_reasons"] == []


def test_the_callers_code_between_forward_and_backward_step_is_not_the_steps():
    gl.manual_seed(0)
    model = _Net()
    step = compile_step(model, gl.nn.CrossEntropyLoss(),
                        gl.optim.SGD(model.parameters(), lr=0.1))
    for x, y in _batches(8):
        step.forward(x, y)
        random.random(), np.random.rand()  # a sampled print of the loss, say
        step.backward_step()
    assert step.info()["replayed"] == 6 and step.info()["eager_reasons"] == []


def test_a_draw_inside_backward_is_seen():
    class Hooked(_Net):
        def __init__(self):
            super().__init__()
            self.fc.weight.register_hook(lambda g: g * (1.0 + 0 * random.random()))
    info = _replays(Hooked)
    assert info["replayed"] == 0  # (a tensor hook runs eagerly anyway: a reason is given)
    assert info["eager_reasons"]


def _with_a_loader_thread(draw):
    """The step's info after a run during which another thread calls ``draw()`` once inside
    every forward pass (the forward waits for it, so that the draw lands inside the step),
    as a loader drawing noise would."""
    import threading
    go, done, stop = threading.Event(), threading.Event(), threading.Event()

    def loader():
        while not stop.is_set():
            if go.wait(0.05):
                go.clear()
                draw()
                done.set()

    class Waits(_Net):
        def forward(self, x):
            go.set()
            assert done.wait(10)
            done.clear()
            return self.fc(x)
    worker = threading.Thread(target=loader, daemon=True)
    worker.start()
    try:
        return _replays(Waits)
    finally:
        stop.set()
        worker.join()


def test_another_threads_draws_from_the_global_generators_count_and_say_so():
    # (they cannot be told from the step's own draws: the step runs eagerly)
    info = _with_a_loader_thread(np.random.rand)
    assert info["replayed"] == 0
    assert "or another thread drew from numpy.random's global generator" in \
        info["eager_reasons"][0]


def test_a_generator_of_its_own_in_another_thread_does_not_stop_the_step():
    info = _with_a_loader_thread(np.random.default_rng(0).random)
    assert info["replayed"] == 6 and info["eager_reasons"] == []


def test_a_dict_inside_a_tuple_changed_in_place_records_again():
    class Tupled(_Net):
        def __init__(self):
            super().__init__()
            self.cfg = ({"s": 1.0},)

        def forward(self, x):
            return self.fc(x) * self.cfg[0]["s"]
    def between(i, model):
        if i == 4:
            model.cfg[0]["s"] = 3.0
    _same_as_eager(Tupled, between)


def test_a_large_nested_list_is_not_compared_at_every_call():
    from gradlab.train import step_guards as guards
    flat = [1.0] * guards._CONTAINER_ITEMS
    assert guards._setting_value(flat) is not guards._OTHER
    # the budget is for the whole structure, not per level
    assert guards._setting_value([[1.0] * 8 for _ in range(8)]) is guards._OTHER
    assert guards._setting_value([[1.0] * 4 for _ in range(4)]) is not guards._OTHER


class _Stats:
    def __init__(self):
        self.n = 0


def test_containers_the_step_never_reads_may_change_between_steps():
    """A history list or a stats object on the model, updated by the training loop and
    never read by forward: nothing to guard, the step replays."""
    def between(i, model):
        model.history.append(float(i))
        model.stats.n += 1

    def make():
        model = _Net()
        model.history, model.stats = [], _Stats()
        return model
    info = _replays(make, between=between)
    assert info["replayed"] == 6 and info["rerecorded"] == 0, info


K = 1.0  # read by a property, a static and a class method of _Accessors; logged by log_k


class _Accessors(_Net):
    @property
    def k(self):
        return K

    @staticmethod
    def k_static():
        return K

    @classmethod
    def k_class(cls):
        return K

    def log_k(self):  # never called by forward: K changing is none of the step's
        print("K is", K)

    def forward(self, x):
        return self.fc(x) * self.k * self.k_static() * self.k_class()


def _k_times(h):
    return h * K


class _KeepsAFunction(_Net):
    def __init__(self):
        super().__init__()
        self.scale = _k_times  # a function of your own kept on the module

    def forward(self, x):
        return self.scale(self.fc(x))


@pytest.mark.parametrize("make_model", [_Accessors, _KeepsAFunction],
                         ids=["property-static-class", "function-on-the-module"])
def test_properties_methods_and_functions_that_forward_names_are_followed(make_model,
                                                                           monkeypatch):
    monkeypatch.setitem(globals(), "K", 1.0)

    def between(i, model):
        globals()["K"] = 2.0 if i >= 4 else 1.0
    assert _same_as_eager(make_model, between).info()["rerecorded"] == 1


def test_a_method_that_forward_never_calls_is_not_followed(monkeypatch):
    monkeypatch.setitem(globals(), "K", 1.0)

    class LogsK(_Net):
        def log_k(self):
            print("K is", K)

    def between(i, model):
        globals()["K"] = float(i)  # changed before every step; forward never reads it
    info = _replays(LogsK, between=between)
    assert info["replayed"] == 6 and info["rerecorded"] == 0, info


def test_odd_module_files_and_deep_tuples_do_not_crash_the_guards():
    import pathlib
    import types
    odd = types.ModuleType("odd_settings")
    odd.__file__ = pathlib.Path("/tmp/odd_settings.py")  # (not a str)
    odd.K = 1.0
    deep = (1.0,)
    for _ in range(5000):
        deep = (deep,)

    class Odd(_Net):
        def __init__(self):
            super().__init__()
            self.deep = deep

        def forward(self, x):
            return self.fc(x) * odd.K
    globals()["odd"] = odd
    try:
        info = _replays(Odd)
    finally:
        del globals()["odd"]
    assert info["replayed"] == 6


class _NoiseFromAGradlabGenerator(_Net):
    def __init__(self):
        super().__init__()
        self.g = gl.Generator().manual_seed(3)

    def forward(self, x):
        return self.fc(x + 0.1 * gl.randn(*x.shape, generator=self.g))  # (an op's draw)


def test_a_gradlab_generator_that_only_ops_draw_from_still_replays():
    step = _same_as_eager(_NoiseFromAGradlabGenerator, lambda i, model: None)
    assert step.info()["replayed"] == 6 and step.info()["eager_reasons"] == []
