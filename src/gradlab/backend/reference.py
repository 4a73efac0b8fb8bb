"""NumPy implementations of the fused kernel entry points: the CPU path, and the reference
the CUDA kernels in kernels/*.cu are tested against (same formulas, same operation order,
same scalars from optim_scalars.py: the optimizer kernels reproduce these bit for bit).

Optimizer steps walk each tensor in slices of ``_SLICE`` elements with two scratch slices
(three for Adadelta) reused throughout: every ufunc then runs on cache-resident data and no
full-size temporary is allocated, which is what makes a dozen NumPy passes per step
affordable.
"""
from __future__ import annotations

import numpy as np

from . import checks, optim_scalars

_SLICE = 1 << 15


def _slices(op, params, grads, *states, scratch=2):
    """Yield (p, g, *states, *tmps) as 1-D slice views over every tensor of a group, with
    ``scratch`` scratch slices."""
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


def _grad(g, p, weight_decay, maximize, out):
    """The effective gradient: -g if maximize, then + weight_decay * p (PyTorch's order)."""
    if weight_decay:
        np.multiply(p, weight_decay, out=out)
        if maximize:
            out -= g
        else:
            out += g
        return out
    if maximize:
        return np.negative(g, out=out)
    return g


def sgd_step(params, grads, momentum_buffers, *, lr, momentum, dampening, nesterov,
             weight_decay, maximize, first_step):
    bufs = momentum_buffers if momentum else None
    checks.require_state("sgd_step", "momentum != 0", momentum, "momentum_buffers",
                         momentum_buffers)
    sc = optim_scalars.sgd_scalars(lr=lr, momentum=momentum, dampening=dampening,
                                   weight_decay=weight_decay)
    for p, g, b, tmp, tmp2 in _slices("sgd_step", params, grads, bufs):
        d = _grad(g, p, sc.weight_decay, maximize, tmp2)
        if momentum:
            if first_step:
                np.copyto(b, d)                          # b = g
            else:
                b *= sc.momentum                         # b = momentum b + (1 - dampening) g
                np.multiply(d, sc.undamped, out=tmp)
                b += tmp
            if nesterov:
                np.multiply(b, sc.momentum, out=tmp)     # g = g + momentum b
                tmp += d
                d = tmp
            else:
                d = b
        np.multiply(d, -sc.lr, out=tmp)                  # p -= lr g
        p += tmp


def adam_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, *, step, lr, beta1, beta2,
              eps, weight_decay, decoupled_weight_decay, amsgrad, maximize):
    checks.require_state("adam_step", "amsgrad", amsgrad, "max_exp_avg_sqs", max_exp_avg_sqs)
    sc = optim_scalars.adam_scalars(step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                                    weight_decay=weight_decay,
                                    decoupled_weight_decay=decoupled_weight_decay)
    vmaxes = max_exp_avg_sqs if amsgrad else None
    for p, g, m, v, vmax, tmp, tmp2 in _slices("adam_step", params, grads, exp_avgs,
                                               exp_avg_sqs, vmaxes):
        g = _grad(g, p, sc.coupled_wd, maximize, tmp2)
        if sc.decay != 1.0:
            p *= sc.decay                                # AdamW: p *= 1 - lr wd
        m *= sc.beta1                                    # m = b1 m + (1 - b1) g
        np.multiply(g, sc.one_minus_beta1, out=tmp)
        m += tmp
        v *= sc.beta2                                    # v = b2 v + (1 - b2) g^2
        np.multiply(g, g, out=tmp)
        tmp *= sc.one_minus_beta2
        v += tmp
        if amsgrad:
            np.maximum(vmax, v, out=vmax)                # vmax = max(vmax, v)
            v = vmax
        np.sqrt(v, out=tmp)                              # denom = sqrt(v) / sqrt(bc2) + eps
        tmp /= sc.bc2_sqrt
        tmp += sc.eps
        np.divide(m, tmp, out=tmp)                       # p -= lr / bc1 * m / denom
        tmp *= -sc.step_size
        p += tmp


def rmsprop_step(params, grads, square_avgs, momentum_buffers, grad_avgs, *, lr, alpha, eps,
                 weight_decay, momentum, centered, maximize):
    checks.require_state("rmsprop_step", "momentum != 0", momentum, "momentum_buffers",
                         momentum_buffers)
    checks.require_state("rmsprop_step", "centered", centered, "grad_avgs", grad_avgs)
    bufs = momentum_buffers if momentum else None
    avgs = grad_avgs if centered else None
    sc = optim_scalars.rmsprop_scalars(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                       momentum=momentum)
    for p, g, v, b, a, tmp, tmp2 in _slices("rmsprop_step", params, grads, square_avgs, bufs,
                                            avgs):
        g = _grad(g, p, sc.weight_decay, maximize, tmp2)
        v *= sc.alpha                                    # v = alpha v + (1 - alpha) g^2
        np.multiply(g, g, out=tmp)
        tmp *= sc.one_minus_alpha
        v += tmp
        if centered:
            a *= sc.alpha                                # a = alpha a + (1 - alpha) g
            np.multiply(g, sc.one_minus_alpha, out=tmp)
            a += tmp
            np.multiply(a, a, out=tmp)                   # avg = sqrt(v - a^2) + eps
            np.subtract(v, tmp, out=tmp)
            np.sqrt(tmp, out=tmp)
        else:
            np.sqrt(v, out=tmp)                          # avg = sqrt(v) + eps
        tmp += sc.eps
        if momentum:
            np.divide(g, tmp, out=tmp)                   # b = momentum b + g / avg
            b *= sc.momentum
            b += tmp
            np.multiply(b, -sc.lr, out=tmp)              # p -= lr b
        else:
            np.divide(g, tmp, out=tmp)                   # p -= lr g / avg
            tmp *= -sc.lr
        p += tmp


def adagrad_step(params, grads, state_sums, *, step, lr, lr_decay, weight_decay, eps, maximize):
    sc = optim_scalars.adagrad_scalars(step=step, lr=lr, lr_decay=lr_decay, eps=eps,
                                       weight_decay=weight_decay)
    for p, g, s, tmp, tmp2 in _slices("adagrad_step", params, grads, state_sums):
        g = _grad(g, p, sc.weight_decay, maximize, tmp2)
        np.multiply(g, g, out=tmp)                       # s += g^2
        s += tmp
        np.sqrt(s, out=tmp)                              # p -= clr g / (sqrt(s) + eps)
        tmp += sc.eps
        np.divide(g, tmp, out=tmp)
        tmp *= -sc.clr
        p += tmp


def adadelta_step(params, grads, square_avgs, acc_deltas, *, lr, rho, eps, weight_decay,
                  maximize):
    sc = optim_scalars.adadelta_scalars(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay)
    for p, g, v, u, tmp, tmp2, tmp3 in _slices("adadelta_step", params, grads, square_avgs,
                                               acc_deltas, scratch=3):
        g = _grad(g, p, sc.weight_decay, maximize, tmp2)
        v *= sc.rho                                      # v = rho v + (1 - rho) g^2
        np.multiply(g, g, out=tmp)
        tmp *= sc.one_minus_rho
        v += tmp
        np.add(v, sc.eps, out=tmp)                       # d = sqrt(u + eps) / sqrt(v + eps) g
        np.sqrt(tmp, out=tmp)                            # (PyTorch's order of operations)
        np.add(u, sc.eps, out=tmp3)
        np.sqrt(tmp3, out=tmp3)
        np.divide(tmp3, tmp, out=tmp)
        tmp *= g                                         # tmp = d
        u *= sc.rho                                      # u = rho u + (1 - rho) d^2
        np.multiply(tmp, tmp, out=tmp3)
        tmp3 *= sc.one_minus_rho
        u += tmp3
        tmp *= -sc.lr                                    # p -= lr d
        p += tmp


# -- Philox4x32-10 and dropout -----------------------------------------------------------------
PHILOX_M0, PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
PHILOX_W0, PHILOX_W1 = 0x9E3779B9, 0xBB67AE85
_LO32 = np.uint64(0xFFFFFFFF)
_PHILOX_SLICE = 1 << 16  # counter blocks per pass: keeps the uint64 work arrays in cache


def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 of counters (c0, c1, c2, c3) (uint32-valued arrays, broadcast together)
    under key (k0, k1) (ints). Returns four uint32 arrays. 32x32-bit products are formed in
    uint64, whose high and low halves are mulhi and mullo."""
    c0, c1, c2, c3 = (np.array(c, dtype=np.uint64) for c in np.broadcast_arrays(c0, c1, c2, c3))
    _philox_rounds(c0, c1, c2, c3, int(k0), int(k1))
    return tuple(c.astype(np.uint32) for c in (c0, c1, c2, c3))


def _philox_rounds(c0, c1, c2, c3, k0, k1):
    """Ten rounds in place on uint64 arrays holding 32-bit values."""
    p0 = np.empty_like(c0)
    p1 = np.empty_like(c0)
    m0, m1 = np.uint64(PHILOX_M0), np.uint64(PHILOX_M1)
    for _ in range(10):
        np.multiply(c0, m0, out=p0)
        np.multiply(c2, m1, out=p1)
        np.right_shift(p1, 32, out=c0)                   # c0' = hi(M1 c2) ^ c1 ^ k0
        c0 ^= c1
        c0 ^= np.uint64(k0)
        np.right_shift(p0, 32, out=c2)                   # c2' = hi(M0 c0) ^ c3 ^ k1
        c2 ^= c3
        c2 ^= np.uint64(k1)
        np.bitwise_and(p1, _LO32, out=c1)                # c1' = lo(M1 c2)
        np.bitwise_and(p0, _LO32, out=c3)                # c3' = lo(M0 c0)
        k0 = (k0 + PHILOX_W0) & 0xFFFFFFFF
        k1 = (k1 + PHILOX_W1) & 0xFFFFFFFF


def philox_stream(key, offset, n):
    """The n uint32 draws of the dropout stream: word i is word (i % 4) of
    Philox4x32-10(counter = (offset + i // 4) mod 2^64 as (lo, hi, 0, 0), key = (lo, hi))."""
    nblocks = (n + 3) // 4
    out = np.empty((nblocks, 4), dtype=np.uint32)
    k0, k1 = key & 0xFFFFFFFF, key >> 32
    for lo in range(0, nblocks, _PHILOX_SLICE):
        nb = min(_PHILOX_SLICE, nblocks - lo)
        ctr = np.arange(nb, dtype=np.uint64)
        ctr += np.uint64((offset + lo) % 2**64)          # uint64 wraps, as on the device
        c0 = ctr & _LO32
        c1 = ctr >> np.uint64(32)
        c2 = np.zeros(nb, dtype=np.uint64)
        c3 = np.zeros(nb, dtype=np.uint64)
        _philox_rounds(c0, c1, c2, c3, k0, k1)
        for j, c in enumerate((c0, c1, c2, c3)):
            out[lo:lo + nb, j] = c
    return out.reshape(-1)[:n]


def pack_bits(keep):
    """Bool vector -> uint32 words, bit i % 32 of word i // 32 (padding bits zero)."""
    n = keep.size
    packed = np.packbits(keep, bitorder="little")
    words = np.zeros(checks.mask_words(n) * 4, dtype=np.uint8)
    words[:packed.size] = packed
    return words.view("<u4").astype(np.uint32, copy=False)


def unpack_bits(mask, n):
    return np.unpackbits(mask.astype("<u4", copy=False).view(np.uint8), count=n,
                         bitorder="little").view(np.bool_)


def dropout_forward(x, p, key, offset):
    p = checks.dropout_p(p)
    key, offset = checks.philox_key_offset(key, offset)
    checks.check_float_array("dropout_forward", "x", x)
    n = x.size
    thr = checks.dropout_threshold(p)
    if thr == 0:
        keep = np.ones(n, dtype=np.bool_)
    elif thr >= 2**32:
        keep = np.zeros(n, dtype=np.bool_)
    else:
        keep = philox_stream(key, offset, n) >= np.uint32(thr)
    y = np.zeros(x.shape, dtype=x.dtype)
    np.multiply(x, x.dtype.type(checks.dropout_scale(p)), out=y, where=keep.reshape(x.shape))
    return y, pack_bits(keep)


def dropout_backward(grad, mask, p):
    p = checks.dropout_p(p)
    checks.check_float_array("dropout_backward", "grad", grad)
    checks.check_mask(mask, grad.size)
    keep = unpack_bits(mask, grad.size).reshape(grad.shape)
    out = np.zeros(grad.shape, dtype=grad.dtype)
    np.multiply(grad, grad.dtype.type(checks.dropout_scale(p)), out=out, where=keep)
    return out


# -- softmax cross-entropy ---------------------------------------------------------------------
def softmax_cross_entropy(logits, target, weight, ignore_index, label_smoothing):
    logits, target, weight, ignore_index, s = checks.softmax_ce_args(
        np, logits, target, weight, ignore_index, label_smoothing)
    n, c = logits.shape
    dt = logits.dtype
    checks.check_targets(target, ignore_index, c)
    valid = target != ignore_index
    loss = np.zeros(n, dtype=dt)
    grad = np.zeros((n, c), dtype=dt)
    if n == 0 or c == 0:
        return loss, grad
    rows = np.arange(n)
    y = np.where(valid, target, 0)
    w = np.ones(c, dtype=dt) if weight is None else weight
    wsum = w.sum()
    a = np.where(valid, (1 - s) * w[y], 0).astype(dt)    # (1 - s) w_y, 0 on ignored rows
    b = np.where(valid, s / c, 0).astype(dt)             # s / C
    m = logits.max(axis=1, keepdims=True)
    z = np.subtract(m, logits)                           # m - x >= 0: no cancellation at 1e8
    np.negative(z, out=grad)
    np.exp(grad, out=grad)                               # exp(x - m)
    total = grad.sum(axis=1, keepdims=True)
    grad /= total                                        # p = softmax(x)
    log_s = np.log(total[:, 0])
    nll = z[rows, y] + log_s                             # lse - x_y = (m - x_y) + log S
    loss = a * nll
    if s:
        smooth = (z * w).sum(axis=1) + wsum * log_s      # sum_c w_c (lse - x_c)
        loss += b * smooth
    loss = np.where(valid, loss, 0).astype(dt)
    # grad = a (p - onehot) + b (W p - w)
    grad *= (a + b * wsum)[:, None]
    if s:
        grad -= b[:, None] * w
    grad[rows, y] -= a
    grad[~valid] = 0
    return loss, grad
