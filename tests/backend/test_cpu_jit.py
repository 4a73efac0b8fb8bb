"""The numba optimizer steps (used on the CPU when numba is installed) against the NumPy
references, on mixed sizes, below and above the size from which every thread is used."""
import numpy as np
import pytest

from gradlab.backend import cpu_jit, reference

pytestmark = pytest.mark.skipif(not cpu_jit.AVAILABLE, reason="numba is not installed")

SIZES = [1, 7, 0, 33, cpu_jit.PARALLEL_MIN + 5]

CASES = {
    "adam": ("adam_step", 3, dict(step=3, lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-8,
                                  weight_decay=0.1, decoupled_weight_decay=False, amsgrad=False,
                                  maximize=False)),
    "adamw_amsgrad_max": ("adam_step", 3, dict(step=2, lr=1e-2, beta1=0.8, beta2=0.9, eps=1e-6,
                                               weight_decay=0.05, decoupled_weight_decay=True,
                                               amsgrad=True, maximize=True)),
    "sgd_nesterov": ("sgd_step", 1, dict(lr=0.1, momentum=0.9, dampening=0.0, nesterov=True,
                                         weight_decay=0.01, maximize=False, first_step=False)),
    "sgd_first": ("sgd_step", 1, dict(lr=0.1, momentum=0.5, dampening=0.3, nesterov=False,
                                      weight_decay=0.0, maximize=True, first_step=True)),
    "sgd_plain": ("sgd_step", 1, dict(lr=0.1, momentum=0.0, dampening=0.0, nesterov=False,
                                      weight_decay=0.0, maximize=False, first_step=False)),
    "rmsprop_centered_momentum": ("rmsprop_step", 3, dict(lr=0.01, alpha=0.9, eps=1e-8,
                                                          weight_decay=0.1, momentum=0.5,
                                                          centered=True, maximize=False)),
    "rmsprop_plain": ("rmsprop_step", 3, dict(lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0,
                                              momentum=0, centered=False, maximize=False)),
    "adagrad": ("adagrad_step", 1, dict(step=4, lr=0.1, lr_decay=0.01, weight_decay=0.02,
                                        eps=1e-10, maximize=False)),
    "adadelta": ("adadelta_step", 2, dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.01,
                                          maximize=True)),
}


def _state(rng, dtype, n_states, kwargs):
    params = [rng.standard_normal(n).astype(dtype) for n in SIZES]
    grads = [rng.standard_normal(n).astype(dtype) for n in SIZES]
    states = [[np.abs(rng.standard_normal(n)).astype(dtype) for n in SIZES]
              for _ in range(n_states)]
    if kwargs.get("centered") and n_states == 3:  # keep v - a^2 > 0
        states[2] = [s * 0.1 for s in states[2]]
    return params, grads, states


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", sorted(CASES))
def test_jit_matches_reference(case, dtype):
    op, n_states, kwargs = CASES[case]
    rng = np.random.default_rng(0)
    params, grads, states = _state(rng, dtype, n_states, kwargs)
    off = {"sgd_step": [not kwargs.get("momentum")],
           "rmsprop_step": [False, not kwargs.get("momentum"), not kwargs.get("centered")],
           "adam_step": [False, False, not kwargs.get("amsgrad")]}.get(op, [False] * n_states)
    results = {}
    for impl in (reference, cpu_jit):
        p = [a.copy() for a in params]
        s = [None if is_off else [a.copy() for a in st] for st, is_off in zip(states, off)]
        getattr(impl, op)(p, grads, *s, **kwargs)
        results[impl.__name__] = (p, s)
    (p_ref, s_ref), (p_jit, s_jit) = results.values()
    # float32: the kernels compute in float64 registers, the references in float32 arrays
    tol = dict(rtol=1e-4, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    for a, b in zip(p_ref, p_jit):
        np.testing.assert_allclose(b, a, **tol)
    for st_ref, st_jit in zip(s_ref, s_jit):
        for a, b in zip(st_ref or [], st_jit or []):
            np.testing.assert_allclose(b, a, **tol)
    assert any(not np.array_equal(a, b) for a, b in zip(params, p_jit) if a.size)


def test_jit_rejects_what_the_reference_rejects():
    p = [np.zeros(3, np.float32)]
    with pytest.raises(TypeError, match="dtype float64"):
        cpu_jit.adam_step(p, [np.zeros(3)], [np.zeros(3, np.float32)],
                          [np.zeros(3, np.float32)], None, step=1, lr=0.1, beta1=0.9,
                          beta2=0.9, eps=1e-8, weight_decay=0, decoupled_weight_decay=False,
                          amsgrad=False, maximize=False)
