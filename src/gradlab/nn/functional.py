"""``gl.nn.functional`` (import as F): every layer and loss as a function."""
from ..functional.activation import (arctan, binary_step, bipolar_relu, elu, gelu, identity,
                                     isrlu, isru, leaky_relu, log_softmax, prelu, relu, rrelu,
                                     selu, sigmoid, silu, softmax, softplus, softsign, sqnl,
                                     tanh)
from ..functional.dropout import dropout
from ..functional.loss import (binary_cross_entropy, binary_cross_entropy_with_logits,
                               cross_entropy, gaussian_nll_loss, hinge_embedding_loss,
                               huber_loss, kl_div, l1_loss, mse_loss, multi_margin_loss,
                               nll_loss, poisson_nll_loss, smooth_l1_loss)
from ..functional.matmul import linear
from ..functional.normalization import batch_norm, layer_norm
from ..functional.shape import flatten

atan = arctan
swish = silu

__all__ = [n for n in dir() if not n.startswith("_")]
