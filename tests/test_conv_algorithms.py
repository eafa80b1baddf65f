"""The CPU convolution algorithms (im2col in three layouts, FFT) against a plain-loop reference
and each other; the default choice, a fixed rule that no timing can move; and the opt-in
measured choice (``kernels.runtime.autotune``).

No assertion depends on a timing: tests force an algorithm, feed the tuner's clock adversarial
values, or check that whatever ``auto`` picks agrees with the reference and is cached.
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
from minidl.kernels import conv, conv2d_backward, conv2d_forward, conv_im2col
from minidl.kernels.runtime import autotune, blas

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


class TestDefaultChoice:
    """The default (``rule``) never times anything: the algorithm chosen for a shape, and so the
    output bits, are the same whatever the clock says (an idle or a busy machine)."""

    def run(self, x, w, gy, stride, padding):
        y, cache = conv2d_forward(x, w, stride, padding)
        gx, gw = conv2d_backward(gy, cache)
        name = cache.algorithm + ("_" + cache.layout.name if cache.algorithm == "im2col" else "")
        return name, y, gx, gw

    @pytest.mark.parametrize("shape", [((8, 32, 14, 14), (64, 32, 5, 5), 2, 1),    # the rule's FFT layer
                                       ((4, 8, 12, 12), (8, 8, 3, 3), 1, 1),
                                       ((4, 16, 12, 12), (32, 16, 4, 4), 1, 2)])
    def test_the_clock_cannot_move_the_choice(self, monkeypatch, shape):
        x_shape, w_shape, pad, stride = shape
        rng = np.random.default_rng(0)
        x, w = rng.standard_normal(x_shape).astype(np.float32), rng.standard_normal(w_shape).astype(np.float32)
        Ho = (x_shape[2] + 2 * pad - w_shape[2]) // stride + 1
        gy = rng.standard_normal((x_shape[0], w_shape[0], Ho, Ho)).astype(np.float32)
        monkeypatch.setattr(conv, "FFT_MIN_BATCH", 8)
        monkeypatch.setattr(autotune, "MIN_TUNE_FLOPS", 0)   # every shape would be worth timing
        assert autotune.get_conv_algorithm() == "rule"
        autotune.clear_cache()
        first = self.run(x, w, gy, (stride, stride), (pad, pad))
        for clock in (lambda: 0.0, iter(np.random.default_rng(1).random(10_000) * 1e3).__next__):
            monkeypatch.setattr(time, "perf_counter", clock)   # adversarial timings
            again = self.run(x, w, gy, (stride, stride), (pad, pad))
            assert again[0] == first[0]
            for a, b in zip(first[1:], again[1:]):
                assert np.array_equal(a, b)
        assert autotune.cache_items() == []                     # nothing was timed

    def test_auto_is_opt_in_and_the_default_is_the_rule(self):
        env = {k: v for k, v in os.environ.items() if k != "MINIDL_CONV_ALGO"}
        out = subprocess.run([sys.executable, "-c", "from minidl.kernels.runtime import autotune; "
                              "print(autotune.get_conv_algorithm())"], env=env, capture_output=True, text=True,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        assert out.stdout.strip() == "rule", out.stderr
        out = subprocess.run([sys.executable, "-c", "from minidl.kernels.runtime import autotune; "
                              "print(autotune.get_conv_algorithm())"], env=dict(env, MINIDL_CONV_ALGO="auto"),
                             capture_output=True, text=True,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        assert out.stdout.strip() == "auto", out.stderr


@examples(25)
@given(cfg=configs())
def test_every_candidate_agrees_in_float32(cfg):
    """Every algorithm the tuner may pick gives the same forward and gradients (float32 rounding)."""
    x, w, gy = data(cfg, np.float32)
    names = conv._cpu_candidates(cfg["kernel"], (1, 1))
    assert names == ["im2col_cnhw", "im2col_chwn", "im2col_nhwc", "fft"]
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
            assert set(times) == {"im2col_cnhw", "im2col_chwn", "im2col_nhwc", "fft"}
            rule = "im2col_" + conv_im2col.choose_layout(8, 8, 3, 3, 12, 1).name
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
        times = {"im2col_cnhw": 1.0, "fft": 0.95, "im2col_nhwc": 1.2}
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
        under ``MAX_KEPT_RATIO``."""
        rng = np.random.default_rng(3)
        x = rng.standard_normal((16, 8, 32, 32), dtype=np.float32)
        w = rng.standard_normal((8, 8, 3, 3), dtype=np.float32)
        kept = {name: conv.kept_bytes(by(name, x, w, (1, 1))[1], x, w) / x.nbytes
                for name in conv._cpu_candidates((3, 3), (1, 1))}
        assert kept["im2col_cnhw"] == kept["im2col_chwn"] == kept["im2col_nhwc"] == w.nbytes / x.nbytes
        assert 1 < kept["fft"] < conv.MAX_KEPT_RATIO

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

    def test_strided_and_small_convolutions_are_not_offered_fft(self):
        assert conv._cpu_candidates((3, 3), (2, 2)) == ["im2col_cnhw", "im2col_chwn", "im2col_nhwc"]
        assert conv._cpu_candidates((5, 5), (1, 1)) == ["im2col_cnhw", "im2col_chwn", "im2col_nhwc", "fft"]
        x = np.ones((1, 1, 4, 4))
        with autotune.conv_algorithm("auto"):
            conv2d_forward(x, np.ones((1, 1, 3, 3)), (1, 1), (1, 1))  # far below MIN_TUNE_FLOPS
        assert autotune.cache_items() == []

    def test_forced_modes(self):
        x, w = self.big_case(kernel=3)
        with autotune.conv_algorithm("fft"):
            assert conv2d_forward(x, w, (1, 1), (1, 1))[1].algorithm == "fft"
            # where it does not apply, the rule decides
            assert conv2d_forward(x, w, (2, 2), (1, 1))[1].algorithm == "im2col"
        with autotune.conv_algorithm("im2col_chwn"):
            assert conv2d_forward(x, w, (1, 1), (1, 1))[1].layout.name == "chwn"
        with autotune.conv_algorithm("im2col_nhwc"):
            assert conv2d_forward(x, w, (1, 1), (1, 1))[1].layout.name == "nhwc"
        with autotune.conv_algorithm("rule"):
            assert conv2d_forward(x, w, (1, 1), (1, 1))[1].algorithm == "im2col"
        assert autotune.get_conv_algorithm() == "rule"  # the default, restored
        assert autotune.cache_items() == []

    def test_bad_modes(self):
        with pytest.raises(ValueError, match="set_conv_algorithm: expected one of rule, auto, .*got 'fastest'"):
            autotune.set_conv_algorithm("fastest")
        env = dict(os.environ, MINIDL_CONV_ALGO="gemm")
        out = subprocess.run([sys.executable, "-c", "import minidl"], env=env, capture_output=True, text=True,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        assert out.returncode != 0 and "MINIDL_CONV_ALGO: expected one of rule, auto" in out.stderr

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
