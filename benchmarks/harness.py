"""Side-by-side timing: gradlab and PyTorch run the same case interleaved in one process.

Why interleaved: these machines are shared and noisy, so each round times gradlab and then
torch back to back, and the ratio is taken per round before taking the median. A drift in
machine load then hits both sides of a ratio alike.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np

try:
    import torch
except Exception:  # torch is an optional benchmark dependency
    torch = None


def calibrate(fn, target_s=0.02, max_iters=1_000_000):
    """Iterations per timed block so that one block lasts about ``target_s``."""
    fn()
    n = 1
    while n < max_iters:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - t0 >= target_s:
            break
        n *= 2
    return n


def time_block(fn, n, sync=None):
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    if sync is not None:
        sync()
    return (time.perf_counter() - t0) / n


@dataclass
class Result:
    case: str
    gradlab_s: float
    torch_s: float | None
    ratio: float | None
    rounds: int
    extra: dict = field(default_factory=dict)
    unit: str = "s"  # "s" for times; "B" for memory (then gradlab_s/torch_s hold bytes)

    def as_dict(self):
        if self.unit == "B":
            return {"case": self.case, "gradlab_bytes": self.gradlab_s,
                    "torch_bytes": self.torch_s, "ratio_gradlab_over_torch": self.ratio,
                    "rounds": self.rounds, **self.extra}
        return {"case": self.case, "gradlab_s": self.gradlab_s, "torch_s": self.torch_s,
                "ratio_gradlab_over_torch": self.ratio, "rounds": self.rounds, **self.extra}


def compare(case, gl_fn, torch_fn=None, rounds=15, target_s=0.02, sync=None):
    """Median time per call of each side and the median of per-round ratios."""
    gl_fn()
    if torch_fn is not None:
        torch_fn()
    n_gl = calibrate(gl_fn, target_s)
    n_th = calibrate(torch_fn, target_s) if torch_fn is not None else 0
    gl_times, th_times, ratios = [], [], []
    for _ in range(rounds):
        g = time_block(gl_fn, n_gl, sync)
        gl_times.append(g)
        if torch_fn is not None:
            t = time_block(torch_fn, n_th, sync)
            th_times.append(t)
            ratios.append(g / t)
    return Result(case, statistics.median(gl_times),
                  statistics.median(th_times) if th_times else None,
                  statistics.median(ratios) if ratios else None, rounds)


def run_child(source, *argv, what="benchmark", **env):
    """Run ``source`` (a template with ``{root}`` for the repository root) in a fresh Python
    process with ``argv`` and extra environment ``env``; return the JSON object its last
    line of output prints."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, **env, PYTHONPATH=os.pathsep.join(
        [os.path.join(root, "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", source.format(root=root), *map(str, argv)],
                          capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} run failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine_info():
    info = {"python": sys.version.split()[0], "platform": platform.platform(),
            "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "numpy": np.__version__, "torch": getattr(torch, "__version__", None),
            "torch_threads": torch.get_num_threads() if torch is not None else None}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        from threadpoolctl import threadpool_info
        info["blas"] = [{k: d.get(k) for k in ("internal_api", "num_threads", "version")}
                        for d in threadpool_info()]
    except Exception:
        cfg = subprocess.run([sys.executable, "-c", "import numpy; numpy.show_config()"],
                             capture_output=True, text=True).stdout
        info["blas"] = " ".join(line.strip() for line in cfg.splitlines()
                                if "name" in line.lower())[:300]
    return info


def write_results(results, path_stem, title, info):
    os.makedirs(os.path.dirname(path_stem), exist_ok=True)
    with open(path_stem + ".json", "w") as f:
        json.dump({"machine": info, "results": [r.as_dict() for r in results]}, f, indent=2)
    lines = [f"# {title}", "", "Machine: " + ", ".join(
        f"{k}={v}" for k, v in info.items() if k not in ("blas",)), "",
        "| case | gradlab | torch | gradlab/torch | notes |", "|---|---|---|---|---|"]
    for r in results:
        notes = ", ".join(f"{k}={v}" for k, v in r.extra.items())
        lines.append(f"| {r.case} | {_fmt(r.gradlab_s, r.unit)} | {_fmt(r.torch_s, r.unit)} | "
                     f"{'' if r.ratio is None else f'{r.ratio:.2f}'} | {notes} |")
    with open(path_stem + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")


def _fmt(seconds, unit="s"):
    if seconds is None:
        return "n/a"
    if unit == "B":
        return f"{seconds / 2**20:.1f} MiB"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    return f"{seconds * 1e3:.2f} ms"
