"""Plots: learning curves and 2-D decision boundaries (matplotlib, the optional ``plot``
extra). They use matplotlib's object API with the Agg canvas, so they work without a
display and leave pyplot's global state alone."""
from __future__ import annotations

import numpy as np


def _figure(figsize):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("plotting needs matplotlib, which is not installed; install it "
                          "with `pip install 'gradlab[plot]'` (or `pip install matplotlib`)"
                          ) from None
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _finish(fig, path):
    """Lay out ``fig`` and, when ``path`` is given, save it there as a PNG; returns fig."""
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def plot_history(history, path=None, *, title=None):
    """Train vs validation loss (left) and, when recorded, accuracy (right) per epoch.
    Saves a PNG to ``path`` when given; returns the matplotlib Figure."""
    keys = history.keys()
    panels = ["loss"] + (["accuracy"] if "accuracy" in keys else [])
    fig = _figure((5 * len(panels), 3.6))
    epochs = history["epoch"]
    for i, name in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.plot(epochs, history[name], label=f"train {name}")
        if f"val_{name}" in keys:
            ax.plot(epochs, history[f"val_{name}"], label=f"validation {name}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return _finish(fig, path)


def plot_decision_boundary(model, X, y, path=None, *, resolution=200, margin=0.5,
                           transform=None, title=None):
    """The predicted class over a grid covering 2-D data ``X`` (N, 2), with the samples on
    top coloured by label ``y``. ``transform`` (e.g. a fitted ``StandardScaler.transform``)
    is applied to grid points before they reach the model. Returns the Figure."""
    from ..autograd import no_grad
    from ..autograd.creation import tensor
    X, y = np.asarray(X), np.asarray(y).reshape(-1)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"plot_decision_boundary needs 2-D inputs, X has shape {X.shape}")
    lo, hi = X.min(axis=0) - margin, X.max(axis=0) + margin
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], resolution),
                         np.linspace(lo[1], hi[1], resolution))
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)
    if transform is not None:
        grid = transform(grid).astype(np.float32)
    params = list(model.parameters()) if hasattr(model, "parameters") else []
    device = params[0].device if params else "cpu"
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with no_grad():
            out = model(tensor(grid, device=device))
    finally:
        model.train(was_training)
    logits = out.backend.to_numpy(out._data)
    pred = logits.argmax(axis=1) if logits.ndim == 2 and logits.shape[1] > 1 else \
        (logits.reshape(-1) > 0).astype(int)
    fig = _figure((5, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    classes = int(max(pred.max(), y.max())) + 1
    ax.contourf(gx, gy, pred.reshape(gx.shape), levels=np.arange(classes + 1) - 0.5,
                alpha=0.3, cmap="coolwarm")
    ax.scatter(X[:, 0], X[:, 1], c=y, s=10, cmap="coolwarm", edgecolors="k", linewidths=0.2)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    if title:
        ax.set_title(title)
    return _finish(fig, path)
