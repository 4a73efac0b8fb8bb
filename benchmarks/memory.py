"""Peak memory of one training step, gradlab against torch, each in a fresh process.

Resident memory is what both libraries draw from (NumPy and torch's CPU allocator both sit
on malloc/mmap), so each side runs in its own subprocess: import, build the model and the
batch (after a warm-up on a tiny model, so one-time library set-up such as numba loading its
kernels is not counted), record the resident set, reset the kernel's high-water mark (Linux:
``echo 5 > /proc/self/clear_refs``), run three steps and read the high-water mark again.
``peak - baseline`` is what training adds on top of the library, the weights and the data:
optimizer state, gradients, activations and every per-step temporary. (Measuring from after
a warm-up step would read 0: the C allocator keeps freed blocks resident for reuse.)

    python benchmarks/memory.py wide          # both sides, one shape
"""
from __future__ import annotations

import os
import sys

if not __package__:  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.harness import run_child  # noqa: E402

_CHILD = r"""
import json, os, sys
sys.path.insert(0, {root!r})
framework, shape = sys.argv[1], sys.argv[2]

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)

if framework == "torch":
    import torch
    torch.set_num_threads(os.cpu_count() or 1)
from benchmarks import cases
import benchmarks.harness as harness
if framework == "gradlab":
    harness.torch = cases.torch = None  # build only gradlab's side
# One-time library set-up (numba loading its kernels, torch its thread pool) happens on a
# tiny model first: it is paid once per process, not per step of this shape.
warm = cases.mlp_train_step(*cases.MLP_SHAPES["tiny"])[0 if framework == "gradlab" else 1]
warm(); warm()
del warm
sizes, batch = cases.MLP_SHAPES[shape]
gl_step, torch_step, _ = cases.mlp_train_step(sizes, batch)
step = gl_step if framework == "gradlab" else torch_step
baseline = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
for _ in range(3):
    step()
print(json.dumps({{"baseline": baseline, "peak": status("VmHWM"),
                   "after": status("VmRSS")}}))
"""


def measure(framework, shape):
    """{'baseline', 'peak', 'after'} in bytes for one framework in a fresh process."""
    # A fixed mmap threshold turns off glibc's adaptive one, which otherwise starts keeping
    # freed multi-MB blocks on the heap, resident, so that the baseline would count memory
    # the steps later reuse. Every large block is then mapped on allocation and returned on
    # free, for both libraries alike, and the resident set follows live memory.
    return run_child(_CHILD, framework, shape, what=f"{framework} memory",
                     MALLOC_MMAP_THRESHOLD_="65536")


def step_peak(shape, with_torch=True):
    """Training memory (peak - baseline) per framework, in bytes, and the ratio."""
    gl = measure("gradlab", shape)
    out = {"gradlab": gl["peak"] - gl["baseline"], "gradlab_resident": gl["baseline"]}
    if with_torch:
        th = measure("torch", shape)
        out.update(torch=th["peak"] - th["baseline"], torch_resident=th["baseline"])
        out["ratio"] = out["gradlab"] / out["torch"] if out["torch"] > 0 else None
    return out


def main(argv=None):
    import argparse

    from benchmarks import cases
    shapes = sorted(cases.MLP_SHAPES)
    parser = argparse.ArgumentParser(
        description="Peak memory of one training step, gradlab against torch, each in a "
                    "fresh process.", epilog=f"shapes: {', '.join(shapes)}")
    parser.add_argument("shapes", nargs="*", metavar="shape",
                        help="shapes to measure (default: wide)")
    args = parser.parse_args(argv)
    unknown = [s for s in args.shapes if s not in shapes]
    if unknown:
        parser.error(f"unknown shape {unknown[0]!r}: choose from {', '.join(shapes)}")
    for name in args.shapes or ["wide"]:
        r = step_peak(name)
        print(name, {k: (round(v / 2**20, 1) if k != "ratio" else round(v, 2))
                     for k, v in r.items() if v is not None})


if __name__ == "__main__":
    main()
