"""Child processes on the CUDA device: the CLI and a SIGKILLed-and-resumed training run.

A child has no CuPy stand-in of its own; ``devices.child_env()`` gives it one (through
``tests/cuda_emulator/site/sitecustomize.py``) when this process runs on the emulated device,
and nothing on a machine with a real GPU."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import devices
import gradlab as gl
from gradlab.train import checkpoint as ckpt

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not gl.cuda.is_available(),
                                 reason=f"no CUDA device: {gl.cuda.unavailable_reason()}")]


def test_child_sees_the_same_cuda_device():
    code = ("import gradlab as gl, cupy; print(gl.cuda.is_available(), "
            "cupy.cuda.runtime.getDeviceProperties(0)['name'].decode())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=devices.child_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    available, name = proc.stdout.strip().split(" ", 1)
    assert available == "True"
    assert (name == "gradlab emulated CUDA device") == devices.EMULATED


def test_cli_trains_on_cuda():
    proc = subprocess.run([sys.executable, "-m", "gradlab", "train", "--device", "cuda",
                           "--epochs", "3"], capture_output=True, text=True,
                          env=devices.child_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "on cuda:0" in proc.stdout.splitlines()[0]
    line = proc.stdout.strip().splitlines()[-1]
    assert line.startswith("test accuracy: ") and float(line.split()[2]) > 0.85, line


# Dropout (the CUDA backend's Philox stream), shuffling (the loader's generator), Adam and a
# OneCycleLR: everything a checkpoint must restore for a bitwise resume on the device.
WORKER = r"""
import sys, time
import numpy as np
import gradlab as gl
from gradlab.data import DataLoader, TensorDataset, make_spirals
from gradlab.train import Callback, fit

out, resume, delay = sys.argv[1], sys.argv[2] == "resume", float(sys.argv[3])

class Slow(Callback):
    def on_batch_end(self, batch, loss):
        time.sleep(delay)

gl.manual_seed(7)
X, y = make_spirals(240, seed=1)
loader = DataLoader(TensorDataset(X.astype(np.float32), y), batch_size=20, shuffle=True, seed=3)
model = gl.nn.Sequential(gl.nn.Linear(2, 32), gl.nn.ReLU(), gl.nn.Dropout(0.2),
                         gl.nn.Linear(32, 2)).to("cuda")
opt = gl.optim.Adam(model.parameters(), lr=1e-2)
sched = gl.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-2, total_steps=3 * len(loader))
fit(model, gl.nn.CrossEntropyLoss(), opt, loader, epochs=3, scheduler=sched, callbacks=[Slow()],
    verbose=0, device="cuda", checkpoint_dir=out, checkpoint_every=1, resume=resume)
assert next(model.parameters()).device.type == "cuda"
np.savez(out + "/final.npz", **{k: v.detach().cpu().numpy() for k, v in model.state_dict().items()})
"""
STEPS = 3 * 12


def _start(out, resume, delay):
    return subprocess.Popen([sys.executable, "-c", WORKER, str(out),
                             "resume" if resume else "fresh", str(delay)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=devices.child_env())


def _steps_saved(out):
    return [int(os.path.basename(p)[5:15]) for p in ckpt.list_checkpoints(out)]


def _kill_after(proc, out, step):
    deadline = time.monotonic() + 60
    while not any(s >= step for s in _steps_saved(out)):
        assert proc.poll() is None, f"worker exited early: {proc.communicate()[1]}"
        assert time.monotonic() < deadline, "no checkpoint appeared in time"
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def _finish(proc, out):
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    with np.load(os.path.join(out, "final.npz")) as f:
        return {k: f[k] for k in f.files}


def test_sigkilled_and_resumed_cuda_run_is_bitwise_equal_to_an_uninterrupted_one(tmp_path):
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    reference = _start(ref_dir, resume=False, delay=0.0)
    proc = _start(run_dir, resume=False, delay=0.02)
    _kill_after(proc, run_dir, 5)
    killed_at = [max(_steps_saved(run_dir))]
    proc = _start(run_dir, resume=True, delay=0.02)
    _kill_after(proc, run_dir, 20)  # mid second epoch, after a resume
    killed_at.append(max(_steps_saved(run_dir)))
    assert killed_at[-1] < STEPS, f"killed too late to test anything: {killed_at}"
    got = _finish(_start(run_dir, resume=True, delay=0.0), run_dir)
    ref = _finish(reference, ref_dir)
    assert ref.keys() == got.keys()
    for k in ref:
        assert np.array_equal(ref[k], got[k]), f"{k} differs after kills at {killed_at}"
    _, state = ckpt.latest(run_dir)
    assert state["finished"] and state["step"] == STEPS
