"""Tensor's operators and methods are declared on the class (or its TensorMethods mixin), so
help(), IDEs and type checkers see them, and each has its functional op's signature."""
import ast
import importlib
import inspect
import pathlib
import pydoc
import subprocess
import sys

import numpy as np
import pytest

import gradlab as gl
from gradlab.autograd.tensor_methods import TensorMethods, _Op

SRC = pathlib.Path(gl.__file__).parent

# DESIGN.md's public API: the operators and the methods of a tensor.
OPERATORS = ["__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__",
             "__truediv__", "__rtruediv__", "__pow__", "__rpow__", "__matmul__",
             "__rmatmul__", "__neg__", "__eq__", "__ne__", "__lt__", "__le__", "__gt__",
             "__ge__", "__getitem__"]
METHODS = ["add", "sub", "mul", "div", "neg", "pow", "exp", "log", "sqrt", "abs", "sin", "cos",
           "tanh", "sigmoid", "relu", "clamp", "maximum", "minimum", "matmul", "sum", "mean",
           "var", "std", "max", "min", "argmax", "logsumexp", "softmax", "log_softmax",
           "reshape", "view", "flatten", "transpose", "permute", "unsqueeze", "squeeze",
           "expand", "numpy", "item", "tolist", "size", "numel", "to", "cuda", "cpu",
           "requires_grad_", "backward", "detach"]
PROPERTIES = ["shape", "ndim", "dtype", "device", "T", "requires_grad", "grad"]


def _declared_in_source():
    """Names bound in the class bodies of Tensor and TensorMethods, read from the source
    files (what an IDE or a type checker sees, before anything runs)."""
    names = set()
    for path, cls in (("autograd/tensor.py", "Tensor"),
                      ("autograd/tensor_methods.py", "TensorMethods")):
        tree = ast.parse((SRC / path).read_text())
        body = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls).body
        for node in body:
            if isinstance(node, ast.FunctionDef):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    elts = target.elts if isinstance(target, ast.Tuple) else [target]
                    names.update(e.id for e in elts if isinstance(e, ast.Name))
                    names.update(e.value for e in elts if isinstance(e, ast.Constant))
    # __slots__ entries are the attributes the class body declares ("grad")
    return names | {"grad"}


@pytest.mark.parametrize("name", OPERATORS + METHODS + PROPERTIES)
def test_every_design_method_is_declared_in_a_class_body(name):
    assert name in _declared_in_source()
    owner = next(c for c in gl.Tensor.__mro__ if name in vars(c))
    assert owner in (gl.Tensor, TensorMethods)


def test_no_module_attaches_methods_to_tensor_at_import():
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        assert "setattr(Tensor" not in text and "Tensor.__dict__" not in text, path


def test_methods_are_there_before_gradlab_functional_is_imported():
    # Load autograd/tensor.py in a process that cannot import gradlab.functional at all.
    code = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.startswith("gradlab.functional") or name == "gradlab.nn":
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
import types
pkg = types.ModuleType("gradlab"); pkg.__path__ = [{str(SRC)!r}]
sys.modules["gradlab"] = pkg
from gradlab.autograd.tensor import Tensor
missing = [n for n in {OPERATORS + METHODS + PROPERTIES!r}
           if not any(n in vars(c) for c in Tensor.__mro__[:-1])]
assert not missing, missing
assert not any(m.startswith("gradlab.functional") for m in sys.modules)
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_help_shows_operators_and_methods():
    text = pydoc.render_doc(gl.Tensor, renderer=pydoc.plaintext)
    for name in ["__add__", "__matmul__", "__getitem__", "sum(input, dim=None, keepdim=False",
                 "relu(input)", "reshape(input, *shape)", "log_softmax(input, dim=None)",
                 "to(self, *args, dtype=None"]:
        assert name in text, name


def test_help_gives_every_method_that_is_an_op_its_docstring():
    text = pydoc.render_doc(gl.Tensor, renderer=pydoc.plaintext)
    for name in FORWARDED + ["__pow__", "__matmul__", "__neg__", "__eq__", "__getitem__"]:
        doc = getattr(gl.Tensor, name).__doc__
        assert doc, name
        assert doc.strip().splitlines()[0] in text, name


def _functional(name):
    for family in ("elementwise", "activation", "matmul", "reduce", "shape", "sorting"):
        module = importlib.import_module(f"gradlab.functional.{family}")
        if inspect.isfunction(getattr(module, name, None)):
            return getattr(module, name)
    return None


def _is_op(value):
    """Declared as a functional op (a descriptor until first used, then the op itself)."""
    return isinstance(value, _Op) or (inspect.isfunction(value) and
                                      value.__module__.startswith("gradlab.functional."))


# The methods that are a functional op applied to self (the rest, such as to() or new_zeros(),
# are Tensor methods only).
FORWARDED = sorted(n for n, v in vars(TensorMethods).items() if _is_op(v)
                   and not n.startswith("_"))


def test_the_forwarded_methods_are_the_ops():
    assert {"add", "clamp", "clip", "relu", "matmul", "sum", "max", "reshape", "view",
            "unsqueeze", "expand_as", "log_softmax"} <= set(FORWARDED)


@pytest.mark.parametrize("name", FORWARDED)
def test_method_is_its_functional_op(name):
    # the op itself, so the signature is the op's (self as ``input``) and no call forwards
    assert getattr(gl.Tensor, name) is _functional({"clip": "clamp"}.get(name, name))
    assert vars(TensorMethods)[name] is getattr(gl.Tensor, name)  # resolved once, then kept


def test_operators_bind_their_op_and_a_swapped_one_keeps_its_order():
    from gradlab.functional import elementwise as ew
    from gradlab.functional import shape as sh
    assert gl.Tensor.__pow__ is ew.pow and gl.Tensor.__eq__ is ew.eq
    assert gl.Tensor.__getitem__ is sh.getitem and gl.Tensor.__invert__ is ew.bitwise_not
    t = gl.tensor([2.0, 3.0])
    np.testing.assert_array_equal((2 ** t).numpy(), [4.0, 8.0])
    np.testing.assert_array_equal((t ** 2).numpy(), [4.0, 9.0])
    m = gl.tensor([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal((np.eye(2, dtype=np.float32) @ m).numpy(), m.numpy())


def test_arithmetic_operators_are_the_functional_forms_and_agree_with_numpy():
    from gradlab.functional import elementwise as ew
    assert ew._add is gl.Tensor.__add__ and ew._div is gl.Tensor.__truediv__
    a = np.array([1.5, -2.0, 3.0], np.float32)
    t = gl.tensor(a)
    for got, want in [(t + 2, a + 2), (2 - t, 2 - a), (t * t, a * a), (1 / t, 1 / a),
                      (t ** 2, a ** 2), (-t, -a), (abs(t), np.abs(a))]:
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got.numpy(), want)
    assert (gl.tensor([1, 2]) / 2).dtype == np.float32  # the general path's promotion
    assert hash(t) == object.__hash__(t)
