"""The callbacks called directly, hook by hook, on a stand-in run (no `fit`): each test pins
a value a user sees (when training stops and why, what is saved or logged, which scheduler
step is taken) that `make mutate` found unchecked in gradlab/train/callbacks.py."""
import csv
import errno
import math
from types import SimpleNamespace

import numpy as np
import pytest

import gradlab as gl
from gradlab import nn
from gradlab.optim import lr_scheduler as lrs
from gradlab.train import (
    Callback,
    CSVLogger,
    EarlyStopping,
    LRSchedulerCallback,
    ModelCheckpoint,
    snapshot_state,
)
from gradlab.train.callbacks import _Improvement, _monitored, is_plateau_scheduler


def _run(epoch=0):
    gl.manual_seed(0)
    model = nn.Linear(2, 3)
    opt = gl.optim.SGD(model.parameters(), lr=0.1)
    return SimpleNamespace(model=model, optimizer=opt, scheduler=None, history=None,
                           epoch=epoch, stop_training=False, stop_reason=None)


def _bump(model, by=1.0):
    """Change every weight in place, as an optimizer step would."""
    for p in model.parameters():
        p.detach().numpy()[...] += by


def _w(model):
    return model.weight.detach().numpy().copy()


def test_base_callback_hooks_are_no_ops_and_its_state_is_empty():
    cb = Callback()
    run = _run()
    cb.set_run(run)
    assert cb.run is run
    for call in (cb.on_train_begin, cb.on_train_end):
        assert call() is None
    assert cb.on_epoch_begin(1) is None and cb.on_batch_end(0, 1.0) is None
    assert cb.on_epoch_end(1, {}) is None and cb.load_state_dict({"x": 1}) is None
    assert cb.state_dict() == {}


def test_monitoring_an_unrecorded_value_names_what_is_recorded():
    logs = {"epoch": 1, "loss": 0.5, "accuracy": 0.9, "time": 0.1}
    with pytest.raises(KeyError) as e:
        _monitored(EarlyStopping(), logs, "val_loss")
    assert e.value.args[0] == (
        "EarlyStopping monitors 'val_loss', which fit does not record; available: loss, "
        "accuracy (pass val_loader to fit to get val_* values)")
    with pytest.raises(KeyError) as e:
        _monitored(ModelCheckpoint("m.gl", save_best_only=False), logs, "f1")
    assert e.value.args[0] == ("ModelCheckpoint monitors 'f1', which fit does not record; "
                               "available: loss, accuracy")
    assert _monitored(EarlyStopping(), logs, "loss") == 0.5


def test_improvement_rules_in_min_and_max_mode():
    with pytest.raises(ValueError, match=r"^min_delta must be >= 0, got -0.1$"):
        _Improvement("loss", "auto", -0.1)
    zero = _Improvement("loss", "auto", 0)  # min_delta 0 is allowed
    assert zero.min_delta == 0.0 and zero.best is None and zero.monitor == "loss"
    t = _Improvement("loss", "auto", 0.5)
    assert t.mode == "min" and isinstance(t.min_delta, float)
    assert not t.improved(None) and not t.improved(math.nan) and not t.improved(math.inf)
    assert t.improved(10.0)  # the first finite value always improves
    t.best = 10.0
    assert t.improved(9.4) and not t.improved(9.5) and not t.improved(10.0)
    assert not t.improved(11.0)
    a = _Improvement("val_accuracy", "auto", 0.05)
    assert a.mode == "max"
    a.best = 0.9
    assert a.improved(0.96) and not a.improved(0.95) and not a.improved(0.5)
    m = _Improvement("val_accuracy", "min")
    m.best = 0.5
    assert m.improved(0.4) and not m.improved(0.5) and not m.improved(0.6)


def test_snapshot_state_is_a_copy_that_later_steps_do_not_change():
    run = _run()
    snap = snapshot_state(run.model)
    before = _w(run.model)
    _bump(run.model)
    assert sorted(snap) == ["bias", "weight"]
    assert np.array_equal(snap["weight"].numpy(), before)
    assert not snap["weight"].requires_grad

    class WithExtra(nn.Module):
        def state_dict(self):
            return {"step": 7, "w": gl.tensor(np.ones(2, np.float32))}

    extra = snapshot_state(WithExtra())
    assert extra["step"] == 7 and np.array_equal(extra["w"].numpy(), [1.0, 1.0])


@pytest.mark.parametrize("patience", [-1, 1.5, "2"])
def test_early_stopping_patience_must_be_a_non_negative_integer(patience):
    with pytest.raises((ValueError, TypeError)):
        EarlyStopping(patience=patience)


def test_early_stopping_patience_error_message_and_defaults():
    with pytest.raises(ValueError, match=r"^patience must be a non-negative integer, got -1$"):
        EarlyStopping(patience=-1)
    es = EarlyStopping(patience=2.0)
    assert es.patience == 2 and type(es.patience) is int
    es = EarlyStopping()
    assert (es.monitor, es.patience, es.restore_best_weights) == ("val_loss", 5, True)
    assert es.tracker.mode == "min" and es.tracker.min_delta == 0.0
    assert (es.wait, es.best_epoch, es.best_weights, es.stopped_epoch) == (0, None, None, None)
    assert EarlyStopping(patience=0).patience == 0


def _feed(es, run, values, start=1):
    """Feed val_loss values epoch by epoch until the callback stops the run."""
    for epoch, v in enumerate(values, start):
        run.epoch = epoch
        es.on_epoch_end(epoch, {"val_loss": v})
        if run.stop_training:
            return epoch
    return None


def test_early_stopping_counts_epochs_without_improvement_and_says_why():
    run = _run()
    es = EarlyStopping(patience=2)
    es.set_run(run)
    es.on_train_begin()
    assert _feed(es, run, [1.0, 0.5, 0.6, 0.5, 0.7]) == 4
    assert (es.stopped_epoch, es.best_epoch, es.wait, es.tracker.best) == (4, 2, 2, 0.5)
    assert run.stop_reason == ("early stopping at epoch 4: val_loss did not improve for 2 "
                               "epochs (best 0.5 at epoch 2)")


def test_early_stopping_patience_1_and_0():
    run = _run()
    es = EarlyStopping(patience=1)
    es.set_run(run)
    assert _feed(es, run, [1.0, 2.0]) == 2
    run = _run()
    es = EarlyStopping(patience=0)
    es.set_run(run)
    assert _feed(es, run, [1.0, 2.0]) == 2  # 0: the first epoch that does not improve
    assert es.wait == 1


def test_early_stopping_an_improvement_resets_the_count():
    run = _run()
    es = EarlyStopping(patience=2)
    es.set_run(run)
    assert _feed(es, run, [1.0, 1.1, 0.9, 1.0, 0.8, 0.85]) is None
    assert es.wait == 1 and es.best_epoch == 5


def test_early_stopping_on_train_begin_resets_wait():
    run = _run()
    es = EarlyStopping(patience=3)
    es.set_run(run)
    _feed(es, run, [1.0, 2.0, 2.0])
    assert es.wait == 2
    es.on_train_begin()
    assert es.wait == 0


def test_early_stopping_restores_the_best_weights_at_the_end():
    run = _run()
    es = EarlyStopping(patience=1)
    es.set_run(run)
    run.epoch = 1
    es.on_epoch_end(1, {"val_loss": 0.5})
    best = _w(run.model)
    _bump(run.model)
    run.epoch = 2
    es.on_epoch_end(2, {"val_loss": 0.9})
    assert run.stop_training
    es.on_train_end()
    assert np.array_equal(_w(run.model), best)


def test_early_stopping_keeps_the_weights_when_the_last_epoch_is_the_best():
    run = _run()
    es = EarlyStopping(patience=1)
    es.set_run(run)
    run.epoch = 1
    es.on_epoch_end(1, {"val_loss": 0.5})
    # The run's weights after the best epoch: restoring is not needed (and would undo any
    # change made after the epoch, here a bump standing in for one).
    _bump(run.model)
    after = _w(run.model)
    es.on_train_end()
    assert np.array_equal(_w(run.model), after)


def test_early_stopping_without_restore_keeps_the_last_weights():
    run = _run()
    es = EarlyStopping(patience=1, restore_best_weights=False)
    es.set_run(run)
    run.epoch = 1
    es.on_epoch_end(1, {"val_loss": 0.5})
    assert es.best_weights is None
    _bump(run.model)
    last = _w(run.model)
    run.epoch = 2
    es.on_epoch_end(2, {"val_loss": 0.9})
    es.on_train_end()
    assert np.array_equal(_w(run.model), last)


def test_early_stopping_state_round_trips_into_a_fresh_callback():
    run = _run()
    es = EarlyStopping(patience=3)
    es.set_run(run)
    _feed(es, run, [1.0, 0.4, 0.6])
    state = es.state_dict()
    assert sorted(state) == ["best", "best_epoch", "best_weights", "stopped_epoch", "wait"]
    assert (state["best"], state["wait"], state["best_epoch"], state["stopped_epoch"]) == \
        (0.4, 1, 2, None)
    fresh = EarlyStopping(patience=3)
    fresh.load_state_dict(state)
    assert (fresh.tracker.best, fresh.wait, fresh.best_epoch, fresh.stopped_epoch) == \
        (0.4, 1, 2, None)
    assert fresh.best_weights is state["best_weights"]
    fresh.set_run(run)
    assert _feed(fresh, run, [0.5, 0.5], start=4) == 5  # the count goes on from 1
    old = EarlyStopping()
    old.load_state_dict({"best": 1.0, "wait": 2, "best_epoch": 3})  # older checkpoints
    assert old.best_weights is None and old.stopped_epoch is None


def test_a_directory_as_a_callback_file_is_refused_with_an_example(tmp_path):
    with pytest.raises(IsADirectoryError) as e:
        ModelCheckpoint(tmp_path)
    assert e.value.errno == errno.EISDIR
    assert e.value.strerror == (f"ModelCheckpoint: {str(tmp_path)!r} is a directory; give a "
                                f"file path inside it, e.g. "
                                f"{str(tmp_path / 'model.gl')!r}")
    with pytest.raises(IsADirectoryError) as e:
        CSVLogger(tmp_path)
    assert e.value.strerror.startswith("CSVLogger: ")
    assert e.value.strerror.endswith(f"e.g. {str(tmp_path / 'history.csv')!r}")
    assert ModelCheckpoint(tmp_path / "m.gl").filepath == str(tmp_path / "m.gl")


def test_model_checkpoint_defaults():
    ck = ModelCheckpoint("m.gl")
    assert (ck.monitor, ck.save_best_only, ck.save_weights_only) == ("val_loss", True, True)
    assert ck.tracker.mode == "min" and ck.best_epoch is None and ck.last_path is None
    assert ModelCheckpoint("m.gl", monitor="val_accuracy").tracker.mode == "max"


def test_model_checkpoint_best_only_saves_the_weights_of_improving_epochs(tmp_path):
    run = _run()
    ck = ModelCheckpoint(tmp_path / "e{epoch}.gl", monitor="loss")
    ck.set_run(run)
    ck.on_epoch_end(1, {"loss": 1.0})
    first = _w(run.model)
    _bump(run.model)
    ck.on_epoch_end(2, {"loss": 2.0})  # worse: nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e1.gl"]
    assert ck.last_path == str(tmp_path / "e1.gl") and ck.best_epoch == 1
    saved = gl.load(str(tmp_path / "e1.gl"))
    assert sorted(saved) == ["bias", "weight"]
    assert np.array_equal(saved["weight"].numpy(), first)
    assert ck.state_dict() == {"best": 1.0, "best_epoch": 1}
    fresh = ModelCheckpoint(tmp_path / "e{epoch}.gl", monitor="loss")
    fresh.load_state_dict({"best": 1.0, "best_epoch": 1})
    fresh.set_run(run)
    fresh.on_epoch_end(3, {"loss": 1.5})  # not better than the restored best
    assert not (tmp_path / "e3.gl").exists() and fresh.best_epoch == 1
    fresh.on_epoch_end(4, {"loss": 0.5})
    assert fresh.best_epoch == 4 and fresh.tracker.best == 0.5
    assert (tmp_path / "e4.gl").exists()


def test_model_checkpoint_full_state(tmp_path):
    run = _run()
    ck = ModelCheckpoint(tmp_path / "full.gl", save_best_only=False, save_weights_only=False)
    ck.set_run(run)
    ck.on_epoch_end(3, {})  # every epoch: no monitored value needed
    state = gl.load(str(tmp_path / "full.gl"))
    assert sorted(state) == ["epoch", "model", "optimizer"] and state["epoch"] == 3
    assert np.array_equal(state["model"]["weight"].numpy(), _w(run.model))
    assert state["optimizer"] == gl.load(str(tmp_path / "full.gl"))["optimizer"]
    assert sorted(state["optimizer"]) == sorted(run.optimizer.state_dict())


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_csv_logger_truncates_then_appends_each_epoch(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("old,stuff\n1,2\n")
    log = CSVLogger(path)
    assert log.append is False
    log.on_train_begin()
    assert path.read_text() == ""
    log.on_epoch_end(1, {"epoch": 1, "loss": 0.5})
    log.on_epoch_end(2, {"epoch": 2, "loss": 0.25, "extra": 9})  # keys of the first epoch
    assert _rows(path) == [["epoch", "loss"], ["1", "0.5"], ["2", "0.25"]]
    log.on_train_begin()  # a second run starts the file over, header included
    log.on_epoch_end(1, {"epoch": 1, "lr": 0.1})
    assert _rows(path) == [["epoch", "lr"], ["1", "0.1"]]


def test_csv_logger_append_continues_under_the_existing_header(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("epoch,loss,lr\n1,0.5,0.1\n")
    log = CSVLogger(path, append=True)
    log.on_train_begin()
    assert log._keys == ["epoch", "loss", "lr"]
    log.on_epoch_end(2, {"lr": 0.01, "epoch": 2})  # a missing key is left empty
    assert _rows(path) == [["epoch", "loss", "lr"], ["1", "0.5", "0.1"], ["2", "", "0.01"]]


@pytest.mark.parametrize("content", [None, ""])
def test_csv_logger_append_to_a_missing_or_empty_file_writes_a_header(tmp_path, content):
    path = tmp_path / "h.csv"
    if content is not None:
        path.write_text(content)
    log = CSVLogger(path, append=True)
    log.on_train_begin()
    log.on_epoch_end(1, {"epoch": 1, "loss": 0.5})
    assert _rows(path) == [["epoch", "loss"], ["1", "0.5"]]


class _Counting:
    def __init__(self):
        self.steps = []

    def step(self, *args):
        self.steps.append(args)


def _named(name):
    return type(name, (_Counting,), {})()


def test_lr_scheduler_interval_choice():
    with pytest.raises(ValueError, match=r"^interval must be 'auto', 'epoch' or 'batch', "
                                         r"got 'step'$"):
        LRSchedulerCallback(_Counting(), interval="step")
    assert LRSchedulerCallback(_named("OneCycleLR")).interval == "batch"
    assert LRSchedulerCallback(_named("CyclicLR")).interval == "batch"
    assert LRSchedulerCallback(_named("StepLR")).interval == "epoch"
    assert LRSchedulerCallback(_named("OneCycleLR"), interval="epoch").interval == "epoch"
    assert LRSchedulerCallback(_named("StepLR"), interval="batch").interval == "batch"
    cb = LRSchedulerCallback(_Counting())
    assert cb.monitor == "val_loss"


def test_lr_scheduler_steps_per_batch_or_per_epoch():
    per_batch = LRSchedulerCallback(_named("OneCycleLR"))
    per_batch.on_batch_end(0, 1.0)
    per_batch.on_batch_end(1, 1.0)
    per_batch.on_epoch_end(1, {"loss": 1.0})
    assert per_batch.scheduler.steps == [(), ()]
    per_epoch = LRSchedulerCallback(_named("StepLR"))
    per_epoch.on_batch_end(0, 1.0)
    per_epoch.on_epoch_end(1, {"loss": 1.0})
    assert per_epoch.scheduler.steps == [()]


def test_lr_scheduler_plateau_gets_the_monitored_value_or_the_loss():
    assert is_plateau_scheduler(_named("ReduceLROnPlateau"))
    assert not is_plateau_scheduler(_named("StepLR"))
    cb = LRSchedulerCallback(_named("ReduceLROnPlateau"))
    cb.on_epoch_end(1, {"loss": 1.0, "val_loss": 2.0})
    cb.on_epoch_end(2, {"loss": 3.0})  # no val_loss: the training loss
    assert cb.scheduler.steps == [(2.0,), (3.0,)]
    acc = LRSchedulerCallback(_named("ReduceLROnPlateau"), monitor="accuracy")
    acc.on_epoch_end(1, {"loss": 1.0, "accuracy": 0.7})
    assert acc.scheduler.steps == [(0.7,)]


def test_lr_scheduler_state_is_the_schedulers():
    run = _run()
    sched = lrs.StepLR(run.optimizer, step_size=1, gamma=0.5)
    cb = LRSchedulerCallback(sched)
    cb.on_epoch_end(1, {})
    state = cb.state_dict()
    assert state == sched.state_dict() and state
    sched2 = lrs.StepLR(gl.optim.SGD(_run().model.parameters(), lr=0.1), step_size=1,
                        gamma=0.5)
    cb2 = LRSchedulerCallback(sched2)
    cb2.load_state_dict(state)
    assert sched2.state_dict() == state
    cb2.load_state_dict({})  # nothing saved: the scheduler is left as it is
    assert sched2.state_dict() == state
    assert LRSchedulerCallback(_Counting()).state_dict() == {}
    LRSchedulerCallback(_Counting()).load_state_dict({"a": 1})  # no load_state_dict: ignored


def test_early_stopping_state_of_a_stopped_run_keeps_the_stopping_epoch():
    run = _run()
    es = EarlyStopping(patience=1)
    es.set_run(run)
    assert _feed(es, run, [1.0, 2.0]) == 2
    fresh = EarlyStopping(patience=1)
    fresh.load_state_dict(es.state_dict())
    assert fresh.stopped_epoch == 2 and fresh.state_dict()["stopped_epoch"] == 2


def test_csv_logger_used_without_on_train_begin_still_writes_its_header(tmp_path):
    path = tmp_path / "h.csv"
    log = CSVLogger(path)
    log.on_epoch_end(1, {"epoch": 1, "loss": 0.5})
    assert _rows(path) == [["epoch", "loss"], ["1", "0.5"]]


def test_each_callback_names_itself_when_its_monitored_value_is_missing(tmp_path):
    logs = {"epoch": 1, "accuracy": 0.5}
    cases = [(EarlyStopping(), "EarlyStopping", "val_loss"),
             (ModelCheckpoint(tmp_path / "m.gl"), "ModelCheckpoint", "val_loss"),
             (LRSchedulerCallback(_named("ReduceLROnPlateau"), monitor="val_loss"),
              "LRSchedulerCallback", "loss")]  # the plateau scheduler falls back to the loss
    for cb, name, monitor in cases:
        cb.set_run(_run())
        with pytest.raises(KeyError, match=rf"^\"{name} monitors '{monitor}', which fit does "
                                           r"not record; available: accuracy"):
            cb.on_epoch_end(1, logs)


def test_max_mode_needs_more_than_best_plus_min_delta():
    a = _Improvement("accuracy", "auto", 0.25)
    a.best = 0.5
    assert not a.improved(0.75) and a.improved(0.75 + 2 ** -20)
    m = _Improvement("loss", "auto", 0.25)
    m.best = 0.5
    assert not m.improved(0.25) and m.improved(0.25 - 2 ** -20)


def test_only_the_main_process_writes_files(tmp_path):
    run = _run()
    run.main_process = False  # a rank > 0 of a distributed run
    ck = ModelCheckpoint(tmp_path / "m.gl", save_best_only=False)
    log = CSVLogger(tmp_path / "h.csv")
    for cb in (ck, log):
        cb.set_run(run)
        cb.on_train_begin()
        cb.on_epoch_end(1, {"epoch": 1, "loss": 0.5})
    assert list(tmp_path.iterdir()) == [] and ck.last_path is None
    run.main_process = True
    ck.on_epoch_end(2, {"epoch": 2, "loss": 0.4})
    log.on_epoch_end(2, {"epoch": 2, "loss": 0.4})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.csv", "m.gl"]
