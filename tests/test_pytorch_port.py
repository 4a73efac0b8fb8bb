"""PyTorch code ports by renaming: one small program per idiom, written as PyTorch's
tutorials ("Learning PyTorch with Examples", "What is torch.nn really?", "Training a
classifier", "Saving and loading models") and the torch.utils.data / torch.nn.init docs
write it, with ``import torch`` replaced by ``import gradlab as torch``. Values are checked
against hand-computed or closed-form results (torch is not a test dependency)."""
import math

import numpy as np
import pytest

import gradlab as torch
import gradlab.nn.functional as F
from gradlab import nn, optim
from gradlab.utils.data import (
    ConcatDataset,
    DataLoader,
    Dataset,
    Subset,
    TensorDataset,
    random_split,
)


# -- "Learning PyTorch with Examples" -------------------------------------------------------
def test_polynomial_fit_with_tensors_and_autograd():
    dtype = torch.float
    device = torch.device("cpu")
    x = torch.linspace(-math.pi, math.pi, 200, device=device, dtype=dtype)
    y = torch.sin(x)
    torch.manual_seed(0)
    a, b, c, d = (torch.randn((), device=device, dtype=dtype, requires_grad=True)
                  for _ in range(4))
    learning_rate = 1e-5
    for _ in range(2000):
        y_pred = a + b * x + c * x ** 2 + d * x ** 3
        loss = (y_pred - y).pow(2).sum()
        loss.backward()
        with torch.no_grad():
            for p in (a, b, c, d):
                p -= learning_rate * p.grad
                p.grad = None
    assert a.dtype == torch.float32 and loss.dtype == torch.float32
    # The least-squares cubic of sin on [-pi, pi] has b ~ 0.86, d ~ -0.094 (odd terms only).
    assert abs(b.item() - 0.86) < 0.05 and abs(d.item() + 0.094) < 0.01


def test_custom_autograd_function_with_staticmethods():
    class LegendrePolynomial3(torch.autograd.Function):
        @staticmethod
        def forward(ctx, input):
            ctx.save_for_backward(input)
            return 0.5 * (5 * input ** 3 - 3 * input)

        @staticmethod
        def backward(ctx, grad_output):
            input, = ctx.saved_tensors
            return grad_output * 1.5 * (5 * input ** 2 - 1)

    P3 = LegendrePolynomial3.apply
    x = torch.tensor([0.5, -1.0], requires_grad=True)
    y = P3(x)
    y.sum().backward()
    np.testing.assert_allclose(y.detach().numpy(), [0.5 * (5 / 8 - 1.5), -1.0], rtol=1e-6)
    np.testing.assert_allclose(x.grad.numpy(), [1.5 * (5 / 4 - 1), 6.0], rtol=1e-6)


def test_nn_polynomial_features_keep_float32():
    x = torch.linspace(-1, 1, 5)
    p = torch.tensor([1, 2, 3])
    xx = x.unsqueeze(-1).pow(p)          # float32 ** int64 stays float32, as in PyTorch
    assert xx.dtype == torch.float32 and xx.shape == (5, 3)
    model = torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.Flatten(0, 1))
    loss_fn = torch.nn.MSELoss(reduction="sum")
    y_pred = model(xx)
    assert y_pred.shape == (5,)
    loss = loss_fn(y_pred, torch.zeros(5))
    model.zero_grad()
    loss.backward()
    with torch.no_grad():
        for param in model.parameters():
            param -= 1e-3 * param.grad
    linear_layer = model[0]
    assert isinstance(linear_layer.bias.item(), float)
    assert isinstance(linear_layer.weight[:, 0].item(), float)


def test_custom_module_with_parameters_and_optimizer():
    class Polynomial3(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Parameter(torch.zeros(()))
            self.b = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):
            return self.a + self.b * x

    x = torch.linspace(-1, 1, 11)
    y = 2 + 3 * x
    model = Polynomial3()
    criterion = torch.nn.MSELoss(reduction="mean")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(300):
        loss = criterion(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert abs(model.a.item() - 2) < 1e-3 and abs(model.b.item() - 3) < 1e-3


# -- "What is torch.nn really?" -------------------------------------------------------------
def _mnist_like(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 12), dtype=np.float32)
    y = (x[:, :3].argmax(1)).astype(np.int64)
    return x, y


def test_from_scratch_logistic_regression():
    x_train, y_train = map(torch.tensor, _mnist_like())
    n, c = x_train.shape
    assert (n, c) == (64, 12) and x_train.min().item() >= 0 and x_train.max().item() < 1
    weights = torch.randn(12, 3) / math.sqrt(12)
    weights.requires_grad_()
    bias = torch.zeros(3, requires_grad=True)

    def log_softmax(x):
        return x - x.exp().sum(-1).log().unsqueeze(-1)

    def model(xb):
        return log_softmax(xb @ weights + bias)

    def nll(input, target):
        return -input[range(target.shape[0]), target].mean()

    def accuracy(out, yb):
        preds = torch.argmax(out, dim=1)
        return (preds == yb).float().mean()

    preds = model(x_train)
    assert preds.shape == (64, 3) and preds.dtype == torch.float32
    first = nll(preds, y_train).item()
    for _ in range(200):
        loss = nll(model(x_train), y_train)
        loss.backward()
        with torch.no_grad():
            weights -= weights.grad * 0.5
            bias -= bias.grad * 0.5
            weights.grad.zero_()
            bias.grad.zero_()
    assert loss.item() < first
    # the hand-written nll equals F.cross_entropy of the logits
    logits = x_train @ weights + bias
    assert abs(nll(log_softmax(logits), y_train).item() -
               F.cross_entropy(logits, y_train).item()) < 1e-5
    assert 0 <= accuracy(model(x_train), y_train).item() <= 1


def test_refactored_loop_with_datasets_loaders_and_eval():
    x, y = map(torch.tensor, _mnist_like(50))
    train_ds = TensorDataset(x, y)
    xb, yb = train_ds[0:8]                       # a slice of a TensorDataset is a batch
    assert xb.shape == (8, 12) and yb.shape == (8,)
    train_dl = DataLoader(train_ds, batch_size=16, shuffle=True, num_workers=2)
    valid_dl = DataLoader(train_ds, batch_size=32)
    model = nn.Sequential(nn.Linear(12, 3))
    opt = optim.SGD(model.parameters(), lr=0.1)
    loss_func = F.cross_entropy

    def loss_batch(model, loss_func, xb, yb, opt=None):
        loss = loss_func(model(xb), yb)
        if opt is not None:
            loss.backward()
            opt.step()
            opt.zero_grad()
        return loss.item(), len(xb)

    model.train()
    for xb, yb in train_dl:
        loss_batch(model, loss_func, xb, yb, opt)
    model.eval()
    with torch.no_grad():
        losses, nums = zip(*[loss_batch(model, loss_func, xb, yb) for xb, yb in valid_dl])
        valid_loss = sum(loss_func(model(xb), yb) for xb, yb in valid_dl)
    assert nums == (32, 18) and len(valid_dl) == 2
    val_loss = np.sum(np.multiply(losses, nums)) / np.sum(nums)
    full = F.cross_entropy(model(x), y).item()
    assert abs(val_loss - full) < 1e-5
    assert abs(valid_loss.item() - sum(losses)) < 1e-5


def test_device_selection_idiom():
    dev = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    model = nn.Linear(2, 2).to(dev)
    x = torch.ones(1, 2).to(dev)
    assert next(model.parameters()).device == model(x).device == dev


# -- "Training a classifier" (the loops) ----------------------------------------------------
def test_training_and_evaluation_loops():
    x, y = map(torch.tensor, _mnist_like(60, seed=1))
    trainloader = torch.utils.data.DataLoader(TensorDataset(x, y), batch_size=10,
                                              shuffle=True, num_workers=2)
    classes = ("a", "b", "c")
    net = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 3))
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    for epoch in range(3):  # noqa: B007 (as the tutorial writes it)
        running_loss = 0.0
        for i, data in enumerate(trainloader, 0):  # noqa: B007
            inputs, labels = data
            optimizer.zero_grad()
            outputs = net(inputs)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
    assert isinstance(running_loss, float)
    correct = total = 0
    correct_pred = {name: 0 for name in classes}
    with torch.no_grad():
        for inputs, labels in trainloader:
            outputs = net(inputs)
            _, predicted = torch.max(outputs, 1)
            total += labels.size(0)
            correct += (predicted == labels).sum().item()
            for label, prediction in zip(labels, predicted):
                if label == prediction:
                    correct_pred[classes[label]] += 1
    assert total == 60 and sum(correct_pred.values()) == correct
    assert correct == int((net(x).argmax(1) == y).sum().item())


# -- "Saving and loading models" ------------------------------------------------------------
def test_save_and_load_state_dict(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    PATH = tmp_path / "model.pth"
    torch.save(model.state_dict(), PATH)
    other = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    other.load_state_dict(torch.load(PATH, weights_only=True))
    other.eval()
    model.eval()
    x = torch.randn(5, 3)
    np.testing.assert_array_equal(model(x).detach().numpy(), other(x).detach().numpy())
    for param_tensor in model.state_dict():
        assert model.state_dict()[param_tensor].size() == other.state_dict()[param_tensor].shape


def test_general_checkpoint_for_resuming(tmp_path):
    model = nn.Linear(2, 2)
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    loss = torch.tensor(0.25)
    PATH = tmp_path / "model.tar"
    torch.save({"epoch": 3, "model_state_dict": model.state_dict(),
                "optimizer_state_dict": optimizer.state_dict(), "loss": loss}, PATH)
    model2 = nn.Linear(2, 2)
    optimizer2 = optim.SGD(model2.parameters(), lr=0.1, momentum=0.9)
    checkpoint = torch.load(PATH, weights_only=True, map_location=torch.device("cpu"))
    model2.load_state_dict(checkpoint["model_state_dict"])
    optimizer2.load_state_dict(checkpoint["optimizer_state_dict"])
    assert checkpoint["epoch"] == 3 and checkpoint["loss"].item() == 0.25
    buf = optimizer.state[model.weight]["momentum_buffer"]
    buf2 = optimizer2.state[model2.weight]["momentum_buffer"]
    np.testing.assert_array_equal(np.asarray(buf), np.asarray(buf2))


def test_partial_load_with_strict_false():
    model = nn.Linear(2, 2)
    result = model.load_state_dict({"weight": torch.zeros(2, 2)}, strict=False)
    assert (model.weight.detach().numpy() == 0).all()
    assert "bias" in str(result)


def test_saving_a_whole_module_names_the_gradlab_way(tmp_path):
    with pytest.raises(Exception, match="state_dict"):
        torch.save(nn.Linear(2, 2), tmp_path / "model.pth")
    assert not (tmp_path / "model.pth").exists()


# -- torch.utils.data -----------------------------------------------------------------------
def test_map_style_dataset_subclass():
    class Squares(Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, idx):
            return torch.tensor([float(idx)]), idx * idx

    batches = list(DataLoader(Squares(), batch_size=2))
    assert [b[1].tolist() for b in batches] == [[0, 1], [4, 9], [16]]
    assert batches[0][0].shape == (2, 1)


def test_random_split_with_generator_and_fractions():
    a, b = random_split(range(10), [3, 7], generator=torch.Generator().manual_seed(42))
    a2, _ = random_split(range(10), [3, 7], generator=torch.Generator().manual_seed(42))
    assert len(a) == 3 and len(b) == 7 and list(a.indices) == list(a2.indices)
    assert sorted(list(a.indices) + list(b.indices)) == list(range(10))
    parts = random_split(range(10), [0.3, 0.3, 0.4], generator=torch.Generator().manual_seed(1))
    assert [len(p) for p in parts] == [3, 3, 4]


def test_subset_and_concat():
    d = TensorDataset(torch.arange(5))
    both = ConcatDataset([d, Subset(d, [4, 0])])
    assert len(both) == 7 and [both[i][0].item() for i in range(7)] == [0, 1, 2, 3, 4, 4, 0]
    assert len(d + d) == 10


def test_dataloader_generator_seeds_the_order():
    ds = TensorDataset(torch.arange(20))
    orders = [[b[0].tolist() for b in DataLoader(ds, batch_size=20, shuffle=True,
                                                 generator=torch.Generator().manual_seed(7))]
              for _ in range(2)]
    assert orders[0] == orders[1] and sorted(orders[0][0]) == list(range(20))


def test_samplers_are_left_out_with_the_gradlab_way():
    with pytest.raises(ImportError, match="shuffle=True"):
        from gradlab.utils.data import RandomSampler  # noqa: F401
    with pytest.raises(TypeError, match="Subset"):
        DataLoader(TensorDataset(torch.arange(3)), sampler=[0, 1])


# -- torch.nn.init --------------------------------------------------------------------------
def test_init_functions_and_model_apply():
    assert torch.nn.init.calculate_gain("leaky_relu", 0.2) == pytest.approx(
        math.sqrt(2 / (1 + 0.2 ** 2)))
    w = torch.empty(300, 200)
    torch.nn.init.xavier_uniform_(w, gain=torch.nn.init.calculate_gain("relu"))
    bound = math.sqrt(2) * math.sqrt(6 / 500)
    assert w.abs().max().item() <= bound and w.abs().max().item() > 0.9 * bound
    torch.nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
    assert abs(w.std().item() - math.sqrt(2 / 300)) < 0.005
    torch.nn.init.trunc_normal_(w, std=1.0, a=-0.5, b=0.5)
    assert w.min().item() >= -0.5 and w.max().item() <= 0.5
    torch.nn.init.sparse_(w, sparsity=0.1)
    assert ((w == 0).sum(0) == 30).all()
    torch.nn.init.constant_(w, 0.3)
    assert (w == 0.3).all()

    def init_weights(m):
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.xavier_uniform_(m.weight)
            torch.nn.init.constant_(m.bias, 0.01)

    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)).apply(init_weights)
    assert (net[2].bias == 0.01).all()


# -- dtype, shape and size idioms; creation functions; torch.cuda seeding --------------------
def test_dtype_promotion_follows_pytorch():
    f = torch.ones(2)
    i = torch.tensor([1, 2])
    assert (f * np.float64(2.0)).dtype == torch.float32
    assert (i / torch.tensor([2, 2])).dtype == torch.float32
    assert (i / 2).dtype == torch.float32 and (i / 2).tolist() == [0.5, 1.0]
    assert (i * 0.5).dtype == torch.float32
    assert (f + i).dtype == torch.float32 and (f + i).tolist() == [2.0, 3.0]
    assert (f + torch.tensor(1.0, dtype=torch.float64)).dtype == torch.float32
    assert (f.double() + f).dtype == torch.float64
    assert (i + 1).dtype == torch.int64 and (torch.tensor([True]) + 1).dtype == torch.int64
    assert (torch.ones(2, dtype=torch.float16) * 3.0).dtype == torch.float16
    assert torch.where(torch.tensor([True, False]), f, torch.tensor(0.0, dtype=torch.float64)
                       ).dtype == torch.float32


def test_gradients_through_promotion_have_the_inputs_dtype():
    w = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    x = torch.tensor([1.0, 3.0], requires_grad=True)
    (x * w).sum().backward()
    assert w.grad.dtype == torch.float64 and w.grad.item() == 4.0
    assert x.grad.dtype == torch.float32 and x.grad.tolist() == [2.0, 2.0]


def test_linear_refuses_a_float64_input():
    with pytest.raises(RuntimeError, match="float64.*float32.*float()"):
        nn.Linear(2, 2)(torch.ones(1, 2, dtype=torch.float64))
    assert nn.Linear(2, 2).double()(torch.ones(1, 2, dtype=torch.float64)).dtype == \
        torch.float64


def test_creation_functions_and_shape_idioms():
    x = torch.rand(5, 3)
    assert torch.zeros(size=(2, 3)).shape == torch.zeros([2, 3]).shape == torch.Size([2, 3])
    assert torch.ones(5, 3, dtype=torch.double).dtype == torch.float64
    assert torch.randn_like(x, dtype=torch.float).shape == (5, 3)
    y = x.new_ones(5, 3, dtype=torch.double)
    assert y.dtype == torch.float64 and (y == 1).all()
    assert x.new_zeros(2).dtype == torch.float32 and x.new_full((2,), 3.0).tolist() == [3, 3]
    assert x.new_tensor([1, 2]).dtype == torch.float32
    assert torch.arange(0, 10, 2).tolist() == [0, 2, 4, 6, 8]
    assert torch.full((2, 3), 7.).sum().item() == 42 and torch.eye(3).sum().item() == 3
    r = torch.randint(0, 10, (5,))
    assert r.dtype == torch.int64 and r.shape == (5,)
    z = torch.randn(4, 4)
    assert z.view(16).shape == (16,) and z.view(-1, 8).size() == (2, 8) and z.size(0) == 4
    assert z.view(-1, 8).size(-1) == 8 and torch.numel(z) == 16 and torch.is_tensor(z)
    assert x.type(torch.float64).dtype == torch.float64 and x.type() == "gradlab.float32"
    assert torch.float is torch.float32 and torch.int is torch.int32
    assert torch.get_default_dtype() == torch.float32
    with pytest.raises(TypeError, match="dtype=gl.float64"):
        torch.set_default_dtype(torch.float64)


def test_mm_and_functions():
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(torch.mm(a, a).numpy(), [[7, 10], [15, 22]])
    np.testing.assert_array_equal(a.mm(a.t()).numpy(), [[5, 11], [11, 25]])
    with pytest.raises(RuntimeError, match="matmul"):
        torch.mm(a, torch.ones(2))
    assert torch.clamp(a - 2, min=0).tolist() == [[0, 0], [1, 2]]
    assert F.softmax(a, dim=1).sum(1).tolist() == pytest.approx([1, 1])


def test_cuda_seeding_functions_and_grad_modes():
    torch.cuda.manual_seed_all(0)
    torch.cuda.manual_seed(0)
    torch.manual_seed(3)
    a = torch.randn(3)
    torch.manual_seed(3)
    assert torch.randn(3).tolist() == a.tolist()

    @torch.no_grad()
    def double(x):
        return x * 2

    x = torch.ones(1, requires_grad=True)
    assert not double(x).requires_grad
    with torch.inference_mode():
        assert not (x * 2).requires_grad
    with torch.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    assert (x * 2).requires_grad


def test_optimizer_skips_parameters_that_do_not_require_grad():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    for p in model[0].parameters():
        p.requires_grad = False
    frozen = model[0].weight.detach().numpy().copy()
    optimizer = optim.Adam(model.parameters(), lr=0.1)
    model(torch.ones(3, 2)).sum().backward()
    optimizer.step()
    np.testing.assert_array_equal(model[0].weight.detach().numpy(), frozen)
    assert model[0].weight.grad is None and (model[1].bias.detach().numpy() != 0).all()


def test_scheduler_and_param_groups():
    model = nn.Linear(2, 2)
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.1)
    for _ in range(2):
        optimizer.step()
        scheduler.step()
    assert scheduler.get_last_lr() == pytest.approx([0.01])
    optimizer.param_groups[0]["lr"] = 0.5
    assert optimizer.param_groups[0]["lr"] == 0.5
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 6


# -- t.data: a tensor sharing t's memory that autograd does not track -----------------------
def test_manual_sgd_through_data_as_the_old_tutorials_write_it():
    # "Learning PyTorch with Examples" (autograd, pre-0.4 edition) and many course notebooks
    x = torch.linspace(-1, 1, 21).unsqueeze(1)
    y = 2 * x + 1
    w = torch.zeros(1, 1, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    learning_rate = 0.1
    # one step by hand: dL/dw = mean(2 (wx + b - y) x) = -2 mean(2x^2 + x) = -4 mean(x^2)
    loss = (x.mm(w) + b - y).pow(2).mean()
    loss.backward()
    mean_x2 = float((x * x).mean().item())
    assert w.grad.data.item() == pytest.approx(-4 * mean_x2, rel=1e-6)
    assert b.grad.data.item() == pytest.approx(-2.0, rel=1e-6)
    w.data -= learning_rate * w.grad.data
    b.data -= learning_rate * b.grad.data
    assert w.item() == pytest.approx(0.4 * mean_x2, rel=1e-6) and b.item() == pytest.approx(0.2)
    assert w.is_leaf and w.requires_grad and w.grad_fn is None
    w.grad.data.zero_()
    b.grad.data.zero_()
    for _ in range(300):
        loss = (x.mm(w) + b - y).pow(2).mean()
        loss.backward()
        w.data -= learning_rate * w.grad.data
        b.data -= learning_rate * b.grad.data
        w.grad.data.zero_()
        b.grad.data.zero_()
    assert w.item() == pytest.approx(2.0, abs=1e-3) and b.item() == pytest.approx(1.0, abs=1e-4)
    assert loss.data.item() < 1e-6 and x.data.numpy().shape == (21, 1)


def test_init_weights_through_data():
    def weights_init(m):  # the DCGAN tutorial's and many courses' initializer
        if isinstance(m, nn.Linear):
            m.weight.data.normal_(0.0, 0.02)
            m.bias.data.fill_(0.01)

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(200, 100), nn.ReLU(), nn.Linear(100, 3))
    net.apply(weights_init)
    assert (net[0].bias == 0.01).all() and (net[2].bias == 0.01).all()
    assert abs(net[0].weight.std().item() - 0.02) < 0.001
    assert abs(net[0].weight.mean().item()) < 0.001
    net[2].weight.data.uniform_(-0.1, 0.1)
    assert net[2].weight.abs().max().item() <= 0.1
    assert net[0].weight.requires_grad and isinstance(net[0].weight, nn.Parameter)
    net[2].weight.data.clamp_(-0.05, 0.05)  # WGAN's weight clipping
    assert net[2].weight.abs().max().item() == pytest.approx(0.05)


def test_evaluation_with_max_of_outputs_data():
    # "Training a classifier": _, predicted = torch.max(outputs.data, 1)
    net = nn.Linear(2, 3)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        net.bias.zero_()
    images = torch.tensor([[2.0, 1.0], [0.0, 3.0], [-2.0, -1.0], [1.0, 1.5]])
    labels = torch.tensor([0, 1, 2, 0])
    outputs = net(images)
    assert outputs.requires_grad and not outputs.data.requires_grad
    _, predicted = torch.max(outputs.data, 1)
    correct = (predicted == labels).sum().item()
    assert predicted.tolist() == [0, 1, 2, 1] and correct == 3
    probs = F.softmax(outputs, dim=1).data.numpy()  # .data before .numpy(), as courses do
    assert probs.shape == (4, 3) and np.allclose(probs.sum(1), 1)


def test_copy_weights_and_soft_update_through_data():
    # the target network of DQN / the EMA of a teacher: p.data.copy_(...)
    torch.manual_seed(0)
    net, target = nn.Linear(3, 2), nn.Linear(3, 2)
    target.load_state_dict(net.state_dict())
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    tau = 0.25
    before = [p.detach().numpy().copy() for p in target.parameters()]
    for target_param, param in zip(target.parameters(), net.parameters()):
        target_param.data.copy_(tau * param.data + (1.0 - tau) * target_param.data)
    for p, b in zip(target.parameters(), before):
        np.testing.assert_allclose(p.detach().numpy(), b + tau, rtol=1e-6)
    for target_param, param in zip(target.parameters(), net.parameters()):
        target_param.data.copy_(param.data)
    assert all((a == b).all() for a, b in zip(target.parameters(), net.parameters()))


def test_assigning_data_replaces_a_parameter_storage():
    lin = nn.Linear(2, 2)
    lin.weight.data = torch.eye(2)          # a new value of the same shape
    lin.bias.data = torch.zeros(2).double()  # ... or another dtype, as torch allows
    assert lin.bias.dtype == torch.float64 and isinstance(lin.weight, nn.Parameter)
    lin.bias.data = lin.bias.data.float()
    out = lin(torch.tensor([[3.0, -1.0]]))
    assert out.tolist() == [[3.0, -1.0]]
    out.sum().backward()
    assert lin.weight.grad.tolist() == [[3.0, -1.0], [3.0, -1.0]]
    assert [n for n, _ in lin.named_parameters()] == ["weight", "bias"]


def test_data_changes_are_invisible_to_autograd_detach_changes_are_caught():
    # PyTorch's documented difference: an in-place change through .data is not caught by the
    # saved-tensor check (the gradient silently uses the new values); through .detach() it is.
    a = torch.tensor([1.0, 2.0], requires_grad=True)
    out = a.sigmoid()
    out.data.zero_()
    out.sum().backward()  # sigmoid's gradient out * (1 - out), with out now 0
    assert a.grad.tolist() == [0.0, 0.0]
    b = torch.tensor([1.0, 2.0], requires_grad=True)
    out = b.sigmoid()
    c = out.detach()
    c.zero_()
    with pytest.raises(RuntimeError, match="modified by an inplace operation|in place"):
        out.sum().backward()


# -- out= -----------------------------------------------------------------------------------
def test_out_argument_as_the_tensor_tutorial_writes_it():
    x = torch.ones(5, 3)
    y = torch.arange(15.0).reshape(5, 3)
    result = torch.empty(5, 3)
    torch.add(x, y, out=result)
    assert result.tolist() == (y + 1).tolist()
    acc = torch.zeros(3)
    torch.sum(y, 0, out=acc)
    assert acc.tolist() == [30.0, 35.0, 40.0]
    torch.matmul(y.t(), x, out=torch.empty(0))  # an empty out is resized
    w = torch.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="don't support automatic differentiation"):
        torch.mul(w, 2, out=torch.empty(3))
