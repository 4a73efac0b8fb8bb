"""fit, evaluate and predict details that `make mutate` found unchecked in
gradlab/train/loop.py, on tiny problems: predict's batching and the mode it leaves the model
in, the one-line epoch summary, the L1 term, the argument errors, and resuming's rules."""
import os
import queue
import threading

import numpy as np
import pytest

import gradlab as gl
from gradlab import nn
from gradlab.data import DataLoader, TensorDataset
from gradlab.train import Callback, EarlyStopping, NonFiniteLossError, evaluate, fit, predict
from gradlab.train import checkpoint as ckpt
from gradlab.train import loop as L


class _Sizes(nn.Module):
    """y = 2 x, recording the batch sizes it is called with and the mode it ran in."""

    def __init__(self):
        super().__init__()
        self.sizes, self.modes = [], []

    def forward(self, x):
        self.sizes.append(len(x))
        self.modes.append(self.training)
        return x * 2.0


@pytest.fixture(autouse=True)
def _tqdm_bars_local_to_this_process(monkeypatch):
    tqdm_process_local(monkeypatch)


def tqdm_process_local(monkeypatch):
    """mutmut forks every mutant's test run from one parent process, in which these tests
    already drew bars. tqdm's default lock is a multiprocessing semaphore, shared with all
    those children, and its monitor thread runs in the parent only: once one child was left
    waiting on it (seen with gdb: a child blocked in SemLock.acquire in tqdm.__new__) and
    was killed at its timeout, every later child that drew a bar blocked the same way until
    its own timeout, and mutmut counted those mutants as killed. A thread lock and no
    monitor thread keep each process's bars to itself; what a bar draws is the same."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return
    monkeypatch.setattr(tqdm, "_lock", threading.RLock(), raising=False)
    monkeypatch.setattr(tqdm, "monitor_interval", 0)


def _rows(n, d=2):
    return gl.tensor(np.arange(n * d, dtype=np.float32).reshape(n, d))


def test_predict_batches_and_concatenates_in_order():
    m = _Sizes()
    out = predict(m, _rows(5), batch_size=2)
    assert m.sizes == [2, 2, 1] and m.modes == [False] * 3
    assert out.numpy().tolist() == (2 * np.arange(10.0).reshape(5, 2)).tolist()
    m = _Sizes()
    out = predict(m, _rows(4), batch_size=2)  # exactly two batches
    assert m.sizes == [2, 2] and out.shape == (4, 2)
    m = _Sizes()
    out = predict(m, _rows(3), batch_size=8)  # one batch
    assert m.sizes == [3] and out.numpy().tolist() == (2 * np.arange(6.0).reshape(3, 2)).tolist()


def test_predict_default_batch_size_is_1024():
    m = _Sizes()
    predict(m, _rows(1025, 1))
    assert m.sizes == [1024, 1]


@pytest.mark.parametrize("training", [True, False])
def test_predict_restores_the_mode_it_found(training):
    m = _Sizes()
    m.train(training)
    predict(m, _rows(3), batch_size=2)
    assert m.training is training and m.modes == [False, False]
    predict(m, _rows(0))
    assert m.training is training


def test_predict_of_no_rows_is_the_models_empty_output():
    m = _Sizes()
    out = predict(m, _rows(0))
    assert out.shape == (0, 2) and m.sizes == [0] and m.modes == [False]


def test_predict_accepts_a_model_without_a_training_flag():
    class Duck:
        def __init__(self):
            self.calls = []

        def eval(self):
            self.calls.append("eval")

        def train(self, mode=True):
            self.calls.append(mode)

        def __call__(self, x):
            return x

    d = Duck()
    assert predict(d, _rows(2)).shape == (2, 2)
    assert d.calls == ["eval", False]


# -- evaluate, fit: tiny data, a linear model ------------------------------------------------


def _data(n=10, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    return X, y


def _loader(n=10, batch_size=4, **kw):
    X, y = _data(n)
    return DataLoader(TensorDataset(X, y), batch_size=batch_size, **kw)


def _lin(seed=0):
    gl.manual_seed(seed)
    return nn.Linear(2, 2)


def _ce_by_hand(model, X, y):
    with gl.no_grad():
        out = model(gl.tensor(X)).numpy().astype(np.float64)
    z = out - out.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    rows = -logp[np.arange(len(y)), y]
    acc = (out.argmax(1) == y).astype(np.float64)
    return rows, acc


def test_evaluate_weights_each_batch_by_its_size():
    X, y = _data(10)
    model = _lin()
    rows, acc = _ce_by_hand(model, X, y)
    got = evaluate(model, nn.CrossEntropyLoss(), _loader(10, 4))  # batches of 4, 4, 2
    assert sorted(got) == ["accuracy", "loss"]
    assert got["loss"] == pytest.approx(rows.mean(), rel=1e-6)
    assert got["accuracy"] == pytest.approx(acc.mean(), rel=1e-12)
    assert evaluate(model, nn.CrossEntropyLoss(), _loader(10, 4), metrics=()) == \
        {"loss": pytest.approx(rows.mean(), rel=1e-6)}


class _Probe(nn.Module):
    """A Linear layer that calls ``look(module, x)`` on every forward."""

    def __init__(self, look):
        super().__init__()
        self.lin = _lin()
        self._look = look

    def forward(self, x):
        self._look(self, x)
        return self.lin(x)


@pytest.mark.parametrize("training", [True, False])
def test_evaluate_runs_in_eval_mode_and_restores_the_mode(training):
    seen = []
    m = _Probe(lambda module, x: seen.append(module.training))
    m.train(training)
    evaluate(m, nn.CrossEntropyLoss(), _loader(8, 4))
    assert seen == [False, False] and m.training is training


def test_evaluate_of_an_empty_loader_is_an_error():
    with pytest.raises(ValueError, match=r"^evaluate: the loader yielded no samples$"):
        evaluate(_lin(), nn.CrossEntropyLoss(), [])


def test_evaluate_uses_the_first_two_fields_of_a_batch():
    X, y = _data(6)
    w = np.ones(6, np.float32)
    loader = DataLoader(TensorDataset(X, y, w), batch_size=3)  # (x, y, sample weight)
    model = _lin()
    rows, _ = _ce_by_hand(model, X, y)
    assert evaluate(model, nn.CrossEntropyLoss(), loader)["loss"] == \
        pytest.approx(rows.mean(), rel=1e-6)


def test_summary_line():
    logs = {"epoch": 3, "loss": 0.123456, "accuracy": 0.5, "val_loss": None, "lr": 0.01,
            "time": 1.23456}
    assert L._summary(logs, 10) == "epoch 3/10  loss 0.1235  accuracy 0.5  lr 0.01  time 1.23s"


def test_l1_penalty_sums_the_weight_matrices_only():
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2), nn.Linear(2, 2))
    expected = sum(np.abs(p.detach().numpy()).sum() for p in model.parameters() if p.ndim >= 2)
    assert L._l1_penalty(model).item() == pytest.approx(expected, rel=1e-6)


class _BiasOnly(nn.Module):
    """y = x + b: no weight matrix for the L1 term to penalize."""

    def __init__(self):
        super().__init__()
        self.b = nn.Parameter(gl.zeros(2))

    def forward(self, x):
        return x + self.b


def test_l1_on_a_model_without_weight_matrices():
    model = _BiasOnly()
    opt = gl.optim.SGD(model.parameters(), lr=0.1)
    h = fit(model, nn.CrossEntropyLoss(), opt, _loader(8, 4), epochs=1, verbose=0)
    assert len(h) == 1 and model.b.detach().numpy().any()  # l1=0: no L1 term is built
    with pytest.raises(ValueError, match=r"^fit: l1=0.5 penalizes the weight matrices "
                                         r"\(parameters of 2 or more dims\), and this model "
                                         r"has none; pass l1=0, or add the penalty you want "
                                         r"to loss_fn$"):
        fit(model, nn.CrossEntropyLoss(), opt, _loader(8, 4), epochs=1, verbose=0, l1=0.5)


def test_lr_of_an_optimizer_and_of_an_object_without_groups():
    opt = gl.optim.SGD(_lin().parameters(), lr=0.25)
    assert L._lr(opt) == 0.25 and type(L._lr(opt)) is float
    assert L._lr(object()) is None


def test_fit_argument_errors_name_the_value():
    model = _lin()
    opt = gl.optim.SGD(model.parameters(), lr=0.1)
    train = _loader(8, 4)
    ce = nn.CrossEntropyLoss()
    cases = [
        ({"epochs": 1.5}, ValueError, r"^epochs must be a positive integer, got 1.5$"),
        ({"epochs": 0}, ValueError, r"^epochs must be a positive integer, got 0$"),
        ({"on_nonfinite": "skip"}, ValueError,
         r"^on_nonfinite must be 'raise', 'stop' or 'skip_batch', got 'skip'$"),
        ({"l1": -0.1}, ValueError, r"^l1 must be >= 0, got -0.1$"),
        ({"checkpoint_every": 0, "checkpoint_dir": "x"}, ValueError,
         r"^checkpoint_every must be a positive integer \(steps\), got 0$"),
        ({"checkpoint_every": 1.5, "checkpoint_dir": "x"}, ValueError,
         r"^checkpoint_every must be a positive integer \(steps\), got 1.5$"),
        ({"checkpoint_every": 2}, ValueError, r"^checkpoint_every and resume need checkpoint_dir$"),
        ({"resume": True}, ValueError, r"^checkpoint_every and resume need checkpoint_dir$"),
        ({"callbacks": [object()]}, TypeError,
         r"^callbacks must be Callback instances, got object$"),
    ]
    for kw, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            fit(model, ce, opt, train, **{"epochs": 1, "verbose": 0, **kw})
    X, y = _data(8)
    with pytest.raises(TypeError, match=r"^fit: train_loader is a tuple of 2 arrays, not a "
                                        r"loader; wrap them as gl.data.DataLoader\("):
        fit(model, ce, opt, (X, y), epochs=1, verbose=0)
    with pytest.raises(TypeError, match=r"^fit: val_loader must be a gl.data.DataLoader \(a "
                                        r"sized iterable of batches\), got int$"):
        fit(model, ce, opt, train, 5, epochs=1, verbose=0)
    with pytest.raises(TypeError, match=r"^fit: train_loader must be a gl.data.DataLoader"):
        fit(model, ce, opt, iter([]), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"^train_loader yields no batches \(is drop_last=True"):
        fit(model, ce, opt, [], epochs=1, verbose=0)
    other = gl.optim.SGD(model.parameters(), lr=0.1)
    sched = gl.optim.lr_scheduler.StepLR(other, 1)
    with pytest.raises(ValueError, match=r"^fit: the scheduler \(StepLR\) was built on another "
                                         r"optimizer \(SGD\) than the one passed to fit \(SGD\)"):
        fit(model, ce, opt, train, epochs=1, verbose=0, scheduler=sched)


def test_fit_accepts_an_integral_float_epoch_count_and_a_plain_list_loader():
    model = _lin()
    X, y = _data(8)
    batches = [(gl.tensor(X[:4]), gl.tensor(y[:4])), (gl.tensor(X[4:]), gl.tensor(y[4:]))]
    h = fit(model, nn.CrossEntropyLoss(), gl.optim.SGD(model.parameters(), lr=0.1), batches,
            epochs=2.0, verbose=0)
    assert h["epoch"] == [1, 2]


class _Record(Callback):
    def __init__(self):
        self.events = []

    def on_train_begin(self):
        self.events.append(("begin", self.run.epochs, self.run.step))

    def on_epoch_begin(self, epoch):
        self.events.append(("epoch", epoch, self.run.epoch))

    def on_batch_end(self, batch, loss):
        self.events.append(("batch", batch, self.run.step))

    def on_epoch_end(self, epoch, logs):
        self.events.append(("end", epoch, sorted(logs)))

    def on_train_end(self):
        self.events.append(("done", self.run.epoch, self.run.stop_training))


def test_fit_records_each_epoch_and_calls_the_hooks_in_order():
    X, y = _data(10)
    model, ref = _lin(), _lin()
    rec = _Record()
    opt = gl.optim.SGD(model.parameters(), lr=0.1)
    h = fit(model, nn.CrossEntropyLoss(), opt, _loader(10, 4), _loader(10, 10), epochs=2,
            verbose=0, callbacks=[rec])
    keys = ["accuracy", "epoch", "loss", "lr", "time", "val_accuracy", "val_loss"]
    assert rec.events == [("begin", 2, 0),
                          ("epoch", 1, 1), ("batch", 1, 1), ("batch", 2, 2), ("batch", 3, 3),
                          ("end", 1, keys),
                          ("epoch", 2, 2), ("batch", 1, 4), ("batch", 2, 5), ("batch", 3, 6),
                          ("end", 2, keys), ("done", 2, False)]
    assert h["epoch"] == [1, 2] and h["lr"] == [0.1, 0.1] and h.stop_reason is None
    # The epoch's training loss: the batch losses weighted by batch size, before each step.
    ref_opt = gl.optim.SGD(ref.parameters(), lr=0.1)
    ce = nn.CrossEntropyLoss()
    for epoch in range(2):
        total = hits = 0.0
        for s in (slice(0, 4), slice(4, 8), slice(8, 10)):
            out = ref(gl.tensor(X[s]))
            loss = ce(out, gl.tensor(y[s]))
            total += loss.item() * len(y[s])
            hits += float((out.detach().numpy().argmax(1) == y[s]).sum())
            ref_opt.zero_grad()
            loss.backward()
            ref_opt.step()
        assert h["loss"][epoch] == pytest.approx(total / 10, rel=1e-6)
        assert h["accuracy"][epoch] == pytest.approx(hits / 10, rel=1e-12)
    rows, acc = _ce_by_hand(model, X, y)
    assert h["val_loss"][-1] == pytest.approx(rows.mean(), rel=1e-6)
    assert h["val_accuracy"][-1] == pytest.approx(acc.mean())
    assert np.array_equal(model.weight.detach().numpy(), ref.weight.detach().numpy())


def test_fit_without_validation_monitors_the_training_loss():
    model = _lin()
    stopper = EarlyStopping(monitor="loss", patience=0)
    h = fit(model, nn.CrossEntropyLoss(), gl.optim.SGD(model.parameters(), lr=0.0),
            _loader(8, 4), epochs=5, verbose=0, callbacks=[stopper])
    assert len(h) == 2 and "early stopping at epoch 2" in h.stop_reason  # lr 0: no change
    sched_opt = gl.optim.SGD(model.parameters(), lr=1.0)
    sched = gl.optim.lr_scheduler.ReduceLROnPlateau(sched_opt, patience=0, factor=0.5)
    h = fit(model, nn.CrossEntropyLoss(), sched_opt, _loader(8, 4), epochs=3, verbose=0,
            scheduler=sched, callbacks=[_Script("loss", [1.0, 1.0, 1.0])])
    assert h["lr"] == [1.0, 1.0, 0.5]  # stepped on the (scripted) training loss
    h = fit(model, nn.CrossEntropyLoss(), sched_opt, _loader(8, 4), _loader(8, 8), epochs=2,
            verbose=0, scheduler=gl.optim.lr_scheduler.ReduceLROnPlateau(sched_opt, patience=0),
            callbacks=[_Script("val_loss", [1.0, 1.0])], monitor="val_loss")
    assert len(h) == 2


class _Script(Callback):
    def __init__(self, key, values):
        self.key, self.values = key, list(values)

    def on_epoch_end(self, epoch, logs):
        logs[self.key] = self.values[epoch - 1]


def test_fit_records_the_lr_at_the_start_of_each_epoch_and_steps_the_scheduler_per_epoch():
    model = _lin()
    opt = gl.optim.SGD(model.parameters(), lr=1.0)
    sched = gl.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    h = fit(model, nn.CrossEntropyLoss(), opt, _loader(8, 4), epochs=3, verbose=0,
            scheduler=sched)
    assert h["lr"] == [1.0, 0.5, 0.25] and opt.param_groups[0]["lr"] == 0.125


def test_a_model_with_batchnorm_refuses_a_batch_of_one_row():
    gl.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    with pytest.raises(ValueError, match=r"^fit: batch 3 of epoch 1 holds 1 row and the model "
                                         r"has BatchNorm, which cannot compute batch statistics "
                                         r"from one row in training mode; build the train "
                                         r"loader with drop_last=True \(as PyTorch users do\), "
                                         r"or choose a batch_size that does not leave a last "
                                         r"batch of 1 row$"):
        fit(model, nn.CrossEntropyLoss(), gl.optim.SGD(model.parameters(), lr=0.1),
            _loader(9, 4), epochs=1, verbose=0)
    assert L._has_batchnorm(model)
    model.eval()
    assert not L._has_batchnorm(model)  # eval mode uses the running statistics
    assert not L._has_batchnorm(_lin()) and not L._has_batchnorm(object())
    # Without BatchNorm a last batch of one row is fine.
    plain = _lin()
    h = fit(plain, nn.CrossEntropyLoss(), gl.optim.SGD(plain.parameters(), lr=0.1),
            _loader(9, 4), epochs=1, verbose=0)
    assert len(h) == 1


def test_an_empty_batch_is_refused():
    model = _lin()
    X, y = _data(4)
    batches = [(gl.tensor(X), gl.tensor(y)), (gl.tensor(X[:0]), gl.tensor(y[:0]))]
    with pytest.raises(ValueError, match=r"^fit: batch 2 of epoch 1 is empty \(inputs of shape "
                                         r"\(0, 2\)\); its mean loss is undefined: make the "
                                         r"loader yield only non-empty batches$"):
        fit(model, nn.CrossEntropyLoss(), gl.optim.SGD(model.parameters(), lr=0.1), batches,
            epochs=1, verbose=0)


class _NanOn:
    def __init__(self, *calls):
        self.bad, self.calls, self.inner = set(calls), 0, nn.CrossEntropyLoss()

    def __call__(self, out, y):
        self.calls += 1
        loss = self.inner(out, y)
        return loss * float("inf") if self.calls in self.bad else loss


def test_nonfinite_error_names_the_value_epoch_and_batch():
    model = _lin()
    with pytest.raises(NonFiniteLossError) as e:
        fit(model, _NanOn(2), gl.optim.SGD(model.parameters(), lr=0.1), _loader(8, 4),
            epochs=2, verbose=0)
    assert str(e.value) == ("loss is inf at epoch 1, batch 2; the weights were not updated "
                            "with it (try a lower learning rate, gradient clipping, or check "
                            "the data for NaN/Inf)")
    assert (e.value.epoch, e.value.batch, len(e.value.history)) == (1, 2, 0)
    err = NonFiniteLossError("m", 3, 4)
    assert (err.epoch, err.batch, err.history) == (3, 4, None)


def test_skip_batch_that_skips_a_whole_epoch_stops_with_the_reason():
    model = _lin()
    h = fit(model, _NanOn(3, 4), gl.optim.SGD(model.parameters(), lr=0.1), _loader(8, 4),
            epochs=3, verbose=0, on_nonfinite="skip_batch")
    assert len(h) == 1 and h.stop_reason == (
        "every batch of epoch 2 had a non-finite loss and was skipped "
        "(on_nonfinite='skip_batch'); training stopped")


def test_stop_policy_stops_the_run_and_on_train_end_sees_it():
    model = _lin()
    rec = _Record()
    h = fit(model, _NanOn(3), gl.optim.SGD(model.parameters(), lr=0.1), _loader(8, 4),
            epochs=3, verbose=0, on_nonfinite="stop", callbacks=[rec])
    assert len(h) == 1 and h.stop_reason.startswith("loss is inf at epoch 2, batch 1;")
    assert rec.events[-1] == ("done", 2, True)


def test_verbose_2_prints_the_summary_to_stdout(capsys):
    model = _lin()
    fit(model, nn.CrossEntropyLoss(), gl.optim.SGD(model.parameters(), lr=0.1), _loader(8, 4),
        epochs=1, verbose=2)
    out = capsys.readouterr()
    line, = out.out.splitlines()
    assert line.startswith("epoch 1/1  loss ") and " lr 0.1  time " in line
    assert out.err == ""
    fit(model, nn.CrossEntropyLoss(), gl.optim.SGD(model.parameters(), lr=0.1), _loader(8, 4),
        epochs=1, verbose=0)
    assert capsys.readouterr().out == ""


def test_progress_bar_only_on_a_terminal(monkeypatch):
    assert L._progress(3, "x", 0) is None
    monkeypatch.setattr(L.sys.stderr, "isatty", lambda: False, raising=False)
    assert L._progress(3, "x", 1) is None


# -- checkpoints and resuming ----------------------------------------------------------------


def _ckpt_fit(directory, epochs, resume=False, every=None, callbacks=(), loss=None):
    model = _lin()
    opt = gl.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loader = _loader(8, 4, shuffle=True, seed=3)
    h = fit(model, loss or nn.CrossEntropyLoss(), opt, loader, epochs=epochs, verbose=0,
            checkpoint_dir=directory, checkpoint_every=every, resume=resume,
            callbacks=list(callbacks))
    return model, h


def _w2(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def test_a_finished_run_given_more_epochs_goes_on_as_if_asked_for_them_first(tmp_path):
    full, hf = _ckpt_fit(tmp_path / "full", 3)
    _ckpt_fit(tmp_path / "part", 2)
    again, h = _ckpt_fit(tmp_path / "part", 3, resume=True)
    assert h["epoch"] == [1, 2, 3] and h["loss"] == hf["loss"]
    for k, v in _w2(full).items():
        assert np.array_equal(_w2(again)[k], v), k
    state = ckpt.latest(tmp_path / "part")[1]
    assert state["finished"] is True and state["epoch"] == 3 and state["epochs"] == 3
    assert state["step"] == 6 and state["batch"] == 2
    assert state["totals"] == {} and state["count"] == 0 and state["lr"] == 0.1


def test_resuming_a_finished_run_with_the_same_epochs_trains_no_more(tmp_path):
    model, h = _ckpt_fit(tmp_path / "run", 2)
    n = len(ckpt.list_checkpoints(tmp_path / "run"))
    again, h2 = _ckpt_fit(tmp_path / "run", 2, resume=True)
    assert h2["epoch"] == [1, 2] and h2["loss"] == h["loss"]
    for k, v in _w2(model).items():
        assert np.array_equal(_w2(again)[k], v), k
    assert len(ckpt.list_checkpoints(tmp_path / "run")) == n
    last = ckpt.list_checkpoints(tmp_path / "run")[-1]
    before = os.stat(last)
    _ckpt_fit(tmp_path / "run", 2, resume=True)
    after = os.stat(last)  # not rewritten either (a rewrite renames a new file into place)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_run_that_stopped_early_stays_stopped_when_resumed_with_more_epochs(tmp_path):
    stop = EarlyStopping(monitor="loss", patience=0, restore_best_weights=False)
    _, h = _ckpt_fit(tmp_path / "run", 3, callbacks=[stop],
                     loss=_ScriptedLoss([1.0, 1.0, 2.0, 2.0, 3.0, 3.0]))
    assert len(h) == 2 and h.stop_reason.startswith("early stopping at epoch 2")
    stop2 = EarlyStopping(monitor="loss", patience=0, restore_best_weights=False)
    _, h2 = _ckpt_fit(tmp_path / "run", 5, resume=True, callbacks=[stop2])
    assert len(h2) == 2 and h2.stop_reason == h.stop_reason


class _ScriptedLoss:
    """A loss whose value is scripted batch by batch (its gradient is 0)."""

    def __init__(self, factors):
        self.factors, self.calls, self.inner = list(factors), 0, nn.CrossEntropyLoss()

    def __call__(self, out, y):
        f = self.factors[self.calls % len(self.factors)]
        self.calls += 1
        return self.inner(out, y) * 0.0 + f


def test_resuming_with_fewer_epochs_than_the_checkpoint_is_refused(tmp_path):
    _ckpt_fit(tmp_path / "run", 3)
    with pytest.raises(ckpt.CheckpointError, match=r"^resume: .*ckpt-.*\.gl is from a run of 3 "
                                                   r"epochs, more than epochs=2$"):
        _ckpt_fit(tmp_path / "run", 2, resume=True)


def test_resuming_with_other_callbacks_names_both_lists(tmp_path):
    _ckpt_fit(tmp_path / "run", 1)
    with pytest.raises(ckpt.CheckpointError, match=r"was written with callbacks \[\] but this "
                                                   r"run has \['EarlyStopping'\]; pass the same "
                                                   r"callbacks \(and scheduler\) as the first "
                                                   r"run$"):
        _ckpt_fit(tmp_path / "run", 1, resume=True, callbacks=[EarlyStopping("loss")])


def test_resuming_mid_epoch_restores_the_callbacks_totals_and_rngs(tmp_path):
    full, hf = _ckpt_fit(tmp_path / "full", 2, callbacks=[EarlyStopping("loss", patience=5)])
    _ckpt_fit(tmp_path / "cut", 2, every=3, callbacks=[EarlyStopping("loss", patience=5)])
    os.unlink(ckpt.list_checkpoints(tmp_path / "cut")[-1])  # as if killed after step 3
    state = ckpt.latest(tmp_path / "cut")[1]
    assert (state["epoch"], state["batch"], state["step"], state["finished"]) == (2, 1, 3, False)
    stop = EarlyStopping("loss", patience=5)
    again, h = _ckpt_fit(tmp_path / "cut", 2, resume=True, callbacks=[stop])
    assert h["loss"] == pytest.approx(hf["loss"], rel=1e-12) and h["epoch"] == [1, 2]
    assert h["lr"] == hf["lr"] == [0.1, 0.1]
    assert stop.best_epoch is not None and stop.tracker.best == min(hf["loss"])
    for k, v in _w2(full).items():
        assert np.array_equal(_w2(again)[k], v), k


# -- compile=True: the same weights and History as eager training ---------------------------
@pytest.mark.parametrize("l1", [0.0, 0.01])
def test_compiled_fit_equals_eager_fit(l1):
    runs = []
    for compile in (False, True):
        model = _lin()
        h = fit(model, nn.CrossEntropyLoss(), gl.optim.SGD(model.parameters(), lr=0.1),
                _loader(10, 4), epochs=3, verbose=0, l1=l1, compile=compile)
        runs.append((_w2(model), h["loss"], h["accuracy"]))
    (w_e, loss_e, acc_e), (w_c, loss_c, acc_c) = runs
    assert loss_c == loss_e and acc_c == acc_e
    for k in w_e:
        assert np.array_equal(w_c[k], w_e[k]), k


def test_check_loader_accepts_a_tuple_of_batches_and_names_what_it_got():
    X, y = _data(4)
    batches = ((gl.tensor(X), gl.tensor(y)),)  # a tuple of (x, y) batches is a loader
    model = _lin()
    h = fit(model, nn.CrossEntropyLoss(), gl.optim.SGD(model.parameters(), lr=0.1), batches,
            epochs=1, verbose=0)
    assert len(h) == 1
    L._check_loader("train_loader", ())  # an empty tuple is not arrays (len() decides later)
    with pytest.raises(TypeError, match=r"^fit: val_loader is a tuple of 1 arrays, not a "
                                        r"loader; wrap them as gl.data.DataLoader\(gl.data."
                                        r"TensorDataset\(X, y\), batch_size=...\)$"):
        L._check_loader("val_loader", (X,))
    with pytest.raises(TypeError, match=r"^fit: train_loader must be a gl.data.DataLoader \(a "
                                        r"sized iterable of batches\), got generator$"):
        L._check_loader("train_loader", (b for b in batches))

    class SizedOnly:
        def __len__(self):
            return 1

    with pytest.raises(TypeError, match=r"got SizedOnly$"):
        L._check_loader("train_loader", SizedOnly())


def test_to_device_moves_only_what_is_elsewhere():
    t = gl.tensor([1.0])
    assert L._to_device(t, None) is t
    assert L._to_device(t, t.device) is t


def test_progress_bar_on_a_terminal(monkeypatch):
    pytest.importorskip("tqdm")
    monkeypatch.setattr(L.sys.stderr, "isatty", lambda: True, raising=False)
    bar = L._progress(7, "epoch 1/2", 1)
    try:
        assert bar.total == 7 and bar.desc == "epoch 1/2" and bar.unit == "batch"
        assert bar.leave is False
    finally:
        bar.close()
    assert L._progress(7, "x", 2) is not None
    assert L._progress(7, "x", 0) is None


def test_a_finished_one_epoch_run_resumed_trains_no_more(tmp_path):
    model, h = _ckpt_fit(tmp_path / "run", 1)
    again, h2 = _ckpt_fit(tmp_path / "run", 1, resume=True)
    assert h2["epoch"] == [1] and h2["loss"] == h["loss"]
    for k, v in _w2(model).items():
        assert np.array_equal(_w2(again)[k], v), k


def test_a_run_resumed_mid_epoch_does_not_begin_that_epoch_again(tmp_path):
    _ckpt_fit(tmp_path / "cut", 2, every=3, callbacks=[_Record()])
    os.unlink(ckpt.list_checkpoints(tmp_path / "cut")[-1])  # resume at epoch 2, batch 1
    rec = _Record()
    _ckpt_fit(tmp_path / "cut", 2, resume=True, callbacks=[rec])
    assert [e for e in rec.events if e[0] == "epoch"] == []
    assert [e[:2] for e in rec.events if e[0] == "batch"] == [("batch", 2)]


class _Seen(Callback):
    def __init__(self):
        self.losses, self.runs = [], []

    def on_train_begin(self):
        self.runs.append((self.run.scheduler, self.run.device, self.run.optimizer))

    def on_batch_end(self, batch, loss):
        self.losses.append(loss)


def test_callbacks_see_the_run_and_each_batch_loss():
    model = _lin()
    opt = gl.optim.SGD(model.parameters(), lr=0.0)
    sched = gl.optim.lr_scheduler.StepLR(opt, 1)
    seen = _Seen()
    h = fit(model, nn.CrossEntropyLoss(), opt, _loader(8, 4), epochs=1, verbose=0,
            scheduler=sched, callbacks=[seen], device="cpu")
    assert seen.runs == [(sched, gl.device("cpu"), opt)]
    X, y = _data(8)
    rows, _ = _ce_by_hand(model, X, y)  # lr 0: the weights did not move
    assert seen.losses == pytest.approx([rows[:4].mean(), rows[4:].mean()], rel=1e-6)
    assert h["loss"] == pytest.approx([rows.mean()], rel=1e-6)
    assert 0 <= h["time"][0] < 60


def test_a_three_field_loader_trains_on_the_first_two():
    X, y = _data(8)
    loader = DataLoader(TensorDataset(X, y, np.ones(8, np.float32)), batch_size=4)
    model, ref = _lin(), _lin()
    fit(model, nn.CrossEntropyLoss(), gl.optim.SGD(model.parameters(), lr=0.1), loader,
        loader, epochs=1, verbose=0)
    fit(ref, nn.CrossEntropyLoss(), gl.optim.SGD(ref.parameters(), lr=0.1), _loader(8, 4),
        epochs=1, verbose=0)
    assert np.array_equal(model.weight.detach().numpy(), ref.weight.detach().numpy())


def test_on_a_terminal_verbose_1_shows_a_bar_and_the_summary_on_stderr(monkeypatch, capsys):
    pytest.importorskip("tqdm")
    monkeypatch.setattr(L.sys.stderr, "isatty", lambda: True, raising=False)
    bars, progress = [], L._progress

    def keep(total, desc, verbose):
        bar = progress(total, desc, verbose)
        bars.append(bar)
        return bar

    monkeypatch.setattr(L, "_progress", keep)
    model = _lin()
    X, y = _data(8)
    rows, _ = _ce_by_hand(model, X, y)
    fit(model, nn.CrossEntropyLoss(), gl.optim.SGD(model.parameters(), lr=0.0), _loader(8, 4),
        epochs=1, verbose=1)
    out = capsys.readouterr()
    assert out.out == ""
    assert "epoch 1/1:" in out.err and "0/2" in out.err and "batch/s" in out.err
    assert any(line.startswith("epoch 1/1  loss ") for line in out.err.split("\r"))
    bar, = bars
    assert (bar.n, bar.total, bar.desc) == (2, 2, "epoch 1/1")
    assert bar.postfix == f"loss={rows.mean():.4f}"
    fit(model, nn.CrossEntropyLoss(), gl.optim.SGD(model.parameters(), lr=0.1), _loader(8, 4),
        epochs=1, verbose=0)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


@pytest.mark.skipif(not gl.cuda.is_available(), reason="needs a CUDA device (real or emulated)")
def test_fit_on_a_cuda_device_moves_the_model_and_each_batch():
    # Not marked `cuda` (see tests/data/test_loader_mutants.py): runs on the emulated device.
    model, ref = _lin(), _lin()
    h = fit(model, nn.CrossEntropyLoss(), gl.optim.SGD(model.parameters(), lr=0.1),
            _loader(8, 4), _loader(8, 8), epochs=2, verbose=0, device="cuda")
    href = fit(ref, nn.CrossEntropyLoss(), gl.optim.SGD(ref.parameters(), lr=0.1),
               _loader(8, 4), _loader(8, 8), epochs=2, verbose=0)
    assert model.weight.device.type == "cuda"
    assert h["loss"] == pytest.approx(href["loss"], rel=1e-6)
    assert h["val_loss"] == pytest.approx(href["val_loss"], rel=1e-6)
    got = evaluate(model, nn.CrossEntropyLoss(), _loader(8, 8), device="cuda")
    assert got["loss"] == pytest.approx(href["val_loss"][-1], rel=1e-6)


def test_a_nonfinite_loss_is_named_by_its_own_value_even_when_the_l1_term_differs():
    model = _lin()
    with gl.no_grad():
        model.weight[0, 0] = np.inf  # the L1 term is inf, the loss -inf: the objective is nan
    with pytest.raises(NonFiniteLossError, match=r"^loss is -inf at epoch 1, batch 1;"), \
            np.errstate(invalid="ignore"):
        fit(model, lambda out, y: gl.tensor(-np.inf), gl.optim.SGD(model.parameters(), lr=0.1),
            _loader(8, 4), epochs=1, verbose=0, l1=0.01)


# -- the rank helpers of distributed training, against a stand-in of a 2-rank world ---------
class _TwoRanks:
    """``dist.mpi`` of rank 0 in a world whose rank 1 contributes ``other``."""

    def __init__(self, other):
        self.mpi, self.other = self, other

    def allreduce(self, array, op):
        fn = {"max": np.maximum, "sum": np.add}[op]
        array[...] = fn(array, np.asarray(self.other, dtype=array.dtype))  # in place, as MPI
        return array

    def allgather_object(self, value):
        return [value, self.other]


def test_a_flag_holds_on_every_rank_only_when_it_holds_on_each():
    assert L._on_every_rank(_TwoRanks([0]), True) is True
    assert L._on_every_rank(_TwoRanks([1]), True) is False  # rank 1's flag is False
    assert L._on_every_rank(_TwoRanks([0]), False) is False


def test_epoch_totals_add_up_over_the_ranks():
    totals, count = L._sum_over_ranks(_TwoRanks([6.0, 2.0, 1.5]),
                                      {"loss": 1.0, "accuracy": 0.5}, 4)
    assert totals == {"loss": 3.0, "accuracy": 2.0} and count == 10
    assert type(count) is int and all(type(v) is float for v in totals.values())


def test_a_value_that_differs_between_ranks_is_an_error_naming_each():
    from gradlab.distributed import DistributedError
    assert L._same_on_every_rank(_TwoRanks(3), "resume: the checkpoint step", 3) is None
    with pytest.raises(DistributedError, match=r"^resume: the checkpoint step differs between "
                                               r"ranks: rank 0: 3, rank 1: 4; every rank must "
                                               r"read the same checkpoint directory$"):
        L._same_on_every_rank(_TwoRanks(4), "resume: the checkpoint step", 3)


def test_fit_defaults_are_10_quiet_epochs(capsys):
    model = _lin()
    h = fit(model, nn.CrossEntropyLoss(), gl.optim.SGD(model.parameters(), lr=0.1),
            _loader(8, 4))
    assert len(h) == 10
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""  # verbose=1 off a terminal prints nothing


def test_checkpoint_every_step_is_allowed(tmp_path):
    _, h = _ckpt_fit(tmp_path / "run", 1, every=1)
    assert len(h) == 1 and len(ckpt.list_checkpoints(tmp_path / "run")) >= 1


def test_the_full_text_of_two_fit_errors():
    model = _lin()
    opt = gl.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"^train_loader yields no batches \(is drop_last=True "
                                         r"with a batch_size larger than the dataset\?\)$"):
        fit(model, nn.CrossEntropyLoss(), opt, [], epochs=1, verbose=0)
    sched = gl.optim.lr_scheduler.StepLR(gl.optim.SGD(model.parameters(), lr=0.1), 1)
    with pytest.raises(ValueError, match=r"^fit: the scheduler \(StepLR\) was built on another "
                                         r"optimizer \(SGD\) than the one passed to fit \(SGD\), "
                                         r"so it would change the learning rate of an optimizer "
                                         r"that does not train; build the scheduler on the "
                                         r"optimizer you pass to fit$"):
        fit(model, nn.CrossEntropyLoss(), opt, _loader(8, 4), epochs=1, verbose=0,
            scheduler=sched)


def test_a_scheduler_without_an_optimizer_attribute_is_stepped_each_epoch():
    class Halve:
        def __init__(self, opt):
            self.opt, self.steps = opt, 0

        def step(self):
            self.steps += 1
            self.opt.param_groups[0]["lr"] /= 2

    model = _lin()
    opt = gl.optim.SGD(model.parameters(), lr=1.0)
    sched = Halve(opt)
    h = fit(model, nn.CrossEntropyLoss(), opt, _loader(8, 4), epochs=3, verbose=0,
            scheduler=sched)
    assert sched.steps == 3 and h["lr"] == [1.0, 0.5, 0.25]


def test_the_plateau_scheduler_steps_on_fits_monitor():
    model = _lin()
    opt = gl.optim.SGD(model.parameters(), lr=1.0)
    sched = gl.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", patience=0, factor=0.5)
    # accuracy flat while the loss keeps rising (better, in max mode): stepping on accuracy
    # halves the lr after its second epoch; stepping on the loss would not
    h = fit(model, nn.CrossEntropyLoss(), opt, _loader(8, 4), epochs=3, verbose=0,
            scheduler=sched, monitor="accuracy",
            callbacks=[_Script("accuracy", [0.5, 0.5, 0.5]), _Script("loss", [1.0, 2.0, 3.0])])
    assert h["lr"] == [1.0, 1.0, 0.5]


def test_callbacks_see_epoch_0_before_the_first_epoch():
    seen = []

    class Begin(Callback):
        def on_train_begin(self):
            seen.append((self.run.epoch, self.run.stop_training, self.run.stop_reason))

    model = _lin()
    fit(model, nn.CrossEntropyLoss(), gl.optim.SGD(model.parameters(), lr=0.1), _loader(8, 4),
        epochs=1, verbose=0, callbacks=[Begin()])
    assert seen == [(0, False, None)]


def test_evaluate_accepts_a_model_without_a_training_flag():
    class Duck:
        def __init__(self):
            self.calls, self.lin = [], _lin()

        def eval(self):
            self.calls.append("eval")

        def train(self, mode=True):
            self.calls.append(mode)

        def __call__(self, x):
            return self.lin(x)

    d = Duck()
    evaluate(d, nn.CrossEntropyLoss(), _loader(8, 8))
    assert d.calls == ["eval", False]


def test_without_validation_the_plateau_scheduler_monitors_the_training_loss():
    model = _lin()
    opt = gl.optim.SGD(model.parameters(), lr=1.0)
    sched = gl.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5)
    # a callback records a flat val_loss without a val_loader; the loss improves
    h = fit(model, nn.CrossEntropyLoss(), opt, _loader(8, 4), epochs=3, verbose=0,
            scheduler=sched,
            callbacks=[_Script("val_loss", [1.0, 1.0, 1.0]), _Script("loss", [3.0, 2.0, 1.0])])
    assert h["lr"] == [1.0, 1.0, 1.0]


def test_evaluate_without_a_device_leaves_the_batches_where_they_are(monkeypatch):
    seen = []
    model = _Probe(lambda module, x: seen.append(x.device))
    loader = _loader(8, 4)  # on the CPU
    monkeypatch.setenv("GRADLAB_DEVICE", "cuda")  # what device=None would resolve to
    got = evaluate(model, nn.CrossEntropyLoss(), loader)
    assert seen == [gl.device("cpu")] * 2 and got["loss"] > 0


def test_compiled_fit_replays_the_step_without_running_the_models_forward():
    # Counted where the step's watch does not look (a list, a deque or a module attribute
    # changed during the step would make it run eagerly): a queue's contents are not
    calls = queue.SimpleQueue()

    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = _lin()

        def forward(self, x):
            calls.put(len(x))
            return self.lin(x)

    for compile, expected in ((False, 6), (True, 2)):
        while not calls.empty():
            calls.get()
        model = Counting()
        fit(model, nn.CrossEntropyLoss(), gl.optim.SGD(model.parameters(), lr=0.1),
            _loader(8, 4), epochs=3, verbose=0, compile=compile)
        # compiled: the one batch shape is recorded in two eager steps, then replayed
        assert calls.qsize() == expected, compile


def test_the_bar_redraws_at_tqdms_pace_not_at_every_batch(monkeypatch, capsys):
    pytest.importorskip("tqdm")
    import tqdm.std
    monkeypatch.setattr(L.sys.stderr, "isatty", lambda: True, raising=False)

    def run(clock):
        monkeypatch.setattr(tqdm.std, "time", clock)
        model = _lin()
        fit(model, nn.CrossEntropyLoss(), gl.optim.SGD(model.parameters(), lr=0.1),
            _loader(12, 4), epochs=1, verbose=1)
        return capsys.readouterr().err

    # A stopped clock: tqdm's own pace (mininterval) never comes, and setting the loss after
    # each batch does not force a redraw: the bar is drawn once, when it opens.
    err = run(lambda: 1000.0)
    assert "0/3" in err and "1/3" not in err and "loss=" not in err
    # A clock that moves a second a call: tqdm redraws after each batch, showing the loss
    # set after the batch before.
    ticks = iter(range(1000, 10**6))
    err = run(lambda: float(next(ticks)))
    assert "2/3" in err and "loss=" in err
