"""The CPU convolution algorithms (im2col in three layouts, FFT, Winograd F(2x2, 3x3)) against a
plain-loop reference and each other, and the measured algorithm choice (``kernels.autotune``).

No assertion depends on a timing: tests force an algorithm, or check that whatever ``auto``
picks agrees with the reference and is cached.
"""
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minidl as md
import minidl.functional as F
from minidl.kernels import autotune, blas, conv, conv2d_backward, conv2d_forward, conv_im2col, parallel
from minidl.testing import gradcheck

from conftest import examples

TOL64 = dict(rtol=1e-10, atol=1e-10)
TOL32 = dict(rtol=2e-4, atol=2e-4)


def ref_conv_and_grads(x, w, gy, padding):
    """Stride-1 conv2d, dL/dx and dL/dw by plain loops over outputs (float64)."""
    (ph, pw), (N, C, H, W), (Fo, _, kh, kw) = padding, x.shape, w.shape
    xp = np.zeros((N, C, H + 2 * ph, W + 2 * pw))
    xp[:, :, ph:ph + H, pw:pw + W] = x
    Ho, Wo = H + 2 * ph - kh + 1, W + 2 * pw - kw + 1
    y, gxp, gw = np.zeros((N, Fo, Ho, Wo)), np.zeros_like(xp), np.zeros(w.shape)
    for n in range(N):
        for f in range(Fo):
            for i in range(Ho):
                for j in range(Wo):
                    win = (n, slice(None), slice(i, i + kh), slice(j, j + kw))
                    y[n, f, i, j] = np.sum(xp[win] * w[f])
                    if gy is not None:
                        gxp[win] += gy[n, f, i, j] * w[f]
                        gw[f] += gy[n, f, i, j] * xp[win]
    return y, gxp[:, :, ph:ph + H, pw:pw + W], gw


@st.composite
def configs(draw, kernel=None):
    kh, kw = kernel or (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    return dict(N=draw(st.integers(1, 3)), C=draw(st.integers(1, 4)), F=draw(st.integers(1, 4)),
                H=draw(st.integers(max(1, kh - 2 * ph), 8)), W=draw(st.integers(max(1, kw - 2 * pw), 8)),
                kernel=(kh, kw), padding=(ph, pw), seed=draw(st.integers(0, 2**31 - 1)))


def data(cfg, dtype=np.float64):
    rng = np.random.default_rng(cfg["seed"])
    (kh, kw), (ph, pw) = cfg["kernel"], cfg["padding"]
    x = rng.standard_normal((cfg["N"], cfg["C"], cfg["H"], cfg["W"])).astype(dtype)
    w = rng.standard_normal((cfg["F"], cfg["C"], kh, kw)).astype(dtype)
    gy = rng.standard_normal((cfg["N"], cfg["F"], cfg["H"] + 2 * ph - kh + 1,
                              cfg["W"] + 2 * pw - kw + 1)).astype(dtype)
    return x, w, gy


def by(name, x, w, padding):
    """Forward by the CPU algorithm ``name`` as the tuner names it."""
    if name.startswith("im2col_"):
        return conv2d_forward(x, w, (1, 1), padding, algorithm="im2col", layout=name[len("im2col_"):])
    return conv2d_forward(x, w, (1, 1), padding, algorithm=name)


class TestWinograd:
    @examples(40)
    @given(cfg=configs(kernel=(3, 3)))
    def test_matches_reference_float64(self, cfg):
        x, w, gy = data(cfg)
        y, cache = conv2d_forward(x, w, (1, 1), cfg["padding"], algorithm="winograd")
        assert cache.algorithm == "winograd" and y.dtype == np.float64 and y.flags.c_contiguous
        ry, rgx, rgw = ref_conv_and_grads(x, w, gy, cfg["padding"])
        np.testing.assert_allclose(y, ry, **TOL64)
        gx, gw = conv2d_backward(gy, cache)
        np.testing.assert_allclose(gx, rgx, **TOL64)
        np.testing.assert_allclose(gw, rgw, **TOL64)
        assert gx.flags.c_contiguous and gw.flags.c_contiguous
        # each gradient alone is the same as both together
        assert conv2d_backward(gy, cache, need_x_grad=False)[0] is None
        np.testing.assert_array_equal(conv2d_backward(gy, cache, need_x_grad=False)[1], gw)
        np.testing.assert_array_equal(conv2d_backward(gy, cache, need_w_grad=False)[0], gx)

    def test_pooled_buffers_are_not_shared_between_live_calls(self):
        """The transformed input V (2 MiB here, poolable) is kept for backward: two forward
        passes alive at once, their backward passes in the other order, against im2col."""
        rng = np.random.default_rng(6)
        xs = [rng.standard_normal((8, 32, 16, 16)) for _ in range(2)]
        w = rng.standard_normal((16, 32, 3, 3)) * 0.1
        gys = [rng.standard_normal((8, 16, 16, 16)) for _ in range(2)]
        caches = [conv2d_forward(x, w, (1, 1), (1, 1), algorithm="winograd")[1] for x in xs]
        for i in (1, 0):
            gx, gw = conv2d_backward(gys[i], caches[i])
            _, ref = conv2d_forward(xs[i], w, (1, 1), (1, 1), algorithm="im2col")
            rgx, rgw = conv2d_backward(gys[i], ref)
            np.testing.assert_allclose(gx, rgx, **TOL64)
            np.testing.assert_allclose(gw, rgw, **TOL64)

    def test_gradcheck_through_functional(self):
        rng = np.random.default_rng(1)
        x = md.tensor(rng.standard_normal((2, 2, 5, 4)), requires_grad=True)
        w = md.tensor(rng.standard_normal((3, 2, 3, 3)), requires_grad=True)
        b = md.tensor(rng.standard_normal(3), requires_grad=True)
        with autotune.conv_algorithm("winograd"):
            assert gradcheck(lambda u, v, c: F.conv2d(u, v, c, padding=1), x, w, b)

    def test_deterministic_and_independent_of_threads(self):
        rng = np.random.default_rng(2)
        x = rng.standard_normal((4, 16, 12, 12), dtype=np.float32)   # large enough to be split
        w = rng.standard_normal((16, 16, 3, 3), dtype=np.float32)
        gy = rng.standard_normal((4, 16, 12, 12), dtype=np.float32)

        def run():
            y, cache = conv2d_forward(x, w, (1, 1), (1, 1), algorithm="winograd")
            return (y,) + conv2d_backward(gy, cache)
        first = run()
        previous = parallel.set_num_threads(1)
        try:
            serial = run()
        finally:
            parallel.set_num_threads(previous)
        for a, b, c in zip(first, run(), serial):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(a, c)

    def test_errors(self):
        x = np.zeros((1, 1, 5, 5))
        with pytest.raises(ValueError, match="winograd algorithm needs CPU arrays, a 3x3 kernel and stride 1.*"
                                             "kernel \\(5, 5\\)"):
            conv2d_forward(x, np.zeros((1, 1, 5, 5)), (1, 1), (0, 0), algorithm="winograd")
        with pytest.raises(ValueError, match="stride \\(2, 2\\)"):
            conv2d_forward(x, np.zeros((1, 1, 3, 3)), (2, 2), (0, 0), algorithm="winograd")
        with pytest.raises(ValueError, match="layout='cnhw' applies to the im2col algorithm on the CPU, not to winograd"):
            conv2d_forward(x, np.zeros((1, 1, 3, 3)), (1, 1), (0, 0), algorithm="winograd", layout="cnhw")
        with pytest.raises(ValueError, match="layout must be one of 'cnhw', 'chwn', 'nhwc', got 'nchw'"):
            conv2d_forward(x, np.zeros((1, 1, 3, 3)), (1, 1), (0, 0), layout="nchw")


@examples(25)
@given(cfg=st.one_of(configs(), configs(kernel=(3, 3))))
def test_every_candidate_agrees_in_float32(cfg):
    """Every algorithm the tuner may pick gives the same forward and gradients (float32 rounding)."""
    x, w, gy = data(cfg, np.float32)
    names = conv._cpu_candidates(cfg["kernel"], (1, 1))
    assert names[:4] == ["im2col_cnhw", "im2col_chwn", "im2col_nhwc", "fft"]
    assert ("winograd" in names) == (cfg["kernel"] == (3, 3))
    ry, rgx, rgw = ref_conv_and_grads(x.astype(np.float64), w.astype(np.float64), gy.astype(np.float64),
                                      cfg["padding"])
    scale = max(1.0, np.abs(ry).max())
    for name in names:
        y, cache = by(name, x, w, cfg["padding"])
        gx, gw = conv2d_backward(gy, cache)
        assert y.dtype == gx.dtype == gw.dtype == np.float32, name
        for got, want in ((y, ry), (gx, rgx), (gw, rgw)):
            np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * scale, err_msg=name)


class TestAutotune:
    @pytest.fixture(autouse=True)
    def fresh_cache(self, monkeypatch):
        monkeypatch.setattr(autotune, "MIN_TUNE_FLOPS", 1e5)  # tune the small test shapes too
        autotune.clear_cache()
        yield
        autotune.clear_cache()

    def big_case(self, seed=0, kernel=3):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((4, 8, 12, 12))
        w = rng.standard_normal((8, 8, kernel, kernel))
        assert 2 * 4 * 12 * 12 * 8 * 8 * kernel * kernel >= autotune.MIN_TUNE_FLOPS
        return x, w

    def test_auto_times_every_candidate_once_then_uses_the_winner(self, monkeypatch):
        x, w = self.big_case()
        gy = np.random.default_rng(1).standard_normal((4, 8, 12, 12))
        ry, rgx, rgw = ref_conv_and_grads(x, w, gy, (1, 1))
        with autotune.conv_algorithm("auto"):
            y, cache = conv2d_forward(x, w, (1, 1), (1, 1), grads=(True, False))
            (key, winner, times), = autotune.cache_items()
            assert set(times) == {"im2col_cnhw", "im2col_chwn", "im2col_nhwc", "fft", "winograd"}
            rule = "im2col_" + conv_im2col._choose_layout(8, 8, 3, 3, 12, 1).name
            assert winner == autotune.choose(times, prefer=rule)
            assert key[1:5] == ((4, 8, 12, 12), (8, 8, 3, 3), (1, 1), (1, 1)) and key[-1] == (True, False)
            assert cache.algorithm == winner.split("_")[0]
            np.testing.assert_allclose(y, ry, **TOL64)
            gx, gw = conv2d_backward(gy, cache)
            np.testing.assert_allclose(gx, rgx, **TOL64)
            np.testing.assert_allclose(gw, rgw, **TOL64)

            def no_second_tuning(*args, **kwargs):
                raise AssertionError("tuned the same key twice")
            monkeypatch.setattr(autotune, "tune", no_second_tuning)
            y2, cache2 = conv2d_forward(x, w, (1, 1), (1, 1), grads=(True, False))
            assert cache2.algorithm == cache.algorithm
            np.testing.assert_array_equal(y2, y)
            # another key (other gradients needed) is measured on its own
            with pytest.raises(AssertionError, match="tuned the same key twice"):
                conv2d_forward(x, w, (1, 1), (1, 1), grads=(False, False))

    def test_choose_keeps_the_rules_choice_unless_clearly_beaten(self):
        times = {"im2col_cnhw": 1.0, "fft": 0.95, "winograd": 1.2}
        assert autotune.choose(times, prefer="im2col_cnhw") == "im2col_cnhw"      # 5% faster: noise
        assert autotune.choose(times, prefer="im2col_cnhw", margin=0.01) == "fft"
        assert autotune.choose({**times, "fft": 0.5}, prefer="im2col_cnhw") == "fft"
        assert autotune.choose(times) == "fft" and autotune.choose(times, prefer="direct") == "fft"

    def test_a_candidate_over_the_memory_limit_never_wins(self):
        # "big" is the fastest (it does nothing) but keeps more than the limit; "small" is slow
        runs = {"small": lambda: time.sleep(0.002) or 10, "big": lambda: 1000, "untold": lambda: time.sleep(0.004)}

        def key(n):
            return ("conv2d", (n, 1, 4, 4), (1, 1, 3, 3), (1, 1), (0, 0), "<f8", "cpu", (1, 1), (True, True))
        assert autotune.tune(key(1), runs, memory_limit=100) == "small"
        assert autotune.tune(key(2), runs) == "big"                     # no limit: the fastest
        assert autotune.tune(key(3), {"big": runs["big"]}, memory_limit=100) == "big"  # nothing else
        assert "big 0.0 ms (over the memory limit)" in "\n".join(autotune.describe())

    def test_what_each_algorithm_keeps_for_backward(self):
        """im2col keeps a reference to x (and its small weight matrix), FFT the input's spectrum,
        Winograd 4x the input: only the last is over ``MAX_KEPT_RATIO``."""
        rng = np.random.default_rng(3)
        x = rng.standard_normal((16, 8, 32, 32), dtype=np.float32)
        w = rng.standard_normal((8, 8, 3, 3), dtype=np.float32)
        kept = {name: conv.kept_bytes(by(name, x, w, (1, 1))[1], x, w) / x.nbytes
                for name in conv._cpu_candidates((3, 3), (1, 1))}
        assert kept["im2col_cnhw"] == kept["im2col_chwn"] == kept["im2col_nhwc"] == w.nbytes / x.nbytes
        assert 1 < kept["fft"] < conv.MAX_KEPT_RATIO < 4 <= kept["winograd"]

    def test_functional_keys_follow_the_gradients_needed(self):
        x, w = self.big_case()
        with autotune.conv_algorithm("auto"):
            F.conv2d(md.tensor(x, requires_grad=True), md.tensor(w, requires_grad=True), padding=1)
            with md.no_grad():
                F.conv2d(md.tensor(x), md.tensor(w, requires_grad=True), padding=1)
            F.conv2d(md.tensor(x), md.tensor(w, requires_grad=True), padding=1)
        assert sorted(key[-1] for key, _, _ in autotune.cache_items()) == [(False, False), (False, True),
                                                                           (True, True)]
        text = "\n".join(autotune.describe())
        assert "[dx+dw]" in text and "[forward only]" in text and "[dw]" in text

    def test_strided_and_small_convolutions_are_not_offered_fft_or_winograd(self):
        assert conv._cpu_candidates((3, 3), (2, 2)) == ["im2col_cnhw", "im2col_chwn", "im2col_nhwc"]
        assert conv._cpu_candidates((5, 5), (1, 1)) == ["im2col_cnhw", "im2col_chwn", "im2col_nhwc", "fft"]
        x = np.ones((1, 1, 4, 4))
        with autotune.conv_algorithm("auto"):
            conv2d_forward(x, np.ones((1, 1, 3, 3)), (1, 1), (1, 1))  # far below MIN_TUNE_FLOPS
        assert autotune.cache_items() == []

    def test_forced_modes(self):
        x, w = self.big_case(kernel=3)
        with autotune.conv_algorithm("winograd"):
            assert conv2d_forward(x, w, (1, 1), (1, 1))[1].algorithm == "winograd"
            # where it does not apply, the rule decides
            assert conv2d_forward(x, w, (2, 2), (1, 1))[1].algorithm == "im2col"
        with autotune.conv_algorithm("fft"):
            assert conv2d_forward(x, w, (1, 1), (1, 1))[1].algorithm == "fft"
        with autotune.conv_algorithm("im2col_chwn"):
            assert conv2d_forward(x, w, (1, 1), (1, 1))[1].layout.name == "chwn"
        with autotune.conv_algorithm("im2col_nhwc"):
            assert conv2d_forward(x, w, (1, 1), (1, 1))[1].layout.name == "nhwc"
        with autotune.conv_algorithm("rule"):
            assert conv2d_forward(x, w, (1, 1), (1, 1))[1].algorithm == "im2col"
        assert autotune.get_conv_algorithm() == "rule"  # conftest's default, restored
        assert autotune.cache_items() == []

    def test_bad_modes(self):
        with pytest.raises(ValueError, match="set_conv_algorithm: expected one of auto, rule, .*got 'fastest'"):
            autotune.set_conv_algorithm("fastest")
        env = dict(os.environ, MINIDL_CONV_ALGO="gemm")
        out = subprocess.run([sys.executable, "-c", "import minidl"], env=env, capture_output=True, text=True,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        assert out.returncode != 0 and "MINIDL_CONV_ALGO: expected one of auto" in out.stderr

    def test_info_warm_up_prints_the_cache(self):
        from minidl.info import warm_up
        with autotune.conv_algorithm("auto"):
            lines = warm_up("madry_mnist", 2)
        assert lines[0].startswith("after one forward and backward pass of madry_mnist")
        assert any("w(64, 32, 5, 5)" in line and " -> " in line for line in lines[1:])


class TestBlasThreads:
    def test_set_get_and_restore(self):
        before = blas.get_num_threads()
        with blas.num_threads(1):
            assert blas.get_num_threads() == 1
            assert "1 threads" in blas.describe()
        assert blas.get_num_threads() == before
        assert blas.set_num_threads(before) == before

    @pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
    def test_bad_counts(self, bad):
        with pytest.raises(ValueError, match=f"blas.set_num_threads: n must be an integer >= 1, got {bad!r}"):
            blas.set_num_threads(bad)
