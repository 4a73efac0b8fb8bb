"""``gl.nn``: modules, parameters, layers, activations, losses, init and utils."""
from . import functional, init, utils
from .activation import (ELU, GELU, ISRLU, ISRU, SELU, SQNL, ArcTan, BinaryStep, BipolarReLU,
                         LeakyReLU, LogSoftmax, PReLU, ReLU, RReLU, Sigmoid, SiLU, Softmax,
                         Softplus, Softsign, Tanh)
from .containers import ModuleDict, ModuleList, Sequential
from .layers import BatchNorm1d, Dropout, Flatten, Identity, LayerNorm, Linear
from .loss import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, GaussianNLLLoss,
                   HingeEmbeddingLoss, HuberLoss, KLDivLoss, L1Loss, MSELoss, MultiMarginLoss,
                   NLLLoss, PoissonNLLLoss, SmoothL1Loss)
from .module import Module
from .parameter import Parameter

__all__ = [n for n in dir() if not n.startswith("_")]
