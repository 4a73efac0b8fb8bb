"""A catalogue of bad inputs (issue #7, item 7): tensors, ops, layers, losses, optimizers,
data loading, files and the command line.

Every case checks three things:

1. the exception type (for the CLI: the exit status 2, and no traceback);
2. that the message is actionable: it NAMES the offending value (a number, a shape, a
   path, an option) and SAYS WHAT TO DO (the valid range, the call to make instead),
   checked by ``assert_actionable`` with one needle for each;
3. for cases that touch files, that nothing the user had is damaged: the directory's
   files keep their bytes and mtimes, and no temporary file is left behind.
"""
import csv
import errno
import gzip
import json
import os

import numpy as np
import pytest

import gradlab as gl
import gradlab.nn.functional as F
from gradlab import nn
from gradlab.cli.main import main as cli_main
from gradlab.cli.model import build_mlp
from gradlab.data.files import DataFormatError
from gradlab.serialization import SerializationError
from gradlab.train import checkpoint as ckpt
from gradlab.train.loop import NonFiniteLossError

NAN, INF = float("nan"), float("inf")


def assert_actionable(excinfo, *needles):
    """Each needle (the offending value, a hint on what to do) is in the message."""
    exc = getattr(excinfo, "value", excinfo)
    message = str(exc)
    missing = [n for n in needles if n not in message]
    assert not missing, f"{type(exc).__name__} message lacks {missing}: {message!r}"


def case(case_id, fn, exc, *needles):
    return pytest.param(fn, exc, needles, id=case_id)


def check(fn, exc, needles):
    with pytest.raises(exc) as excinfo:
        fn()
    assert_actionable(excinfo, *needles)
    return excinfo.value


def snapshot(directory):
    """{relative path: (bytes, mtime_ns)} of every file under ``directory``."""
    out = {}
    for root, _dirs, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = (f.read(), os.stat(path).st_mtime_ns)
    return out


def xy(n=10, features=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, features)).astype(np.float32), (np.arange(n) % 2).astype(np.int64)


def loader(X, y, batch_size=4, **kw):
    return gl.data.DataLoader(gl.data.TensorDataset(X, y), batch_size=batch_size, **kw)


def tiny_fit(model=None, X=None, y=None, **kw):
    X0, y0 = xy()
    X = X0 if X is None else X
    y = y0 if y is None else y
    model = model or nn.Linear(X.shape[1], 2)
    opt = gl.optim.SGD(model.parameters(), lr=0.1)
    train = kw.pop("train_loader", None) or loader(X, y)
    return gl.train.fit(model, nn.CrossEntropyLoss(), opt, train, verbose=0, **kw)


def _backward_twice():
    x = gl.ones(3, requires_grad=True)
    y = (x * x).sum()
    y.backward()
    y.backward()


def _params():
    return nn.Linear(4, 3).parameters()


# -- tensors and ops --------------------------------------------------------------------------
TENSOR_CASES = [
    case("tensor-ragged-lists", lambda: gl.tensor([[1.0, 2.0], [3.0]]), ValueError,
         "expected length 2", "got 1", "index [1]", "pad or trim the rows"),
    case("tensor-string-data", lambda: gl.tensor("abc"), TypeError,
         "str", "give numbers, nested lists of numbers, or an array"),
    case("tensor-int-requires-grad", lambda: gl.tensor([1, 2], requires_grad=True),
         RuntimeError, "int64", "convert it first, e.g. t.to(gl.float32)"),
    case("zeros-negative-size", lambda: gl.zeros(-1), ValueError,
         "(-1,)", "must be non-negative ints"),
    case("matmul-shape-mismatch", lambda: gl.ones(2, 3) @ gl.ones(4, 5), RuntimeError,
         "(2, 3)", "(4, 5)", "the last dim of the first must equal the second-to-last dim"),
    case("reshape-wrong-element-count", lambda: gl.ones(2, 3).reshape(4, 2), RuntimeError,
         "(4, 2)", "must hold 6 elements too"),
    case("backward-twice", _backward_twice, RuntimeError,
         "a second time", "Pass retain_graph=True"),
    case("backward-non-scalar", lambda: (gl.ones(3, requires_grad=True) * 2).backward(),
         RuntimeError, "shape (3,)", "pass gradient="),
]


@pytest.mark.parametrize("fn,exc,needles", TENSOR_CASES)
def test_tensor_and_op_errors(fn, exc, needles):
    check(fn, exc, needles)


# -- layers -----------------------------------------------------------------------------------
def _train_mode_batchnorm(x):
    layer = nn.BatchNorm1d(3)
    layer.train()
    return layer(x)


LAYER_CASES = [
    case("linear-784-fed-10-features", lambda: nn.Linear(784, 10)(gl.ones(4, 10)),
         RuntimeError, "has 10 features", "in_features=784", "last dim is 784",
         "Linear(10, 10)"),
    case("linear-zero-in-features", lambda: nn.Linear(0, 5), ValueError,
         "in_features must be >= 1, got 0", "check how the layer sizes were computed"),
    case("linear-zero-out-features", lambda: nn.Linear(5, 0), ValueError,
         "out_features must be >= 1, got 0", "check how the layer sizes were computed"),
    case("linear-float-size", lambda: nn.Linear(5.5, 3), TypeError,
         "got 5.5", "pass a whole number of features"),
    case("batchnorm-zero-features", lambda: nn.BatchNorm1d(0), ValueError,
         "num_features must be >= 1, got 0", "at least one feature"),
    case("batchnorm-channel-mismatch", lambda: nn.BatchNorm1d(3)(gl.ones(4, 5)), ValueError,
         "5 channels", "built for 3"),
    case("batchnorm-empty-batch", lambda: _train_mode_batchnorm(gl.zeros(0, 3)), ValueError,
         "(0, 3)", "batches of at least 2 samples", "model.eval()"),
    case("batchnorm-single-sample-batch", lambda: _train_mode_batchnorm(gl.ones(1, 3)),
         ValueError, "(1, 3)", "drop_last=True"),
    case("layernorm-shape-mismatch", lambda: nn.LayerNorm(5)(gl.ones(2, 3)), ValueError,
         "(2, 3)", "(5,)", "build the layer with the input's last 1 dim(s)"),
    case("dropout-p-above-one", lambda: nn.Dropout(1.5), ValueError,
         "got 1.5", "a probability in [0, 1]"),
    case("dropout-p-negative-functional", lambda: F.dropout(gl.ones(3), -0.1), ValueError,
         "got -0.1", "a probability in [0, 1]"),
    case("dropout-p-nan", lambda: nn.Dropout(NAN), ValueError,
         "got nan", "a probability in [0, 1]"),
    case("dropout-p-string", lambda: nn.Dropout("0.5"), TypeError,
         "'0.5'", "must be a number (a probability in [0, 1])"),
    case("unknown-activation-name", lambda: build_mlp(4, 2, activation="swish"), ValueError,
         "'swish'", "valid choices: relu"),
]


@pytest.mark.parametrize("fn,exc,needles", LAYER_CASES)
def test_layer_errors(fn, exc, needles):
    check(fn, exc, needles)


# -- losses -----------------------------------------------------------------------------------
def _ce(target, **kw):
    return F.cross_entropy(gl.randn(4, 3), target, **kw)


LOSS_CASES = [
    case("cross-entropy-float-labels",
         lambda: nn.CrossEntropyLoss()(gl.randn(4, 3), gl.tensor([0.0, 1.0, 2.0, 0.0])),
         TypeError, "dtype float32", "convert with target.long()"),
    case("cross-entropy-label-equal-to-num-classes", lambda: _ce(gl.tensor([0, 1, 3, 0])),
         IndexError, "Target 3", "class indices must be in [0, 3)"),
    case("cross-entropy-negative-label", lambda: _ce(gl.tensor([0, -1, 2, 0])), IndexError,
         "Target -1", "class indices must be in [0, 3) or equal ignore_index"),
    case("cross-entropy-target-length", lambda: _ce(gl.tensor([0, 1, 2])), ValueError,
         "target shape (3,)", "expected (4,) (one class index per row)"),
    case("cross-entropy-unknown-reduction",
         lambda: _ce(gl.tensor([0, 1, 2, 0]), reduction="avg"), ValueError,
         "'avg'", "must be one of 'none', 'mean', 'sum'"),
    case("cross-entropy-label-smoothing-above-one",
         lambda: _ce(gl.tensor([0, 1, 2, 0]), label_smoothing=1.5), ValueError,
         "got 1.5", "must be in [0, 1]"),
    case("cross-entropy-weight-per-class", lambda: _ce(gl.tensor([0, 1, 2, 0]),
                                                        weight=gl.ones(4)),
         ValueError, "got (4,)", "must have shape (3,) (one per class)"),
    case("cross-entropy-weight-not-a-tensor",
         lambda: _ce(gl.tensor([0, 1, 2, 0]), weight=[1.0, 2.0, 3.0]), TypeError,
         "weight must be a Tensor of 3 class weights, got list", "gl.tensor(...)"),
    case("nll-loss-weight-per-class",
         lambda: F.nll_loss(gl.randn(4, 3), gl.tensor([0, 1, 2, 0]), weight=gl.ones(2)),
         ValueError, "nll_loss: weight must have shape (3,) (one per class), got (2,)"),
    case("bce-weight-does-not-broadcast",
         lambda: F.binary_cross_entropy_with_logits(gl.randn(4, 3), gl.zeros(4, 3),
                                                    pos_weight=gl.ones(2)),
         ValueError, "pos_weight of shape (2,) does not broadcast to the input's shape (4, 3)"),
    case("nll-loss-label-out-of-range",
         lambda: F.nll_loss(gl.randn(4, 3), gl.tensor([0, 1, 3, 0])), IndexError,
         "target 3", "valid targets are 0..2"),
    case("mse-loss-shape-mismatch", lambda: F.mse_loss(gl.randn(4, 3), gl.randn(4)),
         ValueError, "(4, 3)", "(4,)", "they must be equal"),
    case("bce-input-not-a-probability",
         lambda: F.binary_cross_entropy(gl.tensor([0.5, 1.5]), gl.tensor([0.0, 1.0])),
         ValueError, "found 1.5", "for logits use binary_cross_entropy_with_logits"),
]


@pytest.mark.parametrize("fn,exc,needles", LOSS_CASES)
def test_loss_errors(fn, exc, needles):
    check(fn, exc, needles)


# -- optimizers, schedulers, clipping ---------------------------------------------------------
OPTIMIZERS = [gl.optim.SGD, gl.optim.Adam, gl.optim.AdamW, gl.optim.RMSprop, gl.optim.Adagrad,
              gl.optim.Adadelta, gl.optim.Adamax, gl.optim.NAdam, gl.optim.RAdam]


@pytest.mark.parametrize("lr,shown", [(-0.1, "-0.1"), (NAN, "nan")], ids=["negative", "nan"])
@pytest.mark.parametrize("cls", OPTIMIZERS, ids=lambda c: c.__name__)
def test_bad_learning_rate_for_each_optimizer(cls, lr, shown):
    # lr = 0 stays valid, as in PyTorch (it freezes a parameter group); the CLI's --lr,
    # which is always a real training run, requires > 0 (see the CLI cases).
    check(lambda: cls(_params(), lr=lr), ValueError,
          [f"invalid learning rate: {shown}", "finite number >= 0", "pass e.g. lr=1e-3"])


def _clip(max_norm):
    model = nn.Linear(4, 3)
    model(gl.ones(2, 4)).sum().backward()
    return nn.utils.clip_grad_norm_(model.parameters(), max_norm=max_norm)


def _sgd():
    return gl.optim.SGD(_params(), lr=0.1)


OPTIM_CASES = [
    case("sgd-infinite-lr", lambda: gl.optim.SGD(_params(), lr=INF), ValueError,
         "inf", "finite number >= 0"),
    case("adam-lr-as-string", lambda: gl.optim.Adam(_params(), lr="0.01"), TypeError,
         "'0.01' is a str", "pass a number, e.g. lr=1e-3"),
    case("sgd-negative-momentum", lambda: gl.optim.SGD(_params(), lr=0.1, momentum=-0.5),
         ValueError, "invalid momentum: -0.5", "must be a finite number >= 0"),
    case("sgd-nesterov-without-momentum",
         lambda: gl.optim.SGD(_params(), lr=0.1, nesterov=True), ValueError,
         "momentum=0.0", "pass e.g. momentum=0.9"),
    case("adam-beta1-equal-to-one", lambda: gl.optim.Adam(_params(), betas=(1.0, 0.999)),
         ValueError, "beta1 (betas[0]): 1.0", "must be in [0, 1)"),
    case("adam-beta2-above-one", lambda: gl.optim.Adam(_params(), betas=(0.9, 1.5)),
         ValueError, "beta2 (betas[1]): 1.5", "must be in [0, 1)"),
    case("adamw-beta-negative", lambda: gl.optim.AdamW(_params(), betas=(-0.1, 0.999)),
         ValueError, "beta1 (betas[0]): -0.1", "must be in [0, 1)"),
    case("adam-betas-not-a-pair", lambda: gl.optim.Adam(_params(), betas=0.9), TypeError,
         "invalid betas: 0.9", "pass a pair (beta1, beta2)"),
    case("nadam-three-betas", lambda: gl.optim.NAdam(_params(), betas=(0.9, 0.99, 0.9)),
         ValueError, "has 3 values", "pass a pair (beta1, beta2)"),
    case("adam-negative-eps", lambda: gl.optim.Adam(_params(), eps=-1e-8), ValueError,
         "invalid eps: -1e-08", "must be a finite number >= 0"),
    case("adamw-negative-weight-decay", lambda: gl.optim.AdamW(_params(), weight_decay=-0.01),
         ValueError, "invalid weight_decay: -0.01", "must be a finite number >= 0"),
    case("rmsprop-alpha-above-one", lambda: gl.optim.RMSprop(_params(), alpha=1.5),
         ValueError, "invalid alpha: 1.5", "must be in [0, 1]"),
    case("adadelta-rho-above-one", lambda: gl.optim.Adadelta(_params(), rho=1.5), ValueError,
         "invalid rho: 1.5", "must be in [0, 1]"),
    case("adagrad-nan-lr-decay", lambda: gl.optim.Adagrad(_params(), lr_decay=NAN),
         ValueError, "invalid lr_decay: nan", "must be a finite number >= 0"),
    case("optimizer-given-the-module", lambda: gl.optim.SGD(nn.Linear(4, 3), lr=0.1),
         TypeError, "module Linear", "pass model.parameters()"),
    case("optimizer-with-no-parameters", lambda: gl.optim.Adam([], lr=0.1), ValueError,
         "empty parameter list", "pass model.parameters() of a model that has parameters"),
    case("steplr-zero-step-size", lambda: gl.optim.lr_scheduler.StepLR(_sgd(), step_size=0),
         ValueError, "got 0", "step_size must be a positive int"),
    case("exponentiallr-negative-gamma",
         lambda: gl.optim.lr_scheduler.ExponentialLR(_sgd(), gamma=-0.5), ValueError,
         "got -0.5", "gamma must be a finite number >= 0"),
    case("clip-grad-norm-negative-max-norm", lambda: _clip(-1.0), ValueError,
         "got -1.0", "pass the largest allowed gradient norm"),
]


@pytest.mark.parametrize("fn,exc,needles", OPTIM_CASES)
def test_optimizer_scheduler_and_clipping_errors(fn, exc, needles):
    check(fn, exc, needles)


# -- datasets, loaders, preprocessing, fit -----------------------------------------------------
def _scaler_fit_nan():
    X, _ = xy()
    X[1, 0] = np.nan
    return gl.data.StandardScaler().fit(X)


def _scaler_transform_inf():
    X, _ = xy()
    scaler = gl.data.StandardScaler().fit(X)
    X[2, 1] = np.inf
    return scaler.transform(X)


DATA_CASES = [
    case("random-split-of-plain-xy-tuple",
         lambda: gl.data.random_split(xy(), [0.5, 0.5], seed=0), TypeError,
         "tuple of 2 arrays", "(10, 3)", "wrap them as gl.data.TensorDataset(X, y)"),
    case("dataloader-of-plain-xy-tuple", lambda: gl.data.DataLoader(xy(), batch_size=4),
         TypeError, "tuple of 2 arrays", "wrap them as gl.data.TensorDataset(X, y)"),
    case("random-split-lengths-do-not-sum",
         lambda: gl.data.random_split(gl.data.TensorDataset(*xy()), [3, 3], seed=0),
         ValueError, "[3, 3]", "summing to the dataset size 10"),
    case("tensordataset-length-mismatch",
         lambda: gl.data.TensorDataset(xy()[0], xy()[1][:5]), ValueError,
         "[10, 5]", "every array needs one row per sample"),
    case("dataloader-empty-dataset",
         lambda: gl.data.DataLoader(gl.data.TensorDataset(*(a[:0] for a in xy()))),
         ValueError, "(0 samples)", "needs at least one sample"),
    case("dataloader-zero-batch-size", lambda: loader(*xy(), batch_size=0), ValueError,
         "got 0", "must be a positive integer"),
    case("batch-larger-than-dataset-with-drop-last",
         lambda: loader(*xy(), batch_size=64, drop_last=True), ValueError,
         "batch_size=64", "(10 samples)", "lower batch_size or set drop_last=False"),
    case("standard-scaler-fit-with-nan", _scaler_fit_nan, ValueError,
         "X[1, 0] is nan", "remove or impute NaN/Inf before scaling"),
    case("standard-scaler-transform-with-inf", _scaler_transform_inf, ValueError,
         "X[2, 1] is inf", "remove or impute NaN/Inf"),
    case("standard-scaler-empty", lambda: gl.data.StandardScaler().fit(np.zeros((0, 3))),
         ValueError, "(0, 3)", "expects a non-empty (samples, features) array"),
    case("standard-scaler-feature-count",
         lambda: gl.data.StandardScaler().fit(xy()[0]).transform(np.ones((2, 4))),
         ValueError, "fitted on 3 features", "shape (2, 4)"),
    case("train-test-split-fraction-above-one",
         lambda: gl.data.train_test_split(gl.data.TensorDataset(*xy()), test_size=1.5),
         ValueError, "got 1.5", "must be a fraction in (0, 1)"),
    case("kfold-more-folds-than-samples", lambda: list(gl.data.KFold(20).split(10)),
         ValueError, "20 folds from 10 samples", "use n_splits <= 10"),
    case("fit-with-xy-tuple-as-loader", lambda: tiny_fit(train_loader=xy()), TypeError,
         "tuple of 2 arrays", "gl.data.DataLoader(gl.data.TensorDataset(X, y)"),
    case("fit-with-an-empty-batch",
         lambda: tiny_fit(train_loader=[(gl.zeros(0, 3), gl.zeros(0, dtype=gl.int64))]),
         ValueError, "batch 1 of epoch 1 is empty", "(0, 3)",
         "make the loader yield only non-empty batches"),
    case("fit-float-labels", lambda: tiny_fit(y=xy()[1].astype(np.float32)), TypeError,
         "dtype float32", "convert with target.long()"),
    case("fit-zero-epochs", lambda: tiny_fit(epochs=0), ValueError,
         "got 0", "epochs must be a positive integer"),
    case("fit-compile-not-a-bool", lambda: tiny_fit(compile="no"), TypeError,
         "fit: compile must be True or False, got 'no'"),
    case("search-compile-not-a-bool",
         lambda: gl.train.grid_search(lambda p: nn.Linear(3, 2), {"lr": [0.1]},
                                      gl.data.TensorDataset(*xy()), compile="no"),
         TypeError, "compile must be True or False, got 'no'"),
]


@pytest.mark.parametrize("fn,exc,needles", DATA_CASES)
def test_data_and_fit_errors(fn, exc, needles):
    check(fn, exc, needles)


def test_nan_in_training_data_stops_fit_before_the_weights_change():
    X, y = xy()
    X[5, 2] = np.nan  # in the second batch of 4
    model = nn.Linear(3, 2)
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    err = check(lambda: tiny_fit(model, X, y, epochs=1), NonFiniteLossError,
                ["loss is nan at epoch 1, batch 2", "check the data for NaN/Inf"])
    assert (err.epoch, err.batch) == (1, 2)
    # Batch 1 was clean and trained: one SGD step (lr 0.1) of mean cross-entropy, by hand.
    # Batch 2's NaN never reached the weights.
    w, b = before["weight"].astype(np.float64), before["bias"].astype(np.float64)
    x1, y1 = X[:4].astype(np.float64), y[:4]
    logits = x1 @ w.T + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    d = (p - np.eye(2)[y1]) / len(y1)
    after = {k: v.numpy() for k, v in model.state_dict().items()}
    np.testing.assert_allclose(after["weight"], w - 0.1 * d.T @ x1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(after["bias"], b - 0.1 * d.sum(0), rtol=1e-5, atol=1e-6)
    assert not np.array_equal(after["weight"], before["weight"])


# -- data files -------------------------------------------------------------------------------
def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


CSV_CASES = [  # (file content or None for "does not exist" / "is a directory"), exc, needles
    ("csv-not-utf8", b"a,b\n1,0\n\xe9\xff,1\n", DataFormatError,
     ["not UTF-8 text (byte 8)", "save the file as UTF-8 CSV"]),
    ("csv-nan-cell", b"x,y\n1,0\nnan,1\n", DataFormatError,
     ["line 3, column 1", "value nan is not finite", "remove or impute it"]),
    ("csv-inf-cell", b"x,y\n1,0\n2,1\n-inf,0\n", DataFormatError,
     ["line 4, column 1", "value -inf", "remove or impute it"]),
    ("csv-float-label", b"x,y\n1,0\n2,1.5\n", DataFormatError,
     ["line 3, column 2", "label 1.5", "or use task='regression'"]),
    ("csv-negative-label", b"x,y\n1,0\n2,-1\n", DataFormatError,
     ["label -1", "classification needs labels 0, 1, 2"]),
    ("csv-ragged-row", b"x1,x2,y\n1,2,0\n3,1\n", DataFormatError,
     ["line 3", "expected 3 columns, found 2"]),
    ("csv-header-only", b"x,y\n", DataFormatError,
     ["has a header but no data rows"]),
    ("csv-missing-file", None, FileNotFoundError,
     ["nope.csv: no such file", "check the path"]),
    ("csv-is-a-directory", "dir", IsADirectoryError,
     ["is a directory", "give the path of the file inside it"]),
]


@pytest.mark.parametrize("content,exc,needles", [pytest.param(*c[1:], id=c[0])
                                                 for c in CSV_CASES])
def test_csv_loading_errors_leave_the_file_alone(tmp_path, content, exc, needles):
    if content is None:
        path = str(tmp_path / "nope.csv")
    elif content == "dir":
        path = str(tmp_path / "data")
        os.mkdir(path)
        _write(os.path.join(path, "inside.csv"), b"x,y\n1,0\n")
    else:
        path = _write(tmp_path / "data.csv", content)
    before = snapshot(tmp_path)
    check(lambda: gl.data.load_csv(path), exc, needles + [os.path.basename(path)])
    assert snapshot(tmp_path) == before


def test_npz_with_inf_names_the_row(tmp_path):
    X = np.ones((4, 3))
    X[2, 1] = np.inf
    path = str(tmp_path / "d.npz")
    np.savez(path, X=X, y=np.arange(4) % 2)
    before = snapshot(tmp_path)
    check(lambda: gl.data.load_npz(path), DataFormatError,
          ["d.npz", "X[2] has inf in column 1", "remove or impute them"])
    assert snapshot(tmp_path) == before


def test_npz_path_that_is_a_directory(tmp_path):
    before = snapshot(tmp_path)
    check(lambda: gl.data.load_npz(str(tmp_path)), IsADirectoryError,
          [str(tmp_path), "expected a .npz file"])
    assert snapshot(tmp_path) == before


# -- gl.save / gl.load ------------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path):
    """A good file written by gl.save, and the directory's snapshot."""
    path = tmp_path / "model.gl"
    gl.save(nn.Linear(3, 2).state_dict(), str(path))
    return str(path), snapshot(tmp_path)


def _no_temp_files(directory):
    return [n for n in os.listdir(directory) if n.endswith(".tmp")] == []


def test_load_a_directory(tmp_path, saved):
    _, before = saved
    check(lambda: gl.load(str(tmp_path)), IsADirectoryError,
          [str(tmp_path), "is a directory", "give the path of a file written by gl.save"])
    assert snapshot(tmp_path) == before


def test_load_a_missing_file(tmp_path, saved):
    _, before = saved
    check(lambda: gl.load(str(tmp_path / "modle.gl")), FileNotFoundError,
          ["modle.gl", "does not exist; check the path"])
    assert snapshot(tmp_path) == before


def test_save_onto_a_directory(tmp_path, saved):
    _, before = saved
    check(lambda: gl.save({"w": gl.ones(2)}, str(tmp_path)), IsADirectoryError,
          [str(tmp_path), "give a file path inside it"])
    assert snapshot(tmp_path) == before


def test_save_into_a_missing_directory(tmp_path, saved):
    _, before = saved
    target = str(tmp_path / "runs" / "model.gl")
    check(lambda: gl.save({"w": gl.ones(2)}, target), FileNotFoundError,
          [str(tmp_path / "runs"), "create it first"])
    assert snapshot(tmp_path) == before


def test_save_of_the_model_object_itself(tmp_path, saved):
    path, before = saved
    check(lambda: gl.save(nn.Linear(3, 2), path), SerializationError,
          ["gradlab.nn.layers.Linear", "save model.state_dict(), not the model"])
    assert snapshot(tmp_path) == before


def _disk_full(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class _FillsUpAfter:
    """A binary file object whose writes fail with ENOSPC once ``budget`` bytes are in."""

    def __init__(self, raw, budget):
        self._raw, self._budget = raw, budget

    def write(self, data):
        data = bytes(data)
        n = min(len(data), self._budget)
        self._raw.write(data[:n])
        self._budget -= n
        if n < len(data):
            self._raw.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return n

    def __getattr__(self, name):
        return getattr(self._raw, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._raw.close()


@pytest.mark.parametrize("where", ["fsync", "write"])
def test_save_on_a_full_disk_keeps_the_previous_file(tmp_path, saved, monkeypatch, where):
    path, before = saved
    if where == "fsync":
        monkeypatch.setattr(os, "fsync", _disk_full)
    else:
        real_fdopen = os.fdopen
        monkeypatch.setattr(os, "fdopen",
                            lambda fd, *a, **k: _FillsUpAfter(real_fdopen(fd, *a, **k), 100))
    err = check(lambda: gl.save({"w": gl.randn(64, 64)}, path), OSError,
                [repr(path), "No space left on device", "left as it was",
                 "free some disk space or save to another disk"])
    assert err.errno == errno.ENOSPC
    monkeypatch.undo()
    assert snapshot(tmp_path) == before and _no_temp_files(tmp_path)
    assert gl.load(path)["weight"].shape == (2, 3)  # the old file still loads


def _damage(path, how):
    data = open(path, "rb").read()
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "bit-flip":
        data = bytearray(data)
        data[len(data) - 40] ^= 0x01
    elif how == "empty":
        data = b""
    elif how == "pickle":
        data = b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94."
    elif how == "zip":  # what torch.save writes
        data = b"PK\x03\x04" + bytes(60)
    with open(path, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("how,needles", [
    ("truncated", ["truncated", "load an intact copy"]),
    ("bit-flip", ["checksum mismatch", "load an intact copy"]),
    ("empty", ["truncated (0 bytes)", "save it again"]),
    ("pickle", ["not a gradlab file", "give a file written by gl.save"]),
    ("zip", ["not a gradlab file", "PyTorch/pickle", "give a file written by gl.save"]),
])
def test_load_of_damaged_or_foreign_files(tmp_path, saved, how, needles):
    path, _ = saved
    _damage(path, how)
    before = snapshot(tmp_path)
    check(lambda: gl.load(path), SerializationError, needles + [path])
    assert snapshot(tmp_path) == before


def test_load_state_dict_of_a_differently_sized_model():
    model = nn.Linear(3, 2)
    check(lambda: model.load_state_dict(nn.Linear(4, 2).state_dict()), RuntimeError,
          ["weight: checkpoint has shape (2, 4), the model (2, 3)",
           "build the model with the same layer sizes"])


# -- training checkpoints ---------------------------------------------------------------------
def _ckpt_fit(directory, epochs=2, resume=False, callbacks=()):
    gl.manual_seed(0)
    X, y = xy(24, 3)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    opt = gl.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return gl.train.fit(model, nn.CrossEntropyLoss(), opt,
                        loader(X, y, batch_size=6, shuffle=True, seed=1), epochs=epochs,
                        verbose=0, checkpoint_dir=str(directory), checkpoint_every=2,
                        resume=resume, callbacks=list(callbacks))


class _DiskFillsAtStep(gl.train.Callback):
    """Before the checkpoint of step ``step`` is written: snapshot the directory, then make
    every fsync fail with ENOSPC."""

    def __init__(self, directory, step, monkeypatch):
        self.directory, self.step, self.monkeypatch = directory, step, monkeypatch
        self.before = None

    def on_batch_end(self, batch, loss):
        if self.run.step == self.step:
            self.before = snapshot(self.directory)
            self.monkeypatch.setattr(os, "fsync", _disk_full)


def test_checkpoint_on_a_full_disk_keeps_the_previous_checkpoints(tmp_path, monkeypatch):
    disk = _DiskFillsAtStep(tmp_path, 6, monkeypatch)
    err = check(lambda: _ckpt_fit(tmp_path, callbacks=[disk]), OSError,
                ["checkpoint of step 6 could not be written", "No space left on device",
                 "ckpt-0000000004.gl is intact", "resume=True"])
    assert err.errno == errno.ENOSPC
    monkeypatch.undo()
    assert disk.before and snapshot(tmp_path) == disk.before and _no_temp_files(tmp_path)
    assert [os.path.basename(p) for p in ckpt.list_checkpoints(tmp_path)] == \
        ["ckpt-0000000002.gl", "ckpt-0000000004.gl"]
    _, state = ckpt.latest(tmp_path)  # the kept one is usable
    assert state["step"] == 4


def test_resume_when_every_checkpoint_is_damaged(tmp_path):
    _ckpt_fit(tmp_path, epochs=1)
    for path in ckpt.list_checkpoints(tmp_path):
        _damage(path, "bit-flip")
    before = snapshot(tmp_path)
    with pytest.warns(RuntimeWarning, match="skipping unusable checkpoint"):
        check(lambda: _ckpt_fit(tmp_path, epochs=1, resume=True), ckpt.CheckpointError,
              ["no usable checkpoint", str(tmp_path), "checksum mismatch",
               "restore an intact copy there, or train from scratch without resume"])
    assert snapshot(tmp_path) == before  # damaged files are left for inspection


def test_a_saved_state_dict_is_not_a_checkpoint(tmp_path):
    path = str(tmp_path / "ckpt-0000000001.gl")
    gl.save(nn.Linear(3, 2).state_dict(), path)
    before = snapshot(tmp_path)
    check(lambda: ckpt.read(path), ckpt.CheckpointError,
          [path, "not a training checkpoint", "load this file with gl.load"])
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("cls,example", [(gl.train.ModelCheckpoint, "model.gl"),
                                         (gl.train.CSVLogger, "history.csv")],
                         ids=["model-checkpoint", "csv-logger"])
def test_callback_given_a_directory_fails_before_training(tmp_path, cls, example):
    before = snapshot(tmp_path)
    check(lambda: cls(str(tmp_path)), IsADirectoryError,
          [repr(str(tmp_path)), "give a file path inside it",
           repr(os.path.join(str(tmp_path), example))])
    assert snapshot(tmp_path) == before


# -- the command line -------------------------------------------------------------------------
def run_cli(argv, capsys, monkeypatch):
    """``gradlab ARGV`` in-process: (exit status, stderr)."""
    monkeypatch.setenv("GRADLAB_DEVICE", "cpu")
    try:
        status = cli_main(argv)
    except SystemExit as exc:  # argparse's own errors
        status = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return status, err


CLI_CASES = [  # id, argv (DIR = a fresh tmp_path), needles
    ("negative-epochs", ["train", "--epochs", "-3"], ["--epochs must be >= 1, got -3"]),
    ("zero-batch-size", ["train", "--batch-size", "0"], ["--batch-size must be >= 1, got 0"]),
    ("negative-lr", ["train", "--lr", "-0.1"], ["got -0.1", "--lr must be a finite number > 0"]),
    ("nan-lr", ["train", "--lr", "nan"], ["got nan", "--lr must be a finite number > 0"]),
    ("nan-weight-decay", ["train", "--weight-decay", "nan"],
     ["got nan", "--weight-decay must be a finite number >= 0"]),
    ("dropout-above-one", ["train", "--dropout", "1.5"], ["got 1.5", "must be in [0, 1)"]),
    ("unknown-optimizer", ["train", "--optimizer", "adamm"],
     ["invalid choice: 'adamm'", "choose from", "'adam'"]),
    ("unknown-activation", ["train", "--activation", "swish"],
     ["invalid choice: 'swish'", "choose from", "'relu'"]),
    ("unknown-option", ["train", "--epoks", "3"],
     ["unrecognized arguments: --epoks", "valid options:", "--epochs"]),
    ("non-numeric-epochs", ["train", "--epochs", "ten"],
     ["argument --epochs", "invalid int value: 'ten'"]),
    ("bad-hidden-sizes", ["train", "--hidden", "64,abc"],
     ["'abc' is not an integer", "give layer widths like 128,64"]),
    ("unknown-dataset", ["train", "--dataset", "mnist"],
     ["'mnist'", "valid choices: digits"]),
    ("unknown-device", ["train", "--device", "tpu"], ["'tpu'", "valid choices: auto, cpu"]),
    ("missing-data-file", ["train", "--dataset", "csv:DIR/nope.csv"],
     ["nope.csv: no such file", "check the path"]),
    ("data-path-is-a-directory", ["train", "--dataset", "csv:DIR"],
     ["is a directory", "give the path of the file inside it"]),
    ("non-utf8-csv", ["train", "--dataset", "csv:DIR/latin1.csv"],
     ["latin1.csv: not UTF-8 text", "save the file as UTF-8 CSV"]),
    ("resume-of-a-directory-without-a-run", ["train", "--resume", "DIR"],
     ["no gradlab-run.json there", "resume a directory that a `gradlab train --out DIR`"]),
    ("out-is-an-existing-file", ["train", "--out", "DIR/latin1.csv"],
     ["latin1.csv' is an existing file, not a directory", "give the path of a directory"]),
    ("search-unknown-parameter", ["search", "--param", "colour=red|blue"],
     ["'colour' cannot be searched", "valid names: hidden"]),
]


@pytest.mark.parametrize("argv,needles", [pytest.param(c[1], c[2], id=c[0])
                                          for c in CLI_CASES])
def test_cli_bad_arguments(tmp_path, capsys, monkeypatch, argv, needles):
    _write(tmp_path / "latin1.csv", "x,y\n1,0\ncaf\u00e9,1\n".encode("latin-1"))
    before = snapshot(tmp_path)
    argv = [a.replace("DIR", str(tmp_path)) for a in argv]
    status, err = run_cli(argv, capsys, monkeypatch)
    assert status == 2, err
    assert_actionable(err, *needles)
    assert snapshot(tmp_path) == before



def test_predict_on_zero_rows_returns_the_empty_output():
    # Not an error (so not counted as a case): it used to raise a bare IndexError.
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    model.train()
    out = gl.train.predict(model, gl.zeros(0, 3))
    assert out.shape == (0, 2) and model.training


# -- issue 18: run directories, resume, search and the remaining CLI cases --------------------
RUN = ["train", "--dataset", "moons", "--hidden", "4", "--epochs", "2", "--batch-size", "32",
       "--quiet"]


def _same_files(old, new):
    """The files of snapshot ``old`` hold the same bytes in snapshot ``new`` (the lock file
    stays behind: the new run holds it)."""
    return {k: v[0] for k, v in old.items() if k != ".lock"} == \
        {k: v[0] for k, v in new.items()}


def test_reused_out_is_refused_and_overwrite_moves_the_old_run_aside(tmp_path, capsys,
                                                                    monkeypatch):
    out = tmp_path / "R"
    assert run_cli(RUN + ["--out", str(out)], capsys, monkeypatch)[0] == 0
    first = json.loads((out / "gradlab-run.json").read_text())
    before = snapshot(out)
    status, err = run_cli(RUN + ["--lr", "0.05", "--out", str(out)], capsys, monkeypatch)
    assert status == 2
    assert_actionable(err, f"holds run {first['run_id']}", f"--resume {out}", "--overwrite")
    assert snapshot(out) == before
    status, _ = run_cli(RUN + ["--lr", "0.05", "--out", str(out), "--overwrite"], capsys,
                        monkeypatch)
    assert status == 0
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("R.old-")]
    assert len(aside) == 1 and _same_files(before, snapshot(aside[0]))
    second = json.loads((out / "gradlab-run.json").read_text())
    assert second["run_id"] != first["run_id"] and second["args"]["lr"] == 0.05
    # The old run's checkpoints went aside with it: a later --resume continues run 2 only.
    assert all(not n.startswith("ckpt-") or n not in before or
               (out / n).read_bytes() != before[n][0] for n in os.listdir(out))


def test_a_second_run_on_a_locked_directory_fails_at_once(tmp_path, capsys, monkeypatch):
    from gradlab.cli import rundir
    out = tmp_path / "R"
    assert run_cli(RUN + ["--out", str(out)], capsys, monkeypatch)[0] == 0
    lock = rundir.RunLock(str(out))  # what a run in progress holds
    try:
        before = snapshot(tmp_path)
        status, err = run_cli(["train", "--resume", str(out)], capsys, monkeypatch)
        assert status == 2
        assert_actionable(err, repr(str(out)), f"in use by process {os.getpid()}",
                          "wait for it to finish, or give this run another --out")
        empty = tmp_path / "E"
        empty.mkdir()
        lock2 = rundir.RunLock(str(empty))
        before = snapshot(tmp_path)
        status, err = run_cli(RUN + ["--out", str(empty)], capsys, monkeypatch)
        lock2.release()
        assert status == 2 and "in use by process" in err
        assert snapshot(tmp_path) == before
    finally:
        lock.release()


def test_a_failed_command_leaves_the_run_resumable(tmp_path, capsys, monkeypatch):
    out = tmp_path / "K"
    assert run_cli(RUN + ["--out", str(out)], capsys, monkeypatch)[0] == 0
    before = snapshot(out)
    status, err = run_cli(["train", "--dataset", f"csv:{tmp_path}/nosuch.csv", "--out",
                           str(out)], capsys, monkeypatch)
    assert status == 2 and "holds run" in err
    assert snapshot(out) == before
    fresh = tmp_path / "new"
    status, _ = run_cli(["train", "--dataset", f"csv:{tmp_path}/nosuch.csv", "--out",
                         str(fresh)], capsys, monkeypatch)
    assert status == 2 and not fresh.exists()  # nothing created for a run that never began
    status, _ = run_cli(["train", "--resume", str(out), "--quiet"], capsys, monkeypatch)
    assert status == 0


def test_out_dot_never_overwrites_the_users_files(tmp_path, capsys, monkeypatch):
    work = tmp_path / "project"
    work.mkdir()
    for name in ("metrics.json", "history.csv", "run_args.json"):
        (work / name).write_text(f"my own {name}\n")
    monkeypatch.chdir(work)
    before = snapshot(work)
    status, err = run_cli(RUN + ["--out", "."], capsys, monkeypatch)
    assert status == 2
    assert_actionable(err, "is not empty", "history.csv", "metrics.json", "--overwrite",
                      "written by an older gradlab")
    assert snapshot(work) == before
    status, err = run_cli(RUN + ["--out", ".", "--overwrite"], capsys, monkeypatch)
    assert status == 0, err
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("project.old-")]
    assert len(aside) == 1 and _same_files(before, snapshot(aside[0]))
    assert json.loads((work / "metrics.json").read_text())["epochs_run"] == 2


def test_resume_accepts_epochs_to_extend_and_refuses_other_flags(tmp_path, capsys,
                                                                 monkeypatch):
    out = tmp_path / "R"
    assert run_cli(RUN + ["--out", str(out)], capsys, monkeypatch)[0] == 0
    before = snapshot(out)
    for flag, value in (("--lr", "0.5"), ("--hidden", "8"), ("--seed", "3")):
        status, err = run_cli(["train", "--resume", str(out), flag, value], capsys,
                              monkeypatch)
        assert status == 2
        assert_actionable(err, f"{flag} ", "the run's config is fixed",
                          "start a new run with --out")
        assert snapshot(out) == before
    status, err = run_cli(["train", "--resume", str(out), "--epochs", "1"], capsys,
                          monkeypatch)
    assert status == 2 and "--epochs may only extend a run" in err
    status, err = run_cli(["train", "--resume", str(out), "--epochs", "4", "--quiet"], capsys,
                          monkeypatch)
    assert status == 0 and "extending the run from 2 to 4 epochs" in err
    assert len((out / "history.csv").read_text().splitlines()) == 1 + 4
    # The extended run ends where a 4-epoch run does, bit for bit.
    ref = tmp_path / "ref"
    assert run_cli([a if a != "2" else "4" for a in RUN] + ["--out", str(ref)], capsys,
                   monkeypatch)[0] == 0
    assert (ref / "best_model.gl").read_bytes() == (out / "best_model.gl").read_bytes()
    cosine = tmp_path / "C"
    assert run_cli(RUN + ["--schedule", "cosine", "--out", str(cosine)], capsys,
                   monkeypatch)[0] == 0
    status, err = run_cli(["train", "--resume", str(cosine), "--epochs", "5"], capsys,
                          monkeypatch)
    assert status == 2 and "--schedule cosine was planned over 2 epochs" in err


def _csv(path, rows, classes=2):
    lines = ["a,b,y"] + [f"{i % 7},{(i * 3) % 5},{i % classes}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("edit,needles", [
    ("value", ["the data changed", "same shapes but different values"]),
    ("classes", ["the data changed", "classes 2 -> 3"]),
])
def test_resume_after_the_data_file_changed_is_refused(tmp_path, capsys, monkeypatch, edit,
                                                       needles):
    data, out = tmp_path / "d.csv", tmp_path / "R"
    _csv(data, 60)
    argv = ["train", "--dataset", f"csv:{data}", "--hidden", "4", "--epochs", "1", "--quiet"]
    assert run_cli(argv + ["--out", str(out)], capsys, monkeypatch)[0] == 0
    if edit == "value":
        data.write_text(data.read_text().replace("\n3,4,", "\n3,2,", 1))
    else:
        _csv(data, 60, classes=3)
    before = snapshot(out)
    status, err = run_cli(["train", "--resume", str(out)], capsys, monkeypatch)
    assert status == 2
    assert_actionable(err, *needles, "restore the original data",
                      "start a new run with --out")
    assert snapshot(out) == before


def test_search_spec_booleans_are_read_as_booleans(tmp_path, capsys, monkeypatch):
    results = tmp_path / "res.csv"
    spec = json.dumps({"method": "grid", "space": {"batchnorm": ["false", "true"]}})
    status, err = run_cli(["search", "--dataset", "moons", "--hidden", "4", "--epochs", "1",
                           "--spec", spec, "--results", str(results), "--quiet"], capsys,
                          monkeypatch)
    assert status == 0, err
    assert sorted(r["batchnorm"] for r in csv.DictReader(results.open())) == ["False", "True"]
    status, err = run_cli(["search", "--spec", '{"space": {"batchnorm": ["maybe"]}}'],
                          capsys, monkeypatch)
    assert status == 2 and "'maybe' is not a boolean; use true or false" in err


def test_search_zero_trials_is_refused(tmp_path, capsys, monkeypatch):
    results = tmp_path / "res.csv"
    status, err = run_cli(["search", "--dataset", "moons", "--trials", "0", "--param",
                           "lr=0.1|0.01", "--results", str(results)], capsys, monkeypatch)
    assert status == 2 and "--trials must be >= 1, got 0" in err and not results.exists()


def test_resume_of_a_run_stopped_before_its_first_checkpoint_starts_over(tmp_path, capsys,
                                                                         monkeypatch):
    import gradlab.train as train
    ref, out = tmp_path / "ref", tmp_path / "K"
    assert run_cli(RUN + ["--out", str(ref)], capsys, monkeypatch)[0] == 0

    def killed(*args, **kwargs):  # stopped after the manifest, before any step
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(train, "fit", killed)
        assert run_cli(RUN + ["--out", str(out)], capsys, monkeypatch)[0] == 130
    assert (out / "gradlab-run.json").exists() and not ckpt.list_checkpoints(out)
    status, _ = capsys_status = run_cli(["train", "--resume", str(out)], capsys, monkeypatch)
    assert status == 0, capsys_status
    assert (ref / "best_model.gl").read_bytes() == (out / "best_model.gl").read_bytes()
    assert (ref / "history.csv").read_text().count("\n") == \
        (out / "history.csv").read_text().count("\n")


def test_batchnorm_last_batch_of_one_row_cli_and_search(tmp_path, capsys, monkeypatch):
    # digits: 1293 training rows, so batches of 2 leave one row over.
    status, _ = run_cli(["train", "--batch-size", "2", "--epochs", "1", "--hidden", "8"],
                        capsys, monkeypatch)
    assert status == 0
    out = capsys.readouterr  # (run_cli consumed the output; rerun to see the note)
    status = cli_main(["train", "--batch-size", "2", "--epochs", "1", "--hidden", "8"])
    printed = out().out
    assert status == 0 and "training batches use drop_last=True" in printed
    status, err = run_cli(["train", "--dataset", "moons", "--batch-size", "1"], capsys,
                          monkeypatch)
    assert status == 2
    assert_actionable(err, "--batch-size 1 with BatchNorm", "--no-batchnorm")
    # Search: 384 rows train each holdout trial; batches of 383 leave one row over.
    status, err = run_cli(["search", "--dataset", "moons", "--hidden", "4", "--epochs", "1",
                           "--batch-size", "383", "--param", "lr=0.01|0.1", "--results",
                           str(tmp_path / "r.csv"), "--quiet"], capsys, monkeypatch)
    assert status == 0, err


def test_fit_with_batchnorm_on_a_one_row_batch_names_drop_last():
    X, y = xy(5)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    check(lambda: tiny_fit(model, X, y, epochs=1), ValueError,
          ["batch 2 of epoch 1 holds 1 row", "BatchNorm", "drop_last=True"])


def _idx_dir(tmp_path):
    d = tmp_path / "idx"
    d.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        payload = np.random.default_rng(0).bytes(4000)
        _write(d / name, gzip.compress(b"\x00\x00\x08\x01" + payload)[:2000])
    return d


def _issue18_files(tmp_path):
    (tmp_path / "two.csv").write_text("a,y\n1,0\n2,1\n")
    (tmp_path / "semi.csv").write_text("a;b;y\n" + "1;2;0\n3;4;1\n" * 10)
    (tmp_path / "tab.csv").write_text("a\tb\ty\n" + "1\t2\t0\n3\t4\t1\n" * 10)
    rows = np.arange(40) % 2
    np.savez(tmp_path / "onehot.npz", X=np.ones((40, 3)), y=np.eye(2)[rows])
    np.savez(tmp_path / "nofeat.npz", X=np.ones((40, 0)), y=rows)
    np.savez(tmp_path / "big.npz", X=np.full((40, 3), 1e39), y=rows)
    np.savez(tmp_path / "sparse.npz", X=np.random.default_rng(0).normal(size=(40, 3)),
             y=rows * 10**9)
    _idx_dir(tmp_path)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "run_args.json").write_text('{"epochs": "ten"}\n')


ISSUE18_CLI_CASES = [  # id, argv (DIR = tmp_path), environment, needles
    ("seed-negative", ["train", "--seed", "-1"], {}, ["got -1", "--seed must be an integer"]),
    ("device-bad-index", ["train", "--device", "cuda:abc"], {},
     ["'cuda:abc'", "valid choices: auto, cpu, cuda, cuda:N"]),
    ("env-device-unknown", ["train"], {"GRADLAB_DEVICE": "tpu"},
     ["GRADLAB_DEVICE='tpu'", "valid choices: auto, cpu, cuda, cuda:N"]),
    ("env-threads-zero", ["train"], {"GRADLAB_NUM_THREADS": "0"},
     ["GRADLAB_NUM_THREADS='0'", "unset it"]),
    ("env-threads-text", ["train"], {"GRADLAB_NUM_THREADS": "abc"},
     ["GRADLAB_NUM_THREADS='abc'", "set it to the number of CPU threads"]),
    ("test-split-leaves-no-validation", ["train", "--dataset", "moons", "--test-split",
                                         "0.999"], {},
     ["0 validation", "--test-split 0.999", "pass --val-split 0"]),
    ("csv-of-two-rows", ["train", "--dataset", "csv:DIR/two.csv"], {},
     ["(2 rows)", "0 test rows", "or use more data"]),
    ("npz-one-hot-labels", ["train", "--dataset", "npz:DIR/onehot.npz"], {},
     ["shape (40, 2)", "save y.argmax(axis=1) instead"]),
    ("npz-zero-features", ["train", "--dataset", "npz:DIR/nofeat.npz"], {},
     ["shape (40, 0)", "at least one feature"]),
    ("idx-corrupt-gzip", ["train", "--dataset", "idx:DIR/idx"], {},
     ["train-images-idx3-ubyte.gz", "corrupt or truncated gzip", "download or copy it again"]),
    ("labels-0-and-1e9", ["train", "--dataset", "npz:DIR/sparse.npz"], {},
     ["up to 1000000000", "1000000001 outputs", "remap them"]),
    ("hidden-too-large", ["train", "--dataset", "moons", "--hidden", "4000000000000"], {},
     ["GiB to train", "available", "choose smaller layer widths"]),
    ("manifest-legacy-run-args", ["train", "--resume", "DIR/old"], {},
     ["run_args.json was written by an older gradlab", "start a new run with --out"]),
    ("search-negative-trials", ["search", "--trials", "-3", "--param", "lr=0.1"], {},
     ["--trials must be >= 1, got -3"]),
    ("search-negative-time-budget", ["search", "--time-budget", "-5", "--param", "lr=0.1"],
     {}, ["--time-budget must be a number of seconds > 0, got -5.0"]),
    ("search-zero-folds", ["search", "--folds", "0", "--param", "lr=0.1"], {},
     ["--folds must be >= 2", "got 0"]),
    ("search-one-fold", ["search", "--folds", "1", "--param", "lr=0.1"], {},
     ["--folds must be >= 2", "got 1"]),
    ("search-param-epochs-zero", ["search", "--param", "epochs=0"], {},
     ["epochs=0", "must be >= 1"]),
    ("search-param-batch-size-zero", ["search", "--param", "batch_size=0"], {},
     ["batch_size=0", "must be >= 1"]),
    ("search-spec-trials-text", ["search", "--spec", '{"trials": "abc", "space": {"lr": [1]}}'],
     {}, ["'trials' is 'abc'", "expected a whole number >= 1"]),
    ("search-spec-scoring-cv", ["search", "--spec",
                                '{"scoring": "cv", "space": {"lr": [0.1]}}'], {},
     ["'scoring' is 'cv'", "expected 'holdout' or 'kfold'"]),
    ("search-spec-lr-text", ["search", "--spec", '{"space": {"lr": "x"}}'], {},
     ["lr: 'x' is not a valid float"]),
    ("search-spec-unknown-setting", ["search", "--spec",
                                     '{"space": {"lr": [0.1]}, "strategy": "grid"}'], {},
     ["unknown setting(s) 'strategy'", "valid settings: space, method"]),
    # Messages that now help:
    ("csv-semicolons", ["train", "--dataset", "csv:DIR/semi.csv"], {},
     ["separated by ';'", "--delimiter ';'"]),
    ("csv-tabs", ["train", "--dataset", "csv:DIR/tab.csv"], {},
     ["separated by tab", "--delimiter tab"]),
    ("out-is-a-file", ["train", "--out", "DIR/two.csv"], {},
     ["two.csv' is an existing file, not a directory", "give the path of a directory"]),
    ("search-missing-spec-file", ["search", "--spec", "DIR/nosuch.json"], {},
     ["nosuch.json", "no such file", "check the path"]),
    ("search-results-is-a-directory", ["search", "--param", "lr=0.1", "--results", "DIR"], {},
     ["is a directory", "give a file path"]),
    ("npz-beyond-float32", ["train", "--dataset", "npz:DIR/big.npz"], {},
     ["1e+39", "beyond float32's range", "rescale the features"]),
]


@pytest.mark.parametrize("argv,env,needles", [pytest.param(*c[1:], id=c[0])
                                              for c in ISSUE18_CLI_CASES])
def test_issue18_cli_cases(tmp_path, capsys, monkeypatch, argv, env, needles):
    _issue18_files(tmp_path)
    before = snapshot(tmp_path)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    argv = [a.replace("DIR", str(tmp_path)) for a in argv]
    if "GRADLAB_DEVICE" in env:  # run_cli would set it to cpu
        try:
            status = cli_main(argv)
        except SystemExit as exc:
            status = exc.code
        err = capsys.readouterr().err
        assert "Traceback" not in err
    else:
        status, err = run_cli(argv, capsys, monkeypatch)
    assert status == 2, err
    assert_actionable(err, *needles)
    assert len(err.strip().splitlines()) == 1, err  # one line
    assert "trial 1" not in capsys.readouterr().out  # refused before any trial ran
    assert snapshot(tmp_path) == before


def test_resume_with_a_manifest_of_wrong_types(tmp_path, capsys, monkeypatch):
    out = tmp_path / "R"
    assert run_cli(RUN + ["--out", str(out)], capsys, monkeypatch)[0] == 0
    manifest = json.loads((out / "gradlab-run.json").read_text())
    manifest["args"]["epochs"] = "ten"
    (out / "gradlab-run.json").write_text(json.dumps(manifest))
    before = snapshot(out)
    status, err = run_cli(["train", "--resume", str(out)], capsys, monkeypatch)
    assert status == 2
    assert_actionable(err, "'epochs' is 'ten', expected an integer", "restore it",
                      "start a new run with --out")
    assert snapshot(out) == before


def test_disk_full_while_plotting_is_exit_2_and_keeps_the_checkpoints(tmp_path, capsys,
                                                                    monkeypatch):
    import gradlab.train as train

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    out = tmp_path / "R"
    monkeypatch.setattr(train, "plot_history", full)
    status, err = run_cli(RUN + ["--out", str(out)], capsys, monkeypatch)
    assert status == 2
    assert_actionable(err, "curves.png", "No space left on device", "free some disk space",
                      f"gradlab train --resume {out}")
    assert ckpt.list_checkpoints(out) and not list(out.glob("*.tmp*"))
    monkeypatch.undo()
    status, _ = run_cli(["train", "--resume", str(out), "--quiet"], capsys, monkeypatch)
    assert status == 0 and (out / "curves.png").exists() and (out / "metrics.json").exists()


def _two_optimizers():
    model = nn.Linear(3, 2)
    model(gl.ones(2, 3)).sum().backward()
    adam, sgd = gl.optim.Adam(model.parameters()), gl.optim.SGD(model.parameters(), lr=0.1,
                                                                momentum=0.9)
    adam.step()
    sgd.step()
    return model, adam, sgd


def _scheduler_of_another_optimizer():
    model, adam, sgd = _two_optimizers()
    sched = gl.optim.lr_scheduler.StepLR(adam, step_size=1)
    X, y = xy()
    return gl.train.fit(model, nn.CrossEntropyLoss(), sgd, loader(X, y), scheduler=sched,
                        verbose=0, epochs=1)


def _map_location_tpu(tmp_path):
    gl.save({"w": gl.ones(2)}, str(tmp_path / "m.gl"))
    return gl.load(str(tmp_path / "m.gl"), map_location="tpu")


API_MESSAGE_CASES = [
    case("to-unknown-device", lambda _: gl.ones(2).to("tpu"), ValueError,
         "'tpu' is neither a device", "'cuda:N'", "nor a dtype"),
    case("load-map-location-unknown", _map_location_tpu, ValueError,
         "map_location='tpu' is not a device", "pass 'cpu', 'cuda'"),
    case("nll-loss-1d-input-batch-target",
         lambda _: F.nll_loss(gl.randn(3), gl.tensor([1, 0, 2])), ValueError,
         "input of shape (3,)", "one class index (shape ())", "input of shape (N, C)"),
    case("adam-state-into-sgd",
         lambda _: (lambda m, a, s: s.load_state_dict(a.state_dict()))(*_two_optimizers()),
         ValueError, "was not saved by SGD", "betas", "load what SGD.state_dict() saved"),
    case("sgd-state-into-adam",
         lambda _: (lambda m, a, s: a.load_state_dict(s.state_dict()))(*_two_optimizers()),
         ValueError, "was not saved by Adam", "momentum"),
    case("scheduler-of-another-optimizer", lambda _: _scheduler_of_another_optimizer(),
         ValueError, "built on another optimizer (Adam)", "passed to fit (SGD)",
         "build the scheduler on the optimizer you pass to fit"),
]


@pytest.mark.parametrize("fn,exc,needles", API_MESSAGE_CASES)
def test_issue18_api_messages(tmp_path, fn, exc, needles):
    check(lambda: fn(tmp_path), exc, needles)


def test_cli_turns_an_unexpected_exception_into_exit_1_please_report(capsys, monkeypatch):
    from gradlab.cli import commands

    def bug(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(commands, "cmd_info", bug)
    assert cli_main(["info"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error: ZeroDivisionError" in err
    assert "please report" in err
