"""The numba tier of the optimizer steps (the CPU backend's default when numba imports).

reference.py makes a dozen passes over memory per step; these kernels make one (read p, g
and the state once, write them once), which is what PyTorch's fused CPU Adam does. Each
rule's element loop follows reference.py's operation order with the same scalars
(scalars.py, rounded once to the arrays' dtype): the results are reference.py's bit for bit
(tests/backend/fused hold every flag of every optimizer to it). Flags are resolved outside
the element loops (one loop per case) and the sign of ``maximize`` is a multiplier: a branch
inside the loop stops LLVM from vectorizing it. Kernels use numba's "numpy" error model: a
division by zero gives inf/nan as in NumPy (the "python" model's check would block
vectorization). One difference at the edge: with weight_decay 0 these add 0 * p, so a
parameter that is already inf or nan gives a nan gradient term, and a gradient of -0 becomes
+0.

One step of a whole parameter group is ONE numba call per thread. The group's tensors are
laid end to end in a flat index space, which is cut into one contiguous run per thread; each
thread walks the tensors its run covers, so a hundred small tensors share one dispatch and
ten large ones are split exactly as evenly. The threads are cpu_threads' plain Python threads
running these nogil kernels, not numba's OpenMP pool (why: see cpu_threads.py). A group
below PARALLEL_MIN elements runs on the calling thread alone.

The kernel finds the tensors through a table of data pointers, rows p, g, then the
states, one column per tensor: numba_table.py builds it with public interfaces only.
"""
from __future__ import annotations

import numba
import numpy as np

from ... import checks, cpu_threads
from ...cpu_threads import PARALLEL_MIN  # noqa: F401  (tests size their groups with it)
from .. import jit_disabled
from . import numba_table, scalars
from .numba_table import group_table, voidptr

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")
_inline = numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")

# -- element loops: one per rule, reference.py's order -----------------------------------------
# Arrays of options that are off are p (see the pointer table) and are never touched: a loop
# that merely read them would fail LLVM's run-time overlap check and run unvectorized.


@_inline
def _adam_moments(pi, gi, mi, vi, sign, wd, b1, c1, b2, c2):
    g = sign * gi + wd * pi
    return b1 * mi + c1 * g, b2 * vi + c2 * (g * g)


@_inline
def _adam(p, g, m, v, vmax, sc, amsgrad):
    step_size, bc2_sqrt, b1, c1, b2, c2, eps, wd, decay, sign = (
        sc[0], sc[1], sc[2], sc[3], sc[4], sc[5], sc[6], sc[7], sc[8], sc[9])
    if amsgrad:  # two loops: a flag tested inside one would stop its vectorization
        for i in range(p.size):
            mi, vi = _adam_moments(p[i], g[i], m[i], v[i], sign, wd, b1, c1, b2, c2)
            m[i] = mi
            v[i] = vi
            vi = max(vmax[i], vi)
            vmax[i] = vi
            p[i] = p[i] * decay - step_size * (mi / (np.sqrt(vi) / bc2_sqrt + eps))
    else:
        for i in range(p.size):
            mi, vi = _adam_moments(p[i], g[i], m[i], v[i], sign, wd, b1, c1, b2, c2)
            m[i] = mi
            v[i] = vi
            p[i] = p[i] * decay - step_size * (mi / (np.sqrt(vi) / bc2_sqrt + eps))


@_inline
def _sgd(p, g, b, sc, nesterov, first):
    lr, momentum, undamped, wd, sign = sc[0], sc[1], sc[2], sc[3], sc[4]
    if momentum == 0.0:
        for i in range(p.size):
            p[i] -= lr * (sign * g[i] + wd * p[i])
    elif first:
        for i in range(p.size):
            gi = sign * g[i] + wd * p[i]
            b[i] = gi
            p[i] -= lr * (momentum * gi + gi if nesterov else gi)
    elif nesterov:
        for i in range(p.size):
            gi = sign * g[i] + wd * p[i]
            bi = momentum * b[i] + undamped * gi
            b[i] = bi
            p[i] -= lr * (momentum * bi + gi)
    else:
        for i in range(p.size):
            gi = sign * g[i] + wd * p[i]
            bi = momentum * b[i] + undamped * gi
            b[i] = bi
            p[i] -= lr * bi


@_inline
def _rms_square(pi, gi, vi, sign, wd, alpha, c_alpha):
    g = sign * gi + wd * pi
    return g, alpha * vi + c_alpha * (g * g)


@_inline
def _rmsprop(p, g, v, b, a, sc, centered):
    lr, alpha, c_alpha, eps, wd, momentum, sign = sc[0], sc[1], sc[2], sc[3], sc[4], sc[5], sc[6]
    if momentum != 0.0 and centered:
        for i in range(p.size):
            gi, vi = _rms_square(p[i], g[i], v[i], sign, wd, alpha, c_alpha)
            v[i] = vi
            ai = alpha * a[i] + c_alpha * gi
            a[i] = ai
            bi = momentum * b[i] + gi / (np.sqrt(vi - ai * ai) + eps)
            b[i] = bi
            p[i] -= lr * bi
    elif momentum != 0.0:
        for i in range(p.size):
            gi, vi = _rms_square(p[i], g[i], v[i], sign, wd, alpha, c_alpha)
            v[i] = vi
            bi = momentum * b[i] + gi / (np.sqrt(vi) + eps)
            b[i] = bi
            p[i] -= lr * bi
    elif centered:
        for i in range(p.size):
            gi, vi = _rms_square(p[i], g[i], v[i], sign, wd, alpha, c_alpha)
            v[i] = vi
            ai = alpha * a[i] + c_alpha * gi
            a[i] = ai
            p[i] -= lr * (gi / (np.sqrt(vi - ai * ai) + eps))
    else:
        for i in range(p.size):
            gi, vi = _rms_square(p[i], g[i], v[i], sign, wd, alpha, c_alpha)
            v[i] = vi
            p[i] -= lr * (gi / (np.sqrt(vi) + eps))


@_inline
def _adagrad(p, g, s, sc):
    clr, eps, wd, sign = sc[0], sc[1], sc[2], sc[3]
    for i in range(p.size):
        gi = sign * g[i] + wd * p[i]
        si = s[i] + gi * gi
        s[i] = si
        p[i] -= clr * (gi / (np.sqrt(si) + eps))


@_inline
def _adadelta(p, g, v, u, sc):
    lr, rho, c_rho, eps, wd, sign = sc[0], sc[1], sc[2], sc[3], sc[4], sc[5]
    for i in range(p.size):
        gi = sign * g[i] + wd * p[i]
        vi = rho * v[i] + c_rho * (gi * gi)
        v[i] = vi
        d = np.sqrt(u[i] + eps) / np.sqrt(vi + eps) * gi
        u[i] = rho * u[i] + c_rho * (d * d)
        p[i] -= lr * d


@_inline
def _adamax(p, g, m, u, sc):
    step_size, b1, c1, b2, eps, wd, sign = sc[0], sc[1], sc[2], sc[3], sc[4], sc[5], sc[6]
    for i in range(p.size):
        gi = sign * g[i] + wd * p[i]
        mi = b1 * m[i] + c1 * gi
        m[i] = mi
        ui = max(b2 * u[i], abs(gi) + eps)
        u[i] = ui
        p[i] -= step_size * mi / ui


@_inline
def _moments(pi, gi, mi, vi, sign, wd, decay, b1, c1, b2, c2):
    """NAdam's and RAdam's start (reference._adam_moments): (decayed p, g, m, v)."""
    g = sign * gi + wd * pi
    return pi * decay, g, b1 * mi + c1 * g, b2 * vi + (c2 * g) * g


@_inline
def _nadam(p, g, m, v, sc):
    grad_coef, avg_coef, bc2, b1, c1, b2, c2, eps, wd, decay, sign = (
        sc[0], sc[1], sc[2], sc[3], sc[4], sc[5], sc[6], sc[7], sc[8], sc[9], sc[10])
    for i in range(p.size):
        pi, gi, mi, vi = _moments(p[i], g[i], m[i], v[i], sign, wd, decay, b1, c1, b2, c2)
        m[i] = mi
        v[i] = vi
        denom = np.sqrt(vi / bc2) + eps
        p[i] = (pi - grad_coef * gi / denom) - avg_coef * mi / denom


@_inline
def _radam(p, g, m, v, sc):
    step_size, coef, b1, c1, b2, c2, eps, wd, decay, rectified, sign = (
        sc[0], sc[1], sc[2], sc[3], sc[4], sc[5], sc[6], sc[7], sc[8], sc[9], sc[10])
    if rectified != 0.0:
        for i in range(p.size):
            pi, gi, mi, vi = _moments(p[i], g[i], m[i], v[i], sign, wd, decay, b1, c1, b2, c2)
            m[i] = mi
            v[i] = vi
            p[i] = pi - coef * mi / (np.sqrt(vi) + eps)
    else:
        for i in range(p.size):
            pi, gi, mi, vi = _moments(p[i], g[i], m[i], v[i], sign, wd, decay, b1, c1, b2, c2)
            m[i] = mi
            v[i] = vi
            p[i] = pi - step_size * mi


# -- the multi-tensor part ----------------------------------------------------------------------
_ADAM, _SGD, _RMSPROP, _ADAGRAD, _ADADELTA, _ADAMAX, _NADAM, _RADAM = range(8)


@_jit
def _view(ptrs, row, t, lo, n, like):
    """Elements [lo, lo + n) of tensor t's row-th array, of the dtype of array ``like``."""
    return numba.carray(voidptr(ptrs[row, t]), lo + n, like.dtype)[lo:]


@_jit
def _span(offsets, k, nparts):
    """Part k of nparts: flat range [lo, hi) and the last tensor t with offsets[t] <= lo
    (a bisection; numba's np.searchsorted costs a third of a second to compile)."""
    total = offsets[offsets.size - 1]
    lo = k * total // nparts
    hi = (k + 1) * total // nparts
    a, b = 0, offsets.size - 1
    while b - a > 1:
        mid = (a + b) // 2
        if offsets[mid] <= lo:
            a = mid
        else:
            b = mid
    return lo, hi, a


@_jit
def _part(k, nparts, ptrs, offsets, sc, rule, flag0, flag1):
    """Part k of nparts of one step of ``rule`` over the group's flat index space: the pieces
    of the tensors it covers. ``sc`` holds the rule's float scalars in the arrays' dtype,
    ``flag0``/``flag1`` its booleans. Tensors of one group must not overlap in memory (the
    parts run concurrently)."""
    lo, hi, t = _span(offsets, k, nparts)
    while lo < hi:
        a = lo - offsets[t]
        n = min(hi, offsets[t + 1]) - lo
        if n > 0:
            p = _view(ptrs, 0, t, a, n, sc)
            g = _view(ptrs, 1, t, a, n, sc)
            s0 = _view(ptrs, 2, t, a, n, sc)
            s1 = _view(ptrs, 3, t, a, n, sc)
            s2 = _view(ptrs, 4, t, a, n, sc)
            if rule == _ADAM:
                _adam(p, g, s0, s1, s2, sc, flag0)
            elif rule == _SGD:
                _sgd(p, g, s0, sc, flag0, flag1)
            elif rule == _RMSPROP:
                _rmsprop(p, g, s0, s1, s2, sc, flag0)
            elif rule == _ADAGRAD:
                _adagrad(p, g, s0, sc)
            elif rule == _ADADELTA:
                _adadelta(p, g, s0, s1, sc)
            elif rule == _ADAMAX:
                _adamax(p, g, s0, s1, sc)
            elif rule == _NADAM:
                _nadam(p, g, s0, s1, sc)
            else:
                _radam(p, g, s0, s1, sc)
            lo += n
        t += 1


def _run(op, rule, table, scalars_, flag0=False, flag1=False):
    """One step of ``rule`` over a whole group, cut into one part per thread from
    PARALLEL_MIN elements in total (cpu_threads), else one part on the calling thread.
    ``scalars_`` are converted to the arrays' dtype (float32 updates stay float32)."""
    if table is None:
        return
    ptrs, offsets, dtype = table
    total = int(offsets[-1])
    if total == 0:
        return
    sc = np.array(scalars_, dtype=dtype)
    cpu_threads.run_parts(_part, cpu_threads.parts_for(total), ptrs, offsets, sc, rule,
                          bool(flag0), bool(flag1))


# -- each rule's call: its state rows, its scalars in kernel order (the sign of maximize
# last), its loop-choosing flags. Each rule's scalars come from ``options``, the dict of the
# call's keyword arguments (one dict from the optimizer to here, unpacked once). ----------------
def _sign(maximize):
    return -1.0 if maximize else 1.0


def _signed(scalars_of):
    """The rule's scalars from ``options``: scalars_of(**options but maximize), then the
    sign of maximize."""
    def of(options):
        kw = dict(options)
        maximize = kw.pop("maximize")
        return (*scalars_of(**kw), _sign(maximize))
    return of


def _adam_scalars(o):
    # (Adam's, every step of the most used optimizer: positional, no NamedTuple)
    return (*scalars.adam_scalar_values(o["step"], o["lr"], o["beta1"], o["beta2"], o["eps"],
                                        o["weight_decay"], o["decoupled_weight_decay"]),
            _sign(o["maximize"]))


_sgd_scalars = _signed(scalars.sgd_scalars)
_rmsprop_scalars = _signed(scalars.rmsprop_scalars)
_adagrad_scalars = _signed(scalars.adagrad_scalars)
_adadelta_scalars = _signed(scalars.adadelta_scalars)
_adamax_scalars = _signed(scalars.adamax_scalars)
_nadam_scalars = _signed(scalars.nadam_scalars)
_radam_scalars = _signed(scalars.radam_scalars)


# op -> (rule, its scalars, the names of its flag0 and flag1 arguments, the per-call options
# that need a state list: (option, position in the states, the list's name))
_RULES = {
    "adam_step": (_ADAM, _adam_scalars, ("amsgrad", None), ()),
    "sgd_step": (_SGD, _sgd_scalars, ("nesterov", "first_step"),
                 (("momentum", 0, "momentum_buffers"),)),
    "rmsprop_step": (_RMSPROP, _rmsprop_scalars, ("centered", None),
                     (("momentum", 1, "momentum_buffers"),)),
    "adagrad_step": (_ADAGRAD, _adagrad_scalars, (None, None), ()),
    "adadelta_step": (_ADADELTA, _adadelta_scalars, (None, None), ()),
    "adamax_step": (_ADAMAX, _adamax_scalars, (None, None), ()),
    "nadam_step": (_NADAM, _nadam_scalars, (None, None), ()),
    "radam_step": (_RADAM, _radam_scalars, (None, None), ()),
}


def adam_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, *, amsgrad, **options):
    checks.require_state("adam_step", "amsgrad", amsgrad, "max_exp_avg_sqs", max_exp_avg_sqs)
    table = group_table("adam_step", params, grads,
                        (exp_avgs, exp_avg_sqs, max_exp_avg_sqs if amsgrad else None))
    _run("adam_step", _ADAM, table, _adam_scalars(options), amsgrad)


def sgd_step(params, grads, momentum_buffers, *, nesterov, first_step, **options):
    checks.require_state("sgd_step", "momentum != 0", options["momentum"], "momentum_buffers",
                         momentum_buffers)
    table = group_table("sgd_step", params, grads,
                        (momentum_buffers if options["momentum"] else None,))
    _run("sgd_step", _SGD, table, _sgd_scalars(options), nesterov, first_step)


def rmsprop_step(params, grads, square_avgs, momentum_buffers, grad_avgs, *, centered,
                 **options):
    checks.require_state("rmsprop_step", "momentum != 0", options["momentum"],
                         "momentum_buffers", momentum_buffers)
    checks.require_state("rmsprop_step", "centered", centered, "grad_avgs", grad_avgs)
    table = group_table("rmsprop_step", params, grads,
                        (square_avgs, momentum_buffers if options["momentum"] else None,
                         grad_avgs if centered else None))
    _run("rmsprop_step", _RMSPROP, table, _rmsprop_scalars(options), centered)


def _stateful_step(op, *state_names):
    """The plain call of a rule whose states are all on and whose loop no flag chooses:
    ``step(params, grads, *state_lists, **options)``, one list per name."""
    rule, scalars_of, _, _ = _RULES[op]

    def step(params, grads, *states, **options):
        if len(states) != len(state_names):  # a missing list would be the params' row
            raise TypeError(f"{op} takes the state lists {', '.join(state_names)}; got "
                            f"{len(states)} lists")
        _run(op, rule, group_table(op, params, grads, states), scalars_of(options))
    step.__name__ = step.__qualname__ = op
    return step


adagrad_step = _stateful_step("adagrad_step", "state_sums")
adadelta_step = _stateful_step("adadelta_step", "square_avgs", "acc_deltas")
adamax_step = _stateful_step("adamax_step", "exp_avgs", "exp_infs")
nadam_step = _stateful_step("nadam_step", "exp_avgs", "exp_avg_sqs")
radam_step = _stateful_step("radam_step", "exp_avgs", "exp_avg_sqs")


@numba.njit(cache=True)  # holds the GIL: _read_grads calls the C API
def _read_grads_and_step(grads, meta, ptrs, offsets, sc, rule, flag0, flag1):
    """read_grads, then the one part of the step on this thread: one dispatch for both."""
    if not numba_table._read_grads(grads, meta, ptrs[1]):
        return False
    _part(0, 1, ptrs, offsets, sc, rule, flag0, flag1)
    return True


def prepared_step(op, params, states, **flags):
    """The step ``op`` on arrays the caller keeps (alive and unchanged: their pointers are
    taken once, numba_table.prepared_table): ``run(grads, options)`` reads only the grads'
    pointers at each call (checked against the params) and the scalars, then runs the
    kernel; False, having done nothing, when the grads do not fit or GRADLAB_NO_JIT is set
    (the numba tier no longer runs). ``states``: the op's
    state lists in its argument order, None for one that is off; ``flags``: its
    loop-choosing booleans (amsgrad; nesterov, first_step; centered)."""
    rule, scalars_of, (name0, name1), needs = _RULES[op]
    # A state list that is off is the params' row in the table: an option switched on at a
    # call would make the kernel write its state into the parameters.
    needs = [(option, name) for option, k, name in needs if states[k] is None]
    prepared = numba_table.prepared_table(op, params, states)
    if prepared is None:
        return lambda grads, options: True  # an empty group: the step does nothing
    ptrs, offsets, dtype, meta = prepared
    n, total = len(params), int(offsets[-1])
    flag0 = bool(flags.get(name0, False))
    flag1 = bool(flags.get(name1, False))
    grads_row = ptrs[1]

    def run(grads, options):
        for option, name in needs:
            checks.require_state(op, f"{option} != 0", options[option], name, None)
        if type(grads) is not list or len(grads) != n or jit_disabled():
            return False
        if total == 0:
            return numba_table.read_grads(grads, meta, grads_row)
        sc = np.array(scalars_of(options), dtype=dtype)
        nparts = cpu_threads.parts_for(total)
        if nparts == 1:
            return _read_grads_and_step(id(grads), meta, ptrs, offsets, sc, rule, flag0, flag1)
        if not numba_table.read_grads(grads, meta, grads_row):
            return False
        cpu_threads.run_parts(_part, nparts, ptrs, offsets, sc, rule, flag0, flag1)
        return True
    run.arrays = (list(params), [list(s) for s in states if s is not None])  # kept alive
    return run
