"""The optimizer update rules written once with array ops: the NumPy tier of the fused steps
(the fallback when numba is missing or switched off) and the oracle every other tier is held
to (tests/backend/fused).

Each rule is ONE single-tensor function updating its arrays in place, in the operation order
that numba_cpu.py and kernels/optim.cu follow, with the scalars of scalars.py rounded once to
the arrays' dtype: the fused tiers reproduce these bit for bit.

The fused steps (sgd_step, adam_step, ...) walk each tensor of a group in slices of
``_SLICE`` elements with scratch slices reused throughout: every ufunc then runs on
cache-resident data and no full-size temporary is allocated, which is what makes a dozen NumPy
passes per step affordable.
"""
from __future__ import annotations

import numpy as np

from ... import checks
from . import scalars

_SLICE = 1 << 15


# -- the rules, one tensor each ----------------------------------------------------------------
def effective_grad(xp, p, g, weight_decay, maximize, out):
    """-g if maximize, then + weight_decay * p (PyTorch's order); ``out`` is scratch."""
    if weight_decay:
        xp.multiply(p, weight_decay, out=out)
        if maximize:
            out -= g
        else:
            out += g
        return out
    if maximize:
        return xp.negative(g, out=out)
    return g


def sgd(xp, p, g, b, sc, *, nesterov, maximize, first_step, tmp, tmp2):
    """b = g on the first step, else momentum b + (1 - dampening) g; g = g + momentum b with
    nesterov, else b; p -= lr g. ``b`` is None when momentum == 0."""
    d = effective_grad(xp, p, g, sc.weight_decay, maximize, tmp2)
    if b is not None:
        if first_step:
            xp.copyto(b, d)
        else:
            b *= sc.momentum
            xp.multiply(d, sc.undamped, out=tmp)
            b += tmp
        if nesterov:
            xp.multiply(b, sc.momentum, out=tmp)
            tmp += d
            d = tmp
        else:
            d = b
    xp.multiply(d, -sc.lr, out=tmp)
    p += tmp


def adam(xp, p, g, m, v, vmax, sc, *, maximize, tmp, tmp2):
    """Adam/AdamW: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; vmax = max(vmax, v) (amsgrad:
    ``vmax`` not None); p = p decay - step_size (m / (sqrt(v) / sqrt(bc2) + eps))."""
    g = effective_grad(xp, p, g, sc.coupled_wd, maximize, tmp2)
    if sc.decay != 1.0:
        p *= sc.decay
    m *= sc.beta1
    xp.multiply(g, sc.one_minus_beta1, out=tmp)
    m += tmp
    v *= sc.beta2
    xp.multiply(g, g, out=tmp)
    tmp *= sc.one_minus_beta2
    v += tmp
    if vmax is not None:
        xp.maximum(vmax, v, out=vmax)
        v = vmax
    xp.sqrt(v, out=tmp)
    tmp /= sc.bc2_sqrt
    tmp += sc.eps
    xp.divide(m, tmp, out=tmp)
    tmp *= -sc.step_size
    p += tmp


def rmsprop(xp, p, g, v, b, a, sc, *, maximize, tmp, tmp2):
    """v = alpha v + (1-alpha) g^2; centered (``a`` not None): a = alpha a + (1-alpha) g,
    avg = sqrt(v - a^2) + eps, else sqrt(v) + eps; momentum (``b`` not None):
    b = momentum b + g / avg, p -= lr b; else p -= lr (g / avg)."""
    g = effective_grad(xp, p, g, sc.weight_decay, maximize, tmp2)
    v *= sc.alpha
    xp.multiply(g, g, out=tmp)
    tmp *= sc.one_minus_alpha
    v += tmp
    if a is not None:
        a *= sc.alpha
        xp.multiply(g, sc.one_minus_alpha, out=tmp)
        a += tmp
        xp.multiply(a, a, out=tmp)
        xp.subtract(v, tmp, out=tmp)
        xp.sqrt(tmp, out=tmp)
    else:
        xp.sqrt(v, out=tmp)
    tmp += sc.eps
    xp.divide(g, tmp, out=tmp)
    if b is not None:
        b *= sc.momentum
        b += tmp
        xp.multiply(b, -sc.lr, out=tmp)
    else:
        tmp *= -sc.lr
    p += tmp


def adagrad(xp, p, g, s, sc, *, maximize, tmp, tmp2):
    """s += g^2; p -= clr (g / (sqrt(s) + eps))."""
    g = effective_grad(xp, p, g, sc.weight_decay, maximize, tmp2)
    xp.multiply(g, g, out=tmp)
    s += tmp
    xp.sqrt(s, out=tmp)
    tmp += sc.eps
    xp.divide(g, tmp, out=tmp)
    tmp *= -sc.clr
    p += tmp


def adadelta(xp, p, g, v, u, sc, *, maximize, tmp, tmp2, tmp3):
    """v = rho v + (1-rho) g^2; d = sqrt(u + eps) / sqrt(v + eps) g (PyTorch's order);
    u = rho u + (1-rho) d^2; p -= lr d."""
    g = effective_grad(xp, p, g, sc.weight_decay, maximize, tmp2)
    v *= sc.rho
    xp.multiply(g, g, out=tmp)
    tmp *= sc.one_minus_rho
    v += tmp
    xp.add(v, sc.eps, out=tmp)
    xp.sqrt(tmp, out=tmp)
    xp.add(u, sc.eps, out=tmp3)
    xp.sqrt(tmp3, out=tmp3)
    xp.divide(tmp3, tmp, out=tmp)
    tmp *= g
    u *= sc.rho
    xp.multiply(tmp, tmp, out=tmp3)
    tmp3 *= sc.one_minus_rho
    u += tmp3
    tmp *= -sc.lr
    p += tmp


def adamax(xp, p, g, m, u, sc, *, maximize, tmp, tmp2):
    """m = b1 m + (1-b1) g; u = max(b2 u, |g| + eps); p -= step_size m / u."""
    g = effective_grad(xp, p, g, sc.weight_decay, maximize, tmp2)
    m *= sc.beta1
    xp.multiply(g, sc.one_minus_beta1, out=tmp)
    m += tmp
    u *= sc.beta2
    xp.abs(g, out=tmp)
    tmp += sc.eps
    xp.maximum(u, tmp, out=u)
    xp.multiply(m, sc.step_size, out=tmp)
    tmp /= u
    p -= tmp


def _adam_moments(xp, p, g, m, v, sc, maximize, tmp, tmp2):
    """NAdam's and RAdam's start: AdamW's decay of p, the effective gradient, then
    m = b1 m + (1-b1) g and v = b2 v + ((1-b2) g) g (PyTorch's addcmul order). Returns g."""
    g = effective_grad(xp, p, g, sc.coupled_wd, maximize, tmp2)
    if sc.decay != 1.0:
        p *= sc.decay
    m *= sc.beta1
    xp.multiply(g, sc.one_minus_beta1, out=tmp)
    m += tmp
    v *= sc.beta2
    xp.multiply(g, sc.one_minus_beta2, out=tmp)
    tmp *= g
    v += tmp
    return g


def nadam(xp, p, g, m, v, sc, *, maximize, tmp, tmp2, tmp3):
    """m, v as _adam_moments; denom = sqrt(v / bc2) + eps; p -= grad_coef g / denom;
    p -= avg_coef m / denom."""
    g = _adam_moments(xp, p, g, m, v, sc, maximize, tmp, tmp2)
    xp.divide(v, sc.bc2, out=tmp)
    xp.sqrt(tmp, out=tmp)
    tmp += sc.eps
    xp.multiply(g, sc.grad_coef, out=tmp3)
    tmp3 /= tmp
    p -= tmp3
    xp.multiply(m, sc.avg_coef, out=tmp3)
    tmp3 /= tmp
    p -= tmp3


def radam(xp, p, g, m, v, sc, *, maximize, tmp, tmp2):
    """m, v as _adam_moments; rectified: p -= adaptive_coef m / (sqrt(v) + eps), else
    p -= step_size m."""
    _adam_moments(xp, p, g, m, v, sc, maximize, tmp, tmp2)
    if sc.rectified:
        xp.sqrt(v, out=tmp)
        tmp += sc.eps
        xp.multiply(m, sc.adaptive_coef, out=tmp2)  # (the gradient is no longer needed)
        tmp2 /= tmp
        p -= tmp2
    else:
        xp.multiply(m, sc.step_size, out=tmp)
        p -= tmp


# -- the fused steps of the NumPy tier: every tensor of a group, in slices --------------------
def _slices(op, params, grads, *states, scratch=2):
    """Yield (p, g, *states, *tmps) as 1-D slice views over every tensor of a group, with
    ``scratch`` scratch slices; a state list that is None yields None."""
    dtype = checks.group_dtype(op, params, grads,
                               **{f"state{i}": s for i, s in enumerate(states)})
    if dtype is None:
        return
    work = np.empty((scratch, _SLICE), dtype=dtype)
    for i, p in enumerate(params):
        n = p.size
        flat = [a.reshape(-1) for a in (p, grads[i])]
        flat += [None if s is None else s[i].reshape(-1) for s in states]
        for lo in range(0, n, _SLICE):
            hi = min(lo + _SLICE, n)
            yield (*[None if a is None else a[lo:hi] for a in flat],
                   *[w[:hi - lo] for w in work])


def sgd_step(params, grads, momentum_buffers, *, lr, momentum, dampening, nesterov,
             weight_decay, maximize, first_step):
    checks.require_state("sgd_step", "momentum != 0", momentum, "momentum_buffers",
                         momentum_buffers)
    sc = scalars.sgd_scalars(lr=lr, momentum=momentum, dampening=dampening,
                             weight_decay=weight_decay)
    for p, g, b, tmp, tmp2 in _slices("sgd_step", params, grads,
                                      momentum_buffers if momentum else None):
        sgd(np, p, g, b, sc, nesterov=nesterov, maximize=maximize, first_step=first_step,
            tmp=tmp, tmp2=tmp2)


def adam_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, *, step, lr, beta1, beta2,
              eps, weight_decay, decoupled_weight_decay, amsgrad, maximize):
    checks.require_state("adam_step", "amsgrad", amsgrad, "max_exp_avg_sqs", max_exp_avg_sqs)
    sc = scalars.adam_scalars(step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                              weight_decay=weight_decay,
                              decoupled_weight_decay=decoupled_weight_decay)
    for p, g, m, v, vmax, tmp, tmp2 in _slices("adam_step", params, grads, exp_avgs,
                                               exp_avg_sqs,
                                               max_exp_avg_sqs if amsgrad else None):
        adam(np, p, g, m, v, vmax, sc, maximize=maximize, tmp=tmp, tmp2=tmp2)


def rmsprop_step(params, grads, square_avgs, momentum_buffers, grad_avgs, *, lr, alpha, eps,
                 weight_decay, momentum, centered, maximize):
    checks.require_state("rmsprop_step", "momentum != 0", momentum, "momentum_buffers",
                         momentum_buffers)
    checks.require_state("rmsprop_step", "centered", centered, "grad_avgs", grad_avgs)
    sc = scalars.rmsprop_scalars(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                 momentum=momentum)
    for p, g, v, b, a, tmp, tmp2 in _slices("rmsprop_step", params, grads, square_avgs,
                                            momentum_buffers if momentum else None,
                                            grad_avgs if centered else None):
        rmsprop(np, p, g, v, b, a, sc, maximize=maximize, tmp=tmp, tmp2=tmp2)


def adagrad_step(params, grads, state_sums, *, step, lr, lr_decay, weight_decay, eps, maximize):
    sc = scalars.adagrad_scalars(step=step, lr=lr, lr_decay=lr_decay, eps=eps,
                                 weight_decay=weight_decay)
    for p, g, s, tmp, tmp2 in _slices("adagrad_step", params, grads, state_sums):
        adagrad(np, p, g, s, sc, maximize=maximize, tmp=tmp, tmp2=tmp2)


def adadelta_step(params, grads, square_avgs, acc_deltas, *, lr, rho, eps, weight_decay,
                  maximize):
    sc = scalars.adadelta_scalars(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay)
    for p, g, v, u, tmp, tmp2, tmp3 in _slices("adadelta_step", params, grads, square_avgs,
                                               acc_deltas, scratch=3):
        adadelta(np, p, g, v, u, sc, maximize=maximize, tmp=tmp, tmp2=tmp2, tmp3=tmp3)


def adamax_step(params, grads, exp_avgs, exp_infs, *, step, lr, beta1, beta2, eps,
                weight_decay, maximize):
    sc = scalars.adamax_scalars(step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                                weight_decay=weight_decay)
    for p, g, m, u, tmp, tmp2 in _slices("adamax_step", params, grads, exp_avgs, exp_infs):
        adamax(np, p, g, m, u, sc, maximize=maximize, tmp=tmp, tmp2=tmp2)


def nadam_step(params, grads, exp_avgs, exp_avg_sqs, *, step, lr, beta1, beta2, eps,
               weight_decay, decoupled_weight_decay, momentum_decay, mu_product, maximize):
    sc = scalars.nadam_scalars(step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                               weight_decay=weight_decay,
                               decoupled_weight_decay=decoupled_weight_decay,
                               momentum_decay=momentum_decay, mu_product=mu_product)
    for p, g, m, v, tmp, tmp2, tmp3 in _slices("nadam_step", params, grads, exp_avgs,
                                               exp_avg_sqs, scratch=3):
        nadam(np, p, g, m, v, sc, maximize=maximize, tmp=tmp, tmp2=tmp2, tmp3=tmp3)


def radam_step(params, grads, exp_avgs, exp_avg_sqs, *, step, lr, beta1, beta2, eps,
               weight_decay, decoupled_weight_decay, maximize):
    sc = scalars.radam_scalars(step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                               weight_decay=weight_decay,
                               decoupled_weight_decay=decoupled_weight_decay)
    for p, g, m, v, tmp, tmp2 in _slices("radam_step", params, grads, exp_avgs, exp_avg_sqs):
        radam(np, p, g, m, v, sc, maximize=maximize, tmp=tmp, tmp2=tmp2)
