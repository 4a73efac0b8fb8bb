"""The kernel loader and NVRTC checks (no GPU needed), and every CUDA kernel held to its
NumPy reference (skipped without a GPU)."""
import math

import numpy as np
import pytest

import gradlab as gl
from gradlab.backend import cuda_kernels, get_backend
from gradlab.backend import reference as ref

try:
    from cupy.cuda import nvrtc  # noqa: F401
    HAVE_NVRTC = True
except Exception:
    HAVE_NVRTC = False

needs_nvrtc = pytest.mark.skipif(not HAVE_NVRTC, reason="CuPy/NVRTC not installed "
                                 "(install the `nvrtc` extra)")
needs_gpu = pytest.mark.skipif(not gl.cuda.is_available(),
                               reason=f"no CUDA device: {gl.cuda.unavailable_reason()}")


# -- loader (no GPU) --------------------------------------------------------------------------
def test_kernel_dir_resolves_to_the_sources():
    root = cuda_kernels.kernel_dir()
    for module in cuda_kernels.MODULES:
        assert (root / f"{module}.cu").is_file()
    assert (root / "common.cuh").is_file()


def test_headers_are_pasted_in():
    src = cuda_kernels.kernel_source("optim")
    assert '#include "common.cuh"' not in src
    assert "GRADLAB_COMMON_CUH" in src and "adam_step_##SUFFIX" in src
    with pytest.raises(KeyError, match="unknown kernel module"):
        cuda_kernels.kernel_source("nope")


@needs_nvrtc
@pytest.mark.parametrize("module", list(cuda_kernels.MODULES))
def test_every_module_compiles_cleanly_with_all_entry_points(module):
    ok, log, ptx = cuda_kernels.nvrtc_compile(module, "compute_75")
    assert ok and log == ""
    assert cuda_kernels.missing_entry_points(module, ptx) == []


@needs_nvrtc
def test_checker_fails_on_warnings_and_errors(monkeypatch, capsys):
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "kernels_check", cuda_kernels.kernel_dir().parent / "tools" / "kernels_check.py")
    if spec is None or not spec.loader or not spec.origin:
        pytest.skip("tools/kernels_check.py is not part of an installed package")
    checker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checker)
    assert checker.main() == 0
    warn = 'extern "C" __global__ void k(float* x) { int unused = 1; x[0] = 1.f; }'
    monkeypatch.setattr(cuda_kernels, "kernel_source", lambda module: warn)
    assert checker.main() == 1
    assert "declared but never referenced" in capsys.readouterr().out
    monkeypatch.setattr(cuda_kernels, "kernel_source", lambda module: "this is not C++")
    ok, log, _ = cuda_kernels.nvrtc_compile("optim", "compute_90")
    assert not ok and "error" in log


def test_kernel_report_lists_every_entry_point():
    report = gl.backend.kernel_report()
    assert [r["module"] for r in report] == list(cuda_kernels.MODULES)
    names = {n for r in report for n in r["entry_points"]}
    assert {"adam_step_f32", "adam_step_f64", "dropout_forward_f32",
            "softmax_ce_block_f64"} <= names
    want = "loaded" if gl.cuda.is_available() else "compiles" if HAVE_NVRTC else "unchecked"
    assert {r["status"] for r in report} == {want}, report


# -- CUDA against the NumPy reference ---------------------------------------------------------
SIZES = [1, 31, 4097, (1 << 20) + 3]
MIXED = [1, 0, 31, 255, 256, 257, 4097, 65535, 65536, 65537, 100_000, 3] * 4


def _states(rng, sizes, dtype, positive):
    return [(rng.random(n) if positive else rng.standard_normal(n)).astype(dtype)
            for n in sizes]


OPTIMIZERS = {
    "sgd": (["momentum_buffers"], [False],
            dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True, weight_decay=0.01,
                 maximize=False, first_step=False)),
    "sgd_first": (["momentum_buffers"], [False],
                  dict(lr=0.1, momentum=0.9, dampening=0.0, nesterov=False, weight_decay=0.0,
                       maximize=True, first_step=True)),
    "adam": (["exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"], [False, True, True],
             dict(step=3, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01,
                  decoupled_weight_decay=False, amsgrad=True, maximize=False)),
    "adamw": (["exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"], [False, True, None],
              dict(step=1, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1,
                   decoupled_weight_decay=True, amsgrad=False, maximize=True)),
    "rmsprop": (["square_avgs", "momentum_buffers", "grad_avgs"], [True, False, False],
                dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.9,
                     centered=True, maximize=False)),
    "adagrad": (["state_sums"], [True],
                dict(step=4, lr=1e-2, lr_decay=0.01, weight_decay=0.1, eps=1e-10,
                     maximize=False)),
    "adadelta": (["square_avgs", "acc_deltas"], [True, True],
                 dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=True)),
}
METHOD = {"sgd_first": "sgd", "adamw": "adam"}


def _optimizer_case(name, sizes, dtype, rng):
    states, positive, kw = OPTIMIZERS[name]
    host = {"params": _states(rng, sizes, dtype, False), "grads": _states(rng, sizes, dtype, False)}
    for s, pos in zip(states, positive):
        host[s] = None if pos is None else _states(rng, sizes, dtype, pos)
    if name == "rmsprop":  # centered needs v >= a^2
        host["grad_avgs"] = [0.1 * a for a in host["grad_avgs"]]
    return host, kw


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sizes", [[n] for n in SIZES] + [MIXED], ids=lambda s: f"{len(s)}x")
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_kernel_matches_reference(name, sizes, dtype, rng):
    gpu = get_backend("cuda")
    host, kw = _optimizer_case(name, sizes, dtype, rng)
    dev = {k: None if v is None else [gpu.asarray(a) for a in v] for k, v in host.items()}
    method = METHOD.get(name, name) + "_step"
    getattr(ref, method)(*host.values(), **kw)
    getattr(gpu, method)(*dev.values(), **kw)
    tol = dict(rtol=2e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    for key, arrays in host.items():
        if arrays is None:
            continue
        for i, (want, got) in enumerate(zip(arrays, dev[key])):
            np.testing.assert_allclose(gpu.to_numpy(got), want, err_msg=f"{key}[{i}]", **tol)


@needs_gpu
def test_pointer_table_is_reused_and_rebuilt_on_new_buffers(rng):
    gpu = get_backend("cuda")
    host, kw = _optimizer_case("adagrad", [10, 20], np.float32, rng)
    dev = [[gpu.asarray(a) for a in v] for v in host.values()]
    gpu._tables.clear()
    gpu.adagrad_step(*dev, **kw)
    first = next(iter(gpu._tables.values()))
    gpu.adagrad_step(*dev, **kw)
    assert len(gpu._tables) == 1 and next(iter(gpu._tables.values())) is first
    dev[1] = [g.copy() for g in dev[1]]           # new grad buffers: a new table
    gpu.adagrad_step(*dev, **kw)
    assert len(gpu._tables) == 2


def _poison_pool(nbytes):
    """Return a NaN-filled block to CuPy's pool so the kernel's next output likely reuses it:
    an element the kernel forgets to write then shows up as NaN."""
    import cupy
    block = cupy.full(nbytes // 8 + 1, np.nan, dtype=cupy.float64)
    del block


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", SIZES + [128, 129])
@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 1.0])
def test_dropout_bit_identical_to_cpu(n, p, dtype, rng):
    gpu = get_backend("cuda")
    x = rng.standard_normal(n).astype(dtype)
    for key, offset in [(0, 0), (0xDEADBEEF12345678, 2**64 - 5), (7, 1234567)]:
        want_y, want_mask = ref.dropout_forward(x, p, key, offset)
        _poison_pool(x.nbytes)
        y, mask = gpu.dropout_forward(gpu.asarray(x), p, key, offset)
        np.testing.assert_array_equal(gpu.to_numpy(mask), want_mask)
        np.testing.assert_array_equal(gpu.to_numpy(y), want_y)
        _poison_pool(x.nbytes)
        g = gpu.dropout_backward(gpu.asarray(x), mask, p)
        np.testing.assert_array_equal(gpu.to_numpy(g), ref.dropout_backward(x, want_mask, p))


@needs_gpu
def test_dropout_reproducible_under_manual_seed():
    gpu = get_backend("cuda")
    x = gpu.asarray(np.ones((64, 100), np.float32))
    gl.manual_seed(5)
    a = gpu.dropout_forward(x, 0.5, *gpu.random.take_philox(x.size))[1]
    b = gpu.dropout_forward(x, 0.5, *gpu.random.take_philox(x.size))[1]
    gl.manual_seed(5)
    c = gpu.dropout_forward(x, 0.5, *gpu.random.take_philox(x.size))[1]
    assert (a == c).all() and not (a == b).all()


CE_SHAPES = [(1, 1), (1, 31), (31, 10), (4097, 3), (64, 1025), (5, 4097), (2, (1 << 20) + 3)]


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", CE_SHAPES, ids=str)
@pytest.mark.parametrize("variant", ["plain", "weighted_ignore", "smoothing"])
def test_softmax_ce_matches_reference(shape, variant, dtype, rng):
    gpu = get_backend("cuda")
    n, c = shape
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    y = rng.integers(0, c, size=n)
    weight, ignore, s = None, -100, 0.0
    if variant != "plain":
        weight = (rng.random(c) + 0.5).astype(dtype)
        ignore = int(y[0])
        s = 0.1 if variant == "smoothing" else 0.0
    want_loss, want_grad = ref.softmax_cross_entropy(x, y, weight, ignore, s)
    _poison_pool(x.nbytes)
    loss, grad = gpu.softmax_cross_entropy(gpu.asarray(x), gpu.asarray(y),
                                           None if weight is None else gpu.asarray(weight),
                                           ignore, s)
    tol = dict(rtol=1e-4, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(gpu.to_numpy(loss), want_loss, **tol)
    np.testing.assert_allclose(gpu.to_numpy(grad), want_grad, **tol)


@needs_gpu
@pytest.mark.parametrize("c", [3, 2000])
def test_softmax_ce_extreme_logits_and_bad_target(c):
    gpu = get_backend("cuda")
    x = np.zeros((3, c), np.float32)
    x[:, 0], x[:, 1], x[:, 2] = 1e8, 0.0, -1e8
    loss, grad = gpu.softmax_cross_entropy(gpu.asarray(x), gpu.asarray(np.array([0, 1, 2])),
                                           None, -100, 0.0)
    want_loss, want_grad = ref.softmax_cross_entropy(x, np.array([0, 1, 2]), None, -100, 0.0)
    np.testing.assert_allclose(gpu.to_numpy(loss), want_loss, rtol=1e-6)
    np.testing.assert_allclose(gpu.to_numpy(grad), want_grad, atol=1e-6)
    assert math.isfinite(float(gpu.to_numpy(loss).sum()))
    with pytest.raises(IndexError, match=f"Target {c + 4} is out of bounds"):
        gpu.softmax_cross_entropy(gpu.asarray(x), gpu.asarray(np.array([0, c + 4, -7])), None,
                                  -100, 0.0)
    # No device assert fired: the context still works.
    loss, _ = gpu.softmax_cross_entropy(gpu.asarray(x), gpu.asarray(np.array([0, 0, 0])), None,
                                        -100, 0.0)
    assert gpu.to_numpy(loss)[0] == 0
