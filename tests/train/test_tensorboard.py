"""gl.train.TensorBoard and `gradlab train --tensorboard`: the events, read back with
tensorboard's own EventAccumulator, hold the History's values at step = epoch, and weight
histograms every N epochs."""
import csv
import importlib.util
import sys

import numpy as np
import pytest

import gradlab as gl
import gradlab.nn as nn
from gradlab.cli.main import main as cli_main
from gradlab.data import DataLoader, TensorDataset

needs_tensorboard = pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None,
    reason="tensorboard is not installed (pip install gradlab[tensorboard])")


def _read(log_dir):
    from tensorboard.backend.event_processing import event_accumulator as ea
    acc = ea.EventAccumulator(str(log_dir), size_guidance={ea.SCALARS: 0, ea.HISTOGRAMS: 0})
    acc.Reload()
    return acc


def _scalars(acc, tag):
    return {e.step: e.value for e in acc.Scalars(tag)}


def _fit(log_dir, epochs=4, histogram_every=2):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 3)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    gl.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
    optimizer = gl.optim.SGD(model.parameters(), lr=0.1)
    scheduler = gl.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)  # lr changes
    board = gl.train.TensorBoard(log_dir, histogram_every=histogram_every)
    history = gl.train.fit(model, nn.CrossEntropyLoss(), optimizer,
                           DataLoader(TensorDataset(X[:48], y[:48]), batch_size=16),
                           DataLoader(TensorDataset(X[48:], y[48:]), batch_size=16),
                           epochs=epochs, scheduler=scheduler, callbacks=[board], verbose=0)
    return model, history


@needs_tensorboard
def test_scalars_equal_the_history_and_histograms_every_n(tmp_path):
    log_dir = tmp_path / "tb"
    model, history = _fit(log_dir)
    acc = _read(log_dir)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "time"):
        # simple_value is a float32: the history's value rounded to float32, exactly.
        assert _scalars(acc, key) == {e: float(np.float32(v))
                                      for e, v in enumerate(history[key], start=1)}, key
    assert _scalars(acc, "lr") == {e: float(np.float32(lr)) for e, lr in
                                   ((1, 0.1), (2, 0.05), (3, 0.025), (4, 0.0125))}
    assert "epoch" not in acc.Tags()["scalars"]
    names = [name for name, _ in model.named_parameters()]
    assert sorted(acc.Tags()["histograms"]) == sorted(f"weights/{n}" for n in names)
    for name, p in model.named_parameters():
        events = acc.Histograms(f"weights/{name}")
        assert [e.step for e in events] == [2, 4]
        last = events[-1].histogram_value  # epoch 4 is the last: the model's final weights
        w = p.detach().numpy().astype(np.float64).ravel()
        assert last.num == w.size and sum(last.bucket) == w.size
        assert last.min == w.min() and last.max == w.max()
        assert last.sum == pytest.approx(w.sum(), abs=1e-9)
        assert last.bucket_limit[-1] == pytest.approx(w.max())


@needs_tensorboard
def test_histogram_every_zero_writes_none(tmp_path):
    _fit(tmp_path / "tb", epochs=2, histogram_every=0)
    acc = _read(tmp_path / "tb")
    assert acc.Tags()["histograms"] == [] and len(acc.Scalars("loss")) == 2


@needs_tensorboard
def test_log_dir_with_other_files_is_refused_and_nothing_is_created_early(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not empty .*notes.txt"):
        gl.train.TensorBoard(tmp_path)
    with pytest.raises(ValueError, match="is not empty"):
        gl.train.TensorBoard(tmp_path, append=True)  # append accepts only event files
    with pytest.raises(ValueError, match="is a file"):
        gl.train.TensorBoard(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="histogram_every"):
        gl.train.TensorBoard(tmp_path / "new", histogram_every=-1)
    gl.train.TensorBoard(tmp_path / "later")
    assert not (tmp_path / "later").exists()  # created when training begins, not before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@needs_tensorboard
def test_append_continues_a_dir_of_event_files_only(tmp_path):
    _fit(tmp_path / "tb", epochs=1)
    with pytest.raises(ValueError, match="append=True"):
        gl.train.TensorBoard(tmp_path / "tb")
    board = gl.train.TensorBoard(tmp_path / "tb", append=True)
    assert board.log_dir == str(tmp_path / "tb")


def test_missing_tensorboard_says_how_to_install(monkeypatch, tmp_path):
    for name in [n for n in sys.modules if n == "tensorboard" or n.startswith("tensorboard.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(ImportError, match=r"pip install gradlab\[tensorboard\]"):
        gl.train.TensorBoard(tmp_path / "tb")


# -- gradlab train --tensorboard -----------------------------------------------------------
def _history_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@needs_tensorboard
def test_cli_tensorboard_under_out_then_resume_continues(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli_main(["train", "--device", "cpu", "--quiet", "--epochs", "2", "--hidden", "16",
                     "--out", str(out), "--tensorboard", "--histogram-every", "1"]) == 0
    acc = _read(out / "tensorboard")
    rows = _history_csv(out / "history.csv")
    for key in ("loss", "val_loss", "accuracy", "val_accuracy", "lr"):
        assert _scalars(acc, key) == {int(r["epoch"]): float(np.float32(float(r[key])))
                                      for r in rows}, key
    assert [e.step for e in acc.Histograms("weights/0.weight")] == [1, 2]
    # A resumed run appends to its own event files instead of being refused.
    assert cli_main(["train", "--resume", str(out), "--epochs", "3", "--quiet",
                     "--tensorboard"]) == 0
    capsys.readouterr()
    assert sorted(_scalars(_read(out / "tensorboard"), "loss")) == [1, 2, 3]


@needs_tensorboard
def test_cli_tensorboard_refuses_a_users_dir_and_a_missing_dir(tmp_path, capsys):
    users = tmp_path / "mine"
    users.mkdir()
    (users / "thesis.tex").write_text("x")
    assert cli_main(["train", "--device", "cpu", "--quiet", "--epochs", "1",
                     "--tensorboard", str(users)]) == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and "thesis.tex" in err and err.count("\n") == 1
    assert sorted(p.name for p in users.iterdir()) == ["thesis.tex"]
    assert cli_main(["train", "--device", "cpu", "--quiet", "--epochs", "1",
                     "--tensorboard"]) == 2
    assert "--tensorboard needs a directory" in capsys.readouterr().err
