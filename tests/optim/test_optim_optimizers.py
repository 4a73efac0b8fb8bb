"""Optimizers step by step against their update formulas (the reference update in each
optimizer's file, itself checked against hand-computed first steps), argument checks,
param groups, None grads, state_dict round trips."""
import math

import numpy as np
import pytest

import gradlab as gl
import gradlab.nn as nn
from gradlab import optim
from gradlab.optim.adadelta import adadelta_reference
from gradlab.optim.adagrad import adagrad_reference
from gradlab.optim.adam import adam_reference
from gradlab.optim.adamax import adamax_reference
from gradlab.optim.nadam import nadam_reference
from gradlab.optim.radam import radam_reference
from gradlab.optim.rmsprop import rmsprop_reference
from gradlab.optim.sgd import sgd_reference

SHAPES = [(3, 2), (4,)]
STEPS = 6


def _np(t):
    return t.detach().cpu().numpy()


def _params(device, rng, dtype=gl.float64):
    return [nn.Parameter(gl.tensor(rng.normal(size=s), dtype=dtype, device=device))
            for s in SHAPES]


def _grads(rng):
    return [[rng.normal(size=s) for s in SHAPES] for _ in range(STEPS)]


def _drive(opt, params, grads, device, dtype=gl.float64):
    seen = []
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = gl.tensor(g, dtype=dtype, device=device)
        opt.step()
        seen.append([_np(p).copy() for p in params])
    return seen


# Each case: (optimizer class, kwargs, reference stepper(p, g, state, t) -> (p, state))
def _sgd(kw):
    def step(p, g, st, t):
        p, st["b"] = sgd_reference(p, g, st.get("b"), first_step=(t == 1), **kw)
        return p
    return step


def _adam(kw, decoupled):
    b1, b2 = kw.get("betas", (0.9, 0.999))

    def step(p, g, st, t):
        z = np.zeros_like(p)
        p, st["m"], st["v"], st["vmax"] = adam_reference(
            p, g, st.get("m", z), st.get("v", z), st.get("vmax", z), step=t, lr=kw["lr"],
            beta1=b1, beta2=b2, eps=kw.get("eps", 1e-8),
            weight_decay=kw.get("weight_decay", 1e-2 if decoupled else 0.0),
            decoupled_weight_decay=decoupled, amsgrad=kw.get("amsgrad", False),
            maximize=kw.get("maximize", False))
        return p
    return step


def _rmsprop(kw):
    def step(p, g, st, t):
        z = np.zeros_like(p)
        p, st["v"], st["b"], st["a"] = rmsprop_reference(
            p, g, st.get("v", z), st.get("b", z), st.get("a", z), lr=kw["lr"],
            alpha=kw.get("alpha", 0.99), eps=kw.get("eps", 1e-8),
            weight_decay=kw.get("weight_decay", 0.0), momentum=kw.get("momentum", 0.0),
            centered=kw.get("centered", False), maximize=kw.get("maximize", False))
        return p
    return step


def _adagrad(kw):
    def step(p, g, st, t):
        s = st.get("s", np.full_like(p, kw.get("initial_accumulator_value", 0.0)))
        p, st["s"] = adagrad_reference(p, g, s, step=t, lr=kw["lr"],
                                       lr_decay=kw.get("lr_decay", 0.0),
                                       weight_decay=kw.get("weight_decay", 0.0),
                                       eps=kw.get("eps", 1e-10),
                                       maximize=kw.get("maximize", False))
        return p
    return step


def _adadelta(kw):
    def step(p, g, st, t):
        z = np.zeros_like(p)
        p, st["v"], st["u"] = adadelta_reference(
            p, g, st.get("v", z), st.get("u", z), lr=kw.get("lr", 1.0), rho=kw.get("rho", 0.9),
            eps=kw.get("eps", 1e-6), weight_decay=kw.get("weight_decay", 0.0),
            maximize=kw.get("maximize", False))
        return p
    return step


def _adamax(kw):
    b1, b2 = kw.get("betas", (0.9, 0.999))

    def step(p, g, st, t):
        z = np.zeros_like(p)
        p, st["m"], st["u"] = adamax_reference(
            p, g, st.get("m", z), st.get("u", z), step=t, lr=kw["lr"], beta1=b1, beta2=b2,
            eps=kw.get("eps", 1e-8), weight_decay=kw.get("weight_decay", 0.0),
            maximize=kw.get("maximize", False))
        return p
    return step


def _nadam(kw):
    b1, b2 = kw.get("betas", (0.9, 0.999))

    def step(p, g, st, t):
        z = np.zeros_like(p)
        p, st["m"], st["v"], st["mu"] = nadam_reference(
            p, g, st.get("m", z), st.get("v", z), st.get("mu", 1.0), step=t, lr=kw["lr"],
            beta1=b1, beta2=b2, eps=kw.get("eps", 1e-8),
            weight_decay=kw.get("weight_decay", 0.0),
            momentum_decay=kw.get("momentum_decay", 4e-3),
            decoupled_weight_decay=kw.get("decoupled_weight_decay", False),
            maximize=kw.get("maximize", False))
        return p
    return step


def _radam(kw):
    b1, b2 = kw.get("betas", (0.9, 0.999))

    def step(p, g, st, t):
        z = np.zeros_like(p)
        p, st["m"], st["v"] = radam_reference(
            p, g, st.get("m", z), st.get("v", z), step=t, lr=kw["lr"], beta1=b1, beta2=b2,
            eps=kw.get("eps", 1e-8), weight_decay=kw.get("weight_decay", 0.0),
            decoupled_weight_decay=kw.get("decoupled_weight_decay", False),
            maximize=kw.get("maximize", False))
        return p
    return step


CASES = [
    (optim.SGD, dict(lr=0.1), _sgd),
    (optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.01), _sgd),
    (optim.SGD, dict(lr=0.1, momentum=0.9, dampening=0.1, maximize=True), _sgd),
    (optim.SGD, dict(lr=0.1, momentum=0.8, nesterov=True), _sgd),
    (optim.Adam, dict(lr=0.01), lambda kw: _adam(kw, False)),
    (optim.Adam, dict(lr=0.01, betas=(0.8, 0.9), weight_decay=0.1, amsgrad=True),
     lambda kw: _adam(kw, False)),
    (optim.Adam, dict(lr=0.01, maximize=True), lambda kw: _adam(kw, False)),
    (optim.AdamW, dict(lr=0.01), lambda kw: _adam(kw, True)),
    (optim.AdamW, dict(lr=0.01, weight_decay=0.5, amsgrad=True), lambda kw: _adam(kw, True)),
    (optim.RMSprop, dict(lr=0.01), _rmsprop),
    (optim.RMSprop, dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.1), _rmsprop),
    (optim.RMSprop, dict(lr=0.01, alpha=0.9, momentum=0.5, maximize=True), _rmsprop),
    (optim.Adagrad, dict(lr=0.1), _adagrad),
    (optim.Adagrad, dict(lr=0.1, lr_decay=0.1, weight_decay=0.1,
                         initial_accumulator_value=0.5), _adagrad),
    (optim.Adadelta, dict(), _adadelta),
    (optim.Adadelta, dict(lr=0.5, rho=0.8, weight_decay=0.1, maximize=True), _adadelta),
    (optim.Adamax, dict(lr=0.01), _adamax),
    (optim.Adamax, dict(lr=0.01, weight_decay=0.1, betas=(0.5, 0.9)), _adamax),
    (optim.NAdam, dict(lr=0.01), _nadam),
    (optim.NAdam, dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True,
                       momentum_decay=0.01), _nadam),
    (optim.RAdam, dict(lr=0.01), _radam),
    (optim.RAdam, dict(lr=0.01, betas=(0.9, 0.5), weight_decay=0.1), _radam),
    (optim.RAdam, dict(lr=0.01, betas=(0.9, 0.5), weight_decay=0.1,
                       decoupled_weight_decay=True, maximize=True), _radam),
]
IDS = [f"{c.__name__}-{i}" for i, (c, _, _) in enumerate(CASES)]


@pytest.mark.parametrize("cls,kwargs,make_ref", CASES, ids=IDS)
def test_steps_follow_the_update_formula(device, rng, cls, kwargs, make_ref):
    params = _params(device, rng)
    grads = _grads(rng)
    expected = [_np(p).copy() for p in params]
    ref = make_ref(kwargs)
    states = [{} for _ in params]
    seen = _drive(cls(params, **kwargs), params, grads, device)
    for t, step_grads in enumerate(grads, start=1):
        expected = [ref(p, g, st, t) for p, g, st in zip(expected, step_grads, states)]
        for got, exp in zip(seen[t - 1], expected):
            np.testing.assert_allclose(got, exp, rtol=1e-11, atol=1e-13,
                                       err_msg=f"step {t}")


@pytest.mark.parametrize("cls,kwargs,make_ref", CASES[::3], ids=IDS[::3])
def test_float32_params_track_the_float64_reference(device, rng, cls, kwargs, make_ref):
    params = _params(device, rng, dtype=gl.float32)
    grads = _grads(rng)
    expected = [_np(p).astype(np.float64) for p in params]
    ref = make_ref(kwargs)
    states = [{} for _ in params]
    seen = _drive(cls(params, **kwargs), params, grads, device, dtype=gl.float32)
    for t, step_grads in enumerate(grads, start=1):
        expected = [ref(p, g.astype(np.float32).astype(np.float64), st, t)
                    for p, g, st in zip(expected, step_grads, states)]
    for got, exp in zip(seen[-1], expected):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, exp, rtol=1e-4, atol=1e-5)


# -- hand-computed first steps (hold the references themselves to the formulas) ------------
def test_hand_computed_first_steps():
    p, g = np.array([1.0]), np.array([0.5])
    # SGD with momentum, first step: b = g; p - lr b
    assert sgd_reference(p, g, None, lr=0.1, momentum=0.9)[0][0] == pytest.approx(0.95)
    # Adam's first step moves every coordinate by ~lr: m_hat = g, v_hat = g^2
    q = adam_reference(p, g, 0 * p, 0 * p, 0 * p, step=1, lr=0.01, beta1=0.9, beta2=0.999,
                       eps=0.0)[0]
    assert q[0] == pytest.approx(0.99, abs=1e-12)
    # Adagrad: s = g^2, step = lr g / |g| = lr
    assert adagrad_reference(p, g, 0 * p, step=1, lr=0.1)[0][0] == pytest.approx(0.9)
    # RMSprop: v = (1 - alpha) g^2, step = lr g / sqrt(v) = lr / sqrt(1 - alpha)
    assert rmsprop_reference(p, g, 0 * p, 0 * p, 0 * p, lr=0.01, alpha=0.99, eps=0)[0][0] == \
        pytest.approx(1 - 0.01 / math.sqrt(0.01))
    # Adadelta: v = 0.1 g^2; d = sqrt(eps)/sqrt(v + eps) g
    v = 0.1 * 0.25
    d = math.sqrt(1e-6) / math.sqrt(v + 1e-6) * 0.5
    assert adadelta_reference(p, g, 0 * p, 0 * p, lr=1.0, rho=0.9, eps=1e-6)[0][0] == \
        pytest.approx(1 - d)
    # Adamax: m = 0.1 g, u = |g| + eps, step = lr/(1 - 0.9) * m/u = lr
    assert adamax_reference(p, g, 0 * p, 0 * p, step=1, lr=0.002, beta1=0.9, beta2=0.999,
                            eps=0)[0][0] == pytest.approx(0.998)
    # RAdam: rho_1 = rho_inf - 2 b2 / (1 - b2) = 1 <= 5 -> plain momentum step lr * m_hat
    assert radam_reference(p, g, 0 * p, 0 * p, step=1, lr=0.01, beta1=0.9, beta2=0.999,
                           eps=1e-8)[0][0] == pytest.approx(1 - 0.01 * 0.5)


def test_course_momentum_maps_to_dampening(device):
    """v = beta v + (1 - beta) g (course) and PyTorch's b with momentum = dampening = beta
    follow the same recursion from step 2 on; the seed differs (b_1 = g_1,
    v_1 = (1 - beta) g_1), so b_t - v_t = beta^t g_1 exactly."""
    beta = 0.9
    p = nn.Parameter(gl.zeros(1, dtype=gl.float64, device=device))
    opt = optim.SGD([p], lr=1.0, momentum=beta, dampening=beta)
    v = 0.0
    gs = [1.0, 2.0, -1.0, 0.5]
    for t, g in enumerate(gs, start=1):
        p.grad = gl.tensor([g], dtype=gl.float64, device=device)
        opt.step()
        v = beta * v + (1 - beta) * g
        b = float(opt.state[p]["momentum_buffer"][0])
        assert b - v == pytest.approx(beta ** t * gs[0], abs=1e-12)


# -- argument checks -------------------------------------------------------------------------
ALL = [optim.SGD, optim.Adam, optim.AdamW, optim.RMSprop, optim.Adagrad, optim.Adadelta,
       optim.Adamax, optim.NAdam, optim.RAdam]


@pytest.mark.parametrize("cls", ALL)
def test_no_params_and_negative_lr_are_value_errors(cls):
    with pytest.raises(ValueError, match="empty parameter list"):
        cls([], lr=0.1)
    with pytest.raises(ValueError, match="invalid learning rate: -0.1"):
        cls([nn.Parameter(gl.ones(1))], lr=-0.1)


def test_other_argument_checks():
    p = [nn.Parameter(gl.ones(1))]
    with pytest.raises(ValueError, match="beta2"):
        optim.Adam(p, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="invalid momentum"):
        optim.SGD(p, lr=0.1, momentum=-1)
    with pytest.raises(ValueError, match="invalid eps"):
        optim.RMSprop(p, eps=-1)
    with pytest.raises(ValueError, match="rho"):
        optim.Adadelta(p, rho=1.5)
    with pytest.raises(TypeError, match="iterable"):
        optim.SGD(nn.Parameter(gl.ones(1)), lr=0.1)
    with pytest.raises(ValueError, match="only floating point"):
        optim.SGD([gl.ones(1, dtype=gl.int64)], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": p}, {"params": p}], lr=0.1)


# -- groups, None grads, zero_grad, state ----------------------------------------------------
def test_param_groups_with_own_lr_and_none_grads(device):
    a = nn.Parameter(gl.ones(2, dtype=gl.float64, device=device))
    b = nn.Parameter(gl.ones(2, dtype=gl.float64, device=device))
    c = nn.Parameter(gl.ones(2, dtype=gl.float64, device=device))
    opt = optim.SGD([{"params": [a]}, {"params": [b, c], "lr": 0.5}], lr=0.1)
    a.grad = gl.ones(2, dtype=gl.float64, device=device)
    b.grad = gl.ones(2, dtype=gl.float64, device=device)
    opt.step()
    np.testing.assert_allclose(_np(a), [0.9, 0.9])
    np.testing.assert_allclose(_np(b), [0.5, 0.5])
    np.testing.assert_allclose(_np(c), [1.0, 1.0])  # no grad: untouched
    opt.add_param_group({"params": [nn.Parameter(gl.ones(1))], "momentum": 0.9})
    assert opt.param_groups[2]["lr"] == 0.1 and opt.param_groups[2]["momentum"] == 0.9
    opt.zero_grad()
    assert a.grad is None and b.grad is None


def test_adam_params_that_missed_steps_keep_their_own_count(device, rng):
    """A parameter whose grad was None on some steps has a smaller step count; its update
    must use its own bias correction."""
    a, b = _params(device, rng)[:1] * 1, _params(device, rng)[1:]
    a, b = a[0], b[0]
    opt = optim.Adam([a, b], lr=0.1)
    a0, b0 = _np(a).copy(), _np(b).copy()
    ga, gb = rng.normal(size=a.shape), rng.normal(size=b.shape)
    a.grad = gl.tensor(ga, device=device)
    opt.step()  # b has no grad
    b.grad = gl.tensor(gb, device=device)
    opt.step()  # a: step 2, b: step 1
    assert opt.state[a]["step"] == 2 and opt.state[b]["step"] == 1
    z = np.zeros_like(b0)
    expect_b = adam_reference(b0, gb, z, z, z, step=1, lr=0.1, beta1=0.9, beta2=0.999,
                              eps=1e-8)[0]
    np.testing.assert_allclose(_np(b), expect_b, rtol=1e-12)
    za = np.zeros_like(a0)
    a1, m, v, _ = adam_reference(a0, ga, za, za, za, step=1, lr=0.1, beta1=0.9, beta2=0.999,
                                 eps=1e-8)
    a2 = adam_reference(a1, ga, m, v, za, step=2, lr=0.1, beta1=0.9, beta2=0.999,
                        eps=1e-8)[0]
    np.testing.assert_allclose(_np(a), a2, rtol=1e-12)


@pytest.mark.parametrize("cls,kwargs", [(optim.SGD, dict(lr=0.1, momentum=0.9)),
                                        (optim.Adam, dict(lr=0.01, amsgrad=True)),
                                        (optim.RMSprop, dict(momentum=0.5, centered=True)),
                                        (optim.Adagrad, {}), (optim.Adadelta, {}),
                                        (optim.NAdam, {}), (optim.RAdam, {}),
                                        (optim.Adamax, {})])
def test_state_dict_round_trip_continues_identically(device, rng, cls, kwargs):
    grads = _grads(rng)
    init = [rng.normal(size=s) for s in SHAPES]
    pa = [nn.Parameter(gl.tensor(v, device=device)) for v in init]
    opt_a = cls(pa, **kwargs)
    _drive(opt_a, pa, grads[:3], device)
    sd = opt_a.state_dict()
    assert sorted(sd) == ["param_groups", "state"]
    assert sd["param_groups"][0]["params"] == [0, 1] and sorted(sd["state"]) == [0, 1]
    # a fresh optimizer over copies of the parameters, loaded from the state dict
    pb = [nn.Parameter(gl.tensor(_np(p), device=device)) for p in pa]
    opt_b = cls(pb, **kwargs)
    opt_b.load_state_dict(gl.load(_roundtrip(sd)))
    final_a = _drive(opt_a, pa, grads[3:], device)[-1]
    final_b = _drive(opt_b, pb, grads[3:], device)[-1]
    for x, y in zip(final_a, final_b):
        np.testing.assert_array_equal(x, y)


def _roundtrip(obj):
    import io
    buf = io.BytesIO()
    gl.save(obj, buf)
    buf.seek(0)
    return buf


def test_load_state_dict_rejects_mismatched_layouts():
    p = [nn.Parameter(gl.ones(2)), nn.Parameter(gl.ones(3))]
    opt = optim.Adam(p)
    for q in p:
        q.grad = gl.ones(q.shape)
    opt.step()
    sd = opt.state_dict()
    with pytest.raises(ValueError, match="parameter group 0 has 1 parameters"):
        optim.Adam([nn.Parameter(gl.ones(2))]).load_state_dict(sd)
    swapped = [nn.Parameter(gl.ones(3)), nn.Parameter(gl.ones(2))]
    with pytest.raises(ValueError, match="shape"):
        optim.Adam(swapped).load_state_dict(sd)
    with pytest.raises(ValueError, match="'state' and 'param_groups'"):
        opt.load_state_dict({"foo": 1})


def test_training_reduces_loss(device):
    gl.manual_seed(0)
    x = gl.randn(64, 3, device=device)
    y = x @ gl.tensor([[1.0], [-2.0], [0.5]], device=device) + 0.3
    for cls, kw in [(optim.SGD, dict(lr=0.1, momentum=0.9)), (optim.Adam, dict(lr=0.05)),
                    (optim.RAdam, dict(lr=0.05)), (optim.NAdam, dict(lr=0.05)),
                    (optim.Adamax, dict(lr=0.05)), (optim.Adagrad, dict(lr=0.5)),
                    (optim.RMSprop, dict(lr=0.01)), (optim.Adadelta, dict(lr=1.0, eps=1e-2)),
                    (optim.AdamW, dict(lr=0.05))]:
        model = nn.Linear(3, 1).to(device)
        opt = cls(model.parameters(), **kw)
        first = None
        for _ in range(100):
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            first = first if first is not None else loss.item()
        assert loss.item() < 0.1 * first, cls.__name__
