"""Tests of the array-level conv/pool kernels against the float64 reference kernels.

* NumPy path: every function, forward and backward, over random configurations
  (hypothesis), both internal CPU layouts of conv, float64 and float32.
* CUDA sources on the host: the kernel text from ``cuda_sources`` compiled as C++ with a
  tiny shim (one "thread" running the whole grid-stride loop) and driven through the very
  same GPU-path Python code with ``xp=numpy``: checks index math and argument order
  without a GPU. Skipped when no C++ compiler is found.
* CuPy path: the same comparisons on a real GPU; skipped when CuPy or a GPU is absent.
"""
import ctypes
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minidl.backend import cuda_available
from minidl.kernels import (avg_pool2d_backward, avg_pool2d_forward, conv2d_backward,
                            conv2d_forward, max_pool2d_backward, max_pool2d_forward)
from minidl.kernels import conv as conv_mod
from minidl.kernels import conv_cuda
from minidl.kernels import conv_im2col
from minidl.kernels import conv_fft
from minidl.kernels import cuda_sources
from minidl.kernels import pool_cuda
from minidl.kernels import reference
from minidl.kernels.arrays import Cache
from minidl.kernels.runtime import workspace
from minidl.testing.strategies import conv_configs as public_conv_configs
from minidl.testing.strategies import pool_configs as public_pool_configs

SETTINGS = settings(max_examples=40, deadline=None)


# ---------------------------------------------------------------------------------------
# the oracle: the reference kernels (tested on their own in test_reference.py), in float64
# ---------------------------------------------------------------------------------------
def out_size(n, k, s, p):
    return (n + 2 * p - k) // s + 1


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def ref_conv(x, w, stride, padding):
    return reference.conv2d_forward(_f64(x), _f64(w), stride, padding)


def ref_conv_grads(x, w, gy, stride, padding):
    return reference.conv2d_backward(_f64(x), _f64(w), _f64(gy), stride, padding)


def ref_pool(x, kernel, stride, padding, gy, mode):
    """(forward, gradient) of max or avg pooling by the reference kernels."""
    x, gy = _f64(x), _f64(gy)
    if mode == "max":
        return (reference.max_pool2d_forward(x, kernel, stride, padding),
                reference.max_pool2d_backward(x, gy, kernel, stride, padding))
    return (reference.avg_pool2d_forward(x, kernel, stride, padding),
            reference.avg_pool2d_backward(x, gy, kernel, stride, padding))


# ---------------------------------------------------------------------------------------
# random configurations
# ---------------------------------------------------------------------------------------
def _seeded(configs, **extra):
    """The public configurations plus a ``seed`` for the test data (and ``extra`` draws)."""
    return st.builds(lambda cfg, seed, **kw: dict(cfg, seed=seed, **kw), configs, st.integers(0, 2**31 - 1), **extra)


def conv_configs(**kwargs):
    return _seeded(public_conv_configs(**kwargs))


def pool_configs(**kwargs):
    # with ``ties`` the values come from {-2..2}, so windows hold repeated maxima
    return _seeded(public_pool_configs(**{"max_kernel": 4, **kwargs}), ties=st.booleans())


def conv_data(cfg, dtype=np.float64):
    rng = np.random.default_rng(cfg["seed"])
    x = rng.standard_normal(cfg["x_shape"]).astype(dtype)
    w = rng.standard_normal(cfg["w_shape"]).astype(dtype)
    gy = rng.standard_normal(cfg["out_shape"]).astype(dtype)
    return x, w, gy


def pool_data(cfg, dtype=np.float64):
    rng = np.random.default_rng(cfg["seed"])
    shape = cfg["x_shape"]
    x = rng.integers(-2, 3, shape) if cfg["ties"] else rng.standard_normal(shape)
    gy = rng.standard_normal(cfg["out_shape"])
    return x.astype(dtype), gy.astype(dtype)


TOL64 = dict(rtol=1e-10, atol=1e-10)
TOL32 = dict(rtol=2e-4, atol=2e-4)


# ---------------------------------------------------------------------------------------
# NumPy path
# ---------------------------------------------------------------------------------------
class TestConvNumpy:
    @SETTINGS
    @given(cfg=conv_configs(), layout=st.sampled_from(["cnhw", "chwn", "nhwc", None]))
    def test_forward_backward_float64(self, cfg, layout):
        x, w, gy = conv_data(cfg)
        y, cache = conv2d_forward(x, w, cfg["stride"], cfg["padding"], layout=layout)
        assert y.dtype == np.float64 and y.flags.c_contiguous
        np.testing.assert_allclose(y, ref_conv(x, w, cfg["stride"], cfg["padding"]), **TOL64)
        gx, gw = conv2d_backward(gy, cache)
        rgx, rgw = ref_conv_grads(x, w, gy, cfg["stride"], cfg["padding"])
        np.testing.assert_allclose(gx, rgx, **TOL64)
        np.testing.assert_allclose(gw, rgw, **TOL64)
        assert gx.shape == x.shape and gw.shape == w.shape

    @settings(max_examples=15, deadline=None)
    @given(cfg=conv_configs(), layout=st.sampled_from(["cnhw", "chwn", "nhwc"]))
    def test_float32_stays_float32(self, cfg, layout):
        x, w, gy = conv_data(cfg, np.float32)
        y, cache = conv2d_forward(x, w, cfg["stride"], cfg["padding"], layout=layout)
        gx, gw = conv2d_backward(gy, cache)
        assert y.dtype == gx.dtype == gw.dtype == np.float32
        np.testing.assert_allclose(y, ref_conv(x, w, cfg["stride"], cfg["padding"]), **TOL32)
        rgx, rgw = ref_conv_grads(x, w, gy, cfg["stride"], cfg["padding"])
        np.testing.assert_allclose(gx, rgx, **TOL32)
        np.testing.assert_allclose(gw, rgw, **TOL32)

    @settings(max_examples=30, deadline=None)
    @given(cfg=conv_configs(max_batch=7), layout=st.sampled_from(["cnhw", "chwn", "nhwc"]),
           per_chunk=st.integers(1, 3), need=st.sampled_from([(True, True), (True, False), (False, True)]))
    def test_batch_chunks_match_reference(self, cfg, layout, per_chunk, need):
        """im2col runs a chunk of images at a time (``CHUNK_BYTES``): with chunks of 1-3 images,
        a shorter last chunk included, every output and gradient is still the reference's."""
        x, w, gy = conv_data(cfg)
        (kh, kw), (Ho, Wo) = cfg["kernel"], cfg["out_shape"][2:]
        per_image = kh * kw * cfg["x_shape"][1] * Ho * Wo * 8
        old = conv_im2col.CHUNK_BYTES
        conv_im2col.CHUNK_BYTES = per_chunk * per_image
        try:
            N = cfg["x_shape"][0]
            per = min(per_chunk, -(-N // conv_im2col.MIN_CHUNKS))  # and at least MIN_CHUNKS chunks
            assert len(conv_im2col._chunks(N, per_image)) == -(-N // per)
            y, cache = conv2d_forward(x, w, cfg["stride"], cfg["padding"], layout=layout)
            gx, gw = conv2d_backward(gy, cache, *need)
        finally:
            conv_im2col.CHUNK_BYTES = old
        assert "cols" not in vars(cache)  # nothing of cols's size is kept for backward
        np.testing.assert_allclose(y, ref_conv(x, w, cfg["stride"], cfg["padding"]), **TOL64)
        rgx, rgw = ref_conv_grads(x, w, gy, cfg["stride"], cfg["padding"])
        for got, want, needed in ((gx, rgx, need[0]), (gw, rgw, need[1])):
            if needed:
                np.testing.assert_allclose(got, want, **TOL64)
            else:
                assert got is None

    @pytest.mark.parametrize("C, F, k, pad, stride", [(16, 24, 3, 1, 1), (16, 20, 5, 2, 1), (17, 9, 3, 0, 1),
                                                    (16, 24, 3, 1, 2), (3, 8, 5, 2, 1)])
    def test_channels_last_input_gradient_paths(self, C, F, k, pad, stride):
        """Channels last, dL/dx is a convolution of dy from ``BY_CONV_MIN_CHANNELS_LAST`` input
        channels up even where F > C, else col2im (few channels, or stride 2): both paths give
        the reference's gradients."""
        rng = np.random.default_rng(C * F + k)
        x, w = rng.standard_normal((3, C, 7, 6)), rng.standard_normal((F, C, k, k))
        by_conv = conv_im2col._input_grad_by_conv((stride, stride), (pad, pad), (k, k), C, F, channels_last=True)
        assert by_conv == (stride == 1 and (C >= conv_im2col.BY_CONV_MIN_CHANNELS_LAST or F <= C))
        y, cache = conv2d_forward(x, w, (stride, stride), (pad, pad), layout="nhwc")
        gy = rng.standard_normal(y.shape)
        gx, gw = conv2d_backward(gy, cache)
        rgx, rgw = ref_conv_grads(x, w, gy, (stride, stride), (pad, pad))
        np.testing.assert_allclose(y, ref_conv(x, w, (stride, stride), (pad, pad)), **TOL64)
        np.testing.assert_allclose(gx, rgx, **TOL64)
        np.testing.assert_allclose(gw, rgw, **TOL64)

    def test_worked_example(self):
        x = np.array([[1, 0.5, 20], [0.25, 0, 0], [0, 0, 20]])[None, None]
        w = np.array([[1, 0.2], [0.2, 0]])[None, None]
        y, _ = conv2d_forward(x, w, (1, 1), (0, 0))
        np.testing.assert_allclose(y[0, 0], [[1.15, 4.5], [0.25, 0]], rtol=1e-12, atol=1e-12)

    def test_gradients_match_finite_differences(self):
        rng = np.random.default_rng(1)
        x, w = rng.standard_normal((2, 2, 5, 4)), rng.standard_normal((3, 2, 3, 2))
        stride, padding = (2, 1), (1, 1)
        y, cache = conv2d_forward(x, w, stride, padding)
        gy = rng.standard_normal(y.shape)
        gx, gw = conv2d_backward(gy, cache)

        def loss(x_, w_):
            return float(np.sum(conv2d_forward(x_, w_, stride, padding)[0] * gy))

        eps = 1e-6
        for arr, grad, which in ((x, gx, 0), (w, gw, 1)):
            num = np.zeros_like(arr)
            for idx in np.ndindex(arr.shape):
                plus, minus = arr.copy(), arr.copy()
                plus[idx] += eps
                minus[idx] -= eps
                args_p = (plus, w) if which == 0 else (x, plus)
                args_m = (minus, w) if which == 0 else (x, minus)
                num[idx] = (loss(*args_p) - loss(*args_m)) / (2 * eps)
            np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-7)

    def test_skipped_gradients(self):
        x, w, gy = conv_data(dict(x_shape=(1, 2, 5, 5), w_shape=(2, 2, 3, 3), out_shape=(1, 2, 5, 5),
                                  kernel=(3, 3), stride=(1, 1), padding=(1, 1), seed=0))
        _, cache = conv2d_forward(x, w, (1, 1), (1, 1))
        gx, gw = conv2d_backward(gy, cache, need_x_grad=False)
        assert gx is None and gw.shape == w.shape
        gx, gw = conv2d_backward(gy, cache, need_w_grad=False)
        assert gw is None and gx.shape == x.shape
        assert conv2d_backward(gy, cache, False, False) == (None, None)

    def test_non_contiguous_inputs(self):
        rng = np.random.default_rng(3)
        x = rng.standard_normal((5, 6, 3, 2)).transpose(3, 2, 1, 0)  # (2, 3, 6, 5), strided
        w = rng.standard_normal((2, 3, 3, 3))[:, :, ::-1]
        y, cache = conv2d_forward(x, w, (1, 2), (1, 0))
        np.testing.assert_allclose(y, ref_conv(x, w, (1, 2), (1, 0)), **TOL64)
        gy = rng.standard_normal(y.shape).transpose(0, 1, 3, 2).copy().transpose(0, 1, 3, 2)
        gx, gw = conv2d_backward(gy, cache)
        rgx, rgw = ref_conv_grads(x, w, gy, (1, 2), (1, 0))
        np.testing.assert_allclose(gx, rgx, **TOL64)
        np.testing.assert_allclose(gw, rgw, **TOL64)

    def test_errors(self):
        x, w = np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 5, 5))
        with pytest.raises(ValueError, match=r"3x3.*5x5"):
            conv2d_forward(x, w, (1, 1), (0, 0))
        conv2d_forward(x, w, (1, 1), (1, 1))  # padded input 5x5 is just enough
        with pytest.raises(ValueError, match="channels"):
            conv2d_forward(np.zeros((1, 2, 3, 3)), np.zeros((1, 1, 1, 1)), (1, 1), (0, 0))
        with pytest.raises(ValueError, match="4-D"):
            conv2d_forward(np.zeros((2, 3, 3)), np.zeros((1, 2, 1, 1)), (1, 1), (0, 0))
        with pytest.raises(TypeError):
            conv2d_forward(np.zeros((1, 1, 3, 3), int), np.zeros((1, 1, 1, 1), int), (1, 1), (0, 0))


class TestConvDispatch:
    """``conv.ALGORITHMS`` (the conv2d kernel's implementations) is the one table the dispatcher reads: a new row is a new algorithm."""

    def test_a_new_algorithm_plugs_in(self, monkeypatch):
        calls = []

        class Doubled:  # the reference convolution, times two, recording its calls
            @staticmethod
            def forward(x, w, stride, padding, out_hw, dtype):
                calls.append("forward")
                y = 2 * reference.conv2d_forward(x, w, stride, padding)
                return y, Cache(device="cpu", algorithm="doubled", x=x, w=w, stride=stride,
                                padding=padding, x_shape=x.shape, w_shape=w.shape, out_hw=out_hw)

            @staticmethod
            def backward(grad_y, c, need_x_grad, need_w_grad):
                calls.append("backward")
                return reference.conv2d_backward(c.x, c.w, 2 * grad_y, c.stride, c.padding)

        monkeypatch.setitem(conv_mod.ALGORITHMS, "doubled", conv_mod.Algorithm({"cpu": Doubled}))
        x, w, gy = conv_data(dict(x_shape=(1, 2, 5, 5), w_shape=(2, 2, 3, 3), out_shape=(1, 2, 5, 5), seed=0))
        y, cache = conv2d_forward(x, w, (1, 1), (1, 1), algorithm="doubled")
        np.testing.assert_allclose(y, 2 * ref_conv(x, w, (1, 1), (1, 1)), **TOL64)
        gx, gw = conv2d_backward(gy, cache)
        rgx, rgw = ref_conv_grads(x, w, gy, (1, 1), (1, 1))
        np.testing.assert_allclose(gx, 2 * rgx, **TOL64)
        assert calls == ["forward", "backward"]
        with pytest.raises(ValueError, match="algorithm must be 'reference' or 'im2col' or 'fft' or 'doubled'"):
            conv2d_forward(x, w, (1, 1), (1, 1), algorithm="direct")

    def test_layout_is_checked(self):
        x, w = np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 2, 2))
        with pytest.raises(ValueError, match="layout must be one of 'cnhw', 'chwn', 'nhwc', got 'nchw'"):
            conv2d_forward(x, w, (1, 1), (0, 0), layout="nchw")
        assert conv2d_forward(x, w, (1, 1), (0, 0), layout="chwn")[1].layout.name == "chwn"
        assert conv2d_forward(x, w, (1, 1), (0, 0), layout="nhwc")[1].layout.name == "nhwc"


def stride1_conv_configs():
    """conv_configs with stride 1 and kernels up to 6x6 (the FFT path's domain)."""
    return conv_configs(max_kernel=6, max_stride=1, max_size=9)


class TestConvFFT:
    """The FFT algorithm (``conv_fft``) against the plain-loop reference and im2col."""

    @SETTINGS
    @given(cfg=stride1_conv_configs())
    def test_matches_reference_float64(self, cfg):
        x, w, gy = conv_data(cfg)
        y, cache = conv2d_forward(x, w, (1, 1), cfg["padding"], algorithm="fft")
        assert cache.algorithm == "fft" and y.dtype == np.float64 and y.flags.c_contiguous
        np.testing.assert_allclose(y, ref_conv(x, w, (1, 1), cfg["padding"]), **TOL64)
        gx, gw = conv2d_backward(gy, cache)
        rgx, rgw = ref_conv_grads(x, w, gy, (1, 1), cfg["padding"])
        np.testing.assert_allclose(gx, rgx, **TOL64)
        np.testing.assert_allclose(gw, rgw, **TOL64)
        assert gx.flags.c_contiguous and gw.flags.c_contiguous

    @SETTINGS
    @given(cfg=stride1_conv_configs())
    def test_planes_of_the_exact_bound_are_enough(self, cfg):
        """With the fast-length rounding switched off the planes are exactly
        max(H + ph, Ho, kh) long, shorter than the padded image whenever pad > 0: the windows
        that wrap around must land in the zero padding, in all three products."""
        x, w, gy = conv_data(cfg)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(conv_fft, "fft_size", lambda n: n)
            y, cache = conv2d_forward(x, w, (1, 1), cfg["padding"], algorithm="fft")
            gx, gw = conv2d_backward(gy, cache)
        (kh, kw), (ph, pw) = w.shape[2:], cfg["padding"]
        H, W = x.shape[2:]
        assert cache.fft_hw == (max(H + ph, y.shape[2], kh), max(W + pw, y.shape[3], kw))
        np.testing.assert_allclose(y, ref_conv(x, w, (1, 1), cfg["padding"]), **TOL64)
        rgx, rgw = ref_conv_grads(x, w, gy, (1, 1), cfg["padding"])
        np.testing.assert_allclose(gx, rgx, **TOL64)
        np.testing.assert_allclose(gw, rgw, **TOL64)

    def test_madry_second_layer_planes_are_16x16(self):
        assert conv_fft.fft_extent(14, 2, 5) == 16 and conv_fft.fft_extent(28, 2, 5) == 30

    @settings(max_examples=15, deadline=None)
    @given(cfg=stride1_conv_configs())
    def test_float32_agrees_with_im2col(self, cfg):
        x, w, gy = conv_data(cfg, np.float32)
        y1, c1 = conv2d_forward(x, w, (1, 1), cfg["padding"], algorithm="fft")
        y0, c0 = conv2d_forward(x, w, (1, 1), cfg["padding"], algorithm="im2col")
        assert y1.dtype == np.float32
        np.testing.assert_allclose(y1, y0, **TOL32)
        for a, b in zip(conv2d_backward(gy, c1), conv2d_backward(gy, c0)):
            assert a.dtype == np.float32
            np.testing.assert_allclose(a, b, **TOL32)

    def test_madry_conv2_shape_is_auto_selected_and_exact(self, monkeypatch):
        # The Madry network's second conv (scaled down in size): 5x5, C*k*k = 800.
        big, small = (28, 28), (8, 8)
        assert conv_mod.use_fft(128, 32, 3, (5, 5), (1, 1), big) and conv_mod.use_fft(32, 32, 3, (5, 5), (1, 1), big)
        assert not conv_mod.use_fft(128, 32, 3, (5, 5), (2, 2), big) and not conv_mod.use_fft(128, 1, 32, (5, 5), (1, 1), big)
        assert not conv_mod.use_fft(128, 64, 64, (3, 3), (1, 1), big) and not conv_mod.use_fft(16, 32, 3, (5, 5), (1, 1), big)
        # 3x3 layers stay on im2col but for many channels on small maps (cifar_cnn's last layer)
        assert conv_mod.use_fft(128, 96, 96, (3, 3), (1, 1), small)
        assert not conv_mod.use_fft(128, 48, 96, (3, 3), (1, 1), small)
        assert not conv_mod.use_fft(128, 96, 96, (3, 3), (1, 1), (9, 8))
        rng = np.random.default_rng(0)
        x, w = rng.standard_normal((2, 32, 7, 6)), rng.standard_normal((3, 32, 5, 5))
        assert conv2d_forward(x, w, (1, 1), (2, 2))[1].algorithm == "im2col"   # batch 2 < FFT_MIN_BATCH
        monkeypatch.setattr(conv_mod, "FFT_MIN_BATCH", 2)
        y, cache = conv2d_forward(x, w, (1, 1), (2, 2))
        assert cache.algorithm == "fft"
        np.testing.assert_allclose(y, ref_conv(x, w, (1, 1), (2, 2)), **TOL64)
        gy = rng.standard_normal(y.shape)
        gx, gw = conv2d_backward(gy, cache, need_x_grad=False)
        assert gx is None
        np.testing.assert_allclose(gw, ref_conv_grads(x, w, gy, (1, 1), (2, 2))[1], **TOL64)
        gx, gw = conv2d_backward(gy, cache, need_w_grad=False)
        assert gw is None
        np.testing.assert_allclose(gx, ref_conv_grads(x, w, gy, (1, 1), (2, 2))[0], **TOL64)

    def test_errors(self):
        x, w = np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 2, 2))
        with pytest.raises(ValueError, match="algorithm must be 'reference' or 'im2col' or 'fft', got 'direct'"):
            conv2d_forward(x, w, (1, 1), (0, 0), algorithm="direct")
        with pytest.raises(ValueError, match="fft algorithm needs CPU arrays and stride 1.*stride \\(2, 1\\)"):
            conv2d_forward(x, w, (2, 1), (0, 0), algorithm="fft")
        with pytest.raises(ValueError, match="layout='chwn' applies to the im2col algorithm"):
            conv2d_forward(x, w, (1, 1), (0, 0), algorithm="fft", layout="chwn")

    def test_pooled_buffers_are_not_shared_between_live_calls(self):
        """Large enough for the workspace pool (> 1 MiB of spectra): two forward passes are
        alive at once and their backward passes run in the other order."""
        rng = np.random.default_rng(5)
        xs = [rng.standard_normal((8, 32, 14, 14)) for _ in range(2)]
        w = rng.standard_normal((64, 32, 5, 5)) * 0.1
        gys = [rng.standard_normal((8, 64, 14, 14)) for _ in range(2)]
        caches = [conv2d_forward(x, w, (1, 1), (2, 2), algorithm="fft") for x in xs]
        assert all(c.algorithm == "fft" for _, c in caches)
        grads = [conv2d_backward(gy, c) for gy, (_, c) in reversed(list(zip(gys, caches)))][::-1]
        grads_again = conv2d_backward(gys[0], caches[0][1])
        for x, gy, (y, _), (gx, gw) in zip(xs, gys, caches, grads):
            y0, c0 = conv2d_forward(x, w, (1, 1), (2, 2), algorithm="im2col")
            gx0, gw0 = conv2d_backward(gy, c0)
            np.testing.assert_allclose(y, y0, rtol=1e-10, atol=1e-10)
            np.testing.assert_allclose(gx, gx0, rtol=1e-10, atol=1e-10)
            np.testing.assert_allclose(gw, gw0, rtol=1e-10, atol=1e-9)
        assert np.array_equal(grads_again[0], grads[0][0]) and np.array_equal(grads_again[1], grads[0][1])


class TestPoolNumpy:
    @SETTINGS
    @given(cfg=pool_configs())
    def test_max_pool(self, cfg):
        x, gy = pool_data(cfg)
        args = (cfg["kernel"], cfg["stride"], cfg["padding"])
        y, cache = max_pool2d_forward(x, *args)
        ry, rgx = ref_pool(x, *args, gy=gy, mode="max")
        np.testing.assert_array_equal(y, ry)
        np.testing.assert_allclose(max_pool2d_backward(gy, cache), rgx, **TOL64)

    @SETTINGS
    @given(cfg=pool_configs())
    def test_avg_pool(self, cfg):
        x, gy = pool_data(cfg)
        args = (cfg["kernel"], cfg["stride"], cfg["padding"])
        y, cache = avg_pool2d_forward(x, *args)
        ry, rgx = ref_pool(x, *args, gy=gy, mode="avg")
        np.testing.assert_allclose(y, ry, **TOL64)
        np.testing.assert_allclose(avg_pool2d_backward(gy, cache), rgx, **TOL64)

    @settings(max_examples=15, deadline=None)
    @given(cfg=pool_configs())
    def test_float32(self, cfg):
        x, gy = pool_data(cfg, np.float32)
        args = (cfg["kernel"], cfg["stride"], cfg["padding"])
        for fwd, bwd, mode in ((max_pool2d_forward, max_pool2d_backward, "max"),
                               (avg_pool2d_forward, avg_pool2d_backward, "avg")):
            y, cache = fwd(x, *args)
            gx = bwd(gy, cache)
            assert y.dtype == gx.dtype == np.float32
            ry, rgx = ref_pool(x, *args, gy=gy.astype(np.float64), mode=mode)
            np.testing.assert_allclose(y, ry, **TOL32)
            np.testing.assert_allclose(gx, rgx, **TOL32)

    def test_worked_examples(self):
        x = np.array([[4, 10, 5], [5, 7, 4], [-2, 3, 7]], dtype=np.float64)[None, None]
        y, _ = max_pool2d_forward(x, (2, 2), (1, 1), (0, 0))
        np.testing.assert_array_equal(y[0, 0], [[10, 10], [7, 7]])
        y, _ = avg_pool2d_forward(x, (2, 2), (1, 1), (0, 0))
        np.testing.assert_allclose(y[0, 0], [[6.5, 6.5], [3.25, 5.25]], rtol=1e-12)

    def test_max_ties_go_to_first_element(self):
        x = np.ones((1, 1, 3, 3))
        _, cache = max_pool2d_forward(x, (2, 2), (1, 1), (0, 0))
        gx = max_pool2d_backward(np.ones((1, 1, 2, 2)), cache)
        # each window's top-left element takes its gradient; overlaps add up
        np.testing.assert_array_equal(gx[0, 0], [[1, 1, 0], [1, 1, 0], [0, 0, 0]])

    def test_max_nan_propagates(self):
        x = np.array([[1.0, np.nan], [3.0, 2.0]])[None, None]
        y, cache = max_pool2d_forward(x, (2, 2), (2, 2), (0, 0))
        assert np.isnan(y[0, 0, 0, 0])
        # the gradient goes to the first maximum before the first NaN (deterministic)
        gx = max_pool2d_backward(np.ones((1, 1, 1, 1)), cache)
        np.testing.assert_array_equal(gx[0, 0], [[1, 0], [0, 0]])

    def test_errors(self):
        x = np.zeros((1, 1, 3, 3))
        with pytest.raises(ValueError, match=r"3x3.*4x4"):
            max_pool2d_forward(x, (4, 4), (1, 1), (0, 0))
        with pytest.raises(ValueError, match="half"):
            avg_pool2d_forward(x, (2, 2), (1, 1), (2, 2))
        with pytest.raises(ValueError, match="stride"):
            max_pool2d_forward(x, (2, 2), (0, 1), (0, 0))


def address(a):
    """Where an array's data starts: equal addresses mean the pool handed out the same buffer."""
    return a.__array_interface__["data"][0]


class TestWorkspace:
    def test_buffers_are_reused_only_after_their_block(self):
        workspace.release()
        with workspace.Scratch() as s1:
            a = s1.empty((512, 1024), np.float32)          # 2 MB: pooled
            with workspace.Scratch() as s2:
                b = s2.empty((512, 1024), np.float32)      # a is taken: another buffer
                assert address(b) != address(a)
            with workspace.Scratch() as s3:
                c = s3.empty((1024, 512), np.float32)      # b's block ended: b's bytes
                assert address(c) == address(b)
                assert address(s3.empty((512, 1024), np.float32)) not in (address(a), address(b))
        with workspace.Scratch() as s4:
            small = s4.empty((4, 4), np.float32)           # below MIN_BYTES: never pooled
            assert address(s4.empty((512, 1024), np.float32)) in (address(a), address(b), address(c))
        assert small.base is None
        assert workspace.release() >= 3 * 2**21
        assert workspace.release() == 0
        workspace.enabled = False
        try:
            with workspace.Scratch() as s5:
                d = s5.empty((512, 1024), np.float32)
            assert workspace.release() == 0 and d.base is None
        finally:
            workspace.enabled = True

    def test_a_request_takes_the_smallest_free_buffer_within_the_fit_factor(self):
        workspace.release()
        MiB = 2**20
        with workspace.Scratch() as s:
            big = s.empty((8 * MiB // 4,), np.float32)           # 8 MiB
            mid = s.empty((3 * MiB // 4,), np.float32)           # 3 MiB
            small = s.empty((2 * MiB // 4,), np.float32)         # 2 MiB
        with workspace.Scratch() as s:
            # 1.5 MiB of complex64, another shape and dtype: the 2 MiB buffer (the smallest that
            # holds it; the 3 MiB one fits too), its front, C-contiguous, writable
            c = s.empty((3, MiB // 16), np.complex64)
            assert address(c) == address(small) and c.flags.c_contiguous and c.dtype == np.complex64
            c[...] = 1 + 2j
            # 1.2 MiB: the 3 MiB buffer is more than FIT_FACTOR times larger, so a new one
            d = s.empty((int(1.2 * MiB) // 4,), np.float32)
            assert address(d) not in (address(big), address(mid), address(small))
            # 4 MiB: only the 8 MiB buffer holds it, and it is within the factor
            assert address(s.empty((MiB,), np.float32)) == address(big)
            # the 3 MiB buffer is still free for a 3 MiB request
            assert address(s.empty((3 * MiB // 8,), np.float64)) == address(mid)
        workspace.release()

    def test_the_pool_releases_the_least_recently_returned_beyond_its_cap(self, monkeypatch):
        workspace.release()
        monkeypatch.setattr(workspace, "MAX_POOL_BYTES", 5 * 2**20)
        returned = {}
        for size in (2, 3, 4):                           # MiB, returned in this order
            with workspace.Scratch() as s:
                returned[size] = address(s.empty((size * 2**20,), np.uint8))
        # 2 + 3 + 4 MiB > 5 MiB: the 2 MiB buffer went first, then the 3 MiB one
        assert [b.nbytes for b in workspace._free] == [4 * 2**20]
        with workspace.Scratch() as s:                   # a 3 MiB request gets the 4 MiB buffer
            assert address(s.empty((3 * 2**20,), np.uint8)) == returned[4]
        workspace.release()

    def test_live_outputs_and_caches_are_not_overwritten(self):
        rng = np.random.default_rng(5)
        x1, x2 = rng.standard_normal((2, 8, 32, 48, 48)).astype(np.float32)
        w = rng.standard_normal((8, 32, 3, 3)).astype(np.float32)
        y1, c1 = conv2d_forward(x1, w, (1, 1), (1, 1))
        keep = y1.copy()
        y2, c2 = conv2d_forward(x2, w, (1, 1), (1, 1))
        p1, pc1 = max_pool2d_forward(y1, (2, 2), (2, 2), (0, 0))
        p2, pc2 = max_pool2d_forward(y2, (2, 2), (2, 2), (0, 0))
        np.testing.assert_array_equal(y1, keep)
        gx1, gw1 = conv2d_backward(np.ones_like(y1), c1)
        gx1_again, _ = conv2d_backward(np.ones_like(y1), c1)   # cache reusable
        np.testing.assert_array_equal(gx1, gx1_again)
        np.testing.assert_array_equal(p1, max_pool2d_forward(keep, (2, 2), (2, 2), (0, 0))[0])
        ref_w = conv2d_backward(np.ones_like(y1), conv2d_forward(x1, w, (1, 1), (1, 1))[1])[1]
        np.testing.assert_array_equal(gw1, ref_w)


# ---------------------------------------------------------------------------------------
# CUDA kernel sources compiled for the host (index math without a GPU)
# ---------------------------------------------------------------------------------------
_HOST_SHIM = """
struct minidl_dim3 { unsigned int x; };
static const minidl_dim3 blockIdx = {0}, threadIdx = {0}, blockDim = {1}, gridDim = {1};
#define __global__
"""


@pytest.fixture(scope="module")
def host_launch(tmp_path_factory):
    """A ``launch(name, dtype, total, *args)`` that runs the CUDA sources on the host."""
    cxx = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler to build the CUDA sources on the host")
    libs = {}
    for dtype in (np.float32, np.float64):
        d = tmp_path_factory.mktemp("cuda_host")
        src, lib = d / "kernels.cpp", d / "kernels.so"
        src.write_text(_HOST_SHIM + cuda_sources.kernel_source(dtype))
        subprocess.run([cxx, "-O1", "-shared", "-fPIC", "-Wall", "-Werror", "-o", str(lib), str(src)],
                       check=True, capture_output=True)
        libs[np.dtype(dtype)] = ctypes.CDLL(str(lib))

    def launch(name, dtype, total, *args):
        assert name in cuda_sources.KERNEL_NAMES
        cargs = []
        for a in cuda_sources.kernel_args(args, dtype):
            if isinstance(a, np.ndarray):
                assert a.flags.c_contiguous
                cargs.append(ctypes.c_void_p(a.ctypes.data))
            elif isinstance(a, np.int64):
                cargs.append(ctypes.c_longlong(int(a)))
            elif isinstance(a, np.float32):
                cargs.append(ctypes.c_float(float(a)))
            elif isinstance(a, np.float64):
                cargs.append(ctypes.c_double(float(a)))
            else:
                raise TypeError(type(a))
        if total > 0:
            getattr(libs[np.dtype(dtype)], name)(*cargs)

    return launch


class TestCudaSourcesOnHost:
    @settings(max_examples=25, deadline=None)
    @given(cfg=conv_configs(), dtype=st.sampled_from([np.float32, np.float64]))
    def test_conv(self, host_launch, cfg, dtype):
        x, w, gy = conv_data(cfg, dtype)
        stride, padding = cfg["stride"], cfg["padding"]
        out_hw = gy.shape[2:]
        y, cache = conv_cuda.forward(x, w, stride, padding, out_hw, np.dtype(dtype), xp=np, launch=host_launch)
        gx, gw = conv_cuda.backward(gy, cache, True, True, xp=np, launch=host_launch)
        tol = TOL64 if dtype == np.float64 else TOL32
        np.testing.assert_allclose(y, ref_conv(x, w, stride, padding), **tol)
        rgx, rgw = ref_conv_grads(x, w, gy, stride, padding)
        np.testing.assert_allclose(gx, rgx, **tol)
        np.testing.assert_allclose(gw, rgw, **tol)

    @settings(max_examples=25, deadline=None)
    @given(cfg=pool_configs(), dtype=st.sampled_from([np.float32, np.float64]))
    def test_pool(self, host_launch, cfg, dtype):
        x, gy = pool_data(cfg, dtype)
        args = (cfg["kernel"], cfg["stride"], cfg["padding"])
        out_hw = gy.shape[2:]
        y, cache = pool_cuda.max_forward(x, *args, out_hw, xp=np, launch=host_launch)
        y_cpu, cache_cpu = max_pool2d_forward(x, *args)
        np.testing.assert_array_equal(y, y_cpu)
        np.testing.assert_array_equal(cache.argmax, cache_cpu.argmax)
        gx = pool_cuda.max_backward(gy, cache, xp=np, launch=host_launch)
        np.testing.assert_array_equal(gx, max_pool2d_backward(gy, cache_cpu))
        ya, acache = avg_pool2d_forward(x, *args)
        np.testing.assert_allclose(pool_cuda.avg_forward(x, *args, out_hw, xp=np)[0], ya, rtol=1e-6, atol=1e-6)
        gx = pool_cuda.avg_backward(gy, acache, xp=np, launch=host_launch)
        np.testing.assert_array_equal(gx, avg_pool2d_backward(gy, acache))

    def test_max_pool_nan_and_padding(self, host_launch):
        x = np.array([[1.0, np.nan, 5.0], [3.0, 2.0, np.nan], [-1.0, -2.0, -3.0]])[None, None]
        for args in (((2, 2), (1, 1), (0, 0)), ((3, 3), (2, 2), (1, 1))):
            y, cache = pool_cuda.max_forward(x, *args, conv_mod.conv_output_size((3, 3), *args),
                                             xp=np, launch=host_launch)
            y_cpu, cache_cpu = max_pool2d_forward(x, *args)
            np.testing.assert_array_equal(y, y_cpu)
            np.testing.assert_array_equal(cache.argmax, cache_cpu.argmax)


# ---------------------------------------------------------------------------------------
# CuPy path (real GPU)
# ---------------------------------------------------------------------------------------
@pytest.mark.skipif(not cuda_available(), reason="CuPy with a CUDA device is not available")
class TestCupy:
    @settings(max_examples=25, deadline=None)
    @given(cfg=conv_configs(), dtype=st.sampled_from([np.float32, np.float64]))
    def test_conv_matches_numpy(self, cfg, dtype):
        import cupy
        x, w, gy = conv_data(cfg, dtype)
        stride, padding = cfg["stride"], cfg["padding"]
        y, cache = conv2d_forward(cupy.asarray(x), cupy.asarray(w), stride, padding)
        gx, gw = conv2d_backward(cupy.asarray(gy), cache)
        assert isinstance(y, cupy.ndarray) and y.dtype == dtype and gx.dtype == gw.dtype == dtype
        tol = TOL64 if dtype == np.float64 else TOL32
        np.testing.assert_allclose(cupy.asnumpy(y), ref_conv(x, w, stride, padding), **tol)
        rgx, rgw = ref_conv_grads(x, w, gy, stride, padding)
        np.testing.assert_allclose(cupy.asnumpy(gx), rgx, **tol)
        np.testing.assert_allclose(cupy.asnumpy(gw), rgw, **tol)

    @settings(max_examples=25, deadline=None)
    @given(cfg=pool_configs(), dtype=st.sampled_from([np.float32, np.float64]))
    def test_pools_match_numpy(self, cfg, dtype):
        import cupy
        x, gy = pool_data(cfg, dtype)
        args = (cfg["kernel"], cfg["stride"], cfg["padding"])
        for fwd, bwd in ((max_pool2d_forward, max_pool2d_backward),
                         (avg_pool2d_forward, avg_pool2d_backward)):
            y_cpu, c_cpu = fwd(x, *args)
            gx_cpu = bwd(gy, c_cpu)
            y, c = fwd(cupy.asarray(x), *args)
            gx = bwd(cupy.asarray(gy), c)
            assert isinstance(gx, cupy.ndarray) and y.dtype == gx.dtype == dtype
            tol = TOL64 if dtype == np.float64 else TOL32
            np.testing.assert_allclose(cupy.asnumpy(y), y_cpu, **tol)
            np.testing.assert_allclose(cupy.asnumpy(gx), gx_cpu, **tol)

    def test_deterministic_and_worked_examples(self):
        import cupy
        rng = np.random.default_rng(0)
        x = cupy.asarray(rng.standard_normal((4, 8, 14, 14)).astype(np.float32))
        w = cupy.asarray(rng.standard_normal((16, 8, 5, 5)).astype(np.float32))
        runs = []
        for _ in range(2):
            y, cache = conv2d_forward(x, w, (1, 1), (2, 2))
            gx, gw = conv2d_backward(cupy.ones_like(y), cache)
            p, pc = max_pool2d_forward(y, (3, 3), (1, 1), (1, 1))
            gp = max_pool2d_backward(cupy.ones_like(p), pc)
            runs.append([cupy.asnumpy(a) for a in (y, gx, gw, p, gp)])
        for a, b in zip(*runs):
            np.testing.assert_array_equal(a, b)
        img = cupy.asarray([[4, 10, 5], [5, 7, 4], [-2, 3, 7]], dtype=cupy.float64)[None, None]
        np.testing.assert_array_equal(cupy.asnumpy(max_pool2d_forward(img, (2, 2), (1, 1), (0, 0))[0])[0, 0],
                                      [[10, 10], [7, 7]])
        np.testing.assert_allclose(cupy.asnumpy(avg_pool2d_forward(img, (2, 2), (1, 1), (0, 0))[0])[0, 0],
                                   [[6.5, 6.5], [3.25, 5.25]])


def test_per_channel_and_channel_sum():
    """``per_channel`` spreads (C,) values over one image in the array's dtype (contiguous, no
    zero strides); ``channel_sum`` sums over all axes but 1 as accurately as NumPy's pairwise sum."""
    from minidl.kernels.arrays import channel_sum, per_channel
    rng = np.random.default_rng(5)
    g = (rng.standard_normal((64, 16, 28, 28)) + 0.5).astype(np.float32)
    v = rng.standard_normal(16)
    spread = per_channel(v, g)
    assert spread.shape == (1, 16, 28, 28) and spread.dtype == np.float32 and spread.flags.c_contiguous
    np.testing.assert_array_equal(spread, np.broadcast_to(v.astype(np.float32)[None, :, None, None], spread.shape))
    assert per_channel(v, g[:, :, 0, 0]).shape == (1, 16)
    exact = g.astype(np.float64).sum(axis=(0, 2, 3))
    got = channel_sum(g)
    assert got.shape == (16,) and got.dtype == np.float32
    assert np.abs(got - exact).max() <= 2 * np.abs(g.sum(axis=(0, 2, 3)) - exact).max() + 1e-6 * np.abs(exact).max()
