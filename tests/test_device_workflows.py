"""What researchers run with ``--device cuda``, on each device: attacks, robust evaluation, UAPs
and their SVD, the loss-landscape analysis, training with resume, the study's quick pipeline.

Every test takes conftest's ``device`` parameter ("cpu", and "cuda" where a GPU answers). The
reference points do not depend on the device: closed forms for a two-class linear model (see
tests/test_attacks.py), finite differences, and, for the convolutional models, the same run on
the CPU in float64. On the CPU half most comparisons are therefore with closed forms; on a GPU
they also check the CUDA kernels (convolution, pooling) end to end.

For the linear model with logits W x + b, f(x) = w.x + c (w = W[1] - W[0]) and label y, every
loss increases along s w with s = 1 - 2y, so with no clipping the worst point of the L-inf ball
is x + eps s sign(w) and that of the L2 ball x + eps s w / ||w||.
"""
import json
import os

import numpy as np
import pytest

import minidl as md
from minidl import backend, nn
from minidl.adversarial import apgd, autoattack, fgsm, input_gradient, pgd, robust_accuracy, sanity_checks
from minidl.adversarial.landscape import ball_gradient_cosines, loss_grid, path_straightness, pgd_paths
from minidl.adversarial.uap import fooling_rate, per_example_perturbations, uap_svd
from minidl.tensor import Tensor

from conftest import numeric_grad
from test_study import TINY
from test_train import synthetic

D = 16  # 1 x 4 x 4 images for the linear model


def to_float64(model):
    for p in model.parameters():
        p.array = p.array.astype(np.float64)
    return model


def linear_two_class(device, seed=0):
    """(model, w, c): Flatten -> Linear(16, 2) in float64 on ``device``."""
    rng = np.random.default_rng(seed)
    W, b = rng.standard_normal((2, D)), np.array([0.1, -0.1])
    model = nn.Sequential(nn.Flatten(), nn.Linear(D, 2))
    model[1].weight.array, model[1].bias.array = W.copy(), b.copy()
    return model.to(device), W[1] - W[0], b[1] - b[0]


def mid_images(n, seed=1):
    """Images in [0.4, 0.6], far enough from 0 and 1 that no perturbation below 0.4 is clipped."""
    return 0.4 + 0.2 * np.random.default_rng(seed).random((n, 1, 4, 4))


def small_cnn(device, seed=0):
    """conv 3x3 - ReLU - max-pool - conv 3x3 - ReLU - avg-pool - linear, float64, on 8x8 images:
    every CUDA kernel (im2col, col2im, both pools forward and backward) runs in its gradient."""
    md.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(24, 3))
    return to_float64(model).to(device)


def cnn_data(n=6, seed=2):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 8, 8)), rng.integers(0, 3, n)


def on_device(x, device):
    return backend.device_of(x.array if isinstance(x, Tensor) else x) == device


def ce_loss_sum(model, x, y):
    with md.no_grad():
        return float(md.functional.cross_entropy(model(Tensor(x)), y, reduction="sum").item())


# --- attacks ----------------------------------------------------------------------------------------
def test_fgsm_and_pgd_reach_the_linear_optimum(device):
    model, w, _ = linear_two_class(device)
    x, y = mid_images(8), np.array([0, 1] * 4)
    s = (1 - 2 * y).reshape(-1, 1, 1, 1)
    corner = x + 0.1 * s * np.sign(w).reshape(1, 1, 4, 4)
    sphere = x + 0.3 * s * (w / np.linalg.norm(w)).reshape(1, 1, 4, 4)
    adv = fgsm(model, x, y, 0.1)
    assert on_device(adv, device)
    np.testing.assert_allclose(adv.numpy(), corner, atol=1e-12)
    # From any random start, two steps of size eps reach the corner of the box and stay there.
    adv = pgd(model, x, y, 0.1, 0.1, 3, restarts=2)
    assert on_device(adv, device)
    np.testing.assert_allclose(adv.numpy(), corner, atol=1e-12)
    adv = pgd(model, x, y, 0.3, 0.3, 4, norm="2", random_start=False)
    np.testing.assert_allclose(adv.numpy(), sphere, atol=1e-12)


def test_attacks_through_a_cnn_follow_the_true_gradient(device):
    model = small_cnn(device)
    x, y = cnn_data()
    g, _, losses = input_gradient(model, Tensor(backend.to_device(x, device)),
                                  Tensor(backend.to_device(y, device)))
    assert on_device(g, device)
    cpu = small_cnn("cpu")
    reference = numeric_grad(lambda z: ce_loss_sum(cpu, z, y), x)
    np.testing.assert_allclose(backend.to_numpy(g), reference, atol=1e-7)
    adv = fgsm(model, x, y, 0.05).numpy()
    clear = np.abs(reference) > 1e-6   # where finite differences fix the sign
    np.testing.assert_array_equal(adv[clear], np.clip(x + 0.05 * np.sign(reference), 0, 1)[clear])
    adv = pgd(model, x, y, 0.05, 0.02, 5, random_start=False).numpy()
    assert np.abs(adv - x).max() <= 0.05 + 1e-12 and adv.min() >= 0 and adv.max() <= 1
    if device != "cpu":
        np.testing.assert_allclose(adv, pgd(cpu, x, y, 0.05, 0.02, 5, random_start=False).numpy(), atol=1e-9)


# --- robust evaluation --------------------------------------------------------------------------------
def closed_form_problem(device):
    """(model, x, y, eps, clean, robust): a linear two-class model and 200 images whose clean and
    L-inf robust correctness are known in closed form (margin > 0, margin > eps ||w||_1)."""
    model, w, _ = linear_two_class(device)
    x = mid_images(200, seed=3)
    f = x.reshape(len(x), -1) @ w
    median = float(np.median(f))
    model[1].bias.array = backend.to_device(np.array([median / 2, -median / 2]), device)   # c = -median
    f = f - median
    flip = np.random.default_rng(4).random(len(x)) < 0.2
    y = ((f > 0) ^ flip).astype(np.int64)
    eps = 0.005
    margin = (2 * y - 1) * f                     # > 0 exactly when the point is classified correctly
    expected_clean = margin > 0
    expected_robust = margin > eps * np.abs(w).sum()
    assert 0 < expected_robust.sum() < expected_clean.sum() < len(x)   # the data are not degenerate
    assert np.abs(np.abs(margin) - eps * np.abs(w).sum()).min() > 1e-6   # and no point on a boundary
    return model, x, y, eps, expected_clean, expected_robust


def test_robust_accuracy_and_checks_match_the_closed_form(device):
    model, x, y, eps, expected_clean, expected_robust = closed_form_problem(device)
    run = lambda m, xb, yb: pgd(m, xb, yb, eps, eps, 3)
    result = robust_accuracy(model, (x, y), run, batch_size=64, progress=False)
    np.testing.assert_array_equal(result["clean_correct"], expected_clean)
    np.testing.assert_array_equal(result["robust_correct"], expected_robust)
    warnings, numbers = sanity_checks(model, (x, y), run, fgsm_attack=lambda m, xb, yb: fgsm(m, xb, yb, eps),
                                      huge_eps_attack=lambda m, xb, yb: pgd(m, xb, yb, 1.0, 0.5, 3), num_classes=2)
    assert warnings == []
    assert numbers["pgd_accuracy"] == numbers["fgsm_accuracy"] == expected_robust.mean()
    assert numbers["broken_by_fgsm_not_pgd"] == 0 and numbers["huge_eps_accuracy"] == 0


def test_apgd_and_autoattack_match_the_closed_form(device):
    """A linear 4-class model: x is broken within the L-inf ball iff for some class j != y,
    (w_j - w_y) x + (b_j - b_y) + eps ||w_j - w_y||_1 > 0 (no clipping: the images are mid-grey).
    AutoAttack's targeted stages reach that optimum for every target, so they must match it
    exactly; APGD-CE alone can only be weaker. (The CPU half is what runs without a GPU; the
    point of the test is the CUDA half against the same closed form.)"""
    rng = np.random.default_rng(5)
    W, b = rng.standard_normal((4, D)), 0.1 * rng.standard_normal(4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(D, 4))
    model[1].weight.array, model[1].bias.array = W.copy(), b.copy()
    model = model.to(device)
    x = mid_images(120, seed=6)
    z = x.reshape(len(x), -1) @ W.T + b
    y = np.where(rng.random(len(x)) < 0.15, rng.integers(0, 4, len(x)), z.argmax(axis=1)).astype(np.int64)
    gap = z[np.arange(len(x)), y][:, None] - z                          # z_y - z_j
    l1 = np.abs(W[y][:, None, :] - W[None, :, :]).sum(axis=2)          # ||w_y - w_j||_1
    others = np.arange(4)[None, :] != y[:, None]
    ratio = np.where(others, gap / np.where(others, l1, 1), np.inf).min(axis=1)
    median = float(np.median(ratio[ratio > 0]))
    eps = float(ratio[np.argsort(np.abs(ratio - median))[:2]].mean())  # between two points, on none
    expected_clean, expected_robust = ratio > 0, ratio > eps
    assert 0 < expected_robust.sum() < expected_clean.sum() < len(x)
    aa = robust_accuracy(model, (x, y), lambda m, xb, yb: autoattack(m, xb, yb, eps, seed=0), batch_size=64,
                         progress=False)
    np.testing.assert_array_equal(aa["clean_correct"], expected_clean)
    np.testing.assert_array_equal(aa["robust_correct"], expected_robust)
    adv = apgd(model, x[:8], y[:8], eps, steps=10, seed=0)
    assert on_device(adv, device) and np.abs(adv.numpy() - x[:8]).max() <= eps + 1e-12
    ce = robust_accuracy(model, (x, y), lambda m, xb, yb: apgd(m, xb, yb, eps, steps=20, seed=0), batch_size=64,
                         progress=False)
    assert not (ce["robust_correct"] < expected_robust).any()            # never beyond the optimum


def test_cli_eval_and_attack_on_a_device(device, tmp_path, capsys):
    """``python -m minidl eval|attack --device D`` on a checkpoint (trained on the CPU): the same
    numbers as the library computes on the CPU. Needs the real MNIST test files."""
    from pathlib import Path
    from minidl.cli import main as cli_main
    from minidl.experiment import TrainConfig, load_arrays, load_model, train_on_arrays
    real = Path(os.environ.get("MINIDL_TEST_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
    if not (real / "mnist" / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("real MNIST files not found")
    x, y = synthetic(64, classes=10, size=28)
    train_on_arrays(TrainConfig(dataset="mnist", model="mlp", epochs=1, batch_size=32), (x, y), (x[:16], y[:16]),
                    str(tmp_path), progress=False)
    ckpt, out = str(tmp_path / "checkpoint.npz"), tmp_path / "attack.json"
    assert cli_main(["eval", "--checkpoint", ckpt, "--data-dir", str(real), "--limit", "40", "--device", device,
                     "--quiet"]) == 0
    assert cli_main(["attack", "--checkpoint", ckpt, "--data-dir", str(real), "--limit", "40", "--attack", "fgsm",
                     "--eps", "0.05", "--device", device, "--json", str(out), "--quiet", "--no-checks"]) == 0
    images, labels = load_arrays("mnist", str(real), train=False, limit=40)
    model, _ = load_model(ckpt, "cpu")
    expected = robust_accuracy(model, (images, labels), lambda m, xb, yb: fgsm(m, xb, yb, 0.05), progress=False)
    assert f"test accuracy: {expected['clean_accuracy']:.4f} on 40 images" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["clean_accuracy"] == expected["clean_accuracy"]
    # A sign that differs on a near-zero gradient may flip one image between devices.
    assert abs(result["robust_accuracy"] - expected["robust_accuracy"]) <= (0 if device == "cpu" else 1 / 40)


# --- UAPs and their SVD ------------------------------------------------------------------------------
def test_per_example_perturbations_svd_and_fooling_rate(device):
    """All labels 0: every L2 perturbation is eps w / ||w||, so the matrix has rank one, its top
    singular vector is that direction (signed to raise the loss) and s1 = eps sqrt(N)."""
    model, w, c = linear_two_class(device)
    x = mid_images(30, seed=5)
    y = np.zeros(len(x), dtype=np.int64)
    unit = w / np.linalg.norm(w)
    matrix = per_example_perturbations(model, x, y, eps=0.3, steps=4, progress=False)
    np.testing.assert_allclose(matrix, np.tile(0.3 * unit, (len(x), 1)), atol=1e-6)
    result = uap_svd(matrix, k=2, eps=0.3, model=model, images=x, labels=y)
    np.testing.assert_allclose(result.vectors[0], 0.3 * unit, atol=1e-5)
    np.testing.assert_allclose(result.singular_values[0], 0.3 * np.sqrt(len(x)), rtol=1e-5)
    assert result.singular_values[1] < 1e-4
    v = result.vectors[0].astype(np.float64)
    # The sign was chosen by the mean loss on the device: the kept sign is the higher of the two.
    loss_v = ce_loss_sum(linear_two_class("cpu")[0], x + v.reshape(1, 1, 4, 4), y) / len(x)
    assert loss_v == pytest.approx(result.sign_losses[0].max(), rel=1e-5)
    rate = fooling_rate(model, x, y, v)
    flat = x.reshape(len(x), -1)
    clean, moved = (flat @ w + c) > 0, ((flat + v) @ w + c) > 0
    assert rate["fooling_rate"] == pytest.approx((clean != moved).mean())
    assert rate["accuracy"] == pytest.approx((~moved).mean()) and rate["clean_accuracy"] == pytest.approx((~clean).mean())


# --- loss landscape -----------------------------------------------------------------------------------
def test_landscape_of_the_linear_model(device):
    model, w, c = linear_two_class(device)
    x, y = mid_images(3, seed=6), np.array([0, 1, 0])
    s = (1 - 2 * y).reshape(1, -1, 1, 1, 1)
    path = pgd_paths(model, x, y, eps=0.3, alpha=0.1, steps=3)["iterates"]
    expected = x[None] + 0.1 * np.arange(4).reshape(-1, 1, 1, 1, 1) * s * (w / np.linalg.norm(w)).reshape(1, 1, 1, 4, 4)
    np.testing.assert_allclose(path, expected, atol=1e-12)
    np.testing.assert_allclose(path_straightness(path), 1.0)
    # The cross-entropy gradient of a two-class linear model is a positive multiple of s w.
    cosines = ball_gradient_cosines(model, x[:1], y[:1], [0.1], n_points=5, rng=0)["pairwise"]
    np.testing.assert_allclose(cosines, 1.0, atol=1e-12)


def test_loss_grid_of_a_cnn(device):
    model, cpu = small_cnn(device), small_cnn("cpu")
    x, y = cnn_data(1)
    rng = np.random.default_rng(7)
    u, v = rng.standard_normal((2, 1, 8, 8)) * 0.05
    grid = loss_grid(model, x[0], y[0], u, v, extent=1.0, resolution=3)
    for i, b in enumerate(grid["b"]):
        for j, a in enumerate(grid["a"]):
            point = x + a * u + b * v
            assert grid["loss"][i, j] == pytest.approx(ce_loss_sum(cpu, point, y[:1]), rel=1e-10)


# --- training with resume --------------------------------------------------------------------------------
def test_training_and_resume(device, tmp_path):
    """What ``python -m minidl train ... --device D`` and then ``--resume`` do: a run stopped after
    one epoch and resumed ends where an uninterrupted run ends (no random layer in lenet, so the
    device's generator plays no part; exact on the CPU)."""
    from minidl.experiment import TrainConfig, load_model, train_on_arrays
    from minidl.train import evaluate
    config = TrainConfig(dataset="synthetic", model="lenet", epochs=3, batch_size=16, lr=3e-3, optimizer="adam",
                         device=device)
    train, test = synthetic(96, size=12), synthetic(48, size=12, seed=1)
    straight, history = train_on_arrays(config, train, test, str(tmp_path / "a"), progress=False)
    assert history[-1]["test_accuracy"] > 0.8
    train_on_arrays(config, train, test, str(tmp_path / "b"), progress=False,
                    epoch_end=lambda epoch, record: epoch == 1)        # stopped after epoch 1
    resumed, history = train_on_arrays(config, train, test, str(tmp_path / "b"), resume=True, progress=False)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    tol = dict(rtol=0, atol=0) if device == "cpu" else dict(rtol=1e-4, atol=1e-6)
    for (name, p), (_, q) in zip(straight.named_parameters(), resumed.named_parameters()):
        assert on_device(q, device)
        np.testing.assert_allclose(p.numpy(), q.numpy(), err_msg=name, **tol)
    # The checkpoint holds host arrays: it loads on the CPU and predicts as the trained model does.
    loaded, _ = load_model(str(tmp_path / "b" / "checkpoint.npz"), "cpu")
    on_cpu = evaluate(loaded, md.data.DataLoader(test, 16), progress=False)
    assert on_cpu["accuracy"] == pytest.approx(history[-1]["test_accuracy"])
    assert on_cpu["loss"] == pytest.approx(history[-1]["test_loss"], rel=1e-4)


# --- the study ---------------------------------------------------------------------------------------------
def test_quick_study_pipeline(device, tmp_path):
    from minidl.study import run_study
    out = str(tmp_path / "study")
    metrics = run_study("mnist", "quick", device=device, out_dir=out,
                        arrays=(synthetic(128), synthetic(40, seed=1)), overrides=TINY, progress=False)
    saved = json.load(open(os.path.join(out, "metrics.json")))
    assert saved["device"] == metrics["device"] == device
    assert f"--device {device}" in open(os.path.join(out, "report.md")).read()
    rows = saved["accuracy"]["rows"]
    for model in ("natural", "adversarial"):
        assert 0 <= min(v for v in rows[model].values() if isinstance(v, float))
        assert max(v for v in rows[model].values() if isinstance(v, float)) <= 1
    spectrum = saved["uap"]["natural"]["top_singular_values"]
    assert spectrum == sorted(spectrum, reverse=True) and min(spectrum) >= 0
