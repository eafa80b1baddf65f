"""minidl's fast-FGSM and PGD training (the TrainConfig path) step by step against PyTorch
running Wong, Rice and Kolter's (2020) recipe: same initial weights, batches and random starts.

The side-by-side harness is ``benchmarks/compare_training_torch.py``. In float64 both sides
agree to rounding (~1e-17); a difference in the attack's clipping, the learning-rate schedule,
Adam or the loss shows at the first step as a relative weight difference of 1e-5 or more.
Skipped without torch.
"""
import importlib.util
import os

import numpy as np
import pytest

from minidl.experiment import TrainConfig

torch = pytest.importorskip("torch")

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks",
                     "compare_training_torch.py")
_spec = importlib.util.spec_from_file_location("compare_training_torch", _PATH)
compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare)

TOL = 1e-10


def tiny_batches(n_batches, batch=6, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((n_batches * batch, 1, 28, 28)) ** 3  # many pixels near 0, as in MNIST
    labels = rng.integers(0, 10, n_batches * batch)
    return [(images[i * batch:(i + 1) * batch], labels[i * batch:(i + 1) * batch]) for i in range(n_batches)]


def side_by_side(pgd_variant="wong", torch_lr="wong", **overrides):
    # lr 0.05 at the peak, one batch per epoch and 5 epochs (the peak at epoch 5 * 2 // 5 = 2, as
    # minidl's 0.4): large steps, so a mismatch cannot hide.
    settings = dict(dataset="mnist", model="wong_mnist", epochs=5, batch_size=6, lr=0.05, optimizer="adam",
                    adv="fgsm", eps=0.3, alpha=0.375, init="fan_in_uniform")
    settings.update(overrides)
    return compare.SideBySide(TrainConfig(**settings), steps_per_epoch=1, dtype="float64", seed=0, torch=torch,
                              torch_lr=torch_lr, pgd_variant=pgd_variant)


def test_fast_fgsm_training_matches_wong_et_al_step_by_step():
    run = side_by_side()
    records = [run.step(x, y) for x, y in tiny_batches(5)]
    for r in records:
        assert r["lr_minidl"] == pytest.approx(r["lr_torch"], rel=1e-12)
        assert r["x_adv_differs"] == 0
        assert r["loss_minidl"] == pytest.approx(r["loss_torch"], rel=1e-9)
        assert r["weight_rel_diff"] < TOL, r
    assert records[-1]["lr_torch"] == 0  # the last step of the cycle runs at rate 0, as theirs
    moved = sum(float(np.abs(p.numpy()).sum()) for p in run.model.parameters())
    assert moved > 0 and records[1]["loss_minidl"] != records[0]["loss_minidl"]


def test_pgd_training_matches_best_iterate_pgd_in_torch():
    """minidl's training PGD keeps each example's worst iterate; written so in PyTorch, the
    two runs agree step by step (the engine and the recipe's other pieces match)."""
    run = side_by_side("best", "minidl", adv="pgd", alpha=0.1, steps=3, schedule="constant")
    for x, y in tiny_batches(3):
        r = run.step(x, y)
        assert r["x_adv_differs"] == 0 and r["weight_rel_diff"] < TOL, r


def test_pgd_training_differs_from_wong_et_al_only_by_the_iterate_kept():
    """Wong et al.'s training PGD freezes each example at its first misclassified iterate and
    uses the last one; minidl keeps the highest-loss misclassified one, a stronger point. On the
    same start the adversarial batches differ, so the losses do."""
    run = side_by_side("wong", "minidl", adv="pgd", alpha=0.1, steps=3, schedule="constant")
    r = run.step(*tiny_batches(1)[0])
    assert r["x_adv_differs"] > 0 and r["loss_minidl"] > r["loss_torch"]
