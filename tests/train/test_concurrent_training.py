"""Two threads training two models at once: neither corrupts the other's grad mode, random
stream, data order or optimizer state, so each ends bitwise equal to the same run done
alone on one thread."""
import threading

import numpy as np

import gradlab as gl
from gradlab import nn
from gradlab.data import DataLoader, TensorDataset, make_moons
from gradlab.train import Callback, fit


class _Lockstep(Callback):
    """Makes the two threads alternate batch by batch, so their steps really interleave
    (a barrier wait at every batch end) instead of one finishing before the other starts."""

    def __init__(self, barrier):
        self.barrier = barrier

    def on_batch_end(self, batch, logs):
        if self.barrier is not None:
            self.barrier.wait(timeout=60)


def _train(seed, barrier=None):
    gl.manual_seed(seed)  # this thread's stream only
    X, y = make_moons(256, noise=0.2, seed=seed)
    X = ((X - X.mean(0)) / X.std(0)).astype(np.float32)
    ds = TensorDataset(X, y)
    loader = DataLoader(ds, batch_size=32, shuffle=True, seed=seed)
    val = DataLoader(ds, batch_size=128)  # evaluation runs under no_grad in this thread
    model = nn.Sequential(nn.Linear(2, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.3),
                          nn.Linear(32, 2))
    opt = gl.optim.Adam(model.parameters(), lr=0.01)
    fit(model, nn.CrossEntropyLoss(), opt, loader, val, epochs=3, verbose=0,
        callbacks=[_Lockstep(barrier)])
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def test_two_threads_train_two_models_without_corrupting_each_other():
    alone = {seed: _train(seed) for seed in (1, 2)}
    assert not np.array_equal(alone[1]["0.weight"], alone[2]["0.weight"])

    barrier = threading.Barrier(2)
    results, errors = {}, []

    def worker(seed):
        try:
            results[seed] = _train(seed, barrier)
        except BaseException as exc:  # reported below; a dead thread would hang the other
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    for seed in (1, 2):
        for name, expected in alone[seed].items():
            assert np.array_equal(results[seed][name], expected), (seed, name)
    assert gl.is_grad_enabled()  # the threads' no_grad evaluations did not leak here


def test_no_grad_in_one_thread_does_not_stop_the_other_recording():
    inside, done = threading.Event(), threading.Event()
    recorded = {}

    def evaluator():
        with gl.no_grad():
            inside.set()
            done.wait(timeout=30)

    def trainer():
        inside.wait(timeout=30)
        w = gl.ones(3, requires_grad=True)
        loss = (w * 2).sum()
        loss.backward()
        recorded["grad"] = w.grad.tolist()
        done.set()

    threads = [threading.Thread(target=evaluator), threading.Thread(target=trainer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert recorded["grad"] == [2.0, 2.0, 2.0]
