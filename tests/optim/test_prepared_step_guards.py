"""The guards of the optimizers' prepared step (Optimizer._prepared_step), which a compiled
training step (gl.train.compile_step) calls in its replays: whatever changes between two
steps that step() sees (a param-group dict replaced, a params list edited in place, a state
entry removed, a step wrapped on the instance or a hook overridden by a subclass, a step that
raises), the compiled run must end where the eager one does, bit for bit."""
import types

import numpy as np
import pytest

import gradlab as gl
from gradlab.optim.optimizer import _step_methods
from gradlab.train import compile_step
from tests.train.compiled_runs import eager_step

OPTIMIZERS = {
    "sgd-momentum": lambda ps: gl.optim.SGD(ps, lr=0.05, momentum=0.9),
    "adam": lambda ps: gl.optim.Adam(ps, lr=1e-2),
    "rmsprop-momentum": lambda ps: gl.optim.RMSprop(ps, lr=1e-2, momentum=0.5),
}
STEPS, AT = 8, 3  # the change comes after step AT: steps 0-1 record, 2-3 replay


def _model(device):
    gl.manual_seed(0)  # (two 8x8 weights: params of one shape to swap)
    return gl.nn.Sequential(gl.nn.Linear(8, 8), gl.nn.Tanh(), gl.nn.Linear(8, 8),
                            gl.nn.Tanh(), gl.nn.Linear(8, 3)).to(device)


def _batches(device):
    rng = np.random.default_rng(1)
    return [(gl.tensor(rng.standard_normal((32, 8)).astype(np.float32), device=device),
             gl.tensor(rng.integers(0, 3, 32), device=device)) for _ in range(STEPS)]


def _weights(model):
    return [p.detach().cpu().numpy().copy() for p in model.parameters()]


def _state(model, opt):
    """Each param's optimizer state in the model's order: (name, host value) pairs."""
    out = []
    for p in model.parameters():
        st = opt.state.get(p, {})
        out.append([(k, np.asarray(gl.Tensor(v).cpu().numpy() if hasattr(v, "shape") else v)
                     .copy()) for k, v in sorted(st.items())])
    return out


def _run(compiled, make_opt, change, device, setup=None, before=None):
    """STEPS steps: ``setup(opt, model)`` first, ``before(k, opt)`` before step k and
    ``change(opt, model)`` after step AT. Returns (weights, state, errors, weights right
    after the change, replays after the change)."""
    model = _model(device)
    opt = make_opt(model.parameters())
    if setup is not None:
        setup(opt, model)
    loss_fn = gl.nn.CrossEntropyLoss()
    step = compile_step(model, loss_fn, opt) if compiled else eager_step(model, loss_fn, opt)
    errors, changed, replays = [], None, None
    for k, (x, y) in enumerate(_batches(device)):
        if before is not None:
            before(k, opt)
        try:
            step(x, y)
        except (TypeError, ValueError) as e:
            errors.append((k, type(e), str(e)))
        if k == AT:
            change(opt, model)
            changed = _weights(model)
            replays = step.info()["replayed"] if compiled else None
    after = step.info()["replayed"] - replays if compiled else None
    return _weights(model), _state(model, opt), errors, changed, after


def _compiled_is_eager(make_opt, change, device, **hooks):
    """Runs both; asserts the same end weights, state and errors, and that replays ran
    after the change. Returns the eager run."""
    eager = _run(False, make_opt, change, device, **hooks)
    compiled = _run(True, make_opt, change, device, **hooks)
    for a, b in zip(eager[0], compiled[0]):
        assert np.array_equal(a, b)
    assert len(eager[1]) == len(compiled[1])
    for sa, sb in zip(eager[1], compiled[1]):
        assert [k for k, _ in sa] == [k for k, _ in sb]
        for (k, a), (_, b) in zip(sa, sb):
            assert np.array_equal(a, b), k
    assert eager[2] == compiled[2]
    assert compiled[4] > 0  # the compiled run replayed after the change
    return eager


def _unchanged(opt, model):
    pass


@pytest.mark.parametrize("make", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_a_group_dict_replaced_steps_with_its_own_settings(make, device):
    def freeze(opt, model):  # the same params list, in a new dict with lr 0
        opt.param_groups[0] = {**opt.param_groups[0], "lr": 0.0}

    end, _, _, at_change, _ = _compiled_is_eager(make, freeze, device)
    for a, b in zip(end, at_change):  # lr 0 leaves every weight as it was
        assert np.array_equal(a, b)


@pytest.mark.parametrize("make", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_a_group_dict_listing_fewer_params_leaves_the_others_alone(make, device):
    def drop_first_layer(opt, model):
        params = list(model[2].parameters()) + list(model[4].parameters())
        opt.param_groups[0] = {**opt.param_groups[0], "params": params}

    end, _, _, at_change, _ = _compiled_is_eager(make, drop_first_layer, device)
    assert np.array_equal(end[0], at_change[0]) and np.array_equal(end[1], at_change[1])
    assert not np.array_equal(end[2], at_change[2])


@pytest.mark.parametrize("make", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_params_swapped_in_place_in_the_list_keep_their_own_gradients(make, device):
    def swap(opt, model):  # params: w0 b0 w2 b2 w4 b4; w0 and w2 are both 8x8
        params = opt.param_groups[0]["params"]
        params[0], params[2] = params[2], params[0]

    _compiled_is_eager(make, swap, device)


@pytest.mark.parametrize("make", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_a_param_replaced_in_place_in_the_list_is_the_one_stepped(make, device):
    news = []

    def reinit(opt, model):  # a new Parameter for layer 0's weight, in the same place
        new = gl.nn.Parameter(gl.full((8, 8), 0.01, device=device))
        params = opt.param_groups[0]["params"]
        params[params.index(model[0].weight)] = new
        model[0].weight = new
        news.append(new)

    _compiled_is_eager(make, reinit, device)
    for new in news:  # trained, in both runs
        assert not (new.detach().cpu().numpy() == np.float32(0.01)).any()


# Per optimizer, the state entries that step() makes again when they are missing
_ENTRIES = {"sgd-momentum": ["momentum_buffer"], "adam": ["exp_avg", "exp_avg_sq"],
            "rmsprop-momentum": ["square_avg", "momentum_buffer"]}
_REMOVALS = [(name, f"pop {entry}", entry) for name, entries in _ENTRIES.items()
             for entry in entries]
_REMOVALS += [(name, how, None) for name in OPTIMIZERS for how in ("clear first",
                                                                   "clear all")]


@pytest.mark.parametrize("name, how, entry", _REMOVALS, ids=[f"{n}-{h}" for n, h, _ in
                                                               _REMOVALS])
def test_a_removed_state_entry_is_made_again_as_step_makes_it(name, how, entry, device):
    def remove(opt, model):
        if how == "clear first":
            opt.state[model[0].weight].clear()
        for st in opt.state.values():
            if how == "clear all":
                st.clear()
            elif entry is not None:
                st.pop(entry)

    _compiled_is_eager(OPTIMIZERS[name], remove, device)


@pytest.mark.parametrize("late", [False, True], ids=["from-the-start", "after-replays"])
@pytest.mark.parametrize("make", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_a_step_wrapped_on_the_instance_runs_at_every_step(make, late, device):
    calls = []

    def wrap(opt, model):  # a max-norm constraint after every update
        plain = opt.step

        def step(closure=None):
            calls.append(1)
            out = plain(closure)
            w = model[0].weight._data
            w.clip(-0.05, 0.05, out=w)
            return out
        opt.step = step

    hooks = dict(change=wrap) if late else dict(change=_unchanged, setup=wrap)
    end = _compiled_is_eager(make, device=device, **hooks)[0]
    assert len(calls) == 2 * (STEPS - AT - 1 if late else STEPS)  # both runs, every step
    assert np.abs(end[0]).max() <= 0.05


# Subclasses that change a method step() goes through without writing a prepared form
def _halved_grads(base):
    class Halved(base):
        def _with_grads(self, group):
            ps, pa, ga = super()._with_grads(group)
            for g in ga:
                g *= 0.5
            return ps, pa, ga
    return Halved


class _ClippedAdam(gl.optim.Adam):
    def _backend_step(self, be, group, step, p_arrays, g_arrays, states):
        for g in g_arrays:
            be.xp.clip(g, -0.01, 0.01, out=g)
        super()._backend_step(be, group, step, p_arrays, g_arrays, states)


class _WeightClip(gl.optim.Optimizer):
    """A mixin listed after the built-in optimizer (class _(Adam, _WeightClip)): its step is
    the one the class's MRO runs, which Adam's prepared form does not stand for."""

    def step(self, closure=None):
        loss = super().step(closure)
        with gl.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    p.clamp_(-0.05, 0.05)
        return loss


class _AdamClippedByMixin(gl.optim.Adam, _WeightClip):
    pass


_SUBCLASSES = {
    "adam-mixin-step": lambda ps: _AdamClippedByMixin(ps, lr=1e-2),
    "sgd-momentum-with_grads": lambda ps: _halved_grads(gl.optim.SGD)(ps, lr=0.05,
                                                                      momentum=0.9),
    "adam-with_grads": lambda ps: _halved_grads(gl.optim.Adam)(ps, lr=1e-2),
    "adam-backend_step": lambda ps: _ClippedAdam(ps, lr=1e-2),
    "rmsprop-momentum-with_grads": lambda ps: _halved_grads(gl.optim.RMSprop)(ps, lr=1e-2,
                                                                              momentum=0.5),
}


@pytest.mark.parametrize("make", _SUBCLASSES.values(), ids=_SUBCLASSES.keys())
def test_a_subclass_overriding_a_step_method_is_not_bypassed(make, device):
    _compiled_is_eager(make, _unchanged, device)
    model = _model(device)
    opt = make(model.parameters())
    for p in model.parameters():
        p.grad = gl.ones_like(p)
    opt.step()
    assert opt._prepared_step() is None


class _EveryOther:
    """A wrapper that is no Optimizer: it steps the one it wraps at every second call and
    hands every other attribute (param_groups, zero_grad, state) on to it."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def step(self):
        self.calls += 1
        if self.calls % 2 == 0:
            self.inner.step()


@pytest.mark.parametrize("make", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_a_wrapper_s_own_step_runs_at_every_replay(make, device):
    wrappers = []

    def wrapped(params):
        wrappers.append(_EveryOther(make(params)))
        return wrappers[-1]

    _compiled_is_eager(wrapped, _unchanged, device)
    assert [w.calls for w in wrappers] == [STEPS, STEPS]


@pytest.mark.parametrize("where", ["own-class", "base-class"])
@pytest.mark.parametrize("make", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_a_step_method_patched_on_the_class_after_preparing_is_not_bypassed(make, where,
                                                                           device,
                                                                           monkeypatch):
    plain = gl.optim.Optimizer._with_grads

    def halved(group):
        ps, pa, ga = plain(group)
        for g in ga:
            g *= 0.5
        return ps, pa, ga

    def patch(opt, model):
        cls = type(opt) if where == "own-class" else gl.optim.Optimizer
        monkeypatch.setattr(cls, "_with_grads", staticmethod(halved))

    eager = _run(False, make, patch, device, setup=lambda opt, model: monkeypatch.undo())
    monkeypatch.undo()
    unpatched = _run(False, make, _unchanged, device)
    compiled = _run(True, make, patch, device, setup=lambda opt, model: monkeypatch.undo())
    for a, b, c in zip(eager[0], compiled[0], unpatched[0]):
        assert np.array_equal(a, b)
        assert not np.array_equal(a, c)  # (the patch changed the steps after it)
    assert compiled[4] > 0  # the model's replay ran on; the optimizer's step() did the rest


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_step_that_raises_counts_as_eager_does(name, device):
    lrs = {}

    def bad_lr(k, opt):  # a string lr at two steps in the replays, a good one otherwise
        good = lrs.setdefault(id(opt), opt.param_groups[0]["lr"])
        opt.param_groups[0]["lr"] = "oops" if k in (AT + 1, AT + 2) else good

    _, state, errors, _, _ = _compiled_is_eager(OPTIMIZERS[name], _unchanged, device,
                                                before=bad_lr)
    assert [k for k, _, _ in errors] == [AT + 1, AT + 2]
    # Both count the steps that raised, as PyTorch does (count, then compute); SGD counts
    # no steps.
    expected = None if name.startswith("sgd") else STEPS
    assert [dict(st).get("step") for st in state] == [expected] * len(state)


def test_sgd_momentum_buffers_are_not_kept_unseeded_by_a_step_that_raised():
    model = _model("cpu")
    opt = gl.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for p in model.parameters():
        p.grad = gl.ones_like(p)
    opt.param_groups[0]["lr"] = "oops"
    with pytest.raises(ValueError):
        opt.step()
    assert all("momentum_buffer" not in opt.state.get(p, {}) for p in model.parameters())
    opt.param_groups[0]["lr"] = 0.05
    before = _weights(model)
    opt.step()  # a first step: the buffer is the gradient, p - 0.05 * 1
    for p, w in zip(model.parameters(), before):
        assert np.array_equal(p.detach().numpy(), w - np.float32(0.05))
        assert (opt.state[p]["momentum_buffer"] == 1).all()


ALL = {
    "sgd": lambda ps: gl.optim.SGD(ps, lr=0.05),
    "sgd-momentum": OPTIMIZERS["sgd-momentum"],
    "adam-amsgrad": lambda ps: gl.optim.Adam(ps, lr=1e-2, amsgrad=True),
    "adamw": lambda ps: gl.optim.AdamW(ps, lr=1e-2),
    "rmsprop-centered-momentum": lambda ps: gl.optim.RMSprop(ps, lr=1e-2, momentum=0.5,
                                                             centered=True),
    "adagrad": lambda ps: gl.optim.Adagrad(ps, lr=0.05),
    "adadelta": lambda ps: gl.optim.Adadelta(ps),
    "adamax": lambda ps: gl.optim.Adamax(ps),
    "nadam": lambda ps: gl.optim.NAdam(ps),
    "radam": lambda ps: gl.optim.RAdam(ps),
}


@pytest.mark.parametrize("make", ALL.values(), ids=ALL.keys())
def test_step_path_lists_each_method_step_runs_that_the_prepared_step_does_not(make,
                                                                               monkeypatch):
    # Every method of the class is made to note its name; what the first two step()s run
    # and the prepared step does not must be in _step_path, where an override declines it.
    model = _model("cpu")
    opt = make(model.parameters())
    called = set()
    for cls in type(opt).__mro__[:-1]:
        for name, value in list(vars(cls).items()):
            fn = value.__func__ if isinstance(value, staticmethod) else value
            if name.startswith("__") or not isinstance(fn, types.FunctionType):
                continue

            def noted(*args, _fn=fn, _name=name, **kwargs):
                called.add(_name)
                return _fn(*args, **kwargs)
            monkeypatch.setattr(cls, name, staticmethod(noted)
                                if isinstance(value, staticmethod) else noted)
    # (as if the class had been defined with the noting methods: patched ones decline)
    monkeypatch.setattr(type(opt), "_defined_step", _step_methods(type(opt)))
    for k in range(2):
        for p in model.parameters():
            p.grad = gl.full(p.shape, 0.1 * (k + 1))
        opt.step()
    by_step = set(called)
    fast = opt._prepared_step()
    assert fast is not None  # the class's own overrides are the ones it answers for
    called.clear()
    assert fast() is True
    assert "step" in by_step and by_step - called <= set(type(opt)._step_path), \
        by_step - called - set(type(opt)._step_path)
