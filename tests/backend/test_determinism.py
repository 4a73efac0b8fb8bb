"""Deterministic mode and the atomic-free scatter it uses on a GPU.

``ordered_scatter_add`` is backend-generic (it takes the array module), so its logic is
held to NumPy's sequential ``np.add.at`` bitwise here on the CPU; the CUDA tests check the
same on a GPU and skip without one.
"""
import numpy as np
import pytest

import gradlab as gl
from gradlab.backend import determinism
from gradlab.backend.determinism import ordered_scatter_add

_no_cuda = pytest.mark.skipif(not gl.cuda.is_available(),
                              reason=f"no CUDA device: {gl.cuda.unavailable_reason()}")


def needs_gpu(fn):
    """Runs on a GPU or the emulated CUDA device (marker ``cuda``)."""
    return pytest.mark.cuda(_no_cuda(fn))


@pytest.fixture
def deterministic():
    gl.use_deterministic_algorithms(True)
    yield
    gl.use_deterministic_algorithms(False)


def _both(target, index, values):
    expected = target.copy()
    np.add.at(expected, index, values)
    got = target.copy()
    ordered_scatter_add(np, got, index, values)
    return expected, got


def _cases(rng):
    """(target, index, values): repeats, several index kinds, broadcast values."""
    t1 = np.zeros(7, np.float32)
    i1 = rng.integers(0, 7, 200)
    yield t1, i1, rng.standard_normal(200).astype(np.float32)
    t2 = rng.standard_normal((5, 3)).astype(np.float32)
    i2 = np.array([4, 0, 4, 4, 1, 0])
    yield t2, i2, rng.standard_normal((6, 3)).astype(np.float32)
    yield t2, (np.array([0, 0, 2, 0]), np.array([1, 1, 2, 1])), \
        rng.standard_normal(4).astype(np.float32)
    yield t2, (slice(None), np.array([2, 2, 0])), rng.standard_normal((5, 3)).astype(np.float32)
    yield t2, np.array([[1, 1], [3, 1]]), np.float32(0.25)  # 2-D index, scalar values
    yield t2, t2 > 0, np.float32(1.5)  # boolean mask: no repeats
    yield t2, np.array([], dtype=np.int64), np.zeros((0, 3), np.float32)
    yield t1.astype(np.float64), i1, rng.standard_normal(200)


def test_ordered_scatter_add_is_bitwise_numpys_add_at(rng):
    for target, index, values in _cases(rng):
        expected, got = _both(target, index, values)
        assert got.dtype == expected.dtype
        assert np.array_equal(got, expected), index


def test_ordered_scatter_add_keeps_the_order_that_changes_the_float_result():
    # float32: (1e8 + 1) - 1e8 = 0 but (1e8 - 1e8) + 1 = 1, so the order is visible.
    target = np.zeros(2, np.float32)
    index = np.array([1, 0, 1, 0, 1])
    values = np.array([1e8, 3, 1, 4, -1e8], np.float32)
    expected, got = _both(target, index, values)
    assert got.tolist() == expected.tolist() == [7.0, 0.0]
    reordered = np.zeros(2, np.float32)
    ordered_scatter_add(np, reordered, index[[0, 4, 2, 1, 3]], values[[0, 4, 2, 1, 3]])
    assert reordered.tolist() == [7.0, 1.0]


def test_ordered_scatter_add_into_a_non_contiguous_target(rng):
    base = rng.standard_normal((4, 6)).astype(np.float32)
    index = np.array([5, 1, 5, 5])
    values = rng.standard_normal(4).astype(np.float32)
    expected = base.T.copy()
    np.add.at(expected, index, values[:, None])
    view = base.T  # Fortran-ordered view: the result must land in ``base``
    ordered_scatter_add(np, view, index, values[:, None])
    assert np.array_equal(base.T, expected)


def test_the_switch():
    assert gl.are_deterministic_algorithms_enabled() is False
    gl.use_deterministic_algorithms(True)
    try:
        assert gl.are_deterministic_algorithms_enabled() is True
    finally:
        gl.use_deterministic_algorithms(False)
    with pytest.raises(TypeError, match="True or False, got 'yes'"):
        gl.use_deterministic_algorithms("yes")
    assert gl.are_deterministic_algorithms_enabled() is False


def _indexing_grad(device, index):
    rng = np.random.default_rng(3)  # the same values on both devices
    x = gl.tensor(rng.standard_normal((64, 8)).astype(np.float32), device=device,
                  requires_grad=True)
    w = gl.tensor(rng.standard_normal((len(index), 8)).astype(np.float32), device=device)
    (x[gl.tensor(index, device=device)] * w).sum().backward()
    return x.grad.cpu().numpy()


def test_deterministic_indexing_backward_adds_repeats_in_index_order(device, deterministic):
    # float32: in index order position 1 gets ((1e8 + 1) - 1e8) = 0; any other order of its
    # three additions can give 1 (see the test of ordered_scatter_add above).
    x = gl.zeros(2, device=device, requires_grad=True)
    index = gl.tensor([1, 0, 1, 0, 1], device=device)
    w = gl.tensor([1e8, 3.0, 1.0, 4.0, -1e8], device=device)
    (x[index] * w).sum().backward()
    assert x.grad.cpu().numpy().tolist() == [7.0, 0.0]


def test_indexing_backward_is_numpys_add_at_on_every_backend(device, deterministic,
                                                             monkeypatch):
    # The emulated device's atomics add in order, so the values alone cannot show that the
    # CUDA backend switched to the ordered scatter: count its calls as well.
    calls = []
    ordered = determinism.ordered_scatter_add
    monkeypatch.setattr(determinism, "ordered_scatter_add",
                        lambda *a: calls.append(1) or ordered(*a))
    index = np.random.default_rng(0).integers(0, 4, 3000)  # hundreds of repeats per row
    rng = np.random.default_rng(3)
    rng.standard_normal((64, 8))  # x, whose values do not enter the gradient
    w = rng.standard_normal((len(index), 8)).astype(np.float32)  # as _indexing_grad draws
    expected = np.zeros((64, 8), np.float32)
    np.add.at(expected, index, w)
    assert np.array_equal(_indexing_grad(device, index), expected)
    assert len(calls) == (device == "cuda")  # the CPU's add.at is already ordered
    gl.use_deterministic_algorithms(False)
    fast = _indexing_grad(device, index)
    assert len(calls) == (device == "cuda")
    if device == "cpu":  # NumPy's add.at is sequential in both modes
        assert np.array_equal(fast, expected)
    else:  # atomics: the same sums in some order
        np.testing.assert_allclose(fast, expected, rtol=1e-4, atol=1e-4)


@needs_gpu
def test_cuda_indexing_backward_is_deterministic_and_equals_the_cpu(deterministic):
    index = np.random.default_rng(0).integers(0, 4, 30000)  # thousands of repeats per row
    runs = [_indexing_grad("cuda", index) for _ in range(3)]
    assert all(np.array_equal(runs[0], r) for r in runs[1:])
    assert np.array_equal(runs[0], _indexing_grad("cpu", index))


def _train_twice_bitwise(device):
    results = []
    for _ in range(2):
        gl.manual_seed(11)
        model = gl.nn.Sequential(gl.nn.Linear(20, 64), gl.nn.BatchNorm1d(64), gl.nn.ReLU(),
                                 gl.nn.Dropout(0.2), gl.nn.Linear(64, 5)).to(device)
        opt = gl.optim.Adam(model.parameters(), lr=1e-2)
        data = np.random.default_rng(5)
        for _ in range(20):
            x = gl.tensor(data.standard_normal((128, 20)).astype(np.float32), device=device)
            y = gl.tensor(data.integers(0, 5, 128), device=device)
            opt.zero_grad()
            gl.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        results.append({k: v.detach().cpu().numpy() for k, v in model.state_dict().items()})
    return all(np.array_equal(results[0][k], results[1][k]) for k in results[0])


def test_cpu_training_is_bitwise_reproducible():
    assert _train_twice_bitwise("cpu")


@needs_gpu
def test_cuda_training_is_bitwise_reproducible_in_deterministic_mode(deterministic):
    # Every op of this step (cuBLAS GEMMs on one stream, CuPy reductions, the fused dropout,
    # softmax-CE and Adam kernels) is documented as run-to-run deterministic; this holds
    # the documentation to it.
    assert _train_twice_bitwise("cuda")
