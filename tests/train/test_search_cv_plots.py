"""cross_validate, grid/random search and the plots."""
import csv
import functools
import sys
import time

import numpy as np
import pytest

import gradlab as gl
from gradlab import nn
from gradlab.cli.model import build_trial
from gradlab.data import TensorDataset, make_moons
from gradlab.train import (
    cross_validate,
    fit,
    grid_search,
    int_range,
    loguniform,
    parse_space,
    plot_decision_boundary,
    plot_history,
    random_search,
    uniform,
)
from gradlab.train.search import grid_configs, random_configs


def _data(n=120):
    X, y = make_moons(n, noise=0.1, seed=0)
    return X, y


def _build(config=None):
    config = config or {}
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2))
    return model, nn.CrossEntropyLoss(), gl.optim.SGD(model.parameters(),
                                                       lr=config.get("lr", 0.1))


def test_cross_validate_folds_and_summary():
    gl.manual_seed(0)
    result = cross_validate(_build, TensorDataset(*_data()), k=3, repeats=2, epochs=2,
                            standardize=True)
    assert len(result.folds) == 6
    assert [(f["fold"], f["repeat"]) for f in result.folds] == \
        [(1, 1), (2, 1), (3, 1), (1, 2), (2, 2), (3, 2)]
    accs = [f["val_accuracy"] for f in result.folds]
    assert result.mean["val_accuracy"] == pytest.approx(np.mean(accs))
    assert result.std["val_accuracy"] == pytest.approx(np.std(accs))
    assert all(f["epochs"] == 2 for f in result.folds)


def test_cross_validate_rejects_a_bad_build():
    with pytest.raises(ValueError, match=r"build\(\) must return"):
        cross_validate(lambda: 42, _data(), k=2, epochs=1)


def test_space_grid_and_sampling():
    space = {"lr": [0.1, 0.01], "width": int_range(2, 6, 2), "fixed": "x"}
    configs = list(grid_configs(space))
    assert len(configs) == 6 and configs[0] == {"lr": 0.1, "width": 2, "fixed": "x"}
    stream = random_configs({"lr": loguniform(1e-4, 1e-1), "p": uniform(0, 0.5)}, seed=3)
    draws = [next(stream) for _ in range(200)]
    lrs = np.array([d["lr"] for d in draws])
    assert lrs.min() >= 1e-4 and lrs.max() <= 1e-1
    # log-uniform: about half the draws fall below the geometric mean 10^-2.5
    assert 0.35 < (lrs < 10 ** -2.5).mean() < 0.65
    again = random_configs({"lr": loguniform(1e-4, 1e-1), "p": uniform(0, 0.5)}, seed=3)
    assert next(again) == draws[0]
    assert loguniform(1e-3, 1e-1, grid_points=3).grid() == pytest.approx([1e-3, 1e-2, 1e-1])
    with pytest.raises(ValueError, match="low > 0"):
        loguniform(0, 1)


def test_parse_space_from_json_like_data():
    space = parse_space({"lr": {"loguniform": [1e-4, 1e-2]}, "hidden": ["64", "32,16"],
                         "epochs": {"int_range": [1, 3]}, "batch_size": 16})
    assert repr(space["lr"]) == "loguniform(0.0001, 0.01)"
    assert space["hidden"].grid() == ["64", "32,16"] and space["epochs"].grid() == [1, 2, 3]
    assert space["batch_size"].grid() == [16]
    with pytest.raises(ValueError, match="is not a distribution"):
        parse_space({"lr": {"gaussian": [0, 1]}})


def test_grid_search_ranks_by_score_writes_csv_and_refits(tmp_path):
    gl.manual_seed(0)
    X, y = _data(160)
    result = grid_search(_build, {"lr": [1e-6, 0.5]}, (X, y), epochs=8, seed=0)
    assert [r["lr"] for r in result.results] == [0.5, 1e-6]
    assert result.results[0]["score"] > result.results[1]["score"]
    assert result.best_config == {"lr": 0.5} and result.best_model is not None
    path = tmp_path / "results.csv"
    result.to_csv(path)
    rows = list(csv.DictReader(path.open()))
    assert [r["rank"] for r in rows] == ["1", "2"] and float(rows[0]["lr"]) == 0.5
    assert "lr" in result.table().splitlines()[0]


def test_search_budgets_trials_and_seconds():
    X, y = _data(60)
    result = random_search(_build, {"lr": loguniform(1e-3, 1)}, (X, y), n_trials=3, epochs=1,
                           refit=False)
    assert len(result.results) == 3 and result.best_model is None
    start = time.monotonic()
    result = random_search(_build, {"lr": loguniform(1e-3, 1)}, (X, y), n_trials=None,
                           time_budget=0.3, epochs=1, refit=False)
    assert time.monotonic() - start < 3.0 and len(result.results) >= 1
    result = grid_search(_build, {"lr": [0.1, 0.2, 0.3, 0.4]}, (X, y), n_trials=2, epochs=1,
                         refit=False)
    assert sorted(r["trial"] for r in result.results) == [1, 2]
    with pytest.raises(ValueError, match="needs a budget"):
        random_search(_build, {"lr": [0.1]}, (X, y), n_trials=None)


def test_kfold_scoring_reports_the_spread():
    X, y = _data(60)
    result = grid_search(_build, {"lr": [0.3]}, (X, y), scoring="kfold", k=3, epochs=2,
                         refit=False)
    assert result.results[0]["score_std"] >= 0 and 0 <= result.best_score <= 1


def _build_scaled_loss(config):
    model, loss_fn, opt = _build()
    return model, (lambda out, y: loss_fn(out, y) * config["scale"]), opt


def test_diverging_trial_ranks_last_instead_of_ending_the_search():
    X, y = _data(60)
    result = grid_search(_build_scaled_loss, {"scale": [float("inf"), 1.0]}, (X, y), epochs=2,
                         refit=False)
    assert result.results[0]["scale"] == 1.0 and np.isnan(result.results[-1]["score"])
    assert "loss is inf at epoch 1, batch 1" in result.results[-1]["error"]


def test_parallel_trials_in_worker_processes():
    X, y = _data(80)
    fixed = {"in_features": 2, "classes": 2, "n_train": 64, "hidden": "8",
             "activation": "tanh", "dropout": 0.0, "batchnorm": False, "optimizer": "sgd",
             "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0, "epochs": 2, "batch_size": 16,
             "schedule": "none"}
    build = functools.partial(build_trial, fixed)
    serial = grid_search(build, {"lr": [0.01, 0.3]}, (X, y), epochs=2, refit=False, seed=1)
    parallel = grid_search(build, {"lr": [0.01, 0.3]}, (X, y), epochs=2, refit=False, seed=1,
                           n_jobs=2)
    # Each trial seeds itself, so the worker processes reproduce the serial scores.
    assert {r["lr"]: r["score"] for r in parallel.results} == \
        {r["lr"]: r["score"] for r in serial.results}


def test_plots_write_png_files(tmp_path):
    X, y = _data(80)
    model, loss_fn, opt = _build()
    history = fit(model, loss_fn, opt, gl.data.DataLoader(TensorDataset(X, y), 16), epochs=2,
                  verbose=0)
    plot_history(history, tmp_path / "curves.png")
    fig = plot_decision_boundary(model, X, y, tmp_path / "boundary.png", resolution=30)
    for name in ("curves.png", "boundary.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(fig.axes) == 1
    with pytest.raises(ValueError, match="2-D inputs"):
        plot_decision_boundary(model, np.zeros((3, 3)), np.zeros(3))


def test_plots_without_matplotlib_say_how_to_install(monkeypatch):
    for name in [m for m in sys.modules if m.startswith("matplotlib")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(ImportError, match=r"pip install 'gradlab\[plot\]'"):
        plot_history(gl.train.History())
