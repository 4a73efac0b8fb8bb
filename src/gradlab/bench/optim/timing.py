"""How ``gradlab bench optim`` times one case: the clocks (perf_counter, CUDA events),
the devices (CPU, CUDA) with their roofline kernels, and one case's steps of gradlab and
of each PyTorch variant, interleaved round by round."""
from __future__ import annotations

import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from ...backend.fused.optim import scalars
from .cases import (
    CUDA_EVENT_RESOLUTION_S,
    FLAG_ABOVE,
    MAX_BATCH,
    RESOLUTION_FACTOR,
    TORCH_VARIANTS,
    WARMUP_STEPS,
    kwargs_text,
)


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
        from ...backend import cpu_threads, fused, get_backend
        self.device, self.be, self.xp = device, get_backend("cpu"), np
        self.threads = cpu_threads.get_num_threads()
        self._run_parts = cpu_threads.run_parts
        self.clock = HostClock()
        self.tier = "numba kernels (backend/fused/*/numba_cpu.py)" if fused.AVAILABLE else \
            f"NumPy reference ({fused.UNAVAILABLE_REASON})"

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

        from ...backend import get_backend
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
    elif spec.name == "adamax":
        def step():
            count[0] += 1
            be.adamax_step(p, g, state[0], state[1], step=count[0], lr=o["lr"], beta1=0.9,
                           beta2=0.999, eps=1e-8, weight_decay=0.0, maximize=False)
    elif spec.name == "nadam":
        mu_product = [1.0]

        def step():
            count[0] += 1
            be.nadam_step(p, g, state[0], state[1], step=count[0], lr=o["lr"], beta1=0.9,
                          beta2=0.999, eps=1e-8, weight_decay=0.0,
                          decoupled_weight_decay=False, momentum_decay=4e-3,
                          mu_product=mu_product[0], maximize=False)
            mu_product[0] = scalars.nadam_mu_product(step=count[0], beta1=0.9,
                                                     momentum_decay=4e-3,
                                                     mu_product=mu_product[0])
    elif spec.name == "radam":
        def step():
            count[0] += 1
            be.radam_step(p, g, state[0], state[1], step=count[0], lr=o["lr"], beta1=0.9,
                          beta2=0.999, eps=1e-8, weight_decay=0.0,
                          decoupled_weight_decay=False, maximize=False)
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
                                      f"{spec.torch_class}({kwargs_text(TORCH_VARIANTS[variant])}) "
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
    from ... import __version__
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
