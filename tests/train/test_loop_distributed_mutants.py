"""fit's distributed-training paths, in one process: the model is a stand-in for
DistributedDataParallel (it has sync_gradients/sync_buffers) and the process group is a
stand-in world whose other ranks' contributions are scripted, so each test can say what the
other ranks did and check what fit made of it: gradients averaged before each step, the
epoch's totals summed over the ranks, a non-finite loss on any rank handled on all, rank 0's
stop decision followed, only rank 0 writing, the resume step compared across ranks, the
sampler's epoch. `make mutate` found these unchecked in gradlab/train/loop.py; the real
2-rank runs are in tests/distributed (mpiexec, not part of the mutation runner)."""
import importlib
import io
import os

import numpy as np
import pytest
from test_loop_mutants import tqdm_process_local

import gradlab as gl
from gradlab import nn
from gradlab.data import DataLoader, TensorDataset
from gradlab.distributed import DistributedError, DistributedSampler
from gradlab.train import Callback, NonFiniteLossError, fit
from gradlab.train import checkpoint as ckpt
from gradlab.train import loop as L

_group = importlib.import_module("gradlab.distributed.group")


class _World:
    """The process group as rank ``rank`` of ``size`` ranks sees it.

    - ``bad_votes``: the finiteness votes (1-based, one per batch) that another rank fails;
    - ``others_totals``: what the other ranks add to [count, loss total, metric totals...];
    - ``others_step``: the checkpoint step the other ranks resumed at (default: the same);
    - ``rank0_says``: on rank > 0, the (stop_training, stop_reason) rank 0 broadcasts."""

    def __init__(self, rank=0, size=2, *, bad_votes=(), others_totals=None, others_step=None,
                 rank0_says=(False, None)):
        self.rank, self.world_size, self.mpi, self.broken = rank, size, self, None
        self.bad_votes, self.votes = set(bad_votes), 0
        self.others_totals, self.others_step, self.rank0_says = others_totals, others_step, \
            rank0_says
        self.broadcasts = []

    def allreduce(self, array, op):
        if op == "max":
            self.votes += 1
            if self.votes in self.bad_votes:
                array[...] = np.maximum(array, 1)
        elif op == "sum" and self.others_totals is not None:
            array += np.asarray(self.others_totals, dtype=array.dtype)
        return array

    def allgather_object(self, value):
        other = value if self.others_step is None else self.others_step
        return [value if r == self.rank else other for r in range(self.world_size)]

    def broadcast_object(self, obj, root=0):
        self.broadcasts.append(obj)
        return obj if self.rank == root else self.rank0_says


@pytest.fixture(autouse=True)
def _tqdm_bars_local_to_this_process(monkeypatch):
    tqdm_process_local(monkeypatch)


@pytest.fixture
def world(monkeypatch):
    """Install a stand-in world (as init_process_group would) and return it."""
    def install(*args, **kw):
        w = _World(*args, **kw)
        monkeypatch.setattr(_group, "_GROUP", w)
        return w
    monkeypatch.setattr(_group, "_GROUP", None)
    return install


class _Probe(nn.Module):
    """Linear(2, 2) that records what fit calls, in order, and the rows it trains on."""

    def __init__(self, seed=0):
        super().__init__()
        gl.manual_seed(seed)
        self.module = nn.Linear(2, 2)
        self.events, self.seen = [], []

    def forward(self, x):
        self.events.append("forward" if self.training else "eval forward")
        if self.training:
            self.seen.append(x.numpy().copy())
        return self.module(x)


class _Replica(_Probe):
    """A DistributedDataParallel stand-in: its gradient allreduce is the average with ranks
    whose gradients are zero (``scale`` = 1 / world size)."""

    def __init__(self, scale=1.0, seed=0):
        super().__init__(seed)
        self.scale = scale

    def sync_gradients(self):
        self.events.append("sync_gradients")
        for p in self.module.parameters():
            p.grad = p.grad * self.scale

    def sync_buffers(self):
        self.events.append("sync_buffers")


def _data(n=8):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 2)).astype(np.float32)
    return X, (X[:, 0] > 0).astype(np.int64)


def _loader(n=8, batch_size=4):
    return DataLoader(TensorDataset(*_data(n)), batch_size=batch_size)


def _fit(model, lr=0.1, epochs=1, **kw):
    return fit(model, nn.CrossEntropyLoss(), gl.optim.SGD(model.parameters(), lr=lr),
               kw.pop("train", None) or _loader(), epochs=epochs, verbose=kw.pop("verbose", 0),
               **kw)


def _weights(model):
    return [p.detach().numpy().copy() for p in model.parameters()]


def test_a_replica_needs_an_initialized_process_group(world):
    with pytest.raises(DistributedError, match=r"^the default process group is not "
                                               r"initialized: call gl.distributed."
                                               r"init_process_group\('mpi'\) first"):
        _fit(_Replica())


def test_compile_is_refused_for_a_distributed_model(world):
    world()
    with pytest.raises(ValueError, match=r"^fit: compile=True is not supported for a "
                                         r"DistributedDataParallel model \(the compiled step "
                                         r"has no place for the gradient allreduce\); train it "
                                         r"eagerly$"):
        _fit(_Replica(), compile=True)


def test_gradients_are_averaged_before_each_step_and_buffers_before_validation(world):
    world()
    model = _Replica(scale=0.5)  # a second rank whose gradients are zero: half of ours
    _fit(model, lr=0.1, epochs=2, val_loader=_loader(8, 8))
    gl.manual_seed(0)
    plain = nn.Linear(2, 2)
    _fit(plain, lr=0.05, epochs=2)
    for got, want in zip(_weights(model.module), _weights(plain)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    epoch = ["forward", "sync_gradients"] * 2 + ["sync_buffers", "eval forward"]
    assert model.events == epoch * 2


def test_the_epochs_loss_and_metrics_are_summed_over_the_ranks(world):
    # The other rank saw 10 rows with loss 0 and all of them right.
    world(others_totals=[10.0, 0.0, 10.0])
    model = _Replica()
    h = _fit(model, lr=0.0)
    gl.manual_seed(0)
    alone = _fit(nn.Linear(2, 2), lr=0.0)
    assert h["loss"] == pytest.approx([alone["loss"][0] * 8 / 18], rel=1e-12)
    assert h["accuracy"] == pytest.approx([(alone["accuracy"][0] * 8 + 10) / 18], rel=1e-12)


def test_a_nonfinite_loss_on_another_rank_is_handled_here_too(world):
    world(bad_votes={2})  # epoch 1, batch 2 is non-finite on the other rank only
    model = _Replica()
    before = _weights(model)
    with pytest.raises(NonFiniteLossError) as e:
        _fit(model, epochs=2)
    assert str(e.value) == ("loss is non-finite on another rank at epoch 1, batch 2; the "
                            "weights were not updated with it (try a lower learning rate, "
                            "gradient clipping, or check the data for NaN/Inf)")
    assert (e.value.epoch, e.value.batch) == (1, 2)
    assert model.events == ["forward", "sync_gradients", "forward"]  # one step, not two
    assert not np.array_equal(_weights(model)[0], before[0])

    world(bad_votes={2})
    model = _Replica()
    h = _fit(model, lr=0.0, on_nonfinite="skip_batch")
    X, y = _data()
    gl.manual_seed(0)
    first = _fit(nn.Linear(2, 2), lr=0.0, train=DataLoader(TensorDataset(X[:4], y[:4]),
                                                             batch_size=4))
    assert h["loss"] == pytest.approx(first["loss"], rel=1e-12)  # batch 2 left out here too
    assert model.events.count("sync_gradients") == 1

    world(bad_votes={3})
    h = _fit(_Replica(), epochs=3, on_nonfinite="stop")
    assert len(h) == 1 and h.stop_reason.startswith("loss is non-finite on another rank at "
                                                    "epoch 2, batch 1;")


def test_a_nonfinite_loss_on_this_rank_is_named_by_its_value(world):
    world()

    def loss(out, y):
        return nn.CrossEntropyLoss()(out, y) * float("inf")

    model = _Replica()
    with pytest.raises(NonFiniteLossError, match=r"^loss is inf at epoch 1, batch 1;"):
        fit(model, loss, gl.optim.SGD(model.parameters(), lr=0.1), _loader(), epochs=1,
            verbose=0)


class _StopsAt(Callback):
    """Asks to stop after epoch ``at``, and records what the run says of this process."""

    def __init__(self, at):
        self.at, self.main = at, []

    def on_train_begin(self):
        self.main.append(self.run.main_process)

    def on_epoch_end(self, epoch, logs):
        if epoch == self.at:
            self.run.stop_training, self.run.stop_reason = True, f"asked at {epoch}"


def test_every_rank_stops_where_rank_0_decides(world):
    w = world(rank=0)
    h = _fit(_Replica(), epochs=3, callbacks=[_StopsAt(2)])
    assert len(h) == 2 and h.stop_reason == "asked at 2"
    assert w.broadcasts == [(False, None), (True, "asked at 2")]
    # Rank 1 follows rank 0's decision, not its own.
    world(rank=1, rank0_says=(True, "early stopping at epoch 1 (rank 0)"))
    h = _fit(_Replica(), epochs=3)
    assert len(h) == 1 and h.stop_reason == "early stopping at epoch 1 (rank 0)"
    world(rank=1, rank0_says=(False, None))
    h = _fit(_Replica(), epochs=3, callbacks=[_StopsAt(1)])
    assert len(h) == 3 and h.stop_reason is None


def test_only_rank_0_writes_checkpoints_and_prints(world, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(L.sys.stderr, "isatty", lambda: True, raising=False)
    for rank in (1, 0):
        world(rank=rank)
        seen = _StopsAt(None)
        _fit(_Replica(), epochs=1, verbose=2, checkpoint_dir=tmp_path / str(rank),
             callbacks=[seen])
        out = capsys.readouterr()
        assert seen.main == [rank == 0]
        if rank:
            assert out.out == "" and out.err == ""
            assert ckpt.list_checkpoints(tmp_path / "1") == []
        else:
            assert out.out.startswith("epoch 1/1  loss ")
            assert len(ckpt.list_checkpoints(tmp_path / "0")) == 1
    # verbose=1 on a terminal: a bar and the summary on stderr, on rank 0 only.
    pytest.importorskip("tqdm")
    for rank in (1, 0):
        world(rank=rank)
        _fit(_Replica(), epochs=1, verbose=1)
        err = capsys.readouterr().err
        assert (err == "") == (rank == 1)
        if rank == 0:
            assert "epoch 1/1:" in err and "batch" in err


def test_resuming_checks_that_every_rank_read_the_same_checkpoint(world, tmp_path):
    world()
    _fit(_Replica(), epochs=1, checkpoint_dir=tmp_path, checkpoint_every=1)
    assert ckpt.latest(tmp_path)[1]["step"] == 2
    world(others_step=1)
    with pytest.raises(DistributedError, match=r"^resume: the checkpoint step differs between "
                                               r"ranks: rank 0: 2, rank 1: 1; every rank must "
                                               r"read the same checkpoint directory$"):
        _fit(_Replica(), epochs=2, checkpoint_dir=tmp_path, resume=True)
    # One rank (mpiexec -n 1), or ranks that agree: the run goes on.
    for size in (1, 2):
        world(size=size)
        h = _fit(_Replica(), epochs=1 + size, checkpoint_dir=tmp_path, resume=True)
        assert h["epoch"] == list(range(1, 2 + size))


def test_each_epoch_trains_on_the_samplers_shard_of_that_epochs_order():
    X, y = _data(12)
    ds = TensorDataset(X, y)

    def sampler():
        return DistributedSampler(ds, num_replicas=2, rank=1, shuffle=True, seed=5)

    model = _Probe()  # no process group needed: fit calls set_epoch in any run
    _fit(model, epochs=3, train=DataLoader(ds, batch_size=3, sampler=sampler()))
    for epoch in range(3):
        s = sampler()
        s.set_epoch(epoch)
        rows = np.concatenate(model.seen[2 * epoch:2 * epoch + 2])
        assert np.array_equal(rows, X[list(s)]), epoch
    assert not np.array_equal(model.seen[0], model.seen[2])  # a new order each epoch


def test_a_loader_whose_sampler_has_no_set_epoch_is_used_as_it_is():
    class Batches(list):
        sampler = object()

    X, y = _data(4)
    model = nn.Linear(2, 2)
    h = _fit(model, epochs=2, train=Batches([(gl.tensor(X), gl.tensor(y))]))
    assert h["epoch"] == [1, 2]


def test_the_summary_line_is_flushed_at_the_end_of_each_epoch(monkeypatch):
    class Stream(io.StringIO):
        def __init__(self):
            super().__init__()
            self.flushed = []

        def flush(self):
            self.flushed.append(self.getvalue())

    out = Stream()
    monkeypatch.setattr(L.sys, "stdout", out)
    _fit(nn.Linear(2, 2), epochs=2, verbose=2)
    lines = out.getvalue().splitlines()
    assert [ln.split("  ")[0] for ln in lines] == ["epoch 1/2", "epoch 2/2"]
    # A log being followed (tail -f, a notebook) gets each line when its epoch ends.
    assert lines[0] + "\n" in out.flushed and out.getvalue() in out.flushed


def test_a_hand_built_run_is_a_single_process_run(tmp_path):
    from gradlab.train import ModelCheckpoint
    from gradlab.train.history import History
    model = nn.Linear(2, 2)
    run = L.Run(model, None, None, History(), None, 3)
    assert (run.epoch, run.step, run.stop_training, run.stop_reason, run.main_process) == \
        (0, 0, False, None, True)
    cb = ModelCheckpoint(tmp_path / "m.gl", save_best_only=False)
    cb.set_run(run)
    cb.on_epoch_end(1, {"epoch": 1, "loss": 1.0})
    assert os.path.exists(tmp_path / "m.gl")
