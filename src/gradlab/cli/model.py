"""What the CLI builds from its options: the MLP, the optimizer and the LR schedule.

Module-level functions, so that search trials can run them in worker processes."""
from __future__ import annotations

ACTIVATIONS = {"relu": "ReLU", "leaky_relu": "LeakyReLU", "elu": "ELU", "selu": "SELU",
               "gelu": "GELU", "silu": "SiLU", "tanh": "Tanh", "sigmoid": "Sigmoid",
               "softplus": "Softplus"}
OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop",
              "adagrad": "Adagrad", "adadelta": "Adadelta", "adamax": "Adamax",
              "nadam": "NAdam", "radam": "RAdam"}
SCHEDULES = ("none", "step", "exponential", "cosine", "plateau", "onecycle")


class ConfigError(ValueError):
    """A CLI option value that cannot be used; the message lists the valid choices."""


def parse_hidden(text):
    """'128,64' -> [128, 64]; '' or 'none' -> [] (a linear model)."""
    if isinstance(text, (list, tuple)):
        return [int(h) for h in text]
    text = str(text).strip()
    if text.lower() in ("", "none"):
        return []
    sizes = []
    for part in text.split(","):
        try:
            size = int(part)
        except ValueError:
            raise ConfigError(f"--hidden {text!r}: {part.strip()!r} is not an integer; give "
                              "layer widths like 128,64") from None
        if size < 1:
            raise ConfigError(f"--hidden {text!r}: layer widths must be >= 1, got {size}")
        sizes.append(size)
    return sizes


def build_mlp(in_features, classes, hidden=(128, 64), activation="relu", dropout=0.0,
              batchnorm=False):
    """Linear -> [BatchNorm1d] -> activation -> [Dropout] per hidden layer, then a Linear
    to ``classes`` logits."""
    from .. import nn
    if activation not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {activation!r}; valid choices: "
                          f"{', '.join(ACTIVATIONS)}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"--dropout must be in [0, 1), got {dropout}")
    layers, width = [], in_features
    for size in parse_hidden(hidden):
        layers.append(nn.Linear(width, size))
        if batchnorm:
            layers.append(nn.BatchNorm1d(size))
        layers.append(getattr(nn, ACTIVATIONS[activation])())
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = size
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)


def default_lr(name):
    """The learning rate optimizer ``name`` defaults to in gl.optim (PyTorch's defaults):
    the CLI's --lr when none is given."""
    import inspect

    from .. import optim
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; valid choices: {', '.join(OPTIMIZERS)}")
    return float(inspect.signature(getattr(optim, OPTIMIZERS[name])).parameters["lr"].default)


def build_optimizer(name, params, lr=None, momentum=0.0, weight_decay=0.0):
    from .. import optim
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; valid choices: {', '.join(OPTIMIZERS)}")
    if lr is None:
        lr = default_lr(name)
    if lr <= 0:
        raise ConfigError(f"--lr must be > 0, got {lr}")
    cls = getattr(optim, OPTIMIZERS[name])
    kwargs = {"lr": lr, "weight_decay": weight_decay}
    if name in ("sgd", "rmsprop"):
        kwargs["momentum"] = momentum
    elif momentum:
        raise ConfigError(f"--momentum applies to sgd and rmsprop, not {name} (Adam's betas "
                          "play that role)")
    return cls(params, **kwargs)


def build_schedule(name, optimizer, epochs, steps_per_epoch, lr):
    from ..optim import lr_scheduler as S
    if name not in SCHEDULES:
        raise ConfigError(f"unknown schedule {name!r}; valid choices: {', '.join(SCHEDULES)}")
    if name == "none":
        return None
    if name == "step":
        return S.StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.1)
    if name == "exponential":
        return S.ExponentialLR(optimizer, gamma=0.95)
    if name == "cosine":
        return S.CosineAnnealingLR(optimizer, T_max=epochs)
    if name == "plateau":
        return S.ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=3)
    return S.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)


def build_trial(fixed, config):
    """Model, loss, optimizer and schedule for one search trial: ``config`` (the sampled
    values) overrides ``fixed`` (the other CLI options, plus in_features, classes and
    n_train, the number of training samples)."""
    from .. import nn
    c = {**fixed, **config}
    model = build_mlp(c["in_features"], c["classes"], c["hidden"], c["activation"],
                      float(c["dropout"]), bool(c["batchnorm"]))
    # lr None: not given and not searched, while the optimizer is: each trial's own default
    lr = default_lr(c["optimizer"]) if c["lr"] is None else float(c["lr"])
    optimizer = build_optimizer(c["optimizer"], model.parameters(), lr,
                                float(c["momentum"]), float(c["weight_decay"]))
    steps_per_epoch = -(-int(c["n_train"]) // int(c["batch_size"]))
    scheduler = build_schedule(c["schedule"], optimizer, int(c["epochs"]), steps_per_epoch,
                               lr)
    return model, nn.CrossEntropyLoss(), optimizer, scheduler
