"""The real `gradlab` entry point, run in a subprocess (`python -m gradlab`)."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import devices
import gradlab as gl


def gradlab(*args, cwd=None, timeout=120):
    env = {**os.environ, "GRADLAB_DEVICE": "cpu"}
    return subprocess.run([sys.executable, "-m", "gradlab", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout, env=env)


def _no_traceback(proc):
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout


def test_default_train_reaches_97_percent_on_digits():
    # Only accuracy is asserted: the 30-second target is a speed target, measured by
    # benchmarks/run.py (shared CI machines make timed assertions flaky).
    proc = gradlab("train", timeout=300)
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip().splitlines()[-1]
    assert line.startswith("test accuracy: ")
    accuracy = float(line.split()[2])
    assert accuracy >= 0.97, line
    assert line.rstrip(")").endswith("s on cpu"), line  # the time is reported


def test_train_out_dir_writes_metrics_history_checkpoint_and_plots(tmp_path):
    out = tmp_path / "run"
    proc = gradlab("train", "--dataset", "spirals", "--hidden", "32,32", "--epochs", "4",
                   "--batch-size", "64", "--lr", "0.01", "--schedule", "cosine", "--out",
                   str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("\n") == 1  # --quiet: only the result line
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test_accuracy", "test_loss", "epochs_run", "best_epoch", "train_seconds",
                "device", "config"):
        assert key in metrics
    assert metrics["epochs_run"] == 4 and metrics["device"] == "cpu"
    assert metrics["config"]["hidden"] == [32, 32] and metrics["config"]["schedule"] == "cosine"
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]
    best = min(rows, key=lambda r: float(r["val_loss"]))
    assert int(best["epoch"]) == metrics["best_epoch"]
    state = gl.load(str(out / metrics["checkpoint"]))
    assert state["0.weight"].shape == (32, 2)
    for png in ("curves.png", "decision_boundary.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


# -- each `gradlab train` option's effect, on what it built ----------------------------------
# In this process: main() with a spy on fit, so that the model, optimizer, scheduler, loaders
# and History the options produced can be inspected (a subprocess shows only its output).
def _train(monkeypatch, capsys, *args):
    import gradlab.train as train_pkg
    from gradlab.cli.main import main

    seen, real_fit = {}, train_pkg.fit

    def spy(model, loss_fn, optimizer, train_loader, val_loader=None, **kw):
        seen.update(kw, model=model, optimizer=optimizer, train_loader=train_loader,
                    val_loader=val_loader)
        seen["history"] = real_fit(model, loss_fn, optimizer, train_loader, val_loader, **kw)
        return seen["history"]

    monkeypatch.setattr(train_pkg, "fit", spy)
    code = main(["train", "--device", "cpu", "--quiet", *args])
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    return seen


def _csv(tmp_path):
    # The label is the FIRST column: the default (--label -1, the last) would give 5 classes.
    path = tmp_path / "data.csv"
    lines = ["cls,f1,f2"] + [f"{int(i % 7 > 3)},{i % 7},{(i * 3) % 5}" for i in range(80)]
    path.write_text("\n".join(lines) + "\n")
    return f"csv:{path}"


def _weights(model):
    return [p.detach().numpy().copy() for p in model.parameters()]


def test_train_options_build_what_they_name(tmp_path, monkeypatch, capsys):
    run = _train(monkeypatch, capsys, "--dataset", _csv(tmp_path), "--label", "cls",
                 "--hidden", "8,4", "--optimizer", "sgd", "--momentum", "0.9", "--lr", "0.05",
                 "--activation", "tanh", "--dropout", "0.1", "--no-batchnorm",
                 "--weight-decay", "1e-4", "--l1", "1e-4", "--epochs", "30",
                 "--early-stopping", "2", "--schedule", "plateau", "--val-split", "0.2",
                 "--batch-size", "16", "--seed", "3")
    model, opt, history = run["model"], run["optimizer"], run["history"]
    # --dataset/--label: 2 features in, 2 classes out; --hidden 8,4; --activation tanh;
    # --dropout 0.1 after each hidden layer; --no-batchnorm.
    layers = [type(m).__name__ for m in model]
    assert layers == ["Linear", "Tanh", "Dropout", "Linear", "Tanh", "Dropout", "Linear"]
    assert [tuple(p.shape) for p in model.parameters()] == [(8, 2), (8,), (4, 8), (4,),
                                                             (2, 4), (2,)]
    assert [m.p for m in model if type(m).__name__ == "Dropout"] == [0.1, 0.1]
    # --optimizer sgd --momentum 0.9 --weight-decay 1e-4 --lr 0.05 (the first epoch's lr)
    group = opt.param_groups[0]
    assert type(opt).__name__ == "SGD" and group["momentum"] == 0.9
    assert group["weight_decay"] == 1e-4 and history["lr"][0] == 0.05
    assert run["l1"] == 1e-4  # --l1, to fit's L1 term (its effect: tests/train/test_fit.py)
    # --schedule plateau: ReduceLROnPlateau(factor 0.5, patience 3) on the validation loss
    sched = run["scheduler"]
    assert type(sched).__name__ == "ReduceLROnPlateau"
    assert (sched.factor, sched.patience, run["monitor"]) == (0.5, 3, "val_loss")
    # 80 rows, stratified: 16 to the test set (--test-split 0.2), then 13 of the other 64 to
    # validation (--val-split 0.2: 8 of 38 and 5 of 26 per class); --batch-size 16
    assert len(run["train_loader"].dataset) == 51 and len(run["val_loader"].dataset) == 13
    assert run["train_loader"].batch_size == 16 and len(run["train_loader"]) == 4
    assert run["train_loader"].seed == 3  # --seed shuffles (and splits, and initializes)
    # --early-stopping 2: the run ends 2 epochs after its best validation loss
    val = history["val_loss"]
    best = int(np.argmin(val)) + 1
    assert len(history) == best + 2 < 30, val
    assert history.stop_reason.startswith(f"early stopping at epoch {best + 2}")


@pytest.mark.parametrize("optimizer, lr", [("adam", 1e-3), ("sgd", 1e-3), ("rmsprop", 1e-2),
                                           ("adagrad", 1e-2), ("adadelta", 1.0),
                                           ("adamax", 2e-3), ("nadam", 2e-3),
                                           ("radam", 1e-3)])
def test_without_lr_each_optimizer_gets_its_own_default(tmp_path, monkeypatch, capsys,
                                                        optimizer, lr):
    # PyTorch's defaults: Adadelta's lr is 1.0 (1e-3 barely trains it), RMSprop's and
    # Adagrad's 1e-2; the value is the run's config, so a resume keeps it.
    run = _train(monkeypatch, capsys, "--dataset", _csv(tmp_path), "--label", "cls",
                 "--hidden", "4", "--epochs", "1", "--optimizer", optimizer,
                 "--out", str(tmp_path / "run"))
    assert run["optimizer"].param_groups[0]["lr"] == lr
    config = json.loads((tmp_path / "run" / "metrics.json").read_text())["config"]
    assert config["lr"] == lr and config["optimizer"] == optimizer


def test_a_searched_optimizer_without_lr_gets_each_its_own_default():
    from gradlab.cli.model import build_trial
    fixed = {"in_features": 2, "classes": 2, "hidden": [4], "activation": "relu",
             "dropout": 0.0, "batchnorm": False, "lr": None, "momentum": 0.0,
             "weight_decay": 0.0, "n_train": 10, "batch_size": 5, "epochs": 1,
             "schedule": "none"}
    for name, lr in (("adadelta", 1.0), ("adam", 1e-3)):
        _, _, opt, _ = build_trial(fixed, {"optimizer": name})
        assert opt.param_groups[0]["lr"] == lr
    _, _, opt, _ = build_trial({**fixed, "lr": 0.3}, {"optimizer": "adadelta"})
    assert opt.param_groups[0]["lr"] == 0.3


def test_train_option_schedule_and_val_split(monkeypatch, capsys):
    run = _train(monkeypatch, capsys, "--dataset", "moons", "--hidden", "8", "--epochs", "6",
                 "--optimizer", "sgd", "--lr", "0.5", "--schedule", "step", "--val-split",
                 "0")
    # StepLR(step_size=epochs // 3, gamma=0.1), the lr recorded at each epoch's start
    np.testing.assert_allclose(run["history"]["lr"], [0.5, 0.5, 0.05, 0.05, 0.005, 0.005],
                               rtol=1e-12)
    assert run["val_loader"] is None and run["monitor"] == "loss"  # --val-split 0
    assert "val_loss" not in run["history"].keys()
    # BatchNorm is on by default, with drop_last for its 1-row batches
    assert [type(m).__name__ for m in run["model"]][:2] == ["Linear", "BatchNorm1d"]
    assert run["train_loader"].drop_last is True


def test_train_option_seed_decides_the_result(monkeypatch, capsys):
    args = ("--dataset", "moons", "--hidden", "8", "--epochs", "2", "--no-batchnorm")
    a = _weights(_train(monkeypatch, capsys, *args, "--seed", "5")["model"])
    b = _weights(_train(monkeypatch, capsys, *args, "--seed", "5")["model"])
    c = _weights(_train(monkeypatch, capsys, *args, "--seed", "6")["model"])
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not any(np.array_equal(x, y) for x, y in zip(a, c))


def test_unknown_dataset_lists_choices():
    proc = gradlab("train", "--dataset", "mnist")
    assert proc.returncode == 2
    assert "unknown dataset 'mnist'; valid choices: digits, spirals, moons, circles, " \
           "csv:PATH, npz:PATH, idx:DIR" in proc.stderr
    _no_traceback(proc)


def test_unknown_option_and_choice_list_the_valid_ones():
    proc = gradlab("train", "--bogus", "1")
    assert proc.returncode == 2 and "unrecognized arguments: --bogus 1" in proc.stderr
    assert "valid options:" in proc.stderr and "--early-stopping" in proc.stderr
    proc = gradlab("train", "--optimizer", "lbfgs")
    assert proc.returncode == 2 and "invalid choice: 'lbfgs'" in proc.stderr
    assert "adam" in proc.stderr and "rmsprop" in proc.stderr


# The child gets no CuPy stand-in (gradlab() passes no emulation), so without a real GPU it
# sees no CUDA even where this process runs on the emulated device.
@pytest.mark.skipif(devices.REAL_GPU, reason="a GPU is present")
def test_device_cuda_without_gpu_is_a_clear_error_exit_2():
    proc = gradlab("train", "--device", "cuda")
    assert proc.returncode == 2
    assert "CUDA is unavailable" in proc.stderr and "device='cpu'" in proc.stderr
    _no_traceback(proc)


def test_unwritable_out_fails_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    proc = gradlab("train", "--out", str(blocker / "sub"))
    assert proc.returncode == 2 and "cannot be written" in proc.stderr
    assert "gradlab train: digits" not in proc.stdout  # nothing started
    assert blocker.read_text() == "keep me"
    _no_traceback(proc)


def test_bad_csv_names_line_and_column(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("a,b,y\n1,2,0\n1,x,1\n")
    proc = gradlab("train", "--dataset", f"csv:{path}")
    assert proc.returncode == 2 and "line 3, column 2 ('b'): 'x' is not a number" in proc.stderr
    _no_traceback(proc)


def test_bad_values_are_errors():
    proc = gradlab("train", "--hidden", "64,abc")
    assert proc.returncode == 2 and "'abc' is not an integer" in proc.stderr
    proc = gradlab("train", "--val-split", "1.5")
    assert proc.returncode == 2 and "--val-split must be in [0, 1)" in proc.stderr


def test_nan_loss_stops_with_epoch_and_batch_exit_1(tmp_path):
    proc = gradlab("train", "--optimizer", "sgd", "--lr", "1e30", "--no-batchnorm",
                   "--epochs", "3", "--out", str(tmp_path))
    assert proc.returncode == 1
    assert "training stopped: loss is nan at epoch 1, batch" in proc.stderr
    _no_traceback(proc)


def test_search_from_flags_writes_sorted_results(tmp_path):
    results = tmp_path / "res.csv"
    proc = gradlab("search", "--dataset", "moons", "--method", "grid", "--param",
                   "lr=0.001|0.05", "--param", "hidden=8|16,16", "--epochs", "3",
                   "--no-batchnorm", "--results", str(results), "--quiet")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(results.open()))
    assert len(rows) == 4 and [r["rank"] for r in rows] == ["1", "2", "3", "4"]
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert {r["hidden"] for r in rows} == {"8", "16,16"}
    assert "best val_accuracy" in proc.stdout and "test accuracy" in proc.stdout


def test_search_from_json_spec(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"method": "random", "trials": 2, "scoring": "kfold",
                                "folds": 2, "space": {"lr": {"loguniform": [1e-3, 1e-1]},
                                                      "dropout": [0.0, 0.2]}}))
    results = tmp_path / "res.csv"
    proc = gradlab("search", "--dataset", "circles", "--spec", str(spec), "--epochs", "2",
                   "--results", str(results), "--quiet")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(results.open()))
    assert len(rows) == 2 and all(1e-3 <= float(r["lr"]) <= 1e-1 for r in rows)


def test_search_bad_param_lists_names():
    proc = gradlab("search", "--param", "colour=red")
    assert proc.returncode == 2 and "valid names: hidden, activation" in proc.stderr


def test_info_reports_versions_device_and_kernels():
    proc = gradlab("info")
    assert proc.returncode == 0, proc.stderr
    assert f"gradlab {gl.__version__}" in proc.stdout and "numpy" in proc.stdout
    assert "selected device (auto): cpu" in proc.stdout  # GRADLAB_DEVICE=cpu in gradlab()
    assert "CUDA: " in proc.stdout and "kernels" in proc.stdout
    assert "CPU kernels: numba (one-pass compiled" in proc.stdout  # numba is a dependency


def test_info_says_when_the_cpu_runs_the_numpy_fallback():
    env = {**os.environ, "GRADLAB_DEVICE": "cpu", "GRADLAB_NO_JIT": "1"}
    proc = subprocess.run([sys.executable, "-m", "gradlab", "info"], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "CPU kernels: NumPy fallback (GRADLAB_NO_JIT is set; unset it" in proc.stdout
    code = ("import sys; sys.modules['numba'] = None\n"  # as where numba is not installed
            "from gradlab.cli.main import main; sys.exit(main(['info']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "GRADLAB_DEVICE": "cpu"})
    assert proc.returncode == 0, proc.stderr
    assert "numba      not installed" in proc.stdout
    assert "CPU kernels: NumPy fallback, slower (numba does not import: " in proc.stdout


def test_no_command_prints_help():
    proc = gradlab()
    assert proc.returncode == 2 and "train" in proc.stdout and "search" in proc.stdout


def test_bench_without_the_suite_says_where_it_lives(monkeypatch, capsys):
    from gradlab.cli import info_command
    monkeypatch.setattr(info_command, "_find_benchmarks", lambda: None)
    assert info_command.cmd_bench(type("Args", (), {"full": False})()) == 2
    assert "benchmarks/run.py not found" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "abc"])
def test_bad_thread_count_in_a_fresh_process_is_a_message(value, tmp_path):
    """The variable is read on first use, not when gradlab is imported: the CLI sees it
    first and answers with exit 2 (it used to be a traceback from ``import gradlab``)."""
    env = {**os.environ, "GRADLAB_DEVICE": "cpu", "GRADLAB_NUM_THREADS": value}
    proc = subprocess.run([sys.executable, "-m", "gradlab", "train", "--epochs", "1"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr
    assert f"GRADLAB_NUM_THREADS={value!r}" in proc.stderr
    _no_traceback(proc)
    assert list(tmp_path.iterdir()) == []
