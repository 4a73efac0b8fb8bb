"""Optional numba-compiled optimizer steps for the CPU backend.

The NumPy references in reference.py make a dozen passes over memory per step; these
make one (read p, g and the state once, write them once), which is what PyTorch's fused
CPU Adam does. They are used when numba imports and ``GRADLAB_NO_JIT`` is unset; results
match the references to rounding (tests hold them together). Formulas: see base.py.

Kernels are built with ``parallel=True``: numba's parallel loops are also the ones it
vectorizes here (a serial build of the same loop measured 8-16x slower). Small tensors run
that build on the calling thread alone: waking the thread pool for a bias of ten elements
measured several milliseconds on a loaded machine, more than the update itself.
"""
from __future__ import annotations

import os

import numpy as np

from . import checks

# numba's OpenMP pool busy-waits between parallel loops by default; in a training step those
# spinning threads take the cores NumPy's BLAS needs for the next GEMM (measured: the
# 784-512-256-10 step went from 16 ms to 4.7 ms with passive waiting on 2 cores). libgomp
# reads this once, when numba first loads it; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    if os.environ.get("GRADLAB_NO_JIT"):
        raise ImportError("GRADLAB_NO_JIT is set")
    import numba
    from numba import prange
except ImportError:  # numba is an optional accelerator
    numba = None
    prange = range

AVAILABLE = numba is not None
PARALLEL_MIN = 1 << 16  # elements from which a tensor's update uses every thread


# Flags are resolved outside the element loops (one loop per case) and the sign of
# ``maximize`` is a multiplier: a branch inside the loop stops LLVM from vectorizing it.
# Every float scalar arrives in the arrays' dtype and complements such as 1 - beta come
# precomputed: a float64 literal would turn float32 updates into float64 arithmetic,
# measured 3x slower on 10M elements.

def _adam_body(p, g, m, v, vmax, step_size, bc2_sqrt, b1, c1, b2, c2, eps, wd, decay, sign,
               amsgrad):
    if amsgrad:
        for i in prange(p.size):
            gi = sign * g[i] + wd * p[i]
            mi = b1 * m[i] + c1 * gi
            vi = b2 * v[i] + c2 * gi * gi
            m[i] = mi
            v[i] = vi
            vi = max(vmax[i], vi)
            vmax[i] = vi
            p[i] = p[i] * decay - step_size * mi / (np.sqrt(vi) / bc2_sqrt + eps)
    else:
        for i in prange(p.size):
            gi = sign * g[i] + wd * p[i]
            mi = b1 * m[i] + c1 * gi
            vi = b2 * v[i] + c2 * gi * gi
            m[i] = mi
            v[i] = vi
            p[i] = p[i] * decay - step_size * mi / (np.sqrt(vi) / bc2_sqrt + eps)


def _sgd_body(p, g, b, lr, momentum, undamped, nesterov, wd, sign, first):
    if momentum == 0.0:
        for i in prange(p.size):
            p[i] -= lr * (sign * g[i] + wd * p[i])
    elif first:
        for i in prange(p.size):
            gi = sign * g[i] + wd * p[i]
            b[i] = gi
            p[i] -= lr * (gi + momentum * gi if nesterov else gi)
    elif nesterov:
        for i in prange(p.size):
            gi = sign * g[i] + wd * p[i]
            bi = momentum * b[i] + undamped * gi
            b[i] = bi
            p[i] -= lr * (gi + momentum * bi)
    else:
        for i in prange(p.size):
            gi = sign * g[i] + wd * p[i]
            bi = momentum * b[i] + undamped * gi
            b[i] = bi
            p[i] -= lr * bi


def _rmsprop_body(p, g, v, b, a, lr, alpha, c_alpha, eps, wd, momentum, centered, c, sign):
    # avg = sqrt(v - a^2) + eps if centered else sqrt(v) + eps; ``c`` (0 or 1) zeroes a^2.
    if momentum != 0.0:
        for i in prange(p.size):
            gi = sign * g[i] + wd * p[i]
            vi = alpha * v[i] + c_alpha * gi * gi
            v[i] = vi
            ai = alpha * a[i] + c_alpha * gi
            if centered:
                a[i] = ai
            bi = momentum * b[i] + gi / (np.sqrt(vi - c * ai * ai) + eps)
            b[i] = bi
            p[i] -= lr * bi
    else:
        for i in prange(p.size):
            gi = sign * g[i] + wd * p[i]
            vi = alpha * v[i] + c_alpha * gi * gi
            v[i] = vi
            ai = alpha * a[i] + c_alpha * gi
            if centered:
                a[i] = ai
            p[i] -= lr * gi / (np.sqrt(vi - c * ai * ai) + eps)


def _adagrad_body(p, g, s, clr, eps, wd, sign):
    for i in prange(p.size):
        gi = sign * g[i] + wd * p[i]
        si = s[i] + gi * gi
        s[i] = si
        p[i] -= clr * gi / (np.sqrt(si) + eps)


def _adadelta_body(p, g, v, u, lr, rho, c_rho, eps, wd, sign):
    for i in prange(p.size):
        gi = sign * g[i] + wd * p[i]
        vi = rho * v[i] + c_rho * gi * gi
        v[i] = vi
        d = np.sqrt(u[i] + eps) / np.sqrt(vi + eps) * gi
        u[i] = rho * u[i] + c_rho * d * d
        p[i] -= lr * d


_KERNELS = {}
if AVAILABLE:
    for _name, _body in (("adam", _adam_body), ("sgd", _sgd_body), ("rmsprop", _rmsprop_body),
                         ("adagrad", _adagrad_body), ("adadelta", _adadelta_body)):
        _KERNELS[_name] = numba.njit(cache=True, nogil=True, parallel=True)(_body)


def _run(name, tensors, *scalars):
    """Apply kernel ``name`` to each tensor's flat views; small tensors on one thread."""
    kernel = _KERNELS[name]
    if not tensors:
        return
    as_dtype = tensors[0][0].dtype.type
    scalars = tuple(as_dtype(x) if isinstance(x, float) else x for x in scalars)
    all_threads = current = numba.get_num_threads()
    try:
        for arrays in tensors:
            n = arrays[0].size
            if not n:
                continue
            wanted = all_threads if n >= PARALLEL_MIN else 1
            if wanted != current:
                numba.set_num_threads(wanted)
                current = wanted
            kernel(*arrays, *scalars)
    finally:
        if current != all_threads:
            numba.set_num_threads(all_threads)


def _flat(arrays, i, fallback):
    return fallback if arrays is None else arrays[i].reshape(-1)


def _group(op, params, grads, *states):
    """Flat views per tensor: [(p, g, *states), ...]; a missing state becomes p (unused)."""
    checks.group_dtype(op, params, grads, **{f"state{k}": s for k, s in enumerate(states)})
    out = []
    for i, p in enumerate(params):
        pf = p.reshape(-1)
        out.append((pf, grads[i].reshape(-1), *(_flat(s, i, pf) for s in states)))
    return out


def adam_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, *, step, lr, beta1, beta2,
              eps, weight_decay, decoupled_weight_decay, amsgrad, maximize):
    checks.require_state("adam_step", "amsgrad", amsgrad, "max_exp_avg_sqs", max_exp_avg_sqs)
    tensors = _group("adam_step", params, grads, exp_avgs, exp_avg_sqs,
                     max_exp_avg_sqs if amsgrad else None)
    decay = 1.0 - lr * weight_decay if decoupled_weight_decay else 1.0  # AdamW: p *= decay
    coupled_wd = 0.0 if decoupled_weight_decay else float(weight_decay)
    _run("adam", tensors, lr / (1 - beta1 ** step), (1 - beta2 ** step) ** 0.5, float(beta1),
         1.0 - beta1, float(beta2), 1.0 - beta2, float(eps), coupled_wd, float(decay),
         -1.0 if maximize else 1.0, bool(amsgrad))


def sgd_step(params, grads, momentum_buffers, *, lr, momentum, dampening, nesterov,
             weight_decay, maximize, first_step):
    checks.require_state("sgd_step", "momentum != 0", momentum, "momentum_buffers",
                         momentum_buffers)
    tensors = _group("sgd_step", params, grads, momentum_buffers if momentum else None)
    _run("sgd", tensors, float(lr), float(momentum), 1.0 - dampening, bool(nesterov),
         float(weight_decay), -1.0 if maximize else 1.0, bool(first_step))


def rmsprop_step(params, grads, square_avgs, momentum_buffers, grad_avgs, *, lr, alpha, eps,
                 weight_decay, momentum, centered, maximize):
    checks.require_state("rmsprop_step", "momentum != 0", momentum, "momentum_buffers",
                         momentum_buffers)
    checks.require_state("rmsprop_step", "centered", centered, "grad_avgs", grad_avgs)
    tensors = _group("rmsprop_step", params, grads, square_avgs,
                     momentum_buffers if momentum else None, grad_avgs if centered else None)
    _run("rmsprop", tensors, float(lr), float(alpha), 1.0 - alpha, float(eps),
         float(weight_decay), float(momentum), bool(centered), 1.0 if centered else 0.0,
         -1.0 if maximize else 1.0)


def adagrad_step(params, grads, state_sums, *, step, lr, lr_decay, weight_decay, eps, maximize):
    tensors = _group("adagrad_step", params, grads, state_sums)
    _run("adagrad", tensors, lr / (1 + (step - 1) * lr_decay), float(eps),
         float(weight_decay), -1.0 if maximize else 1.0)


def adadelta_step(params, grads, square_avgs, acc_deltas, *, lr, rho, eps, weight_decay,
                  maximize):
    tensors = _group("adadelta_step", params, grads, square_avgs, acc_deltas)
    _run("adadelta", tensors, float(lr), float(rho), 1.0 - rho, float(eps), float(weight_decay),
         -1.0 if maximize else 1.0)
