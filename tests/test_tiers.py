"""The two kernel tiers (``minidl.kernels.registry``): every fast implementation against its plain
reference, and the whole engine (training, an attack) on both tiers.

* Each fast implementation of a function kernel is a property test against ``reference.py``
  with the public strategies, its splitting forced (chunks and blocks even for tiny arrays,
  several threads), so that the pieces are what is tested. (Convolution and pooling's
  fast implementations have theirs in ``test_kernels.py``.)
* ``use("reference")`` and ``MINIDL_KERNELS=reference`` run every kernel on its reference: a
  small CNN trained a few steps, and PGD, never reach a fast implementation, and agree with the
  fast tier to rounding.
"""
import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minidl as md
import minidl.functional as F
from minidl import kernels, nn
from minidl.adversarial import pgd
from minidl.kernels import batch_norm_cpu, reference
from minidl.kernels.runtime import parallel
from minidl.testing.strategies import conv_configs, pool_configs, tensors

from conftest import examples
from test_parallel import forced_split

FLOATS = st.sampled_from([np.float32, np.float64])
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def close(got, want, dtype):
    """Agreement to rounding: float32 sums of a few hundred terms, float64 far tighter."""
    rtol, atol = (1e-5, 1e-5) if np.dtype(dtype) == np.float32 else (1e-12, 1e-12)
    scale = max(1.0, float(np.abs(want).max())) if np.size(want) else 1.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale)


@contextlib.contextmanager
def small_pieces():
    """Batch-norm chunks and matmul blocks of a few bytes, on 3 threads (a context manager:
    hypothesis tests cannot use fixtures per example)."""
    old = batch_norm_cpu.CHUNK_BYTES, parallel.MATMUL_SPLIT_MACS
    batch_norm_cpu.CHUNK_BYTES, parallel.MATMUL_SPLIT_MACS = 16, 0
    try:
        with forced_split(3):
            yield
    finally:
        batch_norm_cpu.CHUNK_BYTES, parallel.MATMUL_SPLIT_MACS = old


# --- each fast implementation against its reference -------------------------------------------
@examples(30)
@given(data=st.data(), dtype=FLOATS, spatial=st.booleans())
def test_batch_norm_chunks_match_the_reference(data, dtype, spatial):
    shape = data.draw(st.tuples(st.integers(1, 5), st.integers(1, 3)) if not spatial else
                      st.tuples(st.integers(1, 5), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4)))
    x = data.draw(tensors(shape=shape, dtype=dtype)).array
    g = data.draw(tensors(shape=shape, dtype=dtype)).array
    a, b, c = (data.draw(tensors(shape=(shape[1],), dtype=dtype)).array for _ in range(3))
    mu = reference.batch_norm_stats(x)[0]
    with small_pieces():
        fast = [*batch_norm_cpu.batch_norm_stats(x), batch_norm_cpu.channel_affine(x, a, b),
                batch_norm_cpu.channel_affine(x, a), *batch_norm_cpu.batch_norm_sums(g, x, mu),
                batch_norm_cpu.batch_norm_input_grad(g, x, mu, a, b, c)]
    plain = [*reference.batch_norm_stats(x), reference.channel_affine(x, a, b), reference.channel_affine(x, a),
             *reference.batch_norm_sums(g, x, mu), reference.batch_norm_input_grad(g, x, mu, a, b, c)]
    for got, want in zip(fast, plain):
        assert got.dtype == x.dtype and got.shape == want.shape
        close(got, want, dtype)


@examples(30)
@given(data=st.data(), dtype=FLOATS,
       shapes_=st.sampled_from([((5, 3), (3, 7)), ((9, 4), (4, 2)), ((3, 5, 4), (3, 4, 6)), ((4,), (4, 3)),
                                ((2, 3, 4), (4, 5))]))
def test_matmul_blocks_match_the_reference(data, dtype, shapes_):
    a = data.draw(tensors(shape=shapes_[0], dtype=dtype)).array
    b = data.draw(tensors(shape=shapes_[1], dtype=dtype)).array
    with small_pieces():
        got = kernels.KERNELS["matmul"].implementations["blocks"](a, b)
    close(got, reference.matmul(a, b), dtype)


def test_every_kernel_has_a_reference_and_its_rule_names_a_real_implementation():
    x = np.ones((2, 3, 4, 4), np.float32)
    for name, k in kernels.KERNELS.items():
        assert "reference" in k.implementations, name
    for name in ("batch_norm_stats", "channel_affine", "matmul"):
        assert kernels.KERNELS[name].choose(x) in kernels.KERNELS[name].implementations
    assert kernels.KERNELS["conv2d"].choose(x, np.ones((2, 3, 3, 3), np.float32), (1, 1), (1, 1)) == "im2col"
    assert kernels.KERNELS["pool2d"].choose(x) == "cpu"
    with kernels.use("reference"):
        assert all(k.choose(x, x, (1, 1), (1, 1)) == "reference" for k in kernels.KERNELS.values())
    assert kernels.tier() == "fast"


# --- the whole engine on each tier ---------------------------------------------------------------
def small_cnn():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 6, 3, padding=1, stride=2), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Flatten(), nn.Linear(6, 5))


def train(tier, dtype, steps=4):
    """Parameters and losses after ``steps`` SGD steps (momentum, weight decay) on ``tier``."""
    with kernels.use(tier):
        md.manual_seed(0)
        model = small_cnn()
        for p in model.parameters():
            p.array = p.array.astype(dtype)
        opt = md.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
        rng = np.random.default_rng(0)
        x = md.tensor(rng.random((6, 1, 8, 8)).astype(dtype))
        y = md.tensor(rng.integers(0, 5, 6))
        losses = []
        for _ in range(steps):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.array))
        model.eval()
        adv = pgd(model, x, y, 0.1, 0.02, 3, random_start=False)
        return [p.array.copy() for p in model.parameters()], losses, adv.array


@pytest.fixture
def no_fast_implementation(monkeypatch):
    """Every implementation but the references raises when called or read."""
    class Trap:
        def __init__(self, name):
            self.name = name

        def __call__(self, *args, **kwargs):
            raise AssertionError(f"the fast implementation {self.name} ran on the reference tier")

        def __getattr__(self, attr):
            if attr.startswith("__"):
                raise AttributeError(attr)
            raise AssertionError(f"the fast implementation {self.name}.{attr} ran on the reference tier")
    for k in kernels.KERNELS.values():
        for name in list(k.implementations):
            if name != "reference":
                monkeypatch.setitem(k.implementations, name, Trap(f"{k.name}/{name}"))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_training_and_pgd_agree_on_both_tiers(dtype):
    fast = train("fast", dtype)
    plain = train("reference", dtype)
    for got, want in zip(plain[0], fast[0]):
        close(got, want, dtype)
    close(np.array(plain[1]), np.array(fast[1]), dtype)
    close(plain[2], fast[2], dtype)
    assert kernels.tier() == "fast"


def test_the_reference_tier_runs_no_fast_implementation(no_fast_implementation):
    train("reference", np.float32, steps=2)
    with pytest.raises(AssertionError, match="ran on the reference tier"):
        train("fast", np.float32, steps=1)


def test_reference_tier_from_the_environment():
    code = ("import numpy as np, minidl as md, minidl.functional as F; from minidl import kernels; "
            "x = md.tensor(np.ones((2, 1, 5, 5), np.float32)); "
            "fn = F.conv2d(x, md.tensor(np.ones((2, 1, 3, 3), np.float32), requires_grad=True))._ctx; "
            "print(kernels.tier(), fn.cache.algorithm)")
    env = dict(os.environ, MINIDL_KERNELS="reference", PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.split() == ["reference", "reference"], out.stderr
    out = subprocess.run([sys.executable, "-c", "import minidl"], env=dict(env, MINIDL_KERNELS="fastest"),
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode != 0 and "MINIDL_KERNELS: expected one of 'fast', 'reference', got 'fastest'" in out.stderr


@examples(10)
@given(data=st.data(), cfg=conv_configs(), pool=pool_configs(), dtype=FLOATS)
def test_conv_and_pool_layers_agree_on_both_tiers(data, cfg, pool, dtype):
    x = data.draw(tensors(shape=cfg["x_shape"], dtype=dtype)).array
    w = data.draw(tensors(shape=cfg["w_shape"], dtype=dtype)).array
    gy = data.draw(tensors(shape=cfg["out_shape"], dtype=dtype)).array
    xp_ = data.draw(tensors(shape=pool["x_shape"], dtype=dtype, distinct=True, margin=1e-3,
                            min_value=-10, max_value=10)).array
    gp = data.draw(tensors(shape=pool["out_shape"], dtype=dtype)).array
    results = {}
    for tier in ("fast", "reference"):
        with kernels.use(tier):
            y, cache = kernels.conv2d_forward(x, w, cfg["stride"], cfg["padding"])
            out = [y, *kernels.conv2d_backward(gy, cache)]
            for fwd, bwd in ((kernels.max_pool2d_forward, kernels.max_pool2d_backward),
                             (kernels.avg_pool2d_forward, kernels.avg_pool2d_backward)):
                yp, pcache = fwd(xp_, pool["kernel"], pool["stride"], pool["padding"])
                out += [yp, bwd(gp, pcache)]
            results[tier] = out
    assert all(a.dtype == np.dtype(dtype) for a in results["reference"])
    for got, want in zip(results["reference"], results["fast"]):
        assert got.shape == want.shape
        close(got, want, dtype)


def test_use_and_force_check_their_arguments():
    with pytest.raises(ValueError, match="kernels.use: expected one of 'fast', 'reference', got 'plain'"):
        kernels.use("plain")
    with pytest.raises(ValueError, match="kernels.force: unknown kernel 'gelu'"):
        kernels.force("gelu", "reference")
    with pytest.raises(ValueError, match="kernels.force: kernel 'matmul' has no implementation 'simd'"):
        kernels.force("matmul", "simd")
    with kernels.force("matmul", "reference"):
        assert kernels.KERNELS["matmul"].choose(np.ones(3)) == "reference"
    assert kernels.KERNELS["matmul"].choose(np.ones(3)) == "blocks"
    previous = kernels.use("reference")
    assert kernels.tier() == "reference"
    previous.__exit__(None, None, None)
    assert kernels.tier() == "fast"


# --- the plain layers stay plain ---------------------------------------------------------------
PLAIN = [os.path.join(ROOT, "minidl", d) for d in ("ops", "optim", "nn")]


def plain_files():
    return sorted(os.path.join(d, f) for d in PLAIN for f in os.listdir(d) if f.endswith(".py"))


@pytest.mark.parametrize("path", plain_files(), ids=os.path.basename)
def test_ops_optim_and_nn_are_plain_array_code(path):
    """No machinery (thread pool, BLAS threads, scratch pool, tuner) and no branch on the array
    module in the ops, optimizers and layers: what runs faster on a CPU is a kernel."""
    import ast
    with open(path) as f:
        text = f.read()
    for node in ast.walk(ast.parse(text)):
        names = []
        if isinstance(node, ast.ImportFrom):
            names = [node.module or ""] + [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            assert not any(m in name.split(".") for m in ("runtime", "parallel", "blas", "workspace", "autotune",
                                                          "threadpoolctl")), f"{path}:{node.lineno} imports {name}"
    assert "xp is numpy" not in text and "xp is not numpy" not in text, f"{path} branches on the array module"


def test_the_study_runs_on_the_reference_tier(tmp_path, no_fast_implementation):
    """The whole study (training, attacks, AutoAttack, UAPs, spectrum, landscape, curvature) on the
    plain implementations: any fast implementation it reached would raise."""
    from minidl.study import run_study
    from test_study import TINY
    from test_train import synthetic
    with kernels.use("reference"):
        metrics = run_study("mnist", "quick", out_dir=str(tmp_path / "study"),
                            arrays=(synthetic(96), synthetic(40, seed=1)), overrides=TINY, progress=False)
    assert metrics["accuracy"]["rows"]["natural"]["clean"] >= 0
    assert os.path.getsize(tmp_path / "study" / "report.md") > 0
