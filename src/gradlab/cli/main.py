"""The ``gradlab`` command: train, search, export, info, bench.

Exit codes: 0 success; 1 training failed (non-finite loss); 2 bad input (unknown option or
dataset, unreadable data, unavailable device, unwritable output directory).
"""
from __future__ import annotations

import argparse
import os
import sys

from .model import ACTIVATIONS, OPTIMIZERS, SCHEDULES


class UsageError(Exception):
    """Bad input from the command line; printed without a traceback, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that lists the valid options when it meets an unknown one."""

    def error(self, message):
        if "unrecognized arguments" in message:
            options = sorted({s for a in self._actions for s in a.option_strings
                              if s.startswith("--")})
            message += "\nvalid options: " + " ".join(options)
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _data_options(p):
    p.add_argument("--dataset", default="digits", metavar="NAME",
                   help="digits | spirals | moons | circles | csv:PATH | npz:PATH | idx:DIR "
                        "(default: digits, the bundled 8x8 handwritten digits)")
    p.add_argument("--label", default="-1", metavar="COLUMN",
                   help="label column of a CSV file, by index or header name (default: last)")
    p.add_argument("--delimiter", default=",", metavar="CHAR",
                   help="cell separator of a CSV file: one character, or 'tab' (default ,)")
    p.add_argument("--val-split", type=float, default=0.1, metavar="FRACTION",
                   help="fraction of the training data held out for validation (default 0.1; "
                        "0 trains on all of it)")
    p.add_argument("--test-split", type=float, default=0.2, metavar="FRACTION",
                   help="fraction held out as the test set, stratified (default 0.2; ignored "
                        "when the data has its own test files)")
    p.add_argument("--seed", type=int, default=0, help="seed for splits, init and shuffling")
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda",
                   help="where to train (default auto: CUDA when available, else CPU)")


def _model_options(p):
    p.add_argument("--hidden", default="128,64", metavar="SIZES",
                   help="hidden layer widths, comma-separated (default 128,64; '' for none)")
    p.add_argument("--activation", default="relu", choices=list(ACTIVATIONS))
    p.add_argument("--dropout", type=float, default=0.0, metavar="P")
    p.add_argument("--batchnorm", action=argparse.BooleanOptionalAction, default=True,
                   help="BatchNorm1d after each hidden Linear (default on)")
    p.add_argument("--optimizer", default="adam", choices=list(OPTIMIZERS))
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (default: the optimizer's own, as in PyTorch: 1e-3 "
                        "for sgd, adam, adamw and radam, 2e-3 for adamax and nadam, 1e-2 "
                        "for rmsprop and adagrad, 1.0 for adadelta)")
    p.add_argument("--momentum", type=float, default=0.0, help="for sgd and rmsprop")
    p.add_argument("--weight-decay", type=float, default=0.0, metavar="WD")
    p.add_argument("--l1", type=float, default=0.0, metavar="LAMBDA",
                   help="L1 penalty on the weight matrices")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--schedule", default="none", choices=list(SCHEDULES))
    p.add_argument("--early-stopping", type=int, default=0, metavar="PATIENCE",
                   help="stop after PATIENCE epochs without a better validation loss "
                        "(default 0: off)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="train with a compiled step: each batch shape is recorded in two "
                        "eager steps, then replayed without building graphs (a CUDA graph "
                        "on a GPU); same results as eager, bit for bit on the CPU. Default: "
                        "on for `train` on the CPU (not with --distributed), off on a GPU "
                        "and for `search`")


def build_parser():
    parser = _Parser(prog="gradlab", description="Train and tune MLPs with gradlab.")
    sub = parser.add_subparsers(dest="command", metavar="{train,search,export,info,bench}",
                                parser_class=_Parser)
    parser.commands = sub.choices  # name -> sub-parser, to report unknown options there

    train = sub.add_parser("train", help="train an MLP and report its test accuracy",
                           description="Train an MLP (default: on the bundled digits) and "
                                       "print its test accuracy.")
    _data_options(train)
    _model_options(train)
    train.add_argument("--out", metavar="DIR",
                       help="a new or empty directory for this run: its manifest "
                            "(gradlab-run.json), checkpoints, metrics.json, history.csv, "
                            "best_model.gl, curves.png; a directory holding anything else is "
                            "refused (see --overwrite)")
    train.add_argument("--overwrite", action="store_true",
                       help="with --out DIR holding another run or other files: move them "
                            "aside to DIR.old-<time> (nothing is deleted), then start afresh")
    train.add_argument("--checkpoint-every", type=int, default=None, metavar="STEPS",
                       help="with --out, write a crash-safe checkpoint (ckpt-*.gl) every STEPS "
                            "optimizer steps (default: once per epoch)")
    train.add_argument("--resume", metavar="DIR",
                       help="continue the run whose --out was DIR from its newest checkpoint, "
                            "with that run's options, to the same result as if never stopped; "
                            "refused if its data changed. Only --epochs may be given, to "
                            "extend the run; any other option that differs is refused")
    train.add_argument("--tensorboard", nargs="?", const="", default=None, metavar="DIR",
                       help="write TensorBoard events (per-epoch losses, metrics, lr; weight "
                            "histograms every --histogram-every epochs) to DIR, new or empty; "
                            "with --out, DIR defaults to OUT/tensorboard")
    train.add_argument("--histogram-every", type=int, default=5, metavar="N",
                       help="with --tensorboard: weight histograms every N epochs (default 5; "
                            "0: none)")
    train.add_argument("--quiet", action="store_true", help="print only the result line")
    train.add_argument("--distributed", action="store_true",
                       help="data-parallel training over the processes of `mpiexec -n N "
                            "gradlab train --distributed ...` (MPI on the CPU, NCCL with "
                            "--device cuda): --batch-size is the global batch, split evenly "
                            "over the N ranks; rank 0 prints and writes --out")

    search = sub.add_parser("search", help="grid or random hyper-parameter search",
                            description="Search hyper-parameters; the other options fix the "
                                        "values that are not searched.")
    _data_options(search)
    _model_options(search)
    search.add_argument("--method", choices=["grid", "random"], default="random")
    search.add_argument("--param", action="append", default=[], metavar="NAME=SPEC",
                        help="a searched option: v1|v2|v3 (choice), uniform:A:B, "
                             "loguniform:A:B or int:A:B[:STEP]; repeat for more")
    search.add_argument("--spec", metavar="JSON",
                        help="a JSON file (or inline JSON) with a 'space' object (and "
                             "optionally method, trials, time_budget, scoring, folds)")
    search.add_argument("--trials", type=int, default=None,
                        help="trial budget (default: 10 for random, the whole grid for grid)")
    search.add_argument("--time-budget", type=float, default=None, metavar="SECONDS")
    search.add_argument("--scoring", choices=["holdout", "kfold"], default="holdout")
    search.add_argument("--folds", type=int, default=3)
    search.add_argument("--jobs", type=int, default=1,
                        help="parallel worker processes (with --scheduler: trials in flight "
                             "at once, default one per worker thread)")
    search.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                        help="run the trials on the Dask cluster of this scheduler (start it "
                             "with `dask scheduler`, workers with `dask worker ADDRESS`; "
                             "needs pip install 'gradlab[dask]')")
    search.add_argument("--scheduler-timeout", type=float, default=10.0, metavar="SECONDS",
                        help="how long to wait for the scheduler and a first worker "
                             "(default 10)")
    search.add_argument("--executor", choices=["local", "mpi"], default="local",
                        help="local: this machine (--jobs processes); mpi: the other ranks "
                             "of `mpiexec -n N python -m mpi4py.futures -m gradlab search "
                             "--executor mpi ...` (needs pip install 'gradlab[mpi]')")
    search.add_argument("--results", default="search_results.csv", metavar="CSV",
                        help="the results table (default search_results.csv), written a row "
                             "per finished trial, ranked at the end")
    search.add_argument("--resume", action="store_true",
                        help="continue the search whose --results CSV a killed run left: "
                             "the trials there are kept, the rest run; refused if the CSV "
                             "comes from a different search")
    search.add_argument("--halving", action="store_true",
                        help="successive halving: every trial trains a few epochs, the best "
                             "1/ETA of them ETA times as many, ... up to --epochs")
    search.add_argument("--eta", type=int, default=3,
                        help="with --halving: the fraction 1/ETA promoted per rung (default 3)")
    search.add_argument("--min-epochs", type=int, default=1, metavar="N",
                        help="with --halving: the fewest epochs of a rung (default 1)")
    search.add_argument("--quiet", action="store_true")

    from .export import add_parser as add_export
    add_export(sub)
    sub.add_parser("info", help="versions, device, CuPy/GPU and kernel status")
    bench = sub.add_parser("bench", help="run the benchmark suite's quick summary, or "
                                         "`bench optim`: optimizer kernels against PyTorch",
                           description="Without a sub-command: the benchmark suite's quick "
                                       "summary (a source checkout's benchmarks/run.py).")
    bench.add_argument("--full", action="store_true", help="all rounds, not the quick summary")
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="{optim}",
                                     parser_class=_Parser)
    from ..bench.optim import DESCRIPTION, add_arguments
    add_arguments(bench_sub.add_parser(
        "optim", help="time the fused optimizer steps against PyTorch's, with a roofline",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter))
    bench.commands = bench_sub.choices
    return parser


def given_options(argv):
    """The dests of the options ``argv`` actually gives (not filled in from defaults)."""
    parser = build_parser()
    for sub in [parser, *parser.commands.values()]:
        for action in sub._actions:
            if action.dest != "command":
                action.default = argparse.SUPPRESS
    args, _ = parser.parse_known_args(argv)
    return set(vars(args)) - {"command"}


def main(argv=None):
    """Entry point of the ``gradlab`` console script; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        target = parser.commands.get(args.command, parser)
        target = getattr(target, "commands", {}).get(getattr(args, "bench_command", None),
                                                     target)
        target.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return 2
    args._given = given_options(argv)
    try:
        return _run(args)
    except Exception as exc:  # a bug, not bad input: say so briefly, without a traceback
        where = exc.__traceback__
        while where.tb_next is not None:
            where = where.tb_next
        site = f"{os.path.basename(where.tb_frame.f_code.co_filename)}:{where.tb_lineno}"
        print(f"gradlab {args.command}: internal error: {type(exc).__name__}: {exc} (at "
              f"{site}); this is a bug in gradlab, please report it with the command line "
              "you ran", file=sys.stderr)
        return 1


def _run(args):
    from ..backend import DeviceUnavailableError
    from ..data.files import DataFormatError
    from ..distributed.group import DistributedError
    from ..serialization import SerializationError
    from ..train.checkpoint import CheckpointError
    from ..train.loop import NonFiniteLossError
    from . import commands
    from .model import ConfigError
    try:
        return getattr(commands, f"cmd_{args.command}")(args)
    except (UsageError, ConfigError, DataFormatError, DeviceUnavailableError,
            FileNotFoundError, IsADirectoryError, NotADirectoryError, CheckpointError,
            SerializationError) as exc:
        print(f"gradlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except NonFiniteLossError as exc:
        print(f"gradlab {args.command}: training stopped: {exc}", file=sys.stderr)
        return 1
    except DistributedError as exc:
        print(f"gradlab {args.command}: distributed run failed: {exc}", file=sys.stderr,
              flush=True)
        return 1
    except KeyboardInterrupt:
        print(f"gradlab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
