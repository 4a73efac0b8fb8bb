"""Optimizers step by step: the fused ones against the reference tier of their update rule
(backend/fused/optim/reference.py, itself pinned by hand-derived values in
tests/backend/fused/test_fused_optim_reference.py), Adamax, NAdam and RAdam against
hand-derived first and second steps; argument checks, param groups, None grads, state_dict
round trips."""
import math

import numpy as np
import pytest

import gradlab as gl
import gradlab.nn as nn
from gradlab import optim
from gradlab.backend.fused.optim import reference as ref
from gradlab.backend.fused.optim import scalars

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


# Each case: (optimizer class, kwargs, oracle(params, grads, states, t) stepping host arrays
# in place with the reference tier's group step and the class's PyTorch defaults).
def _sgd(kw):
    def step(ps, gs, st, t):
        if "b" not in st:
            st["b"] = [np.zeros_like(p) for p in ps]
        ref.sgd_step(ps, gs, st["b"] if kw.get("momentum") else None, lr=kw["lr"],
                     momentum=kw.get("momentum", 0.0), dampening=kw.get("dampening", 0.0),
                     nesterov=kw.get("nesterov", False), weight_decay=kw.get("weight_decay", 0.0),
                     maximize=kw.get("maximize", False), first_step=t == 1)
    return step


def _adam(kw, decoupled):
    b1, b2 = kw.get("betas", (0.9, 0.999))

    def step(ps, gs, st, t):
        for k in ("m", "v", "vmax"):
            st.setdefault(k, [np.zeros_like(p) for p in ps])
        ref.adam_step(ps, gs, st["m"], st["v"], st["vmax"], step=t, lr=kw["lr"], beta1=b1,
                      beta2=b2, eps=kw.get("eps", 1e-8),
                      weight_decay=kw.get("weight_decay", 1e-2 if decoupled else 0.0),
                      decoupled_weight_decay=decoupled, amsgrad=kw.get("amsgrad", False),
                      maximize=kw.get("maximize", False))
    return step


def _rmsprop(kw):
    def step(ps, gs, st, t):
        for k in ("v", "b", "a"):
            st.setdefault(k, [np.zeros_like(p) for p in ps])
        ref.rmsprop_step(ps, gs, st["v"], st["b"], st["a"], lr=kw["lr"],
                         alpha=kw.get("alpha", 0.99), eps=kw.get("eps", 1e-8),
                         weight_decay=kw.get("weight_decay", 0.0),
                         momentum=kw.get("momentum", 0.0), centered=kw.get("centered", False),
                         maximize=kw.get("maximize", False))
    return step


def _adagrad(kw):
    def step(ps, gs, st, t):
        st.setdefault("s", [np.full_like(p, kw.get("initial_accumulator_value", 0.0))
                            for p in ps])
        ref.adagrad_step(ps, gs, st["s"], step=t, lr=kw["lr"], lr_decay=kw.get("lr_decay", 0.0),
                         weight_decay=kw.get("weight_decay", 0.0), eps=kw.get("eps", 1e-10),
                         maximize=kw.get("maximize", False))
    return step


def _adadelta(kw):
    def step(ps, gs, st, t):
        for k in ("v", "u"):
            st.setdefault(k, [np.zeros_like(p) for p in ps])
        ref.adadelta_step(ps, gs, st["v"], st["u"], lr=kw.get("lr", 1.0), rho=kw.get("rho", 0.9),
                          eps=kw.get("eps", 1e-6), weight_decay=kw.get("weight_decay", 0.0),
                          maximize=kw.get("maximize", False))
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
]
IDS = [f"{c.__name__}-{i}" for i, (c, _, _) in enumerate(CASES)]


@pytest.mark.parametrize("cls,kwargs,make_ref", CASES, ids=IDS)
def test_steps_follow_the_update_rule(device, rng, cls, kwargs, make_ref):
    """Bitwise on the CPU (the same operation order in every tier); to rounding on a real
    GPU (an emulated one is bitwise too, but this is not the parity test)."""
    params = _params(device, rng)
    grads = _grads(rng)
    expected = [_np(p).copy() for p in params]
    oracle = make_ref(kwargs)
    states = {}
    seen = _drive(cls(params, **kwargs), params, grads, device)
    for t, step_grads in enumerate(grads, start=1):
        oracle(expected, [np.ascontiguousarray(g) for g in step_grads], states, t)
        for got, exp in zip(seen[t - 1], expected):
            np.testing.assert_allclose(got, exp, rtol=1e-11, atol=1e-13, err_msg=f"step {t}")


@pytest.mark.parametrize("cls,kwargs,make_ref", CASES[::3], ids=IDS[::3])
def test_float32_params_track_the_float64_rule(device, rng, cls, kwargs, make_ref):
    params = _params(device, rng, dtype=gl.float32)
    grads = _grads(rng)
    expected = [_np(p).astype(np.float64) for p in params]
    oracle = make_ref(kwargs)
    states = {}
    seen = _drive(cls(params, **kwargs), params, grads, device, dtype=gl.float32)
    for t, step_grads in enumerate(grads, start=1):
        oracle(expected, [g.astype(np.float32).astype(np.float64) for g in step_grads], states, t)
    for got, exp in zip(seen[-1], expected):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, exp, rtol=1e-4, atol=1e-5)


# -- Adamax, NAdam, RAdam: two steps derived by hand -----------------------------------------
# One parameter p0 = 1 with gradients g1 = 0.5 then g2 = -0.25; eps, betas and the rest at
# PyTorch's defaults unless the case says otherwise. Each expected value is the update rule
# worked through with these numbers (p1 from step 1 is reused in step 2).
def _adamax_plain():
    # m1 = 0.1 * 0.5 = 0.05, u1 = max(0, 0.5 + 1e-8); p1 = 1 - 0.002 / 0.1 * m1 / u1
    p1 = 1 - 0.002 / 0.1 * 0.05 / (0.5 + 1e-8)
    # m2 = 0.9 * 0.05 + 0.1 * -0.25 = 0.02, u2 = max(0.999 u1, 0.25 + 1e-8) = 0.999 u1
    p2 = p1 - 0.002 / (1 - 0.81) * 0.02 / (0.999 * (0.5 + 1e-8))
    return p1, p2


def _adamax_decay():
    # lr 0.01, betas (0.5, 0.9), wd 0.1: g1' = 0.5 + 0.1 * 1 = 0.6, m1 = 0.3, u1 = 0.6 + 1e-8
    p1 = 1 - 0.01 / 0.5 * 0.3 / (0.6 + 1e-8)
    g2 = -0.25 + 0.1 * p1
    m2 = 0.5 * 0.3 + 0.5 * g2
    u2 = max(0.9 * (0.6 + 1e-8), abs(g2) + 1e-8)
    return p1, p1 - 0.01 / 0.75 * m2 / u2


def _nadam(decoupled):
    # lr 0.01; decoupled: wd 0.1, momentum_decay 0.01, p *= 1 - 0.01 * 0.1 = 0.999 before each
    # step; else momentum_decay 4e-3. mu_t = 0.9 (1 - 0.5 * 0.96^(t psi)), P_t = mu_1 ... mu_t
    psi, keep = (0.01, 0.999) if decoupled else (4e-3, 1.0)
    mu1, mu2, mu3 = (0.9 * (1 - 0.5 * 0.96 ** (t * psi)) for t in (1, 2, 3))
    # m1 = 0.05, v1 = 0.001 * 0.25, denom = sqrt(v1 / (1 - 0.999)) + eps = 0.5 + 1e-8
    d1 = 0.5 + 1e-8
    p1 = keep - 0.01 * (1 - mu1) / (1 - mu1) * 0.5 / d1 - 0.01 * mu2 / (1 - mu1 * mu2) * 0.05 / d1
    # m2 = 0.045 - 0.025 = 0.02, v2 = 0.999 * 0.00025 + 0.001 * 0.0625
    d2 = math.sqrt((0.999 * 0.00025 + 0.001 * 0.0625) / (1 - 0.999 ** 2)) + 1e-8
    p2 = p1 * keep - 0.01 * (1 - mu2) / (1 - mu1 * mu2) * -0.25 / d2 \
        - 0.01 * mu3 / (1 - mu1 * mu2 * mu3) * 0.02 / d2
    return p1, p2


def _radam_plain():
    # rho_inf = 2 / 0.001 - 1 = 1999; rho_1 = 1999 - 2 * 0.999 / 0.001 = 1 and rho_2 =
    # 1999 - 4 * 0.998001 / 0.001999 = 1.9995: both <= 5, so plain momentum steps lr m_hat
    p1 = 1 - 0.01 * 0.05 / 0.1
    return p1, p1 - 0.01 * 0.02 / (1 - 0.81)


def _radam_decoupled_max():
    # betas (0.9, 0.5) (rho_inf = 3: never rectified), wd 0.1 decoupled, maximize: the step
    # climbs, -g; p0 *= 1 - 0.01 * 0.1 = 0.999 first
    p1 = 0.999 - 0.01 * (0.1 * -0.5) / 0.1
    # m2 = 0.9 * -0.05 + 0.1 * 0.25 = -0.02
    return p1, p1 * 0.999 - 0.01 * -0.02 / 0.19


HAND = {
    "Adamax": (optim.Adamax, dict(lr=0.002), _adamax_plain),
    "Adamax-decay": (optim.Adamax, dict(lr=0.01, weight_decay=0.1, betas=(0.5, 0.9)),
                     _adamax_decay),
    "NAdam": (optim.NAdam, dict(lr=0.01), lambda: _nadam(False)),
    "NAdam-decoupled": (optim.NAdam, dict(lr=0.01, weight_decay=0.1,
                                          decoupled_weight_decay=True, momentum_decay=0.01),
                        lambda: _nadam(True)),
    "RAdam": (optim.RAdam, dict(lr=0.01), _radam_plain),
    "RAdam-decoupled-max": (optim.RAdam, dict(lr=0.01, betas=(0.9, 0.5), weight_decay=0.1,
                                              decoupled_weight_decay=True, maximize=True),
                            _radam_decoupled_max),
}


@pytest.mark.parametrize("case", list(HAND))
def test_unfused_optimizers_two_hand_derived_steps(device, case):
    cls, kwargs, expected = HAND[case]
    p = nn.Parameter(gl.tensor([1.0], dtype=gl.float64, device=device))
    seen = _drive(cls([p], **kwargs), [p], [[np.array([0.5])], [np.array([-0.25])]], device)
    for got, want in zip(seen, expected()):
        assert got[0][0] == pytest.approx(want, rel=1e-13, abs=1e-15)


def test_radam_rectifies_from_step_6_with_beta2_0999():
    # rho_t = 1999 - 2 t 0.999^t / (1 - 0.999^t): 4.99600 at t = 5 (no adaptive step),
    # 5.99416 at t = 6, where r_6 = sqrt((rho - 4)(rho - 2) 1999 / (1995 * 1997 * rho))
    # = sqrt(1.99416 * 3.99416 * 1999 / (1995 * 1997 * 5.99416)) = 0.0258211
    assert scalars.radam_rectification(0.999, 5) is None
    assert scalars.radam_rectification(0.999, 6) == pytest.approx(0.0258211, abs=1e-7)
    sc = scalars.radam_scalars(step=6, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8,
                               weight_decay=0.0, decoupled_weight_decay=False)
    assert sc.rectified and not scalars.radam_scalars(
        step=5, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
        decoupled_weight_decay=False).rectified
    assert sc.adaptive_coef == pytest.approx(
        0.01 / (1 - 0.9 ** 6) * scalars.radam_rectification(0.999, 6) * math.sqrt(1 - 0.999 ** 6))


def test_bias_corrections_are_computed_one_way():
    """The derived scalars of every rule come from scalars.py: Adam's sqrt(1 - beta2^t) with
    math.sqrt, the bias corrections with one function."""
    sc = scalars.adam_scalars(step=3, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0,
                              decoupled_weight_decay=False)
    assert sc.bc2_sqrt == math.sqrt(1 - 0.999 ** 3)
    assert sc.step_size == 0.1 / (1 - 0.9 ** 3)
    assert scalars.adamax_scalars(step=3, lr=0.1, beta1=0.9, beta2=0.999, eps=0,
                                  weight_decay=0).step_size == \
        sc.step_size
    assert not hasattr(optim.optimizer, "bias_correction")


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


@pytest.mark.parametrize("cls", [c for c in ALL if c is not optim.SGD])
def test_a_model_converted_after_its_first_step_says_what_to_do(cls):
    # (SGD without momentum keeps no state: nothing to mismatch)
    model = nn.Linear(3, 2)
    opt = cls(model.parameters(), lr=0.1)
    model(gl.ones(4, 3)).sum().backward()
    opt.step()
    model.double()
    model(gl.ones(4, 3, dtype=gl.float64)).sum().backward()
    with pytest.raises(TypeError, match="create the optimizer after converting the model"):
        opt.step()


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
    # b's first step (its own t = 1): m_hat = g, v_hat = g^2, so p -= 0.1 g / (|g| + 1e-8)
    np.testing.assert_allclose(_np(b), b0 - 0.1 * gb / (np.abs(gb) + 1e-8), rtol=1e-12)
    # a, the same gradient twice: m_hat and sqrt(v_hat) are g and |g| again at t = 2
    a1 = a0 - 0.1 * ga / (np.abs(ga) + 1e-8)
    np.testing.assert_allclose(_np(a), a1 - 0.1 * ga / (np.abs(ga) + 1e-8), rtol=1e-9)


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
