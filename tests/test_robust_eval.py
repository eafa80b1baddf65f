"""Tests for minidl.adversarial.evaluate: robust_accuracy, accuracy_vs_eps, sanity_checks,
is_randomized and predict."""
import numpy as np
import pytest

import minidl as md
from minidl import nn
from minidl.adversarial import (accuracy_vs_eps, fgsm, is_randomized, pgd, robust_accuracy,
                                sanity_checks)
from minidl.adversarial.evaluate import predict
from minidl.tensor import Tensor

from conftest import linear_model, make_blocks

F64 = np.float64


def predictions(model, x):
    model.eval()
    with md.no_grad():
        return model(Tensor(np.asarray(x))).numpy().argmax(1)


@pytest.fixture(scope="module")
def trained():
    md.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))
    x, y = make_blocks(300, 0)
    opt = md.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        md.functional.cross_entropy(model(Tensor(x)), y).backward()
        opt.step()
    model.zero_grad()
    xt, yt = make_blocks(90, 1)
    assert (predictions(model, xt) == yt).mean() > 0.95
    return model, xt, yt


def binary_centered(seed, n=60, d=5):
    """A 2-class linear model whose boundary passes through the cube's centre, and uniform
    inputs labelled by the model itself (clean accuracy 1)."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.5, 1.5, d) * rng.choice([-1.0, 1.0], d)
    model = linear_model(np.stack([np.zeros(d), w]), [0.0, -0.5 * w.sum()])
    x = rng.uniform(0, 1, (n, d))
    return model, x, predictions(model, x)


# --- robust_accuracy ------------------------------------------------------------------------
def test_robust_accuracy_matches_a_direct_count(trained):
    model, x, y = trained
    y = y.copy()
    y[:7] = (y[:7] + 1) % 3  # some clean mistakes, which must count as broken
    attack = lambda m, xb, yb: pgd(m, xb, yb, 0.25, 0.05, 5, random_start=False)
    res = robust_accuracy(model, (x, y), attack, batch_size=32, progress=False, return_points=True)
    clean = predictions(model, x) == y
    x_adv = np.concatenate([attack(model, x[i:i + 32], y[i:i + 32]).numpy() for i in range(0, len(y), 32)])
    robust = clean & (predictions(model, x_adv) == y)
    assert res["n"] == len(y)
    np.testing.assert_array_equal(res["clean_correct"], clean)
    np.testing.assert_array_equal(res["robust_correct"], robust)
    assert res["clean_accuracy"] == pytest.approx(clean.mean())
    assert res["robust_accuracy"] == pytest.approx(robust.mean())
    np.testing.assert_array_equal(res["adversarial"], x_adv)
    assert 0 < res["robust_accuracy"] < res["clean_accuracy"] < 1
    assert not np.any(res["robust_correct"] & ~res["clean_correct"])
    # a "helpful" attack that moves every point to its label still cannot repair a clean mistake
    helpful = lambda m, xb, yb: pgd(m, xb, yb, 0.5, 0.05, 15, targeted=True)
    res = robust_accuracy(model, (x, y), helpful, batch_size=32, progress=False, return_points=True)
    assert (predictions(model, res["adversarial"]) == y).all()
    np.testing.assert_array_equal(res["robust_correct"], clean)


def test_robust_accuracy_with_a_random_attack_under_a_seed(trained):
    """With random starts, the same seed gives the same numbers as the same batches by hand."""
    model, x, y = trained
    attack = lambda m, xb, yb: pgd(m, xb, yb, 0.2, 0.05, 3, restarts=2)
    md.manual_seed(9)
    res = robust_accuracy(model, (x, y), attack, batch_size=40, progress=False)
    md.manual_seed(9)
    x_adv = np.concatenate([attack(model, x[i:i + 40], y[i:i + 40]).numpy() for i in range(0, len(y), 40)])
    expected = (predictions(model, x) == y) & (predictions(model, x_adv) == y)
    np.testing.assert_array_equal(res["robust_correct"], expected)


def test_robust_accuracy_accepts_a_dataset_and_identity_attack(trained):
    model, x, y = trained

    class Data:
        images, labels = x, y

        def __len__(self):
            return len(self.labels)

    res = robust_accuracy(model, Data(), lambda m, xb, yb: xb, batch_size=50, progress=False)
    assert res["robust_accuracy"] == res["clean_accuracy"] == pytest.approx((predictions(model, x) == y).mean())


def test_robust_accuracy_keeps_the_models_mode(trained):
    model, x, y = trained
    model.train()
    robust_accuracy(model, (x[:20], y[:20]), lambda m, xb, yb: fgsm(m, xb, yb, 0.1), progress=False)
    assert all(m.training for m in model.modules())
    model.eval()
    robust_accuracy(model, (x[:20], y[:20]), lambda m, xb, yb: fgsm(m, xb, yb, 0.1), progress=False)
    assert not any(m.training for m in model.modules())
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_robust_accuracy_rejects_bad_data(trained):
    model, x, y = trained
    with pytest.raises(ValueError, match="length"):
        robust_accuracy(model, (x, y[:-1]), lambda m, xb, yb: xb, progress=False)
    with pytest.raises(ValueError, match=r"\bx\b"):
        robust_accuracy(model, (x + 2, y), lambda m, xb, yb: xb, progress=False)


def test_predict_restores_mixed_modes():
    md.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    model.train()
    model[1].eval()
    predict(model, Tensor(np.full((2, 3), 0.5, dtype=np.float32)))
    assert [m.training for m in model.modules()] == [True, True, False, True]


# --- accuracy_vs_eps ------------------------------------------------------------------------
def test_accuracy_vs_eps_curve_and_plot(trained, tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    model, x, y = trained
    eps_values = [0.0, 0.05, 0.1, 0.2, 0.35]
    path = tmp_path / "new_folder" / "curve.png"
    curve = accuracy_vs_eps(model, (x, y), lambda eps: (lambda m, xb, yb: pgd(m, xb, yb, eps, eps / 4 + 1e-3, 8)),
                            eps_values, plot_path=path, label="pgd", progress=False)
    assert [e for e, _ in curve] == eps_values
    accs = [a for _, a in curve]
    assert accs[0] == pytest.approx((predictions(model, x) == y).mean())
    assert all(b <= a + 0.03 for a, b in zip(accs, accs[1:]))  # non-increasing up to noise
    assert accs[-1] <= 0.05 < accs[0] - 0.9
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_accuracy_vs_eps_without_a_plot_writes_nothing(trained, tmp_path):
    model, x, y = trained
    curve = accuracy_vs_eps(model, (x[:30], y[:30]), lambda eps: (lambda m, xb, yb: fgsm(m, xb, yb, eps)),
                            [0.0, 0.4], progress=False)
    assert len(curve) == 2 and curve[1][1] <= curve[0][1]
    assert list(tmp_path.iterdir()) == []


# --- sanity checks ----------------------------------------------------------------------------
class NoisyLinear(nn.Module):
    """Randomized even in eval mode: Gaussian input noise from the library generator."""

    def __init__(self, lin):
        super().__init__()
        self.lin = lin

    def forward(self, x):
        xp = md.backend.get_array_module(x.array)
        noise = md.backend.rng(xp).normal(scale=0.01, size=x.shape).astype(x.dtype)
        return self.lin(x + Tensor(noise))


class Rounding(nn.Module):
    """Gradient masking: the forward reads x.array (rounded to a coarse grid), so no gradient
    reaches the input although the classifier is the same linear model."""

    def __init__(self, lin):
        super().__init__()
        self.lin = lin

    def forward(self, x):
        return self.lin(Tensor(np.round(x.array * 4) / 4))


def attacks_for(eps=0.1, huge=1.0):
    return dict(pgd_attack=lambda m, x, y: pgd(m, x, y, eps, eps / 4, 10),
                fgsm_attack=lambda m, x, y: fgsm(m, x, y, eps),
                huge_eps_attack=lambda m, x, y: pgd(m, x, y, huge, huge / 4, 10, random_start=False))


def test_no_warnings_for_a_normal_linear_model():
    model, x, y = binary_centered(0)
    md.manual_seed(0)
    warnings, numbers = sanity_checks(model, (x, y), num_classes=2, **attacks_for())
    assert warnings == []
    assert numbers["huge_eps_accuracy"] == 0.0
    assert numbers["broken_by_fgsm_not_pgd"] == 0
    assert numbers["pgd_accuracy"] <= numbers["fgsm_accuracy"]
    assert "randomized" not in numbers


def test_randomized_model_warning():
    lin, x, _ = binary_centered(1)
    model = NoisyLinear(lin)
    y = predictions(lin, x)
    assert is_randomized(model, x)
    assert not is_randomized(lin, x)
    md.manual_seed(0)
    warnings, numbers = sanity_checks(model, (x, y), pgd_attack=lambda m, xb, yb: pgd(m, xb, yb, 0.1, 0.03, 5,
                                                                                        eot_samples=2),
                                      num_classes=2)
    assert numbers["randomized"] is True
    assert any("randomized" in w and "eot_samples" in w for w in warnings)


def test_is_randomized_leaves_the_model_alone():
    lin, x, _ = binary_centered(2)
    model = nn.Sequential(lin, nn.Dropout(0.5))  # dropout is off in eval mode: deterministic
    model.train()
    assert not is_randomized(model, x)
    assert model.training and all(p.grad is None and p.requires_grad for p in model.parameters())


def test_huge_eps_warning_for_a_gradient_masked_model():
    lin, x, _ = binary_centered(3)
    model = Rounding(lin)
    y = predictions(model, x)
    md.manual_seed(0)
    warnings, numbers = sanity_checks(model, (x, y), num_classes=2, **attacks_for())
    assert numbers["huge_eps_accuracy"] == 1.0  # a zero gradient never moves the input
    assert any("huge eps" in w and "masked" in w for w in warnings)
    # the same classifier without masking is broken completely at that eps
    _, numbers_lin = sanity_checks(lin, (x, predictions(lin, x)), num_classes=2, **attacks_for())
    assert numbers_lin["huge_eps_accuracy"] == 0.0


def test_pgd_weaker_than_fgsm_warning():
    """A PGD that cannot move (tiny step, one step, no random start) is caught by FGSM."""
    model, x, y = binary_centered(4)
    weak = lambda m, xb, yb: pgd(m, xb, yb, 0.2, 1e-6, 1, random_start=False)
    warnings, numbers = sanity_checks(model, (x, y), weak, fgsm_attack=lambda m, xb, yb: fgsm(m, xb, yb, 0.2),
                                      num_classes=2)
    assert numbers["broken_by_fgsm_not_pgd"] > 0
    assert any("weaker than FGSM" in w for w in warnings)


def test_masked_gradient_warning_threshold_and_wording():
    """One helper words the huge-eps warning of sanity_checks and of evaluate_rse."""
    from minidl.adversarial.evaluate import CHANCE_SLACK, masked_gradient_warning
    assert CHANCE_SLACK == 0.1
    assert masked_gradient_warning(0.19, 10) is None                 # within chance + slack
    assert masked_gradient_warning(0.21, 10) == ("accuracy at a huge eps is 0.210, far above chance (0.10): "
                                                 "the gradients are probably masked")
    assert masked_gradient_warning(0.21, 10, eps=50.0).startswith("accuracy at a huge eps (50.0) is 0.210")
    assert masked_gradient_warning(0.3, 2) is None and masked_gradient_warning(0.61, 2) is not None
    assert masked_gradient_warning(0.21, 10, slack=0.2) is None
