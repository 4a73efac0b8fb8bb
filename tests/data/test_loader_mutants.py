"""DataLoader details that `make mutate` found unchecked in gradlab/data/loader.py: the
collate of generic datasets (one field or several, and its errors) and what
load_state_dict restores."""
import numpy as np
import pytest

import gradlab as gl
from gradlab.data import DataLoader, Dataset, TensorDataset
from gradlab.data.loader import default_collate


class _Listed(Dataset):
    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def test_collate_of_single_field_samples_is_one_stacked_array():
    out = default_collate([np.array([1.0, 2.0]), np.array([3.0, 4.0])])
    assert isinstance(out, tuple) and len(out) == 1
    assert out[0].tolist() == [[1.0, 2.0], [3.0, 4.0]]
    (x,), = list(DataLoader(_Listed([np.array([1, 2]), np.array([3, 4])]), batch_size=2))
    assert x.numpy().tolist() == [[1, 2], [3, 4]]


def test_collate_of_tuple_and_list_samples_is_one_array_per_field():
    x, y = default_collate([(np.array([1.0]), 0), [np.array([2.0]), 1]])
    assert x.tolist() == [[1.0], [2.0]] and y.tolist() == [0, 1]


def test_samples_that_are_not_numbers_are_a_clear_error():
    with pytest.raises(TypeError, match=r"^sample is not a rectangular numeric array$"):
        default_collate([{"x": 1}])  # one sample, not a tuple, and not numbers
    with pytest.raises(TypeError, match=r"^sample field is not a rectangular numeric array$"):
        default_collate([({"x": 1}, 0)])


def _ds(n=20):
    return TensorDataset(np.arange(n, dtype=np.float32).reshape(n, 1), np.arange(n))


def test_load_state_dict_restores_seed_epoch_and_stream():
    a = DataLoader(_ds(), batch_size=20, shuffle=True, seed=1)
    list(a)
    state = a.state_dict()
    b = DataLoader(_ds(), batch_size=20, shuffle=True, seed=99)
    b.load_state_dict(state)
    assert b.seed == 1 and type(b.seed) is int and b.epoch == 1
    assert b.state_dict() == state  # a checkpoint of the resumed loader resumes it again
    assert next(iter(b))[1].numpy().tolist() == next(iter(a))[1].numpy().tolist()


def _ys(loader):
    return [y.numpy().tolist() for _, y in loader]


@pytest.mark.parametrize("bad", [-1, 1.0, True, "2"])
def test_num_workers_must_be_a_non_negative_int(bad):
    with pytest.raises(ValueError, match=rf"^num_workers must be an int >= 0, got {bad!r}$"):
        DataLoader(_ds(), num_workers=bad)


def test_torch_options_that_change_nothing_are_accepted():
    ref = _ys(DataLoader(_ds(6), batch_size=4))
    for kw in ({"num_workers": 0}, {"num_workers": 3}, {"num_workers": np.int64(2)},
               {"pin_memory": True}):
        assert _ys(DataLoader(_ds(6), batch_size=4, **kw)) == ref


@pytest.mark.parametrize("kw", [{"sampler": [0, 1]}, {"batch_sampler": [[0, 1]]}])
def test_samplers_point_to_the_gradlab_equivalents(kw):
    with pytest.raises(TypeError, match=r"^DataLoader\(sampler=/batch_sampler=\) is not part of "
                                        r"gradlab: pass shuffle=True \(with seed= or "
                                        r"generator=\) for a random order, or select samples "
                                        r"with gl.data.Subset\(dataset, indices\)$"):
        DataLoader(_ds(), **kw)


@pytest.mark.parametrize("bad", [0, -2, 2.0, True])
def test_batch_size_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match=rf"^batch_size must be a positive integer, got "
                                         rf"{bad!r}$"):
        DataLoader(_ds(), batch_size=bad)


def test_batch_size_edges():
    assert len(DataLoader(_ds(5), batch_size=np.int64(2))) == 3
    assert _ys(DataLoader(_ds(5), batch_size=5, drop_last=True)) == [[0, 1, 2, 3, 4]]
    with pytest.raises(ValueError, match=r"^batch_size=6 is larger than the dataset \(5 "
                                         r"samples\) and drop_last=True would yield no batch; "
                                         r"lower batch_size or set drop_last=False$"):
        DataLoader(_ds(5), batch_size=6, drop_last=True)
    assert _ys(DataLoader(_ds(5), batch_size=6)) == [[0, 1, 2, 3, 4]]
    with pytest.raises(ValueError, match=r"^the dataset is empty \(0 samples\): a DataLoader "
                                         r"needs at least one sample; check how the dataset was "
                                         r"built or filtered$"):
        DataLoader(_ds(0))


def test_defaults_and_attributes():
    dl = DataLoader(_ds(5))
    assert (dl.batch_size, dl.shuffle, dl.drop_last, dl.transform) == (1, False, False, None)
    assert dl.collate_fn is default_collate and dl.device.type == "cpu" and dl.epoch == 0
    assert len(dl) == 5 and _ys(dl) == [[0], [1], [2], [3], [4]]
    dl = DataLoader(_ds(5), 2, 1, 0, seed=3)  # truthy values are read as booleans
    assert dl.shuffle is True and dl.drop_last is False and dl.seed == 3
    assert len(DataLoader(_ds(5), 2, drop_last=True)) == 2
    assert len(DataLoader(_ds(4), 2, drop_last=True)) == 2 and len(DataLoader(_ds(4), 2)) == 2


def test_generator_seeds_the_order_unless_a_seed_is_given():
    g = gl.Generator().manual_seed(5)
    seed = int(gl.Generator().manual_seed(5).integers(2**63))
    a = DataLoader(_ds(20), 20, shuffle=True, generator=g)
    assert a.seed == seed
    assert _ys(a) == _ys(DataLoader(_ds(20), 20, shuffle=True, seed=seed))
    b = DataLoader(_ds(20), 20, shuffle=True, seed=7, generator=gl.Generator().manual_seed(5))
    assert b.seed == 7


def test_without_a_seed_the_order_comes_from_the_global_seed():
    gl.manual_seed(11)
    a = _ys(DataLoader(_ds(20), 20, shuffle=True))
    gl.manual_seed(11)
    b = DataLoader(_ds(20), 20, shuffle=True)
    assert _ys(b) == a and type(b.seed) is int
    gl.manual_seed(12)
    assert _ys(DataLoader(_ds(20), 20, shuffle=True)) != a


def test_each_pass_counts_an_epoch_and_draws_a_new_order():
    dl = DataLoader(_ds(20), 5, shuffle=True, seed=1)
    first, second = _ys(dl), _ys(dl)
    assert dl.epoch == 2 and first != second
    rng = np.random.default_rng(1)
    assert sum(first, []) == rng.permutation(20).tolist()
    assert sum(second, []) == rng.permutation(20).tolist()
    assert dl.state_dict()["epoch"] == 2 and dl.state_dict()["seed"] == 1


def test_transform_gets_the_loaders_generator_and_the_batch_on_the_host():
    seen = []

    def t(x, rng):
        seen.append((type(x), rng))
        return x + rng.integers(100)

    dl = DataLoader(_ds(4), 2, seed=9, transform=t)
    xs = [x.numpy().ravel().tolist() for x, _ in dl]
    rng = np.random.default_rng(9)
    r1, r2 = rng.integers(100), rng.integers(100)
    assert xs == [[0 + r1, 1 + r1], [2 + r2, 3 + r2]]
    assert all(r is dl.generator for _, r in seen) and all(k is np.ndarray for k, _ in seen)


def test_batches_of_tensors_from_a_generic_dataset_keep_their_values():
    class Tensors(Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return gl.tensor([float(i), 2.0 * i]), i

    def collate(samples):
        return (gl.tensor(np.stack([s[0].numpy() for s in samples])),
                np.array([s[1] for s in samples]))

    (x, y), = list(DataLoader(Tensors(), 3, collate_fn=collate))
    assert x.numpy().tolist() == [[0, 0], [1, 2], [2, 4]] and y.numpy().tolist() == [0, 1, 2]
    (x, y), = list(DataLoader(Tensors(), 3))
    assert x.numpy().tolist() == [[0, 0], [1, 2], [2, 4]]


# Not marked `cuda`: it runs on the emulated device when there is no GPU (tests/devices.py),
# so that `make mutate`, whose runner deselects the cuda-marked tests, reaches the loader's
# device path too.
@pytest.mark.skipif(not gl.cuda.is_available(), reason="needs a CUDA device (real or emulated)")
def test_batches_on_a_cuda_device_are_gathered_there_and_match_the_cpu():
    X = np.arange(20, dtype=np.float32).reshape(10, 2)
    y = np.arange(10)
    cpu = DataLoader(TensorDataset(X, y), 4, shuffle=True, seed=2)
    dl = DataLoader(TensorDataset(X, y), 4, shuffle=True, seed=2, device="cuda")
    assert dl.device.type == "cuda"
    for _ in range(2):  # the second pass reuses the arrays copied to the device
        want, got = list(cpu), list(dl)
        assert all(t.device.type == "cuda" for b in got for t in b)
        for k in (0, 1):
            assert [b[k].cpu().numpy().tolist() for b in got] == \
                [b[k].numpy().tolist() for b in want]
    # with a transform, batches are gathered on the host, transformed, then moved
    tr = list(DataLoader(TensorDataset(X, y), 5, device="cuda", transform=lambda x, r: x + 1))
    assert tr[0][0].device.type == "cuda"
    assert tr[0][0].cpu().numpy().tolist() == (X[:5] + 1).tolist()
    assert tr[0][1].cpu().numpy().tolist() == [0, 1, 2, 3, 4]


@pytest.mark.skipif(not gl.cuda.is_available(), reason="needs a CUDA device (real or emulated)")
def test_a_generic_dataset_on_a_cuda_device():
    class Listed(Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return np.array([i, 2 * i], np.float32), i

    class OnDevice(Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return gl.tensor([float(i)]), i

    (x, y), = list(DataLoader(Listed(), 3, device="cuda"))
    assert x.device.type == "cuda" and x.cpu().numpy().tolist() == [[0, 0], [1, 2], [2, 4]]
    (x, y), = list(DataLoader(OnDevice(), 2, device="cuda",
                              collate_fn=lambda s: (gl.cat([a for a, _ in s]),
                                                    np.array([b for _, b in s]))))
    assert x.device.type == "cuda" and x.cpu().numpy().tolist() == [0.0, 1.0]


def test_the_seed_drawn_from_the_global_generator_is_a_63_bit_draw():
    from gradlab.backend import cpu_backend
    gl.manual_seed(11)
    expected = int(cpu_backend().random.generator.integers(2**63))
    gl.manual_seed(11)
    assert DataLoader(_ds(4), shuffle=True).seed == expected


def test_a_tuple_of_arrays_is_refused_naming_the_loader():
    X, y = np.zeros((4, 2)), np.zeros(4)
    with pytest.raises(TypeError, match=r"^DataLoader got a tuple of 2 arrays \(shapes \(4, 2\), "
                                        r"\(4,\)\), not a dataset"):
        DataLoader((X, y), batch_size=2)


@pytest.mark.skipif(not gl.cuda.is_available(), reason="needs a CUDA device (real or emulated)")
def test_device_none_is_the_cpu_whatever_the_default_device(monkeypatch):
    monkeypatch.setenv("GRADLAB_DEVICE", "cuda")
    assert DataLoader(_ds(4)).device.type == "cpu"
    assert DataLoader(_ds(4), device="auto").device.type == "cuda"


@pytest.mark.skipif(not gl.cuda.is_available(), reason="needs a CUDA device (real or emulated)")
def test_a_transform_on_a_cuda_loader_gets_host_arrays():
    seen = []

    def t(x, rng):
        seen.append(type(x))
        return x

    X = np.arange(8, dtype=np.float32).reshape(4, 2)
    list(DataLoader(TensorDataset(X, np.arange(4)), 2, device="cuda", transform=t))
    assert seen == [np.ndarray, np.ndarray]


def test_a_distributed_sampler_decides_the_order_and_the_length():
    from gradlab.distributed import DistributedSampler
    # rank 1 of 3 over 10 samples: every third index from 1, padded with the first ones
    sampler = DistributedSampler(_ds(10), num_replicas=3, rank=1, shuffle=False)
    assert list(sampler) == [1, 4, 7, 0]
    dl = DataLoader(_ds(10), batch_size=3, sampler=sampler)
    assert dl.sampler is sampler and len(dl) == 2 and _ys(dl) == [[1, 4, 7], [0]]
    dl = DataLoader(_ds(10), batch_size=3, sampler=sampler, drop_last=True)
    assert len(dl) == 1 and _ys(dl) == [[1, 4, 7]]
    shuffled = DistributedSampler(_ds(10), num_replicas=3, rank=1, shuffle=True, seed=4)
    dl = DataLoader(_ds(10), batch_size=4, sampler=shuffled)
    first = _ys(dl)
    assert first == [list(shuffled)]
    shuffled.set_epoch(1)  # as fit does before each epoch: the sampler's new order
    assert _ys(dl) == [list(shuffled)] and _ys(dl) != first


def test_any_sampler_with_set_epoch_is_taken_and_excludes_shuffle():
    class Backwards:
        def __init__(self, n):
            self.n = n

        def set_epoch(self, epoch):
            pass

        def __iter__(self):
            return iter(range(self.n - 1, -1, -2))

        def __len__(self):
            return -(-self.n // 2)

    assert _ys(DataLoader(_ds(5), batch_size=2, sampler=Backwards(5))) == [[4, 2], [0]]
    with pytest.raises(ValueError, match=r"^DataLoader: sampler and shuffle=True exclude each "
                                         r"other; the sampler decides the order "
                                         r"\(DistributedSampler\(shuffle=True\)\)$"):
        DataLoader(_ds(5), shuffle=True, sampler=Backwards(5))
    assert DataLoader(_ds(5)).sampler is None
