"""No two public classes of the package share a name (DESIGN.md / issue 16): a Function and
the nn module over it are told apart (SigmoidFn vs nn.Sigmoid), and a module calls its
function, so each argument check lives in one place."""
import ast
import collections
import pathlib

import numpy as np
import pytest

import gradlab as gl
import gradlab.nn.functional as F
from gradlab import nn

SRC = pathlib.Path(gl.__file__).parent
TOOLS = pathlib.Path(__file__).resolve().parents[1] / "tools"


def _public_classes():
    found = collections.defaultdict(set)
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                found[node.name].add(path.relative_to(SRC).as_posix())
    return found


def test_no_two_public_classes_share_a_name():
    shared = {name: files for name, files in _public_classes().items() if len(files) > 1}
    assert not shared, shared


def _public_names_tool():
    import importlib.util
    spec = importlib.util.spec_from_file_location("public_names", TOOLS / "public_names.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_public_namespace_reaches_two_classes_by_one_name():
    """The same rule at run time, over what users can reach: every public module under
    gl (gl.nn, gl.optim.lr_scheduler, gl.train, ...), re-exports included."""
    tool = _public_names_tool()
    found = tool.public_classes()
    # the walk reaches the namespaces the rule is about (a walk that saw nothing passes)
    assert {"gradlab.nn.Linear", "gradlab.optim.lr_scheduler.LRScheduler",
            "gradlab.train.LRSchedulerCallback", "gradlab.data.DataLoader"} <= {
        path for defs in found.values() for paths in defs.values() for path in paths}
    assert tool.shared_names() == {}


def test_the_tool_reports_a_shared_name(tmp_path, monkeypatch):
    pkg = tmp_path / "fakepkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from . import sub\nclass Step:\n    pass\n")
    (pkg / "sub" / "__init__.py").write_text("class Step:\n    pass\nclass Other:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import fakepkg
    shared = _public_names_tool().shared_names(fakepkg)
    assert set(shared) == {"Step"}
    assert set(shared["Step"]) == {"fakepkg.Step", "fakepkg.sub.Step"}


def test_the_function_classes_behind_nn_modules_are_named_apart():
    import importlib
    fn_classes = {name: importlib.import_module(f"gradlab.functional.{module}")
                  for module, names in [("dropout", ["Dropout"]), ("matmul", ["Linear"]),
                                        ("normalization", ["LayerNorm"]),
                                        ("activation", ["Sigmoid", "Tanh", "Softmax",
                                                        "LogSoftmax", "Identity", "BinaryStep",
                                                        "Softsign", "Softplus"])]
                  for name in names}
    for name, module in fn_classes.items():
        assert issubclass(getattr(module, name + "Fn"), gl.Function), name
        assert not hasattr(module, name), name
        assert issubclass(getattr(nn, name), nn.Module), name


def test_grad_fn_names_drop_the_fn_suffix():
    x = gl.ones(3, requires_grad=True)
    assert "grad_fn=<SigmoidBackward>" in repr(F.sigmoid(x))
    assert "grad_fn=<DropoutBackward>" in repr(F.dropout(x, 0.5))
    assert F.sigmoid(x).grad_fn.name() == "Sigmoid"


def test_nn_dropout_is_f_dropout():
    x = gl.randn(5, 7)
    layer = nn.Dropout(0.3)
    gl.manual_seed(7)
    a = layer(x).numpy()
    gl.manual_seed(7)
    b = F.dropout(x, 0.3).numpy()
    np.testing.assert_array_equal(a, b)
    assert ((a == 0) | np.isclose(a, x.numpy() / 0.7)).all() and (a == 0).any()
    assert layer.eval()(x) is x and F.dropout(x, 0.3, training=False) is x


@pytest.mark.parametrize("p,exc", [(1.5, ValueError), (-0.1, ValueError),
                                   (float("nan"), ValueError), ("0.5", TypeError),
                                   (True, TypeError)])
def test_dropout_probability_has_one_check(p, exc):
    from gradlab.backend import checks
    messages = []
    for fn in (lambda: nn.Dropout(p), lambda: F.dropout(gl.ones(3), p),
               lambda: F.dropout(gl.ones(3), p, training=False),
               lambda: checks.dropout_p(p, "dropout")):
        with pytest.raises(exc) as info:
            fn()
        messages.append(str(info.value).split(": ", 1)[1])
    assert len(set(messages)) == 1, messages
    assert "a probability in [0, 1]" in messages[0]


def test_nn_activation_modules_call_their_functions(monkeypatch):
    from gradlab.functional import activation
    calls = []
    real = activation.gelu
    # the module's forward applies the function it holds, with its settings in order
    monkeypatch.setattr(nn.GELU, "_fn", staticmethod(lambda *a: calls.append(a) or real(*a)))
    x = gl.randn(4)
    np.testing.assert_array_equal(nn.GELU("tanh")(x).numpy(),
                                  F.gelu(x, approximate="tanh").numpy())
    assert len(calls) == 1 and calls[0][1] == "tanh"
    monkeypatch.undo()
    assert nn.GELU._fn is activation.gelu is F.gelu
    for name, fn in [("ELU", "elu"), ("ISRU", "isru"), ("Softplus", "softplus"),
                     ("LeakyReLU", "leaky_relu"), ("Softmax", "softmax")]:
        assert getattr(nn, name)._fn is getattr(activation, fn), name
    with pytest.raises(ValueError, match="^GELU: approximate must be 'none' or 'tanh'"):
        nn.GELU("fast")
    with pytest.raises(ValueError, match="^RReLU: need 0 <= lower <= upper, got lower=0.5"):
        nn.RReLU(0.5, 0.1)
