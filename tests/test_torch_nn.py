"""PyTorch's nn surface that ported scripts use (issue 32): loss modules, ReLU(inplace=True),
Dropout2d, AdaptiveAvgPool2d, F.interpolate, buffers read as attributes, Sequential of an
OrderedDict, md.load(map_location=...), the nn.init.*_ functions and PyTorch's default
initialisation. New differentiable functions are gradchecked in float64 and compared with
PyTorch where it is installed."""
import hashlib
import math
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minidl as md
import minidl.functional as F
from minidl import nn
from minidl.testing import gradcheck

from conftest import examples

try:
    import torch
except ImportError:
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")

seeds = st.integers(0, 2 ** 31)


def leaf(a):
    return md.tensor(np.asarray(a, dtype=np.float64), requires_grad=True)


def normal(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape)


# --- loss modules ------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_loss_modules_match_the_functions(reduction):
    logits = md.tensor(normal(0, (4, 3)))
    y = md.tensor([0, 2, 1, 2])
    probs = md.tensor(np.random.default_rng(1).random((4, 3)))
    target = md.tensor(np.random.default_rng(2).random((4, 3)))
    pairs = [
        (nn.CrossEntropyLoss(reduction=reduction)(logits, y), F.cross_entropy(logits, y, reduction)),
        (nn.NLLLoss(reduction=reduction)(F.log_softmax(logits, 1), y),
         F.nll_loss(F.log_softmax(logits, 1), y, reduction=reduction)),
        (nn.MSELoss(reduction=reduction)(logits, target), F.mse_loss(logits, target, reduction)),
        (nn.BCELoss(reduction=reduction)(probs, target), F.binary_cross_entropy(probs, target, reduction)),
        (nn.BCEWithLogitsLoss(reduction=reduction)(logits, target),
         F.binary_cross_entropy_with_logits(logits, target, reduction)),
    ]
    for module_out, fn_out in pairs:
        np.testing.assert_array_equal(module_out.numpy(), fn_out.numpy())
    if torch is not None:
        t = torch.tensor
        ref = [torch.nn.CrossEntropyLoss(reduction=reduction)(t(logits.numpy()), t(y.numpy())),
               torch.nn.NLLLoss(reduction=reduction)(torch.log_softmax(t(logits.numpy()), 1), t(y.numpy())),
               torch.nn.MSELoss(reduction=reduction)(t(logits.numpy()), t(target.numpy())),
               torch.nn.BCELoss(reduction=reduction)(t(probs.numpy()), t(target.numpy())),
               torch.nn.BCEWithLogitsLoss(reduction=reduction)(t(logits.numpy()), t(target.numpy()))]
        for (m, _), r in zip(pairs, ref):
            np.testing.assert_allclose(m.numpy(), r.numpy(), rtol=1e-10, atol=1e-12)


def test_loss_module_rejects_a_bad_reduction():
    with pytest.raises(ValueError, match="reduction must be one of"):
        nn.CrossEntropyLoss(reduction="avg")


# --- layers and keywords -------------------------------------------------------------------------
def test_relu_inplace_is_accepted_and_out_of_place():
    x = md.tensor([-1.0, 2.0])
    y = nn.ReLU(inplace=True)(x)
    assert y.numpy().tolist() == [0.0, 2.0] and x.numpy().tolist() == [-1.0, 2.0]
    assert nn.Dropout(0.3, inplace=True).p == 0.3


def test_dropout2d_zeroes_whole_channels():
    md.manual_seed(0)
    x = md.ones(8, 16, 3, 3)
    y = nn.Dropout2d(0.5)(x).numpy()
    per_channel = y.reshape(8, 16, 9)
    assert set(np.unique(per_channel)) <= {0.0, 2.0}
    assert (per_channel.min(axis=2) == per_channel.max(axis=2)).all()  # whole channels
    assert 0.3 < (per_channel[:, :, 0] == 0).mean() < 0.7
    layer = nn.Dropout2d(0.5).eval()
    assert layer(x) is x
    w = leaf(normal(0, (2, 3, 2, 2)))
    md.manual_seed(1)
    out = F.dropout2d(w, 0.5)
    out.sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), (out.numpy() != 0) * 2.0)


@examples(10)
@given(seed=seeds, h=st.integers(1, 7), w=st.integers(1, 7), oh=st.integers(1, 4), ow=st.integers(1, 4))
def test_gradcheck_adaptive_avg_pool2d(seed, h, w, oh, ow):
    x = leaf(normal(seed, (2, 2, h, w)))
    gradcheck(lambda t: F.adaptive_avg_pool2d(t, (oh, ow)), x)
    if torch is not None:
        ref = torch.nn.functional.adaptive_avg_pool2d(torch.tensor(x.numpy()), (oh, ow))
        np.testing.assert_allclose(nn.AdaptiveAvgPool2d((oh, ow))(x).numpy(), ref.numpy(), rtol=1e-12, atol=1e-14)


interp_cases = st.sampled_from([
    dict(size=(5, 7)), dict(size=3), dict(scale_factor=2), dict(scale_factor=1.5), dict(size=(2, 9))])


@examples(12)
@given(seed=seeds, kw=interp_cases, mode=st.sampled_from([("nearest", None), ("bilinear", False),
                                                         ("bilinear", True)]))
def test_gradcheck_interpolate(seed, kw, mode):
    x = leaf(normal(seed, (1, 2, 4, 5)))
    gradcheck(lambda t: F.interpolate(t, mode=mode[0], align_corners=mode[1], **kw), x)


@needs_torch
@pytest.mark.parametrize("kw", [dict(size=(5, 7)), dict(size=3), dict(scale_factor=2), dict(scale_factor=1.5)])
@pytest.mark.parametrize("mode", [("nearest", None), ("bilinear", False), ("bilinear", True)])
def test_interpolate_agrees_with_torch(kw, mode):
    a = normal(3, (2, 3, 4, 5))
    g = normal(4, tuple(torch.nn.functional.interpolate(torch.tensor(a), mode=mode[0], align_corners=mode[1],
                                                        **kw).shape))
    x, t = leaf(a), torch.tensor(a, requires_grad=True)
    y = F.interpolate(x, mode=mode[0], align_corners=mode[1], **kw)
    r = torch.nn.functional.interpolate(t, mode=mode[0], align_corners=mode[1], **kw)
    np.testing.assert_allclose(y.numpy(), r.detach().numpy(), rtol=1e-12, atol=1e-14)
    y.backward(g)
    r.backward(torch.tensor(g))
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_interpolate_rejects_bad_arguments():
    x = md.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="exactly one of size and scale_factor"):
        F.interpolate(x)
    with pytest.raises(ValueError, match="mode must be"):
        F.interpolate(x, size=2, mode="bicubic")
    with pytest.raises(ValueError, match="align_corners"):
        F.interpolate(x, size=2, align_corners=True)


class Normalized(nn.Module):
    """The normalisation-inside-the-model pattern."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", md.tensor([0.5, 0.25]).view(1, 2, 1, 1))
        self.register_buffer("std", md.tensor([2.0, 4.0]).view(1, 2, 1, 1))
        self.fc = nn.Linear(2, 1)

    def forward(self, x):
        return (x - self.mean) / self.std


def test_buffers_read_as_attributes():
    m = Normalized()
    assert isinstance(m.mean, md.Tensor) and m.mean.shape == (1, 2, 1, 1)
    out = m(md.ones(1, 2, 1, 1))
    np.testing.assert_allclose(out.numpy().ravel(), [0.25, 0.1875])
    assert set(m.state_dict()) == {"mean", "std", "fc.weight", "fc.bias"}
    bn = nn.BatchNorm2d(3)
    assert bn.running_mean.numpy().tolist() == [0, 0, 0]
    bn.running_mean.fill_(1.0)            # shares the buffer's memory
    assert bn._buffers["running_mean"].tolist() == [1, 1, 1]
    bn.running_var = md.full((3,), 2.0)   # assignment replaces the buffer
    assert bn._buffers["running_var"].tolist() == [2, 2, 2]
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        bn.nope
    with pytest.raises(TypeError, match="register_buffer"):
        bn.register_buffer("x", [1, 2])


def test_sequential_of_an_ordered_dict_and_module_cpu():
    model = nn.Sequential(OrderedDict([("conv", nn.Conv2d(1, 2, 3)), ("relu", nn.ReLU()),
                                       ("flat", nn.Flatten())]))
    assert [n for n, _ in model.named_children()] == ["conv", "relu", "flat"]
    assert "conv.weight" in model.state_dict()
    assert model.cpu() is model and model(md.zeros(1, 1, 3, 3)).shape == (1, 2)
    with pytest.raises(TypeError, match="argument bad"):
        nn.Sequential(OrderedDict([("bad", 3)]))


def test_load_accepts_map_location(tmp_path):
    model = nn.Linear(3, 2)
    path = str(tmp_path / "m.npz")
    md.save(model.state_dict(), path)
    for where in ("cpu", md.device("cpu"), {"cuda:0": "cpu"}, lambda storage, loc: storage):
        state = md.load(path, map_location=where)
        nn.Linear(3, 2).load_state_dict(state)
    with pytest.raises(TypeError, match="map_location"):
        md.load(path, map_location=3)
    with pytest.raises(ValueError, match="map_location"):
        md.load(path, map_location="tpu")


# --- nn.init ------------------------------------------------------------------------------------
def _std(t):
    return float(t.numpy().std())


def test_init_functions_fill_in_place_with_the_stated_distribution():
    md.manual_seed(0)
    w = nn.Parameter(np.zeros((256, 128), dtype=np.float32))
    fan_in, fan_out = 128, 256
    assert nn.init.zeros_(w) is w and not w.numpy().any()
    nn.init.ones_(w)
    assert (w.numpy() == 1).all()
    nn.init.constant_(w, 0.3)
    assert np.allclose(w.numpy(), 0.3)
    nn.init.normal_(w, 1.0, 0.5)
    assert abs(_std(w) - 0.5) < 0.01 and abs(float(w.numpy().mean()) - 1) < 0.01
    nn.init.uniform_(w, -2, 2)
    assert -2 <= w.numpy().min() and w.numpy().max() <= 2 and abs(_std(w) - 4 / math.sqrt(12)) < 0.02
    nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
    assert abs(_std(w) - math.sqrt(2 / fan_out)) < 0.003
    nn.init.kaiming_uniform_(w, a=math.sqrt(5))
    assert np.abs(w.numpy()).max() <= 1 / math.sqrt(fan_in)
    nn.init.xavier_uniform_(w, gain=nn.init.calculate_gain("tanh"))
    assert abs(_std(w) - 5 / 3 * math.sqrt(2 / (fan_in + fan_out))) < 0.003
    nn.init.xavier_normal_(w)
    assert abs(_std(w) - math.sqrt(2 / (fan_in + fan_out))) < 0.003
    with pytest.raises(ValueError, match="mode must be"):
        nn.init.kaiming_uniform_(w, mode="in")


def test_kaiming_uniform_a_sqrt5_is_the_fan_in_uniform_scheme():
    a = nn.Parameter(np.zeros((4, 6), dtype=np.float32))
    b = nn.Parameter(np.zeros((4, 6), dtype=np.float32))
    md.manual_seed(3)
    nn.init.kaiming_uniform_(a, a=math.sqrt(5))
    md.manual_seed(3)
    nn.init.uniform_fan_in(b, 6)
    np.testing.assert_array_equal(a.numpy(), b.numpy())


# --- default initialisation ----------------------------------------------------------------------
# sha256 (first 16 hex digits) of each zoo model's state dict after md.manual_seed(0), recorded
# before the layers' default became PyTorch's: the zoo names He explicitly and keeps its weights.
ZOO_WEIGHTS = {
    "cifar_cnn": "f600c8afca230b45", "lenet": "fd9c3f35bb0b0ac9", "madry_mnist": "4fb114d19fc63194",
    "mlp": "e15e8a653598b926", "preact_resnet18": "be61a62310bb35c0", "rse_cifar_cnn": "0f95c99c608f0b49",
    "rse_madry_mnist": "fd61134387ac59ec", "rse_wong_mnist": "2626063f4c5f7105", "wong_mnist": "5f740a5b67b49323",
}


@pytest.mark.parametrize("name", sorted(ZOO_WEIGHTS))
def test_model_zoo_weights_are_bitwise_unchanged(name):
    from minidl.models import MODELS
    md.manual_seed(0)
    h = hashlib.sha256()
    for k, v in MODELS[name]().state_dict().items():
        h.update(k.encode())
        h.update(v.tobytes())
    assert h.hexdigest()[:16] == ZOO_WEIGHTS[name]


@pytest.mark.parametrize("make, fan_in", [(lambda: nn.Linear(300, 200), 300),
                                          (lambda: nn.Conv2d(16, 64, 3), 144)])
def test_linear_and_conv_default_to_pytorchs_initialisation(make, fan_in):
    md.manual_seed(0)
    layer = make()
    bound = 1 / math.sqrt(fan_in)
    for p in (layer.weight, layer.bias):
        a = p.numpy()
        assert np.abs(a).max() <= bound and np.abs(a).max() > 0.95 * bound
    assert abs(_std(layer.weight) - bound / math.sqrt(3)) < 0.02 * bound
    if torch is not None:  # the same distribution: compare the spread with PyTorch's own layer
        torch.manual_seed(0)
        ref = (torch.nn.Linear(300, 200) if fan_in == 300 else torch.nn.Conv2d(16, 64, 3)).weight.detach()
        assert abs(_std(layer.weight) - float(ref.std())) < 0.03 * bound
    md.manual_seed(0)
    he = nn.Linear(300, 200, init="he") if fan_in == 300 else nn.Conv2d(16, 64, 3, init="he")
    assert abs(_std(he.weight) - math.sqrt(2 / fan_in)) < 0.03 * math.sqrt(2 / fan_in)
    assert not he.bias.numpy().any()
    with pytest.raises(ValueError, match="scheme must be one of"):
        nn.Linear(2, 2, init="xavier")
