"""gl.distributed: 2 ranks on loopback under ``mpiexec`` (mpi4py + the mpich wheel), and the
rank-independent parts (sampler, bucketing, model comparison) in this process."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import gradlab as gl
from gradlab.distributed import DistributedSampler
from gradlab.distributed.ddp import first_mismatch, make_buckets

WORKER = Path(__file__).with_name("worker.py")


def _mpiexec():
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


def _why_no_mpi():
    try:
        import mpi4py  # noqa: F401
    except ImportError as exc:
        return f"mpi4py is not installed ({exc}); `pip install .[mpi]` (make test does it)"
    if _mpiexec() is None:
        return "no mpiexec on PATH or beside the interpreter"
    return None


needs_mpi = pytest.mark.skipif(_why_no_mpi() is not None, reason=str(_why_no_mpi()))


def launch(n, *args, timeout=120, **env):
    full = {**os.environ, "GRADLAB_DEVICE": "cpu", "OMPI_ALLOW_RUN_AS_ROOT": "1",
            "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", **env}
    full.pop("GRADLAB_EMULATE_CUDA_CHILD", None)
    start = time.monotonic()
    proc = subprocess.run([_mpiexec(), "-n", str(n), sys.executable, str(WORKER), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=full)
    proc.seconds = time.monotonic() - start
    return proc


def _ok(proc):
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _weights(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


# -- in this process ------------------------------------------------------------------------
def test_sampler_shards_are_disjoint_cover_the_order_and_reshuffle_per_epoch():
    ds = range(10)
    shards = [DistributedSampler(ds, num_replicas=3, rank=r, seed=5) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]
    order = shards[0].order()
    assert order.tolist()[10:] == order.tolist()[:2]  # padded with its own first indices
    assert sorted(order[:10].tolist()) == list(range(10))
    assert [list(s) for s in shards] == [order[r::3].tolist() for r in range(3)]
    shards[0].set_epoch(1)
    assert list(shards[0]) != order[0::3].tolist()
    assert shards[0].order().tolist()[:10] == np.random.default_rng(6).permutation(10).tolist()
    cut = [DistributedSampler(ds, num_replicas=3, rank=r, seed=5, drop_last=True)
           for r in range(3)]
    assert [len(s) for s in cut] == [3, 3, 3]
    assert sorted(sum((list(s) for s in cut), [])) == sorted(order[:9].tolist())
    plain = DistributedSampler(ds, num_replicas=2, rank=1, shuffle=False)
    assert list(plain) == [1, 3, 5, 7, 9]
    with pytest.raises(ValueError, match=r"rank must be in \[0, 1\]"):
        DistributedSampler(ds, num_replicas=2, rank=2)


def test_the_ranks_batches_together_are_one_process_batches_of_the_same_order():
    ds = gl.data.TensorDataset(np.arange(24, dtype=np.float32), np.arange(24))
    full = DistributedSampler(ds, num_replicas=1, rank=0, seed=2)
    one = [b[1].numpy().tolist() for b in gl.data.DataLoader(ds, batch_size=8, sampler=full)]
    parts = [[b[1].numpy().tolist() for b in gl.data.DataLoader(
        ds, batch_size=4, sampler=DistributedSampler(ds, num_replicas=2, rank=r, seed=2))]
        for r in range(2)]
    assert len(one) == len(parts[0]) == len(parts[1]) == 3
    for k in range(3):
        assert sorted(parts[0][k] + parts[1][k]) == sorted(one[k])
    with pytest.raises(ValueError, match="exclude each other"):
        gl.data.DataLoader(ds, batch_size=4, shuffle=True, sampler=full)


def test_buckets_hold_at_most_the_cap_and_a_big_tensor_alone():
    ts = [gl.zeros(n) for n in (10, 10, 300, 5, 5)]  # float32: 40, 40, 1200, 20, 20 bytes
    buckets = make_buckets(ts, cap_bytes=100)
    assert [[t.numel() for t in b] for b in buckets] == [[10, 10], [300], [5, 5]]
    mixed = make_buckets([gl.zeros(3), gl.zeros(3, dtype=gl.float64), gl.zeros(3)], 1000)
    assert [[t.dtype for t in b] for b in mixed] == [[gl.float32] * 2, [gl.float64]]


def test_first_mismatch_names_the_tensor_and_the_ranks():
    a = [("parameter", "0.weight", (4, 2), "float32"), ("parameter", "0.bias", (4,), "float32")]
    assert first_mismatch([a, list(a)]) is None
    b = [a[0], ("parameter", "0.bias", (3,), "float32")]
    assert first_mismatch([a, b]) == ("parameter '0.bias' has shape (3,) float32 on rank 1 but "
                                      "(4,) float32 on rank 0")
    assert "rank 1 lacks parameter '0.bias'" in first_mismatch([a, a[:1]])
    assert "rank 1 has an extra parameter '0.bias'" in first_mismatch([a[:1], a])


def test_fit_without_a_process_group_refuses_a_ddp_model_alone():
    from gradlab.distributed import DistributedError
    with pytest.raises(DistributedError, match="not initialized"):
        gl.distributed.DistributedDataParallel(gl.nn.Linear(2, 2))
    assert gl.distributed.is_main_process() and not gl.distributed.is_initialized()


# -- 2 ranks under mpiexec ------------------------------------------------------------------
# Measured: after 4 epochs x 8 steps (SGD momentum 0.9, lr 0.1) the weights of 2 ranks at
# local batch 16 differ from 1 rank at batch 32 by at most 1.2e-7 (float32, values O(1)):
# only the order of the gradient sums differs. The bound below leaves 40x room.
TOLERANCE = 5e-6


@needs_mpi
def test_two_ranks_end_where_one_rank_ends_with_the_same_global_batch(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    _ok(launch(1, "fit", one))
    _ok(launch(2, "fit", two))
    w1, w2a, w2b = (_weights(p) for p in (one / "weights-0.npz", two / "weights-0.npz",
                                          two / "weights-1.npz"))
    assert all(np.array_equal(w2a[k], w2b[k]) for k in w2a)  # the ranks agree exactly
    diff = max(float(np.abs(w1[k] - w2a[k]).max()) for k in w1)
    assert diff <= TOLERANCE, diff
    h1, h2 = (json.loads((d / "history-0.json").read_text()) for d in (one, two))
    assert np.allclose(h1["loss"], h2["loss"], rtol=1e-6) and len(h2["loss"]) == 4
    # one bucket per step (+ the agreed finite-loss flag), not one allreduce per tensor
    steps = 4 * 8
    assert h2["allreduce"] <= 2 * steps + 2 * 4 + 1


@needs_mpi
def test_gradients_average_in_buckets_and_batchnorm_statistics_average(tmp_path):
    _ok(launch(2, "units", tmp_path))
    r0, r1 = (json.loads((tmp_path / f"units-{r}.json").read_text()) for r in range(2))
    assert r0["buckets"] == [["0.weight"], ["0.bias", "1.weight", "1.bias", "3.weight",
                                            "3.bias"]]
    assert r0["reduces"] == 2  # one allreduce per bucket, not per tensor (6)
    # grads were (rank + 1) * (i + 1); the last one was None on rank 0 and counts as zero
    assert r0["grads"] == r1["grads"] == [1.5 * (i + 1) for i in range(5)] + [6.0]
    assert r0["running_mean"] == r1["running_mean"] == [1.5, 1.5]
    assert r0["running_var"] == r1["running_var"] == [15.0, 15.0]
    assert r0["tracked"] == 7
    order = r0["order"]
    assert r0["shards"] == [order[0::2], order[1::2]] and len(order) == 12
    assert r0["dropped"] == [order[0:10:2], order[1:10:2]]


@needs_mpi
def test_only_rank_0_writes_checkpoints_and_logs(tmp_path):
    _ok(launch(2, "files", tmp_path))
    assert sorted(os.listdir(tmp_path / "rank1")) == []
    assert not (tmp_path / "rank1-history.csv").exists()
    assert not (tmp_path / "model-1.gl").exists() and (tmp_path / "model-0.gl").exists()
    assert (tmp_path / "rank0" / "history.csv").read_text().count("\n") == 3
    assert os.listdir(tmp_path / "rank0" / "ckpt") == ["ckpt-0000000008.gl"]


@needs_mpi
def test_resume_restores_every_rank_exactly(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    full.mkdir(), cut.mkdir()
    _ok(launch(2, "fit", full, 4))
    _ok(launch(2, "fit", cut, 2, 0, 0, cut / "ckpt"))
    _ok(launch(2, "fit", cut, 4, 0, 1, cut / "ckpt"))
    ref = _weights(full / "weights-0.npz")
    for r in range(2):
        got = _weights(cut / f"weights-{r}.npz")
        assert all(np.array_equal(ref[k], got[k]) for k in ref), r
    assert json.loads((cut / "history-1.json").read_text())["loss"] == \
        json.loads((full / "history-0.json").read_text())["loss"]


@needs_mpi
def test_early_stopping_stops_every_rank_at_the_same_epoch(tmp_path):
    _ok(launch(2, "fit", tmp_path, 20, 0, 0, "", 1))
    h = [json.loads((tmp_path / f"history-{r}.json").read_text()) for r in range(2)]
    assert h[0]["stop_reason"] and h[0]["stop_reason"] == h[1]["stop_reason"]
    assert len(h[0]["loss"]) == len(h[1]["loss"]) < 20


@needs_mpi
def test_ranks_with_different_models_fail_at_start_naming_the_first_mismatch(tmp_path):
    proc = launch(2, "mismatch", tmp_path, timeout=60)
    assert proc.returncode != 0
    want = ("DistributedDataParallel: the ranks build different models: parameter "
            "'0.weight' has shape (12, 8) float32 on rank 1 but (16, 8) float32 on rank 0")
    for r in range(2):
        assert (tmp_path / f"error-{r}.txt").read_text().startswith(want)


@needs_mpi
def test_a_killed_rank_ends_the_job_within_seconds(tmp_path):
    proc = launch(2, "die", tmp_path, "kill", timeout=60, GRADLAB_DIST_TIMEOUT="5")
    died = float((tmp_path / "died-at").read_text())
    assert proc.returncode != 0
    # mpiexec (MPICH's hydra) sees the SIGKILL and kills the other rank at once
    assert "BAD TERMINATION" in proc.stdout + proc.stderr
    assert "Killed (signal 9)" in proc.stdout + proc.stderr
    assert time.time() - died < 30


@needs_mpi
def test_a_hung_rank_times_the_others_out_with_a_clear_error(tmp_path):
    proc = launch(2, "die", tmp_path, "stop", timeout=60, GRADLAB_DIST_TIMEOUT="3")
    assert proc.returncode != 0
    died = float((tmp_path / "died-at").read_text())
    at, message = (tmp_path / "error-0.txt").read_text().split("\n", 1)
    assert 2.9 <= float(at) - died < 15, float(at) - died
    assert message.startswith("rank 0 of 2: allreduce(") and \
        "did not complete within 3 s: another rank has died, hung" in message
    assert "CollectiveTimeout" in proc.stderr


@needs_mpi
def test_cli_distributed_train_on_2_ranks_matches_1_rank(tmp_path):
    # --val-split 0 leaves 1438 training rows: even, so the sampler pads nothing and the
    # 2 ranks' steps see exactly the rows of the 1-rank steps (without BatchNorm, whose batch
    # statistics are per rank).
    def train(n, out):
        full = {**os.environ, "GRADLAB_DEVICE": "cpu"}
        full.pop("GRADLAB_EMULATE_CUDA_CHILD", None)
        gradlab = str(Path(sys.executable).parent / "gradlab")
        return subprocess.run([_mpiexec(), "-n", str(n), gradlab, "train", "--distributed",
                               "--no-batchnorm", "--epochs", "2", "--hidden", "32",
                               "--val-split", "0",
                               "--out", str(out), "--quiet"],
                              capture_output=True, text=True, timeout=180, env=full)
    one, two = train(1, tmp_path / "one"), train(2, tmp_path / "two")
    assert one.returncode == two.returncode == 0, one.stderr + two.stderr
    assert two.stdout.count("test accuracy:") == 1  # rank 0 prints, rank 1 is silent
    m1, m2 = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    assert m2["world_size"] == 2 and "world_size" not in m1
    assert abs(m1["test_loss"] - m2["test_loss"]) < 1e-5
    h1, h2 = ((tmp_path / d / "history.csv").read_text().splitlines() for d in ("one", "two"))
    assert len(h1) == len(h2) == 3
    again = train(1, tmp_path / "two")  # resuming a 2-rank run on 1 rank is refused
    assert again.returncode == 2 and "holds run" in again.stderr
