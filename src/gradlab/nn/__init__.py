"""``gl.nn``: modules, parameters, layers, activations, losses, init and utils."""
from . import functional, init, utils
from .activation import (
                         ELU,
                         GELU,
                         ISRLU,
                         ISRU,
                         SELU,
                         SQNL,
                         ArcTan,
                         BinaryStep,
                         BipolarReLU,
                         LeakyReLU,
                         LogSoftmax,
                         PReLU,
                         ReLU,
                         RReLU,
                         Sigmoid,
                         SiLU,
                         Softmax,
                         Softplus,
                         Softsign,
                         Tanh,
)
from .containers import ModuleDict, ModuleList, Sequential
from .layers import BatchNorm1d, Dropout, Flatten, Identity, LayerNorm, Linear
from .loss import (
                         BCELoss,
                         BCEWithLogitsLoss,
                         CrossEntropyLoss,
                         GaussianNLLLoss,
                         HingeEmbeddingLoss,
                         HuberLoss,
                         KLDivLoss,
                         L1Loss,
                         MSELoss,
                         MultiMarginLoss,
                         NLLLoss,
                         PoissonNLLLoss,
                         SmoothL1Loss,
)
from .module import Module
from .parameter import Parameter

__all__ = [
    "ArcTan", "BCELoss", "BCEWithLogitsLoss", "BatchNorm1d", "BinaryStep", "BipolarReLU",
    "CrossEntropyLoss", "Dropout", "ELU", "Flatten", "GELU", "GaussianNLLLoss",
    "HingeEmbeddingLoss", "HuberLoss", "ISRLU", "ISRU", "Identity", "KLDivLoss", "L1Loss",
    "LayerNorm", "LeakyReLU", "Linear", "LogSoftmax", "MSELoss", "Module", "ModuleDict",
    "ModuleList", "MultiMarginLoss", "NLLLoss", "PReLU", "Parameter", "PoissonNLLLoss", "RReLU",
    "ReLU", "SELU", "SQNL", "Sequential", "SiLU", "Sigmoid", "SmoothL1Loss", "Softmax",
    "Softplus", "Softsign", "Tanh", "functional", "init", "utils",
]
