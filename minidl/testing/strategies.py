"""Hypothesis strategies for property tests of minidl ops, importable by users:

    from hypothesis import given
    from minidl.testing.strategies import tensors, broadcastable_shapes, conv_configs

``tensors`` draws float64 Tensors with values kept away from the extremes (finite
differences need moderate values); ``broadcastable_shapes`` draws two shapes that NumPy
broadcasts together; ``conv_configs`` and ``pool_configs`` draw valid layer settings.
"""
import numpy
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ..tensor import Tensor


def shapes(min_dims=1, max_dims=3, min_side=1, max_side=4):
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


@st.composite
def tensors(draw, shape=None, dtype=numpy.float64, elements=None, requires_grad=True,
            min_value=-3.0, max_value=3.0, **shape_kwargs):
    """A Tensor of ``shape`` (or a drawn one) with values in [min_value, max_value]."""
    if shape is None:
        shape = draw(shapes(**shape_kwargs))
    elements = elements or st.floats(min_value, max_value, allow_nan=False, allow_infinity=False, width=64)
    array = draw(hnp.arrays(dtype, shape, elements=elements))
    return Tensor(array, requires_grad=requires_grad)


@st.composite
def broadcastable_shapes(draw, max_dims=3, max_side=4):
    """A pair of shapes (a, b) such that ``numpy.broadcast_shapes(a, b)`` exists."""
    a, b = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=max_dims, max_side=max_side)).input_shapes
    return a, b


@st.composite
def conv_configs(draw, max_batch=2, max_channels=3, max_filters=3, max_kernel=4, max_stride=3,
                 max_padding=2, max_size=7):
    """dict(x_shape, w_shape, stride, padding) for a conv2d whose output is non-empty."""
    kh, kw = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    ph, pw = draw(st.integers(0, max_padding)), draw(st.integers(0, max_padding))
    sh, sw = draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride))
    h = draw(st.integers(max(1, kh - 2 * ph), max_size))
    w = draw(st.integers(max(1, kw - 2 * pw), max_size))
    n, c, f = (draw(st.integers(1, max_batch)), draw(st.integers(1, max_channels)),
               draw(st.integers(1, max_filters)))
    return dict(x_shape=(n, c, h, w), w_shape=(f, c, kh, kw), stride=(sh, sw), padding=(ph, pw))


@st.composite
def pool_configs(draw, max_batch=2, max_channels=3, max_kernel=3, max_stride=3, max_size=7):
    """dict(x_shape, kernel, stride, padding) for a pooling with padding <= kernel // 2."""
    kh, kw = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    sh, sw = draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride))
    h = draw(st.integers(max(1, kh - 2 * ph), max_size))
    w = draw(st.integers(max(1, kw - 2 * pw), max_size))
    n, c = draw(st.integers(1, max_batch)), draw(st.integers(1, max_channels))
    return dict(x_shape=(n, c, h, w), kernel=(kh, kw), stride=(sh, sw), padding=(ph, pw))
