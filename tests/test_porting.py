"""The porting harness (issue 32): small PyTorch scripts written in the style of the usual
tutorials and robustness code (``examples/pytorch_scripts/``) run on minidl after the
mechanical import rename of ``python -m minidl.port``, and give PyTorch's numbers.

For each script:
* the renamed script runs on synthetic data (made with NumPy inside the script) and its
  figures match the stored ones (``tests/porting/figures.json``, minidl's own seeded
  initialisation);
* with real MNIST / CIFAR-10 (``MINIDL_TEST_DATA``) the renamed script runs on a few hundred
  images and its figures match the stored ones for real data;
* where torch is installed, the original runs under PyTorch first and saves its initial
  weights (``INIT_OUT``; the FGSM tutorial its trained checkpoint), the renamed script starts
  from them (``INIT_IN``), both without shuffling or random augmentation, and the figures
  agree (to float32 rounding where nothing random is left; fast-FGSM's random starts differ
  between the two generators, so its figures agree loosely).

``MINIDL_UPDATE_PORTING_FIGURES=1`` rewrites the stored figures from the current run.
"""
import importlib.util
import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

from minidl import port

REPO = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "examples" / "pytorch_scripts"
FIGURES = pathlib.Path(__file__).resolve().parent / "porting" / "figures.json"
REAL_DATA = os.environ.get("MINIDL_TEST_DATA")
NAMES = sorted(p.stem for p in SCRIPTS.glob("*.py"))
UPDATE = os.environ.get("MINIDL_UPDATE_PORTING_FIGURES") == "1"

# (relative, absolute) tolerance of each script's figures: against stored figures (another
# machine's BLAS rounds differently, and a training run carries that along) and against
# PyTorch from the same weights.
STORED_TOL = {"blitz_tensors": (1e-6, 1e-6), "blitz_autograd": (1e-6, 1e-6)}
TORCH_TOL = {"blitz_tensors": (1e-6, 1e-6), "blitz_autograd": (1e-6, 1e-6), "fgsm_tutorial": (0, 0),
             "fast_fgsm_mnist": (0.15, 0.1)}
# torchattacks' PGD without random start, from the same trained weights, gives the same
# adversarial predictions: atol 1e-6 leaves no room for one example of 64 to differ.
TORCH_TOL["torchattacks_readme"] = (0, 1e-6)
# figures of random draws, which the two generators make differently: not compared with torch
TORCH_SKIP = {"torchattacks_readme": ("pgd_random_start",)}
# per-example figures, compared with torch from the same weights but not with figures stored
# on another machine, whose BLAS may round one borderline example the other way in training
STORED_SKIP = {"torchattacks_readme": ("pgd_predictions",)}
# the library each original imports besides torch (the torch run is skipped without it)
REQUIRES = {"torchattacks_readme": "torchattacks", "autoattack_readme": "autoattack"}
DEFAULT_STORED_TOL = (2e-2, 0.05)
DEFAULT_TORCH_TOL = (2e-3, 1e-3)

try:
    import torch  # noqa: F401
except ImportError:
    torch = None


def _run(script, tmp_path, **env):
    full = {k: v for k, v in os.environ.items() if k != "DATA_ROOT"}  # synthetic unless asked
    full.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **env)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=full, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"{script.name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULTS ")]
    assert lines, f"{script.name} printed no RESULTS line:\n{proc.stdout[-2000:]}"
    return json.loads(lines[-1][len("RESULTS "):])


def _renamed(name, tmp_path):
    out = tmp_path / f"{name}_minidl.py"
    assert port.main([str(SCRIPTS / f"{name}.py"), "-o", str(out)]) == 0
    return out


def _close(a, b, rtol, atol, where="results"):
    """Raise AssertionError naming the first place where a and b differ beyond the tolerance."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {sorted(a)} vs {sorted(b)}"
        for k in a:
            _close(a[k], b[k], rtol, atol, f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{where}: lengths {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, rtol, atol, f"{where}[{i}]")
    elif isinstance(a, bool) or isinstance(a, str) or a is None:
        assert a == b, f"{where}: {a!r} vs {b!r}"
    else:
        assert math.isfinite(a) and abs(a - b) <= atol + rtol * abs(b), f"{where}: {a!r} vs {b!r}"


def _stored(key):
    return json.loads(FIGURES.read_text()).get(key) if FIGURES.exists() else None


def _check_stored(key, results, tol):
    results = {k: v for k, v in results.items() if k not in STORED_SKIP.get(key.split("/")[0], ())}
    if UPDATE:
        figures = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
        figures[key] = results
        FIGURES.write_text(json.dumps(figures, indent=1, sort_keys=True) + "\n")
        return
    expected = _stored(key)
    assert expected is not None, f"no stored figures for {key}; run with MINIDL_UPDATE_PORTING_FIGURES=1"
    _close(results, expected, *tol, where=key)


# --- the rename ---------------------------------------------------------------------------------
def test_rename_maps_imports_and_leaves_the_rest():
    source = ("import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n"
              "from torch.utils.data import DataLoader  # batches\nfrom torchvision import datasets, transforms\n"
              "    import torchvision.transforms as T\nimport torch.backends.cudnn as cudnn\nimport torch.optim\n"
              "import os, torch\nfrom torch import nn, optim\ns = '''\nimport torch\n'''\nx = torch.zeros(2)\n")
    expected = ("import minidl as torch\nimport minidl.nn as nn\nimport minidl.functional as F\n"
                "from minidl.utils.data import DataLoader  # batches\nfrom minidl.vision import datasets, transforms\n"
                "    import minidl.vision.transforms as T\nimport minidl.backends.cudnn as cudnn\n"
                "import minidl as torch\nimport os, minidl as torch\nfrom minidl import nn, optim\n"
                "s = '''\nimport torch\n'''\nx = torch.zeros(2)\n")
    assert port.rename_source(source) == expected


def test_rename_maps_the_attack_libraries():
    source = ("import torchattacks\nimport torchattacks as ta\nfrom torchattacks import PGD, FGSM\n"
              "from autoattack import AutoAttack\nimport autoattack\nimport torchattacksx\nimport autoattacks\n")
    expected = ("import minidl.compat.torchattacks as torchattacks\nimport minidl.compat.torchattacks as ta\n"
                "from minidl.compat.torchattacks import PGD, FGSM\nfrom minidl.compat.autoattack import AutoAttack\n"
                "import minidl.compat.autoattack as autoattack\nimport torchattacksx\nimport autoattacks\n")
    assert port.rename_source(source) == expected


def test_rename_cli(tmp_path, capsys):
    src = tmp_path / "s.py"
    src.write_text("import torch\n")
    assert port.main([str(src)]) == 0 and capsys.readouterr().out == "import minidl as torch\n"
    assert port.main([str(tmp_path / "missing.py")]) == 2
    assert "cannot read" in capsys.readouterr().err


# --- the scripts on minidl ----------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_script_runs_on_minidl_synthetic(name, tmp_path):
    results = _run(_renamed(name, tmp_path), tmp_path, PRETRAINED=str(tmp_path / "none.pth"))
    _check_stored(f"{name}/synthetic", results, STORED_TOL.get(name, DEFAULT_STORED_TOL))


@pytest.mark.skipif(not REAL_DATA, reason="MINIDL_TEST_DATA (real MNIST and CIFAR-10) is not set")
@pytest.mark.parametrize("name", [n for n in NAMES if not n.startswith("blitz_t") and n != "blitz_autograd"])
def test_script_runs_on_minidl_real_data(name, tmp_path):
    results = _run(_renamed(name, tmp_path), tmp_path, DATA_ROOT=REAL_DATA, PRETRAINED=str(tmp_path / "none.pth"))
    _check_stored(f"{name}/real", results, STORED_TOL.get(name, DEFAULT_STORED_TOL))


@pytest.mark.skipif(torch is None, reason="torch is not installed")
@pytest.mark.parametrize("name", NAMES)
def test_script_agrees_with_pytorch_from_shared_weights(name, tmp_path):
    if name in REQUIRES and importlib.util.find_spec(REQUIRES[name]) is None:
        pytest.skip(f"{REQUIRES[name]} is not installed")
    shared = dict(SHUFFLE="0", AUGMENT="0", INIT_OUT=str(tmp_path / "init.pth"),
                  PRETRAINED=str(tmp_path / "pretrained.pth"))
    reference = _run(SCRIPTS / f"{name}.py", tmp_path, **shared)
    shared["INIT_IN"] = shared.pop("INIT_OUT")
    results = _run(_renamed(name, tmp_path), tmp_path, **shared)
    for key in TORCH_SKIP.get(name, ()):
        results.pop(key), reference.pop(key)
    _close(results, reference, *TORCH_TOL.get(name, DEFAULT_TORCH_TOL), where=f"{name} (minidl vs torch)")
