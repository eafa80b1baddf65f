"""Forward values and gradients agree with PyTorch (float64, CPU) on random configurations.

Skipped when torch is not installed (it is the ``bench`` extra, not a test dependency).
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minidl as md
import minidl.functional as F
from minidl.tensor import Tensor
from minidl.testing.strategies import conv_configs, pool_configs

from conftest import examples

torch = pytest.importorskip("torch")
TF = torch.nn.functional

RTOL, ATOL = 1e-9, 1e-10


def pair(rng, shape, scale=1.0):
    """The same float64 values as a minidl leaf and a torch leaf."""
    a = rng.standard_normal(shape) * scale
    return Tensor(a.copy(), requires_grad=True), torch.tensor(a, dtype=torch.float64, requires_grad=True)


def close(ours, theirs, rtol=RTOL, atol=ATOL):
    ours = ours.numpy() if isinstance(ours, Tensor) else np.asarray(ours)
    np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=rtol, atol=atol)


def backward_both(y, ty, rng):
    u = rng.standard_normal(y.shape)
    y.backward(u)
    ty.backward(torch.tensor(u))


@examples(30)
@given(cfg=conv_configs(max_batch=3, max_channels=4, max_filters=4, max_kernel=5, max_padding=3, max_size=9),
       bias=st.booleans(), seed=st.integers(0, 2 ** 31))
def test_conv2d(cfg, bias, seed):
    rng = np.random.default_rng(seed)
    x, tx = pair(rng, cfg["x_shape"])
    w, tw = pair(rng, cfg["w_shape"])
    b, tb = pair(rng, (cfg["w_shape"][0],)) if bias else (None, None)
    y = F.conv2d(x, w, b, stride=cfg["stride"], padding=cfg["padding"])
    ty = TF.conv2d(tx, tw, tb, stride=cfg["stride"], padding=cfg["padding"])
    close(y, ty)
    backward_both(y, ty, rng)
    close(x.grad, tx.grad)
    close(w.grad, tw.grad)
    if bias:
        close(b.grad, tb.grad)


@examples(30)
@given(cfg=pool_configs(max_kernel=4, max_size=9), seed=st.integers(0, 2 ** 31))
def test_max_pool2d(cfg, seed):
    rng = np.random.default_rng(seed)
    x, tx = pair(rng, cfg["x_shape"])  # continuous values: ties have probability 0
    y = F.max_pool2d(x, cfg["kernel"], cfg["stride"], cfg["padding"])
    ty = TF.max_pool2d(tx, cfg["kernel"], cfg["stride"], cfg["padding"])
    close(y, ty)
    backward_both(y, ty, rng)
    close(x.grad, tx.grad)


@examples(30)
@given(cfg=pool_configs(max_kernel=4, max_size=9), seed=st.integers(0, 2 ** 31))
def test_avg_pool2d(cfg, seed):
    rng = np.random.default_rng(seed)
    x, tx = pair(rng, cfg["x_shape"])
    y = F.avg_pool2d(x, cfg["kernel"], cfg["stride"], cfg["padding"])
    ty = TF.avg_pool2d(tx, cfg["kernel"], cfg["stride"], cfg["padding"])  # count_include_pad=True
    close(y, ty)
    backward_both(y, ty, rng)
    close(x.grad, tx.grad)


@examples(25)
@given(n=st.integers(1, 6), fin=st.integers(1, 6), fout=st.integers(1, 6), lead=st.sampled_from([(), (3,)]),
       seed=st.integers(0, 2 ** 31))
def test_linear(n, fin, fout, lead, seed):
    rng = np.random.default_rng(seed)
    x, tx = pair(rng, lead + (n, fin))
    w, tw = pair(rng, (fout, fin))
    b, tb = pair(rng, (fout,))
    y, ty = F.linear(x, w, b), TF.linear(tx, tw, tb)
    close(y, ty)
    backward_both(y, ty, rng)
    for ours, theirs in ((x, tx), (w, tw), (b, tb)):
        close(ours.grad, theirs.grad)


@examples(25)
@given(n=st.integers(1, 6), c=st.integers(1, 6), reduction=st.sampled_from(["mean", "sum", "none"]),
       scale=st.sampled_from([1.0, 10.0, 100.0]), seed=st.integers(0, 2 ** 31))
def test_cross_entropy(n, c, reduction, scale, seed):
    rng = np.random.default_rng(seed)
    z, tz = pair(rng, (n, c), scale)
    t = rng.integers(0, c, n)
    y = F.cross_entropy(z, t, reduction=reduction)
    ty = TF.cross_entropy(tz, torch.tensor(t), reduction=reduction)
    close(y, ty, atol=1e-9)
    backward_both(y, ty, rng)
    close(z.grad, tz.grad)


@examples(25)
@given(shape=st.sampled_from([(4, 3), (2, 3, 4, 5), (5, 2, 1, 3), (3, 1, 2, 2)]),
       momentum=st.sampled_from([0.1, 0.5]), seed=st.integers(0, 2 ** 31))
def test_batch_norm_training(shape, momentum, seed):
    rng = np.random.default_rng(seed)
    c = shape[1]
    x, tx = pair(rng, shape, 2.0)
    g, tg = pair(rng, (c,))
    b, tb = pair(rng, (c,))
    rm, rv = rng.standard_normal(c), rng.uniform(0.5, 2.0, c)
    trm, trv = torch.tensor(rm), torch.tensor(rv)
    y = F.batch_norm(x, rm, rv, g, b, training=True, momentum=momentum, eps=1e-5)
    ty = TF.batch_norm(tx, trm, trv, tg, tb, training=True, momentum=momentum, eps=1e-5)
    close(y, ty, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(rm, trm.numpy(), rtol=1e-9)  # running statistics updated alike
    np.testing.assert_allclose(rv, trv.numpy(), rtol=1e-9)
    backward_both(y, ty, rng)
    for ours, theirs in ((x, tx), (g, tg), (b, tb)):
        close(ours.grad, theirs.grad, rtol=1e-7, atol=1e-8)
    # and evaluation with the updated running statistics
    y2 = F.batch_norm(Tensor(x.numpy()), rm, rv, g, b, training=False)
    ty2 = TF.batch_norm(tx.detach(), trm, trv, tg, tb, training=False)
    close(y2, ty2, rtol=1e-8, atol=1e-9)


def _run_optimizers(make_ours, make_theirs, seed, steps=5, shapes=((3, 2), (4,))):
    """The same parameters and the same gradient sequence through both optimizers."""
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s) for s in shapes]
    ours = [md.nn.Parameter(a.copy()) for a in init]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    opt, topt = make_ours(ours), make_theirs(theirs)
    for _ in range(steps):
        for p, tp in zip(ours, theirs):
            g = rng.standard_normal(p.shape)
            p.grad = Tensor(g.copy())
            tp.grad = torch.tensor(g)
        opt.step()
        topt.step()
        for p, tp in zip(ours, theirs):
            np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=1e-10, atol=1e-12)


@examples(15)
@given(lr=st.floats(1e-3, 0.5), momentum=st.floats(0.0, 0.95), nesterov=st.booleans(),
       wd=st.sampled_from([0.0, 1e-4, 0.1]), seed=st.integers(0, 2 ** 31))
def test_sgd_steps(lr, momentum, nesterov, wd, seed):
    nesterov = nesterov and momentum > 0
    _run_optimizers(lambda ps: md.optim.SGD(ps, lr, momentum=momentum, nesterov=nesterov, weight_decay=wd),
                    lambda ps: torch.optim.SGD(ps, lr, momentum=momentum, nesterov=nesterov, weight_decay=wd),
                    seed)


@examples(15)
@given(lr=st.floats(1e-4, 0.1), b1=st.sampled_from([0.0, 0.5, 0.9]), b2=st.sampled_from([0.9, 0.999]),
       eps=st.sampled_from([1e-8, 1e-3]), wd=st.sampled_from([0.0, 0.01]), seed=st.integers(0, 2 ** 31))
def test_adam_steps(lr, b1, b2, eps, wd, seed):
    _run_optimizers(lambda ps: md.optim.Adam(ps, lr, betas=(b1, b2), eps=eps, weight_decay=wd),
                    lambda ps: torch.optim.Adam(ps, lr, betas=(b1, b2), eps=eps, weight_decay=wd),
                    seed)
