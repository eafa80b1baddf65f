"""The adapters of torchattacks' and AutoAttack's interfaces (``minidl.compat``): arguments and
defaults as in those libraries, the results those of minidl's own attacks, clear errors for
what is not ported, and, where torchattacks is installed, its PGD and FGSM reproduced on
shared weights."""
import importlib.util
import inspect

import numpy as np
import pytest

import minidl as md
from minidl import nn
from minidl.adversarial import autoattack, fgsm, pgd
from minidl.compat import autoattack as aa
from minidl.compat import torchattacks as ta
from minidl.tensor import Tensor

HAVE_TORCHATTACKS = importlib.util.find_spec("torchattacks") is not None


def small_problem(n=12, seed=0):
    md.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4))
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, 4, 4), dtype=np.float32)
    y = np.argmax(model(Tensor(x)).array, axis=1).astype(np.int64)  # all correct at first
    return model, x, y


# --- torchattacks ---------------------------------------------------------------------------
def test_torchattacks_defaults_are_the_librarys():
    assert inspect.signature(ta.PGD).parameters["eps"].default == 8 / 255
    assert inspect.signature(ta.PGD).parameters["alpha"].default == 2 / 255
    assert inspect.signature(ta.PGD).parameters["steps"].default == 10
    assert inspect.signature(ta.PGD).parameters["random_start"].default is True
    assert inspect.signature(ta.FGSM).parameters["eps"].default == 8 / 255
    if HAVE_TORCHATTACKS:
        import torchattacks
        for name in ("PGD", "FGSM"):
            ours, theirs = inspect.signature(getattr(ta, name)), inspect.signature(getattr(torchattacks, name))
            assert [(p.name, p.default) for p in ours.parameters.values()] == \
                [(p.name, p.default) for p in theirs.parameters.values()]


def test_torchattacks_calls_minidls_attacks():
    model, x, y = small_problem()
    np.testing.assert_array_equal(ta.FGSM(model, eps=0.1)(x, y).array, fgsm(model, x, y, 0.1).array)
    out = ta.PGD(model, eps=0.1, alpha=0.02, steps=5, random_start=False)(Tensor(x), Tensor(y))
    np.testing.assert_array_equal(out.array, pgd(model, x, y, 0.1, 0.02, 5, random_start=False, result="last").array)
    atk = ta.PGD(model, eps=0.3, alpha=0.05, steps=10, random_start=False)
    atk.set_mode_targeted_by_label(quiet=True)
    target = (y + 1) % 4
    np.testing.assert_array_equal(atk(x, target).array,
                                  pgd(model, x, target, 0.3, 0.05, 10, random_start=False, targeted=True,
                                      result="last").array)
    atk.set_mode_default()
    assert not atk.targeted


def test_torchattacks_normalization_takes_and_returns_normalised_images():
    model, x, y = small_problem()
    mean, std = 0.4, 0.25
    inner = model
    normalized = ta.PGD(inner, eps=0.1, alpha=0.02, steps=5, random_start=False)
    normalized.set_normalization_used(mean=[mean], std=[std])
    out = normalized((x - mean) / std, y).array * std + mean
    # the same attack on a model that normalises inside, given raw images
    wrapped = ta._Normalized(inner, np.array([mean]), np.array([std]))
    raw = pgd(wrapped, x, y, 0.1, 0.02, 5, random_start=False, result="last").array
    np.testing.assert_allclose(out, raw, atol=1e-6)
    assert np.abs(out - x).max() <= 0.1 + 1e-6
    with pytest.raises(ValueError, match="must be normalised"):
        normalized(x * 4, y)  # raw images although the attack expects normalised ones


@pytest.mark.parametrize("make, error, match", [
    (lambda m: ta.PGD(m, eps=-0.1), ValueError, "PGD: eps"),
    (lambda m: ta.PGD(m, alpha=0), ValueError, "PGD: alpha"),
    (lambda m: ta.PGD(m, steps=2.0), TypeError, "PGD: steps"),
    (lambda m: ta.PGD(m, random_start="yes"), TypeError, "random_start"),
    (lambda m: ta.FGSM(m, eps=float("nan")), ValueError, "FGSM: eps"),
    (lambda m: ta.FGSM("model"), TypeError, "model must be"),
    (lambda m: ta.PGD(m).set_normalization_used(mean=[0.5], std=[0.0]), ValueError, "std must be > 0"),
    (lambda m: ta.PGD(m).set_normalization_used(mean=[0.5, 0.4], std=[0.2]), ValueError, "one value per channel"),
    (lambda m: ta.PGD(m).set_normalization_used(mean=[float("nan")], std=[0.2]), ValueError, "mean must be finite"),
    (lambda m: ta.PGD(m).set_mode_targeted_random(), ValueError, "set_mode_targeted_by_label"),
    (lambda m: ta.PGD(m).set_mode_targeted_least_likely(), ValueError, "set_mode_targeted_by_label"),
    (lambda m: ta.PGD(m).set_model_training_mode(model_training=True), ValueError, "eval mode only"),
    (lambda m: ta.CW(m), AttributeError, "CW is not ported"),
])
def test_torchattacks_refuses_what_is_not_supported(make, error, match):
    model, _, _ = small_problem(n=2)
    with pytest.raises(error, match=match):
        make(model)


@pytest.mark.skipif(not HAVE_TORCHATTACKS, reason="torchattacks is not installed")
@pytest.mark.parametrize("normalized", [False, True])
def test_torchattacks_agrees_with_torchattacks_on_shared_weights(normalized):
    import torch
    import torchattacks
    model, x, y = small_problem(n=16, seed=3)
    tmodel = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 12), torch.nn.ReLU(), torch.nn.Linear(12, 4))
    with torch.no_grad():
        for i, j in ((1, 1), (3, 3)):
            tmodel[i].weight.copy_(torch.from_numpy(model[j].weight.array))
            tmodel[i].bias.copy_(torch.from_numpy(model[j].bias.array))
    mean, std = 0.45, 0.3
    inputs = (x - mean) / std if normalized else x
    for make in (lambda lib, m: lib.FGSM(m, eps=0.05),
                 lambda lib, m: lib.PGD(m, eps=0.05, alpha=0.01, steps=10, random_start=False)):
        ours, theirs = make(ta, model), make(torchattacks, tmodel)
        if normalized:
            ours.set_normalization_used(mean=[mean], std=[std])
            theirs.set_normalization_used(mean=[mean], std=[std])
        a = ours(inputs, y).array
        b = theirs(torch.from_numpy(inputs), torch.from_numpy(y)).numpy()
        np.testing.assert_allclose(a, b, atol=1e-5)
        feed = (lambda z: z * std + mean) if normalized else (lambda z: z)
        pa = model(Tensor(feed(a).astype(np.float32))).array.argmax(1)
        pb = tmodel(torch.from_numpy(feed(b).astype(np.float32))).argmax(1).numpy()
        np.testing.assert_array_equal(pa, pb)
        assert (pa != y).any()  # the attack does something for the comparison to mean anything


@pytest.mark.parametrize("kwargs, match", [(dict(result="best"), "result must be"),
                                           (dict(result="last", restarts=2), "needs restarts=1")])
def test_pgd_result_argument(kwargs, match):
    model, x, y = small_problem(n=2)
    with pytest.raises(ValueError, match=match):
        pgd(model, x, y, 0.1, 0.02, 3, **kwargs)


# --- AutoAttack -----------------------------------------------------------------------------
def test_autoattack_runs_minidls_autoattack_and_prints_the_accuracies(capsys):
    model, x, y = small_problem()
    adversary = aa.AutoAttack(model, norm="Linf", eps=0.1, version="custom", attacks_to_run=["apgd-ce", "apgd-t"])
    x_adv, y_adv = adversary.run_standard_evaluation(Tensor(x), Tensor(y), bs=5, return_labels=True)
    parts = [autoattack(model, x[i:i + 5], y[i:i + 5], 0.1, attacks=["apgd-ce", "apgd-t"]).array for i in (0, 5, 10)]
    np.testing.assert_array_equal(x_adv.array, np.concatenate(parts))
    pred = model(x_adv).array.argmax(1)
    np.testing.assert_array_equal(y_adv.array, pred)
    out = capsys.readouterr().out
    assert "initial accuracy: 100.00%" in out and "robust accuracy after APGD-CE" in out
    assert f"robust accuracy: {(pred == y).mean():.2%}" in out
    assert "max Linf perturbation" in out


def test_autoattack_versions_and_assigned_attacks():
    model, x, y = small_problem(n=4)
    adversary = aa.AutoAttack(model, eps=0.05, verbose=False)
    assert adversary.attacks_to_run == ["apgd-ce", "apgd-t", "fab-t", "square"] and adversary.eps == 0.05
    assert aa.AutoAttack(model, version="rand", verbose=False).attacks_to_run == ["apgd-ce", "apgd-dlr"]
    assert inspect.signature(aa.AutoAttack).parameters["eps"].default == 0.3
    adversary.attacks_to_run = ["apgd-ce"]
    a = adversary.run_standard_evaluation(x, y, bs=250)
    np.testing.assert_array_equal(a.array, autoattack(model, x, y, 0.05, attacks=["apgd-ce"]).array)
    adversary.attacks_to_run = ["fab"]
    with pytest.raises(ValueError, match="'fab' untargeted is not ported"):
        adversary.run_standard_evaluation(x, y)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(norm="L1"), ValueError, "norm must be 'Linf' or 'L2'"),
    (dict(norm="linf"), ValueError, "norm must be 'Linf' or 'L2'"),
    (dict(version="plus"), ValueError, "version must be"),
    (dict(version="custom"), ValueError, "non-empty list"),
    (dict(version="custom", attacks_to_run="apgd-ce"), TypeError, "list of attack names"),
    (dict(attacks_to_run=["apgd-ce"]), ValueError, "version='custom' only"),
    (dict(eps=-1), ValueError, "AutoAttack: eps"),
    (dict(seed=1.5), TypeError, "AutoAttack: seed"),
    (dict(is_tf_model=True), ValueError, "is_tf_model"),
    (dict(log_path=3), TypeError, "log_path"),
])
def test_autoattack_refuses_what_is_not_supported(kwargs, error, match):
    model, _, _ = small_problem(n=2)
    with pytest.raises(error, match=match):
        aa.AutoAttack(model, verbose=False, **kwargs)


def test_autoattack_evaluation_argument_errors(tmp_path):
    model, x, y = small_problem(n=2)
    adversary = aa.AutoAttack(model, verbose=False, log_path=str(tmp_path / "log.txt"))
    with pytest.raises(ValueError, match="bs"):
        adversary.run_standard_evaluation(x, y, bs=0)
    with pytest.raises(ValueError, match=r"x must lie in \[0, 1\]"):
        adversary.run_standard_evaluation(x + 2, y)
    assert "using standard version" in (tmp_path / "log.txt").read_text()


@pytest.mark.parametrize("attacks, error", [("apgd-ce", TypeError), (["apgd"], ValueError), ([], ValueError)])
def test_minidl_autoattack_checks_its_stage_list(attacks, error):
    model, x, y = small_problem(n=2)
    with pytest.raises(error, match="attacks"):
        autoattack(model, x, y, 0.1, attacks=attacks)
