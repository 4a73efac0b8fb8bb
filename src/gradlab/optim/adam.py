"""Adam and AdamW (one fused backend step for both)."""
from __future__ import annotations

from .optimizer import Optimizer, as_betas, check_adam_family


class Adam(Optimizer):
    r"""Adam (Kingma & Ba), PyTorch's update rule. With t the step count (from 1):

        g = -g if maximize
        g = g + weight_decay * p              (Adam: L2 penalty through the gradient)
        p = p * (1 - lr * weight_decay)       (AdamW instead: decoupled decay)
        m = beta1 m + (1 - beta1) g
        v = beta2 v + (1 - beta2) g^2
        vmax = max(vmax, v) if amsgrad (then used in place of v)
        p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    Args: lr (1e-3), betas ((0.9, 0.999)), eps (1e-8), weight_decay (0), amsgrad (False),
    maximize (False). One backend ``adam_step`` call per parameter group."""

    _decoupled = False
    _step_path = Optimizer._step_path + ("_backend_step",)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, maximize=False):
        super().__init__(params, dict(lr=lr, betas=as_betas(betas), eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize))

    def _check_group(self, group):
        check_adam_family(group)

    def _step_group(self, group):
        params, p_arrays, g_arrays = self._with_grads(group)
        if not params:
            return
        be = params[0]._backend
        amsgrad = group["amsgrad"]
        arrays = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if amsgrad else \
            ("exp_avg", "exp_avg_sq")
        state = self.state
        sts = []
        step = None
        shared = True
        for p, pa in zip(params, p_arrays):
            st = state.get(p)
            # The usual step: a state with every array, counted here without _count_step's
            # call (a training step of a small model feels each microsecond per parameter)
            if st and "exp_avg" in st and "exp_avg_sq" in st and \
                    (not amsgrad or "max_exp_avg_sq" in st):
                st["step"] += 1
            else:
                st = self._count_step(p, pa, *arrays)
            sts.append(st)
            if step is None:
                step = st["step"]
            elif st["step"] != step:
                shared = False
        # Params normally share one step count; ones that missed steps (grad None) form
        # their own call, since the kernel takes one step value.
        if shared:
            self._backend_step(be, group, step, p_arrays, g_arrays, sts)
            return
        calls = {}
        for pa, ga, st in zip(p_arrays, g_arrays, sts):
            lists = calls.setdefault(st["step"], ([], [], []))
            lists[0].append(pa)
            lists[1].append(ga)
            lists[2].append(st)
        for step, (ps, gs, group_sts) in calls.items():
            self._backend_step(be, group, step, ps, gs, group_sts)

    def _options(self, group, step):
        """The arguments of one backend call but the arrays and amsgrad, read from ``group``
        at this call."""
        b1, b2 = group["betas"]
        return dict(step=step, lr=group["lr"], beta1=b1, beta2=b2, eps=group["eps"],
                    weight_decay=group["weight_decay"], decoupled_weight_decay=self._decoupled,
                    maximize=group["maximize"])

    def _backend_step(self, be, group, step, p_arrays, g_arrays, states):
        """The one fused backend call for tensors that share the step count ``step``."""
        amsgrad = group["amsgrad"]
        be.adam_step(p_arrays, g_arrays, [st["exp_avg"] for st in states],
                     [st["exp_avg_sq"] for st in states],
                     [st["max_exp_avg_sq"] for st in states] if amsgrad else None,
                     amsgrad=amsgrad, **self._options(group, step))

    def _prepare_group(self, group, params):
        amsgrad = group["amsgrad"]
        return self._prepared_fused(
            group, params, "adam_step",
            ("exp_avg", "exp_avg_sq", "max_exp_avg_sq" if amsgrad else None),
            dict(amsgrad=amsgrad), lambda g: g["amsgrad"], self._options, counted=True)


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter): before the Adam update,
    p = p * (1 - lr * weight_decay); the gradient itself is not decayed. Same arguments as
    Adam, but weight_decay defaults to 1e-2 (PyTorch's default)."""

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, maximize=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize)
