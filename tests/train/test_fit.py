"""fit, evaluate, History and the callbacks, on tiny problems."""
import math

import numpy as np
import pytest

import gradlab as gl
from gradlab import nn
from gradlab.backend import registry
from gradlab.data import DataLoader, TensorDataset, make_moons
from gradlab.train import (
    Callback,
    CSVLogger,
    EarlyStopping,
    ModelCheckpoint,
    NonFiniteLossError,
    evaluate,
    fit,
    predict,
)


def _problem(n=200, seed=0):
    X, y = make_moons(n, noise=0.1, seed=seed)
    X = (X - X.mean(0)) / X.std(0)
    ds = TensorDataset(X, y)
    return (DataLoader(ds, batch_size=32, shuffle=True, seed=seed),
            DataLoader(ds, batch_size=256))


def _model(seed=0):
    gl.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))


def _weights(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


class Script(Callback):
    """Overwrites a logged value with a scripted sequence (runs before later callbacks)."""

    def __init__(self, key, values):
        self.key, self.values = key, list(values)

    def on_epoch_end(self, epoch, logs):
        logs[self.key] = self.values[epoch - 1]


class Snapshots(Callback):
    def __init__(self):
        self.by_epoch = {}

    def on_epoch_end(self, epoch, logs):
        self.by_epoch[epoch] = _weights(self.run.model)


def test_fit_learns_and_records_history():
    train, val = _problem()
    model = _model()
    opt = gl.optim.Adam(model.parameters(), lr=0.05)
    history = fit(model, nn.CrossEntropyLoss(), opt, train, val, epochs=15, verbose=0)
    assert len(history) == 15
    assert history.keys() == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr",
                              "time"]
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["val_accuracy"][-1] > 0.9
    assert history["lr"] == [0.05] * 15 and all(t > 0 for t in history["time"])
    result = evaluate(model, nn.CrossEntropyLoss(), val)
    assert math.isclose(result["loss"], history["val_loss"][-1], rel_tol=1e-5)
    assert model.training  # evaluate restores the mode it found
    out = predict(model, gl.tensor(np.zeros((5, 2), np.float32)), batch_size=2)
    assert out.shape == (5, 2)


def test_fit_is_reproducible_with_the_same_seeds():
    runs = []
    for _ in range(2):
        train, _ = _problem()
        model = _model()
        fit(model, nn.CrossEntropyLoss(), gl.optim.SGD(model.parameters(), lr=0.1), train,
            epochs=3, verbose=0)
        runs.append(_weights(model))
    assert all(np.array_equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_early_stopping_stops_after_patience_and_restores_best_weights():
    train, val = _problem()
    model = _model()
    snaps = Snapshots()
    stopper = EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    history = fit(model, nn.CrossEntropyLoss(), gl.optim.SGD(model.parameters(), lr=0.1),
                  train, val, epochs=20, verbose=0,
                  callbacks=[Script("val_loss", [1.0, 0.5, 0.6, 0.7, 0.4, 0.9]), snaps,
                             stopper])
    assert len(history) == 4 and stopper.best_epoch == 2
    assert "early stopping at epoch 4" in history.stop_reason
    final = _weights(model)
    assert all(np.array_equal(final[k], snaps.by_epoch[2][k]) for k in final)
    assert not np.array_equal(final["0.weight"], snaps.by_epoch[4]["0.weight"])


def test_early_stopping_min_delta_and_max_mode():
    train, val = _problem(64)
    model = _model()
    stopper = EarlyStopping(monitor="val_accuracy", patience=1, min_delta=0.05)
    fit(model, nn.CrossEntropyLoss(), gl.optim.SGD(model.parameters(), lr=0.1), train, val,
        epochs=10, verbose=0,
        callbacks=[Script("val_accuracy", [0.5, 0.9, 0.94, 0.99]), stopper])
    # 0.94 is not > 0.9 + 0.05: stop at epoch 3 with the best at epoch 2.
    assert stopper.stopped_epoch == 3 and stopper.best_epoch == 2


def test_monitoring_a_missing_value_is_a_clear_error():
    train, _ = _problem(64)
    model = _model()
    with pytest.raises(KeyError, match="pass val_loader to fit"):
        fit(model, nn.CrossEntropyLoss(), gl.optim.SGD(model.parameters(), lr=0.1), train,
            epochs=2, verbose=0, callbacks=[EarlyStopping(monitor="val_loss")])


def test_model_checkpoint_saves_only_improvements(tmp_path):
    train, val = _problem(64)
    model = _model()
    snaps = Snapshots()
    path = tmp_path / "best.gl"
    ckpt = ModelCheckpoint(path, monitor="val_loss", save_best_only=True)
    fit(model, nn.CrossEntropyLoss(), gl.optim.SGD(model.parameters(), lr=0.1), train, val,
        epochs=4, verbose=0, callbacks=[Script("val_loss", [0.9, 0.3, 0.5, 0.4]), snaps, ckpt])
    saved = gl.load(str(path))
    assert ckpt.best_epoch == 2
    assert np.array_equal(saved["0.weight"].numpy(), snaps.by_epoch[2]["0.weight"])


def test_model_checkpoint_every_epoch_with_optimizer_state(tmp_path):
    train, _ = _problem(64)
    model = _model()
    opt = gl.optim.Adam(model.parameters(), lr=0.01)
    ckpt = ModelCheckpoint(str(tmp_path / "ep{epoch}.gl"), save_best_only=False,
                           save_weights_only=False)
    fit(model, nn.CrossEntropyLoss(), opt, train, epochs=2, verbose=0, callbacks=[ckpt])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ep1.gl", "ep2.gl"]
    state = gl.load(str(tmp_path / "ep2.gl"))
    assert state["epoch"] == 2 and "state" in state["optimizer"]


def test_csv_logger_writes_one_row_per_epoch(tmp_path):
    train, val = _problem(64)
    model = _model()
    path = tmp_path / "log.csv"
    fit(model, nn.CrossEntropyLoss(), gl.optim.SGD(model.parameters(), lr=0.1), train, val,
        epochs=3, verbose=0, callbacks=[CSVLogger(path)])
    lines = path.read_text().splitlines()
    assert lines[0] == "epoch,loss,accuracy,val_loss,val_accuracy,lr,time"
    assert [line.split(",")[0] for line in lines[1:]] == ["1", "2", "3"]


class NanAt:
    """Cross-entropy that returns NaN from the given (1-based) call on."""

    def __init__(self, call):
        self.call, self.calls = call, 0
        self.inner = nn.CrossEntropyLoss()

    def __call__(self, out, y):
        self.calls += 1
        loss = self.inner(out, y)
        return loss * float("nan") if self.calls >= self.call else loss


def test_nonfinite_loss_raises_naming_epoch_and_batch_and_keeps_checkpoint(tmp_path):
    train, val = _problem(64)  # 2 batches per epoch; validation calls the loss once
    model = _model()
    path = tmp_path / "best.gl"
    snaps = Snapshots()
    with pytest.raises(NonFiniteLossError, match="loss is nan at epoch 2, batch 2") as info:
        fit(model, NanAt(5), gl.optim.SGD(
            model.parameters(), lr=0.1), train, val, epochs=5, verbose=0,
            callbacks=[snaps, ModelCheckpoint(path, monitor="val_loss")])
    assert (info.value.epoch, info.value.batch) == (2, 2) and len(info.value.history) == 1
    assert np.array_equal(gl.load(str(path))["0.weight"].numpy(), snaps.by_epoch[1]["0.weight"])
    assert np.isfinite(model.state_dict()["0.weight"].numpy()).all()


class NanOn:
    """Cross-entropy that returns NaN on the given (1-based) calls only."""

    def __init__(self, *calls):
        self.bad, self.calls = set(calls), 0
        self.inner = nn.CrossEntropyLoss()

    def __call__(self, out, y):
        self.calls += 1
        loss = self.inner(out, y)
        return loss * float("nan") if self.calls in self.bad else loss


def _by_hand(model, loader, epochs, skip=(), stop_at=None, lr=0.1):
    """What fit must do on a loss that is NaN on the (epoch, batch) pairs in ``skip`` (left
    out) or at ``stop_at`` (training ends before it): plain SGD steps, no fit involved.
    Returns the per-epoch mean training loss of the batches trained on (an epoch that
    stopped after some steps included: those steps changed the weights)."""
    opt = gl.optim.SGD(model.parameters(), lr=lr)
    loss_fn, means = nn.CrossEntropyLoss(), []
    for epoch in range(1, epochs + 1):
        total = count = 0
        for b, (x, y) in enumerate(loader, 1):
            if (epoch, b) == stop_at:
                return means + [total / count] if count else means
            if (epoch, b) in skip:
                continue
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, count = total + loss.item() * len(x), count + len(x)
        means.append(total / count)
    return means


def _plain_problem():
    X, y = make_moons(96, noise=0.1, seed=0)
    ds = TensorDataset(((X - X.mean(0)) / X.std(0)).astype(np.float32), y)
    return DataLoader(ds, batch_size=32)  # 3 batches per epoch, the same order each epoch


def test_nonfinite_skip_batch_drops_only_that_batch_and_trains_on():
    # No validation: the loss is called once per training batch, so call 5 is epoch 2,
    # batch 2 and call 9 is epoch 3, batch 3.
    model, ref = _model(), _model()
    history = fit(model, NanOn(5, 9), gl.optim.SGD(model.parameters(), lr=0.1),
                  _plain_problem(), epochs=3, verbose=0, on_nonfinite="skip_batch")
    means = _by_hand(ref, _plain_problem(), 3, skip={(2, 2), (3, 3)})
    assert len(history) == 3 and history.stop_reason is None
    np.testing.assert_allclose(history["loss"], means, rtol=1e-6)
    for k, v in _weights(ref).items():
        np.testing.assert_array_equal(_weights(model)[k], v, err_msg=k)


def test_nonfinite_stop_ends_before_the_bad_step():
    model, ref = _model(), _model()
    history = fit(model, NanOn(5), gl.optim.SGD(model.parameters(), lr=0.1),
                  _plain_problem(), epochs=3, verbose=0, on_nonfinite="stop")
    means = _by_hand(ref, _plain_problem(), 3, stop_at=(2, 2))
    # Epoch 2 ended on the NaN after one step; its record is that step's loss.
    assert len(history) == len(means) == 2
    np.testing.assert_allclose(history["loss"], means, rtol=1e-6)
    assert history.stop_reason.startswith("loss is nan at epoch 2, batch 2;")
    for k, v in _weights(ref).items():
        np.testing.assert_array_equal(_weights(model)[k], v, err_msg=k)


def test_nonfinite_raise_keeps_the_weights_of_the_last_good_step():
    model, ref = _model(), _model()
    with pytest.raises(NonFiniteLossError) as info:
        fit(model, NanOn(5), gl.optim.SGD(model.parameters(), lr=0.1), _plain_problem(),
            epochs=3, verbose=0)
    assert (info.value.epoch, info.value.batch) == (2, 2)
    _by_hand(ref, _plain_problem(), 3, stop_at=(2, 2))
    for k, v in _weights(ref).items():
        np.testing.assert_array_equal(_weights(model)[k], v, err_msg=k)


@pytest.mark.parametrize("policy", ["raise", "stop", "skip_batch"])
def test_nonfinite_l1_objective_follows_the_policy(policy):
    # A finite loss whose L1 term is infinite: the objective, not the loss, is checked.
    model = _model()
    with gl.no_grad():
        model[0].weight.data[0, 0] = np.inf
    before = _weights(model)
    fit_args = (model, nn.CrossEntropyLoss(), gl.optim.SGD(model.parameters(), lr=0.1),
                _plain_problem())
    if policy == "raise":
        with pytest.raises(NonFiniteLossError, match="loss is inf at epoch 1, batch 1"):
            fit(*fit_args, epochs=2, verbose=0, l1=0.01)
    else:
        history = fit(*fit_args, epochs=2, verbose=0, l1=0.01, on_nonfinite=policy)
        assert len(history) == 0
        assert history.stop_reason.startswith("loss is inf at epoch 1, batch 1;" if policy ==
                                              "stop" else "every batch of epoch 1 had a")
    for k, v in before.items():  # every batch was bad: no step at all
        np.testing.assert_array_equal(_weights(model)[k], v, err_msg=k)


def test_reduce_lr_on_plateau_steps_on_the_monitored_value():
    train, val = _problem(64)
    model = _model()
    opt = gl.optim.SGD(model.parameters(), lr=0.1)
    sched = gl.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=1)
    history = fit(model, nn.CrossEntropyLoss(), opt, train, val, epochs=5, verbose=0,
                  scheduler=sched, callbacks=[Script("val_loss", [1.0, 1.0, 1.0, 1.0, 1.0])])
    # lr is recorded at the start of each epoch: halved after 2 epochs without improvement.
    assert history["lr"] == [0.1, 0.1, 0.1, 0.05, 0.05]


def test_one_cycle_steps_per_batch():
    train, _ = _problem(64)  # 2 batches per epoch
    model = _model()
    opt = gl.optim.SGD(model.parameters(), lr=0.1)
    sched = gl.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=6)
    fit(model, nn.CrossEntropyLoss(), opt, train, epochs=3, verbose=0, scheduler=sched)
    assert sched.last_epoch == 6


def test_l1_penalty_shrinks_weights():
    train, _ = _problem()
    norms = []
    for l1 in (0.0, 0.05):
        model = _model()
        fit(model, nn.CrossEntropyLoss(), gl.optim.SGD(model.parameters(), lr=0.1), train,
            epochs=5, verbose=0, l1=l1)
        norms.append(np.abs(model.state_dict()["0.weight"].numpy()).sum())
    assert norms[1] < 0.8 * norms[0]


def test_fit_argument_errors(monkeypatch):
    train, _ = _problem(64)
    model = _model()
    opt = gl.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        fit(model, nn.CrossEntropyLoss(), opt, train, epochs=0)
    with pytest.raises(ValueError, match="unknown metric 'f2'; valid choices"):
        fit(model, nn.CrossEntropyLoss(), opt, train, epochs=1, metrics=["f2"])
    with pytest.raises(ValueError, match="on_nonfinite must be"):
        fit(model, nn.CrossEntropyLoss(), opt, train, epochs=1, on_nonfinite="ignore")
    # As on a machine without CUDA (this one may have a GPU or the emulated device).
    monkeypatch.setattr(registry, "_cuda_status", (False, "no CUDA here (test)"))
    monkeypatch.setattr(registry, "_cuda_backends", {})
    with pytest.raises(gl.DeviceUnavailableError, match="no CUDA here"):
        fit(model, nn.CrossEntropyLoss(), opt, train, epochs=1, device="cuda")


def test_verbose_2_prints_one_line_per_epoch(capsys):
    train, _ = _problem(64)
    model = _model()
    fit(model, nn.CrossEntropyLoss(), gl.optim.SGD(model.parameters(), lr=0.1), train,
        epochs=2, verbose=2)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch ")]
    assert len(lines) == 2 and lines[1].startswith("epoch 2/2") and "loss" in lines[1]


def test_verbose_1_is_quiet_when_not_a_tty(capsys):
    train, _ = _problem(64)
    model = _model()
    fit(model, nn.CrossEntropyLoss(), gl.optim.SGD(model.parameters(), lr=0.1), train,
        epochs=2, verbose=1)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
