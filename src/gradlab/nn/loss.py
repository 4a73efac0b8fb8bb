"""Loss modules: each holds its settings and calls the function of the same name in
gl.nn.functional. ``reduction`` is 'mean' (default), 'sum' or 'none'."""
from __future__ import annotations

from ..functional import loss as L
from ..functional.loss_checks import (
    REDUCTIONS,
    check_label_smoothing,
    check_margin_power,
    check_reduction,
)
from .module import Module, settings_getter


class _Loss(Module):
    """forward(input, target) is the function ``_fn`` applied to them and to the settings
    named in ``_args``, which are the function's next parameters in order."""

    _fn = None
    _args = ("reduction",)
    _reductions = REDUCTIONS

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._settings = staticmethod(settings_getter(cls._args))

    def __init__(self, reduction="mean"):
        super().__init__()
        check_reduction(type(self).__name__, reduction, self._reductions)
        self.reduction = reduction

    def forward(self, input, target):
        return self._fn(input, target, *self._settings(self))

    def extra_repr(self):
        return f"reduction={self.reduction!r}" if self.reduction != "mean" else ""


class _WeightedLoss(_Loss):
    _args = ("weight", "reduction")

    def __init__(self, weight=None, reduction="mean"):
        super().__init__(reduction)
        self.register_buffer("weight", weight)


class MSELoss(_Loss):
    """(x - y)^2."""
    _fn = staticmethod(L.mse_loss)


class L1Loss(_Loss):
    """|x - y|."""
    _fn = staticmethod(L.l1_loss)


class CrossEntropyLoss(_WeightedLoss):
    """Softmax cross-entropy of logits and class indices (or class probabilities); see
    gl.nn.functional.cross_entropy for the formula."""
    _fn = staticmethod(L.cross_entropy)
    _args = ("weight", "ignore_index", "reduction", "label_smoothing")

    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__(weight, reduction)
        check_label_smoothing("CrossEntropyLoss", label_smoothing)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing


class NLLLoss(_WeightedLoss):
    """-w[y] x[y] on log-probabilities."""
    _fn = staticmethod(L.nll_loss)
    _args = ("weight", "ignore_index", "reduction")

    def __init__(self, weight=None, ignore_index=-100, reduction="mean"):
        super().__init__(weight, reduction)
        self.ignore_index = ignore_index


class BCELoss(_WeightedLoss):
    """-w [y log x + (1 - y) log(1 - x)] on probabilities."""
    _fn = staticmethod(L.binary_cross_entropy)


class BCEWithLogitsLoss(_WeightedLoss):
    """Sigmoid + BCE in one stable formula, with optional per-class ``pos_weight``."""
    _fn = staticmethod(L.binary_cross_entropy_with_logits)
    _args = ("weight", "reduction", "pos_weight")

    def __init__(self, weight=None, reduction="mean", pos_weight=None):
        super().__init__(weight, reduction)
        self.register_buffer("pos_weight", pos_weight)


class KLDivLoss(_Loss):
    """KL(target || exp(input)) pointwise; use reduction='batchmean' for the true KL."""

    _fn, _args = staticmethod(L.kl_div), ("reduction", "log_target")
    _reductions = REDUCTIONS + ("batchmean",)

    def __init__(self, reduction="mean", log_target=False):
        super().__init__(reduction)
        self.log_target = log_target


class HuberLoss(_Loss):
    """0.5 d^2 for |d| < delta, delta (|d| - delta/2) beyond."""
    _fn, _args = staticmethod(L.huber_loss), ("reduction", "delta")

    def __init__(self, reduction="mean", delta=1.0):
        super().__init__(reduction)
        self.delta = delta


class SmoothL1Loss(_Loss):
    """0.5 d^2 / beta for |d| < beta, |d| - beta/2 beyond."""
    _fn, _args = staticmethod(L.smooth_l1_loss), ("reduction", "beta")

    def __init__(self, reduction="mean", beta=1.0):
        super().__init__(reduction)
        self.beta = beta


class MultiMarginLoss(_WeightedLoss):
    """Weston-Watkins multi-class SVM loss: sum_{j != y} max(0, margin - x_y + x_j)^p / C."""
    _fn = staticmethod(L.multi_margin_loss)
    _args = ("p", "margin", "weight", "reduction")

    def __init__(self, p=1, margin=1.0, weight=None, reduction="mean"):
        super().__init__(weight, reduction)
        check_margin_power("MultiMarginLoss", p)
        self.p, self.margin = p, margin


class HingeEmbeddingLoss(_Loss):
    """x for y = 1, max(0, margin - x) for y = -1."""
    _fn, _args = staticmethod(L.hinge_embedding_loss), ("margin", "reduction")

    def __init__(self, margin=1.0, reduction="mean"):
        super().__init__(reduction)
        self.margin = margin


class PoissonNLLLoss(_Loss):
    """exp(x) - y x (log_input) or x - y log(x + eps)."""

    def __init__(self, log_input=True, full=False, eps=1e-8, reduction="mean"):
        super().__init__(reduction)
        self.log_input, self.full, self.eps = log_input, full, eps

    def forward(self, log_input, target):
        return L.poisson_nll_loss(log_input, target, self.log_input, self.full, self.eps,
                                  self.reduction)


class GaussianNLLLoss(_Loss):
    """0.5 (log var + (x - y)^2 / var), var clamped to >= eps."""

    def __init__(self, full=False, eps=1e-6, reduction="mean"):
        super().__init__(reduction)
        self.full, self.eps = full, eps

    def forward(self, input, target, var):
        return L.gaussian_nll_loss(input, target, var, self.full, self.eps, self.reduction)
