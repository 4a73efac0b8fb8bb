"""LR schedulers against their closed-form formulas, step by step; state_dict round trips."""
import math

import pytest

import gradlab as gl
import gradlab.nn as nn
from gradlab import optim
from gradlab.optim import lr_scheduler as S


def _opt(lr=0.1, cls=optim.SGD, **kw):
    return cls([nn.Parameter(gl.ones(1))], lr=lr, **kw)


def _run(sched, n):
    """LRs of epochs 0..n-1 (the constructor applies epoch 0; each step() the next)."""
    out = [sched.get_last_lr()[0]]
    for _ in range(n - 1):
        sched.optimizer.step()
        sched.step()
        out.append(sched.get_last_lr()[0])
    return out


def test_step_lr():
    lrs = _run(S.StepLR(_opt(), step_size=3, gamma=0.5), 8)
    assert lrs == pytest.approx([0.1] * 3 + [0.05] * 3 + [0.025] * 2)


def test_multi_step_lr():
    lrs = _run(S.MultiStepLR(_opt(), milestones=[4, 2], gamma=0.1), 6)
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_exponential_lr():
    lrs = _run(S.ExponentialLR(_opt(), gamma=0.9), 5)
    assert lrs == pytest.approx([0.1 * 0.9 ** e for e in range(5)])


def test_cosine_annealing():
    lrs = _run(S.CosineAnnealingLR(_opt(), T_max=10, eta_min=0.01), 11)
    assert lrs == pytest.approx([0.01 + 0.09 * (1 + math.cos(math.pi * e / 10)) / 2
                                 for e in range(11)])
    assert lrs[0] == pytest.approx(0.1) and lrs[10] == pytest.approx(0.01)


def test_linear_lr_warmup():
    lrs = _run(S.LinearLR(_opt(), start_factor=0.25, end_factor=1.0, total_iters=3), 6)
    assert lrs == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match="start_factor"):
        S.LinearLR(_opt(), start_factor=0)


def _cyclic_expected(i, base, top, up, down, mode, gamma=1.0):
    total = up + down
    cycle = math.floor(1 + i / total)
    x = 1 + i / total - cycle
    r = up / total
    s = x / r if x <= r else (x - 1) / (r - 1)
    scale = {"triangular": 1.0, "triangular2": 1 / 2 ** (cycle - 1),
             "exp_range": gamma ** i}[mode]
    return base + (top - base) * s * scale


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
def test_cyclic_lr(mode):
    opt = _opt(momentum=0.9)
    sched = S.CyclicLR(opt, base_lr=0.01, max_lr=0.1, step_size_up=4, step_size_down=2,
                       mode=mode, gamma=0.95)
    lrs = _run(sched, 20)
    assert lrs == pytest.approx([_cyclic_expected(i, 0.01, 0.1, 4, 2, mode, 0.95)
                                 for i in range(20)])
    if mode == "triangular":
        assert lrs[:7] == pytest.approx([0.01, 0.0325, 0.055, 0.0775, 0.1, 0.055, 0.01])
    # momentum moves opposite to the rate: at the peak (i = 4 + 6k) it is base_momentum
    assert opt.param_groups[0]["momentum"] == pytest.approx(
        0.9 - 0.1 * (_cyclic_expected(19, 0, 1, 4, 2, mode, 0.95)))


def test_cyclic_lr_cycles_adam_beta1_and_rejects_optimizers_without_momentum():
    opt = _opt(cls=optim.Adam)
    S.CyclicLR(opt, 0.001, 0.01, step_size_up=2)
    assert opt.param_groups[0]["betas"] == (0.9, 0.999)  # max_momentum at i = 0
    with pytest.raises(ValueError, match="cycle_momentum"):
        S.CyclicLR(_opt(cls=optim.Adagrad), 0.001, 0.01)


def _one_cycle_expected(step, total, max_lr, pct, div, final_div, three_phase):
    init = max_lr / div
    low = init / final_div

    def cos(a, b, t):
        return b + (a - b) / 2 * (math.cos(math.pi * t) + 1)

    if three_phase:
        phases = [(pct * total - 1, init, max_lr), (2 * pct * total - 2, max_lr, init),
                  (total - 1, init, low)]
    else:
        phases = [(pct * total - 1, init, max_lr), (total - 1, max_lr, low)]
    start = 0
    for i, (end, a, b) in enumerate(phases):
        if step <= end or i == len(phases) - 1:
            return cos(a, b, (step - start) / (end - start))
        start = end


@pytest.mark.parametrize("three_phase", [False, True])
def test_one_cycle_lr(three_phase):
    opt = _opt(cls=optim.SGD, momentum=0.9)
    sched = S.OneCycleLR(opt, max_lr=1.0, total_steps=20, pct_start=0.25,
                         three_phase=three_phase)
    lrs = _run(sched, 20)
    assert lrs == pytest.approx([_one_cycle_expected(i, 20, 1.0, 0.25, 25.0, 1e4, three_phase)
                                 for i in range(20)])
    assert lrs[0] == pytest.approx(0.04) and max(lrs) == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.04 / 1e4)
    sched.step()  # step 20 == total_steps is allowed (PyTorch's bound), 21 is not
    with pytest.raises(ValueError, match="total_steps is 20"):
        sched.step()


def test_one_cycle_momentum_and_linear_anneal():
    opt = _opt(momentum=0.9)
    sched = S.OneCycleLR(opt, max_lr=0.5, epochs=2, steps_per_epoch=5, pct_start=0.5,
                         anneal_strategy="linear", base_momentum=0.8, max_momentum=0.9)
    assert opt.param_groups[0]["momentum"] == pytest.approx(0.9)
    lrs = _run(sched, 5)  # first phase: 0.02 -> 0.5 linearly over steps 0..4
    assert lrs == pytest.approx([0.02 + (0.5 - 0.02) * i / 4 for i in range(5)])
    assert opt.param_groups[0]["momentum"] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="total_steps"):
        S.OneCycleLR(_opt(), max_lr=0.1)


def test_reduce_lr_on_plateau():
    opt = _opt(lr=1.0)
    sched = S.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=2, cooldown=1,
                                min_lr=0.2)
    metrics = [10, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9]
    lrs = []
    for m in metrics:
        sched.step(m)
        lrs.append(sched.get_last_lr()[0])
    # bad epochs after epoch 1: 1, 2, 3 > patience -> halve at epoch 4; cooldown eats one;
    # then 1, 2, 3 -> halve at epoch 8 (0.25); then the min_lr floor 0.2
    assert lrs == pytest.approx([1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25])
    for _ in range(10):
        sched.step(9)
    assert sched.get_last_lr()[0] == pytest.approx(0.2)


def test_reduce_lr_on_plateau_max_mode_and_thresholds():
    sched = S.ReduceLROnPlateau(_opt(lr=1.0), mode="max", patience=0, threshold=0.1,
                                threshold_mode="abs")
    sched.step(1.0)
    sched.step(1.05)  # not better by 0.1 -> one bad epoch > patience 0 -> reduce
    assert sched.get_last_lr()[0] == pytest.approx(0.1)
    assert sched.is_better(1.2, 1.0) and not sched.is_better(1.05, 1.0)
    rel = S.ReduceLROnPlateau(_opt(), threshold=0.1)
    assert rel.is_better(0.89, 1.0) and not rel.is_better(0.91, 1.0)
    with pytest.raises(ValueError, match="factor must be < 1.0"):
        S.ReduceLROnPlateau(_opt(), factor=1.0)


@pytest.mark.parametrize("make", [
    lambda o: S.StepLR(o, 2, 0.5),
    lambda o: S.MultiStepLR(o, [2, 5]),
    lambda o: S.ExponentialLR(o, 0.9),
    lambda o: S.CosineAnnealingLR(o, 7),
    lambda o: S.LinearLR(o, 0.5, total_iters=4),
    lambda o: S.CyclicLR(o, 0.01, 0.1, step_size_up=3, mode="triangular2"),
    lambda o: S.OneCycleLR(o, 0.5, total_steps=12),
])
def test_state_dict_resume(make):
    opt_a = _opt(momentum=0.9)
    a = make(opt_a)
    _run(a, 4)
    saved = gl.load(_buffer(a.state_dict()))
    opt_b = _opt(momentum=0.9)
    b = make(opt_b)
    b.load_state_dict(saved)
    opt_b.param_groups[0].update({k: v for k, v in opt_a.param_groups[0].items()
                                  if k != "params"})
    assert _run(a, 6)[1:] == pytest.approx(_run(b, 6)[1:])


def test_plateau_state_dict_resume():
    a = S.ReduceLROnPlateau(_opt(lr=1.0), patience=1)
    for m in [3, 2, 2]:
        a.step(m)
    b = S.ReduceLROnPlateau(_opt(lr=1.0), patience=1)
    b.load_state_dict(gl.load(_buffer(a.state_dict())))
    assert b.best == 2 and b.num_bad_epochs == a.num_bad_epochs


def _buffer(obj):
    import io
    buf = io.BytesIO()
    gl.save(obj, buf)
    buf.seek(0)
    return buf


def test_scheduler_needs_an_optimizer():
    with pytest.raises(TypeError, match="Optimizer"):
        S.StepLR(object(), 1)
