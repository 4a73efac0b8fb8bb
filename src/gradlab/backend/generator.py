"""``gl.Generator``: PyTorch's explicit random generator, for ``random_split``, the
DataLoader and the factories' ``generator=`` argument."""
from __future__ import annotations

import numpy as np

# manual_seed / set_state calls of every Generator: the compiled step compares the count before
# and after a recording, since a replay would not make them again (one count for all
# generators: it cannot know which ones the step uses).
restarts = [0]


class Generator:
    """A seeded CPU random stream of its own: ``gl.Generator().manual_seed(42)``.

    It draws with NumPy's PCG64, so its numbers differ from PyTorch's for the same seed;
    what carries over is that one seed always gives the same split, order and draws.
    """

    def __init__(self, device="cpu"):
        if str(device).split(":")[0] != "cpu":
            raise ValueError(f"gl.Generator(device={device!r}): only CPU generators exist; "
                             "CUDA draws come from gl.manual_seed / gl.cuda.manual_seed_all")
        self._seed = int(np.random.SeedSequence().entropy % 2**63)
        self._rng = np.random.default_rng(self._seed)

    def manual_seed(self, seed):
        """Restart the stream from ``seed``; returns the generator, as PyTorch's does."""
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"Generator.manual_seed needs an int, got {seed!r}")
        restarts[0] += 1
        self._seed = int(seed) % 2**64
        self._rng = np.random.default_rng(self._seed)
        return self

    def initial_seed(self):
        return self._seed

    def seed(self):
        """Reseed from fresh entropy and return the new seed."""
        self.manual_seed(int(np.random.SeedSequence().entropy % 2**63))
        return self._seed

    def get_state(self):
        return self._rng.bit_generator.state

    def set_state(self, state):
        restarts[0] += 1
        self._rng.bit_generator.state = state
        return self

    # The numpy.random.Generator calls that gradlab's factories, init and splits make.
    def random(self, size=None, dtype=np.float64):
        return self._rng.random(size, dtype=dtype)

    def standard_normal(self, size=None, dtype=np.float64):
        return self._rng.standard_normal(size, dtype=dtype)

    def uniform(self, low=0.0, high=1.0, size=None):
        return self._rng.uniform(low, high, size)

    def integers(self, low, high=None, size=None, dtype=np.int64):
        return self._rng.integers(low, high, size=size, dtype=dtype)

    def permutation(self, n):
        return self._rng.permutation(n)

    def __repr__(self):
        return f"gl.Generator(seed={self._seed})"
