"""Stochastic gradient descent with momentum, Nesterov and weight decay."""
from __future__ import annotations

from .optimizer import Optimizer, check_lr, check_nonneg


class SGD(Optimizer):
    r"""SGD, PyTorch's update rule (torch.optim.SGD). For each parameter p with gradient g:

        g = -g if maximize
        g = g + weight_decay * p
        if momentum != 0:
            b = g                                   on the first step
            b = momentum * b + (1 - dampening) * g  afterwards
            g = g + momentum * b  if nesterov  else  b
        p = p - lr * g

    The course writes momentum as an exponential moving average, v = beta v + (1 - beta) g,
    p -= lr v. In PyTorch's parameters that is momentum=beta and dampening=beta (NOT
    1 - beta: PyTorch multiplies the gradient by 1 - dampening, so 1 - dampening must equal
    1 - beta). From the second step on both buffers follow the same recursion
    b = beta b + (1 - beta) g. Only the seed differs: PyTorch starts with b_1 = g_1
    (undamped), the course with v_1 = (1 - beta) g_1 (from v_0 = 0), so
    b_t - v_t = beta^t g_1, a transient that decays geometrically. Equivalently, the course
    form equals PyTorch's default heavy ball (dampening=0) run with lr * (1 - beta), up to
    the same first-step seed.

    Args: lr (default 1e-3), momentum (0), dampening (0), weight_decay (0), nesterov
    (False; needs momentum > 0 and dampening = 0), maximize (False).
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, maximize=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize))

    def _check_group(self, group):
        check_lr(group["lr"])
        for name in ("momentum", "weight_decay"):
            check_nonneg(name, group[name])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"Nesterov momentum requires a momentum > 0 and zero dampening, "
                             f"got momentum={group['momentum']!r}, "
                             f"dampening={group['dampening']!r}; pass e.g. momentum=0.9, "
                             f"dampening=0, or nesterov=False")

    def _step_group(self, group):
        params, p_arrays, g_arrays = self._with_grads(group)
        if not params:
            return
        be = params[0]._backend
        kw = self._options(group)
        kw["nesterov"] = group["nesterov"]
        if group["momentum"] == 0:
            be.sgd_step(p_arrays, g_arrays, None, first_step=False, **kw)
            return
        state = self.state
        old = ([], [], [])
        new = ([], [], [])
        fresh = []  # the states of ``new``
        xp = be.xp
        for p, pa, ga in zip(params, p_arrays, g_arrays):
            st = state[p]
            buf = st.get("momentum_buffer")
            if buf is None:  # seeded with the gradient by the kernel (first_step=True)
                buf = st["momentum_buffer"] = xp.empty_like(pa)
                dest = new
                fresh.append(st)
            else:
                dest = old
            dest[0].append(pa)
            dest[1].append(ga)
            dest[2].append(buf)
        try:
            if old[0]:
                be.sgd_step(*old, first_step=False, **kw)
            if new[0]:
                be.sgd_step(*new, first_step=True, **kw)
        except BaseException:
            # A call that raised (a bad lr) left the new buffers unseeded: kept, the next
            # step would read their garbage as momentum, where it must seed them.
            for st in fresh:
                del st["momentum_buffer"]
            raise

    def _options(self, group, step=None):
        """The backend call's arguments but the arrays, nesterov and first_step, read from
        ``group`` at this call (SGD counts no steps)."""
        return dict(lr=group["lr"], momentum=group["momentum"], dampening=group["dampening"],
                    weight_decay=group["weight_decay"], maximize=group["maximize"])

    def _prepare_group(self, group, params):
        momentum = group["momentum"] != 0
        return self._prepared_fused(
            group, params, "sgd_step", ("momentum_buffer" if momentum else None,),
            dict(nesterov=group["nesterov"], first_step=False),
            lambda g: (g["momentum"] != 0, g["nesterov"]), self._options, counted=False)
