"""gl.onnx.export and `gradlab export`: onnxruntime's outputs equal gradlab's (within 1e-5)
for every exportable module and for the default trained digits model, at batch sizes 1 and
37 from one file (the batch axis is dynamic). The max errors are recorded as test properties
(``--junitxml`` shows them) and printed with ``-s``."""
import importlib.util
import json
import re
import sys

import numpy as np
import pytest

import gradlab as gl
import gradlab.nn as nn
import gradlab.nn.activation as activation_module
from gradlab.cli.main import main as cli_main

HAVE_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAVE_ONNX, reason="onnx and onnxruntime are not "
                                "installed (pip install gradlab[onnx])")
TOL = 1e-5
BATCHES = (1, 37)


def _run_onnx(path, x):
    import onnxruntime as ort
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def _max_error(model, path, shape, seed, scale=3.0):
    """Largest |onnxruntime - gradlab| over fresh inputs of each batch size; scale 3 puts
    inputs on both sides of every activation's kinks and thresholds (SQNL's +-2 etc.)."""
    errors = {}
    model.eval()
    for batch in BATCHES:
        x = (np.random.default_rng(seed + batch).standard_normal((batch, *shape)) *
             scale).astype(np.float32)
        with gl.no_grad():
            want = model(gl.tensor(x)).numpy()
        got = _run_onnx(path, x)
        assert got.shape == want.shape
        errors[batch] = float(np.abs(got - want).max())
    return errors


def _batch_norm(features, shape_tail=()):
    bn = nn.BatchNorm1d(features)
    rng = np.random.default_rng(1)  # non-trivial running stats and affine parameters
    bn.running_mean.data[...] = rng.standard_normal(features)
    bn.running_var.data[...] = rng.uniform(0.5, 2.0, features)
    bn.weight.data[...] = rng.standard_normal(features)
    bn.bias.data[...] = rng.standard_normal(features)
    return bn


def _layer_norm(shape):
    ln = nn.LayerNorm(shape)
    rng = np.random.default_rng(2)
    ln.weight.data[...] = rng.standard_normal(shape)
    ln.bias.data[...] = rng.standard_normal(shape)
    return ln


# name -> (factory, per-sample input shape)
CASES = {
    "Linear": (lambda: nn.Linear(6, 5), (6,)),
    "Linear-nobias": (lambda: nn.Linear(6, 5, bias=False), (6,)),
    "Identity": (lambda: nn.Identity(), (6,)),
    "Dropout": (lambda: nn.Dropout(0.5), (6,)),
    "Flatten": (lambda: nn.Flatten(), (2, 3)),
    "Flatten-partial": (lambda: nn.Flatten(1, 2), (2, 3, 2)),
    "BatchNorm1d": (lambda: _batch_norm(6), (6,)),
    "BatchNorm1d-3d": (lambda: _batch_norm(3), (3, 4)),
    "BatchNorm1d-noaffine": (lambda: nn.BatchNorm1d(6, affine=False), (6,)),
    "LayerNorm": (lambda: _layer_norm(6), (6,)),
    "LayerNorm-2d": (lambda: _layer_norm((2, 3)), (2, 3)),
    "LayerNorm-noaffine": (lambda: nn.LayerNorm(6, elementwise_affine=False), (6,)),
    "Sigmoid": (nn.Sigmoid, (6,)),
    "Tanh": (nn.Tanh, (6,)),
    "ReLU": (nn.ReLU, (6,)),
    "ArcTan": (nn.ArcTan, (6,)),
    "BinaryStep": (nn.BinaryStep, (6,)),
    "Softsign": (nn.Softsign, (6,)),
    "SQNL": (nn.SQNL, (6,)),
    "BipolarReLU": (nn.BipolarReLU, (7,)),
    "SiLU": (nn.SiLU, (6,)),
    "SELU": (nn.SELU, (6,)),
    "LeakyReLU": (lambda: nn.LeakyReLU(0.2), (6,)),
    "RReLU": (lambda: nn.RReLU(0.1, 0.3), (6,)),
    "PReLU": (lambda: nn.PReLU(init=0.3), (6,)),
    "PReLU-channels": (lambda: _prelu_channels(), (6,)),
    "ELU": (lambda: nn.ELU(0.7), (6,)),
    "ISRU": (lambda: nn.ISRU(0.5), (6,)),
    "ISRLU": (lambda: nn.ISRLU(0.5), (6,)),
    "Softplus": (nn.Softplus, (6,)),
    "Softplus-beta-threshold": (lambda: nn.Softplus(beta=2.0, threshold=3.0), (6,)),
    "GELU": (nn.GELU, (6,)),
    "GELU-tanh": (lambda: nn.GELU("tanh"), (6,)),
    "Softmax": (lambda: nn.Softmax(dim=1), (6,)),
    "Softmax-dim0": (lambda: nn.Softmax(dim=0), (6,)),
    "LogSoftmax": (lambda: nn.LogSoftmax(dim=-1), (6,)),
    "Sequential": (lambda: nn.Sequential(nn.Linear(6, 8), _batch_norm(8), nn.GELU(),
                                         nn.Dropout(0.2), nn.Linear(8, 4), nn.LogSoftmax(1)),
                   (6,)),
}


def _prelu_channels():
    p = nn.PReLU(6)
    p.weight.data[...] = np.linspace(-0.5, 0.5, 6)
    return p


def _class_name(case):
    return case.split("-")[0]


@needs_onnx
@pytest.mark.parametrize("case", list(CASES))
def test_module_matches_onnxruntime(case, tmp_path, record_property):
    factory, shape = CASES[case]
    gl.manual_seed(0)
    model = factory()
    path = tmp_path / "m.onnx"
    # An example batch of 4: the file must still run at batch sizes 1 and 37.
    gl.onnx.export(model, gl.randn(4, *shape), path)
    errors = _max_error(model, path, shape, seed=len(case))
    record_property("onnx_max_error", errors)
    print(f"onnx max error {case}: batch 1 {errors[1]:.3g}, batch 37 {errors[37]:.3g}")
    assert max(errors.values()) <= TOL, errors


def test_every_gl_nn_activation_and_layer_has_a_case():
    activations = {name for name, obj in vars(activation_module).items()
                   if isinstance(obj, type) and issubclass(obj, nn.Module) and
                   not name.startswith("_") and obj.__module__ == activation_module.__name__}
    wanted = activations | {"Linear", "Identity", "Dropout", "Flatten", "BatchNorm1d",
                            "LayerNorm"}
    assert len(activations) >= 20  # the listing really found the activation classes
    assert wanted <= {_class_name(c) for c in CASES}


class _Net(nn.Module):
    """A plain forward that chains modules, one of them a nested Sequential."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(5, 8)
        self.body = nn.Sequential(nn.LayerNorm(8), nn.SiLU())
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = self.inp(x)
        h = self.body(h)
        return self.head(h)


@needs_onnx
def test_plain_forward_matches(tmp_path, record_property):
    gl.manual_seed(3)
    model = _Net()
    gl.onnx.export(model, gl.randn(2, 5), tmp_path / "net.onnx")
    errors = _max_error(model, tmp_path / "net.onnx", (5,), seed=7)
    record_property("onnx_max_error", errors)
    assert max(errors.values()) <= TOL, errors


class _Forward(nn.Module):
    """A module whose forward is ``fn(self, x)``, with a Linear(6, 6) ``fc`` and a (6,)
    parameter ``w`` to compute with."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.fc = nn.Linear(6, 6)
        self.w = nn.Parameter(gl.linspace(-1.0, 1.0, 6))

    def forward(self, x):
        return self.fn(self, x)


F = gl.nn.functional
# name -> (forward(module, x), per-sample input shape): arithmetic between modules and the
# functional ops, each compared with onnxruntime at batch sizes 1 and 37.
FORWARDS = {
    "residual": (lambda m, x: m.fc(x) + x, (6,)),
    "functional-relu": (lambda m, x: F.relu(m.fc(x)) * 2 - 1, (6,)),
    "reflected-scalars": (lambda m, x: 1 - 2 / (x * x + 1) + 0.5 * x, (6,)),
    "sqrt-pow-div": (lambda m, x: (x.abs() + 1).sqrt() / (x ** 2 + 1) + 2.0 ** x.clamp(-2, 2),
                     (6,)),
    "exp-log": (lambda m, x: gl.log1p(x.abs()) + gl.expm1(-x.abs()) + (x.abs() + 1).log() *
                x.clamp(max=1).exp(), (6,)),
    "sin-cos-neg-sign": (lambda m, x: -x.sin() * x.cos() + x.sign() + x.floor(), (6,)),
    "where-maximum": (lambda m, x: gl.where(x > 0, gl.maximum(x, m.w), gl.minimum(-x, m.w)),
                      (6,)),
    "std": (lambda m, x: x.std(dim=1, keepdim=True) + x.std(dim=1, correction=0)[:, None] +
            x, (6,)),
    "clamp-tensor-bounds": (lambda m, x: x.clamp(min=-m.w.abs(), max=m.w.abs()) +
                            x.clamp(max=m.w) * 2, (6,)),
    "masks": (lambda m, x: ((x >= 0) & (x < 1) | (x == 2)).float() + (x != 0.5).float() +
              (~(x <= -1)).double().float(), (6,)),
    "slices-and-cat": (lambda m, x: gl.cat([x[:, :3], x[:, 3:] * 2, x[:, ::2], x[:, ::-2]],
                                           dim=1), (6,)),
    "index-ints-none-ellipsis": (lambda m, x: x[:, 1] + x[:, 0, ::-1] + x[..., None, 2].sum(1),
                                 (2, 3)),
    "stack-mean": (lambda m, x: gl.stack([x, m.fc(x)], dim=1).mean(1), (6,)),
    "reshape-permute": (lambda m, x: x.reshape(len(x), 2, 3).permute(0, 2, 1)
                        .reshape(x.shape[0], -1), (6,)),
    "view-transpose-flatten": (lambda m, x: x.view(-1, 3, 2).transpose(1, 2).flatten(1),
                               (6,)),
    "reductions": (lambda m, x: gl.cat([x.sum(1, keepdim=True), x.amax(1, keepdim=True),
                                        x.amin(1, keepdim=True), x.logsumexp(1, keepdim=True),
                                        x.var(1, keepdim=True), x.norm(dim=1, keepdim=True),
                                        x.max(dim=1, keepdim=True).values,
                                        x[:, :3].prod(1, keepdim=True)], dim=1), (6,)),
    "over-the-batch": (lambda m, x: x.mean(0) + x.sum(0) * x.amax(0) + x.var(0, correction=0),
                       (6,)),
    "linear-of-computed-weight": (lambda m, x: F.log_softmax(
        F.linear(x, m.fc.weight * 2, m.fc.bias), dim=1), (6,)),
    "matmul-transposed-parameter": (lambda m, x: F.softmax(x @ m.fc.weight.T, dim=-1), (6,)),
    "expand": (lambda m, x: x[:, :1].expand(-1, 6) * x + m.w.expand(1, 6), (6,)),
    "masked-fill-gather-argmax": (lambda m, x: x.masked_fill(x < 0, 0.5) +
                                  x.gather(1, x.argmax(1, keepdim=True)), (6,)),
    "cumsum": (lambda m, x: x.cumsum(1) - x.cumsum(-1) * 0.5, (6,)),
    "remainder-floor-divide": (lambda m, x: x % 0.7 + (-x) % m.w.abs().clamp(min=0.1) +
                               (x * 3) // 2 + 1.5 % (x.abs() + 0.5), (6,)),
    "argmax-output": (lambda m, x: m.fc(x).argmax(1), (6,)),
    "index-arrays": (lambda m, x: x[:, [0, 2, 5]].sum(1, keepdim=True) * x[:, [-1, 1]].mean(1,
                     keepdim=True) + x[:, gl.tensor([[1, 0, 2], [-1, 3, 4]])].flatten(1) +
                     x.reshape(len(x), 2, 3)[:, :, gl.tensor([2, 0, 1])].flatten(1) +
                     x[:, m.w.argsort()], (6,)),
    "round-isfinite": (lambda m, x: (x * 3).round() + gl.isfinite(x * m.w).float(),
                       (6,)),
    "functional-activations": (lambda m, x: F.gelu(x) + F.silu(x) + F.elu(x, 0.5) +
                               F.leaky_relu(x, 0.1) + F.softplus(x, beta=2.0) + F.selu(x) +
                               gl.sigmoid(x) * gl.tanh(x) + F.prelu(x, m.w), (6,)),
    "layer-and-batch-norm-functions": (lambda m, x: F.layer_norm(x, (6,), m.w, None) +
                                       F.batch_norm(x, m.w.abs() + 0.5, m.w.abs() + 1.0), (6,)),
}


@needs_onnx
@pytest.mark.parametrize("case", list(FORWARDS))
def test_functional_forward_matches_onnxruntime(case, tmp_path, record_property):
    fn, shape = FORWARDS[case]
    gl.manual_seed(4)
    model = _Forward(fn)
    path = tmp_path / "f.onnx"
    gl.onnx.export(model, gl.randn(4, *shape), path)
    errors = _max_error(model, path, shape, seed=len(case))
    record_property("onnx_max_error", errors)
    assert max(errors.values()) <= TOL, errors


class _DivMod(nn.Module):
    """Python's // and % on floats at exact multiples (where a / b rounds onto an integer)
    and by zero, and on integers of both signs (not by zero: the model raises there, as
    PyTorch does)."""

    def forward(self, x):
        k = (x * 2).long()
        return (x % 0.1, x // 0.1, x % -0.3, x // (x * 2 - 1).floor(), k // 3, k % -3,
                k // (2 * k - 1), k % (2 * k + 1))


@needs_onnx
@pytest.mark.filterwarnings("ignore:divide by zero encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_floor_divide_and_remainder_are_numpys(tmp_path):
    import onnxruntime as ort
    x = np.concatenate([np.arange(-40, 41), [0.5, 1.5, -0.5, 1e-9, -3e7]]).astype(np.float32)
    x = np.stack([x, x[::-1]], axis=0).T.copy()
    model = _DivMod()
    path = tmp_path / "divmod.onnx"
    gl.onnx.export(model, gl.tensor(x[:3]), path)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]) \
        .run(None, {"input": x})
    with gl.no_grad():
        want = [t.numpy() for t in model(gl.tensor(x))]
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.dtype == b.dtype, i
        np.testing.assert_array_equal(a, b, err_msg=f"output {i}")  # (-0.0 == 0.0 here)


@needs_onnx
def test_an_example_batch_of_one_row_does_not_pass_a_size_1_dim_for_the_batch(tmp_path):
    # x.sum(0, keepdim=True) of a batch of one is (1, 6), like a batch; traced as one row
    # it would be taken for one, and its reshape to (6,) refused as merging the batch axis.
    model = _Forward(lambda m, x: x * x.sum(0, keepdim=True).reshape(-1) + m.fc(x))
    path = tmp_path / "one.onnx"
    gl.onnx.export(model, gl.randn(1, 6), path)
    assert max(_max_error(model, path, (6,), seed=3).values()) <= TOL
    import onnx
    dims = onnx.load(str(path)).graph.output[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[1].dim_value == 6


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x) + x


class _Sorts(nn.Module):
    """sort, argsort and topk both ways, along the features and along the batch axis."""

    def forward(self, x):
        r = (x * 2).round()  # ties: their order is part of the result
        return (r.sort(1).values, r.sort(1, descending=True).indices, r.argsort(0),
                r.argsort(0, descending=True), x.topk(2, dim=1).values,
                r.topk(3, dim=1, largest=False).indices, r.sort(0).values,
                r.sort(1, descending=True, stable=True).indices,
                r.argsort(0, descending=True, stable=True))


@needs_onnx
def test_sort_argsort_topk_keep_gradlabs_order_of_ties(tmp_path):
    import onnxruntime as ort
    model = _Sorts()
    path = tmp_path / "sorts.onnx"
    gl.onnx.export(model, gl.randn(3, 6), path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 9):
        x = np.random.default_rng(batch).standard_normal((batch, 6)).astype(np.float32)
        got = session.run(None, {"input": x})
        with gl.no_grad():
            want = [t.numpy() for t in model(gl.tensor(x))]
        for i, (a, b) in enumerate(zip(got, want)):
            assert a.dtype == b.dtype, i
            np.testing.assert_array_equal(a, b, err_msg=f"output {i} at batch {batch}")


class _Draws(nn.Module):
    def forward(self, x):
        return x + gl.randn_like(x)


class _Decides(nn.Module):
    def forward(self, x):
        return x * 2 if x.sum().item() > 0 else x


class _InPlace(nn.Module):
    def forward(self, x):
        y = x * 1
        y.add_(1)
        return y


class _BatchConstant(nn.Module):
    def forward(self, x):
        return x + gl.zeros(x.shape[0], 4)


class _BatchScalar(nn.Module):
    def forward(self, x):
        return x * gl.tensor(float(x.shape[0]))


class _Constant(nn.Module):
    def forward(self, x):
        return gl.zeros(3, 4)


class _Dict(nn.Module):
    def forward(self, x):
        return {"y": x * 2}


@needs_onnx
@pytest.mark.parametrize("model, words", [
    (lambda: nn.Sequential(_Residual(), _Draws()), "1 (_Draws): the op Draw has no ONNX form"),
    (lambda: _Decides(), "the model (_Decides): the forward reads a tensor's value in Python "
                         "(item())"),
    (lambda: _InPlace(), "changed in place"),
    (lambda: nn.Sequential(nn.Flatten(0)), "merges the batch axis"),
    (lambda: nn.BatchNorm1d(4, track_running_stats=False), "track_running_stats=True"),
    (lambda: _Forward(lambda m, x: x.T), "moves the batch axis"),
    (lambda: _Forward(lambda m, x: x[x > 0]), "indexing with a mask"),
    (lambda: _Forward(lambda m, x: x.reshape(len(x), 2, 3)[:, [1], [0]]),
     "with several index arrays"),
    (lambda: _Forward(lambda m, x: x[[0, 1]]), "indexing the batch axis (dim 0) with an "
                                               "index array"),
    (lambda: _Forward(lambda m, x: F.dropout(x, 0.5)), "pass training=self.training"),
    (lambda: _Forward(lambda m, x: x.var(0)), "var over the batch axis"),
    (lambda: _BatchConstant(), "the exported graph fails at batch size 2"),
    (lambda: _BatchScalar(), "computes other values than the model at batch size 2"),
    (lambda: _Constant(), "not computed from its input"),
    (lambda: _Dict(), "the model returned dict; export supports a model that returns a "
                      "tensor or a tuple of tensors"),
])
def test_unexportable_models_are_refused_by_name(model, words, tmp_path):
    path = tmp_path / "bad.onnx"
    built = model()
    x = gl.randn(3, 6 if isinstance(built, _Forward) else 4)
    with pytest.raises(gl.onnx.ExportError) as info:
        gl.onnx.export(built, x, path)
    assert words in str(info.value)
    assert not path.exists() and list(tmp_path.iterdir()) == []  # nothing half-written


class _TwoInTwoOut(nn.Module):
    """Features and a per-row offset in; class probabilities, the predicted class and the
    features themselves out."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x, offset):
        logits = self.fc(x) + offset[:, :1]
        return F.softmax(logits, dim=1), logits.argmax(1), x


@needs_onnx
def test_several_inputs_and_outputs_match_onnxruntime(tmp_path):
    import onnxruntime as ort
    model = _TwoInTwoOut()
    gl.onnx.export(model, (gl.randn(3, 4), gl.randn(3, 2)), tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"),
                                   providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_0", "input_1"]
    assert [o.name for o in session.get_outputs()] == ["output_0", "output_1", "output_2"]
    rng = np.random.default_rng(3)
    x, offset = (rng.standard_normal((9, n)).astype(np.float32) for n in (4, 2))
    got = session.run(None, {"input_0": x, "input_1": offset})
    with gl.no_grad():
        want = [t.numpy() for t in model(gl.tensor(x), gl.tensor(offset))]
    np.testing.assert_allclose(got[0], want[0], rtol=TOL, atol=TOL)
    assert got[1].tolist() == want[1].tolist() and got[1].dtype == np.int64
    assert got[2].tolist() == x.tolist()
    # PyTorch's names for the lists
    gl.onnx.export(model, (gl.randn(2, 4), gl.randn(2, 2)), tmp_path / "named.onnx",
                   input_names=["features", "offset"], output_names=["p", "cls", "same"])
    session = ort.InferenceSession(str(tmp_path / "named.onnx"),
                                   providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["p", "cls", "same"]


@needs_onnx
@pytest.mark.parametrize("inputs, kwargs, words", [
    (((3, 4), (2, 2)), {}, "different batch sizes (dim 0: 3, 2)"),
    (((3, 4), (3, 2)), {"input_names": ["only_one"]}, "input_names: need 2"),
    (((3, 4), (3, 2)), {"output_names": ["a", "b"]}, "output_names: need 3"),
    (((3, 4), (3, 2)), {"input_names": ["a", "b"], "output_names": ["p", "a", "c"]},
     "names must all differ"),
])
def test_bad_input_and_output_names_are_refused(inputs, kwargs, words, tmp_path):
    with pytest.raises(gl.onnx.ExportError, match=re.escape(words)):
        gl.onnx.export(_TwoInTwoOut(), tuple(gl.randn(*s) for s in inputs),
                       tmp_path / "m.onnx", **kwargs)
    assert list(tmp_path.iterdir()) == []


@needs_onnx
def test_check_false_writes_without_running_the_graph(tmp_path):
    # The batch-size constant goes unnoticed without the check: the file runs at batch 3 only.
    gl.onnx.export(_BatchConstant(), gl.randn(3, 4), tmp_path / "m.onnx", check=False)
    assert (tmp_path / "m.onnx").exists()
    with pytest.raises(Exception):  # noqa: B017 -- onnxruntime's own error type
        _run_onnx(tmp_path / "m.onnx", np.zeros((2, 4), np.float32))


@needs_onnx
def test_export_runs_in_eval_and_restores_each_mode(tmp_path):
    import onnx
    model = nn.Sequential(nn.Linear(4, 4), _batch_norm(4), nn.Dropout(0.5))
    model.train()
    model[2].eval()  # a mixed state must come back as it was, not as model.train()
    stats = model[1].running_mean.numpy().copy()
    proto = gl.onnx.export(model, gl.randn(8, 4), tmp_path / "m.onnx")
    assert [m.training for m in model.modules()] == [True, True, True, False]
    np.testing.assert_array_equal(model[1].running_mean.numpy(), stats)  # no train step ran
    assert int(model[1].num_batches_tracked.numpy()) == 0
    onnx.checker.check_model(onnx.load(str(tmp_path / "m.onnx")), full_check=True)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == 4
    assert "Dropout" not in {n.op_type for n in proto.graph.node}
    assert {n.op_type for n in proto.graph.node} >= {"MatMul", "BatchNormalization"}


def test_gradlab_onnx_imports_without_onnx_and_export_says_how_to_install(monkeypatch,
                                                                          tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    with pytest.raises(ImportError, match=r"pip install gradlab\[onnx\]"):
        gl.onnx.export(nn.Linear(2, 2), gl.randn(1, 2), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


# -- the default digits model, through the CLI -------------------------------------------
@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("digits") / "run"
    code = cli_main(["train", "--device", "cpu", "--quiet", "--epochs", "2", "--out", str(run)])
    assert code == 0
    return run


def _digits_inputs(run, batch):
    """Real digit images, standardized as the run's metrics.json says."""
    import importlib.resources
    with importlib.resources.as_file(importlib.resources.files("gradlab.data") /
                                     "digits.npz") as p:
        images = np.load(p)["images"].reshape(-1, 64)
    scaler = json.loads((run / "metrics.json").read_text())["standardization"]
    rows = images[np.random.default_rng(batch).choice(len(images), batch, replace=False)]
    return ((rows - np.asarray(scaler["mean"])) / np.asarray(scaler["scale"])).astype(
        np.float32)


def _digits_model(run, dtype):
    from gradlab.cli.model import build_mlp
    # The default `gradlab train` model: 64-128-64-10, BatchNorm1d and ReLU.
    model = build_mlp(64, 10, [128, 64], "relu", 0.0, True).to(dtype)
    state = gl.load(str(run / "best_model.gl"))
    model.load_state_dict({k: v.to(dtype) if v.dtype == gl.float32 else v
                           for k, v in state.items()})
    return model.eval()


def _digits_errors(run, path, model, dtype):
    """Per batch size: the largest |onnxruntime - gradlab|, and the same divided by the
    largest |logit| (at least 1)."""
    errors = {}
    for batch in BATCHES:
        x = _digits_inputs(run, batch).astype(dtype)
        with gl.no_grad():
            want = model(gl.tensor(x)).numpy()
        got = _run_onnx(path, x)
        np.testing.assert_array_equal(got.argmax(1), want.argmax(1))
        err = float(np.abs(got - want).max())
        errors[batch] = (err, err / max(1.0, float(np.abs(want).max())))
    return errors


@needs_onnx
def test_digits_model_exported_by_cli_matches(digits_run, tmp_path, capsys, record_property):
    out = tmp_path / "digits.onnx"
    assert cli_main(["export", str(digits_run), "--onnx", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    errors = _digits_errors(digits_run, out, _digits_model(digits_run, gl.float32), np.float32)
    record_property("onnx_max_error", errors)
    print(f"onnx digits float32 (abs, rel): batch 1 {errors[1]}, batch 37 {errors[37]}")
    # The logits reach |50| (pixels that are almost constant in the training split get
    # standardized values near 100), where one float32 ulp is 4e-6, and gradlab's own float32
    # logits are ~1e-5 from the float64 ones: so 1e-5 is held relative to the logits' scale
    # here, and absolute in float64 below.
    assert max(rel for _, rel in errors.values()) <= TOL, errors


@needs_onnx
def test_digits_model_in_float64_matches_absolutely(digits_run, tmp_path, record_property):
    model = _digits_model(digits_run, gl.float64)
    gl.onnx.export(model, gl.zeros(2, 64, dtype=gl.float64), tmp_path / "d64.onnx")
    errors = _digits_errors(digits_run, tmp_path / "d64.onnx", model, np.float64)
    record_property("onnx_max_error", errors)
    print(f"onnx digits float64 (abs, rel): batch 1 {errors[1]}, batch 37 {errors[37]}")
    assert max(err for err, _ in errors.values()) <= TOL, errors


@needs_onnx
def test_cli_export_overwrite_replaces_only_when_asked(digits_run, tmp_path, capsys):
    out = tmp_path / "mine.onnx"
    out.write_bytes(b"the user's own file")
    assert cli_main(["export", str(digits_run), "--onnx", str(out)]) == 2
    assert out.read_bytes() == b"the user's own file"
    assert cli_main(["export", str(digits_run), "--onnx", str(out), "--overwrite"]) == 0
    assert out.read_bytes()[:2] != b"th" and len(out.read_bytes()) > 1000
    capsys.readouterr()


def _bad_inputs(tmp_path, run):
    not_run = tmp_path / "plain"
    not_run.mkdir()
    (not_run / "notes.txt").write_text("x")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "gradlab-run.json").write_text((run / "gradlab-run.json").read_text())
    existing = tmp_path / "taken.onnx"
    existing.write_text("mine")
    return {
        "missing dir": ([str(tmp_path / "nope"), "--onnx", str(tmp_path / "a.onnx")],
                        "no such directory"),
        "not a run dir": ([str(not_run), "--onnx", str(tmp_path / "a.onnx")],
                          "not a gradlab run directory"),
        "no best model": ([str(unfinished), "--onnx", str(tmp_path / "a.onnx")],
                          "has no best_model.gl"),
        "out is a dir": ([str(run), "--onnx", str(tmp_path)], "is a directory"),
        "out exists": ([str(run), "--onnx", str(existing)], "pass --overwrite"),
        "no parent dir": ([str(run), "--onnx", str(tmp_path / "x" / "a.onnx")],
                          "does not exist"),
    }


@pytest.mark.parametrize("case", ["missing dir", "not a run dir", "no best model",
                                  "out is a dir", "out exists", "no parent dir"])
def test_cli_export_bad_inputs_exit_2_with_one_line(case, digits_run, tmp_path, capsys):
    argv, words = _bad_inputs(tmp_path, digits_run)[case]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert cli_main(["export", *argv]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written
