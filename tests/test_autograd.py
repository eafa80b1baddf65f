"""The autograd engine: accumulation, graph construction, long chains, dtypes, devices,
numerical stability and the error messages of the functional API."""
import math

import numpy as np
import pytest

import minidl as md
import minidl.functional as F
from minidl.ops import arithmetic, matmul
from minidl.tensor import Tensor

from conftest import host, leaf


# --- accumulation and graph structure ---------------------------------------------------------
def test_gradients_accumulate_until_zero_grad(device):
    x = leaf([1.0, 2.0, 3.0], device)
    for k in range(1, 4):
        (x * x).sum().backward()
        np.testing.assert_allclose(host(x.grad), k * 2 * np.array([1.0, 2.0, 3.0]))
    x.zero_grad()
    assert x.grad is None
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(host(x.grad), [3.0, 3.0, 3.0])


def test_module_and_optimizer_zero_grad():
    lin = md.nn.Linear(2, 2)
    opt = md.optim.SGD(lin.parameters(), lr=0.1)
    lin(md.ones(1, 2)).sum().backward()
    assert all(p.grad is not None for p in lin.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in lin.parameters())
    lin(md.ones(1, 2)).sum().backward()
    lin.zero_grad()
    assert all(p.grad is None for p in lin.parameters())


def test_backward_of_non_scalar_needs_grad():
    x = md.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError, match="gradient must be given"):
        y.backward()
    with pytest.raises(ValueError, match="shape"):
        y.backward(np.ones(3, dtype=np.float32))
    y.backward(np.array([1.0, 10.0], dtype=np.float32))
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 20.0])
    # a one-element non-0-d output is fine without grad
    z = md.tensor([[3.0]], requires_grad=True)
    (z * z).backward()
    np.testing.assert_allclose(z.grad.numpy(), [[6.0]])


def test_backward_without_graph_errors():
    with pytest.raises(RuntimeError, match="does not require grad"):
        md.tensor([1.0]).backward()


def test_long_chain_has_no_recursion_limit():
    x = md.tensor(1.0, dtype="float64", requires_grad=True)
    y = x
    n = 10_000
    for _ in range(n):
        y = y * 1.0001
    y.backward()
    np.testing.assert_allclose(y.item(), 1.0001 ** n, rtol=1e-9)
    np.testing.assert_allclose(x.grad.item(), 1.0001 ** n, rtol=1e-9)
    # and an additive chain, exact in float64
    z = x
    for _ in range(n):
        z = z + x
    x.zero_grad()
    z.backward()
    assert z.item() == n + 1
    assert x.grad.item() == n + 1


def test_no_grad_records_no_graph():
    x = md.tensor([1.0, 2.0], requires_grad=True)
    with md.no_grad():
        assert not md.is_grad_enabled()
        y = x * 2 + 1
        with md.enable_grad():
            w = x * 2
        assert not md.is_grad_enabled()
    assert md.is_grad_enabled()
    assert not y.requires_grad and y._ctx is None
    assert w.requires_grad and w._ctx is not None
    with pytest.raises(RuntimeError):
        y.sum().backward()

    @md.no_grad()
    def f(t):
        return t * t

    assert f(x)._ctx is None and md.is_grad_enabled()


def test_no_grad_restores_state_after_exception():
    with pytest.raises(ZeroDivisionError):
        with md.no_grad():
            1 / 0
    assert md.is_grad_enabled()


def test_detach_cuts_the_graph():
    x = md.tensor([2.0], requires_grad=True)
    y = x * x.detach()  # d/dx = x (the detached factor is a constant)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0])


def test_diamond_graph_sums_both_paths(device):
    x = leaf([1.5, -2.0], device)
    a = x * 3.0
    b = x.exp()
    y = (a * b + a).sum()  # x reaches y through a (twice) and b
    y.backward()
    xv = np.array([1.5, -2.0])
    np.testing.assert_allclose(host(x.grad), 3 * np.exp(xv) + 3 * xv * np.exp(xv) + 3)
    # x used twice by one op
    x.zero_grad()
    (x * x).sum().backward()
    np.testing.assert_allclose(host(x.grad), 2 * xv)
    x.zero_grad()
    x.maximum(x).sum().backward()  # a tie: the gradient is split, not doubled or lost
    np.testing.assert_allclose(host(x.grad), [1.0, 1.0])


def test_maximum_splits_ties_between_its_inputs():
    a = md.tensor([1.0, 2.0, 5.0], requires_grad=True)
    b = md.tensor([1.0, 3.0, 4.0], requires_grad=True)
    a.maximum(b).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [0.5, 0.0, 1.0])
    np.testing.assert_allclose(b.grad.numpy(), [0.5, 1.0, 0.0])


def test_intermediate_used_by_many_consumers():
    x = md.tensor([1.0], dtype="float64", requires_grad=True)
    h = x * 2.0
    total = h
    for _ in range(50):
        total = total + h * h
    total.backward()
    # total = 2x + 50 * 4x^2 -> 2 + 400 x
    np.testing.assert_allclose(x.grad.numpy(), [402.0])


# --- dtypes -------------------------------------------------------------------------------------
def test_each_function_runs_backward_once_however_many_consumers():
    # the graph's nodes are Functions: the gradients of all consumers are summed before the
    # producer's backward runs, once
    calls = []

    class Double(md.autograd.Function):
        reads_inputs = False

        def forward(self, x):
            return 2 * x

        def backward(self, g):
            calls.append(g.copy())
            return (2 * g,)
    x = md.tensor([1.0, -2.0], requires_grad=True)
    h = Double.apply(x)
    (h * 3 + F.relu(h) + h.sum()).sum().backward()
    assert len(calls) == 1
    np.testing.assert_allclose(calls[0], [3 + 1 + 2, 3 + 0 + 2])
    np.testing.assert_allclose(x.grad.numpy(), [12.0, 10.0])


def test_an_input_no_backward_reads_is_freed_after_the_forward_pass():
    # ReLU keeps its output, not its input: the pre-activation (1 MiB here) is not held by
    # the graph, as in PyTorch, while the input of a product (read by its backward) is
    import gc
    import weakref
    w = md.tensor(np.random.default_rng(0).standard_normal((512, 512)).astype(np.float32), requires_grad=True)
    h = w * 2.0
    freed = weakref.ref(h.array)
    y = F.relu(h)
    h2 = w * 3.0
    kept = weakref.ref(h2.array)
    z = h2 * h2
    del h, h2
    gc.collect()
    assert freed() is None and kept() is not None
    (y.sum() + z.sum()).backward()
    np.testing.assert_allclose(w.grad.numpy(), 2.0 * (w.numpy() > 0) + 18.0 * w.numpy(), rtol=1e-6)


def test_in_place_change_of_a_saved_output_is_refused_and_of_an_unread_input_is_not():
    x = md.tensor([1.0, -2.0, 3.0], requires_grad=True)
    h = x * 1.0
    y = F.relu(h)
    with md.no_grad():
        h.add_(-10.0)  # ReLU's backward does not read its input: still correct
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 0.0, 1.0])
    for op in (F.relu, F.sigmoid, F.tanh, md.exp):
        y = op(x * 1.0)
        with md.no_grad():
            y.mul_(0.0)  # ReLU's gradient is read from its output: refused
        with pytest.raises(RuntimeError, match=r"backward: the output of \w+ \(shape \(3,\)\) was changed by an "
                                               "in-place operation"):
            y.sum().backward()
    # max and norm keep their result (the output is a reshaped view of it): refused too, even
    # where the consumer (a mean, an add) reads nothing itself
    m = md.tensor([[3.0, 4.0], [1.0, 0.0]], requires_grad=True)
    for make in (lambda: m.norm(dim=1), lambda: m.max(axis=0)):
        y = make()
        loss = (y + 1.0).mean()
        with md.no_grad():
            y.mul_(0.0)
        with pytest.raises(RuntimeError, match=r"backward: the output of (Norm|Max) \(shape \(2,\)\) was changed"):
            loss.backward()


def test_float64_is_preserved_end_to_end():
    md.manual_seed(0)
    x = md.randn(4, 3, dtype="float64", requires_grad=True)
    lin = md.nn.Linear(3, 2)
    w = Tensor(lin.weight.array.astype(np.float64), requires_grad=True)
    b = Tensor(np.zeros(2), requires_grad=True)
    h = F.relu(F.linear(x, w, b)) * 2.0 + 1.0
    loss = F.cross_entropy(F.log_softmax(h), np.array([0, 1, 1, 0])) + (h ** 2).mean() / 3
    assert h.dtype == np.float64 and loss.dtype == np.float64
    loss.backward()
    for t in (x, w, b):
        assert t.grad.dtype == np.float64


def test_cast_sends_the_gradient_back_in_the_input_dtype():
    seen = []

    class Spy(md.autograd.Function):
        """Identity that records the dtype of the gradient it receives."""

        def forward(self, x):
            return x

        def backward(self, g):
            seen.append(g.dtype)
            return (g,)

    x = md.tensor([1.0, 2.0], dtype="float64", requires_grad=True)
    y = Spy.apply(x).astype("float32") * 2.0
    assert y.dtype == np.float32
    y.sum().backward()
    assert seen == [np.float64]
    assert x.grad.dtype == np.float64


def test_python_scalars_keep_float32():
    x = md.tensor([1.0, 2.0], requires_grad=True)
    assert x.dtype == np.float32
    for y in (x * 2.5, 2.5 * x, x + 1, 1 - x, x / 3.0, 3.0 / x, x ** 2, -x, x * np.float64(2.0),
              x.maximum(0.5), x.clip(0.0, 1.5)):
        assert y.dtype == np.float32, y
    (x * 2.5 + 1.0).sum().backward()
    assert x.grad.dtype == np.float32


def test_integer_tensor_with_float_scalar_is_not_truncated():
    x = md.tensor([1, 2])
    assert x.dtype == np.int64
    np.testing.assert_allclose((x + 0.5).numpy(), [1.5, 2.5])
    np.testing.assert_allclose((x * 0.5).numpy(), [0.5, 1.0])
    assert (x * 2).dtype.kind == "i"


def test_tensor_construction_defaults():
    assert md.tensor([1.0]).dtype == np.float32
    assert md.tensor(np.array([1.0])).dtype == np.float64
    assert md.tensor([1]).dtype == np.int64
    with pytest.raises(TypeError, match="floating"):
        md.tensor([1, 2], requires_grad=True)
    with pytest.raises(TypeError):
        md.tensor(["a"])


# --- devices ------------------------------------------------------------------------------------
class _ElsewhereTensor(Tensor):
    """A CPU tensor that claims to live on another device (to test the checks without a GPU)."""
    device = property(lambda self: "cuda")


def test_mixing_devices_is_reported_by_function_apply():
    a = md.tensor([1.0, 2.0])
    b = _ElsewhereTensor(np.array([1.0, 2.0], dtype=np.float32))
    with pytest.raises(RuntimeError, match=r"Add: all tensors must be on the same device.*'cpu'.*'cuda'"):
        arithmetic.Add.apply(a, b)
    with pytest.raises(RuntimeError, match="same device"):
        a * b


def test_mixing_devices_is_reported_with_the_argument_names():
    # One device check, in Function.apply; it names the op's forward arguments.
    x = md.ones(2, 3)
    w = _ElsewhereTensor(np.ones((4, 3), dtype=np.float32))
    with pytest.raises(RuntimeError, match=r"Linear: all tensors must be on the same device.*x on 'cpu'.*weight on 'cuda'"):
        F.linear(x, w)


@pytest.mark.skipif(not md.cuda_available(), reason="no usable CUDA device")
def test_mixing_real_devices():
    a, b = md.ones(2), md.ones(2, device="cuda")
    with pytest.raises(RuntimeError, match="same device"):
        a + b
    y = (a.to("cuda") * b).sum()
    assert y.device == "cuda"


def test_unknown_device_is_rejected():
    with pytest.raises(ValueError, match="device must be"):
        md.ones(2).to("tpu")
    if not md.cuda_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            md.ones(2).to("cuda")


# --- numerical stability --------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_is_stable_for_large_inputs(dtype):
    x = md.tensor([-1e4, -50.0, 0.0, 50.0, 1e4], dtype=dtype, requires_grad=True)
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # no inf/nan even transiently
        y = F.sigmoid(x)
    v = y.numpy().astype(np.float64)
    assert np.all(np.isfinite(v))
    np.testing.assert_allclose(v, [0.0, math.exp(-50) / (1 + math.exp(-50)), 0.5, 1 / (1 + math.exp(-50)), 1.0],
                               rtol=1e-6, atol=0)
    y.sum().backward()
    g = x.grad.numpy()
    assert np.all(np.isfinite(g)) and g[2] == pytest.approx(0.25) and g[0] == 0 and g[-1] == 0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_log_softmax_and_softmax_are_stable_for_large_inputs(dtype):
    x = md.tensor([[1e4, 0.0, -1e4], [1e4, 1e4, 1e4], [-1e4, -1e4 + 1, -1e4]], dtype=dtype, requires_grad=True)
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        y = F.log_softmax(x)
        sm = F.softmax(x)
    v = y.numpy().astype(np.float64)
    assert np.all(np.isfinite(v))
    l3 = math.log(3)
    lse = math.log(2 + math.e)  # log(e^0 + e^1 + e^0)
    np.testing.assert_allclose(v, [[0.0, -1e4, -2e4], [-l3, -l3, -l3], [-lse + 0, -lse + 1, -lse + 0]],
                               rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(sm.numpy().sum(axis=1), 1.0, rtol=1e-6)
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        y.sum().backward()
    assert np.all(np.isfinite(x.grad.numpy()))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cross_entropy_is_stable_for_large_logits(dtype):
    z = md.tensor([[1e4, -1e4], [1e4, -1e4], [0.0, 0.0]], dtype=dtype, requires_grad=True)
    t = np.array([0, 1, 0])
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        losses = F.cross_entropy(z, t, reduction="none")
    np.testing.assert_allclose(losses.numpy().astype(np.float64), [0.0, 2e4, math.log(2)], rtol=1e-6)
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        loss = F.cross_entropy(z, t)
        loss.backward()
    np.testing.assert_allclose(loss.item(), (2e4 + math.log(2)) / 3, rtol=1e-6)
    np.testing.assert_allclose(z.grad.numpy(), [[0, 0], [1 / 3, -1 / 3], [-1 / 6, 1 / 6]], atol=1e-7)


# --- error messages -------------------------------------------------------------------------
def test_conv2d_rejects_integer_tensors():
    x = md.tensor(np.ones((1, 1, 3, 3), dtype=np.int64))
    w = md.ones(1, 1, 2, 2)
    with pytest.raises(TypeError, match=r"conv2d: x must be a floating-point tensor.*int64"):
        F.conv2d(x, w)


def test_conv2d_channel_mismatch_names_op_expected_and_actual():
    x, w = md.ones(2, 3, 5, 5), md.ones(4, 2, 3, 3)
    with pytest.raises(ValueError) as e:
        F.conv2d(x, w)
    msg = str(e.value)
    assert "conv2d" in msg and "3 channels" in msg and "expects 2" in msg and "(4, 2, 3, 3)" in msg


def test_conv2d_other_argument_errors():
    with pytest.raises(ValueError, match="4 dimensions"):
        F.conv2d(md.ones(3, 5, 5), md.ones(1, 3, 3, 3))
    with pytest.raises(ValueError, match="bias must have shape"):
        F.conv2d(md.ones(1, 1, 5, 5), md.ones(2, 1, 3, 3), md.ones(3))
    with pytest.raises(ValueError, match="does not fit"):
        F.conv2d(md.ones(1, 1, 2, 2), md.ones(1, 1, 3, 3))
    with pytest.raises(ValueError, match="stride"):
        F.conv2d(md.ones(1, 1, 5, 5), md.ones(1, 1, 3, 3), stride=0)
    with pytest.raises(TypeError, match="must be a minidl Tensor"):
        F.conv2d(np.ones((1, 1, 5, 5)), md.ones(1, 1, 3, 3))


def test_pool_argument_errors():
    with pytest.raises(ValueError, match="max_pool2d.*padding"):
        F.max_pool2d(md.ones(1, 1, 4, 4), 2, padding=2)
    with pytest.raises(ValueError, match="avg_pool2d.*does not fit"):
        F.avg_pool2d(md.ones(1, 1, 2, 2), 3)


def test_linear_feature_mismatch():
    with pytest.raises(ValueError, match=r"linear: x has 3 features.*expects 4"):
        F.linear(md.ones(2, 3), md.ones(5, 4))
    with pytest.raises(ValueError, match=r"linear: bias must have shape \(5,\)"):
        F.linear(md.ones(2, 4), md.ones(5, 4), md.ones(4))


def test_cross_entropy_target_errors():
    z = md.ones(3, 4)
    with pytest.raises(TypeError, match="integer class indices.*float"):
        F.cross_entropy(z, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"must lie in \[0, 4\).*\[0, 4\]"):
        F.cross_entropy(z, np.array([0, 1, 4]))
    with pytest.raises(ValueError, match=r"must lie in \[0, 4\).*\[-1, 1\]"):
        F.cross_entropy(z, np.array([0, 1, -1]))
    with pytest.raises(ValueError, match=r"target must have shape \(3,\).*\(2,\)"):
        F.cross_entropy(z, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"target must have shape"):
        F.cross_entropy(z, np.array([[0], [1], [2]]))
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(z, np.array([0, 1, 2]), reduction="max")
    assert F.cross_entropy(z, md.tensor([0, 1, 2])).item() == pytest.approx(math.log(4))


def test_reshape_impossible():
    with pytest.raises(ValueError, match=r"reshape: cannot reshape a tensor of shape \(2, 3\) \(6 elements\)"):
        md.ones(2, 3).reshape(4, 2)


def test_other_shape_errors():
    with pytest.raises(ValueError, match="mse_loss"):
        F.mse_loss(md.ones(2, 3), md.ones(3, 2))
    with pytest.raises(ValueError, match="matmul: inner dimensions"):
        md.ones(2, 3) @ md.ones(2, 3)
    with pytest.raises(ValueError, match="transpose"):
        md.ones(2, 3, 4).transpose(0, 1, 1)
    with pytest.raises(ValueError, match="axis 3 is out of range"):
        md.ones(2, 3).sum(axis=3)
    with pytest.raises(ValueError, match="dropout"):
        F.dropout(md.ones(3), p=1.0)
    with pytest.raises(TypeError, match="exponent"):
        md.ones(3) ** md.ones(3)


# --- a few semantic checks the gradient tests cannot see ------------------------------------
def test_transpose_conventions():
    x = md.tensor(np.arange(24.0).reshape(2, 3, 4))
    assert x.transpose(0, 2).shape == (4, 3, 2)       # two axes: swapped (PyTorch)
    assert x.transpose(2, 0, 1).shape == (4, 2, 3)    # a permutation (NumPy)
    assert x.transpose((1, 0, 2)).shape == (3, 2, 4)
    assert x.T.shape == (4, 3, 2)
    m = md.tensor(np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(m.transpose(0, 1).numpy(), m.numpy().T)  # swap, as in PyTorch
    np.testing.assert_array_equal(m.transpose(1, 0).numpy(), m.numpy().T)
    np.testing.assert_array_equal(m.transpose(0, 0).numpy(), m.numpy())
    np.testing.assert_array_equal(m.transpose((0, 1)).numpy(), m.numpy())  # a permutation tuple
    np.testing.assert_array_equal(m.T.numpy(), m.numpy().T)


def test_max_ties_share_the_gradient():
    x = md.tensor([[1.0, 3.0, 3.0], [2.0, 0.0, 1.0]], requires_grad=True)
    x.max(axis=1).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[0, 0.5, 0.5], [1, 0, 0]])


def test_comparisons_and_argmax_are_outside_the_graph():
    x = md.tensor([1.0, 3.0, 2.0], requires_grad=True)
    assert (x > 1.5).tolist() == [False, True, True]
    assert not (x > 1.5).requires_grad
    assert x.argmax().item() == 1


def test_absent_optional_input_is_passed_as_none():
    # An optional bias is an explicit None input, not a shorter argument list.
    x, w = md.ones(2, 3, requires_grad=True), md.ones(4, 3, requires_grad=True)
    y = matmul.Linear.apply(x, w, None)
    assert y._ctx.needs_grad == (True, True, False) and y._ctx.parents[2] is None
    y.sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), np.full((4, 3), 2.0))
    np.testing.assert_allclose(x.grad.numpy(), np.full((2, 3), 4.0))


def test_device_error_names_variadic_inputs():
    a = md.ones(2)
    b = _ElsewhereTensor(np.ones(2, dtype=np.float32))
    with pytest.raises(RuntimeError, match=r"Concatenate: .*\w+\[0\] on 'cpu', \w+\[1\] on 'cuda'"):
        md.concatenate([a, b])
