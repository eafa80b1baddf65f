"""Higher-order gradients (issue 30): ``autograd.grad`` and ``backward(create_graph=True)``
with PyTorch's semantics, and the second derivative of every differentiable op against finite
differences of its first derivative (``minidl.testing.gradgradcheck``, float64) on shapes,
parameters and values drawn by hypothesis. Ops with kinks (relu, abs, clip, max, maximum,
max-pooling, p-norms) get values drawn away from them, as in ``test_gradients.py``; their
second derivative is zero almost everywhere, and what is checked there is that the gradient
still flows through ``grad_output`` and the factors that do depend on x. Where torch is
installed, Hessian-vector products of a small CNN's loss are compared with PyTorch's double
backward in float64.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minidl as md
import minidl.functional as F
from minidl import autograd
from minidl.ops import activation
from minidl.tensor import Tensor
from minidl.testing import GradcheckError, gradgradcheck, hessian, hvp
from minidl.testing.strategies import (advanced_indices, basic_indices, broadcastable_shapes, conv_configs,
                                       pool_configs, shapes, tensors, valid_axes)

from conftest import examples, on

FAST = examples(12)
SLOW = examples(6)


def check2(device, fn, *inputs, **kw):
    moved = [on(device, x) if isinstance(x, Tensor) else x for x in inputs]
    assert gradgradcheck(fn, *moved, **kw) is True


def leaf(a):
    return md.tensor(np.asarray(a, dtype=np.float64), requires_grad=True)


# --- the API ---------------------------------------------------------------------------------------
def test_grad_returns_gradients_without_touching_dot_grad():
    x, w = leaf([1.0, 2.0]), leaf([3.0, -1.0])
    y = (x * w).sum()
    gx, gw = autograd.grad(y, [x, w])
    np.testing.assert_array_equal(gx.numpy(), [3.0, -1.0])
    np.testing.assert_array_equal(gw.numpy(), [1.0, 2.0])
    assert x.grad is None and w.grad is None
    assert not gx.requires_grad  # no graph without create_graph


def test_third_derivative_of_a_power():
    x = leaf([0.5, -2.0])
    g1, = autograd.grad((x ** 4).sum(), x, create_graph=True)
    g2, = autograd.grad(g1.sum(), x, create_graph=True)
    g3, = autograd.grad(g2.sum(), x)
    np.testing.assert_allclose(g1.numpy(), 4 * x.numpy() ** 3)
    np.testing.assert_allclose(g2.numpy(), 12 * x.numpy() ** 2)
    np.testing.assert_allclose(g3.numpy(), 24 * x.numpy())


def test_backward_create_graph_accumulates_a_differentiable_grad():
    x = leaf([1.5, -0.5])
    (x ** 3).sum().backward(create_graph=True)
    assert x.grad.requires_grad
    gg, = autograd.grad(x.grad.sum(), x)
    np.testing.assert_allclose(gg.numpy(), 6 * x.numpy())


def test_backward_takes_gradient_by_keyword_and_position():
    for call in (lambda y, g: y.backward(g), lambda y, g: y.backward(gradient=g, retain_graph=True)):
        x = leaf([1.0, 2.0])
        call(x * 3, md.tensor(np.array([1.0, -1.0])))
        np.testing.assert_array_equal(x.grad.numpy(), [3.0, -3.0])


def test_grad_of_a_non_leaf_input_and_several_outputs():
    x = leaf([1.0, 2.0, 3.0])
    h = x * x
    a, b = h.sum(), (h * 2).sum()
    gh, gx = autograd.grad([a, b], [h, x])
    np.testing.assert_array_equal(gh.numpy(), [3.0, 3.0, 3.0])
    np.testing.assert_array_equal(gx.numpy(), 6 * x.numpy())


def test_grad_outputs_weight_the_outputs():
    x = leaf([1.0, 2.0])
    g, = autograd.grad(x * x, x, grad_outputs=md.tensor(np.array([1.0, 10.0])))
    np.testing.assert_array_equal(g.numpy(), [2.0, 40.0])


def test_grad_runs_only_the_part_of_the_graph_it_needs():
    """grad(loss, x) asks no Function for its weights' gradients (PyTorch prunes the same way),
    and leaves every Function's needs_grad as it was."""
    seen = []
    original = md.ops.matmul.Linear.backward

    def spy(self, g):
        seen.append(self.needs_grad)
        return original(self, g)
    md.ops.matmul.Linear.backward = spy
    try:
        x = leaf(np.ones((2, 3)))
        lin = md.nn.Linear(3, 2)
        out = lin(x).sum()
        autograd.grad(out, x)
        assert seen == [(True, False, False)]
        assert out._ctx.parents  # the graph is still whole: backward still gets weight gradients
        out.backward()
        assert seen[-1] == (True, True, True) and lin.weight.grad is not None
    finally:
        md.ops.matmul.Linear.backward = original


def test_grad_errors_are_clear():
    x, unused, const = leaf([1.0]), leaf([2.0]), md.tensor(np.array([1.0]))
    y = (x * 2).sum()
    with pytest.raises(RuntimeError, match=r"inputs\[1\].*not used in the graph.*allow_unused=True"):
        autograd.grad(y, [x, unused])
    gx, gu = autograd.grad(y, [x, unused], allow_unused=True)
    assert gu is None and gx.numpy()[0] == 2.0
    with pytest.raises(RuntimeError, match=r"inputs\[0\].*does not require grad"):
        autograd.grad(y, [const])
    with pytest.raises(RuntimeError, match=r"outputs\[0\] does not require grad"):
        autograd.grad(const * 2, [x])
    with pytest.raises(RuntimeError, match="one-element output"):
        autograd.grad(x * md.tensor(np.ones(3)), [x])
    with pytest.raises(ValueError, match=r"grad_outputs\[0\] has shape \(2,\), expected \(\)"):
        autograd.grad(y, x, grad_outputs=np.ones(2))
    with pytest.raises(TypeError, match="inputs must be a Tensor"):
        autograd.grad(y, [np.ones(1)])


def test_an_op_without_backward_graph_says_so():
    class Square(autograd.Function):
        def forward(self, x):
            self.x = x
            return x * x

        def backward(self, g):
            return (2 * g * self.x,)
    x = leaf([3.0])
    y = Square.apply(x).sum()
    assert autograd.grad(y, x)[0].numpy()[0] == 6.0
    with pytest.raises(RuntimeError, match="Square has no differentiable backward"):
        autograd.grad(y, x, create_graph=True)


def test_in_place_change_is_caught_in_the_second_order_pass_too():
    x = leaf([1.0, 2.0])
    a = x * 1
    with md.no_grad():
        b = Tensor(a.array)
    y = (a * a).sum()
    b.add_(1.0)  # changes a's memory: the saved input of a * a
    with pytest.raises(RuntimeError, match="changed by an in-place operation"):
        autograd.grad(y, x, create_graph=True)


def test_hvp_and_hessian_of_a_quadratic():
    A = np.array([[2.0, 1.0], [1.0, 3.0]])
    f = lambda x: 0.5 * (x * md.tensor(A) @ x).sum() if False else 0.5 * (x @ (md.tensor(A) @ x))  # noqa: E731
    x = md.tensor(np.array([0.3, -0.7]))
    value, hv = hvp(f, x, np.array([1.0, 2.0]))
    np.testing.assert_allclose(hv.numpy(), A @ [1.0, 2.0])
    np.testing.assert_allclose(value.item(), 0.5 * x.numpy() @ A @ x.numpy())
    np.testing.assert_allclose(hessian(f, x).numpy(), A)
    (haa, hab), (hba, hbb) = hessian(lambda a, b: (a * b).sum() ** 2, (md.tensor(np.array([1.0, 2.0])),
                                                                         md.tensor(np.array([3.0, 4.0]))))
    np.testing.assert_allclose(hab.numpy(), 2 * np.outer([3.0, 4.0], [1.0, 2.0]) + 2 * 11 * np.eye(2))
    with pytest.raises(ValueError, match="max_entries"):
        hessian(lambda x: x.sum(), md.tensor(np.zeros(10)), max_entries=5)


def test_gradgradcheck_catches_a_wrong_second_derivative(monkeypatch):
    """A tanh whose differentiable backward treats y as a constant (right first derivative,
    wrong second): gradgradcheck must fail, and only on the second derivative."""
    monkeypatch.setattr(activation.Tanh, "backward_graph", lambda self, g: (g * (1 - self.y * self.y),))
    x = leaf(np.array([[0.3, -1.1], [0.8, 2.0]]))
    with pytest.raises(GradcheckError, match="second derivative with respect to input 0"):
        gradgradcheck(F.tanh, x)


def test_gradgradcheck_catches_a_backward_graph_that_ignores_grad_output(monkeypatch):
    """A sigmoid whose differentiable backward uses a constant upstream gradient."""
    def wrong(self, g):
        y = self.output_tensor(self.y)
        return (Tensor(g.array) * y * (1 - y),)
    monkeypatch.setattr(activation.Sigmoid, "backward_graph", wrong)
    with pytest.raises(GradcheckError, match="cotangent"):
        gradgradcheck(F.sigmoid, leaf(np.array([0.3, -1.1, 0.8])))


# --- every op's second derivative ------------------------------------------------------------------
BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "maximum": lambda a, b: a.maximum(b) * a,
    "minimum": lambda a, b: a.minimum(b) * b,
}


@pytest.mark.parametrize("op", sorted(BINARY))
@FAST
@given(data=st.data(), shapes_=broadcastable_shapes(2, max_dims=3, max_side=3))
def test_binary(device, op, data, shapes_):
    away = dict(away_from=0.0, margin=0.3) if op == "div" else {}
    a = data.draw(tensors(shape=shapes_[0], distinct=op in ("maximum", "minimum"), **away))
    b = data.draw(tensors(shape=shapes_[1], min_value=0.5 if op == "div" else -3.0, **away))
    if op in ("maximum", "minimum"):
        b = leaf(b.numpy() + 0.013)  # no ties with a
    check2(device, BINARY[op], a, b)


@FAST
@given(data=st.data(), shape=shapes(max_dims=3, max_side=3), p=st.sampled_from([2, 3, 0.5, -1.5]))
def test_unary_arithmetic(device, data, shape, p):
    x = data.draw(tensors(shape=shape, min_value=0.3, max_value=3.0))
    check2(device, lambda t: -(t ** p), x)
    check2(device, lambda t: t.exp() * t, x)
    check2(device, lambda t: t.log() * t, x)
    check2(device, lambda t: t.sqrt() * t, x)
    y = data.draw(tensors(shape=shape, away_from=[0.0, -1.0, 1.0], margin=0.05))
    check2(device, lambda t: t.abs() * t, y)
    check2(device, lambda t: t.clamp(-1.0, 1.0) * t, y)


@FAST
@given(data=st.data(), shape=shapes(max_dims=3, max_side=3))
def test_activations(device, data, shape):
    x = data.draw(tensors(shape=shape, away_from=0.0, margin=0.05))
    check2(device, lambda t: F.relu(t) * t, x)
    check2(device, F.sigmoid, x)
    check2(device, F.tanh, x)
    check2(device, lambda t: F.leaky_relu(t, 0.1) * t, x)
    axis = data.draw(valid_axes(len(shape), allow_none=False, allow_tuple=False))
    check2(device, lambda t: F.softmax(t, axis=axis), x)
    check2(device, lambda t: F.log_softmax(t, axis=axis), x)


@FAST
@given(data=st.data(), shape=shapes(max_dims=3, max_side=3), keepdims=st.booleans())
def test_reductions(device, data, shape, keepdims):
    axis = data.draw(valid_axes(len(shape)))
    x = data.draw(tensors(shape=shape, distinct=True, margin=0.05))
    check2(device, lambda t: (t * t).sum(axis=axis, keepdims=keepdims), x)
    check2(device, lambda t: (t * t).mean(axis=axis, keepdims=keepdims), x)
    check2(device, lambda t: t.exp().max(axis=axis, keepdims=keepdims) ** 2, x)
    y = data.draw(tensors(shape=shape, away_from=0.0, margin=0.3))
    for p in (1, 2, 3):
        check2(device, lambda t: t.norm(p=p, axis=axis, keepdims=keepdims) * t.sum(), y)
    positive = data.draw(tensors(shape=shape, min_value=0.3, distinct=True, margin=0.05))  # no ties of |x|
    check2(device, lambda t: t.norm(p=float("inf"), axis=axis, keepdims=keepdims) * t.sum(), positive)


@FAST
@given(data=st.data(), shape=shapes(min_dims=2, max_dims=3, max_side=3))
def test_shape_ops(device, data, shape):
    x = data.draw(tensors(shape=shape))
    check2(device, lambda t: (t * t).reshape(-1), x)
    check2(device, lambda t: (t * t).transpose(), x)
    check2(device, lambda t: (t * t).expand((2,) + shape), x)
    check2(device, lambda t: md.concatenate([t * t, t], axis=-1), x)
    check2(device, lambda t: md.stack([t * t, t], axis=1), x)
    check2(device, lambda t: F.pad(t * t, (1, 2)), x)
    index = data.draw(basic_indices(shape))
    check2(device, lambda t: (t * t)[index], x)
    fancy = data.draw(advanced_indices(shape, repeats=True))
    check2(device, lambda t: (t * t)[fancy], x)
    idx = md.tensor(np.random.default_rng(0).integers(0, shape[1], shape))
    check2(device, lambda t: (t * t).gather(1, idx), x)
    cond = np.random.default_rng(1).random(shape) > 0.5
    check2(device, lambda t: md.where(cond, t * t, t), x)


@FAST
@given(data=st.data(), n=st.integers(1, 3), k=st.integers(1, 3), m=st.integers(1, 3),
       kind=st.sampled_from(["2d", "vec-left", "vec-right", "batched"]))
def test_matmul_and_linear(device, data, n, k, m, kind):
    sa = {"2d": (n, k), "vec-left": (k,), "vec-right": (n, k), "batched": (2, n, k)}[kind]
    sb = {"2d": (k, m), "vec-left": (k, m), "vec-right": (k,), "batched": (k, m)}[kind]
    a, b = data.draw(tensors(shape=sa)), data.draw(tensors(shape=sb))
    check2(device, lambda u, v: (u @ v) * (u @ v), a, b)
    x, w, bias = data.draw(tensors(shape=(n, k))), data.draw(tensors(shape=(m, k))), data.draw(tensors(shape=(m,)))
    check2(device, lambda u, v, c: F.linear(u, v, c).tanh(), x, w, bias)


@SLOW
@given(data=st.data(), cfg=conv_configs(max_batch=2, max_channels=2, max_filters=2, max_kernel=3, max_size=5),
       bias=st.booleans())
def test_conv2d(device, data, cfg, bias):
    x, w = data.draw(tensors(shape=cfg["x_shape"])), data.draw(tensors(shape=cfg["w_shape"]))
    b = data.draw(tensors(shape=cfg["w_shape"][:1])) if bias else None
    conv = lambda u, v, c=None: F.conv2d(u, v, c, stride=cfg["stride"], padding=cfg["padding"])  # noqa: E731
    check2(device, lambda u, v, *c: conv(u, v, *c).tanh(), x, w, *([b] if bias else []))


@SLOW
@given(data=st.data(), cfg=conv_configs(max_batch=2, max_channels=2, max_filters=2, max_kernel=3, max_size=5))
def test_conv2d_transpose_and_weight_as_ops(device, data, cfg):
    """The two Functions conv2d's backward_graph is made of, to third order (their own
    backward_graph), each on its own inputs."""
    from minidl.ops.conv import Conv2dTranspose, Conv2dWeight
    g, x = data.draw(tensors(shape=cfg["out_shape"])), data.draw(tensors(shape=cfg["x_shape"]))
    w = data.draw(tensors(shape=cfg["w_shape"]))
    conv = dict(stride=cfg["stride"], padding=cfg["padding"])
    check2(device, lambda a, v: Conv2dTranspose.apply(a, v, x_hw=cfg["x_shape"][2:], **conv).tanh(), g, w)
    check2(device, lambda u, a: Conv2dWeight.apply(u, a, kernel=cfg["kernel"], **conv).tanh(), x, g)


@SLOW
@given(data=st.data(), cfg=pool_configs(max_size=5))
def test_pooling(device, data, cfg):
    x = data.draw(tensors(shape=cfg["x_shape"], distinct=True, margin=0.02, min_value=-4, max_value=4))
    pool = dict(kernel_size=cfg["kernel"], stride=cfg["stride"], padding=cfg["padding"])
    # exp keeps each window's maximum where it is; the square makes the second derivative non-zero
    check2(device, lambda t: F.max_pool2d(t.exp(), **pool) ** 2, x)
    check2(device, lambda t: F.avg_pool2d(t.exp(), **pool) ** 2, x)


@FAST
@given(n=st.integers(2, 4), c=st.integers(1, 3), data=st.data())
def test_losses(device, n, c, data):
    z = data.draw(tensors(shape=(n, c)))
    rng = np.random.default_rng(n * 10 + c)
    t = rng.integers(0, c, n)
    for reduction in ("mean", "sum", "none"):
        check2(device, lambda u: F.cross_entropy(u, t, reduction=reduction), z)
        check2(device, lambda u, v: F.mse_loss(u, v, reduction=reduction), z, data.draw(tensors(shape=(n, c))))
    check2(device, lambda u: F.cross_entropy(u, t, label_smoothing=0.2), z)
    check2(device, lambda u: F.nll_loss(F.log_softmax(u, dim=1), t), z)
    target = md.tensor(rng.random((n, c)))
    check2(device, lambda u, y: F.binary_cross_entropy_with_logits(u, y), z, leaf(rng.random((n, c))))
    check2(device, lambda u: F.binary_cross_entropy(u.sigmoid(), on(device, target)), z)
    check2(device, lambda u: F.kl_div(F.log_softmax(u, dim=1), on(device, target), reduction="batchmean"), z)


@pytest.mark.parametrize("training", [True, False])
@FAST
@given(seed=st.integers(0, 2 ** 16), shape=st.sampled_from([(4, 3), (2, 3, 2, 2), (3, 2, 1, 3)]))
def test_batch_norm(device, training, seed, shape):
    rng = np.random.default_rng(seed)
    c = shape[1]
    x, gamma, beta = leaf(rng.standard_normal(shape)), leaf(rng.standard_normal(c)), leaf(rng.standard_normal(c))
    rm, rv = rng.standard_normal(c), rng.uniform(0.5, 2.0, c)

    def f(u, g, b):
        running = on(device, rm).array, on(device, rv).array
        return F.batch_norm(u, *running, g, b, training=training).tanh()
    check2(device, f, x, gamma, beta)


@FAST
@given(x=tensors(shape=(3, 4)), seed=st.integers(0, 1000))
def test_dropout_and_casts(device, x, seed):
    def f(t):
        md.manual_seed(seed)  # the same mask on every call
        return F.dropout(t * t, 0.4, training=True)
    check2(device, f, x)
    check2(device, lambda t: (t.float() * t.float()).double(), x, eps=1e-2, atol=1e-3, rtol=1e-3)


# --- against PyTorch --------------------------------------------------------------------------------
def test_small_cnn_hessian_vector_products_match_pytorch():
    """A conv/relu/max-pool/batch-norm/avg-pool/dense net's cross-entropy: Hessian-vector
    products with respect to the input and to every weight, against torch's double backward."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    shapes_ = dict(w1=(4, 2, 3, 3), b1=(4,), w2=(3, 4, 3, 3), g=(3,), be=(3,), w3=(5, 3), b3=(5,))
    params = {k: rng.standard_normal(s) * 0.5 for k, s in shapes_.items()}
    x0, y = rng.standard_normal((3, 2, 8, 8)), np.array([0, 4, 2])

    def net(lib, x, p):
        if lib is torch:
            import torch.nn.functional as TF
            h = TF.conv2d(x, p["w1"], p["b1"], stride=1, padding=1)
            h = TF.max_pool2d(TF.relu(h), 2)
            h = TF.conv2d(h, p["w2"], None, stride=2, padding=1).tanh()
            h = TF.batch_norm(h, None, None, p["g"], p["be"], training=True)
            h = TF.avg_pool2d(h, 2).flatten(1)
            return TF.cross_entropy(TF.linear(h, p["w3"], p["b3"]), torch.tensor(y))
        h = F.conv2d(x, p["w1"], p["b1"], stride=1, padding=1)
        h = F.max_pool2d(F.relu(h), 2)
        h = F.conv2d(h, p["w2"], None, stride=2, padding=1).tanh()
        h = F.batch_norm(h, None, None, p["g"], p["be"], training=True)
        h = F.avg_pool2d(h, 2).flatten(1)
        return F.cross_entropy(F.linear(h, p["w3"], p["b3"]), y)

    v_all = {k: rng.standard_normal(s) for k, s in shapes_.items()}
    vx_all = rng.standard_normal(x0.shape)
    # H v for v along the input only, along the weights only, and along both
    for case, vx, v in (("input", vx_all, {k: 0 * a for k, a in v_all.items()}),
                        ("weights", 0 * vx_all, v_all), ("both", vx_all, v_all)):
        x = leaf(x0)
        p = {k: leaf(a) for k, a in params.items()}
        names = list(p)
        gs = autograd.grad(net(md, x, p), [x] + [p[k] for k in names], create_graph=True)
        s = (gs[0] * md.tensor(vx)).sum()
        for k, g in zip(names, gs[1:]):
            s = s + (g * md.tensor(v[k])).sum()
        ours = autograd.grad(s, [x] + [p[k] for k in names])
        xt = torch.tensor(x0, requires_grad=True)
        pt = {k: torch.tensor(a, requires_grad=True) for k, a in params.items()}
        gts = torch.autograd.grad(net(torch, xt, pt), [xt] + [pt[k] for k in names], create_graph=True)
        st_ = (gts[0] * torch.tensor(vx)).sum() + sum((g * torch.tensor(v[k])).sum() for k, g in zip(names, gts[1:]))
        theirs = torch.autograd.grad(st_, [xt] + [pt[k] for k in names])
        for name, a, b in zip(["x"] + names, ours, theirs):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-8, atol=1e-10, err_msg=f"{case}: {name}")


def test_example_11_runs():
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "examples" / "11_higher_order.py"
    spec = importlib.util.spec_from_file_location("example_11", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.hessian_vector_product() < 1e-6
    assert np.all(np.isfinite(example.newton()))
    assert example.gradient_penalty() > 0


@pytest.mark.parametrize("algorithm", ["fft"])
def test_conv_second_derivatives_on_kernels_whose_cache_holds_transforms(algorithm):
    """FFT keeps transforms of x, not x: conv2d's backward_graph reads the input
    arrays Function.apply kept for it, and an in-place change of them is caught."""
    from minidl.kernels.runtime import autotune
    rng = np.random.default_rng(0)
    x0, w0 = rng.standard_normal((2, 2, 6, 6)), rng.standard_normal((3, 2, 3, 3))
    v = rng.standard_normal(x0.shape)

    def input_hvp():
        x = leaf(x0)
        h = F.relu(x) * 1.0  # x reaches the convolution as an intermediate, not a leaf
        g, = autograd.grad(F.conv2d(h, md.tensor(w0), padding=1).tanh().sum(), x, create_graph=True)
        return autograd.grad((g * md.tensor(v)).sum(), x)[0].numpy()
    want = input_hvp()
    with autotune.conv_algorithm(algorithm):
        got = input_hvp()
        x = leaf(x0)
        h = x * 1.0
        y = F.conv2d(h, md.tensor(w0), padding=1).tanh().sum()
        assert not y._ctx.parents[0].parents[0].reads_inputs or algorithm == "fft"
        with md.no_grad():
            Tensor(h.array).add_(1.0)
        with pytest.raises(RuntimeError, match="changed by an in-place operation"):
            autograd.grad(y, x, create_graph=True)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
