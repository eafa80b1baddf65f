"""Tests for minidl.adversarial.landscape: PGD trajectories, their straightness and plane, loss
grids, gradient cosine similarities in the eps-ball, and the pictures. Tiny linear models and
MLPs on 4x4 images (no convolution)."""
import numpy as np
import pytest

import minidl
from minidl import nn
from minidl.adversarial import pgd
from minidl.adversarial.landscape import (batch_straightness, gradient_cosine_similarities,
                                          gradient_cosine_similarities_many, loss_grid, pgd_trajectories,
                                          pgd_trajectory, plot_cosine_histograms, plot_trajectory,
                                          trajectory_coordinates, trajectory_plane, trajectory_straightness)

SHAPE = (1, 4, 4)
D = 16


def two_class_linear(seed=0):
    """A 2-class linear model: the cross-entropy gradient is p_other (w_other - w_y), one
    direction everywhere."""
    rng = np.random.default_rng(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(D, 2))
    model[1].weight.data[...] = rng.standard_normal((2, D)).astype(np.float32)
    model[1].bias.data[...] = 0
    return model


def mlp(seed=0, classes=3):
    minidl.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(D, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                         nn.Linear(32, classes))


def image(seed=0, lo=0.4, hi=0.6):
    return np.random.default_rng(seed).uniform(lo, hi, SHAPE).astype(np.float32)


def ce(model, x, y):
    model.eval()
    with minidl.no_grad():
        z = model(minidl.tensor(x[None].astype(np.float32))).numpy()[0].astype(np.float64)
    return float(np.log(np.exp(z - z.max()).sum()) + z.max() - z[y])


# --- trajectories -------------------------------------------------------------------------------
@pytest.mark.parametrize("norm,eps,alpha", [("2", 0.8, 0.15), ("inf", 0.1, 0.02)])
def test_trajectory_starts_at_x_and_stays_in_ball(norm, eps, alpha):
    model, x = mlp(1), image(1, 0.0, 1.0)
    traj = pgd_trajectory(model, x, 2, eps, alpha, steps=12, norm=norm)
    assert len(traj) == 13 and all(t.shape == SHAPE for t in traj)
    np.testing.assert_array_equal(traj[0], x)
    for t in traj:
        d = (t - x).ravel()
        size = np.linalg.norm(d) if norm == "2" else np.abs(d).max()
        assert size <= eps * (1 + 1e-5) + 1e-7
        assert t.min() >= 0 and t.max() <= 1
    assert not np.allclose(traj[-1], x)  # it moved
    s = trajectory_straightness(traj)
    assert 0 < s <= 1
    # the iterates are pgd's: its result (the best iterate) is one of them
    best = pgd(model, x[None], np.array([2]), eps, alpha, 12, norm=norm, random_start=False).numpy()[0]
    assert min(np.abs(best - t).max() for t in traj) < 1e-6


def test_straight_path_for_linear_model():
    model, x = two_class_linear(), image(0)
    # L2 steps along one constant direction; eps small enough that clipping to [0, 1] never acts
    traj = pgd_trajectory(model, x, 0, eps=0.3, alpha=0.05, steps=10, norm="2")
    assert trajectory_straightness(traj) == pytest.approx(1.0, abs=1e-6)
    assert np.linalg.norm(traj[-1] - x) == pytest.approx(0.3, rel=1e-5)  # reached the sphere
    # a path that turns is less straight: an L-shaped path
    corner = [np.zeros(2), np.array([1.0, 0.0]), np.array([1.0, 1.0])]
    assert trajectory_straightness(corner) == pytest.approx(np.sqrt(2) / 2)
    assert np.isnan(trajectory_straightness([np.zeros(3), np.zeros(3)]))


def test_batched_trajectories_and_straightness():
    model = mlp(2)
    rng = np.random.default_rng(0)
    images = rng.random((5,) + SHAPE).astype(np.float32)
    labels = rng.integers(0, 3, 5)
    trajs = pgd_trajectories(model, images, labels, 0.5, 0.1, 6, norm="2")
    assert trajs.shape == (7, 5) + SHAPE
    np.testing.assert_array_equal(trajs[0], images)
    single = pgd_trajectory(model, images[3], labels[3], 0.5, 0.1, 6, norm="2")
    np.testing.assert_allclose(np.stack(single), trajs[:, 3], atol=1e-6)
    s = batch_straightness(trajs)
    assert s.shape == (5,) and ((s > 0) & (s <= 1)).all()
    assert s[3] == pytest.approx(trajectory_straightness(single))


def test_trajectory_plane_and_loss_grid():
    model, x = mlp(3), image(3, 0.2, 0.8)
    traj = pgd_trajectory(model, x, 1, 1.0, 0.2, 10, norm="2")
    u, v = trajectory_plane(traj)
    assert u.shape == SHAPE and v.shape == SHAPE
    assert np.dot(u.ravel(), u.ravel()) == pytest.approx(1) and np.dot(v.ravel(), v.ravel()) == pytest.approx(1)
    assert abs(np.dot(u.ravel(), v.ravel())) < 1e-10
    first = (traj[1] - traj[0]).ravel()
    assert np.dot(u.ravel(), first) == pytest.approx(np.linalg.norm(first), rel=1e-5)
    coords = trajectory_coordinates(traj, u, v)
    assert coords.shape == (11, 2)
    np.testing.assert_allclose(coords[0], 0)
    # the final perturbation lies in the plane
    assert np.linalg.norm(coords[-1]) == pytest.approx(np.linalg.norm(traj[-1] - x), rel=1e-4)

    grid = loss_grid(model, x, 1, u, v, extent=0.5, resolution=5)
    assert grid["loss"].shape == (5, 5) and grid["pred"].shape == (5, 5)
    np.testing.assert_allclose(grid["a"], np.linspace(-0.5, 0.5, 5))
    assert grid["loss"][2, 2] == pytest.approx(ce(model, x, 1), rel=1e-4)
    corner = x + grid["a"][4] * u + grid["b"][0] * v  # loss indexed [b, a]
    assert grid["loss"][0, 4] == pytest.approx(ce(model, corner, 1), rel=1e-4)
    # asymmetric extent; clipping changes points that leave [0, 1]
    g2 = loss_grid(model, x, 1, u, v, extent=(0, 2, -1, 1), resolution=3, clip=True)
    clipped = np.clip(x + 2 * u + 1 * v, 0, 1)
    assert g2["loss"][2, 2] == pytest.approx(ce(model, clipped, 1), rel=1e-4)


def test_plane_of_a_straight_path_is_still_orthonormal():
    model, x = two_class_linear(), image(0)
    traj = pgd_trajectory(model, x, 0, eps=0.3, alpha=0.05, steps=10, norm="2")
    u, v = trajectory_plane(traj)
    assert abs(np.dot(u.ravel(), v.ravel())) < 1e-10
    assert np.linalg.norm(v) == pytest.approx(1)
    with pytest.raises(ValueError):
        trajectory_plane([x, x])


# --- gradient cosine similarities ------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["inf", "2"])
def test_linear_model_gradients_are_parallel(norm):
    model = two_class_linear(4)
    sims = gradient_cosine_similarities(model, image(4), 1, eps=0.1, n_points=12, norm=norm, rng=0)
    assert sims.shape == (12 * 11 // 2,)
    np.testing.assert_allclose(sims, 1.0, atol=1e-5)


def test_cosines_of_a_nonlinear_model_and_many_images():
    model = mlp(5)
    rng = np.random.default_rng(5)
    images = rng.random((4,) + SHAPE).astype(np.float32)
    labels = rng.integers(0, 3, 4)
    sims = gradient_cosine_similarities(model, images[0], labels[0], eps=0.5, n_points=10, rng=0)
    assert ((sims >= -1) & (sims <= 1)).all()
    assert sims.min() < 0.999  # a ReLU net is not linear over a large ball
    np.testing.assert_array_equal(
        sims, gradient_cosine_similarities(model, images[0], labels[0], eps=0.5, n_points=10, rng=0))
    many = gradient_cosine_similarities_many(model, images, labels, eps=0.5, n_points=10, rng=0, batch_size=25,
                                             progress=False)
    assert many["per_image"].shape == (4, 45) and many["values"].shape == (180,)
    assert many["per_image_mean"].shape == (4,)
    np.testing.assert_allclose(many["per_image_mean"], many["per_image"].mean(axis=1))
    lin = gradient_cosine_similarities_many(two_class_linear(), images, labels % 2, eps=0.1, n_points=5,
                                            progress=False)
    np.testing.assert_allclose(lin["values"], 1.0, atol=1e-5)


# --- pictures -----------------------------------------------------------------------------------
def test_plots_write_pngs(tmp_path):
    model, x = mlp(6), image(6, 0.1, 0.9)
    traj = pgd_trajectory(model, x, 0, 1.0, 0.2, 8, norm="2")
    out = plot_trajectory(model, x, 0, traj, tmp_path / "traj.png", resolution=9)
    assert out["coords"].shape == (9, 2) and out["grid"]["loss"].shape == (9, 9)
    assert 0 < out["straightness"] <= 1
    sims = {"natural": gradient_cosine_similarities(model, x, 0, 0.3, 8, rng=0),
            "linear": gradient_cosine_similarities(two_class_linear(), x, 0, 0.3, 8, rng=0)}
    hist = plot_cosine_histograms(sims, tmp_path / "deep" / "cos.png")
    for p in (tmp_path / "traj.png", hist):
        assert p.exists() and p.stat().st_size > 1000
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
