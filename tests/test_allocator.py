"""The C heap's thresholds (``minidl/kernels/runtime/allocator.py``): set with the right numbers,
only where asked for, and never a change in what is computed."""
import json
import os
import subprocess
import sys

import pytest

from minidl.kernels.runtime import allocator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER_VARS = ("MINIDL_MALLOC", "MINIDL_KERNELS") + allocator.USER_VARIABLES


class FakeGlibc:
    def __init__(self, answer=1):
        self.calls, self.answer = [], answer

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return self.answer


@pytest.fixture
def fresh(monkeypatch):
    """allocator as if never tuned, with a fake glibc that records the calls, and none of the
    variables that change its decision."""
    for v in USER_VARS:
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setattr(allocator, "_done", False)
    monkeypatch.setattr(allocator, "state", "untouched")
    libc = FakeGlibc()
    monkeypatch.setattr(allocator, "_glibc", lambda: libc)
    return libc


def test_tune_sets_glibcs_own_maximum_thresholds_once(fresh):
    assert allocator.tune().startswith("tuned")
    # glibc's <malloc.h>: M_MMAP_THRESHOLD is -3, M_TRIM_THRESHOLD -1; 32 MiB is the dynamic
    # threshold's ceiling on 64-bit systems, and glibc keeps the trim threshold at twice it.
    assert fresh.calls == [(-3, 32 << 20), (-1, 64 << 20)]
    allocator.tune()
    assert len(fresh.calls) == 2


@pytest.mark.parametrize("var, value, expected", [
    ("MINIDL_MALLOC", "default", "left to glibc (MINIDL_MALLOC=default)"),
    ("MALLOC_MMAP_THRESHOLD_", "1048576", "left to the environment (MALLOC_MMAP_THRESHOLD_)"),
    ("MALLOC_TRIM_THRESHOLD_", "1048576", "left to the environment (MALLOC_TRIM_THRESHOLD_)"),
])
def test_tune_leaves_the_heap_alone_when_told(fresh, monkeypatch, var, value, expected):
    monkeypatch.setenv(var, value)
    assert allocator.tune() == expected
    assert fresh.calls == []


def test_tune_outside_glibc_and_when_mallopt_refuses(fresh, monkeypatch):
    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    assert allocator.tune() == "left alone (not glibc)"
    monkeypatch.setattr(allocator, "_done", False)
    refusing = FakeGlibc(answer=0)
    monkeypatch.setattr(allocator, "_glibc", lambda: refusing)
    assert allocator.tune() == "left to glibc (mallopt refused)"


TRAIN = """
import json, numpy as np, minidl as md, minidl.functional as F
from minidl.kernels.runtime import allocator
from minidl.models import get_model
md.manual_seed(0)
model = get_model("cifar_cnn", in_channels=3, image_size=32)
opt = md.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
rng = np.random.default_rng(0)
for _ in range(2):
    x = md.tensor(rng.random((16, 3, 32, 32), dtype=np.float32)); y = md.tensor(rng.integers(0, 10, 16))
    loss = F.cross_entropy(model(x), y); opt.zero_grad(); loss.backward(); opt.step()
print(json.dumps([allocator.state, [p.array.tobytes().hex() for p in model.parameters()]]))
"""


def _train(**env):
    base = {k: v for k, v in os.environ.items() if k not in USER_VARS}
    out = subprocess.run([sys.executable, "-c", TRAIN], env=dict(base, PYTHONPATH=ROOT, **env),
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_same_bits_with_and_without_the_thresholds():
    tuned_state, tuned = _train()
    plain_state, plain = _train(MINIDL_MALLOC="default")
    if allocator._glibc() is not None:
        assert tuned_state.startswith("tuned")
    assert plain_state == "left to glibc (MINIDL_MALLOC=default)"
    assert tuned == plain
    reference_state, _ = _train(MINIDL_KERNELS="reference")
    assert reference_state.startswith("left to glibc (the fast tier")


def test_a_misspelt_choice_is_refused(fresh, monkeypatch):
    monkeypatch.setenv("MINIDL_MALLOC", "off")
    with pytest.raises(ValueError, match="MINIDL_MALLOC: expected one of 'tune', 'default', got 'off'"):
        allocator.tune()
    assert fresh.calls == []
    monkeypatch.setenv("MINIDL_MALLOC", "tune")
    assert allocator.tune().startswith("tuned")
    env = {k: v for k, v in os.environ.items() if k not in USER_VARS}
    out = subprocess.run([sys.executable, "-c", "import minidl"], env=dict(env, PYTHONPATH=ROOT, MINIDL_MALLOC="off"),
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode != 0 and "MINIDL_MALLOC: expected one of 'tune', 'default', got 'off'" in out.stderr
