"""The reference kernels (``minidl.kernels.reference``), the oracle of every fast path, checked
on their own: the lecture's worked examples by hand, finite differences for every backward
pass, and identities that any convolution and pooling must satisfy."""
import numpy as np
import pytest

from minidl.kernels import reference as ref

from conftest import numeric_grad
from test_lecture_examples import IMAGE, KERNEL, POOL_IN

x_lecture, k_lecture, p_lecture = (np.array(a)[None, None] for a in (IMAGE, KERNEL, POOL_IN))
ONE, NO_PAD = (1, 1), (0, 0)


def test_conv_lecture_example():
    y = ref.conv2d_forward(x_lecture, k_lecture, ONE, NO_PAD)
    np.testing.assert_allclose(y[0, 0], [[1.15, 4.5], [0.25, 0.0]], atol=1e-12)
    # d sum(y) / dx: the kernel laid down at every window; d sum(y) / dw: the sum of the windows
    gx, gw = ref.conv2d_backward(x_lecture, k_lecture, np.ones((1, 1, 2, 2)), ONE, NO_PAD)
    np.testing.assert_allclose(gx[0, 0], [[1.0, 1.2, 0.2], [1.2, 1.4, 0.2], [0.2, 0.2, 0.0]], atol=1e-12)
    np.testing.assert_allclose(gw[0, 0], [[1.75, 20.5], [0.25, 20.0]], atol=1e-12)


def test_pool_lecture_examples():
    np.testing.assert_array_equal(ref.max_pool2d_forward(p_lecture, (2, 2), ONE, NO_PAD)[0, 0],
                                  [[10, 10], [7, 7]])
    np.testing.assert_allclose(ref.avg_pool2d_forward(p_lecture, (2, 2), ONE, NO_PAD)[0, 0],
                               [[6.5, 6.5], [3.25, 5.25]], atol=1e-12)
    ones = np.ones((1, 1, 2, 2))
    # the 10 is the maximum of two windows, the 7 at (1, 1) of the other two
    np.testing.assert_array_equal(ref.max_pool2d_backward(p_lecture, ones, (2, 2), ONE, NO_PAD)[0, 0],
                                  [[0, 2, 0], [0, 2, 0], [0, 0, 0]])
    np.testing.assert_allclose(ref.avg_pool2d_backward(p_lecture, ones, (2, 2), ONE, NO_PAD)[0, 0],
                               np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 4)


@pytest.mark.parametrize("stride, padding", [((1, 1), (0, 0)), ((2, 1), (1, 2)), ((2, 3), (1, 0))])
def test_conv_backward_is_the_gradient(stride, padding):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 2, 5, 6)), rng.standard_normal((3, 2, 3, 2))
    gy = rng.standard_normal(ref.conv2d_forward(x, w, stride, padding).shape)
    gx, gw = ref.conv2d_backward(x, w, gy, stride, padding)
    np.testing.assert_allclose(gx, numeric_grad(lambda a: np.sum(ref.conv2d_forward(a, w, stride, padding) * gy), x),
                               rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gw, numeric_grad(lambda a: np.sum(ref.conv2d_forward(x, a, stride, padding) * gy), w),
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("kernel, stride, padding", [((2, 2), (1, 1), (0, 0)), ((3, 2), (2, 1), (1, 1)),
                                                     ((2, 3), (2, 2), (1, 0))])
def test_pool_backward_is_the_gradient(kind, kernel, stride, padding):
    rng = np.random.default_rng(1)
    x = rng.permutation(2 * 2 * 5 * 5).reshape(2, 2, 5, 5) / 7.0  # distinct values: no ties
    forward = ref.max_pool2d_forward if kind == "max" else ref.avg_pool2d_forward
    backward = ref.max_pool2d_backward if kind == "max" else ref.avg_pool2d_backward
    gy = rng.standard_normal(forward(x, kernel, stride, padding).shape)
    np.testing.assert_allclose(backward(x, gy, kernel, stride, padding),
                               numeric_grad(lambda a: np.sum(forward(a, kernel, stride, padding) * gy), x),
                               rtol=1e-6, atol=1e-8)


def test_identities():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4, 5))
    # a 1x1 convolution mixes channels pixel by pixel
    w = rng.standard_normal((4, 3, 1, 1))
    np.testing.assert_allclose(ref.conv2d_forward(x, w, ONE, NO_PAD), np.einsum("fc,nchw->nfhw", w[:, :, 0, 0], x))
    # stride 2 keeps every other output of stride 1
    w = rng.standard_normal((2, 3, 2, 2))
    np.testing.assert_allclose(ref.conv2d_forward(x, w, (2, 2), NO_PAD), ref.conv2d_forward(x, w, ONE, NO_PAD)[:, :, ::2, ::2])
    # a 1x1 window pools nothing; a window over the whole image is a global max / mean
    np.testing.assert_array_equal(ref.max_pool2d_forward(x, (1, 1), ONE, NO_PAD), x)
    np.testing.assert_allclose(ref.avg_pool2d_forward(x, (4, 5), ONE, NO_PAD)[..., 0, 0], x.mean(axis=(2, 3)))
    np.testing.assert_array_equal(ref.max_pool2d_forward(x, (4, 5), ONE, NO_PAD)[..., 0, 0], x.max(axis=(2, 3)))
    # max padding is -inf (never the maximum); avg padding is zero and counted
    np.testing.assert_array_equal(ref.max_pool2d_forward(-np.ones((1, 1, 2, 2)), (2, 2), ONE, (1, 1)), -np.ones((1, 1, 3, 3)))
    np.testing.assert_allclose(ref.avg_pool2d_forward(np.ones((1, 1, 2, 2)), (2, 2), (2, 2), (1, 1))[0, 0], np.full((2, 2), 0.25))


def test_max_ties_go_to_the_first_maximum():
    gx = ref.max_pool2d_backward(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)), (2, 2), ONE, NO_PAD)
    np.testing.assert_array_equal(gx[0, 0], [[1, 1, 0], [1, 1, 0], [0, 0, 0]])
