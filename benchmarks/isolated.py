"""The training step timed with each library alone in a fresh process: context for the
side-by-side figures of run.py.

Interleaved in one process, each library's idle threads can take the cores from the other:
OpenBLAS's (NumPy's) threads keep polling for a while after the last GEMM, and torch's
OpenMP threads spin after each parallel region. Those figures are the issue's method and
stay the headline; these show what each library does on a machine of its own.

    python benchmarks/isolated.py mnist wide
    python benchmarks/isolated.py --compiled [--out STEM] [--repeats N] [tiny small mnist ...]
    python benchmarks/isolated.py --interleaved [--out STEM] [tiny small mnist wide cli]

``--interleaved`` times gradlab's compiled step against its own eager step in ONE process,
in alternating blocks: on a machine whose speed drifts by tens of percent from one process
(or one second) to the next, as shared 2-core VMs do, fresh processes taking turns need
many repeats to resolve a few percent, while two blocks a few milliseconds apart see the
same machine. Both steps are the same library, so this is a before/after of the replay,
not a comparison of libraries (torch stays in its own process: ``--compiled``).
"""
from __future__ import annotations

import os
import statistics
import sys

if not __package__:  # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.harness import run_child  # noqa: E402

_CHILD = r"""
import json, os, statistics, sys
sys.path.insert(0, {root!r})
framework, shape, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
if framework == "torch":
    import torch
    torch.set_num_threads(os.cpu_count() or 1)
from benchmarks import cases
import benchmarks.harness as harness
if framework != "torch":
    harness.torch = cases.torch = None  # gradlab alone: torch is not even imported
sizes, batch, batchnorm = cases.shape_of(shape)
if framework == "gemms":
    step = cases.step_gemms(sizes, batch)
else:
    gl_step, torch_step, _ = cases.mlp_train_step(sizes, batch,
                                                  compiled=framework == "gradlab-compiled",
                                                  batchnorm=batchnorm)
    step = torch_step if framework == "torch" else gl_step
n = harness.calibrate(step, 0.05)
times = [harness.time_block(step, n) for _ in range(rounds)]
out = {{"median_s": statistics.median(times)}}
if framework == "gradlab-compiled":
    cs = gl_step.func  # the CompiledStep behind the partial
    info = cs.info()
    # The first recordings also pay the process's first calls of each kernel (numba cache
    # loads, BLAS start-up): a second compiled step of the same warm model records again.
    warm = cases.gl.train.compile_step(cs.model, cs.loss_fn, cs.optimizer)
    for _ in range(3):
        warm(*gl_step.args)
    out.update(record_s=info["record_seconds"], held_bytes=info["held_bytes"],
               record_warm_s=warm.info()["record_seconds"], replayed=info["replayed"],
               eager=info["eager"] + warm.info()["eager"])
print(json.dumps(out))
"""


_INTERLEAVED_CHILD = r"""
import json, statistics, sys
sys.path.insert(0, {root!r})
shape, blocks = sys.argv[1], int(sys.argv[2])
from benchmarks import cases
import benchmarks.harness as harness
harness.torch = cases.torch = None
sizes, batch, batchnorm = cases.shape_of(shape)
compiled, _, _ = cases.mlp_train_step(sizes, batch, compiled=True, batchnorm=batchnorm)
eager, _, _ = cases.mlp_train_step(sizes, batch, batchnorm=batchnorm)
n = min(harness.calibrate(compiled, 0.01), harness.calibrate(eager, 0.01))
pairs = []
for k in range(blocks):  # which goes first alternates: neither always follows the other
    first, second = (compiled, eager) if k % 2 == 0 else (eager, compiled)
    a, b = harness.time_block(first, n), harness.time_block(second, n)
    pairs.append((a, b) if k % 2 == 0 else (b, a))
c, e = sorted(p[0] for p in pairs), sorted(p[1] for p in pairs)
if ran_eagerly := compiled.func.info()["eager"]:
    raise SystemExit(f"{{ran_eagerly}} timed compiled steps ran eagerly")
print(json.dumps({{"compiled_s": statistics.median(c), "eager_s": statistics.median(e),
                  "compiled_p10_s": c[len(c) // 10], "eager_p10_s": e[len(e) // 10],
                  "ratio": statistics.median(a / b for a, b in pairs),
                  "steps_per_block": n, "blocks": blocks}}))
"""


def interleaved(shape, blocks=60):
    """The compiled step against the eager step of the same model and batch, in one process,
    ``blocks`` pairs of blocks of 10 ms or more (at least one step): the median and 10th
    percentile of each side's seconds per step, and ``ratio``, the median of the pairs'
    compiled/eager ratios."""
    return run_child(_INTERLEAVED_CHILD, shape, blocks, what=f"interleaved {shape}")


def _interleaved_table(shapes, out_stem):
    """``--interleaved``: compiled vs eager per shape (interleaved()), as markdown and, with
    ``out_stem``, written to OUT_STEM.{json,md}."""
    rows = ["| shape | compiled | eager | compiled/eager (median of pairs) | compiled p10 |"
            " eager p10 |", "|---|---|---|---|---|---|"]
    results = {}
    for shape in shapes:
        r = results[shape] = interleaved(shape)
        rows.append(f"| {_label(shape)} | {_us(r['compiled_s'])} | {_us(r['eager_s'])} | "
                    f"{r['ratio']:.3f} | {_us(r['compiled_p10_s'])} | "
                    f"{_us(r['eager_p10_s'])} |")
        print(rows[-1], flush=True)
    return _written(out_stem, rows, results, {},
                    "Compiled step vs eager step, interleaved in one process",
                    "Per shape, one process holds both steps (two copies of the model) and "
                    "times them in 60 alternating pairs of blocks of 10 ms or more: each "
                    "side's median and 10th percentile block, and the median of the pairs' "
                    "ratios.")


def _label(shape):
    from benchmarks import cases
    sizes, batch, batchnorm = cases.shape_of(shape)
    return f"{'-'.join(map(str, sizes))} b{batch}{' BN' if batchnorm else ''}"


def _written(out_stem, rows, results, extra, title, intro):
    """The markdown table of ``rows``; with ``out_stem`` also OUT_STEM.json (the machine,
    ``extra``, ``results``) and OUT_STEM.md (``title``, ``intro``, the table)."""
    import json

    from benchmarks.harness import machine_info
    table = "\n".join(rows)
    if out_stem:
        with open(out_stem + ".json", "w") as f:
            json.dump({"machine": machine_info(), **extra, "results": results}, f, indent=2)
        with open(out_stem + ".md", "w") as f:
            f.write(f"# {title}\n\n{intro}\n\n{table}\n")
    return table


def _us(seconds):
    return f"{seconds * 1e6:.1f} us" if seconds < 1e-2 else f"{seconds * 1e3:.2f} ms"


def step_run(framework, shape, rounds=15):
    """{"median_s": seconds per training step} of ``framework`` ("gradlab",
    "gradlab-compiled" or "torch"; "gemms": only the step's GEMMs, cases.step_gemms) alone
    in a fresh process; for "gradlab-compiled" also
    the seconds its recordings took (record_s), the bytes a replay keeps between steps
    (held_bytes) and how many steps were replayed and run eagerly."""
    return run_child(_CHILD, framework, shape, rounds, what=f"{framework} step")


def step_time(framework, shape, rounds=15):
    """Median seconds per training step of ``framework`` alone in a fresh process."""
    return step_run(framework, shape, rounds)["median_s"]


def alone(shape, with_torch=True, repeats=2, rounds=15):
    """Best-of-``repeats`` medians for each side, processes alternating gradlab/torch."""
    gl_s, th_s = [], []
    for _ in range(repeats):
        gl_s.append(step_time("gradlab", shape, rounds))
        if with_torch:
            th_s.append(step_time("torch", shape, rounds))
    out = {"gradlab_alone_s": min(gl_s)}
    if with_torch:
        out.update(torch_alone_s=min(th_s), ratio_alone=min(gl_s) / min(th_s))
    return out


def alone_compiled(shape, with_torch=True, repeats=3, rounds=15):
    """The compiled step against the eager step and torch, each alone in its own process,
    processes taking turns: the median of ``repeats`` medians for each."""
    times = {"compiled": [], "eager": [], "torch": [], "gemms": []}
    compiled_runs = []
    for _ in range(repeats):
        compiled_runs.append(step_run("gradlab-compiled", shape, rounds))
        times["compiled"].append(compiled_runs[-1]["median_s"])
        times["eager"].append(step_time("gradlab", shape, rounds))
        times["gemms"].append(step_time("gemms", shape, rounds))
        if with_torch:
            times["torch"].append(step_time("torch", shape, rounds))
    med = {k: statistics.median(v) for k, v in times.items() if v}
    if any(r["eager"] for r in compiled_runs):
        raise RuntimeError(f"compiled step {shape}: some timed steps ran eagerly "
                           f"({compiled_runs})")
    out = {"compiled_alone_s": med["compiled"], "eager_alone_s": med["eager"],
           "compiled_vs_eager_alone": med["compiled"] / med["eager"],
           "gemms_alone_s": med["gemms"],  # the floor: the step's GEMMs alone
           # the two recording steps (eager steps that also record), per process
           "record_s": statistics.median(r["record_s"] for r in compiled_runs),
           "record_warm_s": statistics.median(r["record_warm_s"] for r in compiled_runs),
           "held_bytes": max(r["held_bytes"] for r in compiled_runs)}
    if with_torch:
        out.update(torch_alone_s=med["torch"], compiled_vs_torch_alone=med["compiled"] /
                   med["torch"], eager_vs_torch_alone=med["eager"] / med["torch"],
                   gemms_vs_torch_alone=med["gemms"] / med["torch"])
    return out


def _compiled_table(shapes, out_stem, repeats):
    """``--compiled``: the issue-13 table (compiled vs eager vs torch, each alone), printed
    as markdown and, with ``out_stem``, written to OUT_STEM.{json,md}."""
    rows = ["| shape | compiled | eager | torch eager | compiled/eager | compiled/torch |"
            " eager/torch | GEMMs alone (/torch) | record (warm) | held |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    results = {}
    for shape in shapes:
        r = results[shape] = alone_compiled(shape, repeats=repeats)
        rows.append(f"| {_label(shape)} | "
                    f"{r['compiled_alone_s'] * 1e6:.1f} us | {r['eager_alone_s'] * 1e6:.1f} us"
                    f" | {r['torch_alone_s'] * 1e6:.1f} us | {r['compiled_vs_eager_alone']:.3f}"
                    f" | {r['compiled_vs_torch_alone']:.3f} | {r['eager_vs_torch_alone']:.3f} |"
                    f" {r['gemms_alone_s'] * 1e6:.1f} us ({r['gemms_vs_torch_alone']:.3f}) |"
                    f" {r['record_s'] * 1e3:.1f} ms ({r['record_warm_s'] * 1e3:.2f} ms) |"
                    f" {_kib(r['held_bytes'])} |")
        print(rows[-1], flush=True)
    return _written(out_stem, rows, results, {"repeats": repeats},
                    "Compiled training step vs eager vs torch eager, each alone",
                    f"Medians of {repeats} fresh processes per library (each the median of "
                    f"15 timed blocks), processes taking turns. record: the time the "
                    f"compiled step spent in its two recording steps (forward passes that "
                    f"record, and planning the replay), in a fresh process (with the first "
                    f"calls of every kernel) and, in brackets, again on the warm model; "
                    f"held: the bytes a replay keeps between steps (recorded constants, "
                    f"the arrays its nodes save; the model's parameters "
                    f"and buffers and the optimizer state not counted); GEMMs alone: "
                    f"only the step's GEMMs in the step's layouts (cases.step_gemms), the "
                    f"floor of any replay.")


def _kib(n):
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.2f} MiB"


def main(argv=None):
    import argparse

    from benchmarks import cases
    shapes = sorted(cases.MLP_SHAPES) + sorted(cases.BATCHNORM_SHAPES)
    parser = argparse.ArgumentParser(
        description="The training step timed with each library alone in a fresh process.",
        epilog=f"shapes: {', '.join(shapes)}")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--compiled", action="store_true",
                      help="compiled vs eager vs torch eager, each alone (issue 13's table)")
    mode.add_argument("--interleaved", action="store_true",
                      help="compiled vs eager in one process, in alternating blocks")
    parser.add_argument("--out", metavar="STEM",
                        help="also write STEM.json and STEM.md (--compiled, --interleaved)")
    parser.add_argument("--repeats", type=int, metavar="N",
                        help="fresh processes per library (--compiled only; default 3)")
    parser.add_argument("shapes", nargs="*", metavar="shape",
                        help="shapes to time (default: tiny small mnist wide; without "
                             "--compiled or --interleaved: mnist)")
    args = parser.parse_args(argv)
    unknown = [s for s in args.shapes if s not in shapes]
    if unknown:
        parser.error(f"unknown shape {unknown[0]!r}: choose from {', '.join(shapes)}")
    if args.repeats is not None and not args.compiled:
        parser.error("--repeats applies to --compiled (--interleaved times 60 pairs of "
                     "blocks in one process)")
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.out is not None and not (args.compiled or args.interleaved):
        parser.error("--out applies to --compiled and --interleaved")
    chosen = args.shapes or (["tiny", "small", "mnist", "wide"]
                             if args.compiled or args.interleaved else ["mnist"])
    if args.compiled:
        print(_compiled_table(chosen, args.out, repeats=args.repeats or 3))
    elif args.interleaved:
        print(_interleaved_table(chosen, args.out))
    else:
        for name in chosen:
            print(name, alone(name))


if __name__ == "__main__":
    main()
