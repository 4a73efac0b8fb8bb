"""Crash-safe checkpoints: real processes killed with SIGKILL and resumed must end with the
same weights, bit for bit, as a run never interrupted; bad checkpoint files are refused."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import gradlab as gl
from gradlab.serialization import SerializationError
from gradlab.train import checkpoint as ckpt

# One training run: shuffling with per-epoch transform noise (the loader's generator),
# dropout (the backend's RNG), Adam and a per-batch OneCycleLR (optimizer and scheduler
# state), EarlyStopping (callback state). A callback sleeps a little per batch so the
# parent can kill the process at a chosen checkpoint rather than after it has finished.
WORKER = r"""
import sys, time
import numpy as np
import gradlab as gl
from gradlab.data import DataLoader, TensorDataset, make_spirals
from gradlab.train import Callback, EarlyStopping, fit

out, resume, delay = sys.argv[1], sys.argv[2] == "resume", float(sys.argv[3])
EPOCHS, BATCH = 3, 20

class Slow(Callback):
    def on_batch_end(self, batch, loss):
        time.sleep(delay)

def jitter(x, rng):
    return (x + rng.normal(0, 0.01, x.shape)).astype(x.dtype)

gl.manual_seed(7)
X, y = make_spirals(240, seed=1)
loader = DataLoader(TensorDataset(X.astype(np.float32), y), batch_size=BATCH, shuffle=True,
                    seed=3, transform=jitter)
model = gl.nn.Sequential(gl.nn.Linear(2, 32), gl.nn.ReLU(), gl.nn.Dropout(0.2),
                         gl.nn.Linear(32, 2))
opt = gl.optim.Adam(model.parameters(), lr=1e-2)
sched = gl.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-2, total_steps=EPOCHS * len(loader))
fit(model, gl.nn.CrossEntropyLoss(), opt, loader, epochs=EPOCHS, scheduler=sched,
    callbacks=[EarlyStopping(monitor="loss", patience=5), Slow()], verbose=0,
    checkpoint_dir=out, checkpoint_every=1, resume=resume)
np.savez(out + "/final.npz", **{k: v.numpy() for k, v in model.state_dict().items()})
"""
STEPS = 3 * 12  # epochs * batches per epoch (240 samples, batch 20)


def _start(out, resume, delay):
    return subprocess.Popen([sys.executable, "-c", WORKER, str(out),
                             "resume" if resume else "fresh", str(delay)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc):
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    return stdout


def _steps_saved(out):
    return [int(os.path.basename(p)[5:15]) for p in ckpt.list_checkpoints(out)]


def _kill_after(proc, out, step):
    """SIGKILL ``proc`` as soon as the checkpoint of ``step`` (or a later one) exists."""
    deadline = time.monotonic() + 30
    while not any(s >= step for s in _steps_saved(out)):
        assert proc.poll() is None, f"worker exited early: {proc.communicate()[1]}"
        assert time.monotonic() < deadline, "no checkpoint appeared in time"
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL


def _weights(out):
    with np.load(os.path.join(out, "final.npz")) as f:
        return {k: f[k] for k in f.files}


def test_sigkilled_and_resumed_run_is_bitwise_equal_to_an_uninterrupted_one(tmp_path):
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    reference = _start(ref_dir, resume=False, delay=0.0)
    # Mid first epoch, the first epoch's last batch (before its end-of-epoch work), mid
    # second, late third: each resumed process is killed again, so resuming a resumed run
    # is covered too.
    kill_points = [3, 12, 20, 30]
    proc = _start(run_dir, resume=False, delay=0.01)
    _kill_after(proc, run_dir, kill_points[0])
    reached = [max(_steps_saved(run_dir))]
    for point in kill_points[1:]:
        proc = _start(run_dir, resume=True, delay=0.01)
        _kill_after(proc, run_dir, max(point, reached[-1] + 1))
        reached.append(max(_steps_saved(run_dir)))
    assert all(s < STEPS for s in reached), f"killed too late to test anything: {reached}"
    print(f"killed after the checkpoints of steps {reached} of {STEPS}")
    _finish(_start(run_dir, resume=True, delay=0.0))
    _finish(reference)

    ref, got = _weights(ref_dir), _weights(run_dir)
    assert ref.keys() == got.keys()
    for k in ref:
        assert np.array_equal(ref[k], got[k]), f"{k} differs after kills at steps {reached}"
    # The final checkpoint marks the run finished; the History went through every epoch.
    _, state = ckpt.latest(run_dir)
    assert state["finished"] and state["step"] == STEPS
    assert [r["epoch"] for r in state["history"]["epochs"]] == [1, 2, 3]


# -- in-process: corrupt, truncated, foreign and newer checkpoint files ---------------------
def _tiny_fit(directory, resume=False, epochs=2, every=2, compile=False):
    gl.manual_seed(0)
    X = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    loader = gl.data.DataLoader(gl.data.TensorDataset(X, y), batch_size=10, shuffle=True,
                                seed=1)
    model = gl.nn.Sequential(gl.nn.Linear(3, 4), gl.nn.ReLU(), gl.nn.Linear(4, 2))
    opt = gl.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    gl.train.fit(model, gl.nn.CrossEntropyLoss(), opt, loader, epochs=epochs, verbose=0,
                 checkpoint_dir=directory, checkpoint_every=every, resume=resume,
                 compile=compile)
    return {k: v.numpy().copy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("compile", [False, True])
def test_in_process_resume_from_a_mid_run_checkpoint_matches(tmp_path, compile):
    # (compile: the resumed run records its step anew and still ends with the eager bits)
    full = _tiny_fit(tmp_path / "a")
    _tiny_fit(tmp_path / "b", epochs=1, every=3, compile=compile)  # stops mid-way
    # A one-epoch run's final checkpoint is "finished"; rewrite it as a 2-epoch run's
    # mid-point by resuming from its last mid-epoch checkpoint instead.
    paths = ckpt.list_checkpoints(tmp_path / "b")
    os.unlink(paths[-1])
    got = _tiny_fit(tmp_path / "b", resume=True, every=3, compile=compile)
    for k in full:
        assert np.array_equal(full[k], got[k]), k


def _corrupt(path, how):
    data = bytearray(open(path, "rb").read())
    if how == "flip":
        data[-3] ^= 0xFF  # a byte of the last tensor's data (safetensors keeps data last)
    elif how == "truncate":
        data = data[: len(data) // 3]
    elif how == "newer":
        data = data.replace(b'"gradlab.format":"2"', b'"gradlab.format":"9"')
    elif how == "foreign":
        data = b"\x80\x04\x95 this is a pickle, not a gradlab file"
    with open(path, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("how,words", [("flip", "checksum"), ("truncate", "truncated"),
                                       ("newer", "newer"), ("foreign", "not a gradlab")])
def test_unusable_latest_checkpoint_is_refused_and_the_previous_one_used(tmp_path, how,
                                                                        words):
    _tiny_fit(tmp_path, epochs=1)
    paths = ckpt.list_checkpoints(tmp_path)
    assert len(paths) == 2  # the newest and the one before it are kept
    previous_bytes = open(paths[0], "rb").read()
    _corrupt(paths[-1], how)
    with pytest.raises(SerializationError, match=words):
        ckpt.read(paths[-1])
    with pytest.warns(RuntimeWarning, match="skipping unusable checkpoint"):
        path, state = ckpt.latest(tmp_path)
    assert path == paths[0] and not state["finished"]
    # The good checkpoint is untouched by the refusal.
    assert open(paths[0], "rb").read() == previous_bytes


def test_resume_with_every_checkpoint_unusable_is_an_error_naming_them(tmp_path):
    _tiny_fit(tmp_path, epochs=1)
    for p in ckpt.list_checkpoints(tmp_path):
        _corrupt(p, "flip")
    with pytest.warns(RuntimeWarning), pytest.raises(ckpt.CheckpointError,
                                                      match="no usable checkpoint"):
        _tiny_fit(tmp_path, epochs=1, resume=True)


def test_resume_removes_a_partial_write_left_by_a_kill_and_ignores_it(tmp_path):
    _tiny_fit(tmp_path, epochs=1)
    good = ckpt.list_checkpoints(tmp_path)[-1]
    partial = tmp_path / ".ckpt-0000000099.gl.k3j2x.tmp"  # gl.save's temporary name
    partial.write_bytes(open(good, "rb").read()[:100])
    path, _ = ckpt.latest(tmp_path)
    assert path == good and not partial.exists()


def test_a_gradlab_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    gl.save({"weight": gl.zeros(2)}, tmp_path / "ckpt-0000000001.gl")
    with pytest.raises(ckpt.CheckpointError, match="not a training checkpoint"):
        ckpt.read(tmp_path / "ckpt-0000000001.gl")


def test_resume_without_checkpoints_or_with_other_callbacks_says_what_to_do(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint"):
        _tiny_fit(tmp_path / "empty", resume=True)
    _tiny_fit(tmp_path / "run", epochs=1)
    gl.manual_seed(0)
    X = np.zeros((10, 3), np.float32)
    loader = gl.data.DataLoader(gl.data.TensorDataset(X, np.zeros(10, np.int64)),
                                batch_size=10)
    model = gl.nn.Sequential(gl.nn.Linear(3, 4), gl.nn.ReLU(), gl.nn.Linear(4, 2))
    with pytest.raises(ckpt.CheckpointError, match="same callbacks"):
        gl.train.fit(model, gl.nn.CrossEntropyLoss(), gl.optim.SGD(model.parameters(), lr=1),
                     loader, epochs=1, verbose=0, callbacks=[gl.train.EarlyStopping("loss")],
                     checkpoint_dir=tmp_path / "run", resume=True)


def test_a_checkpoint_naming_the_scheduler_callback_by_its_old_name_resumes(tmp_path):
    """The callback that steps a scheduler was LRScheduler before it was renamed (that is
    the schedulers' base class, as in PyTorch); checkpoints that name it so still resume."""
    def run(directory, epochs, resume=False):
        gl.manual_seed(0)
        X = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
        loader = gl.data.DataLoader(gl.data.TensorDataset(X, (X[:, 0] > 0).astype(np.int64)),
                                    batch_size=10)
        model = gl.nn.Linear(3, 2)
        opt = gl.optim.SGD(model.parameters(), lr=0.1)
        sched = gl.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        history = gl.train.fit(model, gl.nn.CrossEntropyLoss(), opt, loader, epochs=epochs,
                               scheduler=sched, verbose=0, checkpoint_dir=directory,
                               checkpoint_every=2, resume=resume)
        return history, sched
    run(tmp_path, epochs=1)
    path, state = ckpt.latest(tmp_path)
    assert state["callback_types"] == ["LRSchedulerCallback"]
    state = {k: v for k, v in state.items() if k not in ("kind", "version")}
    os.unlink(path)
    ckpt.write(tmp_path, {**state, "callback_types": ["LRScheduler"]})
    history, sched = run(tmp_path, epochs=2, resume=True)
    assert len(history) == 2 and sched.get_last_lr() == [0.1 * 0.5 ** 2]


def test_rng_state_of_a_backend_without_a_portable_generator_state_keeps_its_streams(tmp_path):
    # CuPy's generators have no portable state (bit_generator.state is a method there):
    # the checkpoint must still save, and keep the seed and the Philox stream position.
    from gradlab.backend import cpu_backend

    class NoState:
        class bit_generator:
            @staticmethod
            def state():
                return "device pointer"

    r = cpu_backend().random
    saved_generator = r.generator
    try:
        r.take_philox(123)
        r.generator = NoState()
        states = ckpt.rng_states()
        gl.save(states, tmp_path / "rng.gl")  # serializable
        r.take_philox(1000)
        ckpt.restore_rng(states)
        assert r.philox_offset == 123 and r.philox_key == 0  # (conftest seeds with 0)
    finally:
        r.generator = saved_generator


def test_checkpoint_every_needs_a_directory():
    model = gl.nn.Linear(3, 2)
    loader = gl.data.DataLoader(gl.data.TensorDataset(np.zeros((4, 3), np.float32),
                                                      np.zeros(4, np.int64)))
    with pytest.raises(ValueError, match="checkpoint_dir"):
        gl.train.fit(model, gl.nn.CrossEntropyLoss(), gl.optim.SGD(model.parameters(), lr=1),
                     loader, checkpoint_every=5)


# -- the CLI: `gradlab train --out DIR`, killed, then `gradlab train --resume DIR` ----------
def _cli(*args):
    return subprocess.Popen([sys.executable, "-m", "gradlab", "train", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_cli_train_killed_then_resumed_matches_an_uninterrupted_run(tmp_path):
    options = ["--dataset", "spirals", "--epochs", "12", "--checkpoint-every", "7",
               "--dropout", "0.1", "--schedule", "cosine", "--quiet"]
    reference = _cli(*options, "--out", str(tmp_path / "ref"))
    killed = _cli(*options, "--out", str(tmp_path / "run"))
    _kill_after(killed, tmp_path / "run", 30)
    assert not os.path.exists(tmp_path / "run" / "metrics.json")  # really stopped mid-run
    resumed = _cli("--resume", str(tmp_path / "run"), "--quiet")
    assert _finish(resumed).startswith("test accuracy")
    _finish(reference)
    ref = gl.load(tmp_path / "ref" / "best_model.gl")
    got = gl.load(tmp_path / "run" / "best_model.gl")
    for k in ref:
        assert np.array_equal(ref[k].numpy(), got[k].numpy()), k
    ref_hist = open(tmp_path / "ref" / "history.csv").read().splitlines()
    got_hist = open(tmp_path / "run" / "history.csv").read().splitlines()
    assert len(ref_hist) == len(got_hist) == 13


def test_cli_resume_of_a_directory_without_a_run_says_so(tmp_path):
    proc = _cli("--resume", str(tmp_path))
    proc.communicate(timeout=60)
    assert proc.returncode == 2


def test_cli_run_killed_before_its_first_checkpoint_resumes_from_step_0(tmp_path):
    # A checkpoint interval longer than the run: the only checkpoint would be the final one,
    # so killing as soon as the manifest exists stops the run before any checkpoint.
    options = ["--dataset", "spirals", "--epochs", "6", "--checkpoint-every", "100000",
               "--dropout", "0.1", "--quiet"]
    reference = _cli(*options, "--out", str(tmp_path / "ref"))
    run = tmp_path / "run"
    killed = _cli(*options, "--out", str(run))
    deadline = time.monotonic() + 60
    while not (run / "gradlab-run.json").exists():
        assert killed.poll() is None, f"worker exited early: {killed.communicate()[1]}"
        assert time.monotonic() < deadline, "no manifest appeared in time"
        time.sleep(0.002)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(timeout=10)
    assert not ckpt.list_checkpoints(run) and not (run / "metrics.json").exists()
    resumed = _cli("--resume", str(run))
    out = _finish(resumed)
    assert "starting it over from step 0" in out and "test accuracy" in out
    _finish(reference)
    ref = gl.load(tmp_path / "ref" / "best_model.gl")
    got = gl.load(run / "best_model.gl")
    for k in ref:
        assert np.array_equal(ref[k].numpy(), got[k].numpy()), k
