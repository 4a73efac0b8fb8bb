"""Splits, K-fold, bundled/synthetic datasets, standardization and augmentation."""
import numpy as np
import pytest

from gradlab.data import (
    GaussianNoise,
    KFold,
    RandomShift,
    RepeatedKFold,
    StandardScaler,
    TensorDataset,
    load_digits,
    make_circles,
    make_moons,
    make_spirals,
    smote,
    stratified_indices,
    train_test_split,
)


def test_digits_are_the_uci_set():
    X, y = load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float32 and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    assert np.bincount(y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    images, _ = load_digits(flatten=False, scale=False)
    assert images.shape == (1797, 8, 8) and images.max() == 16.0
    # The first image is a zero: a ring of ink around an empty centre.
    assert images[0, 3, 1] > 0 and images[0, 3, 4] == 0


@pytest.mark.parametrize("make", [make_spirals, make_moons, make_circles])
def test_toy_datasets_are_seeded_balanced_and_2d(make):
    X, y = make(101, seed=1)
    X2, y2 = make(101, seed=1)
    X3, _ = make(101, seed=2)
    assert X.shape == (101, 2) and X.dtype == np.float32 and set(y.tolist()) == {0, 1}
    assert abs(int((y == 0).sum()) - int((y == 1).sum())) <= 1
    assert np.array_equal(X, X2) and np.array_equal(y, y2) and not np.array_equal(X, X3)
    with pytest.raises(ValueError, match="n_samples"):
        make(1)


def test_circles_radii():
    X, y = make_circles(200, noise=0.0, factor=0.3)
    r = np.linalg.norm(X, axis=1)
    assert np.allclose(r[y == 0], 1.0, atol=1e-6) and np.allclose(r[y == 1], 0.3, atol=1e-6)


def test_stratified_split_keeps_class_proportions():
    y = np.array([0] * 80 + [1] * 20)
    tr, te = stratified_indices(y, 0.25, seed=0)
    assert len(te) == 25 and np.bincount(y[te]).tolist() == [20, 5]
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(100))
    train, test = train_test_split(TensorDataset(np.zeros((100, 1)), y), 0.25)
    assert np.bincount(test.arrays[1]).tolist() == [20, 5] and len(train) == 75
    with pytest.raises(ValueError, match=r"fraction in \(0, 1\)"):
        stratified_indices(y, 1.5)


def test_kfold_partitions_every_sample_once():
    folds = list(KFold(4, seed=0).split(10))
    assert len(folds) == 4
    val = np.concatenate([v for _, v in folds])
    assert sorted(val.tolist()) == list(range(10))
    for tr, va in folds:
        assert set(tr).isdisjoint(va) and len(tr) + len(va) == 10
    with pytest.raises(ValueError, match="cannot make 5 folds from 3 samples"):
        list(KFold(5).split(3))


def test_stratified_kfold_balances_classes():
    y = np.array([0] * 30 + [1] * 10)
    for _, va in KFold(5, stratify=True).split(y):
        assert np.bincount(y[va], minlength=2).tolist() == [6, 2]


def test_repeated_kfold_reshuffles():
    splits = list(RepeatedKFold(3, 2, seed=0).split(12))
    assert len(splits) == 6
    first = sorted(map(tuple, (np.sort(v) for _, v in splits[:3])))
    second = sorted(map(tuple, (np.sort(v) for _, v in splits[3:])))
    assert first != second


def test_standard_scaler_fits_train_only():
    train = np.array([[0.0, 5.0], [2.0, 5.0]])
    test = np.array([[4.0, 6.0]])
    s = StandardScaler().fit(train)
    assert np.allclose(s.transform(train), [[-1, 0], [1, 0]])
    assert np.allclose(s.transform(test), [[3.0, 1.0]])  # constant feature: std 1, centred
    assert np.allclose(s.inverse_transform(s.transform(test)), test)
    with pytest.raises(RuntimeError, match="not fitted"):
        StandardScaler().transform(test)
    with pytest.raises(ValueError, match="fitted on 2 features"):
        s.transform(np.zeros((1, 3)))


def test_gaussian_noise_statistics():
    x = np.zeros((2000, 10), dtype=np.float32)
    out = GaussianNoise(0.5)(x, np.random.default_rng(0))
    assert out.dtype == np.float32 and abs(out.std() - 0.5) < 0.01 and abs(out.mean()) < 0.01


def test_random_shift_moves_images_by_whole_pixels():
    img = np.zeros((1, 5, 5), dtype=np.float32)
    img[0, 2, 2] = 1.0
    outs = [RandomShift(1)(img, np.random.default_rng(s)) for s in range(40)]
    positions = {tuple(np.argwhere(o[0] == 1.0)[0]) for o in outs}
    assert positions <= {(r, c) for r in (1, 2, 3) for c in (1, 2, 3)} and len(positions) > 3
    assert all(o.sum() == 1.0 for o in outs)
    flat = RandomShift(2, shape=(8, 8))(np.ones((3, 64), np.float32), np.random.default_rng(0))
    assert flat.shape == (3, 64)


def test_smote_balances_and_interpolates_within_class():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (50, 2)), rng.normal(10, 0.1, (5, 2))])
    y = np.array([0] * 50 + [1] * 5)
    Xs, ys = smote(X, y, k=3, seed=0)
    assert np.bincount(ys).tolist() == [50, 50]
    synthetic = Xs[55:]
    lo, hi = X[50:].min(axis=0), X[50:].max(axis=0)
    assert ((synthetic >= lo - 1e-9) & (synthetic <= hi + 1e-9)).all()
    with pytest.raises(ValueError, match="needs at least 2"):
        smote(np.zeros((3, 2)), np.array([0, 0, 1]))
