"""Every implementation of every optimizer step held to the reference tier bit for bit, in
one process: NumPy (the oracle, backend/fused/optim/reference.py), numba, and the CUDA
kernel (on the emulated device here, on a GPU where there is one: marker ``cuda``), for every
flag of every optimizer, on groups of mixed sizes, on the numba tier's serial path (small
groups) and its parallel one (from PARALLEL_MIN elements in total). Then what is particular to
the numba tier: its partition into parts, threads, the cached pointer table; and the call-time
choice of the tier."""
import itertools
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import gradlab as gl
from gradlab.backend import cpu_backend, cpu_threads, fused, get_backend
from gradlab.backend.fused import optim as fused_optim
from tests.backend.fused.numba_tier import numba_tier

numba_cpu = numba_tier("optim")
from gradlab.backend.fused.optim import numba_table, reference  # noqa: E402

PARALLEL_MIN = cpu_threads.PARALLEL_MIN
# Groups: size-0 and size-1 tensors first, inside and last; one small group (serial on the
# numba tier) and larger ones whose parts start and end inside tensors (parallel).
GROUPS = {
    "small": [0, 1, 7, 0, 300, 1, 0],
    "many": [0, 1] + [1000 + 37 * k for k in range(60)] + [1, 0],
    "large": [1, 0, PARALLEL_MIN + 5, 3, 0, 2 * PARALLEL_MIN - 1, 1],
}
N_STATES = {"adam_step": 3, "sgd_step": 1, "rmsprop_step": 3, "adagrad_step": 1,
            "adadelta_step": 2, "adamax_step": 2, "nadam_step": 2, "radam_step": 2}


def _off(op, kwargs):
    """Which state lists are off (passed as None) for these options."""
    return {"sgd_step": [not kwargs.get("momentum")],
            "rmsprop_step": [False, not kwargs.get("momentum"), not kwargs.get("centered")],
            "adam_step": [False, False, not kwargs.get("amsgrad")],
            "adagrad_step": [False]}.get(op, [False] * N_STATES[op])


def _all_flags(op):
    """Every combination of an optimizer's options (and weight decay on and off)."""
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
    elif op == "adadelta_step":
        for wd, mx in itertools.product((0.0, 0.01), (False, True)):
            yield dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=wd, maximize=mx)
    elif op == "adamax_step":
        for step, wd, mx in itertools.product((1, 5), (0.0, 0.1), (False, True)):
            yield dict(step=step, lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=wd,
                       maximize=mx)
    elif op == "nadam_step":
        for step, wd, dec, mx in itertools.product((1, 5), (0.0, 0.1), (False, True),
                                                   (False, True)):
            yield dict(step=step, lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=wd,
                       decoupled_weight_decay=dec, momentum_decay=4e-3,
                       mu_product=1.0 if step == 1 else 0.3, maximize=mx)
    else:
        # beta2 0.999 is rectified from step 6 on: step 3 takes the momentum-only branch
        for step, wd, dec, mx in itertools.product((3, 9), (0.0, 0.1), (False, True),
                                                   (False, True)):
            yield dict(step=step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=wd,
                       decoupled_weight_decay=dec, maximize=mx)


def _state(rng, dtype, n_states, kwargs, sizes):
    params = [rng.standard_normal(n).astype(dtype) for n in sizes]
    grads = [rng.standard_normal(n).astype(dtype) for n in sizes]
    states = [[np.abs(rng.standard_normal(n)).astype(dtype) for n in sizes]
              for _ in range(n_states)]
    if kwargs.get("centered") and n_states == 3:  # keep v - a^2 > 0
        states[0] = [s + 1 for s in states[0]]
        states[2] = [s * 0.1 for s in states[2]]
    return params, grads, states


def _run_tier(tier, impl, op, params, grads, states, off, kw):
    """One step of ``impl`` on copies (device copies for the cuda tier); host results."""
    be = get_backend("cuda") if tier == "cuda" else cpu_backend()
    p = [be.asarray(a.copy()) for a in params]
    g = [be.asarray(a) for a in grads]
    s = [None if is_off else [be.asarray(a.copy()) for a in st] for st, is_off in zip(states, off)]
    impl(be, p, g, *s, **kw)
    host = lambda arrays: None if arrays is None else [be.to_numpy(a) for a in arrays]  # noqa
    return host(p), [host(st) for st in s]


# The tiers held to the reference; the CUDA one is marked, so that the CUDA half of the suite
# (and make gpu-check on a GPU, with the real kernel) runs it.
TIERS = ["numba", pytest.param("cuda", marks=pytest.mark.cuda)]


def _reference_and(op, tier):
    impls = op.implementations()
    if tier not in impls:
        pytest.skip(f"no {tier} tier in this process"
                    + (f": {gl.cuda.unavailable_reason()}" if tier == "cuda" else ""))
    return impls["numpy"], impls[tier]


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("group", sorted(GROUPS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", sorted(N_STATES))
def test_every_tier_is_bitwise_the_reference(op, dtype, group, tier):
    sizes = GROUPS[group]
    rng = np.random.default_rng(0)
    oracle, impl = _reference_and(fused_optim.OPS[op], tier)
    flags = list(_all_flags(op))
    if tier == "cuda" and group == "large":  # the emulated kernel is slow: a few flag sets
        flags = flags[::max(1, len(flags) // 4)]
    for kw in flags:
        params, grads, states = _state(rng, dtype, N_STATES[op], kw, sizes)
        off = _off(op, kw)
        want_p, want_s = _run_tier("numpy", oracle, op, params, grads, states, off, kw)
        assert any(not np.array_equal(a, b) for a, b in zip(params, want_p) if a.size)
        got_p, got_s = _run_tier(tier, impl, op, params, grads, states, off, kw)
        for i, (a, b) in enumerate(zip(got_p, want_p)):
            np.testing.assert_array_equal(a, b, err_msg=f"{tier} {op} {kw} params[{i}]")
        for k, (st_got, st_want) in enumerate(zip(got_s, want_s)):
            for i, (a, b) in enumerate(zip(st_got or [], st_want or [])):
                np.testing.assert_array_equal(a, b, err_msg=f"{tier} {op} {kw} state{k}[{i}]")


@pytest.mark.cuda
@pytest.mark.skipif(not gl.cuda.is_available(), reason="no CUDA device (real or emulated)")
def test_the_cuda_tier_is_among_the_implementations():
    assert set(fused_optim.adam_step.implementations()) == {"numpy", "numba", "cuda"}


# -- the numba tier: parts and threads -----------------------------------------------------------
def _adam_kw():
    return dict(step=2, lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1,
                decoupled_weight_decay=False, amsgrad=True, maximize=False)


def _copies(params, states):
    return [a.copy() for a in params], [[a.copy() for a in st] for st in states]


@pytest.mark.parametrize("nparts", [1, 2, 3, 7, 64, 5000])
def test_any_partition_gives_the_same_bits(nparts):
    """The parallel loop's parts (here run one by one, any count, more parts than elements
    included) cover every element exactly once, whatever the tensor boundaries."""
    rng = np.random.default_rng(1)
    sizes = [0, 1, 5, 0, 1000, 3, 1, 0]
    kw = _adam_kw()
    params, grads, states = _state(rng, np.float32, 3, kw, sizes)
    expected, exp_states = _copies(params, states)
    reference.adam_step(expected, grads, *exp_states, **kw)
    sc = np.array([kw["lr"] / (1 - 0.9 ** 2), (1 - 0.99 ** 2) ** 0.5, 0.9, 1.0 - 0.9, 0.99,
                   1.0 - 0.99, 1e-8, 0.1, 1.0, 1.0], dtype=np.float32)
    for run in ("one by one", "on threads"):
        p, s = _copies(params, states)
        ptrs, offsets, _ = numba_table.group_table("adam_step", p, grads, tuple(s))
        if run == "one by one":
            for k in range(nparts):
                numba_cpu._part(k, nparts, ptrs, offsets, sc, numba_cpu._ADAM, True, False)
        else:
            cpu_threads.run_parts(numba_cpu._part, nparts, ptrs, offsets, sc, numba_cpu._ADAM,
                                  True, False)
        for a, b in zip(p + sum(s, []), expected + sum(exp_states, [])):
            np.testing.assert_array_equal(a, b, err_msg=run)


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
            p, s = _copies(params, states)
            numba_cpu.rmsprop_step(p, grads, *s, **kw)
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
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GRADLAB_NO_JIT")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout.split()
    assert out == ["None", "False"], out


def test_two_threads_step_two_groups_at_once():
    errors = []
    kw = dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.01, maximize=True)

    def work(seed):
        try:
            rng = np.random.default_rng(seed)
            for _ in range(3):
                params, grads, states = _state(rng, np.float32, 2, kw, GROUPS["many"])
                want, want_s = _copies(params, states)
                reference.adadelta_step(want, grads, *want_s, **kw)
                numba_cpu.adadelta_step(params, grads, *states, **kw)
                for a, b in zip(params + sum(states, []), want + sum(want_s, [])):
                    np.testing.assert_array_equal(a, b)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in (6, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors


# -- the numba tier: the pointer table -----------------------------------------------------------
def test_table_rows_are_the_arrays_data_pointers():
    rng = np.random.default_rng(3)
    shapes = [(0,), (3, 4), (1,), (2, 0), (), (2, 1, 3)]
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [np.ones_like(a) for a in params]
    states = ([np.zeros_like(a) for a in params], None)
    for _ in range(2):  # built, then found in the cache with the grads read anew
        ptrs, offsets, dtype = numba_table.group_table("adam_step", params, grads, states)
        assert list(offsets) == [0, 0, 12, 13, 13, 14, 20] and dtype is np.float32
        assert list(ptrs[0]) == [a.ctypes.data for a in params]
        assert list(ptrs[1]) == [a.ctypes.data for a in grads]
        assert list(ptrs[2]) == [a.ctypes.data for a in states[0]]
        assert list(ptrs[3]) == list(ptrs[0])  # an option that is off: p's row
        grads = [np.full_like(a, 2) for a in params]  # new gradients each step, as in training


def test_table_is_cached_per_group_and_forgotten_with_its_arrays():
    params = [np.ones(3), np.ones((2, 2))]
    sums = [np.zeros(3), np.zeros((2, 2))]
    kw = dict(step=1, lr=0.1, lr_decay=0.0, weight_decay=0.0, eps=1e-10, maximize=False)
    numba_table._tables.clear()
    numba_cpu.adagrad_step(params, [np.ones(3), np.ones((2, 2))], sums, **kw)
    (first,) = numba_table._tables.values()
    numba_cpu.adagrad_step(params, [np.ones(3), np.ones((2, 2))], sums, **kw)
    assert list(numba_table._tables.values()) == [first]
    sums[1] = np.zeros((2, 2))                 # a new state array (load_state_dict): rebuilt
    numba_cpu.adagrad_step(params, [np.ones(3), np.ones((2, 2))], sums, **kw)
    (second,) = numba_table._tables.values()
    assert second is not first and second.ptrs[2, 1] == sums[1].ctypes.data
    np.testing.assert_allclose(sums[1], 1.0)
    del params, sums                           # weak references: the entry goes with its arrays
    assert not numba_table._tables


def test_table_entry_forgotten_during_interpreter_exit(monkeypatch):
    # At exit the module's globals can be None before the last arrays die; their callback
    # must still find the table dict (it printed "Exception ignored ... 'NoneType'").
    params, sums = [np.ones(3)], [np.zeros(3)]
    numba_table._tables.clear()
    numba_cpu.adagrad_step(params, [np.ones(3)], sums, step=1, lr=0.1, lr_decay=0.0,
                           weight_decay=0.0, eps=1e-10, maximize=False)
    assert len(numba_table._tables) == 1
    tables = numba_table._tables
    monkeypatch.setattr(numba_table, "_tables", None)
    unraisable = []
    monkeypatch.setattr("sys.unraisablehook", unraisable.append)
    del params, sums
    assert unraisable == [] and tables == {}


class _Sub(np.ndarray):
    pass


@pytest.mark.parametrize("kind", ["subclass", "dtype_with_metadata"])
def test_unusual_but_valid_arrays_step_as_the_reference(kind):
    rng = np.random.default_rng(4)
    dt = np.dtype(np.float32, metadata={"note": 1}) if kind != "subclass" else np.float32
    params = [rng.standard_normal(n).astype(dt) for n in (5, 0, 70000)]
    grads = [rng.standard_normal(a.size).astype(np.float32) for a in params]
    if kind == "subclass":
        params = [a.view(_Sub) for a in params]
        grads = [a.view(_Sub) for a in grads]
    kw = dict(step=1, lr=0.1, lr_decay=0.0, weight_decay=0.0, eps=1e-10, maximize=False)
    expected = [np.asarray(a).copy() for a in params]
    reference.adagrad_step(expected, [np.asarray(g) for g in grads],
                           [np.zeros(p.size, np.float32) for p in expected], **kw)
    for _ in range(2):  # the second call finds the table and reads the grads anew
        got = [a.copy() for a in params]
        numba_cpu.adagrad_step(got, grads, [np.zeros(a.size, np.float32) for a in params], **kw)
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(np.asarray(a), b)


def _adagrad(params, grads, sums):
    numba_cpu.adagrad_step(params, grads, sums, step=1, lr=0.1, lr_decay=0.0, weight_decay=0.0,
                           eps=1e-10, maximize=False)


@pytest.mark.parametrize("cached", [False, True])
def test_bad_groups_raise_the_reference_errors(cached):
    """The same errors whether the group's table is new or cached (then only the grads are
    read anew, and a bad one sends the call to the full check)."""
    ok = [np.ones(3, np.float32), np.ones((2, 2), np.float32)]
    one = [np.ones(3, np.float32), np.ones((2, 2), np.float32)]
    params = [a.copy() for a in ok]
    sums = [a.copy() for a in one]
    if cached:
        _adagrad(params, one, sums)
    with pytest.raises(ValueError, match="not contiguous"):  # grads too: the API takes none
        _adagrad(params, [one[0], np.ones((2, 2), np.float32).T], sums)
    with pytest.raises(ValueError, match=r"grads\[1\] has shape \(4,\)"):
        _adagrad(params, [one[0], np.ones(4, np.float32)], sums)
    with pytest.raises(ValueError, match="2 params but 1 grads"):
        _adagrad(params, one[:1], sums)
    with pytest.raises(TypeError, match=r"grads\[0\] has dtype float64"):
        _adagrad(params, [np.ones(3), one[1]], sums)
    with pytest.raises(TypeError, match=r"grads\[0\] is a list"):
        _adagrad(params, [[1.0, 2.0, 3.0], one[1]], sums)
    with pytest.raises(TypeError, match=r"grads\[0\] has dtype >f4"):
        _adagrad(params, [np.ones(3, ">f4"), one[1]], sums)
    with pytest.raises(TypeError, match=r"state0\[0\] has dtype float64"):
        _adagrad([a.copy() for a in ok], one, [np.ones(3), one[1]])
    with pytest.raises(TypeError, match="float32 or float64"):
        _adagrad([a.astype(">f4") for a in ok], one, one)
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
    expected = [w.copy()]
    reference.adam_step(expected, [np.ascontiguousarray(g)], [np.zeros_like(w)],
                        [np.zeros_like(w)], None, step=1, lr=0.1, beta1=0.9, beta2=0.999,
                        eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False, amsgrad=False,
                        maximize=False)
    np.testing.assert_array_equal(p.detach().numpy(), expected[0])


# -- the call-time choice ------------------------------------------------------------------------
def test_the_tier_is_chosen_at_each_call(monkeypatch):
    be = cpu_backend()
    p, g = [np.ones(3, np.float32)], [np.ones(3, np.float32)]
    kw = dict(lr=0.5, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0,
              maximize=False, first_step=True)
    calls = []
    for tier in ("numpy", "numba"):
        fn = fused_optim.sgd_step.tier_function(tier)
        monkeypatch.setitem(fused_optim.sgd_step._fns, tier,
                            lambda *a, _fn=fn, _t=tier, **k: (calls.append(_t), _fn(*a, **k)))
    monkeypatch.delenv("GRADLAB_NO_JIT", raising=False)
    be.sgd_step(p, g, None, **kw)
    monkeypatch.setenv("GRADLAB_NO_JIT", "1")
    assert not fused.AVAILABLE and fused.UNAVAILABLE_REASON == "GRADLAB_NO_JIT is set"
    be.sgd_step(p, g, None, **kw)
    monkeypatch.delenv("GRADLAB_NO_JIT")
    be.sgd_step(p, g, None, **kw)
    assert calls == ["numba", "numpy", "numba"]
    assert p[0].tolist() == [-0.5] * 3
    assert fused_optim.sgd_step.tier_for(get_backend("cuda") if gl.cuda.is_available() else be,
                                         p, g, None, **kw) in ("cuda", "numba")


def test_no_jit_env_from_the_start_never_imports_numba():
    code = ("import sys, numpy as np, gradlab as gl\n"
            "from gradlab.backend import fused\n"
            "p = gl.nn.Parameter(gl.ones(3)); p.grad = gl.ones(3)\n"
            "gl.optim.SGD([p], lr=0.5).step()\n"
            "assert p.detach().numpy().tolist() == [0.5] * 3\n"
            "assert not fused.AVAILABLE and 'numba' not in sys.modules\n"
            "print('fallback ok')\n")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, GRADLAB_NO_JIT="1"),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "fallback ok" in out.stdout


def test_a_missing_state_list_is_refused_not_read_from_the_params():
    p = [np.ones(5, np.float32)]
    with pytest.raises(TypeError, match="adadelta_step takes the state lists square_avgs, "
                                        "acc_deltas; got 1 lists"):
        numba_cpu.adadelta_step(p, [np.ones(5, np.float32)], [np.zeros(5, np.float32)],
                                lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False)
    assert (p[0] == 1).all()
