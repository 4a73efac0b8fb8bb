"""Property-based tests: random broadcasting shapes, random op graphs gradchecked, and the
CPU and CUDA backends agreeing on random programs (CUDA part skipped without a GPU)."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradlab as gl

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def broadcastable_pair(draw):
    nd = draw(st.integers(0, 4))
    full = draw(st.lists(st.integers(1, 4), min_size=nd, max_size=nd))
    cut = draw(st.integers(0, nd))
    other = [1 if draw(st.booleans()) else s for s in full[cut:]]
    a_shape = [1 if draw(st.integers(0, 4)) == 0 else s for s in full]
    if draw(st.booleans()):
        return tuple(a_shape), tuple(other)
    return tuple(other), tuple(a_shape)


@SETTINGS
@given(broadcastable_pair(), st.sampled_from(["add", "sub", "mul", "div", "maximum"]),
       st.integers(0, 2**31 - 1))
def test_binary_ops_broadcast_like_numpy_and_reduce_grads(shapes, op, seed):
    rng = np.random.default_rng(seed)
    a_np = rng.uniform(0.5, 2, shapes[0])
    b_np = rng.uniform(0.5, 2, shapes[1])
    a = gl.tensor(a_np, requires_grad=True)
    b = gl.tensor(b_np, requires_grad=True)
    out = getattr(gl, op)(a, b)
    want = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
            "maximum": np.maximum}[op](a_np, b_np)
    np.testing.assert_allclose(out.numpy() if not out.requires_grad else out.detach().numpy(),
                               want)
    out.sum().backward()
    assert a.grad.shape == a.shape and b.grad.shape == b.shape
    assert gl.autograd.gradcheck(getattr(gl, op), [gl.tensor(a_np, requires_grad=True),
                                                   gl.tensor(b_np, requires_grad=True)])


UNARY = {
    "exp": lambda t: (t * 0.3).exp(), "tanh": gl.tanh, "sigmoid": gl.sigmoid,
    "sin": gl.sin, "square": lambda t: t * t, "softplus": lambda t: (t.exp() + 1).log(),
    "sqrt1p": lambda t: (t * t + 1).sqrt(), "neg": gl.neg,
}
REDUCE = {
    "sum": lambda t, d: t.sum(d, keepdim=True), "mean": lambda t, d: t.mean(d, keepdim=True),
    "logsumexp": lambda t, d: t.logsumexp(d, keepdim=True),
    "softmax": lambda t, d: t.softmax(d), "max": lambda t, d: t.max(d, keepdim=True)[0],
}


@st.composite
def programs(draw):
    """A random straight-line program over two (3, 4) inputs."""
    steps = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["unary", "binary", "reduce", "matmul"]))
        if kind == "unary":
            steps.append(("unary", draw(st.sampled_from(sorted(UNARY)))))
        elif kind == "binary":
            steps.append(("binary", draw(st.sampled_from(["add", "mul", "sub"]))))
        elif kind == "reduce":
            steps.append(("reduce", draw(st.sampled_from(sorted(REDUCE))),
                          draw(st.integers(0, 1))))
        else:
            steps.append(("matmul",))
    return steps


def run_program(steps, a, b):
    x = a
    for step in steps:
        if step[0] == "unary":
            x = UNARY[step[1]](x)
        elif step[0] == "binary":
            x = getattr(gl, step[1])(x, b)
        elif step[0] == "reduce":
            x = REDUCE[step[1]](x, step[2])
        elif x.shape[-1] == 4:  # matmul with a (4, 4) matrix built from b
            x = x @ (b.T @ b)
    return x


@SETTINGS
@given(programs(), st.integers(0, 2**31 - 1))
def test_random_programs_pass_gradcheck(steps, seed):
    rng = np.random.default_rng(seed)
    a = gl.tensor(rng.uniform(-1, 1, (3, 4)), requires_grad=True)
    b = gl.tensor(rng.uniform(-1, 1, (3, 4)), requires_grad=True)
    assert gl.autograd.gradcheck(lambda p, q: run_program(steps, p, q), [a, b], atol=1e-5,
                                 rtol=1e-3)


@pytest.mark.cuda
@pytest.mark.skipif(not gl.cuda.is_available(),
                    reason=f"no CUDA device: {gl.cuda.unavailable_reason()}")
@SETTINGS
@given(programs(), st.integers(0, 2**31 - 1))
def test_random_programs_agree_between_cpu_and_cuda(steps, seed):
    rng = np.random.default_rng(seed)
    arrays = [rng.uniform(-1, 1, (3, 4)) for _ in range(2)]
    results = {}
    for device in ("cpu", "cuda"):
        a, b = (gl.tensor(x, device=device, requires_grad=True) for x in arrays)
        out = run_program(steps, a, b)
        out.sum().backward()
        # A program need not use both inputs: an unused one has no gradient on either device.
        results[device] = [None if t is None else t.detach().cpu().numpy()
                           for t in (out, a.grad, b.grad)]
    for cpu, cuda in zip(results["cpu"], results["cuda"]):
        assert (cpu is None) == (cuda is None)
        if cpu is not None:
            np.testing.assert_allclose(cpu, cuda, rtol=1e-9, atol=1e-12)
