"""Hypothesis fuzzers for the CLI: random argument vectors built from the parser's own
options, and random CSV/NPZ contents, never end in a traceback or an internal error; a run
ends (exit 0), fails with a message (exit 2), or stops on a non-finite loss (exit 1, which
says so). In-process (``main(argv)``) with tiny data and epochs, so that CI stays near 60 s;
derandomized, so every CI run tries the same examples."""
import argparse
import os
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradlab.cli.main import build_parser, main

# Example counts sized for ~60 s in all on a 2-core CI machine; GRADLAB_FUZZ_SCALE=4 tries
# four times as many.
_SCALE = float(os.environ.get("GRADLAB_FUZZ_SCALE", "1"))


def fuzz_settings(examples):
    return settings(max_examples=max(1, int(examples * _SCALE)), deadline=None,
                    derandomize=True, database=None, suppress_health_check=list(HealthCheck))

_TEXT = st.sampled_from(["", "abc", "-1", "0", "nan", "inf", "1e400", "0.5", "2", "x,y",
                         "--", "tpu", "cuda:abc", "∞"])
# Values each option takes besides junk: small, so a valid run stays quick.
_VALID = {
    "dataset": st.sampled_from(["moons", "circles", "spirals", "csv:DATA/d.csv",
                                "npz:DATA/d.npz", "csv:DATA/missing.csv", "idx:DATA"]),
    "epochs": st.integers(-1, 2), "batch_size": st.integers(-1, 70),
    "hidden": st.sampled_from(["4", "", "none", "3,3", "0", "4,x"]),
    "seed": st.integers(-2, 5), "lr": st.sampled_from([1e-3, 0.1, -1.0, 1e30]),
    "val_split": st.sampled_from([0.0, 0.1, 0.5, 0.99, 1.0]),
    "test_split": st.sampled_from([0.0, 0.2, 0.9, 0.999]),
    "device": st.sampled_from(["cpu", "auto", "tpu", "cuda:x"]),
    "label": st.sampled_from(["-1", "0", "y", "nosuch", "5"]),
    "delimiter": st.sampled_from([",", ";", "tab", ";;", ""]),
    "checkpoint_every": st.integers(-1, 5), "trials": st.integers(-1, 2),
    "time_budget": st.sampled_from([-5.0, 0.0, 30.0]), "folds": st.integers(0, 3),
    "jobs": st.integers(0, 1), "early_stopping": st.integers(-1, 2),
    "param": st.sampled_from(["lr=0.01|0.1", "batchnorm=true|false", "epochs=0",
                              "hidden=4|2,2", "lr=loguniform:1e-3:1e-1", "colour=red",
                              "batch_size=int:1:3", "lr=uniform:x:1"]),
    "spec": st.sampled_from(['{"space": {"lr": [0.1]}, "trials": 1}', '{"trials": "abc"}',
                             '{"space": {"batchnorm": ["false", "true"]}, "trials": 2}',
                             "DATA/nosuch.json", '{"space": {"lr": "x"}}']),
}
# Options that name a directory to write into: fuzzed text would create it in the cwd.
_SKIP = {"help", "command", "quiet", "full", "out", "resume", "results", "tensorboard"}


def _options(command):
    parser = build_parser().commands[command]
    return [a for a in parser._actions if a.dest not in _SKIP and a.option_strings]


def _value(action):
    if action.choices is not None:
        return st.one_of(st.sampled_from(list(action.choices)), _TEXT)
    valid = _VALID.get(action.dest)
    if valid is None:
        valid = st.sampled_from(["0", "0.1", "1"])
    return st.one_of(valid.map(str), _TEXT)


def _argument(action):
    flag = st.sampled_from([s for s in action.option_strings if s.startswith("--")])
    if action.nargs == 0 or isinstance(action, argparse.BooleanOptionalAction):
        return flag.map(lambda f: [f])
    return st.tuples(flag, _value(action)).map(list)


def _argv(command):
    options = _options(command)
    return st.lists(st.sampled_from(options).flatmap(_argument), max_size=6).map(
        lambda parts: [command] + [x for part in parts for x in part])


def _data_dir():
    d = tempfile.mkdtemp(prefix="gradlab-fuzz-")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = (X[:, 0] > 0).astype(int)
    with open(os.path.join(d, "d.csv"), "w") as f:
        f.write("a,b,c,y\n" + "".join(f"{a:.3f},{b:.3f},{c:.3f},{t}\n"
                                      for (a, b, c), t in zip(X, y)))
    np.savez(os.path.join(d, "d.npz"), X=X, y=y)
    return d


DATA = _data_dir()


def _run(argv, capsys):
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own usage errors (exit 2)
        status = exc.code
    out = capsys.readouterr()
    text = out.err + out.out
    assert "Traceback" not in text and "internal error" not in text, (argv, text)
    assert status in (0, 1, 2), (argv, status, text)
    if status == 1:
        assert "training stopped: loss is" in out.err, (argv, text)
    if status == 2 and argv and argv[0] in ("train", "search") and "usage:" not in out.err:
        assert out.err.strip(), (argv, "exit 2 without a message")
    return status


def _tail(command, tmp):
    """Defaults that keep a run tiny, placed first so the fuzzed options override them."""
    if command == "train":
        return ["train", "--epochs", "1", "--hidden", "4", "--dataset", "moons", "--out",
                os.path.join(tmp, "run")]
    return ["search", "--epochs", "1", "--hidden", "4", "--dataset", "moons", "--trials", "1",
            "--param", "lr=0.01|0.1", "--results", os.path.join(tmp, "res.csv")]


@pytest.mark.parametrize("command", ["train", "search"])
def test_random_argument_vectors_never_give_a_traceback(command, capsys, monkeypatch):
    monkeypatch.setenv("GRADLAB_DEVICE", "cpu")

    @fuzz_settings(250 if command == "train" else 400)
    @given(argv=_argv(command))
    def fuzz(argv):
        with tempfile.TemporaryDirectory() as tmp:
            fuzzed = [a.replace("DATA", DATA) for a in argv[1:]]
            _run(_tail(command, tmp) + ["--quiet"] + fuzzed, capsys)

    fuzz()


_CELLS = st.one_of(st.integers(-3, 3).map(str), st.sampled_from(
    ["", "x", "nan", "inf", "1e39", "0.5", "1e9", " 2 ", "1;2", "\t"]))


@fuzz_settings(400)
@given(rows=st.lists(st.lists(_CELLS, min_size=1, max_size=4), min_size=0, max_size=12),
       header=st.booleans(), delimiter=st.sampled_from([",", ";"]))
def test_random_csv_contents_never_give_a_traceback(rows, header, delimiter):
    import io
    from contextlib import redirect_stderr, redirect_stdout
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "d.csv")
        lines = ([delimiter.join("abcd"[:len(rows[0])])] if header and rows else []) + \
            [delimiter.join(r) for r in rows]
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        err, out = io.StringIO(), io.StringIO()
        with redirect_stderr(err), redirect_stdout(out):
            status = main(["train", "--dataset", f"csv:{path}", "--epochs", "1", "--hidden",
                           "2", "--device", "cpu", "--quiet", "--out",
                           os.path.join(tmp, "run")])
        text = err.getvalue() + out.getvalue()
        assert "Traceback" not in text and "internal error" not in text, (lines, text)
        assert status in (0, 1, 2) and (status == 0 or err.getvalue().strip()), (lines, text)
        if status == 2:
            assert not os.path.exists(os.path.join(tmp, "run"))  # refused before writing


_ARRAYS = st.sampled_from(["normal", "ints", "big", "nan", "empty", "3d", "onehot", "col",
                           "sparse", "bool", "short"])


@fuzz_settings(400)
@given(x_kind=_ARRAYS, y_kind=_ARRAYS, n=st.integers(0, 30), features=st.integers(0, 3))
def test_random_npz_contents_never_give_a_traceback(x_kind, y_kind, n, features):
    import io
    from contextlib import redirect_stderr, redirect_stdout
    rng = np.random.default_rng(n)

    def make(kind, width):
        shape = (n, width)
        return {"normal": lambda: rng.normal(size=shape), "ints": lambda: rng.integers(0, 3,
                                                                                      shape),
                "big": lambda: np.full(shape, 1e39), "nan": lambda: np.full(shape, np.nan),
                "empty": lambda: np.zeros((0, width)), "3d": lambda: np.ones((n, width, 2)),
                "onehot": lambda: np.eye(2)[np.arange(n) % 2],
                "col": lambda: (np.arange(n) % 2).reshape(n, 1),
                "sparse": lambda: (np.arange(n) % 2) * 10**9,
                "bool": lambda: np.arange(n) % 2 == 0,
                "short": lambda: np.arange(max(n - 1, 0)) % 2}[kind]()

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "d.npz")
        np.savez(path, X=make(x_kind, features), y=make(y_kind, 1).reshape(-1)
                 if y_kind in ("ints", "normal") else make(y_kind, 1))
        err, out = io.StringIO(), io.StringIO()
        with redirect_stderr(err), redirect_stdout(out):
            status = main(["train", "--dataset", f"npz:{path}", "--epochs", "1", "--hidden",
                           "2", "--device", "cpu", "--quiet"])
        text = err.getvalue() + out.getvalue()
        assert "Traceback" not in text and "internal error" not in text, (x_kind, y_kind, text)
        assert status in (0, 1, 2), (x_kind, y_kind, status, text)
