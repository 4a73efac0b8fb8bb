"""The scalars each optimizer step derives from its hyper-parameters, computed in ONE place
for every tier: the NumPy reference (reference.py), the numba kernels (numba_cpu.py) and
the CUDA kernels (kernels/optim.cu through cuda.py).

Definition, the same for float32 and float64 parameters: every derived scalar (bias
corrections, complements such as ``1 - beta``, AdamW's decay ``1 - lr * weight_decay``,
Adagrad's decayed lr) is computed here in Python floats (IEEE double) from the
hyper-parameters as the user gave them, and each tier rounds it ONCE to the parameters'
dtype. No tier forms a complement in the parameters' dtype from an already rounded value:
``1 - float32(0.999)`` is 0.0009999871 while ``float32(1 - 0.999)`` is 0.001, and PyTorch's
for-loop and foreach Adam use the latter (``value=1 - beta2`` is a Python float). With every
tier reading the same rounded scalars and applying the same operation order, the CUDA
kernels (compiled with ``--fmad=false``) reproduce the NumPy reference bit for bit.
"""
from __future__ import annotations

import math
from typing import NamedTuple


def bias_correction(beta, step):
    """1 - beta^step, the bias correction of a moving average after ``step`` steps."""
    return 1.0 - beta ** step


def decoupled_decay(lr, weight_decay):
    """AdamW-style decay factor: p *= 1 - lr * weight_decay."""
    return 1.0 - lr * weight_decay


class AdamScalars(NamedTuple):
    step_size: float       # lr / (1 - beta1^step)
    bc2_sqrt: float        # sqrt(1 - beta2^step)
    beta1: float
    one_minus_beta1: float
    beta2: float
    one_minus_beta2: float
    eps: float
    coupled_wd: float      # Adam's L2 term added to the gradient (0 for AdamW)
    decay: float           # AdamW's p *= 1 - lr * weight_decay (1 for Adam)


def adam_scalars(*, step, lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay):
    return AdamScalars(*adam_scalar_values(step, lr, beta1, beta2, eps, weight_decay,
                                           decoupled_weight_decay))


def adam_scalar_values(step, lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay):
    """AdamScalars' fields in order, as a plain tuple: what a kernel tier reads at every step
    (on a small model the keyword calls and the NamedTuple were a microsecond of it)."""
    coupled_wd, decay = _decay_terms(lr, weight_decay, decoupled_weight_decay)
    return (lr / bias_correction(beta1, step), math.sqrt(bias_correction(beta2, step)),
            float(beta1), 1.0 - beta1, float(beta2), 1.0 - beta2, float(eps), coupled_wd,
            decay)


def _decay_terms(lr, weight_decay, decoupled_weight_decay):
    """(coupled_wd, decay): the L2 term added to the gradient, or (decoupled, AdamW's) the
    factor p *= 1 - lr * weight_decay; the other is the identity (0, 1)."""
    if decoupled_weight_decay:
        return 0.0, decoupled_decay(lr, weight_decay) if weight_decay != 0 else 1.0
    return float(weight_decay), 1.0


class SgdScalars(NamedTuple):
    lr: float
    momentum: float
    undamped: float        # 1 - dampening
    weight_decay: float


def sgd_scalars(*, lr, momentum, dampening, weight_decay):
    return SgdScalars(float(lr), float(momentum), 1.0 - dampening, float(weight_decay))


class RmspropScalars(NamedTuple):
    lr: float
    alpha: float
    one_minus_alpha: float
    eps: float
    weight_decay: float
    momentum: float


def rmsprop_scalars(*, lr, alpha, eps, weight_decay, momentum):
    return RmspropScalars(float(lr), float(alpha), 1.0 - alpha, float(eps),
                          float(weight_decay), float(momentum))


class AdagradScalars(NamedTuple):
    clr: float             # lr / (1 + (step - 1) lr_decay)
    eps: float
    weight_decay: float


def adagrad_scalars(*, step, lr, lr_decay, eps, weight_decay):
    return AdagradScalars(lr / (1.0 + (step - 1) * lr_decay), float(eps), float(weight_decay))


class AdadeltaScalars(NamedTuple):
    lr: float
    rho: float
    one_minus_rho: float
    eps: float
    weight_decay: float


def adadelta_scalars(*, lr, rho, eps, weight_decay):
    return AdadeltaScalars(float(lr), float(rho), 1.0 - rho, float(eps), float(weight_decay))


class AdamaxScalars(NamedTuple):
    step_size: float       # lr / (1 - beta1^step)
    beta1: float
    one_minus_beta1: float
    beta2: float
    eps: float
    weight_decay: float


def adamax_scalars(*, step, lr, beta1, beta2, eps, weight_decay):
    return AdamaxScalars(lr / bias_correction(beta1, step), float(beta1), 1.0 - beta1,
                         float(beta2), float(eps), float(weight_decay))


class NadamScalars(NamedTuple):
    grad_coef: float       # lr (1 - mu_t) / (1 - P_t)
    avg_coef: float        # lr mu_{t+1} / (1 - P_t mu_{t+1})
    bc2: float             # 1 - beta2^step
    beta1: float
    one_minus_beta1: float
    beta2: float
    one_minus_beta2: float
    eps: float
    coupled_wd: float      # the L2 term added to the gradient (0 when decoupled)
    decay: float           # decoupled: p *= 1 - lr * weight_decay (else 1)


def _nadam_mu(beta1, momentum_decay, step):
    return beta1 * (1 - 0.5 * 0.96 ** (step * momentum_decay))


def nadam_mu_product(*, step, beta1, momentum_decay, mu_product):
    """P_t = mu_product * mu_t: the state 'mu_product' after step ``step``, from the
    product of the previous steps' mu_i (1 before the first)."""
    return mu_product * _nadam_mu(beta1, momentum_decay, step)


def nadam_scalars(*, step, lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay,
                  momentum_decay, mu_product):
    """``mu_product``: the product of the mu_i of the previous steps (1 before the first)."""
    mu = _nadam_mu(beta1, momentum_decay, step)
    mu_next = _nadam_mu(beta1, momentum_decay, step + 1)
    prod = nadam_mu_product(step=step, beta1=beta1, momentum_decay=momentum_decay,
                            mu_product=mu_product)
    return NadamScalars(lr * (1 - mu) / (1 - prod), lr * mu_next / (1 - prod * mu_next),
                        bias_correction(beta2, step), float(beta1), 1.0 - beta1, float(beta2),
                        1.0 - beta2, float(eps),
                        *_decay_terms(lr, weight_decay, decoupled_weight_decay))


class RadamScalars(NamedTuple):
    step_size: float       # lr / (1 - beta1^step)
    adaptive_coef: float   # step_size r_t sqrt(1 - beta2^step); 0 while not rectified
    beta1: float
    one_minus_beta1: float
    beta2: float
    one_minus_beta2: float
    eps: float
    coupled_wd: float      # the L2 term added to the gradient (0 when decoupled)
    decay: float           # decoupled: p *= 1 - lr * weight_decay (else 1)
    rectified: bool        # rho_t > 5: the adaptive step; else the plain momentum step


def radam_rectification(beta2, step):
    """r_t, the variance rectification term, or None while rho_t <= 5 (the SMA is too short
    for the adaptive step)."""
    rho_inf = 2 / (1 - beta2) - 1
    bc2 = bias_correction(beta2, step)
    rho_t = rho_inf - 2 * step * beta2 ** step / bc2
    if rho_t <= 5:
        return None
    return math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))


def radam_scalars(*, step, lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay):
    step_size = lr / bias_correction(beta1, step)
    r = radam_rectification(beta2, step)
    coef = 0.0 if r is None else step_size * r * math.sqrt(bias_correction(beta2, step))
    return RadamScalars(step_size, coef, float(beta1), 1.0 - beta1, float(beta2), 1.0 - beta2,
                        float(eps), *_decay_terms(lr, weight_decay, decoupled_weight_decay),
                        r is not None)
