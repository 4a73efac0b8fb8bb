"""The fused ops, one subpackage per op family, each op a table of its implementations.

Layout (the same tier module names in every family, the same function name in every tier):

    fused/<family>/__init__.py     the ops' tables (FusedOp) and their selection rules
    fused/<family>/reference.py    NumPy/array-API formulas: the fallback tier and the oracle
    fused/<family>/numba_cpu.py    the one-pass numba kernels of the CPU backend
    fused/<family>/cuda.py         host-side launch preparation of kernels/<family>.cu

An op is chosen at CALL time: a CUDA backend runs the "cuda" tier; the CPU backend runs
"numba" when numba imports, ``GRADLAB_NO_JIT`` is unset (read at each call, so one process
can switch it) and the op's own rule accepts the arguments, else "numpy". numba is imported
on first use, not with gradlab. ``op.implementations()`` gives every tier that can run here
by name, so one process can hold them against each other (tests/backend/fused).
"""
from __future__ import annotations

import functools
import importlib
import os

_TIERS = ("numpy", "numba", "cuda")
_MODULES = {"numpy": "reference", "numba": "numba_cpu", "cuda": "cuda"}

_numba_reason = None   # why numba cannot be imported (None: not tried yet, or it imports)
_numba_ok = None       # None: not tried yet


# GRADLAB_NO_JIT is read at every fused call. ``os.environ.get`` of an unset variable raises
# and catches a KeyError inside the Mapping (about 2 us a call on a slow 2-core machine,
# several times per training step); the bytes dict that os.environ keeps in step with every
# assignment and deletion answers the same question in a dictionary lookup. Where os.environ
# has no such dict (not CPython), the public read.
_ENV = getattr(os.environ, "_data", None)
try:
    _NO_JIT_KEY = os.environ.encodekey("GRADLAB_NO_JIT")
except AttributeError:
    _ENV = None


def jit_disabled():
    """Whether GRADLAB_NO_JIT is set (non-empty) now."""
    if _ENV is not None:
        return bool(_ENV.get(_NO_JIT_KEY))
    return bool(os.environ.get("GRADLAB_NO_JIT"))


def numba_status():
    """(True, None) when the numba tier runs now, else (False, why). Imports numba on the first
    call that does not find GRADLAB_NO_JIT set."""
    global _numba_ok, _numba_reason
    if jit_disabled():
        return False, "GRADLAB_NO_JIT is set"
    if _numba_ok is None:
        try:
            import numba  # noqa: F401
        except ImportError as exc:  # no numba for this Python/platform: the NumPy tier
            _numba_ok, _numba_reason = False, str(exc)
        else:
            _numba_ok = True
    return _numba_ok, _numba_reason


def __getattr__(name):
    # ``fused.AVAILABLE`` / ``fused.UNAVAILABLE_REASON``: the numba tier's state right now
    # (what ``gradlab info`` and the benchmarks print).
    if name == "AVAILABLE":
        return numba_status()[0]
    if name == "UNAVAILABLE_REASON":
        return numba_status()[1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _never(*args, **kwargs):
    return False


class FusedOp:
    """One fused op: its implementations by tier, chosen at each call.

    ``package``: the family's package (``gradlab.backend.fused.optim``); tier t's function is
    ``<package>.<module of t>.<name>``, imported on first use. ``use_numba(*args, **kw)``:
    the op's rule for running its numba kernel on these arguments (None: always). ``tiers``:
    the tiers the family has (a family without a numba kernel leaves it out).
    CPU tiers take the Backend method's arguments; the cuda tier takes the backend first."""

    __slots__ = ("name", "package", "use_numba", "tiers", "_fns")

    def __init__(self, name, package, *, use_numba=None, tiers=_TIERS):
        self.name = name
        self.package = package
        self.tiers = tuple(tiers)
        # A family without a numba kernel never picks it: as the op's rule, so that
        # tier_for, on the path of every CPU fused call, checks nothing more.
        self.use_numba = use_numba if "numba" in self.tiers else _never
        self._fns = {}

    def __repr__(self):
        return f"<FusedOp {self.package.rsplit('.', 1)[-1]}.{self.name}>"

    def tier_function(self, tier):
        """The function of ``tier`` (imports its module; ImportError when it cannot run)."""
        fn = self._fns.get(tier)
        if fn is None:
            if tier not in self.tiers:
                raise KeyError(f"{self.name}: unknown tier {tier!r}; tiers: "
                               f"{', '.join(self.tiers)}")
            if tier == "numba" and not numba_status()[0]:
                raise ImportError(f"{self.name}: the numba tier cannot run: "
                                  f"{numba_status()[1]}")
            module = importlib.import_module(f"{self.package}.{_MODULES[tier]}")
            fn = self._fns[tier] = getattr(module, self.name)
        return fn

    def implementations(self):
        """{tier: fn(backend, *args, **kw)} for every tier that can run in this process (the
        cuda tier when a CUDA device, real or emulated, is available)."""
        from ..registry import cuda_status
        out = {}
        for tier in self.tiers:
            if tier == "numba" and not numba_status()[0]:
                continue
            if tier == "cuda" and not cuda_status()[0]:
                continue
            fn = self.tier_function(tier)
            out[tier] = fn if tier == "cuda" else _ignore_backend(fn)
        return out

    def tier_for(self, backend, *args, **kwargs):
        """The tier a call with these arguments runs on ``backend``."""
        if backend.device.type == "cuda":
            return "cuda"
        if (_numba_ok or _numba_ok is None and numba_status()[0]) and not jit_disabled() \
                and (self.use_numba is None or self.use_numba(*args, **kwargs)):
            return "numba"
        return "numpy"

    def pick(self, backend, *args, **kwargs):
        """The function to call for these arguments on ``backend``, taking the arguments
        without the backend (tier_for's choice). The Backend entry points call this, then
        the function with their own arguments (one dispatch, no re-packing of keyword
        arguments)."""
        tier = self.tier_for(backend, *args, **kwargs)
        fn = self._fns.get(tier) or self.tier_function(tier)
        return functools.partial(fn, backend) if tier == "cuda" else fn

    def __call__(self, backend, *args, **kwargs):
        return self.pick(backend, *args, **kwargs)(*args, **kwargs)

    def prepare(self, backend, *args, lean_only=False):
        """``fn(*args)``, this op on ``backend`` for a caller that makes the call again and
        again with arrays like ``args`` (the same shapes, dtypes and layout: a compiled
        step's replay). Where the numba tier runs on them and its module has
        ``prepare_<name>(plain, *args)``, that lean form: it checks that the arrays still
        fit and otherwise calls ``plain`` (the plain dispatch), and GRADLAB_NO_JIT is still
        read at every call (set, the plain dispatch runs). Everywhere else the plain
        dispatch, as ``self(backend, ...)``. Same bits either way. (The lean form reads
        GRADLAB_NO_JIT itself: one Python call less at each of a replay's calls.)
        ``lean_only``: None instead of the plain dispatch, for a caller whose own code is
        as fast as that dispatch."""
        plain = functools.partial(self, backend)
        fallback = None if lean_only else plain
        if self.tier_for(backend, *args) != "numba":
            return fallback
        fn = self.tier_function("numba")
        maker = getattr(importlib.import_module(fn.__module__), f"prepare_{self.name}", None)
        if maker is None:
            return fallback
        return maker(plain, *args)


def _ignore_backend(fn):
    def run(backend, *args, **kwargs):
        return fn(*args, **kwargs)
    run.__name__ = run.__qualname__ = fn.__name__
    run.__wrapped__ = fn
    return run
