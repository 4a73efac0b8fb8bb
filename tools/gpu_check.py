"""One-call GPU acceptance run (``make gpu-check``), sized for a lent GPU's short lease.

    PYTHONPATH=src PYTHONUNBUFFERED=1 python3 tools/gpu_check.py      # writes under $OUT too

In this order, each stage under its own time limit so the whole run ends within --budget
seconds (default 480):
1. the NVRTC compile check of every kernel module (tools/kernels_check.py; needs no GPU);
2. without a real GPU: one line saying so, exit 0 (the emulated device is the tests' own);
3. the test suite's CUDA half on the GPU (``pytest -m cuda tests``: every kernel against its
   NumPy reference, every device-parametrized test; the CPU half is CI's);
4. benchmarks/test_kernels_gpu.py: copy bandwidth, fused Adam against torch's fused Adam on
   50M parameters in 128 tensors, softmax-CE and dropout forward+backward, and the training
   step of the four MLP shapes, eager and compiled (a CUDA graph where every GEMM is small),
   against torch eager; gradlab's small-GEMM kernel against cuBLAS (the ratio column);
   then, in the time left, the optimizer sweep of ``gradlab bench optim --device cuda``
   (its own JSON/md/PNG under $OUT);
5. benchmarks/results/<gpu>-<date>.{json,md} (and the same files, plus the raw logs, under
   $OUT when it is set).
Exit status: 0 when every stage that ran passed, 1 otherwise.

Needs only what the GPU machine has: CuPy, numpy, pytest, pytest-benchmark, torch (optional).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def _run(cmd, log_path, timeout):
    """Run ``cmd`` from the repository root, echoing and logging its output; kill its process
    group at ``timeout`` seconds. Returns (exit code or None on timeout, seconds)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        PYTHONUNBUFFERED="1")
    start = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        deadline = start + timeout
        timed_out = False
        while True:
            line = proc.stdout.readline()
            if line:
                sys.stdout.write(line)
                log.write(line)
            elif proc.poll() is not None:
                break
            if time.monotonic() > deadline:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                log.write(f"\n[gpu-check: killed after {timeout:.0f} s]\n")
                break
    return (None if timed_out else proc.returncode), time.monotonic() - start


def _junit_counts(path):
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    counts["failed_tests"] = [
        f"{case.get('classname')}::{case.get('name')}" for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None]
    return counts


# gradlab benchmark -> its torch counterpart (same parameters), for the ratio column.
_PAIRS = {"test_gradlab_adam[float32]": "test_torch_adam_fused",
          "test_gradlab_dropout": "test_torch_dropout",
          "test_gradlab_randn": "test_torch_randn"}
_PAIR_PATTERNS = [(r"test_gradlab_softmax_ce\[(.*)\]", "test_torch_cross_entropy[{}]"),
                  (r"test_gradlab_gemm\[(.*)\]", "test_cublas_gemm[{}]"),
                  (r"test_gradlab_train_step\[(.*)\]", "test_torch_train_step[{}]"),
                  (r"test_gradlab_compiled_train_step\[(.*)\]", "test_torch_train_step[{}]")]


def _benchmark_rows(path):
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return []
    by_name = {b["name"]: b for b in data.get("benchmarks", [])}
    rows = []
    for name, b in by_name.items():
        if "torch" in name or "cublas" in name:
            continue
        other = _PAIRS.get(name)
        for pattern, fmt in _PAIR_PATTERNS:
            m = re.fullmatch(pattern, name)
            if m:
                other = fmt.format(m.group(1))
        t = by_name.get(other) if other else None
        info = b.get("extra_info", {})
        row = {"case": name, "gradlab_ms": info.get("ms"),
               "gradlab_median_ms": b["stats"]["median"] * 1e3,
               "gb_per_s": info.get("gb_per_s"), "torch_case": other,
               "torch_ms": t["extra_info"].get("ms") if t else None}
        row["ratio"] = (row["gradlab_ms"] / row["torch_ms"]
                        if row["torch_ms"] and row["gradlab_ms"] else None)
        rows.append(row)
    return rows


def _markdown(report):
    lines = [f"# gpu-check {report['date']} on {report['gpu']}", "",
             f"CuPy {report['cupy']}, CUDA runtime {report['cuda_runtime']}, torch "
             f"{report['torch']}, budget {report['budget_s']} s, total "
             f"{report['total_s']:.0f} s.", ""]
    for stage in report["stages"]:
        status = ("timed out" if stage["exit"] is None else
                  "passed" if stage["exit"] == 0 else f"failed (exit {stage['exit']})")
        lines.append(f"- **{stage['name']}**: {status} in {stage['seconds']:.0f} s")
        counts = stage.get("counts")
        if counts:
            lines.append(f"  - {counts['passed']} passed, {counts['failures']} failed, "
                         f"{counts['errors']} errors, {counts['skipped']} skipped")
            for t in counts["failed_tests"][:50]:
                lines.append(f"  - FAILED {t}")
    rows = report.get("benchmarks") or []
    if rows:
        lines += ["", "| case | gradlab ms (events) | median ms (synced) | GB/s | torch ms "
                  "(cuBLAS for the GEMM rows) | ratio gradlab/that |", "|---|---|---|---|---|---|"]
        for r in rows:
            f = lambda v, spec=".3f": "–" if v is None else format(v, spec)  # noqa: E731
            lines.append(f"| {r['case']} | {f(r['gradlab_ms'])} | {f(r['gradlab_median_ms'])} "
                         f"| {f(r['gb_per_s'], '.0f')} | {f(r['torch_ms'])} | "
                         f"{f(r['ratio'], '.2f')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=480.0,
                        help="seconds for the whole run (default 480)")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    if args.budget < 60:
        parser.error(f"--budget {args.budget:g} is too short: give at least 60 seconds")
    start = time.monotonic()
    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else None
    work = out or Path(args.results)
    work.mkdir(parents=True, exist_ok=True)

    # Without a GPU nothing but this log would be written: keep it out of the results folder.
    check_log = work / "gpu-check-kernels.log" if out else Path(tempfile.gettempdir()) / \
        "gradlab-gpu-check-kernels.log"
    check_rc, check_s = _run([sys.executable, "tools/kernels_check.py"], check_log, 120)
    from gradlab.backend import cuda_status
    gpu, why = cuda_status()
    if not gpu:
        print(f"gpu-check: no CUDA GPU here ({why}); ran only the NVRTC compile check "
              f"({'passed' if check_rc == 0 else 'FAILED'})")
        return 0 if check_rc in (0, 2) else 1  # 2: CuPy's NVRTC is not installed here

    import cupy
    props = cupy.cuda.runtime.getDeviceProperties(0)
    gpu_name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    try:
        import torch
        torch_version = torch.__version__
    except Exception:
        torch_version = "not installed"
    import numpy
    print(f"gpu-check: {gpu_name}; CuPy {cupy.__version__}, CUDA runtime "
          f"{cupy.cuda.runtime.runtimeGetVersion()}, NumPy {numpy.__version__}, torch "
          f"{torch_version}")
    if int(cupy.__version__.split(".")[0]) < 14:
        # The emulated device's stand-in models CuPy 14.2: an older CuPy may promote dtypes
        # differently (NumPy 2's rules came with 14) or lack what gradlab calls.
        print(f"gpu-check: WARNING: CuPy {cupy.__version__} is older than the 14.x the "
              "tests' CuPy stand-in models; failures may come from the version")
    stages = [{"name": "NVRTC compile check", "exit": check_rc, "seconds": check_s}]

    remaining = args.budget - (time.monotonic() - start)
    junit = work / "gpu-check-tests.xml"
    rc, secs = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m",
                     "cuda", "tests", f"--junitxml={junit}"],
                    work / "gpu-check-tests.log", max(30.0, remaining * 0.6))
    stages.append({"name": "test suite on CUDA (pytest -m cuda tests)", "exit": rc,
                   "seconds": secs, "counts": _junit_counts(junit)})

    remaining = args.budget - (time.monotonic() - start)
    bench_json = work / "gpu-check-benchmarks.json"
    rc, secs = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                     "benchmarks/test_kernels_gpu.py", f"--benchmark-json={bench_json}"],
                    work / "gpu-check-benchmarks.log", max(30.0, remaining - 15))
    stages.append({"name": "GPU benchmarks", "exit": rc, "seconds": secs})

    # The optimizer sweep of `gradlab bench optim` on CUDA, in whatever time is left.
    remaining = args.budget - (time.monotonic() - start)
    if remaining > 45:
        rc, secs = _run([sys.executable, "-m", "gradlab", "bench", "optim", "--device", "cuda",
                         "--sizes", "1e5:1e8", "--tensors", "100", "--repeats", "5",
                         "--block-time", "0.002",
                         "--out", str(work / "bench-optim-cuda"), "--overwrite"],
                        work / "gpu-check-bench-optim.log", remaining - 10)
        stages.append({"name": "gradlab bench optim --device cuda", "exit": rc,
                       "seconds": secs})

    date = datetime.date.today().isoformat()
    report = {"date": date, "gpu": gpu_name, "cupy": cupy.__version__,
              "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(), "torch": torch_version,
              "budget_s": args.budget, "total_s": time.monotonic() - start,
              "stages": stages, "benchmarks": _benchmark_rows(bench_json)}
    slug = re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-") or "gpu"
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    for target in {results, work}:
        (target / f"{slug}-{date}.json").write_text(json.dumps(report, indent=2) + "\n")
        (target / f"{slug}-{date}.md").write_text(_markdown(report))
    print(_markdown(report))
    return 0 if all(s["exit"] == 0 for s in stages) else 1


if __name__ == "__main__":
    sys.exit(main())
