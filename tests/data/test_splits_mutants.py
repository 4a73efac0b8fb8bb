"""Holdout splits and K-fold details that `make mutate` found unchecked in
gradlab/data/splits.py: defaults, the unstratified path, the sizes at the edges, the fold
assignment rules and the argument errors."""
import numpy as np
import pytest

from gradlab.data import KFold, RepeatedKFold, TensorDataset, stratified_indices, train_test_split
from gradlab.data.splits import _labels_of


def _ds(n, y=None):
    y = np.arange(n) % 2 if y is None else np.asarray(y)
    return TensorDataset(np.arange(n, dtype=np.float32).reshape(n, 1), y)


def _idx(subset):
    return np.asarray(subset.indices).tolist()


def test_train_test_split_defaults_are_a_fifth_stratified_with_seed_0():
    ds = _ds(100, [0] * 50 + [1] * 50)
    train, test = train_test_split(ds)
    assert len(test) == 20 and len(train) == 80
    assert np.bincount(test.arrays[1]).tolist() == [10, 10]
    s_train, s_test = train_test_split(ds, 0.2, stratify=True, seed=0)
    assert _idx(test) == _idx(s_test) and _idx(train) == _idx(s_train)
    other = train_test_split(ds, seed=1)[1]
    assert _idx(other) != _idx(test)


def test_unstratified_split_is_a_seeded_permutation():
    ds = _ds(10, [0] * 9 + [1])
    train, test = train_test_split(ds, 0.3, stratify=False, seed=3)
    order = np.random.default_rng(3).permutation(10)
    assert _idx(test) == order[:3].tolist() and _idx(train) == order[3:].tolist()
    assert _idx(train_test_split(ds, 0.3, stratify=False)[1]) == \
        np.random.default_rng(0).permutation(10)[:3].tolist()


@pytest.mark.parametrize("n, size, k", [(2, 0.1, 1), (2, 0.9, 1), (3, 0.5, 2), (10, 0.04, 1),
                                        (10, 0.96, 9), (10, 0.25, 2), (7, 0.5, 4)])
def test_unstratified_test_size_rounds_and_keeps_both_parts_non_empty(n, size, k):
    train, test = train_test_split(_ds(n), size, stratify=False)
    assert len(test) == k and len(train) == n - k
    assert sorted(_idx(train) + _idx(test)) == list(range(n))


def test_split_argument_errors():
    with pytest.raises(ValueError, match=r"^test_size must be a fraction in \(0, 1\), got 1.5$"):
        train_test_split(_ds(10), 1.5)
    with pytest.raises(ValueError, match=r"^test_size must be a fraction in \(0, 1\), got 0$"):
        train_test_split(_ds(10), 0)
    with pytest.raises(ValueError, match=r"^test_fraction must be a fraction in \(0, 1\), "
                                         r"got 1.0$"):
        stratified_indices([0, 1], 1.0)
    with pytest.raises(ValueError, match=r"^cannot split a dataset of 1 sample\(s\) into train "
                                         r"and test$"):
        train_test_split(_ds(1), 0.5)
    train, test = train_test_split(_ds(2), 0.5, stratify=False)  # 2 samples: one each
    assert len(train) == len(test) == 1


def test_stratified_indices_per_class_counts_and_seed():
    y = np.array([0] * 7 + [1] * 2 + [2])
    tr, te = stratified_indices(y, 0.3, seed=5)
    # class 0: round(2.1) = 2; class 1: round(0.6) = 1, and 1 stays in train; class 2 has one
    # sample, round(0.3) = 0: it goes to train.
    assert np.bincount(y[te], minlength=3).tolist() == [2, 1, 0]
    assert np.bincount(y[tr], minlength=3).tolist() == [5, 1, 1]
    assert sorted(tr.tolist() + te.tolist()) == list(range(10))
    again = stratified_indices(y, 0.3, seed=5)
    assert tr.tolist() == again[0].tolist() and te.tolist() == again[1].tolist()
    assert stratified_indices(y, 0.3)[1].tolist() == stratified_indices(y, 0.3, 0)[1].tolist()
    # A class of 2 with a fraction that rounds to 2 still keeps one for training.
    tr, te = stratified_indices([0, 0, 1, 1, 1, 1], 0.9, seed=0)
    assert sorted(np.asarray([0, 0, 1, 1, 1, 1])[tr].tolist()) == [0, 1]
    # A single sample with a fraction that rounds up goes to the test side.
    tr, te = stratified_indices([4], 0.6)
    assert tr.tolist() == [] and te.tolist() == [0]


@pytest.mark.parametrize("labels, fraction", [([0, 1], 0.2), ([3, 1, 2], 0.2),
                                               ([0, 1, 2, 3, 4], 0.6), ([7, 9], 0.9)])
def test_classes_of_one_sample_still_give_two_non_empty_parts(labels, fraction):
    # Each singleton class rounds whole to one side; train_test_split moves one sample to
    # the empty part (stratified_indices itself keeps its per-class rule).
    tr, te = stratified_indices(labels, fraction, seed=0)
    assert min(tr.size, te.size) == 0 and tr.size + te.size == len(labels)
    train, test = train_test_split(_ds(len(labels), labels), fraction)
    assert len(train) >= 1 and len(test) >= 1
    assert sorted(_idx(train) + _idx(test)) == list(range(len(labels)))
    assert len(test) == (1 if te.size == 0 else len(labels) - 1)


def test_stratified_indices_is_the_documented_draw():
    y = np.array([1, 0, 1, 0, 1, 0, 1, 0])
    rng = np.random.default_rng(2)
    expected_test, expected_train = [], []
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        rng.shuffle(idx)
        expected_test.append(idx[:2])
        expected_train.append(idx[2:])
    tr_ref = rng.permutation(np.concatenate(expected_train))
    te_ref = rng.permutation(np.concatenate(expected_test))
    tr, te = stratified_indices(y.reshape(4, 2), 0.5, seed=2)  # labels are flattened
    assert tr.tolist() == tr_ref.tolist() and te.tolist() == te_ref.tolist()


def test_labels_of_a_dataset_or_an_array():
    assert _labels_of(_ds(4, [3, 1, 2, 0])).tolist() == [3, 1, 2, 0]
    assert _labels_of(np.array([[1], [2]])).tolist() == [[1], [2]]
    with pytest.raises(TypeError, match=r"^labels is not a rectangular numeric array$"):
        _labels_of([None])


@pytest.mark.parametrize("bad", [1, 0, True, 2.0, "3"])
def test_kfold_n_splits_must_be_an_integer_of_at_least_2(bad):
    with pytest.raises(ValueError, match=rf"^n_splits must be an integer >= 2, got {bad!r}$"):
        KFold(bad)


def test_kfold_defaults_and_attributes():
    kf = KFold()
    assert (kf.n_splits, kf.shuffle, kf.stratify, kf.seed) == (5, True, False, 0)
    assert kf.get_n_splits() == 5 and type(KFold(np.int64(3)).n_splits) is int
    assert KFold(2).n_splits == 2


def test_unshuffled_folds_are_contiguous_and_balanced():
    folds = KFold(3, shuffle=False).fold_of(8)
    assert folds.tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    pairs = list(KFold(3, shuffle=False).split(8))
    assert [v.tolist() for _, v in pairs] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert [t.tolist() for t, _ in pairs][0] == [3, 4, 5, 6, 7]
    assert KFold(2, shuffle=False).fold_of(2).tolist() == [0, 1]  # n == n_splits is allowed


def test_shuffled_folds_are_a_seeded_permutation_of_the_balanced_assignment():
    folds = KFold(3, seed=4).fold_of(8)
    order = np.random.default_rng(4).permutation(8)
    expected = np.empty(8, np.int64)
    expected[order] = [0, 0, 0, 1, 1, 1, 2, 2]
    assert folds.tolist() == expected.tolist()
    assert KFold(3).fold_of(8).tolist() == KFold(3, seed=0).fold_of(8).tolist()
    assert KFold(3, seed=4).fold_of(np.arange(8)).tolist() == folds.tolist()  # labels: size


def test_stratified_folds_deal_each_class_round_robin_from_where_the_last_stopped():
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    folds = KFold(3, shuffle=False, stratify=True).fold_of(y)
    assert folds.tolist() == [0, 1, 2, 0, 1, 2, 0]
    y = np.array([1, 0, 1, 0, 0])
    assert KFold(2, shuffle=False, stratify=True).fold_of(y).tolist() == [1, 0, 0, 1, 0]
    # Shuffled: each class's indices drawn from the seed, in class order.
    rng = np.random.default_rng(1)
    expected = np.empty(5, np.int64)
    offset = 0
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        rng.shuffle(idx)
        expected[idx] = (np.arange(idx.size) + offset) % 2
        offset += idx.size
    assert KFold(2, stratify=True, seed=1).fold_of(y).tolist() == expected.tolist()
    # stratify without labels (a count) falls back to the plain assignment.
    assert KFold(2, shuffle=False, stratify=True).fold_of(4).tolist() == [0, 0, 1, 1]


def test_too_few_samples_for_the_folds():
    with pytest.raises(ValueError, match=r"^cannot make 4 folds from 3 samples; use "
                                         r"n_splits <= 3$"):
        KFold(4).fold_of(np.array([0, 1, 0]))


@pytest.mark.parametrize("bad", [0, -1, True, 1.0])
def test_repeated_kfold_n_repeats_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match=rf"^n_repeats must be a positive integer, got "
                                         rf"{bad!r}$"):
        RepeatedKFold(3, bad)


def test_repeated_kfold_defaults_count_and_draws():
    r = RepeatedKFold()
    assert (r.n_splits, r.n_repeats, r.shuffle, r.stratify, r.seed) == (5, 2, True, False, 0)
    assert r.get_n_splits() == 10 and RepeatedKFold(3, 3).get_n_splits() == 9
    assert RepeatedKFold(2, 1).n_repeats == 1
    assert type(RepeatedKFold(2, np.int64(2)).n_repeats) is int
    splits = list(RepeatedKFold(3, 2, seed=7).split(7))
    rng = np.random.default_rng(7)
    expected = []
    for _ in range(2):
        folds = KFold(3, seed=7).fold_of(7, rng)
        expected += [np.flatnonzero(folds == k).tolist() for k in range(3)]
    assert [v.tolist() for _, v in splits] == expected
    assert all(sorted(t.tolist() + v.tolist()) == list(range(7)) for t, v in splits)
    y = np.array([0] * 6 + [1] * 3)
    for _, va in RepeatedKFold(3, 2, stratify=True).split(y):
        assert np.bincount(y[va], minlength=2).tolist() == [2, 1]


def test_labels_are_the_last_field_of_a_dataset_of_three():
    ds = TensorDataset(np.zeros((4, 1)), np.array([9, 9, 9, 9]), np.array([3, 1, 2, 0]))
    assert _labels_of(ds).tolist() == [3, 1, 2, 0]


def test_a_class_of_three_with_a_small_fraction_puts_one_in_the_test_part():
    y = np.array([0, 0, 0, 1, 1, 1])
    tr, te = stratified_indices(y, 0.2)
    assert np.bincount(y[te]).tolist() == [1, 1] and np.bincount(y[tr]).tolist() == [2, 2]


def test_fold_numbers_are_int64_and_the_round_robin_offset_adds_up_over_classes():
    kf = KFold(3, shuffle=False, stratify=True)
    folds = kf.fold_of(np.array([0, 1, 1, 2, 2, 2]))
    assert folds.dtype == np.int64 and folds.tolist() == [0, 1, 2, 0, 1, 2]
    assert kf.fold_of(np.array([0, 1, 1, 1])).tolist() == [0, 1, 2, 0]
    assert KFold(3).fold_of(7).dtype == np.int64
