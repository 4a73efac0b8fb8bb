"""A whole model on the CUDA backend: an MLP trained for a few epochs on the bundled digits
ends at the CPU's weights.

Initialised on the CPU and moved with ``.to("cuda")``, so both runs start from the same bits.
What can be bitwise: elementwise ops (on the emulated device they are NumPy's, as on the CPU;
on a GPU they are CuPy's), the fused SGD/Adam and dropout kernels (held bitwise to the
reference by tests/backend/test_cuda_kernels.py), and the GEMMs where CuPy's dot runs them
(NumPy's on the emulated device, cuBLAS on a GPU): with ``SMALL_GEMM_MAX`` 0. By default these
small GEMMs are gradlab's kernel (kernels/matmul.cu), which sums in another order than BLAS.
What cannot: the softmax-CE kernel calls expf/logf, whose last bits differ between CUDA's
libdevice (glibc on the emulated device) and NumPy's SIMD loops, and training amplifies
those differences a little every step.
"""
import numpy as np
import pytest

import devices
import gradlab as gl
from gradlab import nn
from gradlab.data import DataLoader, TensorDataset, load_digits
from gradlab.train import fit

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not gl.cuda.is_available(),
                                 reason=f"no CUDA device: {gl.cuda.unavailable_reason()}")]

EPOCHS = 3


def _train(device, loss, make_optimizer, dropout):
    X, y = load_digits()
    if loss == "mse":  # regression on one-hot targets: no exp/log anywhere in the step
        y = np.eye(10, dtype=np.float32)[y]
    gl.manual_seed(0)
    layers = [nn.Linear(64, 64), nn.ReLU()] + ([nn.Dropout(0.2)] if dropout else []) + \
        [nn.Linear(64, 10)]
    model = nn.Sequential(*layers).to(device)  # built on the CPU (auto is the CPU here)
    loader = DataLoader(TensorDataset(X.astype(np.float32), y), batch_size=64, shuffle=True,
                        seed=1)
    loss_fn = nn.MSELoss() if loss == "mse" else nn.CrossEntropyLoss()
    history = fit(model, loss_fn, make_optimizer(model.parameters()), loader, epochs=EPOCHS,
                  metrics=(), device=device, verbose=0)
    weights = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    return weights, [e["loss"] for e in history.epochs]


@pytest.mark.parametrize("gemm", ["cupy", "kernel"])
def test_mse_sgd_mlp_is_bitwise_the_cpu_run(gemm, monkeypatch):
    def sgd(params):
        return gl.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)

    if gemm == "cupy":
        monkeypatch.setattr(type(gl.backend.get_backend("cuda")), "SMALL_GEMM_MAX", 0)
    cpu, cpu_loss = _train("cpu", "mse", sgd, dropout=False)
    cuda, cuda_loss = _train("cuda", "mse", sgd, dropout=False)
    assert cpu_loss[-1] < cpu_loss[0]  # it trained
    bitwise = gemm == "cupy" and not devices.REAL_GPU
    for k in cpu:
        if bitwise:
            assert np.array_equal(cuda[k], cpu[k]), k
        else:  # cuBLAS's or gradlab's GEMMs are not NumPy's bit for bit
            np.testing.assert_allclose(cuda[k], cpu[k], rtol=1e-4, atol=1e-5, err_msg=k)
    np.testing.assert_allclose(cuda_loss, cpu_loss, rtol=0 if bitwise else 1e-5)


def test_cross_entropy_adam_dropout_mlp_ends_at_the_cpu_weights():
    def adam(params):
        return gl.optim.Adam(params, lr=3e-3, weight_decay=1e-4)

    cpu, cpu_loss = _train("cpu", "ce", adam, dropout=True)
    cuda, cuda_loss = _train("cuda", "ce", adam, dropout=True)
    assert cpu_loss[-1] < 0.5 * cpu_loss[0]
    # Dropout masks are bitwise the CPU's, so the runs differ only through the softmax-CE
    # kernel's exp/log (a few ulps per step). Measured on the emulated device after 87 Adam
    # steps: at most 2.5e-7 absolute, weights of order 0.1.
    for k in cpu:
        np.testing.assert_allclose(cuda[k], cpu[k], rtol=1e-4, atol=2e-6, err_msg=k)
    np.testing.assert_allclose(cuda_loss, cpu_loss, rtol=1e-5)
