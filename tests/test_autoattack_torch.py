"""minidl's AutoAttack against torchattacks 3.5.1 on the same small trained CNN and the same
MNIST test images. Skipped without torch, torchattacks or the real MNIST files.

torchattacks' ``AutoAttack`` class runs its attacks with 10 steps (its defaults), not the
paper's 100, so the reference here is torchattacks' own ``MultiAttack`` of its APGD-CE,
APGD-T, FAB-T and Square at the paper's settings (100 steps, 9 targets, 5,000 queries),
which is what ``autoattack`` implements.
"""
import os
from pathlib import Path

import numpy as np
import pytest

import minidl as md
import minidl.functional as F
from minidl import nn
from minidl.adversarial import autoattack, robust_accuracy
from minidl.data import DataLoader
from minidl.optim import Adam

torch = pytest.importorskip("torch")
torchattacks = pytest.importorskip("torchattacks")

DATA = Path(os.environ.get("MINIDL_TEST_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def mnist():
    if not (DATA / "mnist" / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("real MNIST files not found")
    from minidl.experiment import load_arrays
    return load_arrays("mnist", str(DATA), train=True, limit=6000), load_arrays("mnist", str(DATA), train=False)


def small_cnn():
    return nn.Sequential(nn.Conv2d(1, 8, 4, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 4, stride=2, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(16 * 7 * 7, 10))


def to_torch(model):
    tn = torch.nn
    tm = tn.Sequential(tn.Conv2d(1, 8, 4, stride=2, padding=1), tn.ReLU(), tn.Conv2d(8, 16, 4, stride=2, padding=1),
                       tn.ReLU(), tn.Flatten(), tn.Linear(16 * 7 * 7, 10))
    for ours, theirs in zip([m for m in model if hasattr(m, "weight")], [m for m in tm if hasattr(m, "weight")]):
        theirs.weight.data = torch.tensor(ours.weight.numpy())
        theirs.bias.data = torch.tensor(ours.bias.numpy())
    return tm.eval()


def test_autoattack_agrees_with_torchattacks():
    (train_x, train_y), (test_x, test_y) = mnist()
    md.manual_seed(0)
    model = small_cnn()
    opt = Adam(model.parameters(), lr=2e-3)
    for xb, yb in DataLoader((train_x, train_y), 100, shuffle=True):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
    model.eval()
    x, y = test_x[:200], test_y[:200]
    eps = 0.08
    ours = robust_accuracy(model, (x, y), lambda m, a, b: autoattack(m, a, b, eps), progress=False)
    tm = to_torch(model)
    with torch.no_grad():
        clean = (tm(torch.tensor(x)).argmax(1).numpy() == y)
    np.testing.assert_array_equal(clean, ours["clean_correct"])  # the copy is faithful
    ta = torchattacks
    ref = ta.MultiAttack([ta.APGD(tm, norm="Linf", eps=eps, steps=100, loss="ce", seed=0),
                          ta.APGDT(tm, norm="Linf", eps=eps, steps=100, n_classes=10, seed=0),
                          ta.FAB(tm, norm="Linf", eps=eps, steps=100, multi_targeted=True, n_classes=10, seed=0),
                          ta.Square(tm, norm="Linf", eps=eps, n_queries=5000, seed=0)])
    adv = ref(torch.tensor(x), torch.tensor(y.astype(np.int64)))
    with torch.no_grad():
        theirs = float(((tm(adv).argmax(1).numpy() == y) & clean).mean())
    assert 0.2 < theirs < clean.mean() - 0.2  # the eps leaves work for every stage
    assert abs(ours["robust_accuracy"] - theirs) <= 0.005 + 1e-9, (ours["robust_accuracy"], theirs)
