"""``gradlab bench optim``: gradlab's fused optimizer steps against PyTorch's for-loop,
foreach and fused steps, over a log-spaced sweep of sizes, each against a memory roofline
measured in the same process on buffers of the same total size.

Self-contained on purpose (numpy, gradlab's backend entry points, optional torch and
matplotlib): it runs from an installed wheel, where ``benchmarks/`` does not exist.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field

import numpy as np

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
              RMSprop and Adagrad 20 B; Adadelta 28 B (float64: twice that). The options
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


# -- options ---------------------------------------------------------------------------------
@dataclass
class Config:
    optimizers: list
    sizes: list
    tensors: int
    dtype: np.dtype
    device: str
    out: str
    overwrite: bool
    repeats: int
    block_time: float
    torch: bool


_SIZES_HELP = ("write e.g. 1e4:1e7 (log-spaced, 3 points per decade), 1e4:1e7:7 (7 points) "
               "or 1e5,1e6")


def _count(text, spec):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 1 and value == int(value) and value <= 1e11):
        raise InputError(f"--sizes {spec!r}: {text.strip()!r} is not a whole number of "
                         f"parameters from 1 to 1e11; {_SIZES_HELP}")
    return int(value)


def parse_sizes(spec):
    """Total sizes of the sweep from ``A:B``, ``A:B:N`` or ``A,B,C`` (sorted, unique)."""
    text = spec.strip()
    if not text:
        raise InputError(f"--sizes is empty; {_SIZES_HELP}")
    if ":" not in text:
        return sorted({_count(t, spec) for t in text.split(",")})
    parts = text.split(":")
    if len(parts) > 3:
        raise InputError(f"--sizes {spec!r} has {len(parts) - 1} colons; {_SIZES_HELP}")
    lo, hi = _count(parts[0], spec), _count(parts[1], spec)
    if hi < lo:
        raise InputError(f"--sizes {spec!r}: the range runs downwards ({lo} > {hi}); give "
                         "the smaller size first")
    if len(parts) == 3:
        try:
            points = int(parts[2])
        except ValueError:
            points = 0
        if points < 1:
            raise InputError(f"--sizes {spec!r}: {parts[2]!r} is not a number of points >= 1; "
                             f"{_SIZES_HELP}")
    else:
        points = max(2, round(POINTS_PER_DECADE * math.log10(hi / lo)) + 1)
    if lo == hi or points == 1:
        return [lo] if points == 1 or lo == hi else [lo, hi]
    return sorted({int(round(v)) for v in np.geomspace(lo, hi, points)})


def parse_optimizers(text):
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    if names == ["all"]:
        return list(SPECS)
    unknown = [n for n in names if n not in SPECS]
    if unknown or not names:
        what = f"unknown optimizer {unknown[0]!r}" if unknown else "no optimizer named"
        raise InputError(f"--optimizers {text!r}: {what}; valid: {','.join(SPECS)} or all "
                         "(the optimizers gradlab fuses)")
    return list(dict.fromkeys(names))


def _check_device(spec):
    from ..backend import get_backend
    text = spec.strip().lower()
    if text != "cpu" and not (text == "cuda" or text.startswith("cuda:")):
        raise InputError(f"--device {spec!r}: valid choices are cpu, cuda and cuda:N")
    try:
        get_backend(text)  # DeviceUnavailableError says why CUDA is missing
    except ValueError as exc:
        raise InputError(f"--device {spec!r}: {exc}; valid choices are cpu, cuda and "
                         "cuda:N") from None
    return text


def config_from_args(args, today=None):
    """Check every option (nothing is written or timed yet); raises InputError."""
    if args.tensors < 1:
        raise InputError(f"--tensors must be >= 1, got {args.tensors}")
    if args.repeats < 1:
        raise InputError(f"--repeats must be >= 1, got {args.repeats} (7 gives a median "
                         "with a meaningful spread)")
    if not (math.isfinite(args.block_time) and 0 <= args.block_time <= 60):
        raise InputError(f"--block-time must be seconds from 0 to 60, got {args.block_time}")
    optimizers = parse_optimizers(args.optimizers)
    device = _check_device(args.device)
    kind = "cpu" if device == "cpu" else "cuda"
    sizes = parse_sizes(args.sizes if args.sizes is not None else DEFAULT_SIZES[kind])
    if sizes[0] < args.tensors:
        raise InputError(f"--sizes starts at {sizes[0]} parameters, fewer than --tensors "
                         f"{args.tensors}: every tensor needs at least one; raise the sizes "
                         "or lower --tensors")
    today = today or datetime.date.today().isoformat()
    out = args.out if args.out is not None else f"gradlab-bench-{today}"
    cfg = Config(optimizers, sizes, args.tensors, np.dtype(args.dtype), device,
                 os.path.abspath(out), args.overwrite, args.repeats, args.block_time,
                 not args.no_torch)
    check_out_dir(cfg.out, cfg.overwrite, given=args.out is not None)
    check_memory(cfg)
    return cfg


def check_out_dir(directory, overwrite, given=True):
    """Refuse a file, or a directory holding anything, unless ``overwrite``. Reads only."""
    flag = "--out" if given else "the default results directory"
    if not os.path.exists(directory):
        return
    if not os.path.isdir(directory):
        raise InputError(f"{flag} {directory!r} is an existing file, not a directory; give "
                         "the path of a directory (it is created if missing)")
    entries = sorted(os.listdir(directory))
    if entries and not overwrite:
        shown = ", ".join(entries[:4]) + (f" and {len(entries) - 4} more"
                                          if len(entries) > 4 else "")
        raise InputError(f"{flag} {directory!r} already holds {shown}; choose another --out, "
                         f"or pass --overwrite to move them aside to "
                         f"{directory.rstrip(os.sep)}.old-<time>")


def _available_bytes(device):
    if device == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            return None
        return None
    try:
        import cupy
        index = int(device.split(":")[1]) if ":" in device else 0
        with cupy.cuda.Device(index):
            return int(cupy.cuda.runtime.memGetInfo()[0])
    except Exception:  # a stand-in or an old CuPy without memGetInfo: no check
        return None


def needed_bytes(cfg):
    """Peak bytes of one case: every implementation's arrays live at once (one set for
    gradlab, one per torch variant), plus the roofline's two buffers and a torch
    temporary or two."""
    sets = 1 + (len(TORCH_VARIANTS) if cfg.torch else 0)
    arrays = max(SPECS[n].arrays for n in cfg.optimizers) * sets + 4
    return arrays * max(cfg.sizes) * cfg.dtype.itemsize


def check_memory(cfg):
    need, have = needed_bytes(cfg), _available_bytes(cfg.device)
    if have is not None and need > 0.8 * have:
        raise InputError(f"--sizes up to {max(cfg.sizes):.3g} needs about {need / 1e9:.1f} GB "
                         f"on {cfg.device} but {have / 1e9:.1f} GB is free; lower the largest "
                         "size (or pass --no-torch, which keeps one set of arrays)")


def prepare_out_dir(directory, overwrite):
    """Create ``directory``, prove it is writable, and with ``overwrite`` move what it holds
    to a new sibling DIR.old-<time>. Returns that path or None."""
    moved = None
    try:
        os.makedirs(directory, exist_ok=True)
        entries = sorted(os.listdir(directory))
        if entries and overwrite:
            base = directory.rstrip(os.sep)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            moved, n = f"{base}.old-{stamp}", 1
            while os.path.exists(moved):
                n += 1
                moved = f"{base}.old-{stamp}-{n}"
            os.mkdir(moved)
            for name in entries:
                os.rename(os.path.join(directory, name), os.path.join(moved, name))
        probe = os.path.join(directory, f".{FILE_STEM}-probe")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as exc:
        raise InputError(f"--out {directory!r} cannot be written: {exc.strerror or exc}; "
                         "choose a directory you can write to") from None
    return moved


# -- clocks ----------------------------------------------------------------------------------
def timer_resolution(samples=2000):
    """The smallest step perf_counter shows between two calls (the call's own cost
    included), or its documented resolution if larger."""
    best, last = math.inf, time.perf_counter()
    for _ in range(samples):
        now = time.perf_counter()
        if now > last:
            best = min(best, now - last)
        last = now
    return max(best, time.get_clock_info("perf_counter").resolution)


class HostClock:
    name = "time.perf_counter"

    def __init__(self):
        self.resolution = timer_resolution()

    def block(self, fn, k):
        t0 = time.perf_counter()
        for _ in range(k):
            fn()
        return (time.perf_counter() - t0) / k


class EventClock:
    """CUDA events around a block of ``k`` steps; the device is synchronized first so that
    no earlier work is counted."""
    resolution = CUDA_EVENT_RESOLUTION_S

    def __init__(self, name, make_event, elapsed_ms, synchronize):
        self.name, self._make, self._elapsed, self._sync = name, make_event, elapsed_ms, \
            synchronize

    def block(self, fn, k):
        self._sync()
        start, end = self._make(), self._make()
        start.record()
        for _ in range(k):
            fn()
        end.record()
        end.synchronize()
        return self._elapsed(start, end) / 1e3 / k


@dataclass
class Timed:
    """One implementation (or roofline kernel) being timed at one size."""
    name: str
    fn: object
    clock: object
    nbytes: int
    batch: int = 0
    times: list = field(default_factory=list)


def calibrate(clock, fn, min_block):
    """Steps per timed block so that a block lasts at least ``min_block`` seconds."""
    k = 1
    while True:
        # The smaller of two blocks: one stall on a shared machine must not set the batch.
        total = min(clock.block(fn, k), clock.block(fn, k)) * k
        if total >= min_block or k >= MAX_BATCH:
            return k
        k = min(MAX_BATCH, max(2 * k, math.ceil(k * 1.2 * min_block / max(total, 1e-9))))


# -- devices ---------------------------------------------------------------------------------
def _span(n, k, nparts):
    return n * k // nparts, n * (k + 1) // nparts


def _copy_part(k, nparts, dst, src):
    lo, hi = _span(dst.size, k, nparts)
    np.copyto(dst[lo:hi], src[lo:hi])


def _add_part(k, nparts, dst, src):
    lo, hi = _span(dst.size, k, nparts)
    np.add(dst[lo:hi], src[lo:hi], out=dst[lo:hi])


class CpuTarget:
    kind = "cpu"

    def __init__(self, device):
        from ..backend import cpu_jit, cpu_threads, get_backend
        self.device, self.be, self.xp = device, get_backend("cpu"), np
        self.threads = cpu_threads.get_num_threads()
        self._run_parts = cpu_threads.run_parts
        self.clock = HostClock()
        self.tier = "numba kernels (cpu_jit)" if cpu_jit.AVAILABLE else \
            "NumPy reference (numba not installed)"

    def context(self):
        return _nullcontext()

    def to_device(self, host):
        return host.copy()

    def roofline(self, src, dst):
        """(name, fn, words moved per element) of each roofline kernel."""
        run = self._run_parts
        kernels = [("copy 1 thread", lambda: np.copyto(dst, src), 2),
                   ("add 1 thread", lambda: np.add(dst, src, out=dst), 3)]
        if self.threads > 1:
            t = self.threads
            kernels += [(f"copy {t} threads", lambda: run(_copy_part, t, dst, src), 2),
                        (f"add {t} threads", lambda: run(_add_part, t, dst, src), 3)]
        return kernels

    def host(self, array):
        return array

    def torch_setup(self, torch):
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        return "cpu", self.clock, lambda: torch.set_num_threads(previous)

    def release(self):
        pass

    def describe(self):
        return {"device": "cpu", "threads": self.threads, "gradlab_tier": self.tier,
                "timer": self.clock.name, "timer_resolution_s": self.clock.resolution}


class CudaTarget:
    kind = "cuda"

    def __init__(self, device):
        import cupy

        from ..backend import get_backend
        self.device, self.be, self.xp, self.cupy = device, get_backend(device), cupy, cupy
        self.index = int(device.split(":")[1]) if ":" in device else 0
        self.clock = EventClock("CUDA events (cupy.cuda.Event)", cupy.cuda.Event,
                                cupy.cuda.get_elapsed_time,
                                cupy.cuda.Device(self.index).synchronize)

    def context(self):
        return self.cupy.cuda.Device(self.index)

    def to_device(self, host):
        return self.be.asarray(host)

    def roofline(self, src, dst):
        cp = self.cupy
        return [("copy", lambda: cp.copyto(dst, src), 2),
                ("add", lambda: cp.add(dst, src, out=dst), 3)]

    def host(self, array):
        return self.be.to_numpy(array)

    def torch_setup(self, torch):
        if not torch.cuda.is_available():
            raise RuntimeError(f"this torch build ({torch.__version__}) sees no CUDA device")
        dev = torch.device("cuda", self.index)
        clock = EventClock("CUDA events (torch.cuda.Event)",
                           lambda: torch.cuda.Event(enable_timing=True),
                           lambda a, b: a.elapsed_time(b),
                           lambda: torch.cuda.synchronize(dev))
        return dev, clock, lambda: torch.cuda.empty_cache()

    def release(self):
        self.cupy.get_default_memory_pool().free_all_blocks()

    def describe(self):
        info = {"device": self.device, "timer": self.clock.name,
                "timer_resolution_s": self.clock.resolution, "cupy": self.cupy.__version__}
        try:
            name = self.cupy.cuda.runtime.getDeviceProperties(self.index)["name"]
            info["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
        except Exception:
            pass
        return info


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# -- one case --------------------------------------------------------------------------------
def split(total, tensors):
    """``total`` elements over ``tensors`` sizes differing by at most one."""
    base, extra = divmod(total, tensors)
    return [base + (i < extra) for i in range(tensors)]


def host_arrays(sizes, dtype, seed):
    """Parameters in [-1, 1) and gradients in [-1e-3, 1e-3): with a fixed gradient every
    optimizer's state stays finite and out of the subnormal range (which would slow some
    CPUs down) over any number of steps. Float32 draws: 1e8 of them take a second, not
    several."""
    rng = np.random.default_rng(seed)
    p, g = [], []
    for n in sizes:
        a = rng.random(n, dtype=dtype)
        a *= 2
        a -= 1
        p.append(a)
        b = rng.random(n, dtype=dtype)
        b -= 0.5
        b *= 2e-3
        g.append(b)
    return p, g


def _gradlab_step(spec, be, p, g, state):
    count = [0]
    o = spec.options
    if spec.name == "sgd":
        def step():
            be.sgd_step(p, g, state[0], lr=o["lr"], momentum=o["momentum"], dampening=0.0,
                        nesterov=False, weight_decay=0.0, maximize=False, first_step=False)
    elif spec.name in ("adam", "adamw"):
        def step():
            count[0] += 1
            be.adam_step(p, g, state[0], state[1], None, step=count[0], lr=o["lr"],
                         beta1=0.9, beta2=0.999, eps=1e-8,
                         weight_decay=o.get("weight_decay", 0.0),
                         decoupled_weight_decay=spec.name == "adamw", amsgrad=False,
                         maximize=False)
    elif spec.name == "rmsprop":
        def step():
            be.rmsprop_step(p, g, state[0], None, None, lr=o["lr"], alpha=0.99, eps=1e-8,
                            weight_decay=0.0, momentum=0.0, centered=False, maximize=False)
    elif spec.name == "adagrad":
        def step():
            count[0] += 1
            be.adagrad_step(p, g, state[0], step=count[0], lr=o["lr"], lr_decay=0.0,
                            weight_decay=0.0, eps=1e-10, maximize=False)
    elif spec.name == "adadelta":
        def step():
            be.adadelta_step(p, g, state[0], state[1], lr=o["lr"], rho=0.9, eps=1e-6,
                             weight_decay=0.0, maximize=False)
    else:  # pragma: no cover - SPECS and this table are kept together
        raise KeyError(spec.name)
    return step


def _first_line(exc):
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
    return text[:160]


def _torch_step(torch, spec, variant, host_p, host_g, dev):
    params = [torch.as_tensor(h, device=dev).clone().requires_grad_() for h in host_p]
    for t, h in zip(params, host_g):
        t.grad = torch.as_tensor(h, device=dev).clone()
    opt = getattr(torch.optim, spec.torch_class)(params, **spec.options,
                                                 **TORCH_VARIANTS[variant])
    opt.step()  # the state is made here; an unsupported variant raises here at the latest
    return opt.step, params


def _stats(times):
    q = np.percentile(times, [0, 25, 50, 75, 100])
    return {"median_s": float(q[2]), "iqr_s": [float(q[1]), float(q[3])],
            "min_s": float(q[0]), "max_s": float(q[4]), "times_s": [float(t) for t in times]}


def run_case(target, spec, total, cfg, torch, torch_why, host):
    """Time every implementation and the roofline kernels at one total size; ``host`` holds
    the starting parameters and gradients (host_arrays). Returns the case's record."""
    nbytes = spec.words * total * cfg.dtype.itemsize
    host_p, host_g = host
    n_state = spec.arrays - 2
    timed, notes, keep = [], {}, []

    src = target.to_device(np.full(total, 1e-3, dtype=cfg.dtype))
    dst = target.to_device(np.ones(total, dtype=cfg.dtype))
    roof = [Timed(f"roofline: {name}", fn, target.clock, words * total * cfg.dtype.itemsize)
            for name, fn, words in target.roofline(src, dst)]

    p = [target.to_device(h) for h in host_p]
    g = [target.to_device(h) for h in host_g]
    # SGD's buffer starts as the gradient (as after PyTorch's first step); others at zero.
    state = [[target.to_device(h if spec.name == "sgd" else np.zeros_like(h)) for h in host_g]
             for _ in range(n_state)]
    timed.append(Timed("gradlab", _gradlab_step(spec, target.be, p, g, state), target.clock,
                       nbytes))
    restore = None
    if torch is None:
        notes.update({v: torch_why for v in TORCH_VARIANTS})
    else:
        try:
            dev, tclock, restore = target.torch_setup(torch)
        except RuntimeError as exc:
            notes.update({v: str(exc) for v in TORCH_VARIANTS})
        else:
            for variant in TORCH_VARIANTS:
                try:
                    fn, params = _torch_step(torch, spec, variant, host_p, host_g, dev)
                except Exception as exc:  # the variant is missing on this build/device
                    notes[variant] = (f"torch {torch.__version__} cannot run "
                                      f"{spec.torch_class}({_kwargs(TORCH_VARIANTS[variant])}) "
                                      f"on {target.kind}: {_first_line(exc)}")
                    continue
                keep.append(params)
                timed.append(Timed(variant, fn, tclock, nbytes))
    try:
        everything = roof + timed
        min_block = max(cfg.block_time, RESOLUTION_FACTOR * target.clock.resolution)
        for t in everything:
            for _ in range(WARMUP_STEPS):
                t.fn()
            t.batch = calibrate(t.clock, t.fn, min_block)
        for r in range(cfg.repeats):
            shift = r % len(everything)
            for t in everything[shift:] + everything[:shift]:
                t.times.append(t.clock.block(t.fn, t.batch))
        finite = bool(all(np.isfinite(target.host(a)).all() for a in (p[0], p[-1])))
    finally:
        if restore is not None:
            restore()
    record = _record(spec, total, cfg, nbytes, roof, timed, notes, finite)
    del p, g, state, keep, src, dst, roof, timed
    target.release()
    return record


def _kwargs(d):
    return ", ".join(f"{k}={v}" for k, v in d.items())


def _record(spec, total, cfg, nbytes, roof, timed, notes, finite):
    # Per round: the best roofline kernel bounds that round's rates; the fraction is the
    # median of the per-round ratios, so a load change between rounds cancels out.
    best = [max(t.nbytes / t.times[r] for t in roof) for r in range(cfg.repeats)]
    roofline = {"gbps": float(np.median(best)) / 1e9,
                "kernels": {t.name.split(": ", 1)[1]: {
                    **_stats(t.times), "steps_per_block": t.batch, "bytes": t.nbytes,
                    "gbps": t.nbytes / float(np.median(t.times)) / 1e9} for t in roof}}
    impls = {}
    for t in timed:
        stats = _stats(t.times)
        ratio = float(np.median([nbytes / t.times[r] / best[r] for r in range(cfg.repeats)]))
        above = ratio > FLAG_ABOVE
        impls[t.name] = {**stats, "steps_per_block": t.batch,
                         "gbps": nbytes / stats["median_s"] / 1e9,
                         "rate_over_roofline": ratio, "above_roofline": above,
                         "roofline_fraction": None if above else ratio}
    for name, why in notes.items():
        impls[name] = {"skipped": why}
    order = ["gradlab", *TORCH_VARIANTS]
    return {"optimizer": spec.name, "size": total, "tensors": cfg.tensors,
            "dtype": cfg.dtype.name, "bytes_per_param": spec.words * cfg.dtype.itemsize,
            "bytes_per_step": nbytes, "roofline": roofline,
            "implementations": {k: impls[k] for k in order if k in impls},
            "params_finite_after": finite}


# -- the sweep -------------------------------------------------------------------------------
def _import_torch(wanted):
    """(torch or None, why not, the OpenMP wait policy torch runs with).

    Passive waiting unless the user chose: with libgomp's default, torch's idle OpenMP
    threads spin after each parallel region and take the cores from whatever is timed next
    in this process (gradlab, the roofline, torch itself where cores are shared). Measured on
    the 2-core machine: torch's fused Adam on 1e7 parameters 113 ms instead of 15 ms, and the
    copy roofline halved. libgomp reads the variable once, when torch loads it."""
    if not wanted:
        return None, "skipped: --no-torch", None
    if "torch" in sys.modules and sys.modules["torch"] is not None:
        policy = "as when torch was first imported (before this command)"
    else:
        policy = os.environ.get("OMP_WAIT_POLICY") or "PASSIVE (set by gradlab bench optim)"
    saved = os.environ.get("OMP_WAIT_POLICY")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch
    except Exception as exc:  # torch is optional; a broken install is reported, not raised
        return None, (f"torch is not installed ({_first_line(exc)}); install it (e.g. `pip "
                      "install torch`) for the PyTorch columns"), None
    finally:
        if saved is None:
            os.environ.pop("OMP_WAIT_POLICY", None)
    return torch, None, policy


def machine_info(target, torch):
    from .. import __version__
    info = {"gradlab": __version__, "python": sys.version.split()[0],
            "platform": platform.platform(), "numpy": np.__version__,
            "cpu_count": os.cpu_count(), "torch": getattr(torch, "__version__", None)}
    try:
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((line.split(":", 1)[1].strip() for line in f
                                if line.startswith("model name")), None)
    except OSError:
        pass
    info.update(target.describe())
    if torch is not None and target.kind == "cpu":
        info["torch_threads"] = target.threads  # set for the run, restored after
    return info


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


def _fraction_text(impl):
    if "skipped" in impl:
        return "skipped"
    if impl["above_roofline"]:
        return f"above roofline (x{impl['rate_over_roofline']:.2f})"
    return f"{impl['roofline_fraction']:.2f}"


def _progress_line(record):
    parts = [f"{record['optimizer']:8s} {record['size']:>11,d}",
             f"roofline {record['roofline']['gbps']:6.1f} GB/s"]
    for name, impl in record["implementations"].items():
        if "skipped" not in impl:
            parts.append(f"{name} {fmt_time(impl['median_s'])} {impl['gbps']:.1f} GB/s "
                         f"({_fraction_text(impl)})")
    return " | ".join(parts)


def summary(results):
    """Per optimizer, at its largest size: gradlab against torch's fastest variant."""
    rows = []
    for name in dict.fromkeys(r["optimizer"] for r in results):
        rec = max((r for r in results if r["optimizer"] == name), key=lambda r: r["size"])
        impls = rec["implementations"]
        gl_impl = impls["gradlab"]
        ran = {k: v for k, v in impls.items() if k != "gradlab" and "skipped" not in v}
        fastest = min(ran, key=lambda k: ran[k]["median_s"]) if ran else None
        row = {"optimizer": name, "size": rec["size"], "gradlab_s": gl_impl["median_s"],
               "gradlab_fraction": gl_impl["roofline_fraction"],
               "gradlab_above_roofline": gl_impl["above_roofline"],
               "torch_fastest": fastest, "torch_s": None, "torch_fraction": None,
               "gradlab_over_torch": None}
        if fastest is not None:
            t = ran[fastest]
            row.update(torch_s=t["median_s"], torch_fraction=t["roofline_fraction"],
                       torch_above_roofline=t["above_roofline"],
                       gradlab_over_torch=gl_impl["median_s"] / t["median_s"])
        rows.append(row)
    return rows


# -- outputs ---------------------------------------------------------------------------------
def fmt_time(seconds):
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def _frac(value, above):
    if above:
        return "above roofline"
    return "n/a" if value is None else f"{value:.2f}"


def markdown(report):
    cfg, info = report["config"], report["machine"]
    where = info.get("gpu") or info.get("cpu") or platform.machine()
    threads = f", {info['threads']} threads" if "threads" in info else ""
    lines = [f"# gradlab bench optim: {cfg['device']} ({where}{threads}), {cfg['dtype']}, "
             f"{cfg['tensors']} tensors", "",
             f"{report['date']}; gradlab {info['gradlab']}, numpy {info['numpy']}, torch "
             f"{info['torch'] or 'not installed'}, python {info['python']}; "
             f"{info.get('gradlab_tier', info.get('cupy') and 'CuPy ' + info['cupy'])}.", "",
             f"Timing: {cfg['warmup_steps']} warm-up steps, then {cfg['repeats']} timed blocks "
             f"per implementation, interleaved; each block at least {cfg['block_time_s']:g} s "
             f"and {RESOLUTION_FACTOR} timer ticks ({info['timer']}, resolution "
             f"{info['timer_resolution_s'] * 1e9:.0f} ns), batching steps where one is "
             "shorter. Times are medians, with the interquartile range.",
             "Roofline: the best of a copy and an in-place add on buffers of the same total "
             "size, measured in each round beside the steps; the fraction is the median of "
             f"the per-round ratios; above {cfg['flag_above']} it is flagged instead.", ""]
    if report["torch_note"]:
        lines += [f"PyTorch columns: {report['torch_note']}.", ""]
    if info.get("torch_omp_wait_policy"):
        lines += [f"torch's OpenMP wait policy: {info['torch_omp_wait_policy']}; torch uses "
                  f"{info.get('torch_threads', 'its default')} threads.", ""]
    rows = report["summary"]
    if rows:
        size = max(r["size"] for r in rows)
        lines += [f"## At the largest size ({size:,} parameters)", "",
                  "| optimizer | gradlab | fraction | torch fastest | torch | fraction "
                  "| gradlab / torch |", "|---|---|---|---|---|---|---|"]
        for r in rows:
            torch_cells = ["n/a", "n/a", "n/a", "n/a"] if r["torch_fastest"] is None else [
                r["torch_fastest"], fmt_time(r["torch_s"]),
                _frac(r["torch_fraction"], r.get("torch_above_roofline")),
                f"{r['gradlab_over_torch']:.2f}"]
            lines.append(f"| {r['optimizer']} | {fmt_time(r['gradlab_s'])} | "
                         f"{_frac(r['gradlab_fraction'], r['gradlab_above_roofline'])} | "
                         + " | ".join(torch_cells) + " |")
        lines.append("")
    for name in cfg["optimizers"]:
        b = report["bytes_per_param"][name]
        lines += [f"## {name}: {b['bytes']} B per parameter", "",
                  f"Reads {', '.join(b['reads'])}; writes {', '.join(b['writes'])}. Assumes "
                  f"{b['assumes']}. Options: {_kwargs(b['options'])}.", "",
                  "| parameters | implementation | median | IQR | steps/block | GB/s "
                  "| roofline GB/s | fraction of roofline |",
                  "|---:|---|---:|---|---:|---:|---:|---|"]
        skipped = {}
        for rec in (r for r in report["results"] if r["optimizer"] == name):
            for impl_name, impl in rec["implementations"].items():
                if "skipped" in impl:
                    skipped[impl_name] = impl["skipped"]
                    continue
                lo, hi = impl["iqr_s"]
                lines.append(f"| {rec['size']:,} | {impl_name} | {fmt_time(impl['median_s'])} "
                             f"| {fmt_time(lo)} to {fmt_time(hi)} | {impl['steps_per_block']} "
                             f"| {impl['gbps']:.2f} | {rec['roofline']['gbps']:.2f} "
                             f"| {_fraction_text(impl)} |")
        lines.append("")
        for impl_name, why in skipped.items():
            lines.append(f"- {impl_name} skipped: {why}")
        if skipped:
            lines.append("")
    return "\n".join(lines)


STYLES = {"gradlab": dict(color="#d62728", lw=2.4, marker="o"),
          "torch-forloop": dict(color="#1f77b4", lw=1.4, marker="s"),
          "torch-foreach": dict(color="#2ca02c", lw=1.4, marker="^"),
          "torch-fused": dict(color="#9467bd", lw=1.4, marker="D")}


def plot(report, path):
    """GB/s against total size per implementation, one panel per optimizer, the roofline
    dashed; an above-roofline point is ringed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    names = report["config"]["optimizers"]
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    height = 4.0 * rows + 0.5
    fig = Figure(figsize=(5.2 * cols, height))
    FigureCanvasAgg(fig)
    handles = {}
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        recs = [r for r in report["results"] if r["optimizer"] == name]
        x = [r["size"] for r in recs]
        (line,) = ax.plot(x, [r["roofline"]["gbps"] for r in recs], color="black", ls="--",
                          lw=1.6)
        handles["copy roofline (best of copy, add)"] = line
        for impl_name, style in STYLES.items():
            pts = [(r["size"], r["implementations"][impl_name]) for r in recs
                   if "skipped" not in r["implementations"].get(impl_name, {"skipped": 1})]
            if not pts:
                continue
            (line,) = ax.plot([s for s, _ in pts], [m["gbps"] for _, m in pts], ms=4, **style)
            handles[impl_name] = line
            over = [(s, m["gbps"]) for s, m in pts if m["above_roofline"]]
            if over:
                ring = ax.scatter(*zip(*over), s=110, facecolors="none", edgecolors="orange",
                                  linewidths=1.6, zorder=5)
                handles["above roofline (flagged)"] = ring
        b = report["bytes_per_param"][name]["bytes"]
        ax.set_title(f"{name} ({b} B/param)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("parameters per step (total)")
        ax.set_ylabel("GB/s (counted bytes / median time)")
        ax.grid(alpha=0.3, which="both")
    cfg, info = report["config"], report["machine"]
    where = info.get("gpu") or info.get("cpu") or ""
    threads = f", {info['threads']} threads" if "threads" in info else ""
    fig.suptitle(f"gradlab bench optim: {cfg['device']} ({where}{threads}), {cfg['dtype']}, "
                 f"{cfg['tensors']} tensors, {report['date']}", fontsize=11)
    fig.legend(list(handles.values()), list(handles), loc="lower center",
               ncol=min(6, len(handles)), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.45 / height, 1, 0.97))
    fig.savefig(path, dpi=110)


def _atomic_write(path, text):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_report(report, directory):
    """Write the JSON, the markdown and (with matplotlib) the PNG; returns (paths, note)."""
    stem = os.path.join(directory, FILE_STEM)
    _atomic_write(stem + ".json", json.dumps(report, indent=1) + "\n")
    _atomic_write(stem + ".md", markdown(report) + "\n")
    paths, note = [stem + ".json", stem + ".md"], None
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        note = ("no plot: matplotlib is not installed (pip install 'gradlab[plot]' or "
                "matplotlib)")
    else:
        plot(report, stem + ".tmp.png")
        os.replace(stem + ".tmp.png", stem + ".png")
        paths.append(stem + ".png")
    return paths, note


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
