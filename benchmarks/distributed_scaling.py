"""Data-parallel scaling on this machine: 1 process with T threads against T processes with
1 thread each (``mpiexec -n T``), the same global batch, on 784-512-256-10 (issue 14).

    python benchmarks/distributed_scaling.py [--ranks 2] [--batch 256] [--steps 40] [--out STEM]

Each configuration runs ``--repeats`` times in fresh processes (taking turns); each run times
``--steps`` steps after 5 warm-up steps: forward, cross-entropy, backward, the gradient
allreduce (timed on its own, per step), and an Adam step. Reported: the median steps per
second, and the median allreduce time per step. Before timing, one step of the distributed
run is checked against one step of the single process on the same global batch (weights
within 1e-5: only the summation order differs). Writes STEM.json and STEM.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

_CHILD = r"""
import json, os, sys, time
import numpy as np
import gradlab as gl
sizes, batch, steps, distributed = (784, 512, 256, 10), int(sys.argv[1]), int(sys.argv[2]), \
    sys.argv[3] == "1"
world, rank = 1, 0
if distributed:
    import gradlab.distributed as dist
    dist.init_process_group("mpi")
    world, rank = dist.get_world_size(), dist.get_rank()
rng = np.random.default_rng(0)
X = rng.standard_normal((batch, sizes[0])).astype(np.float32)
Y = rng.integers(0, sizes[-1], batch)
share = batch // world  # this rank's rows of the global batch
x, y = gl.tensor(X[rank * share:(rank + 1) * share]), gl.tensor(Y[rank * share:(rank + 1) * share])
gl.manual_seed(0)
layers = []
for k, (i, o) in enumerate(zip(sizes[:-1], sizes[1:])):
    layers.append(gl.nn.Linear(i, o))
    if k < len(sizes) - 2:
        layers.append(gl.nn.ReLU())
model = gl.nn.Sequential(*layers)
if distributed:
    model = dist.DistributedDataParallel(model)
opt = gl.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = gl.nn.CrossEntropyLoss()
sync_s = []

def step():
    opt.zero_grad()
    loss_fn(model(x), y).backward()
    if distributed:
        t = time.perf_counter()
        model.sync_gradients()
        sync_s.append(time.perf_counter() - t)
    opt.step()

step()  # the checked step: its weights go to the parent
w0 = np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])[:4096]
for _ in range(4):
    step()
sync_s.clear()
t0 = time.perf_counter()
for _ in range(steps):
    step()
elapsed = time.perf_counter() - t0
if rank == 0:
    print(json.dumps({"steps_per_s": steps / elapsed, "world": world,
                      "allreduce_s_per_step": (sum(sync_s) / steps) if sync_s else 0.0,
                      "first_step_weights": w0.tolist()}))
"""


def _run(ranks, batch, steps):
    """One run: 1 process with ``ranks`` threads (ranks given as negative), or ``ranks``
    processes with 1 thread each."""
    single = ranks < 0
    threads = -ranks if single else 1
    env = dict(os.environ, GRADLAB_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               GRADLAB_DEVICE="cpu", PYTHONPATH=os.path.join(ROOT, "src"))
    cmd = [sys.executable, "-c", _CHILD, str(batch), str(steps), "0" if single else "1"]
    if not single:
        mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
        cmd = [mpiexec, "-n", str(ranks)] + cmd
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256, help="global batch")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, metavar="STEM")
    args = parser.parse_args(argv)
    if args.ranks < 2 or args.batch % args.ranks:
        parser.error("--ranks must be >= 2 and divide --batch")
    import numpy as np
    runs = {"single": [], "distributed": []}
    for _ in range(args.repeats):
        runs["single"].append(_run(-args.ranks, args.batch, args.steps))
        runs["distributed"].append(_run(args.ranks, args.batch, args.steps))
    a = np.array(runs["single"][0]["first_step_weights"])
    b = np.array(runs["distributed"][0]["first_step_weights"])
    diff = float(np.abs(a - b).max())
    if diff > 1e-5:
        raise SystemExit(f"the distributed step differs from the single-process step by "
                         f"{diff:.3g} (> 1e-5): not timing a wrong result")
    med = {k: statistics.median(r["steps_per_s"] for r in v) for k, v in runs.items()}
    sync = statistics.median(r["allreduce_s_per_step"] for r in runs["distributed"])
    summary = {"machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                           "platform": platform.platform()},
               "shape": "784-512-256-10", "global_batch": args.batch, "ranks": args.ranks,
               "steps": args.steps, "repeats": args.repeats,
               "single_process_threads": args.ranks,
               "single_steps_per_s": med["single"], "distributed_steps_per_s":
               med["distributed"], "speedup": med["distributed"] / med["single"],
               "allreduce_ms_per_step": sync * 1e3, "first_step_max_abs_diff": diff,
               "runs": {k: [{kk: vv for kk, vv in r.items() if kk != "first_step_weights"}
                            for r in v] for k, v in runs.items()}}
    table = (f"| configuration | steps/s | allreduce per step |\n|---|---|---|\n"
             f"| 1 process x {args.ranks} threads | {med['single']:.1f} | - |\n"
             f"| {args.ranks} processes x 1 thread (mpiexec) | {med['distributed']:.1f} | "
             f"{sync * 1e3:.2f} ms |\n")
    print(table + f"\nspeedup {summary['speedup']:.2f}x; first step max |diff| {diff:.2g}")
    if args.out:
        with open(args.out + ".json", "w") as f:
            json.dump(summary, f, indent=2)
        with open(args.out + ".md", "w") as f:
            f.write(f"# Data-parallel scaling, 784-512-256-10, global batch {args.batch}\n\n"
                    f"Medians of {args.repeats} runs of {args.steps} timed steps each "
                    f"(fresh processes, configurations taking turns). gradlab "
                    f"DistributedDataParallel over MPI (mpi4py, MPICH wheel).\n\n{table}\n"
                    f"Speedup {summary['speedup']:.2f}x. One step of each agrees within "
                    f"{diff:.2g} (summation order only).\n")


if __name__ == "__main__":
    main()
