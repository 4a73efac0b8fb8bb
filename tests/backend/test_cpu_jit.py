"""The numba optimizer steps (used on the CPU when numba is installed): against the NumPy
references (to rounding), and bit for bit against the kernels' per-element formulas written
out in NumPy, for every flag of every optimizer, on groups of mixed sizes, on the serial
path (small groups) and the parallel one (from PARALLEL_MIN elements in total)."""
import itertools
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import gradlab as gl
from gradlab.backend import cpu_jit, cpu_threads, reference

pytestmark = pytest.mark.skipif(not cpu_jit.AVAILABLE, reason="numba is not installed")

SIZES = [1, 7, 0, 33, cpu_jit.PARALLEL_MIN + 5]
# Groups for the multi-tensor path: size-0 and size-1 tensors first, inside and last; one
# small group (serial) and larger ones whose parts start and end inside tensors (parallel).
GROUPS = {
    "small": [0, 1, 7, 0, 300, 1, 0],
    "many": [0, 1] + [1000 + 37 * k for k in range(60)] + [1, 0],
    "large": [1, 0, cpu_jit.PARALLEL_MIN + 5, 3, 0, 2 * cpu_jit.PARALLEL_MIN - 1, 1],
}

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


def _off(op, kwargs):
    """Which state lists are off (passed as None) for these options."""
    return {"sgd_step": [not kwargs.get("momentum")],
            "rmsprop_step": [False, not kwargs.get("momentum"), not kwargs.get("centered")],
            "adam_step": [False, False, not kwargs.get("amsgrad")],
            "adagrad_step": [False], "adadelta_step": [False, False]}[op]


def _state(rng, dtype, n_states, kwargs, sizes=SIZES):
    params = [rng.standard_normal(n).astype(dtype) for n in sizes]
    grads = [rng.standard_normal(n).astype(dtype) for n in sizes]
    states = [[np.abs(rng.standard_normal(n)).astype(dtype) for n in sizes]
              for _ in range(n_states)]
    if kwargs.get("centered") and n_states == 3:  # keep v - a^2 > 0
        states[0] = [s + 1 for s in states[0]]
        states[2] = [s * 0.1 for s in states[2]]
    return params, grads, states


def _copies(params, states, off):
    return ([a.copy() for a in params],
            [None if is_off else [a.copy() for a in st] for st, is_off in zip(states, off)])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", sorted(CASES))
def test_jit_matches_reference(case, dtype):
    op, n_states, kwargs = CASES[case]
    rng = np.random.default_rng(0)
    params, grads, states = _state(rng, dtype, n_states, kwargs)
    results = {}
    for impl in (reference, cpu_jit):
        p, s = _copies(params, states, _off(op, kwargs))
        getattr(impl, op)(p, grads, *s, **kwargs)
        results[impl.__name__] = (p, s)
    (p_ref, s_ref), (p_jit, s_jit) = results.values()
    # float32: the references round some intermediate results differently (e.g. they scale
    # sqrt(v) / sqrt(bc2) separately); both are float32 arithmetic
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


# -- bit for bit: the per-element formulas ------------------------------------------------------
def _formulas(op, dtype, p, g, states, kw):
    """One step written as the kernels' per-element formulas, in their order, on whole arrays
    (in place). Every scalar is rounded to ``dtype`` first, complements (1 - beta, ...) are
    computed in Python floats, as the entry points do. NumPy's elementwise + - * / sqrt are
    correctly rounded, so a kernel that follows the formulas agrees to the last bit."""
    f = dtype
    sign = f(-1.0 if kw["maximize"] else 1.0)
    if op == "adam_step":
        m, v, vmax = states
        b1, b2, step = kw["beta1"], kw["beta2"], kw["step"]
        dec = kw["decoupled_weight_decay"]
        wd = f(0.0 if dec else kw["weight_decay"])
        decay = f(1.0 - kw["lr"] * kw["weight_decay"] if dec else 1.0)
        step_size, bc2 = f(kw["lr"] / (1 - b1 ** step)), f((1 - b2 ** step) ** 0.5)
        gi = sign * g + wd * p
        mi = f(b1) * m + f(1.0 - b1) * gi
        vi = f(b2) * v + f(1.0 - b2) * gi * gi
        m[...] = mi
        v[...] = vi
        if kw["amsgrad"]:
            vi = np.maximum(vmax, vi)
            vmax[...] = vi
        p[...] = p * decay - step_size * mi / (np.sqrt(vi) / bc2 + f(kw["eps"]))
    elif op == "sgd_step":
        (b,) = states
        lr, mom, wd = f(kw["lr"]), f(kw["momentum"]), f(kw["weight_decay"])
        gi = sign * g + wd * p
        if kw["momentum"] == 0:
            p[...] = p - lr * gi
            return
        if kw["first_step"]:
            bi = gi
        else:
            bi = mom * b + f(1.0 - kw["dampening"]) * gi
        b[...] = bi
        if kw["nesterov"]:
            p[...] = p - lr * (gi + mom * bi)
        else:
            p[...] = p - lr * bi
    elif op == "rmsprop_step":
        v, b, a = states
        alpha, c_alpha = f(kw["alpha"]), f(1.0 - kw["alpha"])
        gi = sign * g + f(kw["weight_decay"]) * p
        vi = alpha * v + c_alpha * gi * gi
        v[...] = vi
        if kw["centered"]:
            ai = alpha * a + c_alpha * gi
            a[...] = ai
            avg = np.sqrt(vi - ai * ai) + f(kw["eps"])
        else:
            avg = np.sqrt(vi) + f(kw["eps"])
        if kw["momentum"] != 0:
            bi = f(kw["momentum"]) * b + gi / avg
            b[...] = bi
            p[...] = p - f(kw["lr"]) * bi
        else:
            p[...] = p - f(kw["lr"]) * gi / avg
    elif op == "adagrad_step":
        (s,) = states
        clr = f(kw["lr"] / (1 + (kw["step"] - 1) * kw["lr_decay"]))
        gi = sign * g + f(kw["weight_decay"]) * p
        si = s + gi * gi
        s[...] = si
        p[...] = p - clr * gi / (np.sqrt(si) + f(kw["eps"]))
    elif op == "adadelta_step":
        v, u = states
        rho, c_rho, eps = f(kw["rho"]), f(1.0 - kw["rho"]), f(kw["eps"])
        gi = sign * g + f(kw["weight_decay"]) * p
        vi = rho * v + c_rho * gi * gi
        v[...] = vi
        d = np.sqrt(u + eps) / np.sqrt(vi + eps) * gi
        u[...] = rho * u + c_rho * d * d
        p[...] = p - f(kw["lr"]) * d


def _all_flags(op):
    """Every combination of an optimizer's options (and both signs of weight decay use)."""
    if op == "adam_step":
        for step, wd, dec, ams, mx in itertools.product((1, 5), (0.0, 0.1), (False, True),
                                                        (False, True), (False, True)):
            yield dict(step=step, lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=wd,
                       decoupled_weight_decay=dec, amsgrad=ams, maximize=mx)
    elif op == "sgd_step":
        for mom, damp, nest, wd, mx, first in itertools.product(
                (0.0, 0.9), (0.0, 0.3), (False, True), (0.0, 0.01), (False, True),
                (False, True)):
            if not (nest and (mom == 0 or damp)):
                yield dict(lr=0.1, momentum=mom, dampening=damp, nesterov=nest,
                           weight_decay=wd, maximize=mx, first_step=first)
    elif op == "rmsprop_step":
        for mom, cen, wd, mx in itertools.product((0.0, 0.5), (False, True), (0.0, 0.1),
                                                  (False, True)):
            yield dict(lr=0.01, alpha=0.9, eps=1e-8, weight_decay=wd, momentum=mom,
                       centered=cen, maximize=mx)
    elif op == "adagrad_step":
        for wd, mx, ld in itertools.product((0.0, 0.02), (False, True), (0.0, 0.01)):
            yield dict(step=4, lr=0.1, lr_decay=ld, weight_decay=wd, eps=1e-10, maximize=mx)
    else:
        for wd, mx in itertools.product((0.0, 0.01), (False, True)):
            yield dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=wd, maximize=mx)


N_STATES = {"adam_step": 3, "sgd_step": 1, "rmsprop_step": 3, "adagrad_step": 1,
            "adadelta_step": 2}


def _check_bitwise(op, dtype, sizes, seed=0):
    rng = np.random.default_rng(seed)
    for kw in _all_flags(op):
        params, grads, states = _state(rng, dtype, N_STATES[op], kw, sizes)
        off = _off(op, kw)
        p_jit, s_jit = _copies(params, states, off)
        getattr(cpu_jit, op)(p_jit, grads, *s_jit, **kw)
        for i in range(len(sizes)):
            p = params[i].copy()
            st = [s[i].copy() for s in states]
            _formulas(op, dtype, p, grads[i], st, kw)
            np.testing.assert_array_equal(p_jit[i], p, err_msg=f"{op} {kw} params[{i}]")
            for k, (s, is_off) in enumerate(zip(s_jit, off)):
                if not is_off:
                    np.testing.assert_array_equal(s[i], st[k],
                                                  err_msg=f"{op} {kw} state{k}[{i}]")
        assert any(not np.array_equal(a, b) for a, b in zip(params, p_jit) if a.size)


@pytest.mark.parametrize("group", sorted(GROUPS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", sorted(N_STATES))
def test_every_flag_bitwise_equal_to_the_formulas(op, dtype, group):
    _check_bitwise(op, dtype, GROUPS[group])


@pytest.mark.parametrize("nparts", [1, 2, 3, 7, 64, 5000])
def test_any_partition_gives_the_same_bits(nparts):
    """The parallel loop's parts (here run one by one, any count, more parts than elements
    included) cover every element exactly once, whatever the tensor boundaries."""
    rng = np.random.default_rng(1)
    sizes = [0, 1, 5, 0, 1000, 3, 1, 0]
    kw = dict(step=2, lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1,
              decoupled_weight_decay=False, amsgrad=True, maximize=False)
    params, grads, states = _state(rng, np.float32, 3, kw, sizes)
    expected, exp_states = _copies(params, states, [False] * 3)
    cpu_jit.adam_step(expected, grads, *exp_states, **kw)
    p, s = _copies(params, states, [False] * 3)
    ptrs, offsets, dtype = cpu_jit._table("adam_step", p, grads, tuple(s))
    sc = np.array([kw["lr"] / (1 - 0.9 ** 2), (1 - 0.99 ** 2) ** 0.5, 0.9, 1.0 - 0.9, 0.99,
                   1.0 - 0.99, 1e-8, 0.1, 1.0, 1.0], dtype=dtype)
    part = cpu_jit._KERNELS["adam"]
    for k in range(nparts):
        part(k, nparts, ptrs, offsets, sc, True)
    for a, b in zip(p + sum(s, []), expected + sum(exp_states, [])):
        np.testing.assert_array_equal(a, b)
    p, s = _copies(params, states, [False] * 3)
    ptrs, offsets, _ = cpu_jit._table("adam_step", p, grads, tuple(s))
    # the same parts run concurrently on cpu_threads' threads (any count of parts)
    cpu_threads.run_parts(part, nparts, ptrs, offsets, sc, True)
    for a, b in zip(p + sum(s, []), expected + sum(exp_states, [])):
        np.testing.assert_array_equal(a, b)


def test_one_thread_and_several_threads_agree():
    rng = np.random.default_rng(2)
    kw = dict(lr=0.01, alpha=0.9, eps=1e-8, weight_decay=0.1, momentum=0.5, centered=True,
              maximize=False)
    params, grads, states = _state(rng, np.float32, 3, kw, GROUPS["large"])
    out = []
    threads = cpu_threads.get_num_threads()
    for n in (1, 2, 3):
        cpu_threads.set_num_threads(n)
        try:
            p, s = _copies(params, states, [False] * 3)
            cpu_jit.rmsprop_step(p, grads, *s, **kw)
        finally:
            cpu_threads.set_num_threads(threads)
        out.append(p + sum(s, []))
    for other in out[1:]:
        for a, b in zip(out[0], other):
            np.testing.assert_array_equal(a, b)


def test_no_openmp_side_effects():
    """gradlab leaves the process's OpenMP settings alone (it used to set OMP_WAIT_POLICY,
    which slowed a torch imported afterwards) and starts no OpenMP pool of its own."""
    code = ("import os, gradlab as gl, numpy as np\n"
            "opt = gl.optim.Adam([gl.nn.Parameter(gl.zeros(1 << 17))])\n"
            "opt.param_groups[0]['params'][0].grad = gl.ones(1 << 17)\n"
            "opt.step()\n"
            "print(os.environ.get('OMP_WAIT_POLICY'))\n"
            "import numba.np.ufunc.parallel as par\n"
            "print(par._is_initialized)\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout.split()
    assert out == ["None", "False"], out


# -- the pointer table --------------------------------------------------------------------------
def test_table_read_from_the_array_structs_matches_ctypes():
    if sys.implementation.name == "cpython":
        assert cpu_jit._LAYOUT is not None, "the ndarray layout was not recognised"
    rng = np.random.default_rng(3)
    shapes = [(0,), (3, 4), (1,), (2, 0), (), (2, 1, 3)]
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [np.ones_like(a) for a in params]
    states = ([np.zeros_like(a) for a in params], None)
    fast = cpu_jit._table("adam_step", params, grads, states)
    ptrs, offsets = cpu_jit._table_python("adam_step", params, grads, states)
    np.testing.assert_array_equal(fast[0], ptrs)
    np.testing.assert_array_equal(fast[1], offsets)
    assert list(offsets) == [0, 0, 12, 13, 13, 14, 20] and fast[2] is np.float32
    assert list(ptrs[3]) == [a.ctypes.data for a in params]  # an option that is off: p's row


def test_plain_arrays_never_take_the_python_path(monkeypatch):
    def refuse(*args):
        raise AssertionError("the compiled table reader declined plain arrays")
    monkeypatch.setattr(cpu_jit, "_table_python", refuse)
    _check_bitwise("adagrad_step", np.float64, GROUPS["small"])


class _Sub(np.ndarray):
    pass


@pytest.mark.parametrize("kind", ["subclass", "dtype_with_metadata"])
def test_arrays_the_fast_reader_declines_still_step_correctly(kind):
    rng = np.random.default_rng(4)
    dt = np.dtype(np.float32, metadata={"note": 1}) if kind != "subclass" else np.float32
    params = [rng.standard_normal(n).astype(dt) for n in (5, 0, 70000)]
    grads = [rng.standard_normal(a.size).astype(np.float32) for a in params]
    if kind == "subclass":
        params = [a.view(_Sub) for a in params]
    sums = [np.zeros(a.size, np.float32) for a in params]
    kw = dict(step=1, lr=0.1, lr_decay=0.0, weight_decay=0.0, eps=1e-10, maximize=False)
    expected = [np.asarray(a).copy() for a in params]
    for i, p in enumerate(expected):
        _formulas("adagrad_step", np.float32, p, grads[i], [np.zeros(p.size, np.float32)], kw)
    cpu_jit.adagrad_step(params, grads, sums, **kw)
    for a, b in zip(params, expected):
        np.testing.assert_array_equal(np.asarray(a), b)


def _adagrad(params, grads, sums):
    cpu_jit.adagrad_step(params, grads, sums, step=1, lr=0.1, lr_decay=0.0, weight_decay=0.0,
                         eps=1e-10, maximize=False)


def test_bad_groups_raise_the_reference_errors():
    ok = [np.ones(3, np.float32), np.ones((2, 2), np.float32)]
    one = [np.ones(3, np.float32), np.ones((2, 2), np.float32)]
    with pytest.raises(ValueError, match="not contiguous"):  # grads too: the API takes none
        _adagrad([a.copy() for a in ok], [one[0], np.ones((2, 2), np.float32).T], one)
    with pytest.raises(ValueError, match=r"grads\[1\] has shape \(4,\)"):
        _adagrad([a.copy() for a in ok], [one[0], np.ones(4, np.float32)], one)
    with pytest.raises(ValueError, match="2 params but 1 grads"):
        _adagrad([a.copy() for a in ok], one[:1], one)
    with pytest.raises(TypeError, match=r"state0\[0\] has dtype float64"):
        _adagrad([a.copy() for a in ok], one, [np.ones(3), one[1]])
    with pytest.raises(TypeError, match="float32 or float64"):
        _adagrad([a.astype(">f4") for a in ok], one, one)
    with pytest.raises(TypeError, match=r"grads\[0\] is a list"):
        _adagrad([a.copy() for a in ok], [[1.0, 2.0, 3.0], one[1]], one)
    frozen = np.ones(3, np.float32)
    frozen.setflags(write=False)
    with pytest.raises(ValueError, match=r"params\[0\] is read-only"):
        _adagrad([frozen, ok[1].copy()], one, [a.copy() for a in one])
    with pytest.raises(ValueError, match=r"state0\[0\] is read-only"):
        _adagrad([a.copy() for a in ok], one, [frozen, one[1].copy()])
    params = [a.copy() for a in ok]
    _adagrad(params, [frozen, one[1]], [a.copy() for a in one])  # read-only grads are fine
    assert not np.array_equal(params[0], ok[0])


def test_optimizer_with_a_non_contiguous_grad():
    """The backend takes contiguous arrays only; Optimizer hands it a contiguous copy."""
    rng = np.random.default_rng(5)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    g = rng.standard_normal((3, 4)).astype(np.float32).T
    assert not g.flags.c_contiguous
    p = gl.nn.Parameter(gl.tensor(w))
    p.grad = gl.from_numpy(g)
    gl.optim.Adam([p], lr=0.1).step()
    expected = w.copy()
    _formulas("adam_step", np.float32, expected, np.ascontiguousarray(g),
              [np.zeros_like(w), np.zeros_like(w), None],
              dict(step=1, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                   decoupled_weight_decay=False, amsgrad=False, maximize=False))
    np.testing.assert_array_equal(p.detach().numpy(), expected)


def test_two_threads_step_two_groups_at_once():
    errors = []

    def work(seed):
        try:
            for _ in range(3):
                _check_bitwise("adadelta_step", np.float32, GROUPS["many"], seed)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in (6, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors


def test_no_jit_env_falls_back_to_the_reference():
    code = ("import numpy as np\n"
            "from gradlab.backend import cpu_backend, cpu_jit, reference\n"
            "assert not cpu_jit.AVAILABLE\n"
            "bk = cpu_backend()\n"
            "assert bk.adam_step is reference.adam_step\n"
            "assert bk.sgd_step is reference.sgd_step\n"
            "p = [np.ones(3, np.float32)]\n"
            "bk.sgd_step(p, [np.ones(3, np.float32)], None, lr=0.5, momentum=0.0,\n"
            "            dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False,\n"
            "            first_step=True)\n"
            "assert p[0].tolist() == [0.5, 0.5, 0.5]\n"
            "print('fallback ok')\n")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, GRADLAB_NO_JIT="1"),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "fallback ok" in out.stdout
