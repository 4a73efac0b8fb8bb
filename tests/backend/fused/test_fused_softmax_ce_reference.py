"""softmax_cross_entropy on the CPU against the formula written out row by row, finite
differences, extreme logits and PyTorch's bad-target behaviour."""
import math

import numpy as np
import pytest

from gradlab.backend.fused.softmax_ce import reference as ref


def direct_row_loss(x, y, w, s):
    """(1-s) w_y (-log p_y) + s/C sum_c w_c (-log p_c) with plain Python math."""
    mx = max(x)
    lse = mx + math.log(sum(math.exp(v - mx) for v in x))
    c = len(x)
    return (1 - s) * w[y] * (lse - x[y]) + s / c * sum(w[k] * (lse - x[k]) for k in range(c))


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_loss_and_grad_against_direct_formula(weighted, smoothing, rng):
    n, c, ignore = 6, 5, 2
    x = rng.standard_normal((n, c)) * 3
    y = np.array([0, 4, 2, 1, 3, 2])          # rows 2 and 5 are ignored
    w = rng.random(c) + 0.5 if weighted else None
    wl = w.tolist() if weighted else [1.0] * c
    loss, grad = ref.softmax_cross_entropy(x, y, w, ignore, smoothing)
    assert loss.shape == (n,) and grad.shape == (n, c) and loss.dtype == np.float64
    h = 1e-6
    for i in range(n):
        if y[i] == ignore:
            assert loss[i] == 0 and not grad[i].any()
            continue
        assert loss[i] == pytest.approx(direct_row_loss(x[i].tolist(), y[i], wl, smoothing),
                                        rel=1e-12)
        for k in range(c):
            up, down = x[i].copy(), x[i].copy()
            up[k] += h
            down[k] -= h
            fd = (direct_row_loss(up.tolist(), y[i], wl, smoothing)
                  - direct_row_loss(down.tolist(), y[i], wl, smoothing)) / (2 * h)
            assert grad[i, k] == pytest.approx(fd, abs=1e-7)


def test_hand_values():
    # Two equal logits: p = 1/2 each, loss = log 2, grad = p - onehot.
    loss, grad = ref.softmax_cross_entropy(np.zeros((1, 2)), np.array([1]), None, -100, 0.0)
    assert loss[0] == pytest.approx(math.log(2), abs=1e-15)
    np.testing.assert_allclose(grad, [[0.5, -0.5]], atol=1e-15)
    # With smoothing 0.5 on two classes the target is (1/4, 3/4): grad = p - target.
    loss, grad = ref.softmax_cross_entropy(np.zeros((1, 2)), np.array([1]), None, -100, 0.5)
    assert loss[0] == pytest.approx(math.log(2), abs=1e-15)
    np.testing.assert_allclose(grad, [[0.25, -0.25]], atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_logits_are_exact(dtype):
    x = np.array([[1e8, 0.0, -1e8]] * 3, dtype=dtype)
    loss, grad = ref.softmax_cross_entropy(x, np.array([0, 1, 2]), None, -100, 0.0)
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    np.testing.assert_array_equal(loss, np.array([0.0, 1e8, 2e8], dtype=dtype))
    np.testing.assert_array_equal(grad, np.array([[0, 0, 0], [1, -1, 0], [1, 0, -1]], dtype))
    loss, _ = ref.softmax_cross_entropy(x, np.array([0, 1, 2]), None, -100, 0.3)
    # smoothing: 0.3 / 3 * (0 + 1e8 + 2e8) added to each row's (1 - 0.3) nll
    np.testing.assert_allclose(loss, 0.7 * np.array([0, 1e8, 2e8]) + 0.1 * 3e8, rtol=1e-6)


def test_float32_stays_float32(rng):
    x = rng.standard_normal((4, 3)).astype(np.float32)
    loss, grad = ref.softmax_cross_entropy(x, np.array([0, 1, 2, 0]), None, -100, 0.0)
    assert loss.dtype == np.float32 and grad.dtype == np.float32
    want, _ = ref.softmax_cross_entropy(x.astype(np.float64), np.array([0, 1, 2, 0]), None,
                                        -100, 0.0)
    np.testing.assert_allclose(loss, want, rtol=1e-6)


def test_bad_targets_name_the_first_bad_value():
    x = np.zeros((4, 3))
    with pytest.raises(IndexError, match=r"Target 5 is out of bounds"):
        ref.softmax_cross_entropy(x, np.array([0, 5, 7, 1]), None, -100, 0.0)
    with pytest.raises(IndexError, match=r"Target -1 is out of bounds"):
        ref.softmax_cross_entropy(x, np.array([0, -1, 2, 1]), None, -100, 0.0)
    with pytest.raises(IndexError, match=r"Target 3 is out of bounds"):
        ref.softmax_cross_entropy(x, np.array([0, 1, 2, 3]), None, -100, 0.0)
    loss, _ = ref.softmax_cross_entropy(x, np.array([0, -100, 2, 1]), None, -100, 0.0)
    assert loss[1] == 0 and loss[0] == pytest.approx(math.log(3))


def test_empty_batch():
    loss, grad = ref.softmax_cross_entropy(np.zeros((0, 4)), np.zeros(0, np.int64), None,
                                           -100, 0.1)
    assert loss.shape == (0,) and grad.shape == (0, 4)


@pytest.mark.parametrize("weighted", [False, True])
def test_sum_and_mean_against_direct_formula(weighted, rng):
    """'sum': sum_i loss_i; 'mean': / sum of w[y_i] over the kept rows (PyTorch's rule), and
    grad the finite-difference gradient of the returned loss."""
    n, c, ignore, s = 6, 5, 2, 0.1
    x = rng.standard_normal((n, c)) * 3
    y = np.array([0, 4, 2, 1, 3, 2])          # rows 2 and 5 are ignored
    w = rng.random(c) + 0.5 if weighted else None
    wl = w.tolist() if weighted else [1.0] * c
    kept = [i for i in range(n) if y[i] != ignore]
    denom = sum(wl[y[i]] for i in kept)

    def direct(xs, reduction):
        total = sum(direct_row_loss(xs[i].tolist(), y[i], wl, s) for i in kept)
        return total / denom if reduction == "mean" else total

    for reduction in ("sum", "mean"):
        loss, grad = ref.softmax_cross_entropy(x, y, w, ignore, s, reduction)
        assert isinstance(loss, np.ndarray) and loss.shape == () and loss.dtype == np.float64
        assert float(loss) == pytest.approx(direct(x, reduction), rel=1e-12)
        h = 1e-6
        for i, k in [(0, 0), (1, 4), (3, 2), (4, 1), (5, 3)]:
            up, down = x.copy(), x.copy()
            up[i, k] += h
            down[i, k] -= h
            fd = (direct(up, reduction) - direct(down, reduction)) / (2 * h)
            assert grad[i, k] == pytest.approx(fd, abs=1e-7)


def test_reductions_keep_float32():
    x = np.zeros((4, 3), np.float32)
    for reduction in ("sum", "mean"):
        loss, grad = ref.softmax_cross_entropy(x, np.array([0, 1, 2, -100]), None, -100, 0.0,
                                               reduction)
        assert loss.dtype == np.float32 and loss.shape == () and grad.dtype == np.float32
    assert float(loss) == pytest.approx(math.log(3), rel=1e-6)   # 3 log 3 / 3 kept rows


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_mean_of_no_rows_is_nan():
    """0 / 0 as PyTorch: a nan loss when every row is ignored or there are none, and
    PyTorch's zero gradient; 'sum' gives 0."""
    for x, y in ((np.zeros((3, 4)), np.full(3, -100)), (np.zeros((0, 4)), np.zeros(0, int))):
        loss, grad = ref.softmax_cross_entropy(x, y, None, -100, 0.0, "mean")
        assert np.isnan(loss) and not grad.any() and grad.shape == x.shape
        loss, grad = ref.softmax_cross_entropy(x, y, None, -100, 0.0, "sum")
        assert loss == 0 and not grad.any()


def test_unknown_reduction():
    with pytest.raises(ValueError, match=r"reduction must be 'none', 'sum' or 'mean', got "
                                         r"'elementwise_mean'"):
        ref.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 1]), None, -100, 0.0,
                                  "elementwise_mean")
