"""``cupy.random`` of the stand-in: ``default_rng`` and a Generator with exactly CuPy's methods.

CuPy's ``default_rng`` uses the cuRAND XORWOW generator, whose streams differ from NumPy's;
the stand-in draws from NumPy's Philox with a key derived from the seed, so its streams
differ from NumPy's default (PCG64) too, and a test that expects CPU and GPU draws to agree
fails here as it would on a GPU. The draws are not CuPy's (see FIDELITY.md).

Faithful where code can trip: ``Generator`` has only CuPy's methods (no ``normal``,
``permutation``, ``choice`` or ``shuffle``), and ``bit_generator.state`` is a METHOD that
returns the address of the device-side state, not NumPy's picklable state dict.
"""
from __future__ import annotations

import numpy as _np

from . import _core, capture
from .names import GENERATOR as _METHODS

_SEED_SALT = 0x6772_6164_6C61_62  # keeps these streams apart from NumPy's for the same seed


class BitGenerator:
    """Base of the bit generators; ``state()`` is the device address of the state."""

    def __init__(self, seed=None):
        if type(seed) is _core.ndarray:
            seed = seed.get()
        self._seed_seq = seed if isinstance(seed, _np.random.SeedSequence) else \
            _np.random.SeedSequence(seed)
        words = self._seed_seq.generate_state(2, _np.uint64)
        self._np = _np.random.Generator(_np.random.Philox(
            key=[int(words[0]) ^ _SEED_SALT, int(words[1])]))
        self._state = _core.ndarray((48 * 256 * 8,), dtype=_np.int8)
        self._state.fill(0)

    def state(self):
        return self._state.data.ptr

    def random_raw(self, size=None, output=True):
        y = _core.ndarray._copy(_np.asarray(
            self._np.integers(0, 2**32, size=size, dtype=_np.uint64).astype(_np.int32)))
        return y if output else None


class XORWOW(BitGenerator):
    """Stands in for cuRAND XORWOW (the draws are Philox's; see the module docstring)."""


class MRG32k3a(BitGenerator):
    pass


class Philox4x3210(BitGenerator):
    pass


class Generator:
    """``cupy.random.Generator``: every method returns a device array (0-d for size=None)."""

    def __init__(self, bit_generator):
        self.bit_generator = bit_generator
        self._np = bit_generator._np

    def __getattribute__(self, name):
        if not name.startswith("_") and name != "bit_generator" and \
                capture.capturing() is not None:
            raise NotImplementedError("random draws during stream capture are not modelled by "
                                      "the CuPy stand-in")
        return object.__getattribute__(self, name)

    def __getattr__(self, name):
        if name.startswith("_") or name not in _METHODS:
            raise AttributeError(f"'cupy.random.Generator' object has no attribute {name!r}")
        fn = getattr(self._np, name)

        def method(*args, **kwargs):
            return _core.call_numpy(fn, args, kwargs)
        method.__name__ = name
        return method

    def random(self, size=None, dtype=_np.float64, out=None):
        return self._out(self._np.random(size=size, dtype=dtype), out)

    def standard_normal(self, size=None, dtype=_np.float64, out=None):
        return self._out(self._np.standard_normal(size=size, dtype=dtype), out)

    def standard_exponential(self, size=None, dtype=_np.float64, method="inv", out=None):
        return self._out(self._np.standard_exponential(size=size, dtype=dtype), out)

    def uniform(self, low=0.0, high=1.0, size=None, dtype=_np.float64):
        low, high = _scalar_or_host(low), _scalar_or_host(high)
        return _core.ndarray._copy(_np.asarray(
            self._np.uniform(low, high, size=size)).astype(dtype))

    def integers(self, low, high=None, size=None, dtype=_np.int64, endpoint=False):
        low, high = _scalar_or_host(low), _scalar_or_host(high)
        return _core.ndarray._copy(_np.asarray(
            self._np.integers(low, high, size=size, dtype=dtype, endpoint=endpoint)))

    @staticmethod
    def _out(values, out):
        values = _np.asarray(values)
        if out is None:
            return _core.ndarray._copy(values)
        out.set(values.astype(out.dtype))
        return out


def _scalar_or_host(x):
    if type(x) is _core.ndarray:
        return x.get()
    if isinstance(x, _np.ndarray):
        raise _core.unsupported(x)
    return x


def default_rng(seed=None):
    """A Generator on the default bit generator (XORWOW in CuPy)."""
    if isinstance(seed, Generator):
        return seed
    if isinstance(seed, BitGenerator):
        return Generator(seed)
    return Generator(XORWOW(seed))


def __getattr__(name):
    raise AttributeError(f"cupy.random.{name} is not modelled by the CuPy stand-in (only "
                         f"default_rng, Generator and the bit generators are)")
