"""Every activation and loss the issue lists exists as a module and in gl.nn.functional."""
import gradlab as gl
import gradlab.nn as nn
import gradlab.nn.functional as F

ACTIVATIONS = {  # module name -> functional name
    "Identity": "identity", "Sigmoid": "sigmoid", "Tanh": "tanh", "ArcTan": "arctan",
    "ReLU": "relu", "LeakyReLU": "leaky_relu", "RReLU": "rrelu", "PReLU": "prelu",
    "BinaryStep": "binary_step", "ELU": "elu", "Softsign": "softsign", "ISRU": "isru",
    "ISRLU": "isrlu", "SQNL": "sqnl", "BipolarReLU": "bipolar_relu", "Softplus": "softplus",
    "GELU": "gelu", "SiLU": "silu", "SELU": "selu", "Softmax": "softmax",
    "LogSoftmax": "log_softmax",
}
LOSSES = {
    "MSELoss": "mse_loss", "L1Loss": "l1_loss", "CrossEntropyLoss": "cross_entropy",
    "NLLLoss": "nll_loss", "BCELoss": "binary_cross_entropy",
    "BCEWithLogitsLoss": "binary_cross_entropy_with_logits", "KLDivLoss": "kl_div",
    "HuberLoss": "huber_loss", "SmoothL1Loss": "smooth_l1_loss",
    "MultiMarginLoss": "multi_margin_loss", "HingeEmbeddingLoss": "hinge_embedding_loss",
    "PoissonNLLLoss": "poisson_nll_loss", "GaussianNLLLoss": "gaussian_nll_loss",
}
LAYERS = {"Linear": "linear", "Dropout": "dropout", "BatchNorm1d": "batch_norm",
          "LayerNorm": "layer_norm", "Flatten": "flatten"}


def test_every_listed_module_and_function_exists():
    missing = [name for table in (ACTIVATIONS, LOSSES, LAYERS) for name in table
               if not (isinstance(getattr(nn, name, None), type) and
                       issubclass(getattr(nn, name), nn.Module))]
    missing += [fn for table in (ACTIVATIONS, LOSSES, LAYERS) for fn in table.values()
                if not callable(getattr(F, fn, None))]
    assert missing == []


def test_top_level_exports():
    for name in ("nn", "optim", "save", "load", "SerializationError"):
        assert hasattr(gl, name), name
    for name in ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "NAdam",
                 "RAdam"):
        assert issubclass(getattr(gl.optim, name), gl.optim.Optimizer)
    assert callable(gl.nn.utils.clip_grad_norm_) and callable(gl.nn.utils.clip_grad_value_)
