"""``gl.nn.functional`` (import as F): every layer and loss as a function."""
from ..functional.activation import (
                                     arctan,
                                     binary_step,
                                     bipolar_relu,
                                     elu,
                                     gelu,
                                     identity,
                                     isrlu,
                                     isru,
                                     leaky_relu,
                                     log_softmax,
                                     prelu,
                                     relu,
                                     rrelu,
                                     selu,
                                     sigmoid,
                                     silu,
                                     softmax,
                                     softplus,
                                     softsign,
                                     sqnl,
                                     tanh,
)
from ..functional.dropout import dropout
from ..functional.loss import (
                                     binary_cross_entropy,
                                     binary_cross_entropy_with_logits,
                                     cross_entropy,
                                     gaussian_nll_loss,
                                     hinge_embedding_loss,
                                     huber_loss,
                                     kl_div,
                                     l1_loss,
                                     mse_loss,
                                     multi_margin_loss,
                                     nll_loss,
                                     poisson_nll_loss,
                                     smooth_l1_loss,
)
from ..functional.matmul import linear
from ..functional.normalization import batch_norm, layer_norm, normalize
from ..functional.shape import flatten, one_hot

atan = arctan
swish = silu

__all__ = [
    "arctan", "atan", "batch_norm", "binary_cross_entropy", "binary_cross_entropy_with_logits",
    "binary_step", "bipolar_relu", "cross_entropy", "dropout", "elu", "flatten",
    "gaussian_nll_loss", "gelu", "hinge_embedding_loss", "huber_loss", "identity", "isrlu", "isru",
    "kl_div", "l1_loss", "layer_norm", "leaky_relu", "linear", "log_softmax", "mse_loss",
    "multi_margin_loss", "nll_loss", "normalize", "one_hot", "poisson_nll_loss", "prelu",
    "relu", "rrelu", "selu", "sigmoid", "silu", "smooth_l1_loss", "softmax", "softplus",
    "softsign", "sqnl", "swish", "tanh",
]
