"""``gl.utils.dlpack``: PyTorch's path to the DLPack exchange (``gl.from_dlpack`` and
``Tensor.__dlpack__``)."""
from ..autograd.creation import from_dlpack


def to_dlpack(tensor):
    """The tensor's DLPack capsule (consumers prefer the tensor itself: it has __dlpack__)."""
    return tensor.__dlpack__()


__all__ = ["from_dlpack", "to_dlpack"]
