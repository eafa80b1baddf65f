"""adversarial.norms: the shared geometry of the attacks, on known values and invariants; and
the one EOT average (attacks.expected_pass) with and without a gradient."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import minidl as md
from minidl import nn
from minidl.adversarial import attacks
from minidl.adversarial.norms import (per_example_norm, pgd_step, project, project_perturbation, resolve_norm,
                                      step_direction, uniform_ball, unit)
from minidl.tensor import Tensor

from conftest import examples


def test_norm_spellings_and_the_error():
    assert {resolve_norm(n, "op") for n in ("inf", "Linf", np.inf)} == {"inf"}
    assert {resolve_norm(n, "op") for n in ("2", "L2", 2)} == {"2"}
    with pytest.raises(ValueError, match=r"pgd: norm must be 'inf' or '2', got 1"):
        resolve_norm(1, "pgd")


def test_per_example_norm_unit_and_step_direction_known_values():
    g = np.array([[[3.0, -4.0]], [[0.0, 0.0]]], dtype=np.float32)    # (2, 1, 2)
    n = per_example_norm(g)
    assert n.shape == (2, 1, 1) and n.dtype == np.float32
    np.testing.assert_array_equal(n.ravel(), [5, 0])
    np.testing.assert_allclose(unit(g), [[[0.6, -0.8]], [[0, 0]]])  # a vanishing gradient stays 0
    np.testing.assert_array_equal(step_direction(g, "inf"), [[[1, -1]], [[0, 0]]])
    np.testing.assert_allclose(step_direction(g, "2"), unit(g))


def test_project_known_values():
    x0 = np.full((2, 2), 0.5)
    x = np.array([[0.9, 0.5], [0.5 + 0.3, 0.5 + 0.4]])
    np.testing.assert_allclose(project(x, x0, 0.2, "inf"), [[0.7, 0.5], [0.7, 0.7]])
    np.testing.assert_allclose(project(x, x0, 0.25, "2"), [[0.75, 0.5], [0.5 + 0.15, 0.5 + 0.2]])
    np.testing.assert_allclose(project(x, x0, 1.0, "2"), x)           # inside the ball: unchanged
    np.testing.assert_array_equal(project(np.array([[1.4, -0.3]]), np.array([[0.9, 0.1]]), 1.0, "inf"),
                                  [[1.0, 0.0]])                       # then clipped to [0, 1]


def test_pgd_step_is_a_signed_step_then_the_projection():
    x0 = np.full((1, 3), 0.5, dtype=np.float32)
    g = np.array([[2.0, -1.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(pgd_step(x0, g, x0, 0.3, 0.1, "inf"), [[0.6, 0.4, 0.5]])
    np.testing.assert_allclose(pgd_step(x0, g, x0, 0.3, -0.1, "inf"), [[0.4, 0.6, 0.5]])   # targeted
    np.testing.assert_allclose(pgd_step(x0, g, x0, 0.05, 1.0, "2"), x0 + 0.05 * g / np.sqrt(5), rtol=1e-6)


def test_project_perturbation_takes_one_norm_over_all_entries():
    v = np.array([[3.0, 0.0], [0.0, 4.0]])
    np.testing.assert_allclose(project_perturbation(v, 1.0, "2"), v / 5)
    np.testing.assert_array_equal(project_perturbation(v, 1.0, "inf"), [[1, 0], [0, 1]])
    np.testing.assert_array_equal(project_perturbation(np.zeros(3), 1.0), np.zeros(3))


@examples(20)
@given(eps=st.floats(0.01, 3.0), norm=st.sampled_from(["inf", "2"]), d=st.integers(1, 6), seed=st.integers(0, 99))
def test_uniform_ball_stays_inside_and_is_seeded(eps, norm, d, seed):
    a = uniform_ball(np.random.default_rng(seed), (50, 1, d), eps, norm)
    b = uniform_ball(np.random.default_rng(seed), (50, 1, d), eps, norm)
    np.testing.assert_array_equal(a, b)
    size = np.abs(a).max(axis=(1, 2)) if norm == "inf" else np.sqrt((a ** 2).sum(axis=(1, 2)))
    assert a.shape == (50, 1, d) and np.all(size <= eps * (1 + 1e-12))


def test_uniform_ball_fills_the_l2_ball_uniformly():
    """In d dimensions P(||delta|| <= r eps) = r^d: half the points lie within 0.5^(1/d) eps."""
    d, eps = 4, 2.0
    a = uniform_ball(np.random.default_rng(0), (20000, d), eps, "2")
    radius = np.sqrt((a ** 2).sum(axis=1)) / eps
    for r in (0.5, 0.8, 0.95):
        assert abs((radius <= r).mean() - r ** d) < 0.015
    # and the direction is uniform: the mean offset is near 0 in every coordinate
    assert np.abs(a.mean(axis=0)).max() < 0.03


class Alternating(nn.Module):
    """logits = k * (x @ w), k = 1, 3, 1, 3, ... on successive calls: the EOT mean over two passes
    is the pass with k = 2."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2, bias=False)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.lin(x) * (1.0 if self.calls % 2 else 3.0)


def test_expected_pass_averages_two_passes_with_and_without_the_gradient():
    md.manual_seed(0)
    model = Alternating()
    x, y = Tensor(np.array([[0.2, 0.4, 0.9]], dtype=np.float32)), Tensor(np.array([1]))
    g, logits, losses = attacks.expected_pass(model, x, y, eot_samples=2)
    w = model.lin.weight.numpy()
    np.testing.assert_allclose(logits, 2 * (x.numpy() @ w.T), rtol=1e-6)
    none, logits2, losses2 = attacks.expected_pass(model, x, y, eot_samples=2, gradient=False)
    assert none is None
    np.testing.assert_allclose(logits2, logits, rtol=1e-6)
    np.testing.assert_allclose(losses2, losses, rtol=1e-6)
    # the gradient is the mean of the two passes' gradients, not the k = 2 pass's
    single = [attacks.expected_pass(model, x, y)[0] for _ in range(2)]
    np.testing.assert_allclose(g, (single[0] + single[1]) / 2, rtol=1e-6)


def test_old_names_still_import_from_attacks():
    from minidl.adversarial.attacks import (NORMS, _model_device, _norm, _per_example_norm, _step_direction,
                                            _unit, model_device, project, random_start_point)
    assert _norm is resolve_norm and _unit is unit and _step_direction is step_direction
    assert _per_example_norm is per_example_norm and _model_device is model_device and project and NORMS
    assert random_start_point
