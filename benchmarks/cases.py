"""Benchmark cases, each built for gradlab and (when installed) PyTorch from the same data."""
from __future__ import annotations

import numpy as np

import gradlab as gl
from gradlab.functional import linear

from .harness import torch

MLP_SHAPES = {
    "tiny": ((2, 16, 16, 3), 64),
    "small": ((64, 64, 64, 10), 64),
    "mnist": ((784, 512, 256, 10), 256),
    "wide": ((784, 1024, 1024, 10), 512),
}


def mlp_data(sizes, batch, seed=0):
    rng = np.random.default_rng(seed)
    weights = [(rng.standard_normal((o, i)) / np.sqrt(i)).astype(np.float32)
               for i, o in zip(sizes[:-1], sizes[1:])]
    biases = [np.zeros(o, np.float32) for o in sizes[1:]]
    x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], batch)
    return weights, biases, x, y


def _gl_cross_entropy(logits, y_onehot, y):
    nn = getattr(gl, "nn", None)
    if nn is not None and hasattr(nn, "functional") and hasattr(nn.functional, "cross_entropy"):
        return nn.functional.cross_entropy(logits, y)
    return -(logits.log_softmax(1) * y_onehot).sum() * (1.0 / logits.shape[0])


def mlp_forward_backward(sizes, batch):
    """Forward + backward of a ReLU MLP with cross-entropy (no optimizer step)."""
    weights, biases, x, y = mlp_data(sizes, batch)
    params = []
    for w, b in zip(weights, biases):
        params += [gl.tensor(w, requires_grad=True), gl.tensor(b, requires_grad=True)]
    gx, gy = gl.tensor(x), gl.tensor(y)
    onehot = gl.tensor(np.eye(sizes[-1], dtype=np.float32)[y])
    n_layers = len(weights)

    def gl_step():
        h = gx
        for k in range(n_layers):
            h = linear(h, params[2 * k], params[2 * k + 1])
            if k < n_layers - 1:
                h = h.relu()
        _gl_cross_entropy(h, onehot, gy).backward()
        for p in params:
            p.grad = None

    torch_step = None
    if torch is not None:
        tparams = []
        for w, b in zip(weights, biases):
            tparams += [torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True)]
        tx, ty = torch.tensor(x), torch.tensor(y)
        F = torch.nn.functional

        def torch_step():
            h = tx
            for k in range(n_layers):
                h = F.linear(h, tparams[2 * k], tparams[2 * k + 1])
                if k < n_layers - 1:
                    h = h.relu()
            F.cross_entropy(h, ty).backward()
            for p in tparams:
                p.grad = None

    return gl_step, torch_step
