"""Every implementation of dropout held to the reference tier (backend/fused/dropout/
reference.py): the same bytes for outputs and masks (compared with tobytes, so NaN payloads,
signed zeros and padding bits count). All tiers in one process (numba, and the CUDA kernel on
the emulated device or a GPU), then the numba tier on every size class, p, dtype, key and
offset, and the call-time choice."""
import numpy as np
import pytest

import gradlab as gl
from gradlab.backend import checks, cpu_backend, cpu_threads, get_backend
from gradlab.backend.fused import dropout as fused_dropout
from gradlab.backend.fused.dropout import reference
from tests.backend.fused.numba_tier import numba_tier

numba_dropout = numba_tier("dropout")

pytestmark = [
    # the reference warns when a kept finfo.max overflows to inf; the kernels do not
    pytest.mark.filterwarnings("ignore:overflow encountered in multiply:RuntimeWarning"),
]

# Random123's kat_vectors, "philox4x32 10" lines (as in test_reference_dropout.py).
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]
TASK = 32 * numba_dropout.TASK_WORDS
# empty, single, not multiples of 4 / 32, one task exactly and around it, several tasks with a
# ragged tail, and past the size from which every thread is used
SIZES = [0, 1, 3, 4, 5, 31, 32, 33, 63, 100, TASK - 1, TASK, TASK + 1, 3 * TASK + 37,
         numba_dropout.PARALLEL_MIN + 77]
PS = [0.0, 0.1, 0.5, 0.9, 1.0]
# offsets near 2^32 (the counter's low word carries into the high word) and near 2^64 (the
# counter wraps inside one call)
KEY_OFFSETS = [(0, 0), (0xDEADBEEF12345678, 2**32 - 3), (2**64 - 1, 2**64 - 5), (42, 2**63 + 1)]


def _inputs(n, dtype, seed=0):
    x = np.random.default_rng(seed).standard_normal(n).astype(dtype)
    special = np.array([np.nan, -np.inf, np.inf, -0.0, 0.0, np.finfo(dtype).max,
                        np.finfo(dtype).smallest_subnormal, -1e-30], dtype=dtype)
    k = min(n, special.size)
    x[:k] = special[:k]                  # NaN/inf dropped must become 0, kept max overflows
    return x


def _same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


def _check(x, p, key, offset, grad=None):
    y, mask = numba_dropout.dropout_forward(x, p, key, offset)
    y_ref, mask_ref = reference.dropout_forward(x, p, key, offset)
    _same(y, y_ref)
    _same(mask, mask_ref)
    g = x if grad is None else grad
    _same(numba_dropout.dropout_backward(g, mask, p), reference.dropout_backward(g, mask, p))
    return y, mask


@pytest.mark.parametrize("ctr,key,expected", KAT)
def test_kernel_philox_known_answers(ctr, key, expected):
    words = numba_dropout._philox(*(np.uint64(c) for c in ctr), np.uint64(key[0]),
                                    np.uint64(key[1]))
    assert tuple(int(w) for w in words) == expected


@pytest.mark.parametrize("key,offset", KEY_OFFSETS + [(7, 2**64 - 1)])
def test_kernel_stream_words_match_reference(key, offset):
    nblocks = 777
    words = np.empty(4 * nblocks, dtype=np.uint32)
    numba_dropout._draws(words, 0, nblocks, np.uint64(key & 0xFFFFFFFF), np.uint64(key >> 32),
                           np.uint64(offset))
    _same(words, reference.philox_stream(key, offset, 4 * nblocks))
    # a run that starts later in the stream: block b of it is block first + b of the stream
    tail = np.empty(40, dtype=np.uint32)
    numba_dropout._draws(tail, 700, 10, np.uint64(key & 0xFFFFFFFF), np.uint64(key >> 32),
                           np.uint64(offset))
    _same(tail, words[2800:2840])


@pytest.mark.parametrize("key,offset", KEY_OFFSETS)
@pytest.mark.parametrize("p", PS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bitwise_equal_to_reference(dtype, p, key, offset):
    for n in SIZES:
        _check(_inputs(n, dtype, seed=n), p, key, offset)


def test_draw_equal_to_threshold_is_kept():
    """p = w / 2^32 is exact in float64, so the threshold ceil(p 2^32) is the draw w itself:
    that element is kept (w >= threshold), and dropped one step of p later."""
    n, key, offset = 3 * TASK + 9, 77, 2**32 - 100
    words = reference.philox_stream(key, offset, n)
    x = _inputs(n, np.float32)
    for i in (0, 5, 31, 32, TASK + 3, n - 1):
        w = int(words[i])
        for p, kept in ((w / 2**32, True), ((w + 1) / 2**32, False)):
            _, mask = _check(x, p, key, offset)
            assert bool((int(mask[i // 32]) >> (i % 32)) & 1) == kept


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shapes_and_layouts(dtype):
    base = _inputs(6 * 35 * 4, dtype).reshape(6, 35, 4)
    cases = [base, base.transpose(2, 0, 1), base[:, ::3, 1], np.asfortranarray(base),
             base[..., 0].T, base.reshape(-1)[::7], base[0, 0, :1].reshape(()),
             np.broadcast_to(base[0, 0], (9, 4)), np.zeros((0, 5), dtype)]
    ro = base.copy()
    ro.flags.writeable = False
    cases.append(ro)
    for i, x in enumerate(cases):
        y, mask = _check(x, 0.4, 1234 + i, 99)
        assert y.flags.c_contiguous and y.shape == x.shape


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 2, 33, 3 * TASK + 37])
def test_backward_broadcast_and_strided_grads(dtype, n):
    """The gradient of sum() or mean() reaches dropout as a stride-0 broadcast."""
    x = _inputs(n, dtype)
    _, mask = numba_dropout.dropout_forward(x, 0.3, 5, 11)
    src = _inputs(3 * n, dtype, seed=1)
    grads = [np.broadcast_to(dtype(1.5), (n,)), np.broadcast_to(src[:1], (n,)), src[::3],
             np.broadcast_to(dtype(-2.0), (1, n)), np.broadcast_to(src[2:3], (n,))]
    for g in grads:
        _same(numba_dropout.dropout_backward(g, mask, 0.3),
              reference.dropout_backward(g, mask, 0.3))


def test_mask_padding_bits_are_zero():
    for n in (1, 33, TASK + 5):
        _, mask = numba_dropout.dropout_forward(np.ones(n, np.float32), 0.01, 3, 0)
        assert int(mask[-1]) >> (n % 32 or 32) == 0
        assert int(mask[-1]) != 0        # p = 0.01 keeps nearly all: the live bits are set


def test_thread_count_kept_and_results_thread_independent():
    threads = cpu_threads.get_num_threads()
    n = numba_dropout.PARALLEL_MIN * 2 + 3                 # a partial last mask word
    x = _inputs(n, np.float32)
    g = _inputs(n, np.float32, seed=1)
    y_all, m_all = numba_dropout.dropout_forward(x, 0.5, 8, 1)
    b_all = numba_dropout.dropout_backward(g, m_all, 0.5)
    bc_all = numba_dropout.dropout_backward(np.broadcast_to(np.float32(2), (n,)), m_all, 0.5)
    numba_dropout.dropout_forward(x[:100], 0.5, 8, 1)          # small: runs on one thread
    assert cpu_threads.get_num_threads() == threads
    try:
        for t in (1, 2, 3):
            cpu_threads.set_num_threads(t)
            y, m = numba_dropout.dropout_forward(x, 0.5, 8, 1)
            _same(y, y_all)
            _same(m, m_all)
            _same(numba_dropout.dropout_backward(g, m, 0.5), b_all)
            _same(numba_dropout.dropout_backward(np.broadcast_to(np.float32(2), (n,)), m, 0.5),
                  bc_all)
    finally:
        cpu_threads.set_num_threads(threads)
    _check(x, 0.5, 8, 1, grad=g)


def test_parts_cover_every_task_once():
    """Any number of parts, more parts than tasks included, gives the one-part result."""
    n = 3 * TASK + 37
    x = _inputs(n, np.float64)
    y_ref, m_ref = reference.dropout_forward(x, 0.3, 9, 2)
    args = (np.uint64(9), np.uint64(0), np.uint64(2),
            np.uint32(checks.dropout_threshold(0.3)), np.float64(checks.dropout_scale(0.3)),
            np.float64(0))
    for nparts in (1, 2, 3, 4, 7):
        y = np.full(n, np.nan)
        mask = np.zeros(m_ref.size, np.uint32)
        for k in range(nparts):
            numba_dropout._forward_kernel(k, nparts, x, y, mask, *args)
        mask[-1] &= np.uint32((1 << (n % 32)) - 1)
        _same(y, y_ref)
        _same(mask, m_ref)
        out = np.full(n, np.nan)
        for k in range(nparts):
            numba_dropout._backward_kernel(k, nparts, x, m_ref, out, args[4], args[5], False)
        _same(out, reference.dropout_backward(x, m_ref, 0.3))


def test_kernels_are_serial_nogil_numba():
    """The threads are cpu_threads' own: no numba parallel=True (an OpenMP pool)."""
    for kernel in (numba_dropout._forward_kernel, numba_dropout._backward_kernel):
        assert kernel.targetoptions.get("nogil") is True
        assert not kernel.targetoptions.get("parallel")


@pytest.mark.parametrize("args,exc", [
    ((np.ones(3, np.float32), 1.5, 0, 0), ValueError),
    ((np.ones(3, np.float32), True, 0, 0), TypeError),
    ((np.ones(3, np.float32), 0.5, -1, 0), ValueError),
    ((np.ones(3, np.float32), 0.5, 0, 2**64), ValueError),
    ((np.ones(3, np.int64), 0.5, 0, 0), TypeError),
    ((np.ones(3, np.float16), 0.5, 0, 0), TypeError),
])
def test_forward_rejects_what_the_reference_rejects(args, exc):
    for impl in (reference, numba_dropout):
        with pytest.raises(exc) as info:
            impl.dropout_forward(*args)
        if impl is reference:
            msg = str(info.value)
    assert str(info.value) == msg


@pytest.mark.parametrize("grad,mask", [
    (np.ones(40, np.float32), np.zeros(1, np.uint32)),       # too few words
    (np.ones(40, np.float32), np.zeros(2, np.int32)),        # wrong dtype
    (np.ones(40, np.float32), np.zeros((2, 1), np.uint32)),  # not a vector
    (np.ones(40, np.int32), np.zeros(2, np.uint32)),         # integer grad
])
def test_backward_rejects_what_the_reference_rejects(grad, mask):
    errors = []
    for impl in (reference, numba_dropout):
        with pytest.raises((ValueError, TypeError)) as info:
            impl.dropout_backward(grad, mask, 0.5)
        errors.append((type(info.value), str(info.value)))
    assert errors[0] == errors[1]


@pytest.mark.parametrize("tier", ["numba", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_tier_is_bitwise_the_reference(dtype, tier):
    """The numba tier and the CUDA kernel (emulated device here, the real one on a GPU) on the
    reference's inputs."""
    fwd = fused_dropout.dropout_forward.implementations()
    bwd = fused_dropout.dropout_backward.implementations()
    if tier not in fwd:
        pytest.skip(f"no {tier} tier in this process: {gl.cuda.unavailable_reason()}")
    be = get_backend("cuda") if tier == "cuda" else cpu_backend()
    for n in (0, 1, 33, 4097, TASK + 1):
        x = _inputs(n, dtype, seed=n)
        g = np.random.default_rng(n).standard_normal(n).astype(dtype)
        for p in PS:
            for key, offset in KEY_OFFSETS[:2]:
                want_y, want_mask = fwd["numpy"](cpu_backend(), x, p, key, offset)
                want_g = bwd["numpy"](cpu_backend(), g, want_mask, p)
                y, mask = fwd[tier](be, be.asarray(x), p, key, offset)
                _same(be.to_numpy(y), want_y)
                _same(be.to_numpy(mask), want_mask)
                _same(be.to_numpy(bwd[tier](be, be.asarray(g), mask, p)), want_g)


# the inputs hold inf and -inf on purpose: their sum at the end is nan
@pytest.mark.filterwarnings("ignore:invalid value encountered in reduce:RuntimeWarning")
def test_cpu_backend_and_layers_use_the_kernels(monkeypatch):
    bk = cpu_backend()
    monkeypatch.delenv("GRADLAB_NO_JIT", raising=False)
    x1 = np.ones(10, np.float32)
    assert fused_dropout.dropout_forward.tier_for(bk, x1, 0.3, 0, 0) == "numba"
    for p in (0.0, 1.0):  # no draws: the reference
        assert fused_dropout.dropout_forward.tier_for(bk, x1, p, 0, 0) == "numpy"
    assert fused_dropout.dropout_forward.tier_for(bk, x1[:0], 0.3, 0, 0) == "numpy"
    calls = []
    for name in ("_forward_kernel", "_backward_kernel"):
        kernel = getattr(numba_dropout, name)

        def counted(*args, _kernel=kernel, _name=name):
            calls.append(_name)
            return _kernel(*args)
        monkeypatch.setattr(numba_dropout, name, counted)

    x_np = _inputs(1000, np.float32)
    for make in (lambda: gl.nn.Dropout(0.3), lambda: (lambda t: gl.nn.functional.dropout(t, 0.3))):
        gl.manual_seed(7)
        key, offset = bk.random.philox_key, bk.random.philox_offset
        x = gl.tensor(x_np, requires_grad=True)
        y = make()(x)
        g = np.random.default_rng(3).standard_normal(1000).astype(np.float32)
        y.backward(gl.tensor(g))
        y_ref, mask_ref = reference.dropout_forward(x_np, 0.3, key, offset)
        _same(y.detach().numpy(), y_ref)
        _same(x.grad.numpy(), reference.dropout_backward(g, mask_ref, 0.3))
    assert calls == ["_forward_kernel", "_backward_kernel"] * 2
    # eval mode and p = 0 stay the identity without a kernel call
    layer = gl.nn.Dropout(0.3).eval()
    x = gl.tensor(x_np)
    assert layer(x) is x and gl.nn.functional.dropout(x, 0.0) is x
    assert len(calls) == 4
    # GRADLAB_NO_JIT, read at each call: the same layer now runs the reference
    monkeypatch.setenv("GRADLAB_NO_JIT", "1")
    assert fused_dropout.dropout_forward.tier_for(bk, x1, 0.3, 0, 0) == "numpy"
    assert fused_dropout.dropout_backward.tier_for(bk, x1, np.zeros(1, np.uint32), 0.3) == "numpy"
    gl.nn.functional.dropout(gl.tensor(x_np, requires_grad=True), 0.3).sum().backward()
    assert len(calls) == 4
