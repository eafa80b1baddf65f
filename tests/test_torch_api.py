"""The PyTorch-familiar API: Tensor methods, md functions, the added F losses, nn containers,
optimizers and schedulers. Each differentiable addition is gradchecked (float64 finite
differences) and, where torch is installed, compared with PyTorch (values and gradients)."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minidl as md
import minidl.functional as F
from minidl import nn, optim
from minidl.testing import gradcheck

from conftest import examples

try:
    import torch
    TF = torch.nn.functional
except ImportError:
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")


def leaf(a):
    return md.tensor(np.asarray(a, dtype=np.float64), requires_grad=True)


def rand(seed, shape, distinct=True):
    """Standard normal values; ``distinct`` keeps ties (and so kinks) away."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape)
    if distinct:
        a = a + np.arange(a.size).reshape(shape) * 1e-3
    return a


shapes = st.sampled_from([(3,), (2, 3), (3, 4), (2, 3, 2)])
seeds = st.integers(0, 2 ** 31)


# --- gradients of the differentiable additions -------------------------------------------------
@examples(15)
@given(shape=shapes, seed=seeds)
def test_gradcheck_where_masked_fill_minimum_clamp(shape, seed):
    a, b = leaf(rand(seed, shape)), leaf(rand(seed + 1, shape))
    mask = md.tensor(np.random.default_rng(seed).random(shape) > 0.5)
    gradcheck(lambda x, y: md.where(mask, x, y), a, b)
    gradcheck(lambda x: x.masked_fill(mask, 2.5), a)
    gradcheck(lambda x, y: md.min(x, y), a, b)
    gradcheck(lambda x, y: x.clamp(min=y), a, b)
    gradcheck(lambda x: x.clamp(-0.5, 0.5), a)


@examples(15)
@given(shape=st.sampled_from([(2, 3), (3, 4), (2, 3, 2)]), seed=seeds, keep=st.booleans())
def test_gradcheck_max_min_with_dim_and_gather(shape, seed, keep):
    x = leaf(rand(seed, shape))
    for d in range(len(shape)):
        gradcheck(lambda t: t.max(d, keepdim=keep)[0], x)
        gradcheck(lambda t: t.min(dim=d, keepdim=keep).values, x)
    index = md.tensor(np.random.default_rng(seed).integers(0, shape[1], size=shape))  # repeats add up
    gradcheck(lambda t: t.gather(1, index), x)
    gradcheck(lambda t: t.min(), x)


@examples(15)
@given(shape=shapes, seed=seeds, p=st.sampled_from([1, 2, 3, math.inf]))
def test_gradcheck_norm(shape, seed, p):
    x = leaf(rand(seed, shape))
    gradcheck(lambda t: t.norm(p), x)
    gradcheck(lambda t: t.norm(p, dim=-1, keepdim=True), x)


def test_norm_values_and_zero_gradient():
    x = leaf([[3.0, -4.0], [0.0, 0.0]])
    np.testing.assert_allclose(x.norm(dim=1).numpy(), [5.0, 0.0])
    np.testing.assert_allclose(x.norm(1, dim=1).numpy(), [7.0, 0.0])
    np.testing.assert_allclose(x.norm(math.inf, dim=1).numpy(), [4.0, 0.0])
    x.norm(dim=1).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[0.6, -0.8], [0.0, 0.0]])  # 0 (not NaN) at the origin
    with pytest.raises(ValueError, match="p must be"):
        x.norm(0.5)


@examples(15)
@given(shape=shapes, seed=seeds)
def test_gradcheck_expand_pad_leaky_relu(shape, seed):
    x = leaf(rand(seed, shape))
    gradcheck(lambda t: t.unsqueeze(0).expand(3, *shape), x)
    gradcheck(lambda t: F.pad(t, (1, 2)), x)
    gradcheck(lambda t: F.pad(t, (0, 1, 2, 0)) if t.ndim >= 2 else F.pad(t, (2, 0)), x)
    gradcheck(lambda t: F.leaky_relu(t, 0.1), x)
    gradcheck(lambda t: t.permute(*reversed(range(t.ndim))).unsqueeze(1).squeeze(1), x)


@examples(15)
@given(n=st.integers(1, 4), c=st.integers(2, 4), seed=seeds, smoothing=st.sampled_from([0.0, 0.1, 0.5]),
       reduction=st.sampled_from(["mean", "sum", "none"]))
def test_gradcheck_losses(n, c, seed, smoothing, reduction):
    rng = np.random.default_rng(seed)
    z = leaf(rng.standard_normal((n, c)))
    y = rng.integers(0, c, n)
    gradcheck(lambda t: F.cross_entropy(t, y, reduction=reduction, label_smoothing=smoothing), z)
    w = md.tensor(rng.random(c) + 0.5, dtype="float64")
    gradcheck(lambda t: F.nll_loss(F.log_softmax(t, dim=1), y, weight=w, reduction=reduction), z)
    target = leaf(rng.random((n, c)))
    gradcheck(lambda t, u: F.binary_cross_entropy_with_logits(t, u, reduction=reduction), z, target)
    p = leaf(rng.random((n, c)) * 0.8 + 0.1)
    gradcheck(lambda q, u: F.binary_cross_entropy(q, u, reduction=reduction), p, target)
    probs = md.tensor(rng.dirichlet(np.ones(c), size=n))
    gradcheck(lambda t: F.kl_div(F.log_softmax(t, dim=1), probs, reduction="batchmean"), z)


def test_loss_known_values():
    z = md.tensor([[0.0, 0.0]], dtype="float64")
    # uniform logits: -log(1/2) whatever the smoothing
    assert F.cross_entropy(z, [1], label_smoothing=0.3).item() == pytest.approx(math.log(2))
    logp = md.tensor([[math.log(0.25), math.log(0.75)]], dtype="float64")
    assert F.nll_loss(logp, [1]).item() == pytest.approx(-math.log(0.75))
    assert F.nll_loss(md.tensor([[-1.0, -2.0], [-3.0, -4.0]]), [1, -100]).item() == pytest.approx(2.0)
    # BCE with logits at z = 0 is log 2, and its gradient sigmoid(0) - y = 0.5 - y
    z0 = leaf([0.0, 0.0])
    F.binary_cross_entropy_with_logits(z0, [1.0, 0.0], reduction="sum").backward()
    np.testing.assert_allclose(z0.grad.numpy(), [-0.5, 0.5])
    assert F.binary_cross_entropy(md.tensor([0.0]), [1.0]).item() == pytest.approx(100.0)  # log clamped at -100
    big = md.tensor([1000.0, -1000.0])
    np.testing.assert_allclose(F.binary_cross_entropy_with_logits(big, [0.0, 1.0], reduction="none").numpy(),
                               [1000.0, 1000.0])
    q = md.tensor([[0.5, 0.5]]).log()
    assert F.kl_div(q, md.tensor([[1.0, 0.0]]), reduction="sum").item() == pytest.approx(math.log(2))
    np.testing.assert_array_equal(F.one_hot(md.tensor([2, 0]), 3).numpy(), [[0, 0, 1], [1, 0, 0]])
    np.testing.assert_array_equal(F.pad(md.ones(1, 2), (1, 0, 0, 1), value=7).numpy(),
                                  [[7, 1, 1], [7, 7, 7]])


def test_loss_argument_errors():
    with pytest.raises(ValueError, match="binary_cross_entropy: input must hold probabilities"):
        F.binary_cross_entropy(md.tensor([1.5]), [1.0])
    with pytest.raises(ValueError, match="probabilities"):
        F.binary_cross_entropy(md.tensor([float("nan")]), [1.0])
    with pytest.raises(ValueError, match=r"nll_loss: target values must lie in \[0, 2\)"):
        F.nll_loss(md.zeros(1, 2), [2])
    with pytest.raises(ValueError, match="label_smoothing"):
        F.cross_entropy(md.zeros(1, 2), [0], label_smoothing=1.5)
    with pytest.raises(ValueError, match="pad: expected an even number"):
        F.pad(md.zeros(2), (1,))
    with pytest.raises(ValueError, match="softmax: dim"):
        F.softmax(md.zeros(2, 2), dim=2)
    with pytest.raises(ValueError, match="one_hot"):
        F.one_hot(md.tensor([3]), 2)


# --- Tensor API semantics ------------------------------------------------------------------------
def test_shape_methods():
    x = md.arange(24).float().view(2, 3, 4)
    assert x.size() == (2, 3, 4) and x.size(-1) == 4 and x.size == 24 and x.numel() == 24 and x.dim() == 3
    assert x.view(x.size(0), -1).shape == (2, 12)
    assert x.view_as(md.zeros(4, 6)).shape == (4, 6)
    assert x.permute(2, 0, 1).shape == (4, 2, 3)
    np.testing.assert_array_equal(x.permute(2, 0, 1).numpy(), x.numpy().transpose(2, 0, 1))
    assert x.unsqueeze(1).shape == (2, 1, 3, 4) and x.unsqueeze(-1).shape == (2, 3, 4, 1)
    assert md.zeros(1, 3, 1).squeeze().shape == (3,) and md.zeros(1, 3, 1).squeeze(0).shape == (3, 1)
    assert md.zeros(3, 1).expand(3, 5).shape == (3, 5) and md.zeros(3, 1).expand(-1, 2).shape == (3, 2)
    assert md.flatten(x, 1).shape == (2, 12) and x.contiguous() is x
    with pytest.raises(ValueError, match="expand"):
        md.zeros(3, 2).expand(3, 4)
    with pytest.raises(ValueError, match="permute"):
        x.permute(0, 1)


def test_reductions_accept_dim_and_axis():
    a = rand(0, (3, 4))
    x = md.tensor(a)
    np.testing.assert_allclose(x.sum(dim=1, keepdim=True).numpy(), a.sum(1, keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(x.sum(axis=1, keepdims=True).numpy(), a.sum(1, keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(x.mean(0).numpy(), a.mean(0), rtol=1e-6)
    values, indices = x.max(1)
    np.testing.assert_allclose(values.numpy(), a.max(1), rtol=1e-6)
    np.testing.assert_array_equal(indices.numpy(), a.argmax(1))
    np.testing.assert_allclose(x.max(axis=1).numpy(), a.max(1), rtol=1e-6)  # NumPy's convention with axis=
    assert x.min(dim=0, keepdim=True).indices.shape == (1, 4)
    pred = x.argmax(dim=1, keepdim=True)
    assert pred.shape == (3, 1) and pred.dtype == np.int64
    target = md.tensor(a.argmax(1))
    assert pred.eq(target.view_as(pred)).sum().item() == 3
    assert md.argmax(x).item() == a.argmax() and x.argmin().item() == a.argmin()
    with pytest.raises(TypeError, match="dim or axis"):
        x.sum(dim=0, axis=1)


def test_comparisons_and_dtypes():
    x = md.tensor([1.0, 2.0, 3.0])
    assert x.eq(2).tolist() == [False, True, False] and x.ne(2).tolist() == [True, False, True]
    assert x.lt(2).tolist() == [True, False, False] and x.le(2).tolist() == [True, True, False]
    assert x.gt(2).tolist() == [False, False, True] and x.ge(md.tensor([3.0, 2.0, 1.0])).tolist() == [False, True, True]
    assert x.long().dtype == np.int64 and x.int().dtype == np.int32 and x.bool().dtype == np.bool_
    assert x.double().dtype == np.float64 and x.long().float().dtype == np.float32
    assert x.sign().tolist() == [1.0, 1.0, 1.0] and md.sign(-x).tolist() == [-1.0, -1.0, -1.0]
    y = md.tensor([1.0, 2.0], requires_grad=True)
    assert not y.long().requires_grad


def test_in_place_methods():
    md.manual_seed(0)
    d = md.zeros_like(md.ones(2000)).uniform_(-0.3, 0.3)
    assert -0.3 <= d.numpy().min() < -0.29 and 0.29 < d.numpy().max() <= 0.3
    n = md.zeros(20000).normal_(1.0, 2.0)
    assert abs(n.numpy().mean() - 1.0) < 0.05 and abs(n.numpy().std() - 2.0) < 0.05
    t = md.tensor([1.0, -2.0, 3.0])
    assert t.add_(1).tolist() == [2.0, -1.0, 4.0] and t.mul_(2).tolist() == [4.0, -2.0, 8.0]
    assert t.add_(md.ones(3), alpha=-2).tolist() == [2.0, -4.0, 6.0]
    assert t.clamp_(-1, 1).tolist() == [1.0, -1.0, 1.0] and t.zero_().tolist() == [0.0, 0.0, 0.0]
    assert t.fill_(5).tolist() == [5.0] * 3 and t.copy_(md.tensor([1.0, 2.0, 3.0])).tolist() == [1.0, 2.0, 3.0]
    view = t[1:]
    view.zero_()  # a view shares memory, as in PyTorch
    assert t.tolist() == [1.0, 0.0, 0.0]


def test_attack_idiom():
    """delta = zeros_like(X).uniform_(-eps, eps); delta.requires_grad = True; ...; delta.grad.zero_()"""
    md.manual_seed(0)
    X, w = md.rand(4, 3), md.randn(3, 2)
    delta = md.zeros_like(X).uniform_(-0.1, 0.1)
    delta.requires_grad = True
    for _ in range(3):
        loss = F.cross_entropy((X + delta) @ w, [0, 1, 0, 1])
        loss.backward()
        grad = delta.grad.numpy().copy()
        delta.array = md.clamp(delta + 0.05 * delta.grad.sign(), -0.1, 0.1).array
        delta.grad.zero_()
    assert np.abs(grad).sum() > 0 and not delta.grad.numpy().any()
    assert np.abs(delta.numpy()).max() <= 0.1 + 1e-7


def test_version_counter_refuses_stale_backward():
    w = md.tensor([1.0, 2.0], requires_grad=True)
    x = md.tensor([3.0, 4.0])
    y = (w * x).sum()
    x.mul_(2)  # Mul saved x: its gradient for w would be wrong
    with pytest.raises(RuntimeError, match="changed by an in-place operation"):
        y.backward()
    z = (w * x[:1].expand(2)).sum()
    x[0:1].add_(1)  # through a view of the same memory
    with pytest.raises(RuntimeError, match="in-place"):
        z.backward()
    # after the forward pass is run again, all is well
    (w * x).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), x.numpy())
    # an optimizer step changes the weights: a graph built before it is stale
    opt = optim.SGD([w], lr=0.1)
    loss = (w * w).sum()
    opt.step()
    with pytest.raises(RuntimeError, match="in-place"):
        loss.backward()


def test_in_place_on_grad_tensors_and_requires_grad_flag():
    w = md.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="add_: in-place change of a tensor that requires grad"):
        w.add_(1)
    with md.no_grad():
        w.add_(1)
    assert w.tolist() == [2.0]
    h = w * 2
    with pytest.raises(RuntimeError, match="requires grad"):
        h.zero_()
    with pytest.raises(RuntimeError, match="only a leaf"):
        h.requires_grad = False
    with pytest.raises(TypeError, match="requires_grad: only floating-point"):
        md.tensor([1, 2]).requires_grad = True
    t = md.zeros(2)
    t.requires_grad = True
    (t * 3).sum().backward()
    assert t.grad.tolist() == [3.0, 3.0]


def test_md_functions():
    a, b = md.tensor([[1.0, 5.0]]), md.tensor([[3.0, 2.0]])
    assert md.cat([a, b], dim=0).shape == (2, 2) and md.cat([a, b], 1).shape == (1, 4)
    assert md.stack([a, b], dim=1).shape == (1, 2, 2)
    assert md.max(a, b).tolist() == [[3.0, 5.0]] and md.min(a, b).tolist() == [[1.0, 2.0]]
    assert md.where(a > b, a, b).tolist() == [[3.0, 5.0]] and md.clamp(a, 2, 4).tolist() == [[2.0, 4.0]]
    assert md.arange(3).dtype == np.int64 and md.arange(0, 1, 0.25).tolist() == [0.0, 0.25, 0.5, 0.75]
    assert md.linspace(0, 1, 5).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert md.full((2,), 1.5).tolist() == [1.5, 1.5] and md.full((1,), 2).dtype == np.int64
    np.testing.assert_array_equal(md.eye(3).numpy(), np.eye(3))
    assert md.ones_like(a).tolist() == [[1.0, 1.0]] and md.full_like(a, 7).tolist() == [[7.0, 7.0]]
    assert md.zeros_like(a, dtype="int64").dtype == np.int64
    md.manual_seed(0)
    r, n = md.rand_like(md.zeros(1000)), md.randn_like(md.zeros(1000, dtype="float64"))
    assert 0 <= r.numpy().min() and r.numpy().max() < 1 and n.dtype == np.float64
    with pytest.raises(ValueError, match="arange: step"):
        md.arange(0, 1, 0)
    with pytest.raises(ValueError, match="cat"):
        md.cat([])


# --- nn ----------------------------------------------------------------------------------------
def test_module_containers_and_methods():
    layers = nn.ModuleList([nn.Linear(2, 3), nn.Linear(3, 1)])
    heads = nn.ModuleDict({"a": nn.Linear(1, 1), "b": nn.Identity(54, unused=1)})

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers, self.heads = layers, heads
            self.register_buffer("scale", np.ones(1, dtype=np.float32))

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return self.heads["b"](self.heads["a"](x)) * md.tensor(self._buffers["scale"])

    net = Net()
    assert [n for n, _ in net.named_parameters()] == ["layers.0.weight", "layers.0.bias", "layers.1.weight",
                                                       "layers.1.bias", "heads.a.weight", "heads.a.bias"]
    assert [n for n, _ in net.named_modules()][:3] == ["", "layers", "layers.0"]
    assert len(list(net.children())) == 2 and len(list(net.modules())) == 7
    assert net(md.zeros(4, 2)).shape == (4, 1) and len(layers) == 2 and "a" in heads
    seen = []
    net.apply(lambda m: seen.append(type(m).__name__))
    assert seen[-1] == "Net" and seen.count("Linear") == 3
    with pytest.raises(TypeError, match="ModuleList: expected a Module"):
        layers.append(3)
    with pytest.raises(KeyError, match="no module 'c'"):
        heads["c"]
    assert nn.LeakyReLU(0.2)(md.tensor([-1.0, 2.0])).tolist() == pytest.approx([-0.2, 2.0])


# --- optimizers and schedulers ------------------------------------------------------------------------
def test_param_groups_have_their_own_lr():
    a, b = nn.Parameter(np.ones(1)), nn.Parameter(np.ones(1))
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    a.grad = md.tensor([1.0], dtype="float64")
    b.grad = md.tensor([1.0], dtype="float64")
    opt.step()
    assert a.tolist() == pytest.approx([0.9]) and b.tolist() == pytest.approx([0.5])
    sched = optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)
    sched.step()
    assert sched.get_last_lr() == pytest.approx([0.01, 0.05])
    with pytest.raises(ValueError, match="SGD: lr: expected a finite number > 0, got 0"):
        optim.SGD([a], lr=0)


def _torch_trajectory(make_torch, grads, w0):
    p = torch.nn.Parameter(torch.tensor(w0.copy()))
    opt = make_torch([p])
    out = []
    for g in grads:
        p.grad = torch.tensor(g.copy())
        opt.step()
        out.append(p.detach().numpy().copy())
    return out


def _trajectory(make, grads, w0):
    p = nn.Parameter(w0.copy())
    opt = make([p])
    out = []
    for g in grads:
        p.grad = md.tensor(g.copy())
        opt.step()
        out.append(p.numpy().copy())
    return out


def test_adadelta_by_hand():
    (w,) = _trajectory(lambda ps: optim.Adadelta(ps, lr=1.0, rho=0.5, eps=0.01), [np.array([2.0])], np.zeros(1))
    v = 0.5 * 4.0
    delta = math.sqrt(0.01) / math.sqrt(v + 0.01) * 2.0
    assert w[0] == pytest.approx(-delta, rel=1e-12)


@needs_torch
@pytest.mark.parametrize("name", ["Adadelta", "RMSprop", "RMSprop-centered-momentum", "AdamW", "Adam"])
def test_optimizers_match_torch(name):
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(5) for _ in range(6)]
    w0 = rng.standard_normal(5)
    kwargs = {"Adadelta": dict(lr=0.5, rho=0.8, weight_decay=0.1), "RMSprop": dict(lr=0.01, weight_decay=0.1),
              "RMSprop-centered-momentum": dict(lr=0.01, momentum=0.9, centered=True),
              "AdamW": dict(lr=0.01, weight_decay=0.5), "Adam": dict(lr=0.01, weight_decay=0.1)}[name]
    cls = name.split("-")[0]
    ours = _trajectory(lambda ps: getattr(optim, cls)(ps, **kwargs), grads, w0)
    theirs = _torch_trajectory(lambda ps: getattr(torch.optim, cls)(ps, **kwargs), grads, w0)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


SCHEDULERS = {
    "StepLR": lambda o, m: m.StepLR(o, step_size=3, gamma=0.5),
    "MultiStepLR": lambda o, m: m.MultiStepLR(o, milestones=[2, 5], gamma=0.1),
    "ExponentialLR": lambda o, m: m.ExponentialLR(o, gamma=0.9),
    "CosineAnnealingLR": lambda o, m: m.CosineAnnealingLR(o, T_max=7, eta_min=0.01),
    "LambdaLR": lambda o, m: m.LambdaLR(o, lambda e: 1 / (1 + e)),
    "OneCycleLR": lambda o, m: m.OneCycleLR(o, max_lr=0.4, total_steps=12),
    "OneCycleLR-linear-3phase": lambda o, m: m.OneCycleLR(o, max_lr=0.4, total_steps=12, anneal_strategy="linear",
                                                          three_phase=True),
    "CyclicLR": lambda o, m: m.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=3, step_size_down=2),
    "CyclicLR-triangular2": lambda o, m: m.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=2, mode="triangular2"),
}


@needs_torch
@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_schedulers_match_torch(name):
    p, tp = nn.Parameter(np.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = optim.SGD([p], lr=0.2, momentum=0.9)
    topt = torch.optim.SGD([tp], lr=0.2, momentum=0.9)
    ours, theirs = SCHEDULERS[name](opt, optim.lr_scheduler), SCHEDULERS[name](topt, torch.optim.lr_scheduler)
    lrs, tlrs, moms, tmoms = [], [], [], []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        tlrs.append(topt.param_groups[0]["lr"])
        moms.append(opt.param_groups[0]["momentum"])
        tmoms.append(topt.param_groups[0]["momentum"])
        opt.step()
        topt.step()
        ours.step()
        theirs.step()
    np.testing.assert_allclose(lrs, tlrs, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(moms, tmoms, rtol=1e-12)
    assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr())


# --- agreement with PyTorch -------------------------------------------------------------------------
def both(a):
    return md.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)


def agree(y, ty, leaves, seed=0):
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-9, atol=1e-12)
    u = np.random.default_rng(seed).standard_normal(y.shape)
    y.backward(u)
    ty.backward(torch.tensor(u))
    for ours, theirs in leaves:
        np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-9, atol=1e-12)


@needs_torch
@examples(10)
@given(seed=seeds, p=st.sampled_from([1, 2, 3, math.inf]))
def test_tensor_methods_agree_with_torch(seed, p):
    a = rand(seed, (3, 4))
    x, tx = both(a)
    agree(x.norm(p, dim=1), tx.norm(p, dim=1), [(x, tx)])
    x, tx = both(a)
    agree(x.max(1)[0] + x.min(0, keepdim=True)[0].sum(), tx.max(1)[0] + tx.min(0, keepdim=True)[0].sum(), [(x, tx)])
    np.testing.assert_array_equal(x.max(1)[1].numpy(), tx.max(1)[1].numpy())
    x, tx = both(a)
    m = a > 0
    agree(x.masked_fill(md.tensor(m), -1.0).clamp(-0.5, 0.7),
          tx.masked_fill(torch.tensor(m), -1.0).clamp(-0.5, 0.7), [(x, tx)])
    x, tx = both(a)
    idx = np.random.default_rng(seed).integers(0, 4, (3, 2))
    agree(x.gather(1, md.tensor(idx)), tx.gather(1, torch.tensor(idx)), [(x, tx)])
    x, tx = both(a[:, :1])
    agree(x.expand(3, 5).unsqueeze(0).permute(2, 0, 1), tx.expand(3, 5).unsqueeze(0).permute(2, 0, 1), [(x, tx)])


@needs_torch
@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")  # torch's notice about kl_div's "mean"
@examples(10)
@given(seed=seeds, smoothing=st.sampled_from([0.0, 0.2]), reduction=st.sampled_from(["mean", "sum", "none"]))
def test_losses_agree_with_torch(seed, smoothing, reduction):
    rng = np.random.default_rng(seed)
    z_np, y = rng.standard_normal((4, 3)), rng.integers(0, 3, 4)
    z, tz = both(z_np)
    agree(F.cross_entropy(z, y, reduction=reduction, label_smoothing=smoothing),
          TF.cross_entropy(tz, torch.tensor(y), reduction=reduction, label_smoothing=smoothing), [(z, tz)])
    z, tz = both(z_np)
    w = rng.random(3) + 0.5
    y[0] = -100
    agree(F.nll_loss(F.log_softmax(z, dim=1), y, weight=md.tensor(w), reduction=reduction),
          TF.nll_loss(TF.log_softmax(tz, dim=1), torch.tensor(y), weight=torch.tensor(w), reduction=reduction),
          [(z, tz)])
    z, tz = both(z_np)
    t, tt = both(rng.random((4, 3)))
    agree(F.binary_cross_entropy_with_logits(z, t, reduction=reduction),
          TF.binary_cross_entropy_with_logits(tz, tt, reduction=reduction), [(z, tz), (t, tt)])
    p, tp = both(rng.random((4, 3)) * 0.9 + 0.05)
    t, tt = both(rng.random((4, 3)))
    agree(F.binary_cross_entropy(p, t, reduction=reduction), TF.binary_cross_entropy(tp, tt, reduction=reduction),
          [(p, tp), (t, tt)])
    z, tz = both(z_np)
    q = rng.dirichlet(np.ones(3), size=4)
    q[0, 0] = 0.0
    for red in ("batchmean", "sum", "mean"):
        z.grad = None
        tz.grad = None
        agree(F.kl_div(F.log_softmax(z, dim=1), md.tensor(q), reduction=red),
              TF.kl_div(TF.log_softmax(tz, dim=1), torch.tensor(q), reduction=red), [(z, tz)])
    x, tx = both(rng.standard_normal((2, 3, 4)))
    agree(F.pad(x, (1, 2, 0, 1), value=0.5), TF.pad(tx, (1, 2, 0, 1), value=0.5), [(x, tx)])
    x, tx = both(rng.standard_normal((2, 3)))
    agree(F.leaky_relu(x, 0.2), TF.leaky_relu(tx, 0.2), [(x, tx)])


@needs_torch
def test_batchnorm1d_agrees_with_torch():
    rng = np.random.default_rng(0)
    ours, theirs = nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3).double()
    ours.weight.array = rng.random(3) + 0.5
    ours.bias.array = rng.standard_normal(3)
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    ours.weight.array, ours.bias.array = ours.weight.array.astype(np.float64), ours.bias.array.astype(np.float64)
    x, tx = both(rng.standard_normal((5, 3)))
    agree(ours(x), theirs(tx), [(x, tx)])
    np.testing.assert_allclose(ours.state_dict()["running_var"], theirs.running_var.numpy(), rtol=1e-6)
    assert ours.state_dict()["num_batches_tracked"] == theirs.num_batches_tracked.item() == 1


def test_example_09_runs_on_synthetic_data(capsys):
    """examples/09_from_pytorch.py (the PyTorch MNIST script with renamed imports), tiny and synthetic."""
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "09_from_pytorch.py"
    spec = importlib.util.spec_from_file_location("example_09", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    accuracy = example.main(["--synthetic", "24", "--epochs", "2", "--batch-size", "8", "--log-interval", "1"])
    out = capsys.readouterr().out
    assert 0.0 <= accuracy <= 1.0 and "Train Epoch: 2 [16/24" in out and "Test set: Average loss" in out
