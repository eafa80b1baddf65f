"""Modules: parameter discovery, modes, state dicts, layer shapes and errors, batch norm
statistics, dropout and weight initialisation."""
import math

import numpy as np
import pytest

import minidl as md
import minidl.functional as F
from minidl import nn
from minidl.nn import init

from conftest import host


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5), nn.Dropout(0.5), nn.Linear(5, 2))
        self.scale = nn.Parameter(np.ones(1, dtype=np.float32))

    def forward(self, x):
        return self.head(F.relu(self.bn(self.conv(x)))) * self.scale


NET_PARAMS = ["scale", "conv.weight", "conv.bias", "bn.weight", "bn.bias",
              "head.1.weight", "head.1.bias", "head.3.weight", "head.3.bias"]


# --- traversal ---------------------------------------------------------------------------------
def test_named_parameters_order_and_identity():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == NET_PARAMS  # own parameters first, then children in definition order
    params = net.parameters()
    assert len(params) == len(NET_PARAMS)
    assert params[1] is net.conv.weight and params[-1] is net.head[3].bias
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in params)
    assert [n for n, _ in net.named_buffers()] == ["bn.running_mean", "bn.running_var", "bn.num_batches_tracked"]
    assert [n for n, _ in net.named_modules()] == ["", "conv", "bn", "head", "head.0", "head.1", "head.2",
                                                   "head.3"]


def test_layers_without_bias_have_no_bias_parameter():
    assert [n for n, _ in nn.Linear(3, 2, bias=False).named_parameters()] == ["weight"]
    assert [n for n, _ in nn.Conv2d(1, 2, 3, bias=False).named_parameters()] == ["weight"]


def test_shared_parameter_is_listed_once():
    lin = nn.Linear(3, 3)
    net = nn.Sequential(lin, nn.ReLU(), lin)  # weight tying
    assert len(net.parameters()) == 2
    # so that an optimizer steps each weight once per step
    net.zero_grad()
    for p in net.parameters():
        p.grad = md.ones(*p.shape)
    before = lin.weight.numpy().copy()
    md.optim.SGD(net.parameters(), lr=0.5).step()
    np.testing.assert_allclose(lin.weight.numpy(), before - 0.5)


def test_module_requires_super_init():
    class Bad(nn.Module):
        def __init__(self):
            self.w = 1

    with pytest.raises(RuntimeError, match=r"super\(\)\.__init__\(\)"):
        Bad()


def test_train_eval_propagate():
    net = Net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    net.head.eval()
    assert net.training and net.bn.training and not net.head[2].training


def _modes_and_flags(net):
    return [m.training for m in net.modules()], [p.requires_grad for p in net.parameters()]


def _mixed(net):
    """A training net with its BatchNorm frozen in eval mode and one weight not trained."""
    net.train()
    net.bn.eval()
    net.head[3].weight.requires_grad = False
    return _modes_and_flags(net)


@pytest.mark.parametrize("training, requires_grad", [(False, False), (False, None), (True, True), (None, None)])
def test_mode_restores_each_submodule_and_parameter_exactly(training, requires_grad):
    net = Net()
    before = _mixed(net)
    assert before[0] == [True, True, False, True, True, True, True, True] and not all(before[1])
    with net.mode(training=training, requires_grad=requires_grad) as inside:
        assert inside is net
        modes, flags = _modes_and_flags(net)
        assert modes == (before[0] if training is None else [training] * len(modes))
        assert flags == (before[1] if requires_grad is None else [requires_grad] * len(flags))
    assert _modes_and_flags(net) == before


def test_mode_restores_after_an_error_inside():
    net = Net()
    before = _mixed(net)
    with pytest.raises(ZeroDivisionError):
        with net.mode(training=False, requires_grad=False):
            1 / 0
    assert _modes_and_flags(net) == before


def test_mode_restores_a_module_the_block_switched_itself():
    net = Net()
    before = _mixed(net)
    with net.mode(training=False):
        net.train()           # the body changes modes again; the exit still restores the saved ones
        net.conv.weight.requires_grad = False
    assert _modes_and_flags(net) == before


def test_forward_and_backward_reach_every_parameter():
    md.manual_seed(0)
    net = Net()
    out = net(md.randn(4, 2, 4, 4))
    assert out.shape == (4, 2)
    out.sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape, name


# --- state dicts --------------------------------------------------------------------------------
def test_state_dict_round_trip():
    md.manual_seed(1)
    a, b = Net(), Net()
    a.train()
    a(md.randn(4, 2, 4, 4))  # changes the running statistics
    state = a.state_dict()
    # PyTorch's order: each module's parameters, its buffers, then its children
    assert list(state) == NET_PARAMS[:5] + ["bn.running_mean", "bn.running_var", "bn.num_batches_tracked"] \
        + NET_PARAMS[5:]
    assert all(isinstance(v, np.ndarray) for v in state.values())
    assert not np.allclose(state["bn.running_mean"], 0)
    b.load_state_dict(state)
    for k, v in b.state_dict().items():
        np.testing.assert_array_equal(v, state[k])
    x = md.randn(3, 2, 4, 4)
    a.eval(), b.eval()
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())
    # the state dict holds copies, not views of the live weights
    state["conv.weight"][...] = 0
    assert not np.allclose(a.conv.weight.numpy(), 0)


def test_state_dict_survives_save_and_load(tmp_path):
    a, b = Net(), Net()
    md.save({"model": a.state_dict()}, tmp_path / "m.npz")
    b.load_state_dict(md.load(tmp_path / "m.npz")["model"])
    for (k, v), (k2, v2) in zip(a.state_dict().items(), b.state_dict().items()):
        assert k == k2
        np.testing.assert_array_equal(v, v2)


def test_load_state_dict_errors_name_every_problem():
    net = Net()
    state = net.state_dict()
    before = {k: v.copy() for k, v in state.items()}
    bad = dict(state)
    del bad["conv.bias"]
    del bad["bn.running_var"]
    bad["extra.weight"] = np.zeros(2)
    bad["head.1.weight"] = np.zeros((5, 47))
    for k in bad:
        if k != "extra.weight":
            bad[k] = np.full_like(bad[k], 7.0) if k != "head.1.weight" else bad[k]
    with pytest.raises(KeyError) as e:
        net.load_state_dict(bad)
    msg = str(e.value)
    for piece in ("missing keys", "conv.bias", "bn.running_var", "unexpected keys", "extra.weight",
                  "mis-shaped", "head.1.weight", "(5, 48)", "(5, 47)"):
        assert piece in msg, piece
    # nothing was changed
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    # each kind of problem alone is an error too
    with pytest.raises(KeyError, match=r"unexpected keys \['bn.num_batches'\]"):
        net.load_state_dict({**state, "bn.num_batches": np.zeros(())})
    with pytest.raises(KeyError, match=r"missing keys \['scale'\]"):
        net.load_state_dict({k: v for k, v in state.items() if k != "scale"})
    with pytest.raises(KeyError, match=r"mis-shaped keys \[bn.running_mean: expected \(3,\), got \(4,\)\]"):
        net.load_state_dict({**state, "bn.running_mean": np.zeros(4)})


# --- layers -------------------------------------------------------------------------------------
def test_linear_layer_shapes_and_errors():
    lin = nn.Linear(4, 3)
    assert lin.weight.shape == (3, 4) and lin.bias.shape == (3,)
    assert lin(md.ones(5, 4)).shape == (5, 3)
    assert lin(md.ones(2, 5, 4)).shape == (2, 5, 3)
    with pytest.raises(ValueError, match=r"linear: x has 5 features .* expects 4"):
        lin(md.ones(2, 5))
    lin.bias.array[...] = [1, 2, 3]
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(lin(md.tensor(x)).numpy(), x @ lin.weight.numpy().T + [1, 2, 3], rtol=1e-5)


@pytest.mark.parametrize("k,s,p,hw,out", [(3, 1, 0, (7, 5), (5, 3)), (3, 1, 1, (7, 5), (7, 5)),
                                          (3, 2, 1, (7, 5), (4, 3)), ((3, 1), (2, 1), (0, 2), (6, 4), (2, 8))])
def test_conv2d_layer_shapes(k, s, p, hw, out):
    conv = nn.Conv2d(2, 4, k, stride=s, padding=p)
    kh, kw = (k, k) if isinstance(k, int) else k
    assert conv.weight.shape == (4, 2, kh, kw) and conv.bias.shape == (4,)
    assert conv(md.ones(3, 2, *hw)).shape == (3, 4) + out


def test_conv2d_layer_errors():
    conv = nn.Conv2d(3, 8, 3)
    # The channel check is the kernel's (checked once); it names both shapes.
    with pytest.raises(ValueError, match=r"conv2d: x has 2 channels \(shape \(1, 2, 5, 5\)\) but weight expects 3"):
        conv(md.ones(1, 2, 5, 5))
    with pytest.raises(ValueError, match="conv2d: x must have 4 dimensions"):
        conv(md.ones(3, 5, 5))
    with pytest.raises(ValueError, match="does not fit"):
        conv(md.ones(1, 3, 2, 2))
    with pytest.raises(ValueError, match="kernel_size"):
        nn.Conv2d(3, 8, 0)


def test_simple_layers():
    x = md.tensor(np.arange(-12.0, 12.0).reshape(2, 3, 2, 2))
    np.testing.assert_array_equal(nn.ReLU()(x).numpy(), np.maximum(x.numpy(), 0))
    np.testing.assert_allclose(nn.Sigmoid()(x).numpy(), 1 / (1 + np.exp(-x.numpy())), rtol=1e-6)
    np.testing.assert_allclose(nn.Tanh()(x).numpy(), np.tanh(x.numpy()), rtol=1e-6)
    assert nn.Identity()(x) is x
    assert nn.Flatten()(x).shape == (2, 12)
    assert nn.Flatten()(md.ones(3, 4)).shape == (3, 4)  # keeps the batch axis whatever the ndim
    assert nn.Flatten()(md.ones(3, 4, 5)).shape == (3, 20)
    np.testing.assert_allclose(nn.GlobalAvgPool2d()(x).numpy(), x.numpy().mean(axis=(2, 3)))
    assert nn.MaxPool2d(2)(x).shape == (2, 3, 1, 1)
    np.testing.assert_allclose(nn.AvgPool2d(2)(x).numpy()[..., 0, 0], x.numpy().mean(axis=(2, 3)))


def test_sequential():
    a, b = nn.Linear(2, 3), nn.ReLU()
    seq = nn.Sequential(a, b, nn.Linear(3, 1))
    assert len(seq) == 3 and seq[0] is a and seq[1] is b and list(seq)[:2] == [a, b]
    x = md.ones(4, 2)
    np.testing.assert_array_equal(seq(x).numpy(), seq[2](b(a(x))).numpy())
    with pytest.raises(TypeError, match="argument 1"):
        nn.Sequential(a, lambda t: t)
    assert "Linear(2, 3, bias=True)" in repr(seq)


# --- batch norm -----------------------------------------------------------------------------------
def test_batchnorm2d_running_stats_train_and_eval():
    rng = np.random.default_rng(0)
    bn = nn.BatchNorm2d(3, momentum=0.2)
    bn.weight.array[...] = [1.0, 2.0, 0.5]
    bn.bias.array[...] = [0.0, -1.0, 3.0]
    rm, rv = np.zeros(3), np.ones(3)
    for _ in range(3):
        x = (rng.standard_normal((4, 3, 5, 2)) * np.array([1, 2, 3])[None, :, None, None] + 5).astype(np.float32)
        y = bn(md.tensor(x)).numpy()
        mu, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
        m = x.size // 3
        rm = 0.8 * rm + 0.2 * mu
        rv = 0.8 * rv + 0.2 * var * m / (m - 1)
        expected = (x - mu[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-5)
        expected = expected * bn.weight.numpy()[None, :, None, None] + bn.bias.numpy()[None, :, None, None]
        np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(bn.state_dict()["running_mean"], rm, rtol=1e-5)
        np.testing.assert_allclose(bn.state_dict()["running_var"], rv, rtol=1e-5)
    bn.eval()
    x = rng.standard_normal((2, 3, 2, 2)).astype(np.float32)
    y = bn(md.tensor(x)).numpy()
    expected = (x - rm[None, :, None, None]) / np.sqrt(rv[None, :, None, None] + 1e-5)
    expected = expected * bn.weight.numpy()[None, :, None, None] + bn.bias.numpy()[None, :, None, None]
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)
    # evaluation does not touch the statistics
    np.testing.assert_allclose(bn.state_dict()["running_mean"], rm, rtol=1e-5)


def test_batchnorm1d_and_shape_errors():
    bn = nn.BatchNorm1d(4)
    x = np.random.default_rng(1).standard_normal((8, 4)).astype(np.float32) * 3 + 1
    y = bn(md.tensor(x)).numpy()
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=0), 1, atol=1e-3)
    with pytest.raises(ValueError, match=r"BatchNorm1d\(4\): expected a 2-d input with 4 channels"):
        bn(md.ones(8, 3))
    with pytest.raises(ValueError, match=r"BatchNorm2d\(4\)"):
        nn.BatchNorm2d(4)(md.ones(8, 4))
    with pytest.raises(ValueError, match="more than one value per channel"):
        bn(md.ones(1, 4))


# --- dropout ------------------------------------------------------------------------------------
def test_dropout_identity_in_eval():
    d = nn.Dropout(0.7)
    x = md.randn(10, 10)
    d.eval()
    assert d(x) is x
    assert F.dropout(x, 0.7, training=False) is x
    assert F.dropout(x, 0.0) is x


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_in_training_zeroes_about_p_and_rescales(p):
    md.manual_seed(123)
    d = nn.Dropout(p)
    x = md.tensor(np.random.default_rng(0).uniform(1, 2, (200, 500)), requires_grad=True)
    y = d(x)
    yv, xv = y.numpy(), x.numpy()
    zero = yv == 0
    n = zero.size
    assert abs(zero.mean() - p) < 4 * math.sqrt(p * (1 - p) / n)  # 4 standard deviations
    np.testing.assert_allclose(yv[~zero], xv[~zero] / (1 - p), rtol=1e-12)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.where(zero, 0.0, 1 / (1 - p)))
    # a new draw every call
    assert not np.array_equal(d(x).numpy() == 0, zero)


def test_dropout_reproducible_with_manual_seed():
    x = md.ones(50, 50)
    md.manual_seed(7)
    a = F.dropout(x, 0.5).numpy()
    md.manual_seed(7)
    b = F.dropout(x, 0.5).numpy()
    np.testing.assert_array_equal(a, b)


# --- initialisation -------------------------------------------------------------------------------
def test_he_normal_std():
    md.manual_seed(0)
    w = nn.Linear(500, 400, init="he").weight.numpy()
    assert abs(w.mean()) < 4 * math.sqrt(2 / 500) / math.sqrt(w.size)
    assert w.std() == pytest.approx(math.sqrt(2 / 500), rel=0.02)  # std error ~0.16%
    c = nn.Conv2d(16, 32, 3, init="he").weight.numpy()  # fan_in = 16 * 3 * 3
    assert c.std() == pytest.approx(math.sqrt(2 / 144), rel=0.05)  # std error ~1%
    assert np.all(nn.Linear(500, 400, init="he").bias.numpy() == 0)


def test_glorot_uniform_bounds():
    md.manual_seed(0)
    p = nn.Parameter(np.zeros((300, 200), dtype=np.float32))
    init.glorot_uniform(p)
    a = math.sqrt(6 / (300 + 200))
    w = p.numpy()
    assert np.all(np.abs(w) <= a)
    assert np.abs(w).max() > 0.99 * a  # fills the whole interval
    assert w.std() == pytest.approx(a / math.sqrt(3), rel=0.02)
    assert w.dtype == np.float32
    # conv weights: receptive field counts in both fans
    q = nn.Parameter(np.zeros((8, 4, 3, 3), dtype=np.float32))
    init.glorot_uniform(q)
    assert np.all(np.abs(q.numpy()) <= math.sqrt(6 / (36 + 72)))
    assert init.fans((8, 4, 3, 3)) == (36, 72)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        init.fans((5,))


def test_init_is_reproducible():
    md.manual_seed(3)
    a = nn.Linear(4, 4).weight.numpy()
    md.manual_seed(3)
    b = nn.Linear(4, 4).weight.numpy()
    np.testing.assert_array_equal(a, b)


# --- devices ------------------------------------------------------------------------------------
def test_module_to_cpu():
    net = Net()
    state = net.state_dict()
    assert net.to("cpu") is net
    assert net.device == "cpu"
    assert all(p.device == "cpu" for p in net.parameters())
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, state[k])
    with pytest.raises(ValueError):
        net.to("tpu")


@pytest.mark.skipif(not md.cuda_available(), reason="no usable CUDA device")
def test_module_to_cuda_and_back():
    md.manual_seed(0)
    net = Net()
    x = md.randn(2, 2, 4, 4)
    net.eval()
    expected = net(x).numpy()
    net.to("cuda")
    assert net.device == "cuda"
    assert all(p.device == "cuda" for p in net.parameters())
    y = net(x.to("cuda"))
    assert y.device == "cuda"
    np.testing.assert_allclose(host(y), expected, rtol=1e-4, atol=1e-5)
    net.train()
    net(x.to("cuda")).sum().backward()
    assert all(p.grad.device == "cuda" for p in net.parameters())
    net.to("cpu")
    assert all(p.device == "cpu" and p.grad.device == "cpu" for p in net.parameters())


def test_init_model_fan_in_uniform_and_he():
    md.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    bn_before = net[1].weight.numpy().copy()
    assert init.init_model(net, "fan_in_uniform") is net
    for layer, fan_in in ((net[0], 27), (net[4], 128)):
        w, b = layer.weight.numpy(), layer.bias.numpy()
        bound = 1 / math.sqrt(fan_in)
        assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
        assert np.abs(w).max() > 0.8 * bound and np.abs(b).max() > 0     # spread over the range
        # uniform on [-a, a] has standard deviation a / sqrt(3)
        assert abs(w.std() - bound / math.sqrt(3)) < 0.15 * bound
    np.testing.assert_array_equal(net[1].weight.numpy(), bn_before)     # 1-D weights untouched
    init.init_model(net, "he")
    assert not net[4].bias.numpy().any()
    assert abs(net[4].weight.numpy().std() - math.sqrt(2 / 128)) < 0.2 * math.sqrt(2 / 128)
    with pytest.raises(ValueError, match="scheme must be one of"):
        init.init_model(net, "xavier")


def test_batchnorm2d_on_an_empty_batch():
    """In evaluation an empty batch goes through forward and backward (empty outputs, zero
    parameter gradients); in training it has no statistics, a clear error."""
    bn = nn.BatchNorm2d(3)
    x = md.tensor(np.zeros((0, 3, 4, 4), np.float32), requires_grad=True)
    bn.eval()
    y = bn(x)
    y.sum().backward()
    assert y.shape == x.grad.shape == (0, 3, 4, 4)
    assert np.array_equal(host(bn.weight.grad), np.zeros(3)) and np.array_equal(host(bn.bias.grad), np.zeros(3))
    bn.train()
    with pytest.raises(ValueError, match=r"training needs more than one value per channel, got x of shape \(0, 3, 4, 4\)"):
        bn(x)
