"""The Backend interface: everything above this layer talks to arrays only through it.

A Backend bundles
- ``xp``: the array module (numpy or cupy) that ops write their math with;
- random state: a seeded ``Generator`` for ordinary draws (init, shuffling) and a
  counter-based (seed, offset) pair for dropout, so that masks are a pure function of
  (seed, offset, element index) on every backend;
- transfers to and from host memory;
- the fused kernel entry points (optimizer steps, dropout, softmax-cross-entropy, a bias
  with its ReLU, normalization), each with ONE signature here; each runs its op's table
  (backend/fused), which picks the implementation for this backend at every call (NumPy,
  numba or CUDA).
"""
from __future__ import annotations

import threading

import numpy as np

from .fused import bias_relu as _bias_relu
from .fused import dropout as _dropout
from .fused import normalization as _normalization
from .fused import optim as _optim
from .fused import softmax_ce as _softmax_ce


class Device:
    """Where a tensor lives: ``Device("cpu")``, ``Device("cuda")``, ``Device("cuda:1")``."""

    __slots__ = ("type", "index")

    def __init__(self, spec="cpu", index=None):
        if isinstance(spec, Device):
            self.type, self.index = spec.type, spec.index
            return
        if not isinstance(spec, str):
            raise TypeError(f"device must be a string like 'cpu' or 'cuda:0', got {spec!r}")
        kind, _, idx = spec.strip().lower().partition(":")
        if kind not in ("cpu", "cuda"):
            raise ValueError(
                f"unknown device {spec!r}: expected 'cpu', 'cuda', 'cuda:N' or 'auto'")
        if idx:
            if not idx.isdigit():
                raise ValueError(f"bad device index in {spec!r}: expected e.g. 'cuda:0'")
            index = int(idx)
        if kind == "cpu":
            index = None
        elif index is None:
            index = 0
        self.type, self.index = kind, index

    def __eq__(self, other):
        if isinstance(other, str):
            try:
                other = Device(other)
            except ValueError:
                return False
        return isinstance(other, Device) and (self.type, self.index) == (other.type, other.index)

    def __hash__(self):
        return hash((self.type, self.index))

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self):
        return f"device(type='{self.type}'" + (
            "" if self.index is None else f", index={self.index}") + ")"


class RandomState(threading.local):
    """Per-thread random state of one backend.

    Thread-local so that two threads training two models do not interleave draws; a new
    thread starts from the seed last given to ``manual_seed`` (or the default seed).
    """

    default_seed = 0

    def __init__(self, make_generator):
        self._make_generator = make_generator
        self.reseed(RandomState.default_seed)

    def reseed(self, seed):
        # Counted (per thread, as the state is) so that the compiled step can tell that a
        # step it recorded reseeded: a replay runs no Python between ops, so it would not.
        self.restarts = getattr(self, "restarts", 0) + 1
        self.seed = int(seed)
        self.generator = self._make_generator(self.seed)
        # Counter-based stream for dropout: the key is derived from the seed, the offset
        # advances by the number of draws each call consumes.
        self.philox_key = int(seed) & 0xFFFFFFFFFFFFFFFF
        self.philox_offset = 0

    def take_philox(self, n):
        """Reserve ``n`` counter values; returns (key, offset of the first)."""
        offset = self.philox_offset
        self.philox_offset = offset + int(n)
        return self.philox_key, offset

    def get_state(self):
        return {"seed": self.seed,
                "generator": self.generator.bit_generator.state,
                "philox_key": self.philox_key,
                "philox_offset": self.philox_offset}

    def set_state(self, state):
        self.restarts += 1
        self.seed = state["seed"]
        self.generator = self._make_generator(self.seed)
        self.generator.bit_generator.state = state["generator"]
        self.philox_key = state["philox_key"]
        self.philox_offset = state["philox_offset"]


class GraphCaptureUnsupported(RuntimeError):
    """Work that CuPy cannot capture into a CUDA graph was issued while a stream captured (a
    GEMM that cuBLAS would run: CupyBackend.matrix_product; a draw from CuPy's generator:
    CupyBackend.draw of a randint wider than 2**53). Raised before anything is enqueued;
    the compiled step then replays that signature without a graph."""


class Backend:
    """Base of the NumPy and CuPy backends. Subclasses set the class attributes and
    implement the transfer and kernel methods."""

    name: str = "?"
    xp = np
    ndarray: type = np.ndarray

    def __init__(self, device: Device):
        self.device = device
        self.random = RandomState(self._make_generator)

    def __repr__(self):
        return f"<{type(self).__name__} {self.device}>"

    # One backend per device in a process, which every tensor there shares (with its random
    # state): a copy of a tensor is a tensor on the same device.
    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    # -- arrays -------------------------------------------------------------------------
    def _make_generator(self, seed):  # pragma: no cover - abstract
        raise NotImplementedError

    def asarray(self, data, dtype=None):
        """Array on this backend's device from host data, a NumPy array or an array of
        this backend."""
        raise NotImplementedError

    def to_numpy(self, array) -> np.ndarray:
        raise NotImplementedError

    def scatter_add(self, target, index, values):
        """``target[index] += values`` where repeated indices accumulate."""
        raise NotImplementedError

    def synchronize(self):
        """Wait for queued device work (no-op on the CPU)."""

    def matrix_product(self, a, b):
        """a @ b of two matrices of this backend (the 2-D products of matmul and linear)."""
        raise NotImplementedError

    def concatenate(self, arrays, axis):
        """The arrays joined along ``axis`` (Cat's forward)."""
        return self.xp.concatenate(arrays, axis=axis)

    def stack(self, arrays, axis):
        """The arrays stacked along a new ``axis`` (Stack's forward)."""
        return self.xp.stack(arrays, axis=axis)

    def check(self, bad, error):
        """Raise ``error(i)``, i the flat index of the first true element of the bool array
        ``bad``, if there is one. (The CUDA backend, inside a graph capture, reads it after
        the launch instead: an op's check of its inputs' values needs no host read then.)"""
        if bool(bad.any()):
            raise error(int(bad.reshape(-1).argmax()))

    def uniform(self, low, high, shape, dtype):
        """Draws from U(low, high) as ``dtype``, from this thread's generator (RReLU's
        slopes). The CUDA backend draws these and draw()'s from the Philox stream
        instead (fused/random), which a CUDA graph can replay."""
        return self.random.generator.uniform(low, high, shape).astype(dtype, copy=False)

    def draw(self, kind, size, dtype, generator=None, low=0, high=None):
        """The random factories' draws as ``dtype``: "rand" U[0, 1), "randn" N(0, 1),
        "randint" integers in [low, high), "randperm" a permutation of range(size[0]); from
        ``generator`` (a gl.Generator, CPU only),
        else this thread's."""
        gen = generator if generator is not None else self.random.generator
        if kind == "randint":
            return gen.integers(low, high, size=size).astype(dtype, copy=False)
        if kind == "randperm":
            n, = size
            if hasattr(gen, "permutation"):
                return gen.permutation(n).astype(dtype, copy=False)
            # CuPy's Generator has no permutation(): rank n uniform draws instead
            return self.xp.argsort(gen.random(n)).astype(dtype, copy=False)
        drawn = np.float32 if dtype == np.float16 else dtype  # (no float16 draws)
        if kind == "rand":
            return gen.random(size, dtype=drawn).astype(dtype, copy=False)
        return gen.standard_normal(size, dtype=drawn).astype(dtype, copy=False)

    # -- fused kernels ------------------------------------------------------------------
    # One signature each; the body calls the op's table in backend/fused, which runs the
    # reference (NumPy), numba or CUDA implementation for this backend. Every list
    # argument holds arrays of ONE dtype (float32 or float64) updated IN PLACE; a group
    # of tensors is one call (on CUDA, one multi-tensor launch). Optional state lists are
    # None when the option that needs them is off. Semantics are PyTorch's documented
    # update rules (torch.optim); ``maximize`` negates the gradient first.

    def sgd_step(self, params, grads, momentum_buffers, *, lr, momentum, dampening,
                 nesterov, weight_decay, maximize, first_step):
        """g = grad (+ weight_decay * p); with momentum: b = g on the first step, else
        b = momentum * b + (1 - dampening) * g; g = g + momentum * b if nesterov else b;
        p -= lr * g. ``momentum_buffers`` is None when momentum == 0."""
        run = _optim.sgd_step.pick(self)
        return run(params, grads, momentum_buffers, lr=lr, momentum=momentum,
                   dampening=dampening, nesterov=nesterov, weight_decay=weight_decay,
                   maximize=maximize, first_step=first_step)

    def adam_step(self, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, *, step, lr,
                  beta1, beta2, eps, weight_decay, decoupled_weight_decay, amsgrad,
                  maximize):
        """Adam (decoupled_weight_decay=False: g += wd * p) and AdamW (True: p *= 1 - lr*wd).
        m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; vmax = max(vmax, v) if amsgrad;
        p -= lr / (1 - b1^step) * m / (sqrt(v_or_vmax) / sqrt(1 - b2^step) + eps).
        ``step`` is the 1-based step count after incrementing. ``max_exp_avg_sqs`` is None
        unless amsgrad."""
        run = _optim.adam_step.pick(self)
        return run(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, step=step, lr=lr,
                   beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                   decoupled_weight_decay=decoupled_weight_decay, amsgrad=amsgrad,
                   maximize=maximize)

    def prepare_optimizer_step(self, op, params, states, **flags):
        """The optimizer step ``op`` (any of the ``*_step`` methods' names: "adam_step",
        "sgd_step", ...) for a caller that steps the same arrays again and
        again (the compiled training step): a callable ``run(grads, options)`` that does
        what ``op`` does with these params and states and returns True, or does nothing and
        returns False (the tier changed, or the grads do not fit the params): make the plain
        call then. ``states``: the op's state lists in its argument order (None for one that
        is off); ``flags``: its arguments that choose states or loops (amsgrad; nesterov and
        first_step; centered), fixed here; ``options``: a dict of the others, read at every
        call (one dict handed down, not keyword arguments re-packed at each layer). The
        caller keeps the arrays alive and never replaces them while it uses ``run``."""
        return _optim.prepare_step(self, op, params, states, **flags)

    def rmsprop_step(self, params, grads, square_avgs, momentum_buffers, grad_avgs, *, lr,
                     alpha, eps, weight_decay, momentum, centered, maximize):
        """v = alpha v + (1-alpha) g^2; if centered: a = alpha a + (1-alpha) g,
        avg = sqrt(v - a^2) + eps, else avg = sqrt(v) + eps; with momentum:
        b = momentum b + g / avg, p -= lr b; else p -= lr g / avg.
        ``momentum_buffers`` is None when momentum == 0, ``grad_avgs`` None unless centered."""
        run = _optim.rmsprop_step.pick(self)
        return run(params, grads, square_avgs, momentum_buffers, grad_avgs, lr=lr, alpha=alpha,
                   eps=eps, weight_decay=weight_decay, momentum=momentum, centered=centered,
                   maximize=maximize)

    def adagrad_step(self, params, grads, state_sums, *, step, lr, lr_decay, weight_decay,
                     eps, maximize):
        """clr = lr / (1 + (step - 1) lr_decay); s += g^2; p -= clr g / (sqrt(s) + eps)."""
        run = _optim.adagrad_step.pick(self)
        return run(params, grads, state_sums, step=step, lr=lr, lr_decay=lr_decay,
                   weight_decay=weight_decay, eps=eps, maximize=maximize)

    def adadelta_step(self, params, grads, square_avgs, acc_deltas, *, lr, rho, eps,
                      weight_decay, maximize):
        """v = rho v + (1-rho) g^2; d = sqrt(u + eps) / sqrt(v + eps) g;
        u = rho u + (1-rho) d^2; p -= lr d."""
        run = _optim.adadelta_step.pick(self)
        return run(params, grads, square_avgs, acc_deltas, lr=lr, rho=rho, eps=eps,
                   weight_decay=weight_decay, maximize=maximize)

    def adamax_step(self, params, grads, exp_avgs, exp_infs, *, step, lr, beta1, beta2, eps,
                    weight_decay, maximize):
        """m = b1 m + (1-b1) g; u = max(b2 u, |g| + eps); p -= lr / (1 - b1^step) m / u."""
        run = _optim.adamax_step.pick(self)
        return run(params, grads, exp_avgs, exp_infs, step=step, lr=lr, beta1=beta1,
                   beta2=beta2, eps=eps, weight_decay=weight_decay, maximize=maximize)

    def nadam_step(self, params, grads, exp_avgs, exp_avg_sqs, *, step, lr, beta1, beta2, eps,
                   weight_decay, decoupled_weight_decay, momentum_decay, mu_product,
                   maximize):
        """NAdam: m, v as Adam's; denom = sqrt(v / (1 - b2^step)) + eps;
        p -= lr (1 - mu_t) / (1 - P_t) g / denom + lr mu_{t+1} / (1 - P_t mu_{t+1}) m / denom,
        with P_t = mu_product mu_t (``mu_product``: the product of the earlier mu_i; the
        caller keeps scalars.nadam_mu_product as its state)."""
        run = _optim.nadam_step.pick(self)
        return run(params, grads, exp_avgs, exp_avg_sqs, step=step, lr=lr, beta1=beta1,
                   beta2=beta2, eps=eps, weight_decay=weight_decay,
                   decoupled_weight_decay=decoupled_weight_decay,
                   momentum_decay=momentum_decay, mu_product=mu_product, maximize=maximize)

    def radam_step(self, params, grads, exp_avgs, exp_avg_sqs, *, step, lr, beta1, beta2, eps,
                   weight_decay, decoupled_weight_decay, maximize):
        """RAdam: m, v as Adam's; once rho_step > 5, p -= lr r_t sqrt(1 - b2^step) /
        (1 - b1^step) m / (sqrt(v) + eps), before that p -= lr / (1 - b1^step) m."""
        run = _optim.radam_step.pick(self)
        return run(params, grads, exp_avgs, exp_avg_sqs, step=step, lr=lr, beta1=beta1,
                   beta2=beta2, eps=eps, weight_decay=weight_decay,
                   decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)

    def dropout_forward(self, x, p, key, offset):
        """Inverted dropout. Element i is kept when the counter-based uniform draw
        u(key, offset, i) >= p; kept elements are scaled by 1/(1-p). Returns (y, mask) with
        mask packed 1 bit per element (bit i % 32 of uint32 word i // 32). p == 0 keeps
        everything, p == 1 drops everything (y = 0). The draws are the same on every
        backend, so CPU and GPU masks are bit-identical for the same key and offset."""
        return _dropout.dropout_forward.pick(self, x, p, key, offset)(x, p, key, offset)

    def dropout_backward(self, grad, mask, p):
        """grad * kept / (1 - p) with the mask dropout_forward returned (0 where p == 1)."""
        return _dropout.dropout_backward.pick(self)(grad, mask, p)

    def bias_relu_forward(self, y, bias):
        """max(y + bias, 0) for y (..., C) and bias (C,), as a Linear's bias then a ReLU
        compute it; y is overwritten and returned (a new array only where a kernel needs a
        contiguous copy: use the result)."""
        return _bias_relu.bias_relu_forward.pick(self, y, bias)(y, bias)

    def bias_relu_backward(self, grad, out):
        """(grad * (out > 0), its sums over every dim but the last): the gradient before a
        ReLU whose output is ``out``, and the gradient of the bias added before it."""
        return _bias_relu.bias_relu_backward.pick(self, grad, out)(grad, out)

    def bias_grad(self, grad):
        """The sums of ``grad`` (..., C) over every dim but the last: the gradient of a
        Linear's bias, as LinearFn's backward sums it."""
        return _bias_relu.bias_grad.pick(self, grad)(grad)

    def prepare_bias_grad(self, grad):
        """bias_grad for a caller that calls it again and again with arrays like ``grad``
        (FusedOp.prepare: the same results, less dispatch at each call), or None where it
        has no lean form for them (the plain dispatch is no faster than the sum itself)."""
        return _bias_relu.bias_grad.prepare(self, grad, lean_only=True)

    def bias_add(self, y, bias):
        """y + bias for y (..., C) and bias (C,), as a Linear adds its bias where no ReLU
        follows; y is overwritten and returned."""
        return _bias_relu.bias_add.pick(self, y, bias)(y, bias)

    def prepare_bias_add(self, y, bias):
        """bias_add for a caller that calls it again and again with arrays like ``y`` and
        ``bias`` (FusedOp.prepare: the same results, less dispatch at each call), or None
        where it has no lean form for them (the plain dispatch costs more than ``y +=
        bias``)."""
        return _bias_relu.bias_add.prepare(self, y, bias, lean_only=True)

    def prepare_bias_relu(self, y, bias):
        """(forward, backward): bias_relu_forward and bias_relu_backward for a caller that
        calls them again and again with arrays like ``y`` (the pre-activation, and the
        gradient and output of the ReLU) and ``bias`` (FusedOp.prepare: the same results,
        less dispatch at each call)."""
        return (_bias_relu.bias_relu_forward.prepare(self, y, bias),
                _bias_relu.bias_relu_backward.prepare(self, y, y))

    def normalize_forward(self, x, weight, bias, mean, var, eps, axes, pshape,
                          running_mean=None, running_var=None, momentum=0.0, relu=False):
        """(y, xhat, invstd): x normalized over ``axes``, xhat = (x - mean) * invstd with
        invstd = 1 / sqrt(var + eps) of shape ``pshape`` broadcast, then y = xhat * weight +
        bias (each optional, reshaped to ``pshape``), and with ``relu`` y = max(y, 0).
        ``mean`` None: the batch's statistics (biased variance), and ``running_mean``/
        ``running_var``, when given, are updated in place, running = (1 - momentum) running
        + momentum batch, with the batch's unbiased variance; else the given ``mean`` and
        ``var``. (BatchNorm and LayerNorm; ``relu``: BatchNorm then ReLU, fused.)"""
        args = (x, weight, bias, mean, var, eps, axes, pshape, running_mean, running_var,
                momentum, relu)
        return _normalization.normalize_forward.pick(self, *args)(*args)

    def normalize_backward(self, grad, xhat, invstd, weight, axes, pshape, batch_stats,
                           needs_input, needs_weight, needs_bias, relu_out=None):
        """(dx, dw, db) of normalize_forward from the gradient of y and what it returned
        (None for each gradient not needed); ``batch_stats``: whether the forward used the
        batch's statistics (x then also moved them); ``relu_out``: the forward's y when it
        ran with ``relu`` (grad is that output's gradient)."""
        args = (grad, xhat, invstd, weight, axes, pshape, batch_stats, needs_input,
                needs_weight, needs_bias, relu_out)
        return _normalization.normalize_backward.pick(self, *args)(*args)

    def prepare_normalize_forward(self, *args):
        """normalize_forward for a caller that calls it again and again with these vectors
        and arrays like these (FusedOp.prepare: the same results, less dispatch per call)."""
        return _normalization.normalize_forward.prepare(self, *args)

    def prepare_normalize_backward(self, *args):
        """normalize_backward, prepared as prepare_normalize_forward."""
        return _normalization.normalize_backward.prepare(self, *args)

    def softmax_cross_entropy(self, logits, target, weight, ignore_index, label_smoothing,
                              reduction="none"):
        """Softmax cross-entropy of (N, C) logits and (N,) integer class targets, reduced.

        Per row: loss_i = (1-s) w[y_i] (-log p_iy) + s/C sum_c w_c (-log p_ic) and
        grad_i = d loss_i / d logits[i], with w = 1 when ``weight`` is None, s =
        label_smoothing, and both zero for rows whose target equals ``ignore_index``.
        Returns (loss, grad): ``reduction`` 'none' gives the row losses (N,) and their
        gradient (N, C); 'sum' gives sum_i loss_i (0-d, the logits' dtype) and the same
        gradient; 'mean' divides both by D = sum of w[y_i] over the non-ignored rows (their
        count when weight is None; PyTorch's rule), so grad is the gradient of the returned
        loss in every case (all rows ignored: 0 / 0, nan). Targets outside [0, C) that are
        not ignore_index raise IndexError naming the first bad value."""
        args = (logits, target, weight, ignore_index, label_smoothing, reduction)
        return _softmax_ce.softmax_cross_entropy.pick(self, *args)(*args)

    def prepare_softmax_cross_entropy(self, logits, target, weight, ignore_index,
                                      label_smoothing, reduction="none"):
        """softmax_cross_entropy for a caller that calls it again and again with arguments
        like these (FusedOp.prepare: the same results, less dispatch at each call)."""
        return _softmax_ce.softmax_cross_entropy.prepare(
            self, logits, target, weight, ignore_index, label_smoothing, reduction)
