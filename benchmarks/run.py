"""Run the benchmark comparisons and write benchmarks/results/<machine>-<date>.{json,md}.

    python benchmarks/run.py            # everything
    python benchmarks/run.py --quick    # fewer rounds (what `gradlab bench` runs)
"""
from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# torch first: its OpenMP runtime must start with its own defaults, untouched by the
# settings gradlab makes for numba's (see gradlab/backend/cpu_threads.py).
import benchmarks.harness  # noqa: E402,F401,I001
from benchmarks import cases, isolated, memory  # noqa: E402
from benchmarks.cases import copy_bandwidth  # noqa: E402
from benchmarks.harness import Result, _fmt, compare, machine_info, torch, write_results  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--tag", default="cpu", help="machine tag for the file name")
    parser.add_argument("--shapes", nargs="*", default=list(cases.MLP_SHAPES),
                        help="training-step shapes to run (default: all four)")
    args = parser.parse_args(argv)
    rounds = 5 if args.quick else 15
    if torch is not None:
        torch.set_num_threads(os.cpu_count() or 1)
    results = []
    # Each case's builder (check=True) compares one run of what is timed with its reference
    # first, and stops the run there if the result is wrong.

    def record(result):
        results.append(result)
        ratio = "n/a" if result.ratio is None else f"{result.ratio:.2f}"
        notes = "  ".join(f"{k}={v}" for k, v in result.extra.items())
        print(f"{result.case:48s} gradlab {_fmt(result.gradlab_s, result.unit):>10s}   torch "
              f"{_fmt(result.torch_s, result.unit):>10s}   ratio {ratio:>5s}  {notes}",
              flush=True)

    bandwidth = copy_bandwidth()
    print(f"copy bandwidth: {bandwidth / 1e9:.1f} GB/s", flush=True)

    for shape in ("tiny", "small"):
        sizes, batch = cases.MLP_SHAPES[shape]
        gl_fn, th_fn = cases.mlp_forward_backward(sizes, batch, check=True)
        record(compare(f"mlp fwd+bwd {'-'.join(map(str, sizes))} b{batch}", gl_fn, th_fn,
                       rounds=rounds))

    for shape in args.shapes:
        sizes, batch = cases.MLP_SHAPES[shape]
        gl_fn, th_fn, flops = cases.mlp_train_step(sizes, batch, check=True)
        r = compare(f"train step {'-'.join(map(str, sizes))} b{batch}", gl_fn, th_fn,
                    rounds=rounds, target_s=0.05)
        roof = cases.training_flop_rate(sizes, batch)
        r.extra.update(gflops=round(flops / r.gradlab_s / 1e9, 2),
                       gemm_roofline_fraction=round(flops / r.gradlab_s / roof, 3))
        try:  # each library alone in its own process, for context (benchmarks/isolated.py)
            iso = isolated.alone(shape, with_torch=torch is not None,
                                 rounds=5 if args.quick else 15)
        except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"isolated timing of {shape} failed: {exc}", flush=True)
        else:
            r.extra.update({k: round(v, 6) if k.endswith("_s") else round(v, 2)
                            for k, v in iso.items()})
            r.extra["gemm_roofline_fraction_alone"] = round(
                flops / iso["gradlab_alone_s"] / roof, 3)
        record(r)

    # The compiled step (gl.train.compile_step, issue 13): replayed after two recording steps.
    for shape in args.shapes:
        sizes, batch = cases.MLP_SHAPES[shape]
        gl_fn, th_fn, _ = cases.mlp_train_step(sizes, batch, check=True, compiled=True)
        r = compare(f"compiled train step {'-'.join(map(str, sizes))} b{batch}", gl_fn, th_fn,
                    rounds=rounds, target_s=0.05)
        info = gl_fn.func.info()
        r.extra.update(record_ms=round(info["record_seconds"] * 1e3, 2),
                       held_bytes=info["held_bytes"])
        try:
            iso = isolated.alone_compiled(shape, with_torch=torch is not None,
                                          rounds=5 if args.quick else 15)
        except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"isolated timing of compiled {shape} failed: {exc}", flush=True)
        else:
            r.extra.update({k: round(v, 6) if k.endswith("_s") else round(v, 3)
                            for k, v in iso.items()})
        record(r)

    # Peak memory of training (optimizer state, gradients, activations, temporaries), each
    # library in a fresh process: see benchmarks/memory.py.
    for shape in [s for s in ("mnist", "wide") if s in args.shapes]:
        sizes, batch = cases.MLP_SHAPES[shape]
        try:
            mem = memory.step_peak(shape, with_torch=torch is not None)
        except (OSError, RuntimeError) as exc:  # e.g. no /proc: not Linux
            print(f"memory of {shape} not measured: {exc}", flush=True)
            continue
        record(Result(f"peak training memory {'-'.join(map(str, sizes))} b{batch}",
                      mem["gradlab"], mem.get("torch"), mem.get("ratio"), 1, unit="B"))

    for total, n_tensors in ((10_000_000, 10), (1_000_000, 100)):
        for name, (_, bytes_per_param) in cases.OPTIMIZERS.items():
            gl_fn, th_fn = cases.optimizer_step(name, total, n_tensors, check=True)
            r = compare(f"{name} step {total // 1_000_000}M params / {n_tensors} tensors",
                        gl_fn, th_fn, rounds=rounds, target_s=0.05)
            r.extra.update(bandwidth_fraction=round(
                bytes_per_param * total / r.gradlab_s / bandwidth, 3))
            record(r)

    for batch, classes in ((4096, 10), (512, 32000)):
        gl_fn, th_fn, nbytes = cases.softmax_ce(batch, classes, check=True)
        r = compare(f"softmax-CE fwd+bwd {batch}x{classes}", gl_fn, th_fn, rounds=rounds)
        r.extra.update(bandwidth_fraction=round(nbytes / r.gradlab_s / bandwidth, 3))
        record(r)

    gl_fn, th_fn = cases.dropout_fwd_bwd(16 * 1024 * 1024, check=True)
    record(compare("dropout fwd+bwd 16M", gl_fn, th_fn, rounds=max(3, rounds // 3),
                   target_s=0.2))

    for recording in (False, True):
        gl_fn, np_fn, th_fn = cases.elementwise_chain(requires_grad=recording, check=True)
        label = "recording the graph" if recording else "no graph"
        r = compare(f"10 small elementwise ops, {label} (vs bare NumPy)", gl_fn, th_fn,
                    rounds=rounds)
        base = compare("bare numpy", np_fn, None, rounds=rounds)
        r.extra.update(numpy_s=base.gradlab_s,
                       overhead_vs_numpy=round(r.gradlab_s / base.gradlab_s, 2))
        record(r)

    # The main job: `gradlab train` with its defaults (target: >= 0.97 within 30 s on 2 cores).
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "gradlab", "train", "--quiet"],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    line = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    r = Result("gradlab train (default digits run), wall", wall, None, None, 1)
    r.extra.update(result=line.replace("|", "/"))
    record(r)

    stem = os.path.join(args.out, f"{args.tag}-{datetime.date.today().isoformat()}")
    write_results(results, stem, "gradlab benchmarks", machine_info())
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
