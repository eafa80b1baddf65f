"""PyTorch's semantics where ported scripts rely on them (issue 32): ``.data`` as a Tensor,
item assignment with a version bump, 0-d conversions, ``grad_fn``/``next_functions``,
``x.to(dtype)``, ``new_zeros``, and the selection/statistics ops (topk, sort, argsort,
scatter_, std, var, nonzero, one-argument where). Differentiable ones are gradchecked in
float64 and, where torch is installed, compared with PyTorch (values and gradients)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minidl as md
from minidl.testing import gradcheck

from conftest import examples

try:
    import torch
except ImportError:
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")

seeds = st.integers(0, 2 ** 31)
shapes = st.sampled_from([(4,), (2, 3), (3, 4), (2, 3, 2)])


def distinct(seed, shape):
    """Normal values kept apart (no ties, so sort and topk are differentiable there)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape) + rng.permutation(int(np.prod(shape))).reshape(shape) * 1e-2


def leaf(a):
    return md.tensor(np.asarray(a, dtype=np.float64), requires_grad=True)


# --- .data -----------------------------------------------------------------------------------
def test_data_is_a_tensor_sharing_memory_outside_the_graph():
    x = md.tensor([1.0, -2.0, 3.0], requires_grad=True)
    d = x.data
    assert isinstance(d, md.Tensor) and not d.requires_grad and d.grad_fn is None
    d[d < 0] = 0.0                 # writes through
    d.mul_(2)
    np.testing.assert_array_equal(x.numpy(), [2.0, 0.0, 6.0])
    assert x.requires_grad and x.is_leaf


def test_grad_data_sign_and_assignment_as_in_fgsm():
    x = md.tensor([[0.5, -0.5]], requires_grad=True)
    (x * md.tensor([[2.0, -3.0]])).sum().backward()
    step = x.grad.data.sign()
    assert isinstance(step, md.Tensor)
    x.data = (x + 0.1 * step).clamp(0, 1)        # a Tensor from a graph-free expression
    np.testing.assert_allclose(x.numpy(), [[0.6, 0.0]], rtol=1e-6)
    assert x.requires_grad and x.is_leaf and x.grad is not None


def test_data_assignment_replaces_shape_and_rejects_other_types():
    x = md.zeros(3, requires_grad=True)
    x.data = md.ones(2, 2)                       # PyTorch lets .data change the shape
    assert x.shape == (2, 2)
    x.data = np.full(4, 3.0, dtype=np.float32)  # an array is taken as it is
    assert x.shape == (4,)
    with pytest.raises(TypeError, match="must be a Tensor"):
        x.data = [1.0, 2.0]
    with pytest.raises(TypeError, match="floating-point"):
        x.data = md.tensor([1, 2])


# --- item assignment ---------------------------------------------------------------------------
def test_item_assignment_with_mask_and_tensor_writes_in_place():
    x = md.tensor([[1.0, 5.0], [3.0, -1.0]])
    view = x[0]
    x[x > 2] = 0.0
    np.testing.assert_array_equal(x.numpy(), [[1.0, 0.0], [0.0, -1.0]])
    np.testing.assert_array_equal(view.numpy(), [1.0, 0.0])  # views see the write
    x[1] = md.tensor([7.0, 8.0])
    delta, best = md.tensor([1.0, 2.0, 3.0]), md.tensor([9.0, 9.0, 9.0])
    mask = md.tensor([True, False, True])
    best[mask] = delta[mask]
    np.testing.assert_array_equal(best.numpy(), [1.0, 9.0, 3.0])


def test_item_assignment_bumps_the_version_so_backward_refuses():
    w = md.tensor([1.0, 2.0, 3.0], requires_grad=True)
    h = w * 2
    y = (h * h).sum()                    # Mul keeps h
    v0 = h._version
    h[0] = 10.0
    assert h._version == v0 + 1
    with pytest.raises(RuntimeError, match="changed by an in-place operation"):
        y.backward()


def test_item_assignment_on_a_leaf_that_requires_grad_is_refused():
    w = md.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf that requires grad"):
        w[0] = 3.0
    with md.no_grad():
        w[0] = 3.0
    w.data[1] = 4.0
    np.testing.assert_array_equal(w.numpy(), [3.0, 4.0])


@examples(15)
@given(shape=shapes, seed=seeds)
def test_gradcheck_item_assignment(shape, seed):
    mask = md.tensor(np.random.default_rng(seed).random(shape) > 0.5)
    k = int(mask.numpy().sum())

    def assign(x, v):
        y = x * 1.0                      # a non-leaf that is then written
        y[mask] = v
        return y * y

    gradcheck(assign, leaf(distinct(seed, shape)), leaf(distinct(seed + 1, (k,))))
    gradcheck(lambda x: _assign_row(x), leaf(distinct(seed, shape)))


def _assign_row(x):
    y = x * 1.0
    y[0] = 2.5                           # a broadcast constant: only x's kept part gets a gradient
    return y * x


@needs_torch
def test_item_assignment_agrees_with_torch():
    a = distinct(0, (3, 4))
    v = distinct(1, (4,))
    outs = []
    for lib, mk in ((md, leaf), (torch, lambda z: torch.tensor(z, requires_grad=True))):
        x, val = mk(a), mk(v)
        y = x * 2
        y[1] = val
        y[y > 1.5] = 0.0
        (y * y).sum().backward()
        outs.append((np.asarray(y.detach().numpy()), x.grad.numpy(), val.grad.numpy()))
    for m, t in zip(*outs):
        np.testing.assert_allclose(m, t, rtol=1e-12)


# --- Python scalars ----------------------------------------------------------------------------
def test_zero_d_conversions():
    y = md.tensor(3.0)
    n = 0
    while y.norm() < 1000:
        y = y * 2
        n += 1
    assert n == 9
    classes = ("plane", "car", "bird")
    labels = md.tensor([2, 0])
    assert classes[labels[0]] == "bird"
    assert float(md.tensor([2.5])) == 2.5 and int(md.tensor(7.9)) == 7
    assert list(range(md.tensor(3))) == [0, 1, 2]
    with pytest.raises(RuntimeError, match="one-element"):
        bool(md.tensor([1.0, 2.0]))
    with pytest.raises(RuntimeError, match="one-element"):
        float(md.zeros(2))
    with pytest.raises(TypeError, match="integer"):
        [1, 2][md.tensor(1.0)]


# --- grad_fn ----------------------------------------------------------------------------------
def test_grad_fn_and_next_functions():
    x = md.ones(2, 2, requires_grad=True)
    y = x + 2
    z = y * y * 3
    assert x.grad_fn is None and y.grad_fn is not None
    (mul_fn, _), (const, _) = z.grad_fn.next_functions
    assert const is None
    (y_fn, _), (y_fn2, _) = mul_fn.next_functions
    assert y_fn is y.grad_fn and y_fn2 is y.grad_fn
    (acc, zero), (none, _) = y.grad_fn.next_functions
    assert acc.variable is x and zero == 0 and none is None
    assert md.ones(2).grad_fn is None


# --- to, new_* --------------------------------------------------------------------------------
def test_to_dtype_and_device():
    x = md.tensor([1.5, 2.5], requires_grad=True)
    y = x.to(md.float64)
    assert y.dtype == np.float64 and y.requires_grad
    y.sum().backward()
    assert x.grad.dtype == np.float32
    assert x.to("cpu", md.float64).dtype == np.float64
    assert x.to(device="cpu", dtype=md.float64).dtype == np.float64
    assert x.to("cpu") is x and x.to(md.float32) is x
    assert x.to(md.long).dtype == np.int64 and not x.to(md.long).requires_grad
    assert x.to(md.zeros(1, dtype=md.float64)).dtype == np.float64
    assert x.to(md.device("cpu")) is x


def test_new_tensors_take_dtype_and_device():
    x = md.zeros(2, dtype=md.float64)
    assert x.new_zeros(3, 4).shape == (3, 4) and x.new_zeros((3,)).dtype == np.float64
    assert x.new_ones(2).numpy().tolist() == [1.0, 1.0]
    assert x.new_full((2,), 7).numpy().tolist() == [7.0, 7.0]
    assert x.new_tensor([1, 2]).dtype == np.float64
    assert x.new_zeros(2, dtype=md.int64).dtype == np.int64


# --- sorting and selection ---------------------------------------------------------------------
@examples(15)
@given(shape=shapes, seed=seeds, descending=st.booleans())
def test_gradcheck_sort_topk_var_std(shape, seed, descending):
    x = leaf(distinct(seed, shape))
    for d in range(len(shape)):
        gradcheck(lambda t: t.sort(d, descending=descending)[0], x)
        k = max(1, shape[d] - 1)
        gradcheck(lambda t: t.topk(k, d, largest=not descending)[0], x)
        gradcheck(lambda t: t.var(d), x)
        gradcheck(lambda t: t.std(d, unbiased=False, keepdim=True), x)
    gradcheck(lambda t: t.var(), x)
    gradcheck(lambda t: t.std(), x)


@needs_torch
@examples(10)
@given(shape=shapes, seed=seeds)
def test_sort_topk_statistics_agree_with_torch(shape, seed):
    a = distinct(seed, shape)
    for d in range(len(shape)):
        for largest in (True, False):
            k = max(1, shape[d] - 1)
            mv, mi = leaf(a).topk(k, d, largest)
            tv, ti = torch.tensor(a).topk(k, d, largest)
            np.testing.assert_array_equal(mv.numpy(), tv.numpy())
            np.testing.assert_array_equal(mi.numpy(), ti.numpy())
            mv, mi = leaf(a).sort(d, descending=largest)
            tv, ti = torch.tensor(a).sort(d, descending=largest)
            np.testing.assert_array_equal(mi.numpy(), ti.numpy())
            np.testing.assert_array_equal(md.argsort(leaf(a), d, largest).numpy(),
                                          torch.argsort(torch.tensor(a), d, largest).numpy())
        for unbiased in (True, False):
            np.testing.assert_allclose(leaf(a).var(d, unbiased).numpy(),
                                       torch.tensor(a).var(d, unbiased=unbiased).numpy(), rtol=1e-12)
            np.testing.assert_allclose(md.std(leaf(a), d, unbiased, keepdim=True).numpy(),
                                       torch.std(torch.tensor(a), d, unbiased=unbiased, keepdim=True).numpy(),
                                       rtol=1e-12)
    np.testing.assert_allclose(leaf(a).std().numpy(), torch.tensor(a).std().numpy(), rtol=1e-12)
    # gradients through topk
    x, t = leaf(a), torch.tensor(a, requires_grad=True)
    (x.topk(1, -1)[0] ** 2).sum().backward()
    (t.topk(1, -1)[0] ** 2).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-12)


def test_sort_is_stable_and_descending_ties_keep_order():
    x = md.tensor([2.0, 1.0, 2.0, 1.0])
    assert x.argsort().numpy().tolist() == [1, 3, 0, 2]
    assert x.argsort(descending=True).numpy().tolist() == [0, 2, 1, 3]
    with pytest.raises(ValueError, match="k must be"):
        x.topk(5)


def test_nonzero_and_one_argument_where():
    x = md.tensor([[0.0, 1.5], [2.0, 0.0]])
    assert x.nonzero().numpy().tolist() == [[0, 1], [1, 0]]
    rows, cols = md.where(x > 0)
    assert rows.numpy().tolist() == [0, 1] and cols.numpy().tolist() == [1, 0]
    assert x[md.where(x > 0)].numpy().tolist() == [1.5, 2.0]
    assert md.nonzero(md.tensor([0, 3, 0, 4])).numpy().tolist() == [[1], [3]]
    if torch is not None:
        a = np.array([[0.0, 1.5], [2.0, 0.0]])
        np.testing.assert_array_equal(md.tensor(a).nonzero().numpy(), torch.tensor(a).nonzero().numpy())


def test_scatter_():
    x = md.zeros(2, 4)
    index = md.tensor([[1, 3], [0, 0]])
    x.scatter_(1, index, md.tensor([[5.0, 6.0], [7.0, 7.0]]))
    assert x.numpy().tolist() == [[0, 5, 0, 6], [7, 0, 0, 0]]
    onehot = md.zeros(3, 4).scatter_(1, md.tensor([[2], [0], [3]]), 1.0)
    assert onehot.numpy().tolist() == [[0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]]
    if torch is not None:
        t = torch.zeros(3, 4).scatter_(1, torch.tensor([[2], [0], [3]]), 1.0)
        np.testing.assert_array_equal(onehot.numpy(), t.numpy())
    with pytest.raises(ValueError, match="index must be an integer"):
        md.zeros(2, 2).scatter_(1, md.tensor([0.0, 1.0]), 1.0)
    w = md.zeros(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="in-place"):
        w.scatter_(0, md.tensor([0]), 1.0)


def test_log_softmax_function_agrees():
    a = distinct(3, (2, 5))
    out = md.log_softmax(leaf(a), dim=1)
    np.testing.assert_allclose(out.exp().sum(1).numpy(), [1.0, 1.0], rtol=1e-12)
    if torch is not None:
        np.testing.assert_allclose(out.numpy(), torch.log_softmax(torch.tensor(a), dim=1).numpy(), rtol=1e-12)
        np.testing.assert_allclose(leaf(a).softmax(0).numpy(), torch.tensor(a).softmax(0).numpy(), rtol=1e-12)


# --- md.cuda, md.device, md.backends ---------------------------------------------------------------
def test_cuda_namespace_and_device():
    from minidl import backend
    assert md.cuda.is_available() == backend.cuda_available()
    md.cuda.manual_seed(3)
    md.cuda.manual_seed_all(3)
    with pytest.raises(ValueError, match="seed"):
        md.cuda.manual_seed(-1)
    dev = md.device("cuda" if md.cuda.is_available() else "cpu")
    assert md.zeros(2, device=dev).device == dev.type
    d = md.device("cuda", 1)
    assert d == "cuda:1" and d.type == "cuda" and d.index == 1 and repr(d) == "device(type='cuda', index=1)"
    assert md.device("cpu").index is None and md.device(md.device("cpu")) == "cpu"
    with pytest.raises(ValueError, match="expected 'cpu'"):
        md.device("tpu")
    model = md.nn.Linear(2, 2)
    assert model.to(md.device("cpu")) is model and model.cpu() is model
    if not md.cuda.is_available():
        with pytest.raises(RuntimeError, match="no usable CUDA device"):
            model.cuda()


def test_cudnn_benchmark_maps_onto_the_conv_algorithm_mode():
    from minidl.kernels.runtime import autotune
    before = autotune.get_conv_algorithm()
    try:
        md.backends.cudnn.benchmark = True
        assert autotune.get_conv_algorithm() == "auto" and md.backends.cudnn.benchmark is True
        md.backends.cudnn.benchmark = False
        assert autotune.get_conv_algorithm() == "rule" and md.backends.cudnn.benchmark is False
        md.backends.cudnn.deterministic = True  # accepted
    finally:
        autotune.set_conv_algorithm(before)


# --- repeat, split, chunk, boolean logic ----------------------------------------------------------
@examples(10)
@given(shape=shapes, seed=seeds)
def test_gradcheck_repeat_split_chunk(shape, seed):
    x = leaf(distinct(seed, shape))
    reps = (2,) + (1,) * (len(shape) - 1)
    gradcheck(lambda t: t.repeat(*reps), x)
    gradcheck(lambda t: t.repeat(*((3,) + reps)), x)
    gradcheck(lambda t: md.cat([p * (i + 1) for i, p in enumerate(t.split(2, dim=-1))], dim=-1), x)
    gradcheck(lambda t: md.cat([p * (i + 1) for i, p in enumerate(md.chunk(t, 2, dim=0))], dim=0), x)
    if torch is not None:
        a = distinct(seed, shape)
        np.testing.assert_array_equal(md.tensor(a).repeat(2, *reps).numpy(), torch.tensor(a).repeat(2, *reps).numpy())
        for mine, ref in zip(md.tensor(a).split(2, -1), torch.tensor(a).split(2, -1)):
            np.testing.assert_array_equal(mine.numpy(), ref.numpy())
        for mine, ref in zip(md.tensor(a).chunk(3, 0), torch.tensor(a).chunk(3, 0)):
            np.testing.assert_array_equal(mine.numpy(), ref.numpy())


def test_boolean_logic_operators():
    a, b = md.tensor([True, False, True]), md.tensor([True, True, False])
    assert (a & b).numpy().tolist() == [True, False, False]
    assert (a | b).numpy().tolist() == [True, True, True]
    assert (a ^ b).numpy().tolist() == [False, True, True]
    assert (~a).numpy().tolist() == [False, True, False]
    with pytest.raises(TypeError, match="boolean or integer"):
        md.tensor([1.0]) & md.tensor([2.0])
