"""Shared test configuration: the hypothesis profile, the backends every device-aware test
runs on, and helpers and small models that several test files use (put new shared ones here;
``from conftest import ...`` in a test file).

* ``BACKENDS`` is ``["cpu", "cuda"]``; the ``"cuda"`` case is skipped (cleanly, with a reason)
  unless ``minidl.backend.cuda_available()``. A test opts in by taking an argument named
  ``device`` (it is parametrized directly, not through a fixture, so that it combines with
  hypothesis' ``@given``); the ``backends`` fixture gives the list of usable devices.
* The hypothesis profile ``minidl`` (the default) turns the per-example deadline off (the
  first call of an op may be slow on a GPU) and prints the reproduction blob on failure;
  ``HYPOTHESIS_PROFILE=ci`` draws fewer examples and ``=thorough`` many more.
"""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from minidl import backend, nn
from minidl.tensor import Tensor

settings.register_profile("minidl", deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", parent=settings.get_profile("minidl"), max_examples=10)
settings.register_profile("thorough", parent=settings.get_profile("minidl"), max_examples=500)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "minidl")
settings.load_profile(PROFILE)


def examples(n):
    """``@settings`` for a property test: ``n`` examples under the default profile (sized so the
    whole suite stays fast); under another profile (``ci``, ``thorough``) the profile decides."""
    return settings(max_examples=n, deadline=None) if PROFILE == "minidl" else settings(deadline=None)

CUDA = backend.cuda_available()
BACKENDS = ["cpu", "cuda"]
_BACKEND_PARAMS = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not CUDA, reason="no usable CUDA device (CuPy missing or no GPU)"))]


def pytest_generate_tests(metafunc):
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", _BACKEND_PARAMS)


@pytest.fixture
def backends():
    """The devices usable on this machine: always "cpu", "cuda" when a GPU answers."""
    return ["cpu", "cuda"] if CUDA else ["cpu"]


# --- helpers --------------------------------------------------------------------------------
def on(device, t, requires_grad=None):
    """A new leaf Tensor with ``t``'s values (a Tensor or array) on ``device``."""
    data = t.array if isinstance(t, Tensor) else np.asarray(t)
    rg = (t.requires_grad if isinstance(t, Tensor) else False) if requires_grad is None else requires_grad
    return Tensor(backend.to_device(data, device).copy(), requires_grad=rg)


def leaf(array, device="cpu", dtype=np.float64, requires_grad=True):
    """A float64 (by default) leaf Tensor on ``device`` from anything array-like."""
    return Tensor(backend.to_device(np.asarray(array, dtype=dtype), device).copy(), requires_grad=requires_grad)


def host(x):
    """A NumPy array from a Tensor or a NumPy/CuPy array."""
    return x.numpy() if isinstance(x, Tensor) else backend.to_numpy(x)


def numeric_grad(f, x, eps=1e-6):
    """Central differences of the scalar function f at the float64 NumPy array x (for tests
    that check a gradient against something other than minidl's own gradcheck)."""
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for j in range(flat.size):
        old = flat[j]
        flat[j] = old + eps
        plus = f(x)
        flat[j] = old - eps
        minus = f(x)
        flat[j] = old
        gflat[j] = (plus - minus) / (2 * eps)
    return g


# --- small models and data shared by the attack and evaluation tests -------------------------
def linear_model(W, b, dtype=np.float64):
    """nn.Linear with the given weight (out, in) and bias, in ``dtype``."""
    W = np.asarray(W, dtype=dtype)
    m = nn.Linear(W.shape[1], W.shape[0])
    m.weight.array = W.copy()
    m.bias.array = np.asarray(b, dtype=dtype).copy()
    return m


def make_blocks(n, seed):
    """4x4 images of 3 classes: class k is bright (0.75 on 0.25) in row k, plus a little noise.
    L-inf eps = 0.5 turns one class's template into another's."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = np.full((n, 1, 4, 4), 0.25)
    for k in range(3):
        x[y == k, 0, k, :] = 0.75
    x += rng.normal(scale=0.06, size=x.shape)
    return np.clip(x, 0, 1).astype(np.float32), y
