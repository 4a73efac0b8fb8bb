"""Function: one differentiable op, and a node of the graph once applied.

Write an op like PyTorch's ``autograd.Function``::

    class Exp(Function):
        def forward(ctx, x):            # raw backend arrays in, one array out
            y = ctx.xp.exp(x)
            ctx.save_for_backward(y)
            return y

        def backward(ctx, grad):        # one gradient per input (None where not needed)
            y, = ctx.saved_tensors
            return grad * y

    y = Exp.apply(x)

PyTorch's spelling, ``@staticmethod def forward(ctx, x)``, works the same. Unlike PyTorch,
forward and backward see backend arrays (NumPy or CuPy), not Tensors.

``ctx`` is the node itself: attributes set in ``forward`` are there in ``backward``.
Arrays that backward needs go through ``save_for_backward`` so that the engine can drop
them after backward and check that no saved input was changed in place meanwhile.
"""
from __future__ import annotations

from . import grad_mode
from .anomaly import creation_trace
from .tensor import Tensor

_FREED = object()
_grad_state = grad_mode._state


class Function:
    # Set per node by apply():
    #   backend, xp       the Backend of the inputs and its array module
    #   next_functions    per input: the input's grad_fn, the leaf Tensor itself, or None
    #   needs_input_grad  per input: whether backward must produce its gradient
    #   saved_tensors     what forward saved (``_FREED`` once the graph is released)
    #   _saved_versions   ((version counter, value at save time, input position), ...)

    # Class-level defaults, so apply() need not set them on every node.
    saved_tensors = ()
    _saved_versions = ()
    # False for ops without a gradient (comparisons, argmax, ...): their result never joins
    # the graph, even from inputs that require grad. They are Functions all the same so that
    # a recorded step (autograd/tape.py) sees them and recomputes them from each batch.
    differentiable = True
    # True for an op whose output is a function of its input arrays alone (no draw, no
    # state, no setting read at the call): a recorded step may then reuse the recorded
    # output where the inputs are constants made afresh by each step (autograd/tape.py).
    foldable = False
    # The hooks of the tensor this node made (autograd/hooks.py), once it has some.
    _grad_hooks = ()

    @staticmethod
    def value_sizes(args, kwargs, out, varies):
        """The sizes of this call's output dims that depend on its inputs' values, not only
        on their shapes (the count of a mask in x[mask], the rows of nonzero), counting only
        inputs for which ``varies(array)`` says they change from batch to batch (not a
        constant mask): a recorded step treats reading such a shape in Python as reading
        values (autograd/tape.py). Empty for most ops."""
        return ()

    def forward(ctx, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(ctx, grad):  # pragma: no cover - abstract
        raise NotImplementedError

    def save_for_backward(ctx, *arrays):
        ctx.saved_tensors = arrays

    @classmethod
    def apply(cls, *args, **kwargs):
        ctx = cls.__new__(cls)
        backend = None
        needs_grad = False
        arrays = []
        for a in args:
            if isinstance(a, Tensor):
                if backend is None:
                    backend = a._backend
                elif a._backend is not backend:
                    raise RuntimeError(
                        f"{cls.__name__}: expected all tensors on one device, but found "
                        f"{backend.device} and {a._backend.device}; move one with .to()")
                if a._requires_grad:
                    needs_grad = True
                arrays.append(a._data)
            else:
                arrays.append(a)
        if backend is None:
            raise TypeError(f"{cls.__name__}.apply needs at least one Tensor argument")
        ctx.backend = backend
        ctx.xp = backend.xp
        # Through the class, so forward may be a plain method (ctx as self) or, as PyTorch
        # writes it, a @staticmethod taking ctx first.
        out = cls.forward(ctx, *arrays, **kwargs)
        out_backend = ctx.backend  # forward may move the result (ToDevice)
        if out.__class__ is not out_backend.ndarray and not isinstance(out, out_backend.ndarray):
            out = out_backend.xp.asarray(out)  # NumPy returns scalars for 0-d results
        if _grad_state.tape is not None:
            _grad_state.tape.node(cls, ctx, args, kwargs, out)
        if not needs_grad or not _grad_state.enabled or not cls.differentiable:
            return Tensor._wrap(out, out_backend)
        edges = []
        needs = []
        for a in args:
            if isinstance(a, Tensor) and a._requires_grad:
                edges.append(a.grad_fn or a)
                needs.append(True)
            else:
                edges.append(None)
                needs.append(False)
        ctx.next_functions = edges
        ctx.needs_input_grad = needs
        if _grad_state.anomaly:
            ctx._creation_trace = creation_trace()
        result = Tensor._wrap(out, out_backend, ctx)
        if ctx.saved_tensors:
            ctx._saved_versions = _record_versions(ctx.saved_tensors, args, result)
        return result

    @classmethod
    def apply_on(cls, backend, **kwargs):
        """``apply`` for an op without inputs and without a gradient (a random draw), on
        ``backend``: a recorded step sees it as it sees every other op."""
        ctx = cls.__new__(cls)
        ctx.backend = backend
        ctx.xp = backend.xp
        out = cls.forward(ctx, **kwargs)
        if _grad_state.tape is not None:
            _grad_state.tape.node(cls, ctx, (), kwargs, out)
        return Tensor._wrap(out, backend)

    def release(self):
        """Drop what forward saved; a second backward through this node then fails clearly."""
        self.saved_tensors = _FREED

    def name(self) -> str:
        """The op's name, as in ``grad_fn=<SigmoidBackward>``. (A Function whose op shares
        its name with an nn module carries an ``Fn`` suffix: SigmoidFn, not nn.Sigmoid.)"""
        name = type(self).__name__
        return name[:-2] if name.endswith("Fn") else name


def without_grad(t):
    """A tensor argument that an op gives no gradient (a loss's class weight, BatchNorm's
    running statistics), as the op should take it: detached where it requires grad (a
    weight computed from the output, a learnable one), so that the result does not require
    grad on its account. It stays a tensor, not its array: a compiled step's replay then
    reads it at every call, and sees it given another array."""
    return t.detach() if isinstance(t, Tensor) and t._requires_grad else t


def _record_versions(saved, args, result):
    """Version counters of the tensors (inputs or output) whose arrays were saved."""
    out = []
    for s in saved:
        if s is result._data:
            out.append((result._version, 0, -1))
            continue
        for pos, a in enumerate(args):
            if isinstance(a, Tensor) and a._data is s:
                out.append((a._version, a._version[0], pos))
                break
    return out
