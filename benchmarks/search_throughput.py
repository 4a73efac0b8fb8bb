"""Search throughput: 16 small trials one after another, in 2 local worker processes
(n_jobs=2), and on a Dask cluster on loopback (a `dask scheduler` and two `dask worker`
processes of one thread each, started here, the way tests/dask_cluster.py starts them).

    python benchmarks/search_throughput.py [--trials 16] [--epochs 30] [--out STEM]

Each way runs the same search twice (the first run pays for starting processes and
importing gradlab in them; both are reported) and must give the same results table as the
serial run (scores, not seconds), else the script fails. Writes STEM.json and STEM.md.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))  # dask_cluster: the tests' loopback cluster


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", default=None, metavar="STEM",
                        help="write STEM.json and STEM.md (default: print only)")
    args = parser.parse_args(argv)
    os.environ.setdefault("GRADLAB_DEVICE", "cpu")

    from gradlab.cli.model import build_trial
    from gradlab.data import make_moons
    from gradlab.train import loguniform, random_search
    X, y = make_moons(400, noise=0.2, seed=0)
    fixed = {"in_features": 2, "classes": 2, "n_train": 320, "hidden": "32,32",
             "activation": "relu", "dropout": 0.0, "batchnorm": False, "optimizer": "adam",
             "lr": 1e-3, "momentum": 0.0, "weight_decay": 0.0, "epochs": args.epochs,
             "batch_size": 32, "schedule": "none"}
    build = functools.partial(build_trial, fixed)
    space = {"lr": loguniform(1e-4, 1e-1), "hidden": ["16", "32,32"]}

    def search(**where):
        start = time.perf_counter()
        result = random_search(build, space, (X, y), n_trials=args.trials,
                               epochs=args.epochs, refit=False, seed=0, **where)
        table = [{k: v for k, v in r.items() if k != "seconds"} for r in result.results]
        return time.perf_counter() - start, table

    rows, reference = [], None

    def measure(name, **where):
        nonlocal reference
        times = []
        for _ in range(2):
            seconds, table = search(**where)
            times.append(seconds)
            if reference is None:
                reference = table
            elif table != reference:
                raise SystemExit(f"{name}: the results table differs from the serial run's")
        rows.append({"way": name, "first_s": times[0], "second_s": times[1],
                     "trials_per_s": args.trials / times[1]})
        print(f"{name:<34} first {times[0]:6.2f} s   again {times[1]:6.2f} s   "
              f"{args.trials / times[1]:6.1f} trials/s", flush=True)

    measure("serial (this process)")
    measure("2 local processes (n_jobs=2)", n_jobs=2)
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise SystemExit("dask.distributed is not installed: make dask (or pip install "
                         "'.[dask]'), then run this again") from None
    import dask_cluster
    with tempfile.TemporaryDirectory() as d, dask_cluster.cluster(d) as (address, client):
        measure("Dask, 2 workers x 1 thread", executor=client.get_executor(), n_jobs=2)

    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                         f"{platform.platform()}", "python": platform.python_version(),
              "load_average": os.getloadavg()[0],
              "trials": args.trials, "epochs": args.epochs, "rows": rows,
              "note": "first: includes starting worker processes / importing gradlab in "
                      "them; again: the same search once more on the warm pool/cluster "
                      "(the local n_jobs pool is started anew for each search)"}
    if args.out:
        with open(args.out + ".json", "w") as f:
            json.dump(report, f, indent=1)
        with open(args.out + ".md", "w") as f:
            f.write(f"# Search throughput: {args.trials} trials of {args.epochs} epochs\n\n"
                    f"{report['machine']}, Python {report['python']}, load average "
                    f"{report['load_average']:.1f} at the end. {report['note']}.\n\n"
                    "| way | first (s) | again (s) | trials/s (again) |\n|---|---|---|---|\n")
            for r in rows:
                f.write(f"| {r['way']} | {r['first_s']:.2f} | {r['second_s']:.2f} | "
                        f"{r['trials_per_s']:.1f} |\n")
        print(f"wrote {args.out}.json and {args.out}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
