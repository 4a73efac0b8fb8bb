"""The scalars each optimizer step derives from its hyper-parameters, computed in ONE place
for every tier: the NumPy reference (reference.py), the numba kernels (numba_cpu.py), the CUDA
kernels (kernels/optim.cu through cuda.py), and the optimizer classes of gl.optim (Adamax,
NAdam and RAdam, which have no fused kernel, step through reference.py with these too).

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
    decoupled = bool(decoupled_weight_decay) and weight_decay != 0
    return AdamScalars(
        step_size=lr / bias_correction(beta1, step),
        bc2_sqrt=math.sqrt(bias_correction(beta2, step)),
        beta1=float(beta1), one_minus_beta1=1.0 - beta1,
        beta2=float(beta2), one_minus_beta2=1.0 - beta2,
        eps=float(eps),
        coupled_wd=0.0 if decoupled_weight_decay else float(weight_decay),
        decay=decoupled_decay(lr, weight_decay) if decoupled else 1.0)


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


# -- the optimizers without a fused kernel (reference.py's adamax, nadam, radam) ----------------
class AdamaxScalars(NamedTuple):
    step_size: float       # lr / (1 - beta1^step)
    beta1: float
    one_minus_beta1: float
    beta2: float
    eps: float


def adamax_scalars(*, step, lr, beta1, beta2, eps):
    return AdamaxScalars(lr / bias_correction(beta1, step), float(beta1), 1.0 - beta1,
                         float(beta2), float(eps))


class NadamScalars(NamedTuple):
    mu_product: float      # prod_{i <= step} mu_i, the state to keep for the next step
    grad_coef: float       # lr (1 - mu_t) / (1 - P_t)
    avg_coef: float        # lr mu_{t+1} / (1 - P_t mu_{t+1})
    bc2: float             # 1 - beta2^step
    beta1: float
    one_minus_beta1: float
    beta2: float
    one_minus_beta2: float
    eps: float


def nadam_scalars(*, step, lr, beta1, beta2, eps, momentum_decay, mu_product):
    """``mu_product``: the product of the mu_i of the previous steps (1 before the first)."""
    mu = beta1 * (1 - 0.5 * 0.96 ** (step * momentum_decay))
    mu_next = beta1 * (1 - 0.5 * 0.96 ** ((step + 1) * momentum_decay))
    prod = mu_product * mu
    return NadamScalars(prod, lr * (1 - mu) / (1 - prod), lr * mu_next / (1 - prod * mu_next),
                        bias_correction(beta2, step), float(beta1), 1.0 - beta1, float(beta2),
                        1.0 - beta2, float(eps))


class RadamScalars(NamedTuple):
    step_size: float       # lr / (1 - beta1^step)
    adaptive_coef: float | None  # step_size r_t sqrt(1 - beta2^step); None while rho_t <= 5
    beta1: float
    one_minus_beta1: float
    beta2: float
    one_minus_beta2: float
    eps: float


def radam_rectification(beta2, step):
    """r_t, the variance rectification term, or None while rho_t <= 5 (the SMA is too short
    for the adaptive step)."""
    rho_inf = 2 / (1 - beta2) - 1
    bc2 = bias_correction(beta2, step)
    rho_t = rho_inf - 2 * step * beta2 ** step / bc2
    if rho_t <= 5:
        return None
    return math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))


def radam_scalars(*, step, lr, beta1, beta2, eps):
    step_size = lr / bias_correction(beta1, step)
    r = radam_rectification(beta2, step)
    coef = None if r is None else step_size * r * math.sqrt(bias_correction(beta2, step))
    return RadamScalars(step_size, coef, float(beta1), 1.0 - beta1, float(beta2), 1.0 - beta2,
                        float(eps))
