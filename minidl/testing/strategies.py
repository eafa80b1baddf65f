"""Hypothesis strategies for property tests of minidl ops, importable by users:

    from hypothesis import given, strategies as st
    from minidl.testing.strategies import tensors, valid_axes, gradients_like

    @given(x=tensors(dtype=st.sampled_from(["float32", "float64"]), away_from=0.0))
    def test_my_relu(x): ...

* ``tensors`` draws Tensors: shape (fixed or a strategy), dtype (float32/float64 or a strategy),
  device, requires_grad, value bounds, and values kept ``margin`` away from given points (the
  kink of relu/abs) or pairwise ``margin`` apart (no ties for max, sort, max-pooling), so that
  finite differences measure the true derivative.
* ``gradients_like(t)`` draws an upstream gradient of ``t``'s shape, dtype and device.
* ``shapes``, ``broadcastable_shapes(n)``, ``valid_axes(ndim)``, ``basic_indices(shape)`` and
  ``advanced_indices(shape)`` draw the arguments of shape ops, reductions and indexing.
* ``conv_configs`` and ``pool_configs`` draw layer settings (shapes only, so the same configs
  drive CPU and GPU tests: draw the arrays with ``tensors(shape=cfg["x_shape"], device=...)``).

Arguments are checked when a strategy is built, so a wrong one fails before any example is drawn.
"""
import numbers

import numpy
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from hypothesis.strategies import SearchStrategy

from .. import backend
from ..tensor import Tensor

_FLOATS = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))


def _fail(name, expected, got):
    raise ValueError(f"{name}: expected {expected}, got {got!r}")


def _check_int(name, value, low=0):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        _fail(name, f"an integer >= {low}", value)
    return int(value)


def _as_strategy(value, check):
    """``value`` checked, or a strategy whose draws get checked (see ``_draw_tensor``)."""
    if isinstance(value, SearchStrategy):
        return value.map(check)
    return check(value)


def _float_dtype(dtype):
    try:
        dt = numpy.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in _FLOATS:
        _fail("dtype", "float32 or float64 (or a strategy drawing them)", dtype)
    return dt


def _device(device):
    if device not in ("cpu", "cuda"):
        _fail("device", "'cpu' or 'cuda' (or a strategy drawing them)", device)
    if device == "cuda" and not backend.cuda_available():
        raise ValueError("device: 'cuda' was requested but no usable CUDA device was found; "
                         "draw from devices() to test on the devices this machine has")
    return device


def _shape(shape):
    if not isinstance(shape, (tuple, list)) or not all(
            isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 0 for n in shape):
        _fail("shape", "a tuple of non-negative integers (or a strategy drawing them)", shape)
    return tuple(int(n) for n in shape)


def devices():
    """The devices this machine can use: "cpu", and "cuda" when a GPU answers."""
    return st.sampled_from(["cpu", "cuda"] if backend.cuda_available() else ["cpu"])


def shapes(min_dims=1, max_dims=3, min_side=1, max_side=4):
    """Array shapes with ``min_dims..max_dims`` axes of ``min_side..max_side`` entries."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def _allowed_intervals(lo, hi, points, margin):
    """[lo, hi] without the open intervals (p - margin, p + margin): a list of closed intervals."""
    cuts = sorted((p - margin, p + margin) for p in points)
    out, start = [], lo
    for a, b in cuts:
        if a > start:
            out.append((start, min(a, hi)))
        start = max(start, b)
        if start >= hi:
            break
    if start < hi:
        out.append((start, hi))
    return [(a, b) for a, b in out if b >= a]


def _place(t, intervals):
    """Map t in [0, total length] monotonically onto the union of ``intervals``. The map only
    skips the excluded gaps, so it never brings two values closer together."""
    lengths = numpy.array([b - a for a, b in intervals])
    starts = numpy.array([a for a, _ in intervals])
    ends = numpy.cumsum(lengths)
    k = numpy.minimum(numpy.searchsorted(ends, t, side="left"), len(intervals) - 1)
    return numpy.minimum(starts[k] + t - (ends[k] - lengths[k]), starts[k] + lengths[k])


def _float_bounds(lo, hi, dtype):
    """The bounds rounded inwards to values ``dtype`` represents (hypothesis needs exact ones)."""
    # compared as Python floats: NumPy would round lo to float32 before comparing
    flo, fhi = dtype.type(lo), dtype.type(hi)
    if float(flo) < lo:
        flo = numpy.nextafter(flo, dtype.type(numpy.inf))
    if float(fhi) > hi:
        fhi = numpy.nextafter(fhi, dtype.type(-numpy.inf))
    return float(flo), float(fhi)


def tensors(shape=None, dtype=numpy.float64, device="cpu", requires_grad=True, min_value=-3.0,
            max_value=3.0, away_from=None, distinct=False, margin=0.05, elements=None, **shape_kwargs):
    """A Tensor with finite values in [min_value, max_value].

    * ``shape``: a tuple, a strategy of tuples, or None for ``shapes(**shape_kwargs)``.
    * ``dtype``: float32, float64 (names or NumPy types) or a strategy drawing them.
    * ``device``: "cpu", "cuda" (only where a GPU answers) or a strategy such as ``devices()``.
    * ``away_from``: a number or a list of numbers: every value v has |v - p| >= margin for
      each of them (0 for relu and abs, the clip bounds for clip).
    * ``distinct=True``: all values pairwise at least ``margin`` apart, so that a max, a sort
      or a max-pooling window has no ties, not even after a finite-difference step smaller than
      margin / 2. It needs (size - 1) * margin <= the length of the allowed range.
    * ``elements``: a hypothesis strategy for single values, replacing the bounds (not
      combinable with ``away_from`` or ``distinct``).

    The margins hold for the values as float64; a float32 cast moves them by at most one
    rounding (about 1e-7 relative).
    """
    if not isinstance(requires_grad, bool):
        _fail("requires_grad", "True or False", requires_grad)
    for name, v in (("min_value", min_value), ("max_value", max_value)):
        if not isinstance(v, numbers.Real) or not numpy.isfinite(v):
            _fail(name, "a finite number", v)
    if not min_value < max_value:
        raise ValueError(f"min_value, max_value: expected min_value < max_value, got {min_value!r} and {max_value!r}")
    points = () if away_from is None else (away_from,) if isinstance(away_from, numbers.Real) else tuple(away_from)
    if not all(isinstance(p, numbers.Real) and numpy.isfinite(p) for p in points):
        _fail("away_from", "a finite number or a list of them", away_from)
    if not isinstance(margin, numbers.Real) or not margin > 0:
        _fail("margin", "a positive number", margin)
    if not isinstance(distinct, bool):
        _fail("distinct", "True or False", distinct)
    if elements is not None and (points or distinct):
        raise ValueError("elements: cannot be combined with away_from or distinct (they shape the values themselves)")
    if elements is not None and not isinstance(elements, SearchStrategy):
        _fail("elements", "a hypothesis strategy", elements)
    intervals = _allowed_intervals(float(min_value), float(max_value), [float(p) for p in points], float(margin))
    if points and not intervals:
        raise ValueError(f"away_from: no value in [{min_value}, {max_value}] is {margin} away from {list(points)}")
    shape_st = shapes(**shape_kwargs) if shape is None else _as_strategy(shape, _shape)
    if distinct and not isinstance(shape, SearchStrategy) and shape is not None:
        _distinct_room(int(numpy.prod(_shape(shape))), intervals, float(margin))  # fail now, not per example
    dtype_st = _as_strategy(dtype, _float_dtype)
    device_st = _as_strategy(device, _device)
    total = sum(b - a for a, b in intervals)
    cache = {}  # one array strategy per (shape, dtype): building strategies costs more than drawing

    def values(shp, dt):
        if (shp, dt) not in cache:
            if elements is not None:
                strategy = hnp.arrays(dt, shp, elements=elements)
            elif distinct:
                strategy = _distinct_values(shp, intervals, float(margin))
            elif points:
                strategy = hnp.arrays(numpy.float64, shp, elements=st.floats(0.0, total)).map(
                    lambda t: _place(t, intervals))
            else:
                lo, hi = _float_bounds(min_value, max_value, dt)
                strategy = hnp.arrays(dt, shp, elements=st.floats(
                    lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=8 * dt.itemsize))
            cache[shp, dt] = strategy
        return cache[shp, dt]

    return _draw_tensor(shape_st, dtype_st, device_st, values, requires_grad)


@st.composite  # decorated once here: st.composite on every call of tensors() costs milliseconds
def _draw_tensor(draw, shape_st, dtype_st, device_st, values, requires_grad):
    shape, dtype, device = (draw(v) if isinstance(v, SearchStrategy) else v for v in (shape_st, dtype_st, device_st))
    array = draw(values(shape, dtype)).astype(dtype, copy=False)
    return Tensor(backend.to_device(array, device), requires_grad=requires_grad)


def _distinct_room(n, intervals, margin):
    total = sum(b - a for a, b in intervals)
    room = total - (n - 1) * margin
    if room < 0:
        raise ValueError(f"distinct: {n} values pairwise {margin:g} apart need a range of length "
                         f"{(n - 1) * margin:g}, but the allowed values span {total:g}; "
                         "widen [min_value, max_value] or lower margin")
    return room


@st.composite
def _distinct_values(draw, shape, intervals, margin):
    # n sorted offsets in [0, room], the k-th shifted by k * margin: consecutive values at
    # least margin apart; then a drawn permutation places them in the array.
    n = int(numpy.prod(shape))
    room = _distinct_room(n, intervals, margin)
    offsets = numpy.sort(draw(hnp.arrays(numpy.float64, n, elements=st.floats(0.0, room))))
    t = offsets + numpy.arange(n) * margin
    order = numpy.array(draw(st.permutations(range(n))), dtype=numpy.int64)
    return _place(t, intervals)[order].reshape(shape)


def gradients_like(tensor, min_value=-3.0, max_value=3.0):
    """An upstream gradient for ``tensor``: a Tensor of its shape, dtype and device (no grad)."""
    if not isinstance(tensor, Tensor):
        _fail("tensor", "a minidl Tensor", type(tensor).__name__)
    return tensors(shape=tensor.shape, dtype=tensor.dtype, device=tensor.device, requires_grad=False,
                   min_value=min_value, max_value=max_value)


def broadcastable_shapes(n=2, min_dims=0, max_dims=3, min_side=1, max_side=4):
    """A tuple of ``n`` shapes that NumPy broadcasts together (``numpy.broadcast_shapes(*s)``)."""
    n = _check_int("n", n, low=1)
    return hnp.mutually_broadcastable_shapes(num_shapes=n, min_dims=min_dims, max_dims=max_dims,
                                             min_side=min_side, max_side=max_side).map(lambda r: r.input_shapes)


def valid_axes(ndim, allow_none=True, allow_int=True, allow_tuple=True, negative=True, min_axes=0, max_axes=None):
    """An ``axis`` argument valid for an array with ``ndim`` axes: None, an int in
    [-ndim, ndim - 1], or a tuple of ``min_axes..max_axes`` different axes (as positions; with
    ``negative`` some are written from the end). Use ``st.booleans()`` for ``keepdims``."""
    ndim = _check_int("ndim", ndim)
    min_axes = _check_int("min_axes", min_axes)
    max_axes = ndim if max_axes is None else _check_int("max_axes", max_axes)
    options = []
    if allow_none:
        options.append(st.none())
    if allow_int and ndim > 0:
        options.append(st.integers(-ndim if negative else 0, ndim - 1))
    if allow_tuple and min_axes <= min(max_axes, ndim):
        if ndim == 0:
            options.append(st.just(()))
        else:
            def spell(axes_and_signs):
                axes, signs = axes_and_signs
                return tuple(a - ndim if s else a for a, s in zip(axes, signs))
            sign = st.booleans() if negative else st.just(False)
            options.append(st.lists(st.integers(0, ndim - 1), min_size=min_axes, max_size=min(max_axes, ndim),
                                    unique=True).flatmap(
                lambda axes: st.tuples(st.just(axes), st.lists(sign, min_size=len(axes), max_size=len(axes))))
                .map(spell))
    if not options:
        raise ValueError(f"valid_axes: no axis argument is possible for ndim={ndim} with these options")
    return st.one_of(options)


def _result_size(shape, index):
    return numpy.empty(shape)[index].size


def basic_indices(shape, min_dims=0, max_dims=None, allow_ellipsis=True, allow_newaxis=False, allow_empty=False):
    """A basic index for an array of ``shape``: ints, slices (any step), Ellipsis and, with
    ``allow_newaxis``, None; with ``allow_empty=False`` it selects at least one element."""
    shape = _shape(shape)
    strategy = hnp.basic_indices(shape, min_dims=min_dims, max_dims=max_dims,
                                 allow_ellipsis=allow_ellipsis, allow_newaxis=allow_newaxis)
    if not allow_empty:
        if 0 in shape:
            _fail("shape", "no zero-length axis when allow_empty=False", shape)
        strategy = strategy.filter(lambda index: _result_size(shape, index) > 0)
    return strategy


@st.composite
def _advanced(draw, shape, kinds, repeats):
    ndim = len(shape)
    start = draw(st.integers(0, ndim - 1))  # full slices before the advanced part: x[:, idx]
    k = draw(st.integers(1, ndim - start))
    lead = (slice(None),) * start
    kind = draw(st.sampled_from(kinds))
    if kind == "boolean":
        mask = draw(hnp.arrays(numpy.bool_, shape[start:start + k]))
        mask.flat[draw(st.integers(0, mask.size - 1))] = True  # never an empty selection
        return lead + (mask,) if lead else mask
    index_shapes = draw(broadcastable_shapes(k, min_dims=1, max_dims=2, max_side=4))
    arrays = [draw(hnp.arrays(numpy.int64, s, elements=st.integers(-n, n - 1)))
              for s, n in zip(index_shapes, shape[start:start + k])]
    if repeats:
        arrays = [a.copy() for a in numpy.broadcast_arrays(*arrays)]
        if arrays[0].size < 2:
            arrays = [numpy.concatenate([a.reshape(-1)] * 2) for a in arrays]
        for a in arrays:
            a.flat[-1] = a.flat[0]
    if k == 1 and not lead and arrays[0].ndim == 1 and draw(st.booleans()):
        return arrays[0].tolist()  # a plain list, x[[0, 2, 0]]
    return lead + tuple(arrays)


def advanced_indices(shape, kinds=("integer", "boolean"), repeats=False):
    """An advanced index for an array of ``shape`` that selects at least one element.

    "integer": a tuple of integer arrays (broadcastable together, negative entries included)
    for some consecutive axes, after full slices for the axes before them, or a plain list for
    the first axis. "boolean": a mask over consecutive axes (at least one True). With
    ``repeats=True`` the index is always of the integer kind, and its arrays share one shape and select one position twice, which a
    backward pass must accumulate rather than assign."""
    shape = _shape(shape)
    if not shape or 0 in shape:
        _fail("shape", "at least one axis and no zero-length axis", shape)
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    if not kinds or not set(kinds) <= {"integer", "boolean"}:
        _fail("kinds", "a non-empty selection of 'integer' and 'boolean'", kinds)
    if repeats:  # a mask selects each position once at most
        if "integer" not in kinds:
            _fail("kinds", "'integer' among them when repeats=True", kinds)
        kinds = ("integer",)
    return _advanced(shape, kinds, bool(repeats))


def _conv_out(n, k, s, p):
    return (n + 2 * p - k) // s + 1


@st.composite
def conv_configs(draw, max_batch=2, max_channels=3, max_filters=3, max_kernel=4, max_stride=3,
                 max_padding=2, max_size=7):
    """dict(x_shape, w_shape, kernel, stride, padding, out_shape) of a conv2d with a non-empty
    output: x (N, C, H, W), w (F, C, kh, kw), output (N, F, Ho, Wo) with
    Ho = (H + 2 ph - kh) // sh + 1. ``max_stride=1`` gives the FFT path's configurations."""
    kh, kw = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    ph, pw = draw(st.integers(0, max_padding)), draw(st.integers(0, max_padding))
    sh, sw = draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride))
    # the smallest input that still gives one output: H + 2 ph >= kh
    h = draw(st.integers(max(1, kh - 2 * ph), max(max_size, kh - 2 * ph)))
    w = draw(st.integers(max(1, kw - 2 * pw), max(max_size, kw - 2 * pw)))
    n, c, f = (draw(st.integers(1, max_batch)), draw(st.integers(1, max_channels)),
               draw(st.integers(1, max_filters)))
    return dict(x_shape=(n, c, h, w), w_shape=(f, c, kh, kw), kernel=(kh, kw), stride=(sh, sw), padding=(ph, pw),
                out_shape=(n, f, _conv_out(h, kh, sh, ph), _conv_out(w, kw, sw, pw)))


@st.composite
def pool_configs(draw, max_batch=2, max_channels=3, max_kernel=3, max_stride=3, max_size=7):
    """dict(x_shape, kernel, stride, padding, out_shape) of a 2-D pooling with a non-empty output
    and padding <= kernel // 2 (PyTorch's rule, so no window lies wholly in the padding)."""
    kh, kw = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    sh, sw = draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride))
    h = draw(st.integers(max(1, kh - 2 * ph), max(max_size, kh - 2 * ph)))
    w = draw(st.integers(max(1, kw - 2 * pw), max(max_size, kw - 2 * pw)))
    n, c = draw(st.integers(1, max_batch)), draw(st.integers(1, max_channels))
    return dict(x_shape=(n, c, h, w), kernel=(kh, kw), stride=(sh, sw), padding=(ph, pw),
                out_shape=(n, c, _conv_out(h, kh, sh, ph), _conv_out(w, kw, sw, pw)))
