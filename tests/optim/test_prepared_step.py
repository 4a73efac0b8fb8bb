"""The optimizers' prepared steps (Optimizer._prepared_step, Backend.prepare_optimizer_step)
against step(), bit for bit: the prepared arrays' pointers are taken once, so every change that
could make them stale must make the prepared step decline (and step() run), and every
change it tolerates must give step()'s results."""
import numpy as np
import pytest

import gradlab as gl


def _pair(make):
    out = []
    for _ in range(2):
        gl.manual_seed(0)
        model = gl.nn.Sequential(gl.nn.Linear(4, 6), gl.nn.ReLU(), gl.nn.Linear(6, 3))
        out.append((model, make(model.parameters())))
    return out


def _grads(model, k):
    rng = np.random.default_rng(k)
    for p in model.parameters():
        p.grad = gl.tensor(rng.standard_normal(p.shape).astype(np.float32))


def _same(a, b):
    (m1, o1), (m2, o2) = a, b
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert p.detach().numpy().tobytes() == q.detach().numpy().tobytes()
    for s1, s2 in zip(o1.state.values(), o2.state.values()):
        assert s1.keys() == s2.keys()
        for k in s1:
            assert np.asarray(s1[k]).tobytes() == np.asarray(s2[k]).tobytes(), k


def _change(k, model, opt):
    """A change between two steps; returns whether the prepared step must decline it."""
    p = next(iter(model.parameters()))
    if k == 2:
        opt.param_groups[0]["lr"] *= 0.3            # read at every call
        return False
    if k == 5:                                       # a transposed grad: C order expected
        p.grad = gl.tensor(np.ascontiguousarray(p.grad.numpy().T).T)
        return False
    if k == 6:
        p.data = p.data * 1                          # a new array behind the param
        return True
    if k == 7:
        st = opt.state.get(p, {})                    # (state[p] would add one to SGD's)
        names = sorted(n for n, v in st.items() if hasattr(v, "shape"))
        if not names:                                # plain SGD keeps no state
            return False
        st[names[0]] = st[names[0]].copy()           # a new state array
        return True
    if k == 8 and type(opt).__name__ in _SWITCH:     # states or loops chosen otherwise
        group = opt.param_groups[0]
        group.update(_SWITCH[type(opt).__name__](group))
        return True
    return False


# Per optimizer, the options that choose other state arrays or other kernel loops
_SWITCH = {
    "Adam": lambda g: {"amsgrad": not g["amsgrad"]},
    "AdamW": lambda g: {"amsgrad": not g["amsgrad"]},
    "SGD": lambda g: {"momentum": 0.0 if g["momentum"] else 0.9, "nesterov": False},
    "RMSprop": lambda g: {"centered": not g["centered"],
                          "momentum": 0.0 if g["momentum"] else 0.5},
}


FUSED = {
    "adam": lambda ps: gl.optim.Adam(ps, lr=1e-2),
    "adamw": lambda ps: gl.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
    "amsgrad-wd-maximize": lambda ps: gl.optim.Adam(ps, lr=1e-2, amsgrad=True,
                                                    weight_decay=0.01, maximize=True),
    "sgd": lambda ps: gl.optim.SGD(ps, lr=0.05),
    "sgd-nesterov-wd": lambda ps: gl.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True,
                                               weight_decay=1e-3),
    "sgd-dampening-maximize": lambda ps: gl.optim.SGD(ps, lr=0.05, momentum=0.5,
                                                      dampening=0.5, maximize=True),
    "rmsprop": lambda ps: gl.optim.RMSprop(ps, lr=1e-2),
    "rmsprop-centered-momentum": lambda ps: gl.optim.RMSprop(ps, lr=1e-2, momentum=0.5,
                                                             centered=True),
    "adagrad": lambda ps: gl.optim.Adagrad(ps, lr=0.05, lr_decay=0.01, weight_decay=1e-3),
    "adadelta": lambda ps: gl.optim.Adadelta(ps, lr=1.0, weight_decay=1e-3),
    "adamax-wd": lambda ps: gl.optim.Adamax(ps, lr=1e-2, weight_decay=1e-3),
    "nadam": lambda ps: gl.optim.NAdam(ps, lr=1e-2),
    "nadam-decoupled-maximize": lambda ps: gl.optim.NAdam(ps, lr=1e-2, weight_decay=0.1,
                                                          decoupled_weight_decay=True,
                                                          maximize=True),
    # ten steps: rectified from step 6 on
    "radam": lambda ps: gl.optim.RAdam(ps, lr=1e-2, weight_decay=1e-3),
    "radam-decoupled": lambda ps: gl.optim.RAdam(ps, lr=1e-2, weight_decay=0.1,
                                                 decoupled_weight_decay=True),
}


@pytest.mark.parametrize("make", FUSED.values(), ids=FUSED.keys())
def test_prepared_step_equals_step_through_changes(make, monkeypatch):
    (m1, o1), (m2, o2) = pair = _pair(make)
    fast = None
    for k in range(10):
        _grads(m1, k)
        _grads(m2, k)
        declines = _change(k, m2, o2)
        _change(k, m1, o1)  # the same change on the eager twin
        if k == 3:
            monkeypatch.setenv("GRADLAB_NO_JIT", "1")   # another tier, for both
        if k == 4:
            monkeypatch.delenv("GRADLAB_NO_JIT")
        if k == 5:  # the same transposed values in both
            for p, q in zip(m1.parameters(), m2.parameters()):
                p.grad = gl.tensor(q.grad.numpy().copy())
        o1.step()
        if fast is None:
            o2.step()
            fast = o2._prepared_step()
            assert fast is not None
        elif not fast():
            assert declines or k == 0, f"step {k}: declined"
            o2.step()
            fast = o2._prepared_step()
        else:
            assert not declines, f"step {k}: stepped through a stale array"
        _same(*pair)


def _prepared_adam():
    """An Adam optimizer after one step, its prepared step and the first parameter."""
    (model, opt), _ = _pair(lambda ps: gl.optim.Adam(ps, lr=1e-2))
    _grads(model, 0)
    opt.step()
    return model, opt, opt._prepared_step(), next(iter(model.parameters()))


def test_nadam_params_with_another_mu_product_step_apart():
    """NAdam's call takes one mu_product: a param whose product differs (its own history)
    makes the prepared step decline, and step() gives it a call of its own."""
    (m1, o1), (m2, o2) = pair = _pair(lambda ps: gl.optim.NAdam(ps, lr=1e-2))
    for opt, model in ((o1, m1), (o2, m2)):
        _grads(model, 0)
        opt.step()
    fast = o2._prepared_step()
    for opt, model in ((o1, m1), (o2, m2)):
        opt.state[next(iter(model.parameters()))]["mu_product"] = 0.5
        _grads(model, 1)
    o1.step()
    assert fast() is False
    o2.step()
    _same(*pair)
    products = [st["mu_product"] for st in o2.state.values()]
    assert products[0] != products[1] and len(set(products[1:])) == 1


def test_a_replaced_param_array_is_never_written():
    model, _, fast, p = _prepared_adam()
    old = p._data
    before = old.copy()
    p.data = gl.tensor(old.copy())
    _grads(model, 1)
    assert fast() is False
    assert old.tobytes() == before.tobytes()


def test_gradlab_no_jit_keeps_the_prepared_step_off_the_numba_kernel(monkeypatch):
    # read at every call, as step() reads it: the group's plain step (the NumPy tier) runs
    numba_optim = pytest.importorskip("gradlab.backend.fused.optim.numba_cpu")
    (m1, o1), (m2, o2) = pair = _pair(lambda ps: gl.optim.Adam(ps, lr=1e-2))
    for model, opt in ((m1, o1), (m2, o2)):
        _grads(model, 0)
        opt.step()
    fast = o2._prepared_step()
    calls = []
    kernel = numba_optim._read_grads_and_step
    monkeypatch.setattr(numba_optim, "_read_grads_and_step",
                        lambda *a: calls.append(1) or kernel(*a))
    for k, no_jit in ((1, True), (2, False)):
        if no_jit:
            monkeypatch.setenv("GRADLAB_NO_JIT", "1")
        else:
            monkeypatch.delenv("GRADLAB_NO_JIT")
        _grads(m1, k)
        _grads(m2, k)
        o1.step()
        assert fast() is True
        _same(*pair)
        assert calls == ([] if no_jit else [1])


def test_a_grad_of_another_dtype_gets_steps_error():
    _, opt, fast, p = _prepared_adam()
    p.grad = gl.tensor(p.grad.numpy().astype(np.float64))
    with pytest.raises(Exception) as prepared_error:
        fast()
    with pytest.raises(Exception) as step_error:
        opt.step()
    assert type(prepared_error.value) is type(step_error.value)
    assert str(prepared_error.value) == str(step_error.value)


@pytest.mark.parametrize("op, states, options", [
    ("sgd_step", [None], dict(lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.0,
                              maximize=False)),
    ("rmsprop_step", ["square", None, None], dict(lr=0.1, alpha=0.99, eps=1e-8,
                                                  weight_decay=0.0, momentum=0.5,
                                                  maximize=False)),
])
def test_an_option_needing_a_state_list_prepared_without_one_is_refused(op, states, options):
    # The list that is off stands for nothing in the kernel's table but the params' row: a
    # momentum switched on at the call must raise (as the plain call does), never run.
    p = gl.tensor(np.ones((3, 2), np.float32))
    arrays = [[np.zeros((3, 2), np.float32)] if s else None for s in states]
    flags = {"sgd_step": dict(nesterov=False, first_step=False),
             "rmsprop_step": dict(centered=False)}[op]
    run = p._backend.prepare_optimizer_step(op, [p._data], arrays, **flags)
    with pytest.raises(ValueError, match="momentum != 0 needs momentum_buffers"):
        run([np.ones((3, 2), np.float32)], options)
    assert (p.numpy() == 1).all()
    with pytest.raises(ValueError, match="momentum != 0 needs momentum_buffers"):
        getattr(p._backend, op)([p._data], [np.ones((3, 2), np.float32)], *arrays, **flags,
                                **options)
