"""Dataset, TensorDataset, Subset, random_split and DataLoader."""
import numpy as np
import pytest

import gradlab as gl
from gradlab.backend import registry
from gradlab.data import DataLoader, Dataset, Subset, TensorDataset, dataset_arrays, random_split


def _ds(n=10):
    X = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    y = np.arange(n, dtype=np.int64)
    return TensorDataset(X, y)


def test_tensor_dataset_accepts_tensors_and_arrays():
    ds = TensorDataset(gl.tensor([[1.0, 2.0], [3.0, 4.0]]), np.array([0, 1]))
    assert len(ds) == 2
    x, y = ds[1]
    assert isinstance(x, gl.Tensor) and x.tolist() == [3.0, 4.0] and y.item() == 1


def test_tensor_dataset_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match=r"first dimension: \[3, 2\]"):
        TensorDataset(np.zeros((3, 2)), np.zeros(2))


def test_loader_batches_cover_dataset_in_order_without_shuffle():
    batches = list(DataLoader(_ds(10), batch_size=4))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    assert np.concatenate([b[1].numpy() for b in batches]).tolist() == list(range(10))
    x, y = batches[0]
    assert x.dtype == np.float32 and y.dtype == np.int64 and x.device == gl.device("cpu")
    assert x.numpy()[1].tolist() == [3.0, 4.0, 5.0]


def test_drop_last_and_len():
    loader = DataLoader(_ds(10), batch_size=4, drop_last=True)
    assert len(loader) == 2
    assert [len(b[0]) for b in loader] == [4, 4]
    assert len(DataLoader(_ds(10), batch_size=4)) == 3


def test_full_batch_and_stochastic():
    assert [len(b[0]) for b in DataLoader(_ds(7), batch_size=7)] == [7]
    assert len(list(DataLoader(_ds(7), batch_size=1))) == 7


def test_shuffle_is_a_permutation_reproducible_from_seed_and_new_each_epoch():
    a = DataLoader(_ds(50), batch_size=8, shuffle=True, seed=3)
    b = DataLoader(_ds(50), batch_size=8, shuffle=True, seed=3)
    ea1 = np.concatenate([y.numpy() for _, y in a])
    ea2 = np.concatenate([y.numpy() for _, y in a])
    eb1 = np.concatenate([y.numpy() for _, y in b])
    assert sorted(ea1.tolist()) == list(range(50))
    assert ea1.tolist() == eb1.tolist()
    assert ea1.tolist() != ea2.tolist()
    assert a.epoch == 2


def test_seed_chooses_the_order():
    def order(**kw):  # two epochs
        loader = DataLoader(_ds(50), batch_size=8, shuffle=True, **kw)
        return [np.concatenate([y.numpy() for _, y in loader]).tolist() for _ in range(2)]

    # The documented generator: NumPy's default_rng(seed), one permutation per epoch.
    rng = np.random.default_rng(3)
    assert order(seed=3) == [rng.permutation(50).tolist(), rng.permutation(50).tolist()]
    assert order(seed=4) != order(seed=3) and order(seed=0) != order(seed=3)
    # seed=None draws the loader's seed from the global gradlab seed.
    gl.manual_seed(1)
    first = order()
    gl.manual_seed(1)
    assert order() == first
    gl.manual_seed(2)
    assert order() != first


def test_shuffle_order_does_not_depend_on_other_random_draws():
    a = DataLoader(_ds(30), batch_size=30, shuffle=True, seed=5)
    first = next(iter(a))[1].numpy().copy()
    b = DataLoader(_ds(30), batch_size=30, shuffle=True, seed=5)
    gl.randn(100)  # consumes the global generator, not the loader's
    assert next(iter(b))[1].numpy().tolist() == first.tolist()


def test_loader_state_dict_resumes_the_shuffle_stream():
    a = DataLoader(_ds(20), batch_size=20, shuffle=True, seed=1)
    list(a)
    state = a.state_dict()
    expected = next(iter(a))[1].numpy().tolist()
    b = DataLoader(_ds(20), batch_size=20, shuffle=True, seed=99)
    b.load_state_dict(state)
    assert b.epoch == 1
    assert next(iter(b))[1].numpy().tolist() == expected


def test_bulk_path_does_not_call_getitem():
    class Counting(TensorDataset):
        calls = 0

        def __getitem__(self, i):
            Counting.calls += 1
            return super().__getitem__(i)

    for _ in DataLoader(Counting(np.zeros((100, 2)), np.zeros(100)), batch_size=10):
        pass
    assert Counting.calls == 0


def test_generic_dataset_uses_getitem_and_collate():
    class Squares(Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return np.array([i, i * i], dtype=np.float32), i

    batches = list(DataLoader(Squares(), batch_size=2))
    assert batches[1][0].numpy().tolist() == [[2, 4], [3, 9]]
    assert batches[2][1].tolist() == [4]
    X, y = dataset_arrays(Squares())
    assert X.shape == (5, 2) and y.tolist() == [0, 1, 2, 3, 4]


def test_loader_bad_arguments():
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        DataLoader(_ds(), batch_size=0)
    with pytest.raises(ValueError, match="dataset is empty"):
        DataLoader(TensorDataset(np.zeros((0, 2))), batch_size=1)
    with pytest.raises(ValueError, match="larger than the dataset"):
        DataLoader(_ds(5), batch_size=8, drop_last=True)


def test_loader_on_cuda_without_gpu_is_the_core_error(monkeypatch):
    # As on a machine without CUDA (this one may have a GPU or the emulated device).
    monkeypatch.setattr(registry, "_cuda_status", (False, "no CUDA here (test)"))
    monkeypatch.setattr(registry, "_cuda_backends", {})
    with pytest.raises(gl.DeviceUnavailableError, match="CUDA is unavailable: no CUDA here"):
        DataLoader(_ds(), batch_size=2, device="cuda")


@pytest.mark.cuda
@pytest.mark.skipif(not gl.cuda.is_available(), reason="needs a CUDA GPU")
def test_loader_yields_cuda_tensors_matching_cpu():
    cpu = [y.numpy() for _, y in DataLoader(_ds(20), 6, shuffle=True, seed=2)]
    gpu = list(DataLoader(_ds(20), 6, shuffle=True, seed=2, device="cuda"))
    assert gpu[0][0].device.type == "cuda"
    assert [y.cpu().numpy().tolist() for _, y in gpu] == [c.tolist() for c in cpu]


def test_transform_applies_to_features_only():
    loader = DataLoader(_ds(4), batch_size=4, transform=lambda x, rng: x * 0 + 7)
    x, y = next(iter(loader))
    assert (x.numpy() == 7).all() and y.numpy().tolist() == [0, 1, 2, 3]


def test_random_split_counts_fractions_and_disjointness():
    parts = random_split(_ds(10), [7, 3], seed=0)
    idx = np.concatenate([p.indices for p in parts])
    assert [len(p) for p in parts] == [7, 3] and sorted(idx.tolist()) == list(range(10))
    parts = random_split(_ds(10), [0.5, 0.3, 0.2], seed=0)
    assert [len(p) for p in parts] == [5, 3, 2]
    assert random_split(_ds(10), [5, 5], seed=4)[0].indices.tolist() == \
        random_split(_ds(10), [5, 5], seed=4)[0].indices.tolist()
    with pytest.raises(ValueError, match="summing to the dataset size 10"):
        random_split(_ds(10), [3, 3])


def test_subset_of_subset_keeps_bulk_indexing():
    inner = Subset(_ds(10), [9, 8, 7, 6])
    outer = Subset(inner, [1, 3])
    assert outer.arrays[1].tolist() == [8, 6]
    assert next(iter(DataLoader(outer, batch_size=2)))[1].tolist() == [8, 6]
    with pytest.raises(IndexError, match=r"\[0, 10\)"):
        Subset(_ds(10), [10])
