"""LR scheduler details that `make mutate` found unchecked in gradlab/optim/lr_scheduler.py:
defaults, the argument errors (and the scheduler they name), resuming through
``last_epoch=``, the edges of each formula, scale_fn, and Adam's beta1 cycling."""
import math

import pytest

import gradlab as gl
import gradlab.nn as nn
from gradlab import optim
from gradlab.optim import lr_scheduler as S


def _opt(lr=0.1, cls=optim.SGD, groups=1, **kw):
    return cls([{"params": [nn.Parameter(gl.ones(1))]} for _ in range(groups)], lr=lr, **kw)


def _lrs(sched, n):
    out = [sched.get_last_lr()[0]]
    for _ in range(n - 1):
        sched.step()
        out.append(sched.get_last_lr()[0])
    return out


def _resumed(make, epoch, **kw):
    """A scheduler built with last_epoch=epoch on an optimizer whose groups have initial_lr."""
    opt = _opt(**kw)
    for g in opt.param_groups:
        g["initial_lr"] = g["lr"]
    return make(opt, epoch)


@pytest.mark.parametrize("make, lr_next", [
    (lambda o, e: S.StepLR(o, 2, 0.5, last_epoch=e), 0.1 * 0.5 ** 2),
    (lambda o, e: S.MultiStepLR(o, [2, 3], 0.5, last_epoch=e), 0.1 * 0.25),
    (lambda o, e: S.ExponentialLR(o, 0.5, last_epoch=e), 0.1 * 0.5 ** 4),
    (lambda o, e: S.CosineAnnealingLR(o, 8, last_epoch=e), 0.05 * (1 + math.cos(math.pi / 2))),
    (lambda o, e: S.LinearLR(o, 0.5, 1.0, total_iters=8, last_epoch=e), 0.1 * 0.75),
])
def test_resuming_with_last_epoch_continues_at_the_next_epoch(make, lr_next):
    sched = _resumed(make, 3)
    assert sched.last_epoch == 4
    assert sched.get_last_lr()[0] == pytest.approx(lr_next, rel=1e-12, abs=1e-15)


def test_resuming_without_initial_lr_is_a_clear_error():
    with pytest.raises(KeyError, match=r"param 'initial_lr' is not specified in "
                                       r"param_groups\[0\] when resuming with last_epoch=3"):
        S.StepLR(_opt(), 2, last_epoch=3)


def test_cyclic_and_one_cycle_resume_with_last_epoch():
    opt = _opt(momentum=0.9)
    a = S.CyclicLR(opt, 0.01, 0.1, step_size_up=4)
    _lrs(a, 3)
    b = S.CyclicLR(opt, 0.01, 0.1, step_size_up=4, last_epoch=2)  # groups already set up
    assert b.last_epoch == 3 and b.get_last_lr()[0] == pytest.approx(0.01 + 0.09 * 3 / 4)
    opt = _opt(momentum=0.9)
    a = S.OneCycleLR(opt, 1.0, total_steps=10)
    ref = _lrs(a, 6)
    b = S.OneCycleLR(opt, 1.0, total_steps=10, last_epoch=4)
    assert b.get_last_lr()[0] == pytest.approx(ref[5], rel=1e-12)


def test_gamma_errors_name_the_scheduler():
    for cls, args in [(S.ExponentialLR, ()), (S.MultiStepLR, ([2],)), (S.StepLR, (2,))]:
        name = cls.__name__
        with pytest.raises(TypeError, match=rf"^{name}: gamma must be a number, got 'x'$"):
            cls(_opt(), *args, gamma="x")
        with pytest.raises(ValueError, match=rf"^{name}: gamma must be a finite number >= 0"):
            cls(_opt(), *args, gamma=-0.5)


def test_defaults():
    assert _lrs(S.MultiStepLR(_opt(), [1]), 2) == pytest.approx([0.1, 0.01])
    assert _lrs(S.CosineAnnealingLR(_opt(), 2), 3)[2] == pytest.approx(0.0, abs=1e-18)
    lin = _lrs(S.LinearLR(_opt()), 7)
    assert lin == pytest.approx([0.1 * (1 / 3 + 2 / 3 * min(e, 5) / 5) for e in range(7)])
    cyc = S.CyclicLR(_opt(momentum=0.9), 0.01, 0.1)
    assert cyc.total_size == 4000.0 and cyc.step_ratio == 0.5
    assert cyc.gamma == 1.0 and cyc.scale_mode == "cycle"
    exp = S.CyclicLR(_opt(momentum=0.9), 0.01, 0.1, step_size_up=2, mode="exp_range")
    assert exp.scale_mode == "iterations"
    assert _lrs(exp, 3) == pytest.approx([0.01, 0.055, 0.1])  # gamma 1: no decay
    opt = _opt(momentum=0.5)
    one = S.OneCycleLR(opt, 1.0, total_steps=10)
    assert one.three_phase is False and len(one._phases) == 2
    assert opt.param_groups[0]["momentum"] == pytest.approx(0.95)
    _lrs(one, 3)  # the peak is at pct_start 0.3 * 10 - 1 = step 2
    assert opt.param_groups[0]["momentum"] == pytest.approx(0.85)
    assert opt.param_groups[0]["max_momentum"] == 0.95
    assert opt.param_groups[0]["base_momentum"] == 0.85


def test_cosine_annealing_t_max_bounds():
    with pytest.raises(ValueError, match=r"^CosineAnnealingLR: T_max must be positive, got 0$"):
        S.CosineAnnealingLR(_opt(), 0)
    assert _lrs(S.CosineAnnealingLR(_opt(), 1), 2) == pytest.approx([0.1, 0.0], abs=1e-18)


def test_linear_lr_factor_bounds_and_zero_iterations():
    S.LinearLR(_opt(), start_factor=1.0)
    S.LinearLR(_opt(), end_factor=0.0)
    for start, end in [(0, 1.0), (1.5, 1.0), (0.5, -0.1), (0.5, 1.5)]:
        with pytest.raises(ValueError, match=rf"^LinearLR: need 0 < start_factor <= 1 and 0 <= "
                                             rf"end_factor <= 1, got {start}, {end}$"):
            S.LinearLR(_opt(), start_factor=start, end_factor=end)
    # total_iters=0: the end factor at once; total_iters=1: one step from start to end.
    assert _lrs(S.LinearLR(_opt(), 0.5, 0.8, total_iters=0), 2) == pytest.approx([0.08, 0.08])
    assert _lrs(S.LinearLR(_opt(), 0.5, 0.8, total_iters=1), 3) == \
        pytest.approx([0.05, 0.08, 0.08])


def test_per_group_values_must_match_the_groups():
    opt = _opt(groups=2, momentum=0.9)
    for kw, name in [({"base_lr": [0.1]}, "base_lr"), ({"max_lr": [0.1]}, "max_lr"),
                     ({"base_momentum": [0.8]}, "base_momentum"),
                     ({"max_momentum": [0.9]}, "max_momentum")]:
        args = {"base_lr": 0.01, "max_lr": 0.1, **kw}
        with pytest.raises(ValueError, match=rf"^expected 2 values of {name} \(one per group\),"
                                             rf" got 1$"):
            S.CyclicLR(opt, **args)
    for kw, name in [({"max_lr": [0.1]}, "max_lr"), ({"base_momentum": [0.8]}, "base_momentum"),
                     ({"max_momentum": [0.9]}, "max_momentum")]:
        args = {"max_lr": 0.1, **kw}
        with pytest.raises(ValueError, match=rf"^expected 2 values of {name} \(one per group\),"
                                             rf" got 1$"):
            S.OneCycleLR(opt, total_steps=10, **args)
    sched = S.CyclicLR(opt, [0.01, 0.02], [0.1, 0.2], step_size_up=2)
    sched.step()
    assert sched.get_last_lr() == pytest.approx([0.055, 0.11])


def test_momentum_errors_name_the_scheduler():
    for make, name in [(lambda o: S.CyclicLR(o, 0.01, 0.1), "CyclicLR"),
                       (lambda o: S.OneCycleLR(o, 0.1, total_steps=10), "OneCycleLR")]:
        with pytest.raises(ValueError, match=rf"^{name}: cycle_momentum=True but the optimizer "
                                             r"has no 'momentum' or 'betas' setting; pass "
                                             r"cycle_momentum=False$"):
            make(_opt(cls=optim.Adagrad))


def test_cyclic_lr_sets_up_the_groups_it_names_only():
    opt = _opt(lr=5.0, momentum=0.5)
    keys = set(opt.param_groups[0])
    S.CyclicLR(opt, 0.01, 0.1, step_size_up=2)
    g = opt.param_groups[0]
    assert g["lr"] == 0.01 and g["initial_lr"] == 0.01 and g["momentum"] == 0.9
    assert set(g) == keys | {"initial_lr"}
    adam = _opt(cls=optim.Adam)
    keys = set(adam.param_groups[0])
    S.CyclicLR(adam, 0.001, 0.01, step_size_up=2)
    assert set(adam.param_groups[0]) == keys | {"initial_lr"}  # beta1 cycles, no new key
    one = _opt(cls=optim.Adam)
    keys = set(one.param_groups[0])
    S.OneCycleLR(one, 0.01, total_steps=10)
    assert set(one.param_groups[0]) == keys | {"initial_lr", "max_lr", "min_lr",
                                               "max_momentum", "base_momentum"}


def test_cyclic_lr_step_sizes():
    for up, down in [(0, None), (-1, 2), (2, -1)]:
        with pytest.raises(ValueError, match=rf"^CyclicLR: step sizes must be positive, got "
                                             rf"up={up}, down={down}$"):
            S.CyclicLR(_opt(momentum=0.9), 0.01, 0.1, step_size_up=up, step_size_down=down)
    # down=0: a saw-tooth that drops back at once; up=1 is the smallest step size.
    assert _lrs(S.CyclicLR(_opt(momentum=0.9), 0.0, 1.0, step_size_up=2, step_size_down=0),
                5) == pytest.approx([0.0, 0.5, 0.0, 0.5, 0.0])
    assert _lrs(S.CyclicLR(_opt(momentum=0.9), 0.0, 1.0, step_size_up=1), 4) == \
        pytest.approx([0.0, 1.0, 0.0, 1.0])


def test_cyclic_lr_mode_and_scale_fn():
    with pytest.raises(ValueError, match=r"^CyclicLR: mode must be 'triangular', 'triangular2' "
                                         r"or 'exp_range' \(or give scale_fn\), got 'saw'$"):
        S.CyclicLR(_opt(momentum=0.9), 0.01, 0.1, mode="saw")
    seen = []

    def half(x):
        seen.append(x)
        return 0.5

    # scale_fn replaces the mode (any name), with its own scale_mode (default: the cycle).
    sched = S.CyclicLR(_opt(momentum=0.9), 0.0, 1.0, step_size_up=2, mode="saw",
                       scale_fn=half)
    assert _lrs(sched, 5) == pytest.approx([0.0, 0.25, 0.5, 0.25, 0.0])
    assert seen == [1, 1, 1, 1, 2]
    seen.clear()
    sched = S.CyclicLR(_opt(momentum=0.9), 0.0, 1.0, step_size_up=2, scale_fn=half,
                       scale_mode="iterations")
    _lrs(sched, 4)
    assert seen == [0, 1, 2, 3]
    sched = S.CyclicLR(_opt(momentum=0.9), 0.0, 1.0, step_size_up=2, mode="exp_range",
                       gamma=0.5, scale_fn=half)
    assert sched.scale_mode == "cycle"  # scale_fn given: its scale_mode, not exp_range's
    assert "_scale_fn_custom" not in sched.state_dict()  # a function is not state
    assert all(not callable(v) for v in sched.state_dict().values())


def test_cyclic_lr_cycles_adam_beta1():
    opt = _opt(cls=optim.Adam)
    sched = S.CyclicLR(opt, 0.0, 1.0, step_size_up=2, base_momentum=0.8, max_momentum=0.9)
    betas = [opt.param_groups[0]["betas"][0]]
    for _ in range(4):
        sched.step()
        betas.append(opt.param_groups[0]["betas"][0])
    assert betas == pytest.approx([0.9, 0.85, 0.8, 0.85, 0.9])
    assert opt.param_groups[0]["betas"][1] == 0.999


def test_one_cycle_lr_argument_errors():
    with pytest.raises(ValueError, match=r"^OneCycleLR: give total_steps, or both epochs and "
                                         r"steps_per_epoch$"):
        S.OneCycleLR(_opt(momentum=0.9), 0.1, epochs=2)
    with pytest.raises(ValueError, match=r"^OneCycleLR: give total_steps"):
        S.OneCycleLR(_opt(momentum=0.9), 0.1, steps_per_epoch=2)
    with pytest.raises(ValueError, match=r"^OneCycleLR: total_steps must be positive, got 0$"):
        S.OneCycleLR(_opt(momentum=0.9), 0.1, total_steps=0)
    with pytest.raises(ValueError, match=r"^OneCycleLR: pct_start must be in \[0, 1\], got "
                                         r"1.5$"):
        S.OneCycleLR(_opt(momentum=0.9), 0.1, total_steps=10, pct_start=1.5)
    with pytest.raises(ValueError, match=r"^OneCycleLR: anneal_strategy must be 'cos' or "
                                         r"'linear', got 'exp'$"):
        S.OneCycleLR(_opt(momentum=0.9), 0.1, total_steps=10, anneal_strategy="exp")
    one = S.OneCycleLR(_opt(momentum=0.9), 0.1, total_steps=1)  # one step is enough
    assert one.get_last_lr()[0] == pytest.approx(0.1 / 25 / 1e4)
    for pct in (0.0, 1.0):  # both ends of pct_start are allowed
        S.OneCycleLR(_opt(momentum=0.9), 0.1, total_steps=10, pct_start=pct)


def test_one_cycle_lr_a_first_phase_of_one_step_starts_at_the_peak():
    # pct_start * total_steps = 1: the first phase ends at step 0 (it has zero length).
    sched = S.OneCycleLR(_opt(momentum=0.9), 1.0, total_steps=10, pct_start=0.1)
    assert sched.get_last_lr()[0] == 1.0


def test_one_cycle_lr_step_total_steps_extrapolates_the_last_phase():
    sched = S.OneCycleLR(_opt(momentum=0.9), 1.0, total_steps=10, pct_start=0.3,
                         anneal_strategy="linear")
    lrs = _lrs(sched, 11)  # steps 0..10; step 10 == total_steps is allowed
    low = 0.04 / 1e4
    assert lrs[9] == pytest.approx(low)
    assert lrs[10] == pytest.approx((low - 1.0) * (8 / 7) + 1.0)


def test_one_cycle_lr_cycles_adam_beta1():
    opt = _opt(cls=optim.Adam)
    sched = S.OneCycleLR(opt, 1.0, total_steps=10, pct_start=0.3, anneal_strategy="linear")
    betas = [opt.param_groups[0]["betas"][0]]
    for _ in range(2):
        sched.step()
        betas.append(opt.param_groups[0]["betas"][0])
    assert betas == pytest.approx([0.95, 0.9, 0.85])


def test_base_state_dict_round_trip_turns_tuples_into_lists():
    a = S.StepLR(_opt(), 2, 0.5)
    state = a.state_dict()
    b = S.StepLR(_opt(), 2, 0.5)
    b.load_state_dict({k: tuple(v) if isinstance(v, list) else v for k, v in state.items()})
    assert b.state_dict() == state and isinstance(b.base_lrs, list)


def test_plateau_load_state_dict_keeps_its_own_optimizer():
    opt = _opt()
    a = S.ReduceLROnPlateau(opt)
    b = S.ReduceLROnPlateau(_opt())
    own = b.optimizer
    b.load_state_dict({**a.state_dict(), "optimizer": opt})
    assert b.optimizer is own


def test_scheduler_type_errors_name_both_types():
    with pytest.raises(TypeError, match=r"^StepLR needs a gl.optim Optimizer, got object$"):
        S.StepLR(object(), 1)
    with pytest.raises(TypeError, match=r"^ReduceLROnPlateau needs a gl.optim Optimizer, got "
                                        r"list$"):
        S.ReduceLROnPlateau([])


@pytest.mark.parametrize("step_size", [0, -1, 1.5])
def test_step_lr_step_size_must_be_a_positive_int(step_size):
    with pytest.raises(ValueError, match=rf"^StepLR: step_size must be a positive int, got "
                                         rf"{step_size!r}$"):
        S.StepLR(_opt(), step_size)


def test_step_lr_default_gamma_and_step_size_1():
    assert _lrs(S.StepLR(_opt(), 1), 3) == pytest.approx([0.1, 0.01, 0.001])


def test_plateau_defaults_and_initial_state():
    opt = _opt(lr=1.0)
    p = S.ReduceLROnPlateau(opt)
    assert (p.mode, p.factor, p.patience, p.threshold, p.threshold_mode, p.cooldown,
            p.eps) == ("min", 0.1, 10, 1e-4, "rel", 0, 1e-8)
    assert p.min_lrs == [0.0] and p.best == math.inf
    assert (p.num_bad_epochs, p.cooldown_counter, p.last_epoch) == (0, 0, 0)
    assert p.get_last_lr() == [1.0] and not p.in_cooldown
    assert S.ReduceLROnPlateau(_opt(), mode="max").best == -math.inf
    p.step(1.0)
    for _ in range(10):  # patience 10: ten epochs without improvement are tolerated
        p.step(1.0)
    assert p.get_last_lr() == [1.0] and p.num_bad_epochs == 10 and p.last_epoch == 11
    p.step(1.0)
    assert p.get_last_lr() == pytest.approx([0.1]) and p.num_bad_epochs == 0
    assert not p.in_cooldown  # cooldown 0


def test_plateau_argument_errors():
    for kw, msg in [({"factor": 1.0}, r"factor must be < 1.0, got 1.0"),
                    ({"mode": "up"}, r"mode must be 'min' or 'max', got 'up'"),
                    ({"threshold_mode": "pct"},
                     r"threshold_mode must be 'rel' or 'abs', got 'pct'")]:
        with pytest.raises(ValueError, match=rf"^ReduceLROnPlateau: {msg}$"):
            S.ReduceLROnPlateau(_opt(), **kw)
    with pytest.raises(ValueError, match=r"^expected 2 values of min_lr \(one per group\), "
                                         r"got 3$"):
        S.ReduceLROnPlateau(_opt(groups=2), min_lr=[0.0, 0.1, 0.2])
    p = S.ReduceLROnPlateau(_opt(groups=2, lr=1.0), min_lr=[0.0, 0.5], patience=0)
    p.step(1.0)
    p.step(1.0)
    assert p.get_last_lr() == pytest.approx([0.1, 0.5])


@pytest.mark.parametrize("mode, threshold_mode, better, not_better", [
    ("min", "rel", [0.99], [1.0, 1.5]),         # best 2 * (1 - 0.5) = 1
    ("min", "abs", [1.49], [1.5, 2.2]),         # best 2 - 0.5 = 1.5
    ("max", "rel", [3.01, 4.0], [3.0, 2.5]),   # best 2 * (1 + 0.5) = 3
    ("max", "abs", [2.51], [2.5, 2.2]),        # best 2 + 0.5 = 2.5
])
def test_plateau_is_better_at_its_thresholds(mode, threshold_mode, better, not_better):
    p = S.ReduceLROnPlateau(_opt(), mode=mode, threshold=0.5, threshold_mode=threshold_mode)
    assert all(p.is_better(a, 2.0) for a in better)
    assert not any(p.is_better(a, 2.0) for a in not_better)


def test_plateau_cooldown_counts_down_one_epoch_at_a_time():
    p = S.ReduceLROnPlateau(_opt(lr=1.0), patience=0, cooldown=2, factor=0.5)
    p.step(1.0)
    p.step(1.0)  # reduce, then 2 epochs of cooldown
    assert p.get_last_lr() == [0.5] and p.cooldown_counter == 2 and p.in_cooldown
    p.step(1.0)
    assert p.cooldown_counter == 1 and p.get_last_lr() == [0.5]
    p.step(1.0)
    assert p.cooldown_counter == 0 and p.get_last_lr() == [0.5]
    p.step(1.0)
    assert p.get_last_lr() == [0.25]


def test_plateau_skips_changes_not_larger_than_eps():
    # old - new == eps: skipped (strictly larger is needed)
    p = S.ReduceLROnPlateau(_opt(lr=1.0), patience=0, factor=0.5, eps=0.5)
    p.step(1.0)
    p.step(1.0)
    assert p.get_last_lr() == [1.0]
    p = S.ReduceLROnPlateau(_opt(lr=1.0), patience=0, factor=0.6, eps=0.5)
    p.step(1.0)
    p.step(1.0)
    assert p.get_last_lr() == [1.0]
    p = S.ReduceLROnPlateau(_opt(lr=1.0), patience=0, factor=0.4, eps=0.5)
    p.step(1.0)
    p.step(1.0)
    assert p.get_last_lr() == pytest.approx([0.4])


def test_gamma_0_is_allowed_and_step_can_jump_to_an_epoch():
    sched = S.ExponentialLR(_opt(), gamma=0.0)
    sched.step()
    assert sched.get_last_lr() == [0.0]
    sched = S.StepLR(_opt(), 2, 0.5)
    sched.step(5)  # epoch 5: 0.1 * 0.5 ** 2
    assert sched.last_epoch == 5 and sched.get_last_lr() == pytest.approx([0.025])
    sched.step(1.0)
    assert sched.last_epoch == 1 and type(sched.last_epoch) is int
