"""The kernel loader and NVRTC checks (no GPU needed), and every CUDA kernel held to its
NumPy reference: on a GPU where there is one, else on the emulated CUDA device that
tests/conftest.py installs (tests/cuda_emulator: the same kernels/*.cu compiled for the CPU).

Optimizer steps, dropout, uniform draws and bias + ReLU must equal the reference bit for bit
(same scalars from backend/fused/optim/scalars.py, same operation order, no FMA contraction:
NVRTC --fmad=false, the emulator -ffp-contract=off). Softmax-CE calls exp and log, whose last
bits differ between CUDA's libdevice, glibc and NumPy's SIMD loops: it must agree within
CE_ULPS units in the last place (scaled as described at _assert_ulps); the normal draws (log,
cos, sin) within NORMAL_ULPS. Bias + ReLU's column sums are CuPy's own reduction (an eager
step's), held to NumPy's within the rounding of another order.
"""
import math

import numpy as np
import pytest

import gradlab as gl
from gradlab.backend import checks, cuda_kernels, get_backend
from gradlab.backend.fused.bias_relu import reference as bias_relu_ref
from gradlab.backend.fused.dropout import reference as dropout_ref
from gradlab.backend.fused.optim import reference as optim_ref
from gradlab.backend.fused.random import reference as random_ref
from gradlab.backend.fused.softmax_ce import reference as ce_ref

try:
    from cupy.cuda import nvrtc  # noqa: F401
    HAVE_NVRTC = True
except Exception:
    HAVE_NVRTC = False

needs_nvrtc = pytest.mark.skipif(not HAVE_NVRTC, reason="CuPy/NVRTC not installed "
                                 "(install the `nvrtc` extra)")
_no_cuda = pytest.mark.skipif(not gl.cuda.is_available(),
                              reason=f"no CUDA device: {gl.cuda.unavailable_reason()}")


def needs_gpu(fn):
    """A test of the CUDA backend: runs on a GPU or the emulated device (marker ``cuda``)."""
    return pytest.mark.cuda(_no_cuda(fn))


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


@needs_nvrtc
def test_compiled_modules_are_cached_next_to_their_source(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADLAB_KERNEL_CACHE", str(tmp_path / "cache"))
    compiles = []
    real = cuda_kernels.nvrtc_compile
    monkeypatch.setattr(cuda_kernels, "nvrtc_compile",
                        lambda *a, **kw: compiles.append(a) or real(*a, **kw))
    ptx = cuda_kernels.compiled_module("bias_relu", "compute_80")
    assert ptx.parent == tmp_path / "cache" and ptx.suffix == ".ptx"
    assert compiles == [("bias_relu", "compute_80")]
    assert cuda_kernels.missing_entry_points("bias_relu", ptx.read_text()) == []
    source = ptx.with_suffix(".cu").read_text()
    assert source.endswith(cuda_kernels.kernel_source("bias_relu"))
    assert "--ftz=false" in source.splitlines()[0]
    assert cuda_kernels.compiled_module("bias_relu", "compute_80") == ptx and len(compiles) == 1
    cubin = cuda_kernels.compiled_module("bias_relu", "sm_90")  # a real arch: a CUBIN
    assert cubin.suffix == ".cubin" and cubin.read_bytes()[:4] == b"\x7fELF"
    assert cubin.with_suffix(".cu").is_file()
    original = cuda_kernels.kernel_source
    monkeypatch.setattr(cuda_kernels, "kernel_source", lambda m: original(m) + "\n// edit\n")
    assert cuda_kernels.compiled_module("bias_relu", "compute_80") != ptx  # the text is the key
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")] == []


@needs_nvrtc
def test_compiled_kernels_keep_float32_subnormals():
    # CuPy's RawModule(code=...) appends -ftz=true; the loader's own compile does not: no
    # float32 add, multiply or compare of the kernels flushes (libdevice's expf keeps its
    # internal ex2.approx.ftz, whose input it has scaled into the normal range).
    for module in cuda_kernels.MODULES:
        ok, _, ptx = cuda_kernels.nvrtc_compile(module, "compute_90")
        ftz = {line.split()[0] for line in ptx.splitlines() if ".ftz." in line}
        assert ok and ftz <= {"ex2.approx.ftz.f32", "rcp.approx.ftz.f64"}, (module, ftz)


@needs_nvrtc
def test_compiled_module_errors_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADLAB_KERNEL_CACHE", str(tmp_path / "a"))
    monkeypatch.setattr(cuda_kernels, "kernel_source", lambda module: "this is not C++")
    with pytest.raises(cuda_kernels.KernelCompileError, match="(?s)kernels/optim.cu for "
                                                              "compute_90 failed:.*error"):
        cuda_kernels.compiled_module("optim", "compute_90")
    monkeypatch.undo()
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("GRADLAB_KERNEL_CACHE", str(blocker / "cache"))
    with pytest.raises(cuda_kernels.KernelCompileError, match="set GRADLAB_KERNEL_CACHE"):
        cuda_kernels.compiled_module("dropout", "compute_90")
    assert blocker.read_text() == "not a folder"


@needs_gpu
def test_the_loader_hands_cupy_a_compiled_module_not_source(tmp_path, monkeypatch):
    import cupy
    monkeypatch.setenv("GRADLAB_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setattr(cuda_kernels, "_modules", {})
    monkeypatch.setattr(cuda_kernels, "_functions", {})
    made = []
    real = cupy.RawModule
    monkeypatch.setattr(cupy, "RawModule", lambda **kw: made.append(kw) or real(**kw))
    fn = cuda_kernels.get_function("bias_relu", "bias_relu_forward", np.dtype(np.float32), 0)
    (kw,) = made
    assert set(kw) == {"path"} and kw["path"].endswith((".cubin", ".ptx"))
    # every entry point is fetched with the module, outside any capture that may follow
    assert {k[1] + "_" + k[2] for k in cuda_kernels._functions} == \
        set(cuda_kernels.entry_points("bias_relu"))
    assert str(tmp_path) in kw["path"]
    y = cupy.asarray(np.array([[-1.0, 2.0]], np.float32))
    fn((1,), (32,), (y, cupy.asarray(np.zeros(2, np.float32)), np.int64(2), np.int64(2)))
    assert y.get().tolist() == [[0.0, 2.0]]


@needs_gpu
def test_a_module_the_driver_refuses_is_a_clear_error(tmp_path, monkeypatch):
    bad = tmp_path / "optim-sm_90-damaged.cubin"
    bad.write_bytes(b"not a module")
    bad.with_suffix(".cu").write_text("this is not C++")  # what the emulator loads instead
    monkeypatch.setattr(cuda_kernels, "compiled_module", lambda module, arch: bad)
    monkeypatch.setattr(cuda_kernels, "_modules", {})
    monkeypatch.setattr(cuda_kernels, "_functions", {})
    with pytest.raises(cuda_kernels.KernelCompileError) as err:
        cuda_kernels.get_function("optim", "adam_step", np.dtype(np.float32), 0)
    assert str(bad) in str(err.value) and "delete it" in str(err.value)
    assert cuda_kernels._functions == {} and cuda_kernels._modules == {}


def test_the_arch_is_the_devices_or_the_newest_nvrtc_knows(monkeypatch):
    class FakeNvrtc:
        @staticmethod
        def getSupportedArchs():
            return (75, 80, 86, 89, 90)

        @staticmethod
        def getVersion():
            return (13, 0)
    import sys
    import types
    fake = types.ModuleType("cupy.cuda")
    fake.nvrtc = FakeNvrtc
    monkeypatch.setitem(sys.modules, "cupy.cuda", fake)
    monkeypatch.setitem(sys.modules, "cupy.cuda.nvrtc", FakeNvrtc)
    assert cuda_kernels._arch("86") == "sm_86"  # known: a CUBIN for the device
    assert cuda_kernels._arch("87") == "compute_86"  # unknown: the newest PTX below it
    assert cuda_kernels._arch("100") == "compute_90"
    with pytest.raises(cuda_kernels.KernelCompileError,
                       match=r"compute capability 7\.0, older than any this NVRTC 13\.0 "
                             r"compiles for \(from 7\.5\); install .*device='cpu'"):
        cuda_kernels._arch("70")


def test_kernel_report_lists_every_entry_point():
    report = gl.backend.kernel_report()
    assert [r["module"] for r in report] == list(cuda_kernels.MODULES)
    names = {n for r in report for n in r["entry_points"]}
    assert {"adam_step_f32", "adam_step_f64", "dropout_forward_f32",
            "softmax_ce_block_f64"} <= names
    # On the emulated device CuPy's RawModule is the stand-in's: "loaded" there means the
    # kernels compiled with g++ and every entry point was found.
    want = "loaded" if gl.cuda.is_available() else "compiles" if HAVE_NVRTC else "unchecked"
    assert {r["status"] for r in report} == {want}, report


# -- CUDA against the NumPy reference ---------------------------------------------------------
SIZES = [0, 1, 31, 4097, (1 << 20) + 3]
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
    "sgd_plain": (["momentum_buffers"], [None],
                  dict(lr=0.05, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0,
                       maximize=False, first_step=False)),
    "adam": (["exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"], [False, True, True],
             dict(step=3, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01,
                  decoupled_weight_decay=False, amsgrad=True, maximize=False)),
    "adamw": (["exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"], [False, True, None],
              dict(step=1, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1,
                   decoupled_weight_decay=True, amsgrad=False, maximize=True)),
    "rmsprop": (["square_avgs", "momentum_buffers", "grad_avgs"], [True, False, False],
                dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.9,
                     centered=True, maximize=False)),
    "rmsprop_plain": (["square_avgs", "momentum_buffers", "grad_avgs"], [True, None, None],
                      dict(lr=1e-2, alpha=0.9, eps=1e-8, weight_decay=0.1, momentum=0.0,
                           centered=False, maximize=True)),
    "adagrad": (["state_sums"], [True],
                dict(step=4, lr=1e-2, lr_decay=0.01, weight_decay=0.1, eps=1e-10,
                     maximize=False)),
    "adadelta": (["square_avgs", "acc_deltas"], [True, True],
                 dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=True)),
    "adamax": (["exp_avgs", "exp_infs"], [False, True],
               dict(step=2, lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01,
                    maximize=True)),
    "nadam": (["exp_avgs", "exp_avg_sqs"], [False, True],
              dict(step=2, lr=2e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01,
                   decoupled_weight_decay=False, momentum_decay=4e-3, mu_product=0.45,
                   maximize=False)),
    "nadam_decoupled": (["exp_avgs", "exp_avg_sqs"], [False, True],
                        dict(step=1, lr=2e-3, beta1=0.9, beta2=0.99, eps=1e-8,
                             weight_decay=0.1, decoupled_weight_decay=True,
                             momentum_decay=4e-3, mu_product=1.0, maximize=True)),
    "radam": (["exp_avgs", "exp_avg_sqs"], [False, True],  # rectified from step 6
              dict(step=7, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01,
                   decoupled_weight_decay=False, maximize=False)),
    "radam_early": (["exp_avgs", "exp_avg_sqs"], [False, True],
                    dict(step=1, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1,
                         decoupled_weight_decay=True, maximize=True)),
}
METHOD = {"sgd_first": "sgd", "sgd_plain": "sgd", "adamw": "adam",
          "rmsprop_plain": "rmsprop", "nadam_decoupled": "nadam", "radam_early": "radam"}


def _optimizer_case(name, sizes, dtype, rng):
    states, positive, kw = OPTIMIZERS[name]
    host = {"params": _states(rng, sizes, dtype, False), "grads": _states(rng, sizes, dtype, False)}
    for s, pos in zip(states, positive):
        host[s] = None if pos is None else _states(rng, sizes, dtype, pos)
    if name == "rmsprop":  # centered needs v >= a^2, which every later step then keeps
        host["grad_avgs"] = [(0.9 * np.sqrt(v) * np.sign(a)).astype(dtype)
                             for v, a in zip(host["square_avgs"], host["grad_avgs"])]
    return host, kw


def _run_both(name, sizes, dtype, rng, steps=1):
    """``steps`` steps of the reference on host arrays and of the CUDA backend on copies;
    returns (host, device) dicts of state lists after the last step."""
    gpu = get_backend("cuda")
    host, kw = _optimizer_case(name, sizes, dtype, rng)
    dev = {k: None if v is None else [gpu.asarray(a) for a in v] for k, v in host.items()}
    method = METHOD.get(name, name) + "_step"
    for k in range(steps):
        kw_k = dict(kw)
        if "step" in kw_k:
            kw_k["step"] = kw["step"] + k
        if k and "first_step" in kw_k:
            kw_k["first_step"] = False
        getattr(optim_ref, method)(*host.values(), **kw_k)
        getattr(gpu, method)(*dev.values(), **kw_k)
    return host, dev


def _assert_bitwise(host, dev):
    gpu = get_backend("cuda")
    for key, arrays in host.items():
        if arrays is None:
            continue
        for i, (want, got) in enumerate(zip(arrays, dev[key])):
            # NaN would compare equal to NaN below: the cases are built to stay finite.
            assert np.isfinite(want).all(), f"{key}[{i}]: the reference is not finite"
            np.testing.assert_array_equal(gpu.to_numpy(got), want, err_msg=f"{key}[{i}]")


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sizes", [[n] for n in SIZES] + [MIXED],
                         ids=lambda s: f"{s[0]}" if len(s) == 1 else f"mixed{len(s)}")
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_kernel_is_bitwise_the_reference(name, sizes, dtype, rng):
    big = sum(sizes) > 1 << 20
    host, dev = _run_both(name, sizes, dtype, rng, steps=1 if big else 3)
    _assert_bitwise(host, dev)


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_complements_are_rounded_once_from_double(dtype):
    """v after one step from v = 0 with g = 1 is (1 - beta2) rounded ONCE to the dtype: a
    kernel that formed 1 - beta2 in float32 from float32(0.999) gives 0.0009999871."""
    gpu = get_backend("cuda")
    p, g, m, v = (gpu.asarray(np.full(3, x, dtype)) for x in (0.0, 1.0, 0.0, 0.0))
    gpu.adam_step([p], [g], [m], [v], None, step=1, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                  weight_decay=0.0, decoupled_weight_decay=False, amsgrad=False,
                  maximize=False)
    assert gpu.to_numpy(v).tolist() == [dtype(1 - 0.999)] * 3
    assert gpu.to_numpy(m).tolist() == [dtype(1 - 0.9)] * 3
    if dtype == np.float32:
        assert dtype(1 - 0.999) != np.float32(1) - np.float32(0.999)


@needs_gpu
@pytest.mark.parametrize("name", ["adam", "sgd", "adadelta"])
def test_optimizer_grid_smaller_than_the_chunks(name, rng, monkeypatch):
    """Two blocks walk 52 chunks: the block-level grid-stride loop must wrap many times."""
    gpu = get_backend("cuda")
    monkeypatch.setattr(gpu, "_max_blocks", 2)
    host, dev = _run_both(name, MIXED, np.float32, rng, steps=2)
    _assert_bitwise(host, dev)


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
    for _ in range(3):
        optim_ref.adagrad_step(*host.values(), **kw)
    _assert_bitwise(dict(zip(host, host.values())), dict(zip(host, dev)))


def _poison_pool(nbytes):
    """Return a NaN-filled block to CuPy's pool so the kernel's next output likely reuses it:
    an element the kernel forgets to write then shows up as NaN. (The emulated device
    poisons every fresh allocation itself.)"""
    import cupy
    block = cupy.full(nbytes // 8 + 1, np.nan, dtype=cupy.float64)
    del block


DROPOUT_KEYS = [(0, 0), (0xDEADBEEF12345678, 2**64 - 5), (7, 1234567)]
DROPOUT_CASES = ([(n, p, k) for n in [0, 1, 31, 128, 129, 4097] for p in [0.0, 0.3, 0.5, 1.0]
                  for k in range(len(DROPOUT_KEYS))]
                 + [((1 << 20) + 3, 0.3, 1), ((1 << 20) + 3, 1.0, 0)])


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,p,k", DROPOUT_CASES)
def test_dropout_bit_identical_to_cpu(n, p, k, dtype, rng):
    gpu = get_backend("cuda")
    key, offset = DROPOUT_KEYS[k]
    x = rng.standard_normal(n).astype(dtype)
    want_y, want_mask = dropout_ref.dropout_forward(x, p, key, offset)
    _poison_pool(x.nbytes)
    y, mask = gpu.dropout_forward(gpu.asarray(x), p, key, offset)
    np.testing.assert_array_equal(gpu.to_numpy(mask), want_mask)
    np.testing.assert_array_equal(gpu.to_numpy(y), want_y)
    _poison_pool(x.nbytes)
    g = gpu.dropout_backward(gpu.asarray(x), mask, p)
    np.testing.assert_array_equal(gpu.to_numpy(g), dropout_ref.dropout_backward(x, want_mask, p))


@needs_gpu
@pytest.mark.parametrize("shape", [(4097,), (3, 7, 33)], ids=str)
def test_dropout_small_grid_and_nd_input(shape, rng, monkeypatch):
    """One block of 8 warps walks every 128-element tile (the warp loop wraps), and an n-d
    input is dropped as its flat C-order elements."""
    gpu = get_backend("cuda")
    monkeypatch.setattr(gpu, "_max_blocks", 1)
    x = rng.standard_normal(shape).astype(np.float32)
    want_y, want_mask = dropout_ref.dropout_forward(x, 0.4, 99, 5)
    y, mask = gpu.dropout_forward(gpu.asarray(x), 0.4, 99, 5)
    np.testing.assert_array_equal(gpu.to_numpy(mask), want_mask)
    np.testing.assert_array_equal(gpu.to_numpy(y), want_y)
    g = gpu.dropout_backward(gpu.asarray(x), mask, 0.4)
    np.testing.assert_array_equal(gpu.to_numpy(g), dropout_ref.dropout_backward(x, want_mask, 0.4))


@needs_gpu
@pytest.mark.parametrize("k", range(len(DROPOUT_KEYS)))
def test_graphed_dropout_kernel_draws_from_its_device_state(k, rng):
    # dropout_forward_graphed reads (key, base) from device memory and adds delta: the draws
    # of dropout_forward at offset base + delta (the counter wraps modulo 2^64 in both).
    import cupy

    from gradlab.backend.cuda_kernels import get_function
    gpu = get_backend("cuda")
    key, base = DROPOUT_KEYS[k]
    delta = 12345
    x = gpu.asarray(rng.standard_normal(4097).astype(np.float32))
    want_y, want_mask = dropout_ref.dropout_forward(gpu.to_numpy(x), 0.3, key,
                                                    (base + delta) % 2**64)
    with gpu._cuda_device:
        y, mask = cupy.empty_like(x), cupy.empty(-(-x.size // 32), dtype=cupy.uint32)
        state = cupy.array([key, base], dtype=cupy.uint64)
        fn = get_function("dropout", "dropout_forward_graphed", x.dtype, gpu._index)
        fn(gpu._grid(-(-x.size // 128), 8), (256,),
           (x, y, mask, np.int64(x.size), state, np.uint64(delta),
            np.uint64(checks.dropout_threshold(0.3)), np.float32(checks.dropout_scale(0.3))))
    np.testing.assert_array_equal(gpu.to_numpy(mask), want_mask)
    np.testing.assert_array_equal(gpu.to_numpy(y), want_y)


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


RANDOM_SIZES = [0, 1, 31, 4097, (1 << 20) + 3]
NORMAL_ULPS = 8  # libdevice's log, cos and sin against NumPy's (and glibc's, emulated)


def _assert_normal_close(got, want, what):
    """Within 8 NORMAL_ULPS units in the last place of max(|want|, 1): the error of
    r cos(t) is r (below 5.8 in float32, 8.6 in float64) times that of cos(t), absolute."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, what
    bound = NORMAL_ULPS * 8 * np.spacing(np.maximum(np.abs(want), want.dtype.type(1)))
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    bad = ~(err <= bound)                                # NaN (an unwritten element) is bad
    assert not bad.any(), (f"{what}: {int(bad.sum())} element(s) off, first at "
                           f"{int(np.argmax(bad))}: got {got.reshape(-1)[np.argmax(bad)]!r}")


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", RANDOM_SIZES)
def test_random_draws_are_the_reference(n, dtype):
    """kernels/random.cu: uniform draws bit for bit, normal ones within NORMAL_ULPS, over the
    counter's carry into its high word and its wrap at 2^64."""
    from gradlab.backend.fused.random import cuda as random_cuda
    gpu = get_backend("cuda")
    for key, offset in DROPOUT_KEYS:
        _poison_pool(n * 8)
        got = gpu.to_numpy(random_cuda.uniform(gpu, (n,), dtype, -1.5, 2.0, key, offset))
        want = random_ref.uniform((n,), dtype, -1.5, 2.0, key, offset)
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
        _poison_pool(n * 8)
        got = gpu.to_numpy(random_cuda.normal(gpu, (n,), dtype, key, offset))
        _assert_normal_close(got, random_ref.normal((n,), dtype, key, offset),
                             f"normal n={n} key={key:#x} offset={offset:#x}")


@needs_gpu
def test_random_draws_on_a_small_grid_and_from_device_state(monkeypatch):
    """One block walks every Philox block (the grid-stride loop wraps), and the *_graphed
    entry points draw what the eager ones draw at offset base + delta (modulo 2^64)."""
    import cupy

    from gradlab.backend.cuda_kernels import get_function
    from gradlab.backend.fused.random import cuda as random_cuda
    gpu = get_backend("cuda")
    monkeypatch.setattr(gpu, "_max_blocks", 1)
    for dtype in (np.float32, np.float64):
        got = gpu.to_numpy(random_cuda.uniform(gpu, (3, 700), dtype, 0.0, 1.0, 5, 6))
        assert got.tobytes() == random_ref.uniform((3, 700), dtype, 0, 1, 5, 6).tobytes()
        n, delta = 4097, 12345
        for key, base in DROPOUT_KEYS:
            at = (base + delta) % 2**64
            with gpu._cuda_device:
                state = cupy.array([key, base], dtype=cupy.uint64)
                out_u, out_n = cupy.empty(n, dtype), cupy.empty(n, dtype)
                grid, block = gpu._grid(n, 256), (256,)
                get_function("random", "random_uniform_graphed", out_u.dtype, gpu._index)(
                    grid, block, (out_u, np.int64(n), state, np.uint64(delta),
                                  out_u.dtype.type(0.25), out_u.dtype.type(0.5)))
                get_function("random", "random_normal_graphed", out_n.dtype, gpu._index)(
                    grid, block, (out_n, np.int64(n), state, np.uint64(delta)))
            want = random_ref.uniform((n,), dtype, 0.25, 0.5, key, at)
            assert gpu.to_numpy(out_u).tobytes() == want.tobytes()
            _assert_normal_close(gpu.to_numpy(out_n), random_ref.normal((n,), dtype, key, at),
                                 "graphed normal")


BIAS_RELU_SHAPES = [(0, 4), (1, 1), (1, 7), (64, 16), (65, 10), (300, 3), (2, 5, 3),
                    (1000, 600)]


def _bias_relu_case(shape, dtype, rng):
    y = rng.standard_normal(shape).astype(dtype)
    bias = rng.standard_normal(shape[-1]).astype(dtype)
    grad = rng.standard_normal(shape).astype(dtype)
    special = np.array([np.nan, -np.inf, np.inf, -0.0, 0.0, np.finfo(dtype).max], dtype=dtype)
    k = min(y.size, special.size)
    y.reshape(-1)[:k] = special[:k]
    grad.reshape(-1)[-k:] = special[:k] if k else grad.reshape(-1)[-k:]
    return y, bias, grad


@needs_gpu
@pytest.mark.filterwarnings("ignore:invalid value encountered in multiply:RuntimeWarning")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", BIAS_RELU_SHAPES, ids=str)
def test_bias_relu_is_the_reference(shape, dtype, rng, monkeypatch):
    gpu = get_backend("cuda")
    if shape == (1000, 600):
        monkeypatch.setattr(gpu, "_max_blocks", 3)     # the grid-stride loops wrap
    y, bias, grad = _bias_relu_case(shape, dtype, rng)
    want = bias_relu_ref.bias_relu_forward(y.copy(), bias)
    got = gpu.bias_relu_forward(gpu.asarray(y), gpu.asarray(bias))
    assert gpu.to_numpy(got).tobytes() == want.tobytes()
    _poison_pool(grad.nbytes)
    got_pre, got_bias = gpu.bias_relu_backward(gpu.asarray(grad), gpu.asarray(want))
    want_pre, want_bias = bias_relu_ref.bias_relu_backward(grad, want)
    assert gpu.to_numpy(got_pre).tobytes() == want_pre.tobytes()
    got_bias = gpu.to_numpy(got_bias)
    assert got_bias.dtype == want_bias.dtype and got_bias.shape == want_bias.shape
    assert np.array_equal(np.isnan(got_bias), np.isnan(want_bias))
    fin, inf = np.isfinite(want_bias), np.isinf(want_bias)
    assert np.array_equal(got_bias[inf], want_bias[inf])
    # another summation order: each partial sum rounds within eps of the column's |sum|
    rows = max(1, want_pre.size // max(1, shape[-1]))
    scale = np.abs(np.where(np.isfinite(want_pre), want_pre, 0)).reshape(-1, shape[-1]).sum(0)
    bound = rows * np.finfo(dtype).eps * scale
    assert (np.abs(got_bias[fin].astype(np.float64) - want_bias[fin]) <= bound[fin]).all()


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", BIAS_RELU_SHAPES, ids=str)
def test_bias_grad_is_the_eager_gpu_sum(shape, dtype, rng):
    # A Linear's bias gradient on a GPU is CuPy's own sum, as LinearFn's backward takes it:
    # the same bytes as that call, and within summation-order rounding of the reference.
    gpu = get_backend("cuda")
    _, _, grad = _bias_relu_case(shape, dtype, rng)
    grad = np.where(np.isfinite(grad), grad, 1).astype(dtype)
    dev = gpu.asarray(grad)
    got = gpu.to_numpy(gpu.bias_grad(dev))
    assert got.tobytes() == gpu.to_numpy(dev.reshape(-1, shape[-1]).sum(axis=0)).tobytes()
    want = bias_relu_ref.bias_grad(grad)
    rows = max(1, grad.size // max(1, shape[-1]))
    bound = rows * np.finfo(dtype).eps * np.abs(grad).reshape(-1, shape[-1]).sum(0)
    assert got.shape == want.shape and (np.abs(got.astype(np.float64) - want) <= bound).all()


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", BIAS_RELU_SHAPES, ids=str)
def test_bias_add_is_the_eager_gpu_add(shape, dtype, rng):
    # A bias that no ReLU follows is CuPy's own in-place add, as LinearFn's forward on a GPU
    # makes it: the same bytes as the reference (one rounding per element either way).
    gpu = get_backend("cuda")
    y, bias, _ = _bias_relu_case(shape, dtype, rng)
    dev = gpu.asarray(y)
    got = gpu.bias_add(dev, gpu.asarray(bias))
    assert got is dev
    assert gpu.to_numpy(got).tobytes() == bias_relu_ref.bias_add(y.copy(), bias).tobytes()
    assert gpu.prepare_bias_add(dev, gpu.asarray(bias)) is None  # no lean form on a GPU


@needs_gpu
def test_bias_relu_refuses_mismatched_arrays():
    gpu = get_backend("cuda")
    y = gpu.asarray(np.ones((4, 3), np.float32))
    with pytest.raises(ValueError, match="bias must have shape"):
        gpu.bias_relu_forward(y, gpu.asarray(np.ones(4, np.float32)))
    with pytest.raises(ValueError, match="one shape and dtype"):
        gpu.bias_relu_backward(y, gpu.asarray(np.ones((4, 3), np.float64)))


# Softmax-CE agreement: |got - want| <= CE_ULPS * spacing(max(|want|, scale)) elementwise,
# with scale 1 for the loss and the largest class weight for the gradient (every gradient
# element is a difference of terms of that size, so its error is measured on that scale).
CE_ULPS = 8
CE_SHAPES = [(0, 5), (1, 1), (1, 31), (31, 10), (4097, 3), (64, 1025), (5, 4097),
             (2, (1 << 20) + 3)]


def _assert_ulps(got, want, scale, what):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, what
    bound = CE_ULPS * np.spacing(np.maximum(np.abs(want), want.dtype.type(scale)))
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    bad = ~(err <= bound)                                # NaN (an unwritten element) is bad
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, err, -1)), err.shape)
        pytest.fail(f"{what}: {int(bad.sum())} element(s) beyond {CE_ULPS} ulps, worst at "
                    f"{tuple(int(j) for j in i)}: got {got[i]!r}, want {want[i]!r}")


def _ce_case(shape, variant, dtype, rng):
    n, c = shape
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    y = rng.integers(0, c, size=n) if c else np.zeros(n, np.int64)
    weight, ignore, s = None, -100, 0.0
    if variant != "plain":
        weight = (rng.random(c) + 0.5).astype(dtype)
        if n:
            ignore = int(y[0])
        s = 0.1 if variant in ("smoothing", "weighted_smoothing") else 0.0
        if variant == "smoothing":
            weight = None
    return x, y, weight, ignore, s


CE_VARIANTS = ["plain", "weighted_ignore", "smoothing", "weighted_smoothing"]
# The 2^20-class rows run the two variants that cover every term (time).
CE_CASES = [(shape, v) for shape in CE_SHAPES for v in CE_VARIANTS
            if shape[0] * shape[1] <= 1 << 20 or v in ("plain", "weighted_smoothing")]


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,variant", CE_CASES, ids=str)
def test_softmax_ce_matches_reference(shape, variant, dtype, rng):
    gpu = get_backend("cuda")
    x, y, weight, ignore, s = _ce_case(shape, variant, dtype, rng)
    want_loss, want_grad = ce_ref.softmax_cross_entropy(x, y, weight, ignore, s)
    _poison_pool(x.nbytes)
    loss, grad = gpu.softmax_cross_entropy(gpu.asarray(x), gpu.asarray(y),
                                           None if weight is None else gpu.asarray(weight),
                                           ignore, s)
    wmax = 1.0 if weight is None else float(weight.max())
    _assert_ulps(gpu.to_numpy(loss), want_loss, 1.0, "loss")
    _assert_ulps(gpu.to_numpy(grad), want_grad, wmax, "grad")


@needs_gpu
@pytest.mark.parametrize("shape", [(31, 10), (3, 2000)], ids=str)
def test_softmax_ce_small_grid(shape, rng, monkeypatch):
    """One block walks every row: the warp-per-row and block-per-row loops wrap."""
    gpu = get_backend("cuda")
    monkeypatch.setattr(gpu, "_max_blocks", 1)
    x, y, weight, ignore, s = _ce_case(shape, "weighted_smoothing", np.float32, rng)
    want_loss, want_grad = ce_ref.softmax_cross_entropy(x, y, weight, ignore, s)
    loss, grad = gpu.softmax_cross_entropy(gpu.asarray(x), gpu.asarray(y),
                                           gpu.asarray(weight), ignore, s)
    _assert_ulps(gpu.to_numpy(loss), want_loss, 1.0, "loss")
    _assert_ulps(gpu.to_numpy(grad), want_grad, float(weight.max()), "grad")


@needs_gpu
@pytest.mark.parametrize("c", [3, 2000])
def test_softmax_ce_extreme_logits_and_bad_target(c):
    gpu = get_backend("cuda")
    x = np.zeros((3, c), np.float32)
    x[:, 0], x[:, 1], x[:, 2] = 1e8, 0.0, -1e8
    loss, grad = gpu.softmax_cross_entropy(gpu.asarray(x), gpu.asarray(np.array([0, 1, 2])),
                                           None, -100, 0.0)
    want_loss, want_grad = ce_ref.softmax_cross_entropy(x, np.array([0, 1, 2]), None, -100, 0.0)
    np.testing.assert_allclose(gpu.to_numpy(loss), want_loss, rtol=1e-6)
    np.testing.assert_allclose(gpu.to_numpy(grad), want_grad, atol=1e-6)
    assert math.isfinite(float(gpu.to_numpy(loss).sum()))
    with pytest.raises(IndexError, match=f"Target {c + 4} is out of bounds"):
        gpu.softmax_cross_entropy(gpu.asarray(x), gpu.asarray(np.array([0, c + 4, -7])), None,
                                  -100, 0.0)
    # The FIRST bad row is reported, whichever thread found it first (atomicMin).
    with pytest.raises(IndexError, match="Target -7 is out of bounds"):
        gpu.softmax_cross_entropy(gpu.asarray(x), gpu.asarray(np.array([0, -7, c + 4])), None,
                                  -100, 0.0)
    # No device assert fired: the context still works.
    loss, _ = gpu.softmax_cross_entropy(gpu.asarray(x), gpu.asarray(np.array([0, 0, 0])), None,
                                        -100, 0.0)
    assert gpu.to_numpy(loss)[0] == 0


# -- the small-GEMM kernel (kernels/matmul.cu) -------------------------------------------------
def _sequential_product(a, b):
    """The kernel's formula on the host: c[i, j] = sum over p in order of a[i, p] * b[p, j],
    each product and sum rounded in the dtype, from +0."""
    acc = np.zeros((a.shape[0], b.shape[1]), dtype=a.dtype)
    for p in range(a.shape[1]):
        acc = acc + a[:, p:p + 1] * b[p:p + 1, :]
    return acc


def _layout(x, order):
    """``x`` itself ("C"), or the same values as the transpose of a C-contiguous array ("T":
    the F-contiguous views a Linear multiplies by, W.T and g.T)."""
    return x if order == "C" else x.T.copy().T


GEMM_SHAPES = [(1, 1, 1), (64, 64, 64), (64, 64, 10), (17, 33, 9), (5, 1, 7), (1, 8, 1),
               (3, 0, 5), (0, 4, 3)]


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layouts", ["CC", "CT", "TC", "TT"])
@pytest.mark.parametrize("mkn", GEMM_SHAPES, ids=str)
def test_small_matrix_product_is_the_kernels_formula(mkn, layouts, dtype, rng):
    # Bit for bit the in-order sum the kernel computes (no FMA: --fmad=false / -ffp-contract=
    # off), for every layout a Linear's three products use, without a copy; and within the
    # rounding bound of any order from the exact product.
    m, k, n = mkn
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    gpu = get_backend("cuda")
    da = _layout(gpu.asarray(a), layouts[0])
    db = _layout(gpu.asarray(b), layouts[1])
    assert m * n * k <= gpu.SMALL_GEMM_MAX
    got = gpu.to_numpy(gpu.matrix_product(da, db))
    assert got.shape == (m, n) and got.dtype == dtype
    assert got.tobytes() == _sequential_product(a, b).tobytes()
    exact = a.astype(np.float64) @ b.astype(np.float64)
    bound = max(k, 1) * np.finfo(dtype).eps * (np.abs(a).astype(np.float64) @ np.abs(b))
    assert (np.abs(got - exact) <= bound).all()


@needs_gpu
def test_matrix_product_copies_other_layouts_and_keeps_special_values(rng):
    gpu = get_backend("cuda")
    a = rng.standard_normal((6, 10)).astype(np.float32)
    b = rng.standard_normal((5, 4)).astype(np.float32)
    a[1, 4], a[2, 0], b[2, 1] = np.nan, np.inf, -np.inf
    da, db = gpu.asarray(a)[:, ::2], gpu.asarray(b)  # a strided view: copied first
    got = gpu.to_numpy(gpu.matrix_product(da, db))
    assert got.tobytes() == _sequential_product(a[:, ::2], b).tobytes()
    assert np.isnan(got[1]).all() and np.isinf(got[2]).any()


@needs_gpu
@pytest.mark.parametrize("case", ["large", "long sums", "float16", "int64", "mixed"])
def test_matrix_product_leaves_other_products_to_cupy(case, rng, monkeypatch):
    # Above SMALL_GEMM_MAX multiply-adds or SMALL_GEMM_K_MAX terms a sum, and for dtypes the
    # kernel has no entry point for, CuPy's own dot (cuBLAS on a GPU): that call's bytes.
    import gradlab.backend.cupy_backend as cupy_backend
    gpu = get_backend("cuda")
    dtypes = {"float16": (np.float16,) * 2, "int64": (np.int64,) * 2,
              "mixed": (np.float32, np.float64)}.get(case, (np.float32,) * 2)
    a = gpu.asarray((rng.standard_normal((8, 6)) * 4).astype(dtypes[0]))
    b = gpu.asarray((rng.standard_normal((6, 5)) * 4).astype(dtypes[1]))
    if case == "large":
        monkeypatch.setattr(type(gpu), "SMALL_GEMM_MAX", 8 * 6 * 5 - 1)
    if case == "long sums":
        monkeypatch.setattr(type(gpu), "SMALL_GEMM_K_MAX", 5)
    launched = []
    real = cupy_backend.get_function
    monkeypatch.setattr(cupy_backend, "get_function",
                        lambda *args: launched.append(args) or real(*args))
    got = gpu.matrix_product(a, b)
    assert not launched
    assert gpu.to_numpy(got).tobytes() == gpu.to_numpy(a.dot(b)).tobytes()
    if case == "large":  # one multiply-add fewer and it is the kernel's again
        monkeypatch.setattr(type(gpu), "SMALL_GEMM_MAX", 8 * 6 * 5)
        gpu.matrix_product(a, b)
        assert [args[0] for args in launched] == ["matmul"]


@needs_gpu
def test_a_linear_layer_on_the_gpu_runs_its_products_through_the_kernel(rng, monkeypatch):
    gpu = get_backend("cuda")
    launched = []
    real = cuda_kernels.get_function

    def spy(module, name, dtype, device):
        if module == "matmul":
            launched.append(name)
        return real(module, name, dtype, device)
    import gradlab.backend.cupy_backend as cupy_backend
    monkeypatch.setattr(cupy_backend, "get_function", spy)
    layer = gl.nn.Linear(6, 4).to("cuda")
    x = gl.tensor(rng.standard_normal((5, 6)).astype(np.float32), device="cuda",
                  requires_grad=True)
    layer(x).sum().backward()
    assert launched == ["matmul"] * 3  # x W^T forward; g W and g^T x backward
    w = layer.weight.detach().cpu().numpy()
    g = np.ones((5, 4), np.float32)
    assert x.grad.cpu().numpy().tobytes() == _sequential_product(g, w).tobytes()
    assert gpu is layer.weight._backend
