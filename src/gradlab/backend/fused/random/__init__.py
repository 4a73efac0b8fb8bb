"""Counter-based draws: U[low, high), N(0, 1) and integers in [low, high) from the Philox
stream of dropout.

The CUDA backend's rand/randn/randint (and their _like forms) and RReLU's slopes: a pure
function of (key, offset, index), which a CUDA graph replays with fresh draws as it does
dropout's. The CPU backend keeps NumPy's generator for those (so a CPU seed gives what it
always gave); these ops run there only as the oracle.

Tiers: reference.py (NumPy: the stream's definition), cuda.py (host side of kernels/random.cu).
The uniform draws and the integers are the same bits on both; the normal ones agree to the
last few ulp (the log, cos and sin of libdevice and of NumPy round differently).
"""
import numpy as np

from .. import FusedOp

_PKG = __name__


def philox_blocks(n, dtype):
    """Philox blocks (counter values) a draw of ``n`` elements of ``dtype`` takes: four
    float32 elements a block, two float64."""
    return -(-int(n) // (4 if np.dtype(dtype) == np.float32 else 2))


# No numba tier: the CPU backend does not draw from this stream.
uniform = FusedOp("uniform", _PKG, tiers=("numpy", "cuda"))
normal = FusedOp("normal", _PKG, tiers=("numpy", "cuda"))
integers = FusedOp("integers", _PKG, tiers=("numpy", "cuda"))

OPS = {op.name: op for op in (uniform, normal, integers)}

# The widest [low, high) that ``integers`` draws from: every value of a wider one would not
# be reachable from a float64 unit's 53 bits.
INTEGERS_MAX_SPAN = 2**53
