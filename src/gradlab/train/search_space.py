"""The search space of ``grid_search``/``random_search``: the distributions a dimension
takes (``choice``, ``uniform``, ``loguniform``, ``int_range``), the space read from
JSON-like data, and the configurations drawn from it for a grid or at random."""
from __future__ import annotations

import itertools
import math

import numpy as np


class _Discrete:
    """A dimension of finitely many ``values``: sampled uniformly, all of them in a grid."""

    def sample(self, rng):
        return self.values[int(rng.integers(len(self.values)))]

    def grid(self):
        return list(self.values)


class Choice(_Discrete):
    def __init__(self, values):
        self.values = list(values)
        if not self.values:
            raise ValueError("choice() needs at least one value")

    def __repr__(self):
        return f"choice({self.values!r})"


class Uniform:
    """A float uniform in [low, high]; in a grid, ``grid_points`` evenly spaced values.

    LogUniform is the same on a log scale: the scale and the grid's spacing are class
    attributes, so that sampling, the grid and the repr are written once for both."""

    _name, _spacing = "uniform", staticmethod(np.linspace)
    _to_scale = _from_scale = staticmethod(lambda v: v)

    def __init__(self, low, high, grid_points=5):
        if not low < high:
            raise ValueError(f"{self._name}(low, high) needs low < high, got {low}, {high}")
        self.low, self.high, self.grid_points = float(low), float(high), int(grid_points)

    def sample(self, rng):
        lo, hi = self._to_scale(self.low), self._to_scale(self.high)
        return float(self._from_scale(rng.uniform(lo, hi)))

    def grid(self):
        return [float(v) for v in self._spacing(self.low, self.high, self.grid_points)]

    def __repr__(self):
        return f"{self._name}({self.low}, {self.high})"


class LogUniform(Uniform):
    """A float whose log is uniform in [log low, log high]; a geometrically spaced grid."""

    _name, _spacing = "loguniform", staticmethod(np.geomspace)
    _to_scale, _from_scale = staticmethod(math.log), staticmethod(math.exp)

    def __init__(self, low, high, grid_points=5):
        if low <= 0:
            raise ValueError(f"loguniform(low, high) needs low > 0, got {low}")
        super().__init__(low, high, grid_points)


class IntRange(_Discrete):
    """Integers low, low + step, ..., up to and including high."""

    def __init__(self, low, high, step=1):
        if int(low) != low or int(high) != high or int(step) != step or step < 1 or low > high:
            raise ValueError(f"int_range(low, high, step) needs integers low <= high and "
                             f"step >= 1, got {low}, {high}, {step}")
        self.values = list(range(int(low), int(high) + 1, int(step)))

    def __repr__(self):
        return f"int_range({self.values[0]}, {self.values[-1]})"


def choice(values):
    """One of ``values``, uniformly."""
    return Choice(values)


def uniform(low, high, grid_points=5):
    """A float uniform in [low, high] (``grid_points`` evenly spaced values in a grid)."""
    return Uniform(low, high, grid_points)


def loguniform(low, high, grid_points=5):
    """A float whose log is uniform in [log low, log high] (for learning rates, decays)."""
    return LogUniform(low, high, grid_points)


def int_range(low, high, step=1):
    """An integer in low..high inclusive, in steps of ``step``."""
    return IntRange(low, high, step)


_DISTS = (_Discrete, Uniform)


def dimension(value):
    """A space entry as a dimension: a distribution as it is, a list as a choice of its
    values, anything else as a choice of that one value."""
    if isinstance(value, _DISTS):
        return value
    if isinstance(value, (list, tuple)):
        return Choice(value)
    return Choice([value])


def parse_space(spec):
    """A space from JSON-like data: lists are choices; ``{"uniform": [a, b]}``,
    ``{"loguniform": [a, b]}``, ``{"int_range": [a, b]}`` (or ``[a, b, step]``) and
    ``{"choice": [...]}`` are distributions; anything else is a fixed value."""
    makers = {"choice": lambda a: Choice(a), "uniform": lambda a: Uniform(*a),
              "loguniform": lambda a: LogUniform(*a), "int_range": lambda a: IntRange(*a)}
    space = {}
    for name, value in spec.items():
        if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in makers:
            kind, args = next(iter(value.items()))
            space[name] = makers[kind](args)
        elif isinstance(value, dict):
            raise ValueError(f"search space entry {name!r}: {value!r} is not a distribution; "
                             f"use one of {', '.join(makers)} (e.g. {{\"uniform\": [0, 1]}})")
        else:
            space[name] = dimension(value)
    return space


def grid_configs(space):
    """Every combination of the space's grid values, in order."""
    dims = {k: dimension(v).grid() for k, v in space.items()}
    names = list(dims)
    for combo in itertools.product(*(dims[n] for n in names)):
        yield dict(zip(names, combo))


def random_configs(space, seed=0):
    """An endless stream of configurations sampled from the space."""
    rng = np.random.default_rng(seed)
    dims = {k: dimension(v) for k, v in space.items()}
    while True:
        yield {k: d.sample(rng) for k, d in dims.items()}


def python_value(value):
    """A NumPy scalar as the Python number it holds (for CSV cells and JSON)."""
    return value.item() if isinstance(value, np.generic) else value


def describe(dim):
    """A dimension as text, for the identity a resumed search is checked against."""
    if isinstance(dim, Uniform):
        return f"{type(dim).__name__}({dim.low!r}, {dim.high!r}, {dim.grid_points})"
    return f"{type(dim).__name__}({[python_value(v) for v in dim.values]!r})"
