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
import errno
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
    # Batch 1 was clean and trained; batch 2's NaN never reached the weights.
    after = model.state_dict()
    assert all(np.isfinite(after[k].numpy()).all() for k in before)


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
