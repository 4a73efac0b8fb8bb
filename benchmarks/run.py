"""Run the benchmark comparisons and write benchmarks/results/<machine>-<date>.{json,md}.

    python benchmarks/run.py            # everything
    python benchmarks/run.py --quick    # fewer rounds (what `gradlab bench` runs)
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import cases  # noqa: E402
from benchmarks.harness import compare, machine_info, torch, write_results  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--tag", default="cpu", help="machine tag for the file name")
    args = parser.parse_args(argv)
    rounds = 5 if args.quick else 15
    if torch is not None:
        torch.set_num_threads(os.cpu_count() or 1)
    results = []
    for shape in ("tiny", "small"):
        sizes, batch = cases.MLP_SHAPES[shape]
        gl_fn, th_fn = cases.mlp_forward_backward(sizes, batch)
        r = compare(f"mlp fwd+bwd {'-'.join(map(str, sizes))} b{batch}", gl_fn, th_fn,
                    rounds=rounds)
        results.append(r)
        print(f"{r.case:45s} gradlab {r.gradlab_s * 1e6:9.1f} us   torch "
              f"{(r.torch_s or 0) * 1e6:9.1f} us   ratio "
              f"{'n/a' if r.ratio is None else f'{r.ratio:.2f}'}", flush=True)
    stem = os.path.join(args.out, f"{args.tag}-{datetime.date.today().isoformat()}")
    write_results(results, stem, "gradlab benchmarks", machine_info())
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
