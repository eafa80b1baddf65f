"""Tests of ``minidl.testing`` itself: the strategies draw what they promise (shapes, dtypes,
devices, bounds, margins, valid axes and indices, configurations whose output exists), and
``gradcheck``, ``check_jvp_vjp`` and ``check_backward`` catch planted errors (a gradient off by
a factor, a transposed gradient, a wrong broadcast reduction, a wrong dtype, a wrong entry,
a float32-only error, in-place updates, a wrong ``needs_grad`` branch) while passing correct ops."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from hypothesis import find, given
from hypothesis import strategies as st

import minidl as md
import minidl.functional as F
from minidl.autograd import Function
from minidl.tensor import Tensor
from minidl.testing import GradcheckError, check_backward, check_jvp_vjp, gradcheck, numerical_gradient
from minidl.testing.strategies import (advanced_indices, basic_indices, broadcastable_shapes, conv_configs,
                                       devices, gradients_like, pool_configs, shapes, tensors, valid_axes)

from conftest import CUDA, examples

MANY = examples(40)
rng = np.random.default_rng(0)


def leaf(array, dtype=np.float64):
    return Tensor(np.array(array, dtype=dtype), requires_grad=True)


# --- strategies ----------------------------------------------------------------------------------
@MANY
@given(data=st.data(), shape=shapes(min_dims=0, max_dims=4), dtype=st.sampled_from([np.float32, np.float64, "float32"]),
       requires_grad=st.booleans())
def test_tensors_honour_shape_dtype_and_requires_grad(device, data, shape, dtype, requires_grad):
    x = data.draw(tensors(shape=shape, dtype=dtype, device=device, requires_grad=requires_grad))
    assert isinstance(x, Tensor) and x.shape == shape and x.dtype == np.dtype(dtype)
    assert x.device == device and x.requires_grad is requires_grad and x.is_leaf
    a = x.numpy()
    assert np.all(np.isfinite(a)) and np.all((-3 <= a) & (a <= 3))


@MANY
@given(x=tensors(shape=st.sampled_from([(2,), (3, 1)]), dtype=st.sampled_from([np.float32, np.float64]),
                 device=devices()))
def test_tensors_take_strategies(x):
    assert x.shape in [(2,), (3, 1)] and x.dtype in (np.float32, np.float64) and x.device in ("cpu", "cuda")


@MANY
@given(data=st.data(), dtype=st.sampled_from([np.float32, np.float64]), lo=st.floats(-5, 4), width=st.floats(0.01, 5))
def test_tensors_respect_bounds_not_representable_in_float32(data, dtype, lo, width):
    x = data.draw(tensors(shape=(5,), dtype=dtype, min_value=lo, max_value=lo + width)).numpy().astype(np.float64)
    assert np.all((lo <= x) & (x <= lo + width)), (lo, width, x)


@MANY
@given(data=st.data(), shape=shapes(max_dims=3), dtype=st.sampled_from([np.float32, np.float64]),
       points=st.lists(st.floats(-3, 3), min_size=1, max_size=3), margin=st.floats(0.01, 0.3))
def test_tensors_keep_away_from_kinks(data, shape, dtype, points, margin):
    x = data.draw(tensors(shape=shape, dtype=dtype, away_from=points, margin=margin)).numpy().astype(np.float64)
    slack = 1e-6 if dtype == np.float32 else 1e-12  # one float32 rounding of values <= 3
    for p in points:
        assert np.all(np.abs(x - p) >= margin - slack), (p, margin, x)
    assert np.all((-3 <= x) & (x <= 3))


def test_tensors_away_from_kinks_still_reach_every_side():
    # values on each side of both kinks exist (the margins cut the range, they do not clamp it)
    for side in (lambda v: v < -1.05, lambda v: -0.95 < v < -0.05, lambda v: v > 0.05):
        find(tensors(shape=(1,), away_from=[-1.0, 0.0]), lambda t: side(t.item()))


@MANY
@given(data=st.data(), shape=shapes(max_dims=4, max_side=3), margin=st.floats(0.01, 0.05), kink=st.booleans())
def test_tensors_distinct_values_are_margin_apart(data, shape, margin, kink):
    x = data.draw(tensors(shape=shape, distinct=True, margin=margin, away_from=0.0 if kink else None)).numpy()
    gaps = np.diff(np.sort(x.reshape(-1)))
    assert np.all(gaps >= margin - 1e-12), gaps.min()
    if kink:
        assert np.all(np.abs(x) >= margin - 1e-12)


def test_tensors_reject_bad_arguments():
    cases = [
        (dict(dtype="int64"), "dtype: expected float32 or float64"),
        (dict(dtype=np.float16), "dtype: expected float32 or float64"),
        (dict(device="tpu"), "device: expected 'cpu' or 'cuda'"),
        (dict(min_value=1.0, max_value=-1.0), "min_value < max_value"),
        (dict(min_value=float("nan")), "min_value: expected a finite number"),
        (dict(margin=0.0), "margin: expected a positive number"),
        (dict(away_from=[float("nan")]), "away_from"),
        (dict(elements=st.floats(0, 1), away_from=0.0), "elements: cannot be combined"),
        (dict(away_from=0.0, margin=10.0), "away_from: no value"),
        (dict(shape=(2, -1)), "shape: expected a tuple of non-negative integers"),
        (dict(requires_grad="yes"), "requires_grad: expected True or False"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            tensors(**kwargs)
    if not CUDA:
        with pytest.raises(ValueError, match="no usable CUDA device"):
            tensors(device="cuda")
    with pytest.raises(ValueError, match="distinct: 10 values pairwise 1 apart"):
        tensors(shape=(10,), distinct=True, margin=1.0)


@MANY
@given(data=st.data(), x=tensors(dtype=st.sampled_from([np.float32, np.float64]), device=devices()))
def test_gradients_like_matches_the_tensor(data, x):
    g = data.draw(gradients_like(x))
    assert (g.shape, g.dtype, g.device, g.requires_grad) == (x.shape, x.dtype, x.device, False)
    (x * 1.0).backward(g)  # usable as the upstream gradient
    np.testing.assert_array_equal(x.grad.numpy(), g.numpy())


@MANY
@given(data=st.data(), ndim=st.integers(0, 4))
def test_valid_axes_are_in_range_and_unique(data, ndim):
    axis = data.draw(valid_axes(ndim))
    array = np.zeros((2,) * ndim)
    np.sum(array, axis=axis)  # NumPy accepts it (it rejects repeats and out-of-range axes)
    axes = () if axis is None else (axis,) if isinstance(axis, int) else axis
    assert all(-ndim <= a < ndim for a in axes) and len({a % ndim for a in axes}) == len(axes)
    strict = data.draw(valid_axes(max(ndim, 1), allow_none=False, negative=False, min_axes=1))
    assert strict is not None and all(a >= 0 for a in ((strict,) if isinstance(strict, int) else strict))
    assert strict != ()


def test_valid_axes_reject_impossible_requests():
    with pytest.raises(ValueError, match="ndim: expected an integer >= 0"):
        valid_axes(-1)
    with pytest.raises(ValueError, match="no axis argument is possible"):
        valid_axes(0, allow_none=False, min_axes=1)


@MANY
@given(data=st.data(), shape=shapes(max_dims=4))
def test_basic_indices_are_valid_and_select_something(data, shape):
    index = data.draw(basic_indices(shape, allow_newaxis=True))
    a = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    assert a[index].size > 0
    np.testing.assert_array_equal(Tensor(a)[index].numpy(), a[index])


@MANY
@given(data=st.data(), shape=shapes(max_dims=4), repeats=st.booleans())
def test_advanced_indices_are_valid_and_repeat_when_asked(data, shape, repeats):
    index = data.draw(advanced_indices(shape, repeats=repeats))
    a = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    assert a[index].size > 0
    np.testing.assert_array_equal(Tensor(a)[index].numpy(), a[index])
    if repeats:
        counts = np.zeros(shape)
        np.add.at(counts, index, 1)
        assert counts.max() >= 2


@MANY
@given(data=st.data(), shape=shapes(max_dims=3), kind=st.sampled_from(["integer", "boolean"]))
def test_advanced_indices_of_one_kind(data, shape, kind):
    index = data.draw(advanced_indices(shape, kinds=kind))
    parts = index if isinstance(index, tuple) else (index,)
    arrays = [p for p in parts if not isinstance(p, slice)]
    if kind == "boolean":
        assert len(arrays) == 1 and np.asarray(arrays[0]).dtype == np.bool_
    else:
        assert all(np.asarray(p).dtype.kind == "i" for p in arrays)


def test_index_strategies_reject_bad_shapes():
    with pytest.raises(ValueError, match="shape"):
        advanced_indices(())
    with pytest.raises(ValueError, match="kinds"):
        advanced_indices((2,), kinds="slice")


@MANY
@given(data=st.data(), n=st.integers(1, 4))
def test_broadcastable_shapes(data, n):
    shapes_ = data.draw(broadcastable_shapes(n))
    assert isinstance(shapes_, tuple) and len(shapes_) == n
    np.broadcast_shapes(*shapes_)


@MANY
@given(cfg=conv_configs())
def test_conv_configs_give_the_output_shape(cfg):
    n, c, h, w = cfg["x_shape"]
    f, c2, kh, kw = cfg["w_shape"]
    assert c2 == c and cfg["kernel"] == (kh, kw)
    y = F.conv2d(md.zeros(cfg["x_shape"]), md.zeros(cfg["w_shape"]), stride=cfg["stride"], padding=cfg["padding"])
    assert y.shape == cfg["out_shape"] and min(y.shape) >= 1


@MANY
@given(cfg=pool_configs())
def test_pool_configs_give_the_output_shape(cfg):
    (kh, kw), (ph, pw) = cfg["kernel"], cfg["padding"]
    assert ph <= kh // 2 and pw <= kw // 2
    y = F.max_pool2d(md.zeros(cfg["x_shape"]), cfg["kernel"], cfg["stride"], cfg["padding"])
    assert y.shape == cfg["out_shape"] and min(y.shape) >= 1


# --- planted errors --------------------------------------------------------------------------------
class Square(Function):
    """y = x^2, correct."""

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, g):
        return (2 * g * self.x,)


class SquareOffByFactor(Square):
    def backward(self, g):
        return (g * self.x,)


class SquareWrongAtOneEntry(Square):
    def backward(self, g):
        gx = 2 * g * self.x
        gx.reshape(-1)[2] += 1.0
        return (gx,)


class SquareWrongInFloat32(Square):
    """Right in float64; 1% off in float32 (as a float32-only kernel bug would be)."""

    def backward(self, g):
        return (2 * g * self.x * (1.01 if self.x.dtype == np.float32 else 1.0),)


class SquareWrongDtype(Square):
    def backward(self, g):
        return ((2 * g * self.x).astype(np.float64),)


class SquareForwardWrongDtype(Square):
    def forward(self, x):
        self.x = x
        return (x * x).astype(np.float64)


class SquareInPlace(Square):
    def forward(self, x):
        self.x = x.copy()
        x *= 1.0 + 1e-3  # modifies its input
        return self.x * self.x


class SquareGradInPlace(Square):
    def backward(self, g):
        g *= 2  # modifies the upstream gradient
        return (g * self.x,)


class Float32OnlySquare(Square):
    def forward(self, x):
        if x.dtype != np.float32:
            raise TypeError(f"Float32OnlySquare: expected float32, got {x.dtype}")
        return super().forward(x)


class Float32OnlySquareOffByFactor(Float32OnlySquare):
    def backward(self, g):
        return (1.5 * g * self.x,)


class Transpose(Function):
    """y = x.T, correct."""

    def forward(self, x):
        return x.T.copy()

    def backward(self, g):
        return (g.T,)


class TransposeForgotten(Transpose):
    def backward(self, g):
        return (g.copy(),)


class Matmul(Function):
    """y = a @ b, correct."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a @ b

    def backward(self, g):
        return (g @ self.b.T if self.needs_grad[0] else None, self.a.T @ g if self.needs_grad[1] else None)


class MatmulTransposedGradient(Matmul):
    def backward(self, g):
        return g @ self.b, self.a.T @ g  # b instead of b.T: right shape for square b, wrong values


class MatmulWrongSlot(Matmul):
    def backward(self, g):
        if not self.needs_grad[0]:
            return None, g @ self.b.T  # a's formula in b's slot
        return super().backward(g)


class BiasAdd(Function):
    """y = x + b with b of shape (1, n) broadcast over the rows of x, correct."""

    def forward(self, x, b):
        return x + b

    def backward(self, g):
        return g, g.sum(axis=0, keepdims=True)


class BiasAddFirstRow(BiasAdd):
    def backward(self, g):
        return g, g[:1].copy()  # takes one row instead of summing the broadcast axis


class BiasAddDroppedAxis(BiasAdd):
    def backward(self, g):
        return g, g.sum(axis=0)  # the reduced axis is not kept: shape (n,) for b of (1, n)


class BiasAddReadsNothing(BiasAdd):
    """Correct, and declares it: its backward reads no input."""
    reads_inputs = False


class SquareClaimsToReadNothing(Square):
    reads_inputs = False  # wrong: its backward reads x


class PositivePartClaimsToReadNothing(Function):
    """y = max(x, 0) with backward g * (x > 0), declared as reading no input: wrong, and NaN
    alone would not show it (NaN > 0 is False, the same as for the negative entries)."""
    reads_inputs = False

    def forward(self, x):
        self.x = x
        return x * (x > 0)

    def backward(self, g):
        return (g * (self.x > 0),)


class ExpKeepsItsOutputUndeclared(Function):
    """y = e^x with backward g * y, the output kept but not declared (reads_output)."""

    def forward(self, x):
        self.y = np.exp(x)
        return self.y

    def backward(self, g):
        return (g * self.y,)


class ExpDeclared(ExpKeepsItsOutputUndeclared):
    reads_inputs = False
    reads_output = True


def x23(dtype=np.float64):
    return leaf(rng.uniform(0.5, 2.0, (2, 3)), dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_correct_ops_pass(dtype):
    x, a, b = x23(dtype), leaf(rng.standard_normal((3, 3)), dtype), leaf(rng.standard_normal((3, 4)), dtype)
    assert check_backward(Square, x)
    assert check_backward(Transpose, x)
    assert check_backward(Matmul, a, b)
    assert check_backward(Matmul, a, Tensor(b.array))  # one input a constant
    assert check_backward(BiasAdd, x, leaf(rng.standard_normal((1, 3)), dtype))
    assert gradcheck(lambda u, v: (u @ v, (u * 2).sum()), a, b)  # several outputs
    assert check_jvp_vjp(lambda u, v: u @ v, a, b)


class SquareMissingGradient(Square):
    def backward(self, g):
        return (None,)  # claims there is no gradient


class MatmulSecondSignFlipped(Matmul):
    def backward(self, g):
        return g @ self.b.T, -(self.a.T @ g)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gradient_off_by_a_factor(dtype):
    with pytest.raises(GradcheckError, match="input 0"):
        gradcheck(SquareOffByFactor.apply, x23(dtype))
    with pytest.raises(GradcheckError):
        check_backward(SquareOffByFactor, x23(dtype))
    with pytest.raises(GradcheckError, match=r"input 0 \(shape \(30, 30\)"):  # the random-direction path
        gradcheck(SquareOffByFactor.apply, leaf(rng.uniform(0.5, 2.0, (30, 30)), dtype))


def test_missing_gradient_and_a_wrong_second_input():
    with pytest.raises(GradcheckError, match="input 0"):
        check_backward(SquareMissingGradient, x23())
    a, b = leaf(rng.standard_normal((2, 3))), leaf(rng.standard_normal((3, 2)))
    with pytest.raises(GradcheckError, match="input 1"):
        gradcheck(MatmulSecondSignFlipped.apply, a, b)


@pytest.mark.parametrize("shape", [(3, 3), (25, 25)])  # (25, 25): the random-direction path
def test_transposed_gradient(shape):
    x = leaf(rng.standard_normal(shape))
    with pytest.raises(GradcheckError):
        gradcheck(TransposeForgotten.apply, x)
    a, b = leaf(rng.standard_normal(shape)), leaf(rng.standard_normal(shape))
    with pytest.raises(GradcheckError, match="input 0"):
        gradcheck(MatmulTransposedGradient.apply, a, b)
    with pytest.raises(GradcheckError, match="input 0"):
        check_jvp_vjp(MatmulTransposedGradient.apply, a, b)
    with pytest.raises(GradcheckError, match=r"gradient 0: expected shape \(2, 3\) \(input 0.s\), got \(3, 2\)"):
        check_backward(TransposeForgotten, x23())  # not square: the shape check catches it


def test_wrong_broadcast_reduction():
    x, b = x23(), leaf(rng.standard_normal((1, 3)))
    with pytest.raises(GradcheckError, match="input 1"):
        gradcheck(BiasAddFirstRow.apply, x, b)
    with pytest.raises(GradcheckError, match="input 1"):
        check_backward(BiasAddFirstRow, x, b)
    with pytest.raises(GradcheckError, match=r"gradient 1: expected shape \(1, 3\) \(input 1's\), got \(3,\)"):
        check_backward(BiasAddDroppedAxis, x, b)


def test_wrong_dtype():
    with pytest.raises(GradcheckError, match="gradient 0: expected dtype float32 .*got float64"):
        check_backward(SquareWrongDtype, x23(np.float32))
    with pytest.raises(GradcheckError, match="forward: expected an output of dtype float32"):
        check_backward(SquareForwardWrongDtype, x23(np.float32))
    assert check_backward(SquareWrongDtype, x23(np.float64))  # right for float64 inputs


def test_in_place_updates_and_needs_grad_branches():
    with pytest.raises(GradcheckError, match="forward modified its input"):
        check_backward(SquareInPlace, x23())
    with pytest.raises(GradcheckError, match="backward modified the upstream gradient"):
        check_backward(SquareGradInPlace, x23())
    a, b = leaf(rng.standard_normal((3, 3))), leaf(rng.standard_normal((3, 3)))
    with pytest.raises(GradcheckError, match="only input 1 requiring grad"):
        check_backward(MatmulWrongSlot, a, b)


def test_a_false_reads_inputs_declaration_is_caught():
    x = x23()
    assert check_backward(BiasAddReadsNothing, x, leaf(rng.standard_normal((1, 3))))
    with pytest.raises(GradcheckError, match=r"check_backward\(SquareClaimsToReadNothing\): reads_inputs is False, "
                                             r"but gradient 0 changed when the inputs were overwritten \(with NaN\)"):
        check_backward(SquareClaimsToReadNothing, x)
    negative = leaf(-rng.uniform(0.5, 2.0, (2, 3)))  # all below 0: NaN reads the same
    with pytest.raises(GradcheckError, match=r"reads_inputs is False, but gradient 0 changed when the inputs were "
                                             r"overwritten \(with the values negated\)"):
        check_backward(PositivePartClaimsToReadNothing, negative)
    with pytest.raises(GradcheckError, match=r"check_backward\(ExpKeepsItsOutputUndeclared\): reads_output is not True, "
                                             r"but gradient 0 changed when the output was overwritten"):
        check_backward(ExpKeepsItsOutputUndeclared, x)
    assert check_backward(ExpDeclared, x)


def test_report_names_the_worst_entry_and_the_input():
    x = x23()
    with pytest.raises(GradcheckError) as info:
        gradcheck(SquareWrongAtOneEntry.apply, x)
    err = info.value
    assert err.input_index == 0 and err.index == (0, 2)
    assert err.analytic - err.numeric == pytest.approx(1.0, abs=1e-6)  # the planted +1
    assert err.analytic == x.grad.numpy()[0, 2]
    assert err.relative_error == pytest.approx(abs(err.analytic - err.numeric) / max(abs(err.analytic),
                                                                                      abs(err.numeric)))
    message = str(err)
    assert "1 of 6 entries" in message and "index (0, 2)" in message and "input 0 (shape (2, 3), float64, cpu)" in message
    assert repr(float(x.numpy()[1, 1])) in message  # the input's values, to reproduce it
    np.testing.assert_array_equal(err.inputs[0], x.numpy())


def test_float32_is_rerun_in_float64_and_compared():
    x = x23(np.float32)
    assert gradcheck(Square.apply, x, promote=True)
    with pytest.raises(GradcheckError, match="float32 gradient .* differs from the float64 one"):
        gradcheck(SquareWrongInFloat32.apply, x)
    assert gradcheck(SquareWrongInFloat32.apply, x23(np.float64))  # the float64 path is right


def test_float32_only_functions_are_checked_in_float32():
    x = x23(np.float32)
    assert gradcheck(Float32OnlySquare.apply, x)  # falls back: differences taken in float32
    with pytest.raises(GradcheckError, match="in float32"):
        gradcheck(Float32OnlySquareOffByFactor.apply, x)
    with pytest.raises(TypeError, match="promote=True, but fn cannot be re-run in float64"):
        gradcheck(Float32OnlySquare.apply, x, promote=True)
    assert gradcheck(Square.apply, x, promote=False)
    with pytest.raises(GradcheckError, match="in float32"):
        gradcheck(SquareOffByFactor.apply, x, promote=False)


def test_gradcheck_rejects_bad_arguments():
    with pytest.raises(ValueError, match="inputs: expected at least one Tensor with requires_grad=True"):
        gradcheck(lambda t: t * 2, md.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="promote: expected None, True or False"):
        gradcheck(lambda t: t * 2, x23(), promote="yes")
    with pytest.raises(ValueError, match=r"grad_output: expected shapes \[\(2, 3\)\], got \[\(3,\)\]"):
        gradcheck(lambda t: t * 2, x23(), grad_output=np.ones(3))
    with pytest.raises(TypeError, match="fn must return a Tensor"):
        gradcheck(lambda t: t.numpy(), x23())
    with pytest.raises(TypeError, match="op_class: expected a subclass of minidl.autograd.Function"):
        check_backward(lambda t: t, x23())
    with pytest.raises(ValueError, match="inputs: expected at least one Tensor"):
        check_backward(Square, md.tensor([1.0]))


def test_numerical_gradient_is_exact_for_a_quadratic():
    x = leaf([1.0, -2.0, 0.5])
    u = np.array([1.0, 2.0, 3.0])
    g = numerical_gradient(lambda t: t * t, [x], 0, u, 1e-6)
    np.testing.assert_allclose(g, 2 * x.numpy() * u, atol=1e-8)


def test_example_10_runs_and_shows_a_failure():
    path = Path(__file__).resolve().parents[1] / "examples" / "10_property_testing.py"
    spec = importlib.util.spec_from_file_location("example_10", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    example.test_softplus()
    example.test_leaky_relu()
    report = example.test_wrong_backward_is_caught()
    assert report.startswith("check_backward(WrongSoftplus): gradcheck: gradient of input 0") and "worst at index" in report


class SquareOnHost(Square):
    def backward(self, g):
        return (np.asarray(2 * g.get() * self.x.get()),)  # a NumPy gradient for a CuPy input


@pytest.mark.skipif(not CUDA, reason="no usable CUDA device")
def test_wrong_device_on_the_gpu():
    x = x23().to("cuda").detach().requires_grad_()
    assert check_backward(Square, x)
    with pytest.raises(GradcheckError, match="gradient 0: expected device cuda"):
        check_backward(SquareOnHost, x)
