"""The recording tape (autograd/tape.py): what a step computes from the batch must reach the
recording as an op, or the replay would keep the first batch's array."""
from __future__ import annotations

import numpy as np
import pytest

import gradlab as gl
from gradlab.autograd.tape import Recording, recording

# Ops whose result depends on the values of their inputs, most of them without a gradient:
# each is recorded like any other op, so a replay computes it from each batch.
VALUE_OPS = {
    "eq": lambda x, y: x == 0.5, "ne": lambda x, y: gl.ne(x, x.detach()),
    "lt": lambda x, y: x < 0, "ge": lambda x, y: gl.ge(0.0, x),
    "isnan": lambda x, y: gl.isnan(x), "sign": lambda x, y: x.sign(),
    "floor": lambda x, y: x.floor(), "logical_not": lambda x, y: ~(x > 0),
    "argmax": lambda x, y: x.argmax(1), "argmin_all": lambda x, y: gl.argmin(x),
    "max_indices": lambda x, y: x.max(1)[1], "min_indices": lambda x, y: x.min(0, True)[1],
    "all": lambda x, y: (x > 0).all(1), "any": lambda x, y: gl.any(x > 0),
    "integer_cast": lambda x, y: x.long(), "bool_cast": lambda x, y: y.bool(),
    "clone": lambda x, y: y.clone(), "contiguous": lambda x, y: y.reshape(2, 2).T.contiguous(),
    "index_by_tensor": lambda x, y: x[1:, :][y[:3], y[1:]],
    "index_by_mask": lambda x, y: x[x > 0],
    "one_hot": lambda x, y: gl.nn.functional.one_hot(y, 3),
    "and": lambda x, y: (x > 0) & (y[:, None] > 0), "or": lambda x, y: (x[:, 0] < 0) | (y == 1),
    "xor": lambda x, y: y ^ 1, "logical_and": lambda x, y: gl.logical_and(x, y[:, None]),
    "argsort": lambda x, y: x.argsort(1), "sort_indices": lambda x, y: x.sort(0).indices,
    "topk_indices": lambda x, y: x.topk(2).indices, "isclose": lambda x, y: gl.isclose(x, x),
    "gather_by_target": lambda x, y: x.gather(1, y[:, None]),
    "floor_divide": lambda x, y: y // 2, "nonzero": lambda x, y: (x > 0).nonzero(),
    "unique_counts": lambda x, y: y.unique(return_counts=True)[1],
    "masked_select": lambda x, y: x.masked_select(x > 0),
}


def _inputs():
    rng = np.random.default_rng(0)
    x = gl.tensor(rng.standard_normal((4, 3)).astype(np.float32), requires_grad=True)
    y = gl.tensor(rng.integers(0, 3, 4))
    return x, y


@pytest.mark.parametrize("name", sorted(VALUE_OPS))
def test_value_dependent_ops_without_a_gradient_are_recorded(name):
    x, y = _inputs()
    rec = Recording([x, y], [], x._backend.ndarray)
    with recording(rec, "forward"):
        out = VALUE_OPS[name](x, y)
    assert rec.broken is None
    assert rec.slot_of(out) is not None, f"{name}'s result is not an op's output"
    constants = [v for v, kind in zip(rec.values, rec.kinds) if kind == "const"]
    assert not any(isinstance(v, x._backend.ndarray) for v in constants)  # (numbers only)


@pytest.mark.parametrize("name", sorted(VALUE_OPS))
def test_ops_without_a_gradient_stay_out_of_the_graph(name):
    x, y = _inputs()
    out = VALUE_OPS[name](x, y)
    expected_grad = name in ("clone", "contiguous", "index_by_tensor", "index_by_mask",
                             "gather_by_target", "masked_select") and out.dtype.kind == "f"
    assert out.requires_grad is expected_grad
    assert (out.grad_fn is not None) is expected_grad


def test_a_copy_of_a_tensors_values_made_by_a_factory_is_a_read():
    x, y = _inputs()
    rec = Recording([x, y], [], x._backend.ndarray)
    with recording(rec, "forward"):
        gl.tensor(y)
    assert "gl.tensor(t)" in rec.broken


DRAWS = {
    "randn_like": lambda x: gl.randn_like(x), "rand": lambda x: gl.rand(x.shape[0]),
    "randint": lambda x: gl.randint(3, (4,)),
    "with_a_generator": lambda x: gl.randn(2, generator=gl.Generator().manual_seed(1)),
}


@pytest.mark.parametrize("name", sorted(DRAWS))
def test_random_factories_are_recorded_as_draws(name):
    # (a constant would hold the recording's draw, and a replay would add the same noise
    # to every batch)
    x, y = _inputs()
    rec = Recording([x, y], [], x._backend.ndarray)
    with recording(rec, "forward"):
        out = DRAWS[name](x)
    assert rec.broken is None
    assert rec.slot_of(out) is not None, f"{name}'s result is not an op's output"
    assert not out.requires_grad


def test_a_random_leaf_that_requires_grad_stays_a_constant():
    x, y = _inputs()
    rec = Recording([x, y], [], x._backend.ndarray)
    with recording(rec, "forward"):
        out = gl.randn(3, requires_grad=True)
    assert out.requires_grad and out.grad_fn is None and rec.slot_of(out) is None
