"""``gradlab bench optim``: gradlab's fused optimizer steps against PyTorch's for-loop,
foreach and fused steps, over a log-spaced sweep of sizes, each against a memory roofline
measured in the same process on buffers of the same total size.

Self-contained on purpose (numpy, gradlab's backend entry points, optional torch and
matplotlib): it runs from an installed wheel, where ``benchmarks/`` does not exist.
"""
from __future__ import annotations

import datetime
import sys
import time

from .cases import DESCRIPTION, FLAG_ABOVE, SPECS, WARMUP_STEPS, InputError, add_arguments
from .options import config_from_args, prepare_out_dir
from .report import _progress_line, fmt_time, summary, write_report
from .timing import CpuTarget, CudaTarget, _import_torch, host_arrays, machine_info, run_case, split

__all__ = ["DESCRIPTION", "InputError", "add_arguments", "main", "run"]


def run(cfg, log=print):
    """The whole sweep; returns the report (what the JSON holds)."""
    torch, torch_why, omp_policy = _import_torch(cfg.torch)
    target = CpuTarget(cfg.device) if cfg.device == "cpu" else CudaTarget(cfg.device)
    started = time.time()
    results = []
    with target.context():
        # Size by size, so that the starting arrays are drawn once per size.
        for total in cfg.sizes:
            host = host_arrays(split(total, cfg.tensors), cfg.dtype, seed=total)
            for name in cfg.optimizers:
                record = run_case(target, SPECS[name], total, cfg, torch, torch_why, host)
                results.append(record)
                log(_progress_line(record))
            del host
        results.sort(key=lambda r: (cfg.optimizers.index(r["optimizer"]), r["size"]))
        info = machine_info(target, torch)
    if omp_policy:
        info["torch_omp_wait_policy"] = omp_policy
    return {"command": "gradlab bench optim", "date": datetime.date.today().isoformat(),
            "seconds": round(time.time() - started, 1),
            "config": {"optimizers": cfg.optimizers, "sizes": cfg.sizes,
                       "tensors": cfg.tensors, "dtype": cfg.dtype.name, "device": cfg.device,
                       "repeats": cfg.repeats, "block_time_s": cfg.block_time,
                       "warmup_steps": WARMUP_STEPS, "flag_above": FLAG_ABOVE,
                       "torch": cfg.torch},
            "machine": info,
            "bytes_per_param": {n: {"bytes": SPECS[n].words * cfg.dtype.itemsize,
                                    "reads": list(SPECS[n].reads),
                                    "writes": list(SPECS[n].writes),
                                    "assumes": SPECS[n].assumes,
                                    "options": SPECS[n].options} for n in cfg.optimizers},
            "torch_note": torch_why, "results": results, "summary": summary(results)}


def main(args, log=print):
    """``gradlab bench optim``: check the options, run the sweep, write the results.
    Raises InputError for bad input; returns the exit code."""
    cfg = config_from_args(args)
    moved = prepare_out_dir(cfg.out, cfg.overwrite)
    if moved:
        log(f"moved the old contents of {cfg.out} to {moved}")
    report = run(cfg, log=log)
    paths, note = write_report(report, cfg.out)
    if note:
        print(f"gradlab bench optim: {note}", file=sys.stderr)
    for row in report["summary"]:
        if row["torch_fastest"]:
            log(f"{row['optimizer']} at {row['size']:,}: gradlab {fmt_time(row['gradlab_s'])} "
                f"vs {row['torch_fastest']} {fmt_time(row['torch_s'])} "
                f"(gradlab/torch {row['gradlab_over_torch']:.2f})")
    log("wrote " + ", ".join(paths))
    bad = [f"{r['optimizer']} {r['size']}" for r in report["results"]
           if not r["params_finite_after"]]
    if bad:  # the timings measured a diverged state: not a usage error, but not a result
        print(f"gradlab bench optim: non-finite parameters after timing {', '.join(bad)}",
              file=sys.stderr)
        return 1
    return 0
