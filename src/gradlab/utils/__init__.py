"""``gl.utils``: PyTorch's module paths, so ``torch.utils.data`` code ports by renaming."""
from . import data, dlpack
