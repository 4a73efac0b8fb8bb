"""Every differentiable op of the core, gradchecked in float64 on every backend, over
several shapes including broadcasting and keepdim cases."""
import sys
import zlib

import numpy as np
import pytest

import gradlab as gl
from gradlab.functional import shape as shape_ops

# name -> (function, [input shapes...], input domain)
#   domain "any": standard normal; "pos": in [0.5, 2]; "away": |x| in [0.3, 2] (kinks at 0)
OPS = {
    "add": (lambda a, b: a + b, [(3, 4), (3, 4)], "any"),
    "add_broadcast": (lambda a, b: gl.add(a, b), [(2, 3, 4), (4,)], "any"),
    "add_broadcast_ones": (lambda a, b: a + b, [(3, 1), (1, 5)], "any"),
    "add_scalar": (lambda a: 2.5 + a, [(3,)], "any"),
    "add_alpha": (lambda a, b: gl.add(a, b, alpha=-1.5), [(2, 3), (2, 3)], "any"),
    "sub": (lambda a, b: a - b, [(2, 3), (3,)], "any"),
    "rsub": (lambda a: 1.0 - a, [(4,)], "any"),
    "mul": (lambda a, b: a * b, [(2, 3), (2, 1)], "any"),
    "div": (lambda a, b: a / b, [(3, 2), (3, 2)], "away"),
    "rdiv": (lambda a: 2.0 / a, [(3,)], "away"),
    "neg": (lambda a: -a, [(3, 2)], "any"),
    "pow_scalar": (lambda a: a ** 3, [(3, 2)], "any"),
    "pow_frac": (lambda a: a ** 0.5, [(4,)], "pos"),
    "pow_tensor": (lambda a, b: a ** b, [(3,), (3,)], "pos"),
    "rpow": (lambda a: 2.0 ** a, [(3,)], "any"),
    "exp": (gl.exp, [(2, 3)], "any"),
    "log": (gl.log, [(2, 3)], "pos"),
    "sqrt": (gl.sqrt, [(5,)], "pos"),
    "abs": (gl.abs, [(2, 3)], "away"),
    "sin": (gl.sin, [(2, 3)], "any"),
    "cos": (gl.cos, [(2, 3)], "any"),
    "tanh": (gl.tanh, [(2, 3)], "any"),
    "sigmoid": (gl.sigmoid, [(2, 3)], "any"),
    "relu": (gl.relu, [(2, 3)], "away"),
    "clamp": (lambda a: gl.clamp(a, -0.5, 0.7), [(4, 3)], "any"),
    "clamp_min": (lambda a: a.clamp(min=0.1), [(4, 3)], "any"),
    "clamp_tensor": (lambda a, lo: gl.clamp(a, min=lo), [(4, 3), (3,)], "any"),
    # (some lo > hi among the draws: the output is hi there)
    "clamp_tensor_both": (gl.clamp, [(4, 3), (3,), (4, 1)], "any"),
    "clamp_tensor_max_number_min": (lambda a, hi: gl.clamp(a, -0.3, hi), [(4, 3), (4, 3)],
                                    "any"),
    "maximum": (gl.maximum, [(3, 4), (4,)], "any"),
    "minimum": (gl.minimum, [(3, 4), (3, 1)], "any"),
    "where": (lambda a, b: gl.where(a > 0, a, b), [(3, 4), (3, 4)], "away"),
    "matmul_mm": (gl.matmul, [(3, 4), (4, 5)], "any"),
    "matmul_mv": (lambda a, b: a @ b, [(3, 4), (4,)], "any"),
    "matmul_vm": (lambda a, b: a @ b, [(4,), (4, 2)], "any"),
    "matmul_vv": (lambda a, b: a @ b, [(4,), (4,)], "any"),
    "matmul_batched": (gl.matmul, [(2, 3, 4), (2, 4, 5)], "any"),
    "matmul_broadcast": (gl.matmul, [(2, 1, 3, 4), (3, 4, 2)], "any"),
    "linear": (lambda x, w, b: gl.functional.linear(x, w, b), [(5, 3), (4, 3), (4,)], "any"),
    "linear_3d": (lambda x, w: gl.functional.linear(x, w), [(2, 5, 3), (4, 3)], "any"),
    "sum_all": (lambda a: a.sum(), [(3, 4)], "any"),
    "sum_dim": (lambda a: a.sum(dim=1), [(3, 4, 2)], "any"),
    "sum_dims_keepdim": (lambda a: a.sum(dim=(0, 2), keepdim=True), [(3, 4, 2)], "any"),
    "sum_negdim": (lambda a: gl.sum(a, -1), [(3, 4)], "any"),
    "mean_all": (lambda a: a.mean(), [(3, 4)], "any"),
    "mean_dim_keepdim": (lambda a: a.mean(0, keepdim=True), [(3, 4)], "any"),
    "var_all": (lambda a: a.var(), [(3, 4)], "any"),
    "var_dim": (lambda a: gl.var(a, dim=1, unbiased=False), [(3, 4)], "any"),
    "std_dim_keepdim": (lambda a: a.std(dim=0, keepdim=True), [(5, 3)], "any"),
    "max_all": (lambda a: a.max(), [(3, 4)], "any"),
    "max_dim": (lambda a: a.max(dim=1).values, [(3, 4)], "any"),
    "min_dim_keepdim": (lambda a: a.min(dim=0, keepdim=True)[0], [(3, 4)], "any"),
    "logsumexp_all": (lambda a: a.logsumexp(), [(3, 4)], "any"),
    "logsumexp_dim": (lambda a: gl.logsumexp(a, dim=1), [(3, 4)], "any"),
    "logsumexp_keepdim": (lambda a: gl.logsumexp(a, dim=0, keepdim=True), [(3, 4)], "any"),
    "softmax": (lambda a: gl.softmax(a, dim=1), [(3, 4)], "any"),
    "softmax_dim0": (lambda a: a.softmax(0), [(3, 4)], "any"),
    "log_softmax": (lambda a: gl.log_softmax(a, dim=-1), [(3, 4)], "any"),
    "reshape": (lambda a: a.reshape(4, 3), [(3, 4)], "any"),
    "view_infer": (lambda a: a.view(-1, 2), [(3, 4)], "any"),
    "flatten": (lambda a: a.flatten(1), [(2, 3, 4)], "any"),
    "transpose": (lambda a: a.transpose(0, 2), [(2, 3, 4)], "any"),
    "T": (lambda a: a.T, [(2, 3)], "any"),
    "permute": (lambda a: a.permute(2, 0, 1), [(2, 3, 4)], "any"),
    "unsqueeze": (lambda a: a.unsqueeze(1), [(2, 3)], "any"),
    "squeeze": (lambda a: a.squeeze(), [(2, 1, 3, 1)], "any"),
    "squeeze_dim": (lambda a: a.squeeze(1), [(2, 1, 3)], "any"),
    "expand": (lambda a: a.expand(2, 3, 4), [(3, 1)], "any"),
    "expand_as": (lambda a, b: a.expand_as(b) @ b.T, [(3, 1), (3, 4)], "any"),
    "broadcast_to": (lambda a: gl.broadcast_to(a, (2, 4)), [(4,)], "any"),
    "t_method": (lambda a: a.t(), [(2, 3)], "any"),
    "concatenate": (lambda a, b: shape_ops.concatenate([a, b], 0), [(1, 3), (2, 3)], "any"),
    "cat": (lambda a, b: gl.cat([a, b], dim=1), [(2, 3), (2, 2)], "any"),
    "stack": (lambda a, b: gl.stack([a, b], dim=1), [(2, 3), (2, 3)], "any"),
    "index_int": (lambda a: a[1], [(3, 4)], "any"),
    "index_slice": (lambda a: a[:, 1:3], [(3, 4)], "any"),
    "index_step": (lambda a: a[::2, ::-1], [(5, 4)], "any"),
    "index_none_ellipsis": (lambda a: a[None, ..., 0], [(3, 4)], "any"),
    "index_array_repeated": (lambda a: a[gl.tensor([0, 2, 0, 0])], [(3, 4)], "any"),
    "index_list": (lambda a: a[[1, 1, 2]], [(3, 2)], "any"),
    "index_mask": (lambda a: a[a > 0], [(3, 4)], "away"),
    "index_pair": (lambda a: a[gl.tensor([0, 1, 1]), gl.tensor([2, 0, 0])], [(3, 4)], "any"),
    "clone": (lambda a: a.clone() * a, [(3,)], "any"),
    "gather": (lambda a: a.gather(1, gl.tensor([[0, 2], [1, 1], [3, 0]], device=a.device)),
               [(3, 4)], "any"),
    "gather_dim0_block": (lambda a: gl.gather(a, 0, gl.tensor([[2, 0]], device=a.device)),
                          [(3, 4)], "any"),
    "masked_fill": (lambda a: a.masked_fill(a > 0.5, -1.0), [(3, 4)], "away"),
    "masked_fill_tensor_value": (lambda a, v: gl.masked_fill(a, a < 0, v), [(3, 4), ()],
                                 "away"),
    "norm_all": (lambda a: a.norm(), [(3, 4)], "any"),
    "norm_dim_keepdim": (lambda a: gl.norm(a, dim=1, keepdim=True), [(3, 4)], "any"),
    "norm_p1": (lambda a: a.norm(p=1, dim=0), [(3, 4)], "away"),
    "norm_p3": (lambda a: a.norm(p=3), [(3, 4)], "away"),
    "norm_inf": (lambda a: a.norm(p=float("inf"), dim=1), [(3, 4)], "any"),
    "cumsum": (lambda a: a.cumsum(1), [(3, 4)], "any"),
    "cumsum_dim0": (lambda a: gl.cumsum(a, dim=0), [(3, 4)], "any"),
    "sort_values": (lambda a: a.sort(1, descending=True).values * gl.arange(
        4.0, device=a.device).to(a.dtype), [(3, 4)], "any"),
    "topk_values": (lambda a: a.topk(2, dim=0).values, [(3, 4)], "any"),
    "sort_stable_descending": (lambda a: a.sort(0, descending=True, stable=True).values *
                               gl.arange(4.0, device=a.device).to(a.dtype), [(3, 4)], "any"),
    "square": (gl.square, [(3, 4)], "any"),
    "log1p": (gl.log1p, [(3, 4)], "pos"),
    "expm1": (lambda a: a.expm1(), [(3, 4)], "any"),
    "reciprocal": (gl.reciprocal, [(3, 4)], "away"),
    "rsqrt": (lambda a: a.rsqrt(), [(3, 4)], "pos"),
    "split": (lambda a: a.split([1, 3], dim=1)[1] * 2 + a.split(2)[1].sum(), [(3, 4)], "any"),
    "chunk": (lambda a: gl.chunk(a, 3, 1)[0], [(3, 5)], "any"),
    "dot": (gl.dot, [(4,), (4,)], "any"),
    "outer": (lambda a, b: a.outer(b), [(3,), (4,)], "any"),
    "view_as": (lambda a, b: a.view_as(b) * b, [(3, 4), (2, 6)], "any"),
    "remainder": (lambda a, b: a % b, [(3, 4), (4,)], "away"),
    "remainder_scalar": (lambda a: gl.remainder(a, 0.7), [(3, 4)], "any"),
    "flip": (lambda a: a.flip((0, 1)) * gl.arange(4.0, device=a.device).to(a.dtype),
             [(3, 4)], "any"),
    "repeat": (lambda a: a.repeat(2, 1, 3) * gl.arange(9.0, device=a.device).to(a.dtype),
               [(3, 3)], "any"),
    "index_select": (lambda a: a.index_select(1, gl.tensor([3, 0, 3], device=a.device)),
                     [(3, 4)], "any"),
    "masked_select": (lambda a: a.masked_select(a > 0), [(3, 4)], "away"),
    "masked_select_broadcast": (lambda a: gl.masked_select(
        a, gl.tensor([True, False, True, True], device=a.device)), [(3, 4)], "any"),
    "prod_all": (lambda a: a.prod(), [(2, 3)], "away"),
    "prod_dim": (lambda a: a.prod(1, keepdim=True), [(3, 4)], "any"),
    "prod_with_zero": (lambda a: (a * gl.tensor([1.0, 0.0, 1.0], dtype=a.dtype,
                                                device=a.device)).prod(1), [(2, 3)], "any"),
    "amax_dims": (lambda a: a.amax((0, 2)), [(2, 3, 4)], "any"),
    "amin_keepdim": (lambda a: gl.amin(a, 1, keepdim=True), [(3, 4)], "any"),
    "normalize": (lambda a: gl.nn.functional.normalize(a, dim=1), [(3, 4)], "any"),
    "chain": (lambda a, b: ((a @ b).relu() + a.sum(1, keepdim=True)).log_softmax(1),
              [(3, 4), (4, 4)], "away"),
}


def _make_input(rng, shape, domain, device):
    x = rng.standard_normal(shape)
    if domain == "pos":
        x = rng.uniform(0.5, 2.0, shape)
    elif domain == "away":
        x = np.sign(x + 1e-12) * rng.uniform(0.3, 2.0, shape)
    return gl.tensor(x, dtype=gl.float64, device=device, requires_grad=True)


@pytest.mark.parametrize("name", sorted(OPS))
def test_gradcheck(name, device):
    fn, shapes, domain = OPS[name]
    # crc32, not hash(): str hashes change with PYTHONHASHSEED, so a failure would not
    # come back with the same inputs.
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    inputs = [_make_input(rng, s, domain, device) for s in shapes]
    assert gl.autograd.gradcheck(fn, inputs)


F = gl.nn.functional


def _y(a):
    return gl.tensor([0, 2, 1], device=a.device)


# Ops outside the core table whose backward takes numbers or masks into the gradient.
FLOAT32_EXTRA = {
    "maximum_scalar_tie": (lambda a: gl.maximum(a, a * 0.3), [(3, 4)]),
    "minimum_broadcast": (lambda a, b: gl.minimum(a, b), [(3, 4), (4,)]),
    "pow_tensor_exponent": (lambda a: 1.5 ** a, [(3,)]),
    "where_scalar": (lambda a: gl.where(a > 0, a, 0.5), [(3, 4)]),
    "clamp_both": (lambda a: a.clamp(-0.2, 0.2), [(3, 4)]),
    "std_all": (lambda a: a.std(), [(3, 4)]),
    "cross_entropy_smoothed": (lambda a: F.cross_entropy(a, _y(a),
                                                         label_smoothing=0.1), [(3, 4)]),
    "nll": (lambda a: F.nll_loss(F.log_softmax(a, 1), _y(a)), [(3, 4)]),
    "bce_logits": (lambda a: F.binary_cross_entropy_with_logits(a, (a > 0).float()), [(3, 4)]),
    "huber": (lambda a: F.huber_loss(a, a.detach() * 0.5), [(3, 4)]),
    "multi_margin": (lambda a: F.multi_margin_loss(a, _y(a)), [(3, 4)]),
    "gaussian_nll": (lambda a: F.gaussian_nll_loss(a, a.detach(), F.softplus(a) + 0.1),
                     [(3, 4)]),
    "layer_norm": (lambda a: F.layer_norm(a, (4,)), [(3, 4)]),
    "batch_norm": (lambda a: F.batch_norm(a, None, None, training=True), [(3, 4)]),
    "gelu_elu_selu": (lambda a: F.gelu(a) + F.elu(a) + F.selu(a), [(3, 4)]),
}


@pytest.mark.parametrize("name", sorted(OPS) + sorted(FLOAT32_EXTRA))
def test_float32_gradients_stay_float32(name, device, monkeypatch):
    # A backward that mixes in a float64 array (a count, a 0.5 * mask, a number made an
    # array) makes every gradient below it float64, and every GEMM of the backward pass a
    # float64 one; the leaf's .grad is cast back, so only the node outputs show it. Anomaly
    # mode hands each node's input gradients to check_gradients: they are collected here.
    import gradlab.autograd.engine as engine
    seen = []
    monkeypatch.setattr(engine, "check_gradients",
                        lambda fn, grads: seen.extend((fn.name(), g.dtype) for g in grads
                                                      if g is not None))
    fn, shapes = OPS[name][:2] if name in OPS else FLOAT32_EXTRA[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    domain = OPS[name][2] if name in OPS else "away"
    inputs = [_make_input(rng, s, domain, device).detach().float().requires_grad_()
              for s in shapes]
    with gl.autograd.detect_anomaly():
        out = fn(*inputs)
        (out.sum() if out.ndim else out).backward()
    assert seen and all(dtype == np.float32 for _, dtype in seen), \
        [(op, str(dtype)) for op, dtype in seen if dtype != np.float32]


@pytest.mark.parametrize("seed", range(4))
def test_gradcheck_random_broadcast_shapes(seed, device):
    """Random broadcasting pairs for the binary ops, random reduced dims with keepdim."""
    rng = np.random.default_rng(seed)
    nd = int(rng.integers(1, 4))
    full = tuple(int(s) for s in rng.integers(1, 4, nd))
    other = tuple(1 if rng.random() < 0.4 else s for s in full[int(rng.integers(0, nd)):])
    a = _make_input(rng, full, "away", device)
    b = _make_input(rng, other, "away", device)
    for fn in (gl.add, gl.sub, gl.mul, gl.div, gl.maximum):
        assert gl.autograd.gradcheck(fn, [a, b])
    dim = int(rng.integers(0, nd))
    keep = bool(rng.integers(0, 2))
    for reduce in (gl.sum, gl.mean, gl.logsumexp):
        assert gl.autograd.gradcheck(lambda x, reduce=reduce: reduce(x, dim, keep), [a])


# The op names of DESIGN.md's public list; each must be covered by a gradcheck above.
DESIGN_OPS = """add sub mul div neg pow exp log sqrt abs sin cos tanh sigmoid relu clamp maximum
minimum where matmul sum mean var std max min logsumexp softmax log_softmax reshape view
flatten transpose permute unsqueeze squeeze expand cat stack index""".split()


def test_every_design_op_is_gradchecked():
    missing = [op for op in DESIGN_OPS
               if not any(name == op or name.startswith(op + "_") for name in OPS)]
    assert not missing, f"ops without a gradcheck case: {missing}"


def test_aliases_give_the_shapes_they_name():
    # gradcheck compares a function's gradient with its own finite differences, so a wrong
    # shape that is consistently wrong passes it; these hold the shapes.
    a = gl.arange(3.0).reshape(3, 1)
    assert a.expand_as(gl.zeros(3, 4)).tolist() == [[0.0] * 4, [1.0] * 4, [2.0] * 4]
    assert gl.broadcast_to(gl.arange(2.0), (3, 2)).shape == (3, 2)
    assert gl.arange(6.0).reshape(2, 3).t().tolist() == [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]
    assert shape_ops.concatenate([a, a], 0).shape == (6, 1)


def _round_trips(device):
    """The shape functions that a float64 gradcheck cannot reach: a cast to another
    precision and back, and a move to ``device`` and back, their gradients by value; an
    integer cast, one-hot rows, nonzero and unique, which have none."""
    x = gl.tensor([1.5, -2.0, 3.0], dtype=gl.float64, device=device, requires_grad=True)
    w = gl.tensor([2.0, 3.0, 4.0], dtype=gl.float32)
    (x.to(gl.float32).to("cpu") * w).sum().backward()
    assert x.grad.dtype == gl.float64 and x.grad.device == gl.device(device)
    assert x.grad.cpu().numpy().tolist() == [2.0, 3.0, 4.0]
    assert x.long().requires_grad is False  # integer results cut the graph
    rows = gl.nn.functional.one_hot(x.long().abs(), 4)
    assert rows.requires_grad is False and rows.tolist()[1] == [0, 0, 1, 0]
    assert (x > 0).nonzero().tolist() == [[0], [2]] and not x.nonzero().requires_grad
    assert x.long().unique(return_counts=True)[1].tolist() == [1, 1, 1]


def test_cast_and_device_moves_carry_the_gradient_back(device):
    _round_trips(device)


def _shape_code_run(work):
    """The code objects of shape.py that ``work()`` runs."""
    seen = set()

    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_filename == shape_ops.__file__:
            seen.add(frame.f_code)

    sys.setprofile(profile)
    try:
        work()
    finally:
        sys.setprofile(None)
    return seen


def test_shape_module_has_no_untested_function():
    def work():
        for name, (fn, shapes, domain) in sorted(OPS.items()):
            rng = np.random.default_rng(zlib.crc32(name.encode()))
            gl.autograd.gradcheck(fn, [_make_input(rng, s, domain, "cpu") for s in shapes])
        _round_trips("cuda" if gl.cuda.is_available() else "cpu")

    seen = _shape_code_run(work)
    code = {}
    for name, obj in vars(shape_ops).items():
        if getattr(obj, "__module__", "") != shape_ops.__name__ or name.startswith("_"):
            continue
        if isinstance(obj, type):  # a Function: its forward and (with a gradient) backward
            methods = ("forward", "backward") if obj.differentiable else ("forward",)
            code.update({f"{name}.{m}": getattr(obj, m).__code__ for m in methods})
        elif callable(obj):
            code[name] = obj.__code__
    if not gl.cuda.is_available():  # one backend: nothing to move between
        code.pop("ToDevice.forward"), code.pop("ToDevice.backward")
    missing = sorted(name for name, c in code.items() if c not in seen)
    assert not missing, f"shape functions no test here runs: {missing}"
