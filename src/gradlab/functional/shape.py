"""Shape ops (reshape, transpose, permute, squeeze, expand, cat, stack, split, chunk),
indexing (getitem, gather, masked_fill), and dtype/device conversion."""
from __future__ import annotations

import builtins
import operator

from ..autograd.function import Function
from ..autograd.tensor import Tensor
from .elementwise import unbroadcast
from .out import write_out
from .reduce import normalize_dim


class Reshape(Function):
    def forward(ctx, x, shape):
        ctx.in_shape = x.shape
        try:
            return x.reshape(shape)
        except ValueError:
            raise RuntimeError(f"reshape: shape {tuple(shape)} is invalid for a tensor of "
                               f"shape {tuple(x.shape)} ({x.size} elements); the new shape "
                               f"must hold {x.size} elements too (use -1 for one inferred "
                               f"dim)") from None

    def backward(ctx, g):
        return g.reshape(ctx.in_shape)


class Permute(Function):
    def forward(ctx, x, dims):
        ctx.dims = dims
        return x.transpose(dims)

    def backward(ctx, g):
        inverse = [0] * len(ctx.dims)
        for i, d in enumerate(ctx.dims):
            inverse[d] = i
        return g.transpose(inverse)


class Expand(Function):
    def forward(ctx, x, shape):
        ctx.in_shape = x.shape
        return ctx.xp.broadcast_to(x, shape)

    def backward(ctx, g):
        return unbroadcast(g, ctx.in_shape)


class Cat(Function):
    def forward(ctx, *arrays, axis):
        ctx.axis = axis
        ctx.sizes = [a.shape[axis] for a in arrays]
        return ctx.backend.concatenate(arrays, axis)

    def backward(ctx, g):
        out, start = [], 0
        index = [builtins.slice(None)] * g.ndim
        for size, need in zip(ctx.sizes, ctx.needs_input_grad):
            if need:
                index[ctx.axis] = builtins.slice(start, start + size)
                out.append(g[tuple(index)])
            else:
                out.append(None)
            start += size
        return tuple(out)


class Stack(Function):
    def forward(ctx, *arrays, axis):
        ctx.axis = axis
        return ctx.backend.stack(arrays, axis)

    def backward(ctx, g):
        return tuple(ctx.xp.take(g, i, axis=ctx.axis) if need else None
                     for i, need in enumerate(ctx.needs_input_grad))


class Index(Function):
    """x[index] with basic and advanced (integer array, bool mask) indexing. Repeated
    integer indices accumulate their gradients.

    The arrays of tensor indices come as arguments after ``x`` (``index`` has ``TENSOR`` in
    their places), so that a recorded step reads each batch's (``y`` in ``x[rows, y]``)."""

    @staticmethod
    def value_sizes(args, kwargs, out, varies):
        masks = [a for a in args[1:] if getattr(getattr(a, "dtype", None), "kind", "") == "b"]
        return tuple(int((m._data if isinstance(m, Tensor) else m).sum())
                     for m in masks if varies(m))  # each mask's count

    def forward(ctx, x, *arrays, index, advanced):
        if arrays:
            index = _fill(index, arrays)
        ctx.in_shape, ctx.dtype, ctx.index, ctx.advanced = x.shape, x.dtype, index, advanced
        return x[index]

    def backward(ctx, g):
        grad = ctx.xp.zeros(ctx.in_shape, dtype=g.dtype)
        if ctx.advanced:
            ctx.backend.scatter_add(grad, ctx.index, g)
        else:
            grad[ctx.index] = g
        return grad  # (none for the index arrays: the engine stops at the last one given)

    def release(self):
        super().release()
        self.index = None


class Cast(Function):
    def forward(ctx, x, dtype):
        ctx.in_dtype = x.dtype
        return x.astype(dtype)

    def backward(ctx, g):
        return g.astype(ctx.in_dtype)


class IntegerCast(Cast):
    """A cast to an integer or bool dtype, which carries no gradient (PyTorch cuts the
    graph there too)."""
    differentiable = False


class Copy(Function):
    """A copy in its own memory (``contiguous``: only where ``x`` is not C-contiguous)."""

    def forward(ctx, x, contiguous):
        return ctx.xp.ascontiguousarray(x) if contiguous else x.copy()

    def backward(ctx, g):
        return g


class ToDevice(Function):
    # (A replay then reuses the recorded copy of a constant, such as a CPU gl.arange(n)
    # indexing a CUDA tensor: no host-to-device copy per step, which a graph capture refuses.)
    foldable = True

    def forward(ctx, x, target):
        ctx.source = ctx.backend
        ctx.backend = target
        return target.asarray(x)

    def backward(ctx, g):
        return ctx.source.asarray(g)


# -- functional wrappers ---------------------------------------------------------------------
def _shape_arg(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def reshape(input, *shape):
    """The same elements in ``shape`` (one size may be -1); ``view`` is the same op."""
    shape = _shape_arg(shape)
    if shape == input.shape:
        return input
    return Reshape.apply(input, shape=shape)


view = reshape


def flatten(input, start_dim=0, end_dim=-1):
    """Dims ``start_dim`` to ``end_dim`` merged into one (a 0-d tensor becomes 1-d)."""
    # (a 0-d tensor takes dim 0 or -1, as PyTorch; normalize_dim gives it no axes)
    start, end = ((normalize_dim("flatten", d, input.ndim) or (0,))[0]
                  for d in (start_dim, end_dim))
    if start > end:
        raise RuntimeError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} "
                           f"for a tensor of shape {tuple(input.shape)}; give start_dim <= "
                           "end_dim")
    if input.ndim == 0:
        return reshape(input, 1)
    shape = input.shape
    n = 1
    for s in shape[start:end + 1]:
        n *= s
    return reshape(input, shape[:start] + (n,) + shape[end + 1:])


def permute(input, *dims):
    """The dims reordered: dim i of the result is dim ``dims[i]`` of the input."""
    dims = _shape_arg(dims)
    if len(dims) == input.ndim:
        # each dim in range (an IndexError, as PyTorch's), not wrapped around
        axes = tuple(normalize_dim("permute", d, input.ndim)[0] for d in dims)
        if sorted(axes) == list(range(input.ndim)):
            return Permute.apply(input, dims=axes)
    raise RuntimeError(f"permute: dims {dims} are not a permutation of the "
                       f"{input.ndim} dims of a tensor of shape {tuple(input.shape)}")


def transpose(input, dim0, dim1):
    """Dims ``dim0`` and ``dim1`` swapped."""
    d0, d1 = (normalize_dim("transpose", d, input.ndim)[0] for d in (dim0, dim1))
    dims = list(range(input.ndim))
    dims[d0], dims[d1] = dims[d1], dims[d0]
    return Permute.apply(input, dims=tuple(dims))


def t(input):
    """The transpose of a matrix (0-d and 1-d tensors as they are)."""
    if input.ndim > 2:
        raise RuntimeError(f"t(): expects a tensor with <= 2 dims, got {input.ndim}; "
                           "use transpose(dim0, dim1) or permute")
    return input if input.ndim < 2 else transpose(input, 0, 1)


def unsqueeze(input, dim):
    """A dim of size 1 inserted at ``dim``."""
    nd = input.ndim + 1
    if not -nd <= dim < nd:
        raise IndexError(f"unsqueeze: dim {dim} is out of range for a result with {nd} dims")
    dim %= nd
    return reshape(input, input.shape[:dim] + (1,) + input.shape[dim:])


def squeeze(input, dim=None):
    """Dims of size 1 removed (only those in ``dim`` when given)."""
    if dim is None:
        axes = [i for i, s in enumerate(input.shape) if s == 1]
    else:
        axes = [a for a in normalize_dim("squeeze", dim, input.ndim) if input.shape[a] == 1]
    return reshape(input, tuple(s for i, s in enumerate(input.shape) if i not in axes))


def expand(input, *sizes):
    """Size-1 dims repeated to ``sizes`` without copying (-1 keeps a size)."""
    sizes = _shape_arg(sizes)
    if len(sizes) < input.ndim:
        raise RuntimeError(f"expand: {len(sizes)} sizes given for a tensor with {input.ndim} "
                           "dims; give at least as many as the tensor has")
    lead = len(sizes) - input.ndim
    shape = tuple(s if s != -1 else input.shape[i - lead] for i, s in enumerate(sizes))
    for i, s in enumerate(input.shape):
        if s != 1 and s != shape[i + lead]:
            raise RuntimeError(f"expand: can't expand shape {tuple(input.shape)} to "
                               f"{shape}: dim {i} has size {s}, not 1")
    return Expand.apply(input, shape=shape)


def expand_as(input, other):
    """``expand`` to ``other``'s shape."""
    return expand(input, other.shape)


def broadcast_to(input, shape):
    return expand(input, shape)


def _check_sequence(op, tensors):
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{op}: needs a non-empty sequence of tensors")
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: element {i} is a {type(t).__name__}, not a Tensor")
    return tensors


def cat(tensors, dim=0, *, out=None):
    """Join tensors along an existing dim; all other dims must match."""
    tensors = _check_sequence("cat", tensors)
    if out is not None:
        return write_out("cat", out, tensors, lambda: cat(tensors, dim))
    first = tensors[0]
    axis = normalize_dim("cat", dim, first.ndim)[0]
    for i, t in enumerate(tensors[1:], 1):
        if t.ndim != first.ndim or any(a != b for k, (a, b) in
                                       enumerate(zip(t.shape, first.shape)) if k != axis):
            raise RuntimeError(f"cat: tensor 0 has shape {tuple(first.shape)} but tensor {i} "
                               f"has shape {tuple(t.shape)}; all dims but dim {axis} must "
                               "match")
    return Cat.apply(*tensors, axis=axis)


concatenate = cat


def stack(tensors, dim=0, *, out=None):
    """Join same-shaped tensors along a new dim."""
    tensors = _check_sequence("stack", tensors)
    if out is not None:
        return write_out("stack", out, tensors, lambda: stack(tensors, dim))
    first = tensors[0]
    for i, t in enumerate(tensors[1:], 1):
        if t.shape != first.shape:
            raise RuntimeError(f"stack: tensor 0 has shape {tuple(first.shape)} but tensor {i} "
                               f"has shape {tuple(t.shape)}; stack needs equal shapes")
    nd = first.ndim + 1
    if not -nd <= dim < nd:
        raise IndexError(f"stack: dim {dim} is out of range for a result with {nd} dims")
    return Stack.apply(*tensors, axis=dim % nd)


class _TensorItem:
    def __repr__(self):
        return "<tensor>"


TENSOR = _TensorItem()  # where Index.forward puts the next index array


def _fill(index, arrays):
    """``index`` with the ``arrays`` in the places of TENSOR, in order."""
    items = iter(arrays)
    if type(index) is tuple:
        return tuple(next(items) if i is TENSOR else i for i in index)
    return next(items) if index is TENSOR else index


def _normalize_index(index):
    """Lists to arrays, tensors to TENSOR; returns (index, the tensors in order, advanced)."""
    items = index if isinstance(index, tuple) else (index,)
    advanced = False
    out, tensors = [], []
    for item in items:
        if isinstance(item, Tensor):
            tensors.append(item)
            item = TENSOR
            advanced = True
        elif isinstance(item, list):
            advanced = True
        elif hasattr(item, "dtype") and getattr(item, "ndim", 0) > 0:
            advanced = True
        out.append(item)
    return (tuple(out) if isinstance(index, tuple) else out[0]), tensors, advanced


def getitem(input, index):
    """``t[index]``: basic and advanced (integer array, bool mask) indexing, with gradient."""
    index, tensors, advanced = _normalize_index(index)
    # An index on another device is moved, as PyTorch takes a CPU index into a CUDA tensor.
    tensors = [t if t._backend is input._backend else to_backend(t, input._backend)
               for t in tensors]
    if advanced and isinstance(index, list):
        index = input._backend.xp.asarray(index)
    try:
        return Index.apply(input, *tensors, index=index, advanced=advanced)
    except IndexError as exc:
        shown = _fill(index, [t._data for t in tensors])
        raise IndexError(f"index {shown!r} is out of range for a tensor of shape "
                         f"{tuple(input.shape)}: {exc}") from None


class OneHot(Function):
    """Class indices (...) to (..., num_classes) int64 rows with a 1 at each index; no
    gradient. The range check is the op's, so a replayed step checks each batch's."""
    differentiable = False

    def forward(ctx, index, num_classes):
        ctx.backend.check((index < 0) | (index >= num_classes), lambda first: RuntimeError(
            f"one_hot: class value {int(index.reshape(-1)[first])} is outside [0, "
            f"{num_classes}) (num_classes={num_classes})"))
        return (index[..., None] == ctx.xp.arange(num_classes)).astype("int64")


def one_hot(input, num_classes=-1):
    """One-hot rows of the class indices ``input``: shape ``input.shape + (num_classes,)``,
    int64 (``.float()`` it for a loss). ``num_classes=-1``: the largest index + 1."""
    if not isinstance(input, Tensor):
        raise TypeError(f"one_hot: input must be a Tensor of class indices, got "
                        f"{type(input).__name__}")
    if input.dtype.kind not in "iu":
        raise TypeError(f"one_hot: input must hold integer class indices, got {input.dtype}; "
                        f"convert it with .long()")
    given = num_classes
    try:
        num_classes = None if isinstance(given, bool) else operator.index(given)
    except TypeError:
        num_classes = None
    if num_classes is None or num_classes < -1 or num_classes == 0:
        raise ValueError(f"one_hot: num_classes must be a positive int, or -1 to use the "
                         f"largest index + 1, got {given!r}")
    if num_classes == -1:
        if input.numel() == 0:
            raise ValueError("one_hot: cannot infer num_classes from an empty tensor; pass "
                             "num_classes")
        num_classes = max(int(input.max().item()) + 1, 1)  # (a negative max: the op refuses)
    return OneHot.apply(input, num_classes=num_classes)


class Gather(Function):
    """out[i][j] = x[i][index[i][j]] along ``axis`` (PyTorch's gather: ``index`` has x's
    number of dimensions and no larger sizes than x off ``axis``). The index is an argument,
    so a recorded step reads each batch's; the gradient is added back at the indices
    (repeated ones accumulate)."""

    def forward(ctx, x, index, axis):
        n = x.shape[axis]
        ctx.backend.check((index < 0) | (index >= n), lambda first: IndexError(
            f"gather: index {int(index.reshape(-1)[first])} is out of range for dim {axis} "
            f"of size {n}"))
        ctx.in_shape, ctx.axis = x.shape, axis
        ctx.save_for_backward(index)
        # (a sub-block of x off the gather axis, as PyTorch takes it)
        block = tuple(builtins.slice(None) if d == axis else builtins.slice(0, index.shape[d])
                      for d in range(x.ndim))
        return ctx.xp.take_along_axis(x[block], index, axis=axis)

    def backward(ctx, g):
        xp = ctx.xp
        index, = ctx.saved_tensors
        nd = index.ndim
        grad = xp.zeros(ctx.in_shape, dtype=g.dtype)
        where = tuple(index if d == ctx.axis else
                      xp.arange(index.shape[d]).reshape([-1 if k == d else 1 for k in range(nd)])
                      for d in range(nd))
        ctx.backend.scatter_add(grad, where, g)
        return grad


def gather(input, dim, index):
    """Values of ``input`` picked along ``dim`` by the int64 tensor ``index`` (same number of
    dimensions): ``logp.gather(1, y.unsqueeze(1))`` picks each row's class."""
    if not isinstance(index, Tensor) or index.dtype.kind not in "iu":
        raise TypeError(f"gather: index must be an integer tensor, got "
                        f"{getattr(index, 'dtype', type(index).__name__)}")
    if index.ndim != input.ndim:
        raise RuntimeError(f"gather: index must have as many dimensions as input "
                           f"({input.ndim}), got {index.ndim}")
    axis, = normalize_dim("gather", dim, input.ndim)
    for d, (i, n) in enumerate(zip(index.shape, input.shape)):
        if d != axis and i > n:
            raise RuntimeError(f"gather: index size {i} exceeds input size {n} in dim {d} "
                               f"(only dim {axis} may be larger)")
    if index._backend is not input._backend:
        index = to_backend(index, input._backend)
    return Gather.apply(input, index, axis=axis)


class MaskedFill(Function):
    """x with ``value`` where the bool ``mask`` (broadcast to x) is true; the gradient
    flows to x elsewhere, and to a tensor ``value`` from the filled places."""

    def forward(ctx, x, mask, value):
        xp = ctx.xp
        out = xp.where(mask, xp.asarray(value, dtype=x.dtype), x)
        if out.shape != x.shape:
            raise RuntimeError(f"masked_fill: mask of shape {tuple(mask.shape)} does not "
                               f"broadcast to the input's {tuple(x.shape)}")
        ctx.save_for_backward(mask)
        ctx.in_shape, ctx.value_shape = x.shape, getattr(value, "shape", ())
        return out

    def backward(ctx, g):
        mask, = ctx.saved_tensors
        zero = ctx.xp.zeros((), dtype=g.dtype)
        _, _, needs_value = ctx.needs_input_grad
        return (ctx.xp.where(mask, zero, g), None,
                unbroadcast(ctx.xp.where(mask, g, zero), ctx.value_shape) if needs_value
                else None)


def masked_fill(input, mask, value):
    """``input`` with ``value`` (a number or a 0-d tensor) where ``mask`` is true."""
    if not isinstance(mask, Tensor) or mask.dtype != "bool":
        raise TypeError(f"masked_fill: mask must be a bool tensor (e.g. x > 0), got "
                        f"{getattr(mask, 'dtype', type(mask).__name__)}")
    if isinstance(value, Tensor) and value.ndim != 0:
        raise RuntimeError(f"masked_fill: value must be a number or a 0-d tensor, got shape "
                           f"{tuple(value.shape)}")
    if mask._backend is not input._backend:
        mask = to_backend(mask, input._backend)
    return MaskedFill.apply(input, mask, value)


class Flip(Function):
    def forward(ctx, x, axes):
        ctx.axes = axes
        return ctx.xp.ascontiguousarray(ctx.xp.flip(x, axes))  # (a copy, as PyTorch's)

    def backward(ctx, g):
        return ctx.xp.flip(g, ctx.axes)


def flip(input, dims):
    """The elements in reverse order along each of ``dims``."""
    return Flip.apply(input, axes=normalize_dim("flip", dims, input.ndim))


class Repeat(Function):
    """x tiled ``reps`` times along each dim (PyTorch's repeat, NumPy's tile); the
    gradient sums the copies."""

    def forward(ctx, x, reps):
        ctx.reps, ctx.in_shape = reps, x.shape
        return ctx.xp.tile(x, reps)

    def backward(ctx, g):
        padded = (1,) * (len(ctx.reps) - len(ctx.in_shape)) + ctx.in_shape
        split = [n for pair in zip(ctx.reps, padded) for n in pair]  # (copy, element) pairs
        copies = tuple(range(0, len(split), 2))
        return g.reshape(split).sum(axis=copies).reshape(ctx.in_shape)


def repeat(input, *sizes):
    """``input`` repeated ``sizes[d]`` times along each dim (at least input.ndim sizes)."""
    sizes = _shape_arg(sizes)
    if len(sizes) < input.ndim or builtins.any(
            not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in sizes):
        raise RuntimeError(f"repeat: give at least {input.ndim} non-negative int repeats "
                           f"(one per dim), got {sizes}")
    return Repeat.apply(input, reps=tuple(sizes))


def index_select(input, dim, index):
    """The slices of ``input`` at the 1-D integer ``index`` along ``dim``."""
    if not isinstance(index, Tensor) or index.ndim != 1 or index.dtype.kind not in "iu":
        raise TypeError(f"index_select: index must be a 1-D integer tensor, got "
                        f"{getattr(index, 'dtype', type(index).__name__)} "
                        f"{tuple(getattr(index, 'shape', ()))}")
    axis, = normalize_dim("index_select", dim, input.ndim)
    return getitem(input, (builtins.slice(None),) * axis + (index,))


def masked_select(input, mask):
    """The elements of ``input`` where the bool ``mask`` (broadcast together) is true, 1-D."""
    if not isinstance(mask, Tensor) or mask.dtype != "bool":
        raise TypeError(f"masked_select: mask must be a bool tensor (e.g. x > 0), got "
                        f"{getattr(mask, 'dtype', type(mask).__name__)}")
    if tuple(mask.shape) != tuple(input.shape):
        shape = tuple(builtins.max(a, b) for a, b in zip(
            (1,) * (mask.ndim - input.ndim) + tuple(input.shape),
            (1,) * (input.ndim - mask.ndim) + tuple(mask.shape)))
        input, mask = expand(input, *shape), expand(mask, *shape)
    return getitem(input, mask)


class Nonzero(Function):
    """The int64 indices of the non-zero elements, one row each; no gradient."""
    differentiable = False

    @staticmethod
    def value_sizes(args, kwargs, out, varies):
        return (out.shape[0],) if varies(args[0]) else ()

    def forward(ctx, x):
        return ctx.xp.argwhere(x).astype("int64", copy=False)


def nonzero(input, *, as_tuple=False):
    """Indices of the non-zero (true) elements: an (n, ndim) tensor, or with ``as_tuple`` one
    1-D tensor per dim (what indexing takes)."""
    rows = Nonzero.apply(input)
    if not as_tuple:
        return rows
    return tuple(getitem(rows, (builtins.slice(None), d)) for d in range(input.ndim))


class Unique(Function):
    """``part`` ("values", "inverse" or "counts") of the sorted unique elements, or with
    ``axis`` of the sorted unique slices along it; no gradient."""
    differentiable = False

    @staticmethod
    def value_sizes(args, kwargs, out, varies):
        part = args[1] if len(args) > 1 else kwargs.get("part")
        axis = args[2] if len(args) > 2 else kwargs.get("axis")
        if part == "inverse" or not varies(args[0]):
            return ()
        return (out.shape[0 if axis is None or part == "counts" else axis],)

    def forward(ctx, x, part, axis=None):
        xp = ctx.xp
        if part == "values":
            return xp.unique(x, axis=axis)
        _, extra = xp.unique(x, return_inverse=part == "inverse",
                             return_counts=part == "counts", axis=axis)
        if part == "counts":
            return extra.astype("int64")
        # (one index per element, or per slice along axis; NumPy's shape has varied)
        return extra.reshape(x.shape if axis is None else (x.shape[axis],))


def unique(input, sorted=True, return_inverse=False, return_counts=False, dim=None):
    """The distinct elements, sorted; with ``return_inverse`` also where each element of
    ``input`` is among them, with ``return_counts`` how often each occurs
    (``y.unique(return_counts=True)``: the class balance). With ``dim``, the distinct slices
    along ``dim`` (``x.unique(dim=0)``: the distinct rows), sorted lexicographically, and
    the inverse and counts per slice."""
    axis = None
    if dim is not None:
        if input.ndim == 0:
            raise IndexError("unique: dim= needs a tensor with at least one dim, got a 0-d "
                             "tensor")
        axis, = normalize_dim("unique", dim, input.ndim)
    out = [Unique.apply(input, part="values", axis=axis)]
    if return_inverse:
        out.append(Unique.apply(input, part="inverse", axis=axis).long())
    if return_counts:
        out.append(Unique.apply(input, part="counts", axis=axis))
    return out[0] if len(out) == 1 else tuple(out)


def split(input, split_size_or_sections, dim=0):
    """Views of ``input`` along ``dim``: pieces of ``split_size`` (the last may be shorter),
    or of the sizes in a list."""
    axis, = normalize_dim("split", dim, input.ndim)
    n = input.shape[axis]
    if isinstance(split_size_or_sections, int):
        size = split_size_or_sections
        if size <= 0:
            raise ValueError(f"split: split_size must be positive, got {size}")
        sizes = [builtins.min(size, n - start) for start in range(0, n, size)] or [0]
    else:
        sizes = list(split_size_or_sections)
        if builtins.sum(sizes) != n or builtins.any(s < 0 for s in sizes):
            raise ValueError(f"split: sections {sizes} must be non-negative and sum to the "
                             f"size of dim {axis} ({n})")
    pieces, start = [], 0
    for size in sizes:
        pieces.append(getitem(input, (builtins.slice(None),) * axis +
                              (builtins.slice(start, start + size),)))
        start += size
    return tuple(pieces)


def chunk(input, chunks, dim=0):
    """``chunks`` pieces along ``dim`` (fewer where the size does not allow more), each of
    ceil(size / chunks) elements but the last."""
    if not isinstance(chunks, int) or chunks <= 0:
        raise ValueError(f"chunk: chunks must be a positive int, got {chunks!r}")
    axis, = normalize_dim("chunk", dim, input.ndim)
    n = input.shape[axis]
    return split(input, builtins.max(-(-n // chunks), 1), axis)


def to_dtype(input, dtype):
    if input.dtype == dtype:
        return input
    if dtype.kind not in "fc":
        return IntegerCast.apply(input, dtype=dtype)
    return Cast.apply(input, dtype=dtype)


def to_backend(input, backend):
    if input._backend is backend:
        return input
    return ToDevice.apply(input, target=backend)
