"""The NumPy optimizer steps against values derived by hand from PyTorch's update rules."""
import math

import numpy as np
import pytest

from gradlab.backend.fused.optim import reference as ref
from gradlab.backend.fused.optim import scalars


def arr(*values, dtype=np.float64):
    return np.array(values, dtype=dtype)


def adam(p, g, m, v, vmax=None, **kw):
    opts = dict(step=1, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                decoupled_weight_decay=False, amsgrad=vmax is not None, maximize=False)
    opts.update(kw)
    ref.adam_step([p], [g], [m], [v], None if vmax is None else [vmax], **opts)


def test_adam_first_step_moves_by_lr():
    p, g, m, v = arr(1.0), arr(0.5), arr(0.0), arr(0.0)
    adam(p, g, m, v)
    # m = 0.1 * 0.5, v = 0.001 * 0.25; bias corrections make m_hat = 0.5, sqrt(v_hat) = 0.5.
    assert m[0] == pytest.approx(0.05, abs=1e-15)
    assert v[0] == pytest.approx(0.00025, abs=1e-16)
    assert p[0] == pytest.approx(1.0 - 0.1 * 0.5 / (0.5 + 1e-8), abs=1e-15)
    assert p[0] == pytest.approx(0.9, abs=1e-8)
    assert g[0] == 0.5  # the gradient is read, never written


def test_adam_two_steps_amsgrad_keeps_the_max():
    p, g, m, v, vmax = arr(1.0), arr(1.0), arr(0.0), arr(0.0), arr(0.0)
    adam(p, g, m, v, vmax, step=1)
    p1 = 1.0 - 0.1 / 0.1 * 0.1 / (math.sqrt(0.001) / math.sqrt(0.001) + 1e-8)
    assert p[0] == pytest.approx(p1, abs=1e-15)
    g[0] = 0.0
    adam(p, g, m, v, vmax, step=2)
    # m = 0.09, v = 0.000999 but vmax stays 0.001.
    assert m[0] == pytest.approx(0.09, abs=1e-16)
    assert v[0] == pytest.approx(0.000999, abs=1e-15)
    assert vmax[0] == pytest.approx(0.001, abs=1e-15)
    denom = math.sqrt(0.001) / math.sqrt(1 - 0.999 ** 2) + 1e-8
    assert p[0] == pytest.approx(p1 - 0.1 / (1 - 0.81) * 0.09 / denom, abs=1e-14)


def test_adam_weight_decay_coupled_and_decoupled():
    p, g, m, v = arr(1.0), arr(0.5), arr(0.0), arr(0.0)
    adam(p, g, m, v, weight_decay=0.1)              # Adam: g = 0.5 + 0.1 * 1
    assert m[0] == pytest.approx(0.06, abs=1e-16)
    assert p[0] == pytest.approx(0.9, abs=1e-7)
    p, g, m, v = arr(1.0), arr(0.5), arr(0.0), arr(0.0)
    adam(p, g, m, v, weight_decay=0.1, decoupled_weight_decay=True)   # AdamW: p *= 0.99
    assert m[0] == pytest.approx(0.05, abs=1e-16)
    assert p[0] == pytest.approx(0.99 - 0.1 * 0.5 / (0.5 + 1e-8), abs=1e-15)


def test_adam_maximize_climbs():
    p, g, m, v = arr(1.0), arr(0.5), arr(0.0), arr(0.0)
    adam(p, g, m, v, maximize=True)
    assert m[0] == pytest.approx(-0.05, abs=1e-15)
    assert p[0] == pytest.approx(1.1, abs=1e-7)


def sgd(p, g, b, **kw):
    opts = dict(lr=0.1, momentum=0.9, dampening=0.0, nesterov=False, weight_decay=0.0,
                maximize=False, first_step=True)
    opts.update(kw)
    ref.sgd_step([p], [g], None if b is None else [b], **opts)


def test_sgd_nesterov_two_steps():
    p, g, b = arr(1.0), arr(1.0), arr(123.0)   # the first step overwrites the buffer
    sgd(p, g, b, nesterov=True, first_step=True)
    assert b[0] == 1.0                          # b = g
    assert p[0] == pytest.approx(0.81, abs=1e-15)   # g + 0.9 b = 1.9
    sgd(p, g, b, nesterov=True, first_step=False)
    assert b[0] == pytest.approx(1.9, abs=1e-15)    # 0.9 * 1 + 1
    assert p[0] == pytest.approx(0.539, abs=1e-15)  # g + 0.9 * 1.9 = 2.71


def test_sgd_dampening_and_weight_decay():
    p, g, b = arr(2.0), arr(1.0), arr(0.0)
    sgd(p, g, b, dampening=0.5, weight_decay=0.1, first_step=True)
    assert b[0] == pytest.approx(1.2, abs=1e-15)     # no dampening on the first step
    assert p[0] == pytest.approx(1.88, abs=1e-15)
    sgd(p, g, b, dampening=0.5, weight_decay=0.1, first_step=False)
    assert b[0] == pytest.approx(0.9 * 1.2 + 0.5 * 1.188, abs=1e-15)
    assert p[0] == pytest.approx(1.88 - 0.1 * 1.674, abs=1e-15)


def test_sgd_plain_and_maximize():
    p, g = arr(1.0, -1.0), arr(1.0, 2.0)
    sgd(p, g, None, momentum=0.0)
    np.testing.assert_allclose(p, [0.9, -1.2], atol=1e-15)
    sgd(p, g, None, momentum=0.0, maximize=True)
    np.testing.assert_allclose(p, [1.0, -1.0], atol=1e-15)


def test_rmsprop_plain_centered_momentum():
    kw = dict(lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, maximize=False)
    p, g, v = arr(1.0), arr(2.0), arr(0.0)
    ref.rmsprop_step([p], [g], [v], None, None, momentum=0.0, centered=False, **kw)
    assert v[0] == pytest.approx(0.04, abs=1e-16)
    assert p[0] == pytest.approx(1 - 0.01 * 2 / (0.2 + 1e-8), abs=1e-15)

    p, v, a = arr(1.0), arr(0.0), arr(0.0)
    ref.rmsprop_step([p], [g], [v], None, [a], momentum=0.0, centered=True, **kw)
    assert a[0] == pytest.approx(0.02, abs=1e-16)
    assert p[0] == pytest.approx(1 - 0.01 * 2 / (math.sqrt(0.04 - 0.0004) + 1e-8), abs=1e-15)

    p, v, b = arr(1.0), arr(0.0), arr(0.0)
    ref.rmsprop_step([p], [g], [v], [b], None, momentum=0.9, centered=False, **kw)
    b1 = 2 / (0.2 + 1e-8)
    assert b[0] == pytest.approx(b1, rel=1e-15)
    ref.rmsprop_step([p], [g], [v], [b], None, momentum=0.9, centered=False, **kw)
    b2 = 0.9 * b1 + 2 / (math.sqrt(0.99 * 0.04 + 0.04) + 1e-8)
    assert b[0] == pytest.approx(b2, rel=1e-14)
    assert p[0] == pytest.approx(1 - 0.01 * b1 - 0.01 * b2, abs=1e-14)


def test_adagrad_lr_decay():
    p, g, s = arr(1.0), arr(3.0), arr(0.0)
    kw = dict(lr=0.1, lr_decay=0.5, weight_decay=0.0, eps=1e-10, maximize=False)
    ref.adagrad_step([p], [g], [s], step=1, **kw)
    assert s[0] == 9.0
    p1 = 1 - 0.1 * 3 / (3 + 1e-10)
    assert p[0] == pytest.approx(p1, abs=1e-15)
    ref.adagrad_step([p], [g], [s], step=2, **kw)   # clr = 0.1 / (1 + 1 * 0.5), s = 18
    assert s[0] == 18.0
    assert p[0] == pytest.approx(p1 - 0.1 / 1.5 * 3 / (math.sqrt(18) + 1e-10), abs=1e-14)


def test_adadelta_one_step():
    p, g, v, u = arr(1.0), arr(1.0), arr(0.0), arr(0.0)
    ref.adadelta_step([p], [g], [v], [u], lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0,
                      maximize=False)
    d = math.sqrt(1e-6) / math.sqrt(0.1 + 1e-6)
    assert v[0] == pytest.approx(0.1, abs=1e-16)
    assert u[0] == pytest.approx(0.1 * d * d, rel=1e-14)
    assert p[0] == pytest.approx(1 - d, abs=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_group_of_mixed_sizes_crossing_slices(dtype, rng):
    """The group step walks tensors in slices of _SLICE elements: the same bits as the rule's
    single-tensor formula applied to each whole tensor at once."""
    sizes = [0, 1, 31, 4097, ref._SLICE + 5, 3 * ref._SLICE]
    shapes = [(n,) if n % 2 else (n // 2, 2) if n else (0,) for n in sizes]
    ps = [rng.standard_normal(s).astype(dtype) for s in shapes]
    gs = [rng.standard_normal(s).astype(dtype) for s in shapes]
    ms = [rng.standard_normal(s).astype(dtype) for s in shapes]
    vs = [rng.random(s).astype(dtype) for s in shapes]
    start = [p.copy() for p in ps]
    want = [tuple(a.copy() for a in t) for t in zip(ps, ms, vs)]
    sc = scalars.adam_scalars(step=3, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8,
                              weight_decay=0.0, decoupled_weight_decay=False)
    for (p, m, v), g in zip(want, gs):
        ref.adam(np, p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1), None, sc,
                 maximize=False, tmp=np.empty(p.size, dtype), tmp2=np.empty(p.size, dtype))
    ref.adam_step(ps, gs, ms, vs, None, step=3, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8,
                  weight_decay=0.0, decoupled_weight_decay=False, amsgrad=False, maximize=False)
    for got, exp in zip(zip(ps, ms, vs), want):
        for a, b in zip(got, exp):
            assert a.dtype == dtype
            np.testing.assert_array_equal(a, b)
    assert all(not np.array_equal(p, p0) for p, p0 in zip(ps, start) if p.size)


def test_rmsprop_weight_decay_and_maximize():
    p, g, v = arr(1.0), arr(2.0), arr(0.0)
    ref.rmsprop_step([p], [g], [v], None, None, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.1,
                     momentum=0.0, centered=False, maximize=True)
    # g' = -2 + 0.1 * 1 = -1.9, v = 0.01 * 3.61 = 0.0361, sqrt(v) = 0.19: the step climbs
    assert v[0] == pytest.approx(0.0361, abs=1e-16)
    assert p[0] == pytest.approx(1 + 0.01 * 1.9 / (0.19 + 1e-8), abs=1e-15)


def test_adagrad_weight_decay_and_maximize_two_steps():
    p, g, s = arr(1.0), arr(3.0), arr(0.0)
    kw = dict(lr=0.1, lr_decay=0.0, weight_decay=0.5, eps=1e-10, maximize=True)
    ref.adagrad_step([p], [g], [s], step=1, **kw)
    # g' = -3 + 0.5 * 1 = -2.5, s = 6.25, p = 1 + 0.1 * 2.5 / 2.5
    assert s[0] == 6.25
    p1 = 1 + 0.1 * 2.5 / (2.5 + 1e-10)
    assert p[0] == pytest.approx(p1, abs=1e-15)
    ref.adagrad_step([p], [g], [s], step=2, **kw)
    g2 = -3 + 0.5 * p1                                   # -2.45 (p1 = 1.1)
    assert s[0] == pytest.approx(6.25 + g2 * g2, abs=1e-14)
    assert p[0] == pytest.approx(p1 - 0.1 * g2 / (math.sqrt(6.25 + g2 * g2) + 1e-10), abs=1e-14)


def test_adadelta_weight_decay_and_maximize_two_steps():
    p, g, v, u = arr(1.0), arr(1.0), arr(0.0), arr(0.0)
    kw = dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.1, maximize=True)
    ref.adadelta_step([p], [g], [v], [u], **kw)
    # g' = -1 + 0.1 = -0.9; v = 0.1 * 0.81; d = sqrt(0 + eps) / sqrt(v + eps) g'; u = 0.1 d^2
    d1 = math.sqrt(1e-6) / math.sqrt(0.081 + 1e-6) * -0.9
    assert v[0] == pytest.approx(0.081, abs=1e-16)
    assert u[0] == pytest.approx(0.1 * d1 * d1, rel=1e-14)
    assert p[0] == pytest.approx(1 - d1, abs=1e-15)
    ref.adadelta_step([p], [g], [v], [u], **kw)
    g2 = -1 + 0.1 * (1 - d1)
    v2 = 0.9 * 0.081 + 0.1 * g2 * g2
    d2 = math.sqrt(0.1 * d1 * d1 + 1e-6) / math.sqrt(v2 + 1e-6) * g2
    assert v[0] == pytest.approx(v2, rel=1e-14)
    assert u[0] == pytest.approx(0.9 * 0.1 * d1 * d1 + 0.1 * d2 * d2, rel=1e-13)
    assert p[0] == pytest.approx(1 - d1 - d2, abs=1e-14)
