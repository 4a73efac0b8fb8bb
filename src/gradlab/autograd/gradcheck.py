"""gradcheck: compare backward() with central finite differences in float64."""
from __future__ import annotations

import numpy as np

from .grad_mode import enable_grad, no_grad
from .tensor import Tensor


class GradcheckError(AssertionError):
    """The analytic and numerical gradients disagree."""


def gradcheck(fn, inputs, *, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True,
              seed=0):
    """Check d fn(inputs) / d inputs against central differences.

    ``fn`` returns a tensor (or a tuple of tensors). Its outputs are contracted with a
    fixed random cotangent ``v`` into the scalar ``L = sum(v * out)``; the gradient of
    ``L`` from ``backward()`` must match ``(L(x + eps) - L(x - eps)) / (2 eps)`` for every
    element of every input that requires grad, within ``atol + rtol * |numerical|``.
    Inputs that require grad must be float64 (float32 differences are too coarse).

    Returns True, or raises GradcheckError naming the input, the worst element and both
    values (returns False instead when ``raise_exception=False``).
    """
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad; pass tensors created with "
                         "requires_grad=True")
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise ValueError(f"gradcheck: input {i} is {inputs[i].dtype}; finite differences "
                             f"need float64 inputs (create them with dtype=gl.float64)")

    rng = np.random.default_rng(seed)
    cotangents = None

    def scalar_loss():
        nonlocal cotangents
        outs = fn(*inputs)
        outs = outs if isinstance(outs, (tuple, list)) else (outs,)
        outs = [o for o in outs if isinstance(o, Tensor) and o.dtype.kind == "f"]
        if cotangents is None:
            cotangents = [o._backend.asarray(rng.standard_normal(o.shape)) for o in outs]
        total = None
        for o, v in zip(outs, cotangents):
            term = (o * Tensor._wrap(v.astype(o.dtype), o._backend)).sum()
            total = term if total is None else total + term
        return total

    for i in checked:
        inputs[i].grad = None
    with enable_grad():
        loss = scalar_loss()
        if loss is None:
            raise ValueError("gradcheck: fn returned no floating-point tensor")
        if loss.requires_grad:
            loss.backward()

    worst = None
    with no_grad():
        for i in checked:
            x = inputs[i]
            analytic = (x._backend.to_numpy(x.grad._data) if x.grad is not None
                        else np.zeros(x.shape))
            numeric = np.zeros(x.shape)
            flat = x._data.reshape(-1)  # a view: perturbing it perturbs the input
            if flat.base is None and x._data.size:
                raise ValueError(f"gradcheck: input {i} is not contiguous; pass "
                                 "x.contiguous()")
            for k in range(x._data.size):
                orig = flat[k].item()
                flat[k] = orig + eps
                up = scalar_loss().item()
                flat[k] = orig - eps
                down = scalar_loss().item()
                flat[k] = orig
                numeric.reshape(-1)[k] = (up - down) / (2 * eps)
            err = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
            if err.size:
                k = int(np.argmax(err))
                if worst is None or err.reshape(-1)[k] > worst[0]:
                    idx = np.unravel_index(k, x.shape) if x.ndim else ()
                    worst = (err.reshape(-1)[k], i, idx, analytic.reshape(-1)[k],
                             numeric.reshape(-1)[k])
        for i in checked:
            inputs[i].grad = None

    if worst is not None and worst[0] > 0:
        _, i, idx, a, n = worst
        message = (f"gradcheck failed for input {i} at index {tuple(int(j) for j in idx)}: "
                   f"analytic gradient {a:.6g}, numerical {n:.6g} (difference "
                   f"{abs(a - n):.3g} exceeds atol={atol} + rtol={rtol} * |numerical|)")
        if raise_exception:
            raise GradcheckError(message)
        return False
    return True
