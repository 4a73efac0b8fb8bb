"""The NumPy optimizer steps against values derived by hand from PyTorch's update rules."""
import math

import numpy as np
import pytest

from gradlab.backend.fused.optim import reference as ref


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


def naive_adam(p, g, m, v, step, lr, b1, b2, eps):
    """Elementwise float64 Adam written out plainly, to hold the sliced version to."""
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    p = p - lr / (1 - b1 ** step) * m / (np.sqrt(v) / math.sqrt(1 - b2 ** step) + eps)
    return p, m, v


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_group_of_mixed_sizes_crossing_slices(dtype, rng):
    sizes = [0, 1, 31, 4097, ref._SLICE + 5, 3 * ref._SLICE]
    shapes = [(n,) if n % 2 else (n // 2, 2) if n else (0,) for n in sizes]
    ps = [rng.standard_normal(s).astype(dtype) for s in shapes]
    gs = [rng.standard_normal(s).astype(dtype) for s in shapes]
    ms = [rng.standard_normal(s).astype(dtype) for s in shapes]
    vs = [rng.random(s).astype(dtype) for s in shapes]
    want = [naive_adam(*(a.astype(np.float64) for a in t), 3, 1e-2, 0.9, 0.999, 1e-8)
            for t in zip(ps, gs, ms, vs)]
    ref.adam_step(ps, gs, ms, vs, None, step=3, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8,
                  weight_decay=0.0, decoupled_weight_decay=False, amsgrad=False, maximize=False)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for got, exp in zip(zip(ps, ms, vs), want):
        for a, b in zip(got, exp):
            assert a.dtype == dtype
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
