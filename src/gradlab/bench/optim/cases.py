"""What ``gradlab bench optim`` times: the optimizers as benchmarked (their options and
the arrays one step reads and writes), the PyTorch variants, and the timing constants the
help text, the timing and the report share."""
from __future__ import annotations

from dataclasses import dataclass

# A measured rate may exceed its bound by noise alone; beyond this the table says "above
# roofline" instead of printing a fraction that would pretend to be one.
FLAG_ABOVE = 1.05
WARMUP_STEPS = 3
MAX_BATCH = 1 << 16
RESOLUTION_FACTOR = 1000        # a timed block lasts at least this many timer ticks
CUDA_EVENT_RESOLUTION_S = 5e-7  # cudaEventElapsedTime: "resolution of around 0.5 us"
DEFAULT_SIZES = {"cpu": "1e4:1e7", "cuda": "1e4:1e8"}
POINTS_PER_DECADE = 3
FILE_STEM = "bench-optim"


class InputError(ValueError):
    """A bad option of ``gradlab bench optim``; the CLI prints it and exits with 2."""


@dataclass(frozen=True)
class Spec:
    """One optimizer as benchmarked: PyTorch's class name and options (gradlab takes the
    same), and the arrays one step must read and write, which is what the bytes count."""
    name: str
    torch_class: str
    options: dict
    reads: tuple
    writes: tuple
    assumes: str

    @property
    def words(self):
        return len(self.reads) + len(self.writes)

    @property
    def arrays(self):  # distinct arrays a step touches: p, g and the state
        return len(set(self.reads) | set(self.writes))


SPECS = {s.name: s for s in (
    Spec("sgd", "SGD", {"lr": 0.01, "momentum": 0.9}, ("p", "g", "buf"), ("p", "buf"),
         "momentum=0.9, dampening=0, nesterov=False, weight_decay=0; from the second step "
         "(the first writes buf = g without reading buf); without momentum it is 12 B "
         "(p, g read, p written)"),
    Spec("adam", "Adam", {"lr": 1e-3}, ("p", "g", "exp_avg", "exp_avg_sq"),
         ("p", "exp_avg", "exp_avg_sq"),
         "amsgrad=False (amsgrad adds a read and a write of max_exp_avg_sq), weight_decay=0"),
    Spec("adamw", "AdamW", {"lr": 1e-3, "weight_decay": 0.01},
         ("p", "g", "exp_avg", "exp_avg_sq"), ("p", "exp_avg", "exp_avg_sq"),
         "amsgrad=False, weight_decay=0.01 (decoupled: no extra array)"),
    Spec("rmsprop", "RMSprop", {"lr": 0.01}, ("p", "g", "square_avg"), ("p", "square_avg"),
         "momentum=0, centered=False (each adds a read and a write of one more buffer)"),
    Spec("adagrad", "Adagrad", {"lr": 0.01}, ("p", "g", "sum"), ("p", "sum"),
         "lr_decay=0, weight_decay=0"),
    Spec("adadelta", "Adadelta", {"lr": 1.0}, ("p", "g", "square_avg", "acc_delta"),
         ("p", "square_avg", "acc_delta"), "weight_decay=0"),
    Spec("adamax", "Adamax", {"lr": 2e-3}, ("p", "g", "exp_avg", "exp_inf"),
         ("p", "exp_avg", "exp_inf"), "weight_decay=0"),
    Spec("nadam", "NAdam", {"lr": 2e-3}, ("p", "g", "exp_avg", "exp_avg_sq"),
         ("p", "exp_avg", "exp_avg_sq"), "weight_decay=0, momentum_decay=4e-3"),
    Spec("radam", "RAdam", {"lr": 1e-3}, ("p", "g", "exp_avg", "exp_avg_sq"),
         ("p", "exp_avg", "exp_avg_sq"),
         "weight_decay=0; with beta2 0.999 steps 1-5 take the momentum-only branch, every "
         "later one the rectified step"),
)}

# Constructor options per PyTorch variant. The for-loop is asked for explicitly: PyTorch's
# default (None) picks foreach on CUDA.
TORCH_VARIANTS = {"torch-forloop": {"foreach": False}, "torch-foreach": {"foreach": True},
                  "torch-fused": {"fused": True}}

DESCRIPTION = f"""\
Time one optimizer step of gradlab's fused kernel (the backend entry point, one call per
group) and of PyTorch's for-loop, foreach and fused steps (where torch is installed and has
them; otherwise the column is skipped with a note), for each optimizer and each total size
of a log-spaced sweep, split over --tensors equal tensors.

What each row reports:
  time        median seconds per step over --repeats timed blocks, with the interquartile
              range (and min/max in the JSON)
  bytes       what the update must read and write, counted once per array: fp32 Adam reads
              p, g, m, v and writes p, m, v = 28 B per parameter; SGD with momentum 20 B;
              RMSprop and Adagrad 20 B; Adadelta, Adamax, NAdam and RAdam 28 B
              (float64: twice that). The options
              each count assumes are listed in the table.
  GB/s        bytes / median time
  fraction    of a memory roofline measured in the same process, interleaved with the
              steps, on buffers of the same total size and dtype: the best of a copy
              (b = a) and an in-place add (a += b, the read-modify-write pattern of an
              optimizer's state), on 1 thread and on the threads the kernels use. It is
              the ratio per round, then the median. Above {FLAG_ABOVE} it is not a
              fraction: the table says "above roofline".

Timing: {WARMUP_STEPS} warm-up steps, then steps are batched so that one timed block lasts
at least --block-time and at least {RESOLUTION_FACTOR} ticks of the timer (its resolution
is measured and recorded), then --repeats blocks per implementation, interleaved and
rotated, so that a change in machine load hits every column alike. CPU: time.perf_counter;
gradlab's kernels, torch and the roofline all use the same thread count: GRADLAB_NUM_THREADS
when set, else every core this process may use; torch's OpenMP threads wait passively
(OMP_WAIT_POLICY=PASSIVE unless you set it), since spinning ones take the cores from the
next thing timed. CUDA: CUDA events around each block, after
synchronizing the device (CuPy's events for gradlab and the roofline, torch's for torch).

Writes DIR/{FILE_STEM}.json (every measurement), DIR/{FILE_STEM}.md (the tables) and
DIR/{FILE_STEM}.png (GB/s against size per implementation, roofline dashed; needs
matplotlib). DIR defaults to ./gradlab-bench-<date> in the current directory.

examples:
  gradlab bench optim
  gradlab bench optim --optimizers adam,sgd --sizes 1e4:1e7 --tensors 10
  gradlab bench optim --device cuda --sizes 1e4:1e8:9 --out results/h200
"""


def add_arguments(parser):
    """The options of ``gradlab bench optim`` on an argparse parser."""
    parser.add_argument("--optimizers", default="all", metavar="NAMES",
                        help=f"comma-separated, from {','.join(SPECS)} (default: all)")
    parser.add_argument("--sizes", default=None, metavar="SPEC",
                        help="total parameters per step: A:B (log-spaced, "
                             f"{POINTS_PER_DECADE} points per decade, both ends included), "
                             "A:B:N (N points) or a list A,B,C (default "
                             f"{DEFAULT_SIZES['cpu']} on the CPU, {DEFAULT_SIZES['cuda']} on "
                             "CUDA)")
    parser.add_argument("--tensors", type=int, default=100, metavar="N",
                        help="split each total over N tensors of equal size (default 100)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--device", default="cpu", metavar="cpu|cuda[:N]",
                        help="where to run (default cpu)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="results directory (default ./gradlab-bench-<date>); a "
                             "directory holding files is refused unless --overwrite")
    parser.add_argument("--overwrite", action="store_true",
                        help="with --out DIR holding files: move them aside to "
                             "DIR.old-<time> first (nothing is deleted)")
    parser.add_argument("--repeats", type=int, default=7, metavar="N",
                        help="timed blocks per implementation and size (default 7)")
    parser.add_argument("--block-time", type=float, default=0.005, metavar="SECONDS",
                        help="minimum length of one timed block; short steps are batched "
                             "to reach it (default 0.005)")
    parser.add_argument("--no-torch", action="store_true",
                        help="time gradlab and the roofline only")


def kwargs_text(options):
    """A Spec's options as they read in a call: ``lr=0.001, weight_decay=0.01``."""
    return ", ".join(f"{k}={v}" for k, v in options.items())
