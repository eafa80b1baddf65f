"""Tests for minidl.adversarial.uap (universal perturbations by averaging, SVD and the iterative
algorithm) and the UAP pictures of minidl.adversarial.plots. Tiny linear models and MLPs on
4x4 images, so no convolution runs and everything is fast."""
import numpy as np
import pytest

import minidl
from minidl import nn
from minidl.adversarial import pgd
from minidl.adversarial.plots import plot_fooling_rates, plot_singular_vectors, plot_spectra
from minidl.adversarial.uap import (SVDUAP, by_class, fooling_rate, iterative_uap, per_example_gradients,
                                    per_example_perturbations, random_direction, singular_spectrum, uap_average,
                                    uap_svd)

SHAPE = (1, 4, 4)
D = 16


def linear_model(weight, bias=None):
    """Flatten -> Linear with the given weight (C, D) and bias."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(weight.shape[1], weight.shape[0]))
    model[1].weight.array[...] = weight
    model[1].bias.array[...] = 0 if bias is None else bias
    return model


def mlp(seed=0, classes=3):
    minidl.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(D, 12, init="he"), nn.ReLU(), nn.Linear(12, classes, init="he"))


def unit(v):
    return v / np.linalg.norm(v)


def cos(a, b):
    return float(np.dot(a.ravel(), b.ravel()) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def two_class(rng):
    """A 2-class linear model, images near 0.5 (so small perturbations are never clipped), all
    labelled 0: the loss increases exactly along w = W[1] - W[0]."""
    weight = rng.standard_normal((2, D)).astype(np.float32)
    images = (0.45 + 0.1 * rng.random((40,) + SHAPE)).astype(np.float32)
    labels = np.zeros(40, dtype=np.int64)
    return linear_model(weight), images, labels, (weight[1] - weight[0]).astype(np.float64)


# --- SVD UAP ------------------------------------------------------------------------------------
def test_svd_recovers_planted_direction(rng):
    u = unit(rng.standard_normal(D))
    a = rng.standard_normal(300) + 2.0
    matrix = a[:, None] * u + 0.05 * rng.standard_normal((300, D))
    for center in (False, True):
        res = uap_svd(matrix, k=3, eps=0.7, center=center)
        assert isinstance(res, SVDUAP) and res.centered is center and res["centered"] is center
        assert res.vectors.shape == (3, D)
        assert abs(cos(res.vectors[0], u)) > 0.99
        np.testing.assert_allclose(np.linalg.norm(res.vectors, axis=1), 0.7, rtol=1e-5)
        # orthogonal directions
        gram = res.vectors @ res.vectors.T / 0.49
        np.testing.assert_allclose(gram, np.eye(3), atol=1e-5)
    # the dominant singular value stands out
    s = uap_svd(matrix, k=1, eps=1.0).singular_values
    assert s[0] > 10 * s[1]


def test_svd_sign_increases_loss_on_linear_model(two_class, rng):
    model, images, labels, w = two_class
    u = unit(w)
    # rows mostly along -u: the mean row points the wrong way, so only the loss picks +u
    a = -np.abs(rng.standard_normal(100)) - 0.5
    matrix = a[:, None] * u + 0.01 * rng.standard_normal((100, D))
    by_loss = uap_svd(matrix, k=1, eps=0.05, model=model, images=images, labels=labels)
    assert by_loss.sign_method == "loss"
    assert cos(by_loss.vectors[0], u) > 0.99
    assert by_loss.sign_losses[0, 0] > by_loss.sign_losses[0, 1]
    by_mean = uap_svd(matrix, k=1, eps=0.05)
    assert by_mean.sign_method == "mean" and by_mean.sign_losses is None
    assert cos(by_mean.vectors[0], u) < -0.99  # positive inner product with the mean row
    assert float(by_mean.vectors[0] @ matrix.mean(axis=0)) > 0
    with pytest.raises(ValueError):
        uap_svd(matrix, k=1, eps=0.05, model=model, images=images)


def test_centering_removes_the_mean(rng):
    u = unit(rng.standard_normal(D))
    m = rng.standard_normal(D)
    m = 5 * unit(m - (m @ u) * u)  # a large planted mean orthogonal to u
    matrix = m + rng.standard_normal(400)[:, None] * u + 0.02 * rng.standard_normal((400, D))
    plain = uap_svd(matrix, k=1, eps=1.0, center=False)
    centred = uap_svd(matrix, k=1, eps=1.0, center=True)
    assert abs(cos(plain.vectors[0], m)) > 0.99
    assert abs(cos(centred.vectors[0], u)) > 0.99 and abs(cos(centred.vectors[0], m)) < 0.1
    np.testing.assert_allclose(centred.mean, matrix.mean(axis=0), atol=1e-5)
    # centred: sign still follows the (uncentred) mean row when it can, else a fixed convention
    assert np.isfinite(centred.vectors).all()


def test_spectra_sorted_nonnegative_and_match_numpy(rng):
    matrix = rng.standard_normal((30, D)) * np.linspace(0.1, 3, D)
    for center in (False, True):
        s = singular_spectrum(matrix, center=center)
        ref = np.linalg.svd(matrix - matrix.mean(axis=0) if center else matrix, compute_uv=False)
        assert s.shape == (D,)
        assert (s >= 0).all() and (np.diff(s) <= 0).all()
        np.testing.assert_allclose(s, ref, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(uap_svd(matrix, k=2, center=center).singular_values, ref, rtol=1e-10,
                                   atol=1e-12)
    # more columns than rows: min(N, D) values
    assert singular_spectrum(rng.standard_normal((5, D))).shape == (5,)
    res = uap_svd(matrix, k=1)
    np.testing.assert_allclose(res.explained_variance_ratio.sum(), 1.0)
    with pytest.raises(ValueError):
        uap_svd(matrix[:3], k=4)


def test_average_uap():
    row = np.arange(1, D + 1, dtype=np.float64)
    v = uap_average(np.tile(row, (7, 1)), eps=2.5)
    np.testing.assert_allclose(v, row / np.linalg.norm(row) * 2.5, rtol=1e-6)
    assert v.dtype == np.float32 and v.shape == (D,)
    # unit rows: each image votes equally
    rows = np.stack([row, 100 * row])
    np.testing.assert_allclose(uap_average(rows, 1.0, normalize_rows=True), unit(row), rtol=1e-6)
    with pytest.raises(ValueError):
        uap_average(np.stack([row, -row]), 1.0)


def test_by_class(rng):
    matrix = rng.standard_normal((10, D))
    labels = np.array([2, 0, 2, 1, 0, 2, 1, 1, 0, 2])
    groups = by_class(matrix, labels)
    assert list(groups) == [0, 1, 2]
    for c, rows in groups.items():
        np.testing.assert_array_equal(rows, matrix[labels == c])


# --- per-example matrices ---------------------------------------------------------------------
def test_per_example_perturbations_match_pgd(rng):
    model = mlp(3)
    images = rng.random((10,) + SHAPE).astype(np.float32)
    labels = rng.integers(0, 3, 10)
    P = per_example_perturbations(model, images, labels, eps=0.5, alpha=0.1, steps=5, batch_size=4,
                                  progress=False)
    assert P.shape == (10, D) and P.dtype == np.float32
    assert (np.linalg.norm(P, axis=1) <= 0.5 + 1e-5).all()
    ref = pgd(model, images, labels, 0.5, 0.1, 5, norm="2", random_start=False).numpy() - images
    np.testing.assert_allclose(P, ref.reshape(10, -1), atol=1e-6)
    assert (images.reshape(10, -1) + P >= -1e-6).all() and (images.reshape(10, -1) + P <= 1 + 1e-6).all()
    # return_labels: the same rows, and the class the model predicts at each x + row
    P2, reached = per_example_perturbations(model, images, labels, eps=0.5, alpha=0.1, steps=5, batch_size=4,
                                            progress=False, return_labels=True)
    np.testing.assert_array_equal(P2, P)
    adv = (images.reshape(10, -1) + P).reshape(images.shape).astype(np.float32)
    with minidl.no_grad():
        expected = model(minidl.Tensor(adv)).array.argmax(axis=1)
    assert reached.dtype == np.int64 and reached.shape == (10,)
    np.testing.assert_array_equal(reached, expected)


def test_per_example_gradients_of_linear_model(two_class):
    model, images, labels, w = two_class
    G = per_example_gradients(model, images, labels, batch_size=16)
    assert G.shape == (len(images), D)
    np.testing.assert_allclose(np.linalg.norm(G, axis=1), 1, rtol=1e-5)
    # cross-entropy with 2 classes and label 0: the gradient is p1 (w1 - w0)
    np.testing.assert_allclose(G, np.tile(unit(w), (len(images), 1)), atol=1e-5)
    raw = per_example_gradients(model, images, labels, normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1)
    top = uap_svd(G, k=1, eps=1.0)
    assert cos(top.vectors[0], w) > 0.999


# --- fooling rate and random baseline -------------------------------------------------------------
def test_fooling_rate_matches_direct_count(rng):
    model = mlp(5, classes=4)
    images = rng.random((50,) + SHAPE).astype(np.float32)
    labels = rng.integers(0, 4, 50)
    v = (0.8 * rng.standard_normal(SHAPE)).astype(np.float32)
    res = fooling_rate(model, images, labels, v.reshape(-1), batch_size=7)
    model.eval()
    with minidl.no_grad():
        clean = model(minidl.tensor(images)).numpy().argmax(axis=1)
        adv = model(minidl.tensor(np.clip(images + v, 0, 1))).numpy().argmax(axis=1)
    assert res["n"] == 50
    assert res["fooling_rate"] == pytest.approx(np.mean(adv != clean))
    assert res["accuracy"] == pytest.approx(np.mean(adv == labels))
    assert res["clean_accuracy"] == pytest.approx(np.mean(clean == labels))
    np.testing.assert_array_equal(res["fooled"], adv != clean)
    assert res["l2"] == pytest.approx(np.linalg.norm(v), rel=1e-5)
    assert 0 < res["fooling_rate"] < 1  # the test is not vacuous
    np.testing.assert_array_equal(res["clean_predictions"], clean)
    np.testing.assert_array_equal(res["predictions"], adv)
    # known clean predictions skip the clean pass and give the same result; they are what is compared
    again = fooling_rate(model, images, labels, v, clean_predictions=clean)
    assert again["fooling_rate"] == res["fooling_rate"] and again["clean_accuracy"] == res["clean_accuracy"]
    told = fooling_rate(model, images, labels, v, clean_predictions=adv)
    assert told["fooling_rate"] == 0
    with pytest.raises(ValueError, match="clean_predictions must have shape"):
        fooling_rate(model, images, labels, v, clean_predictions=clean[:3])
    zero = fooling_rate(model, images, labels, np.zeros(SHAPE, dtype=np.float32))
    assert zero["fooling_rate"] == 0 and zero["accuracy"] == zero["clean_accuracy"]
    with pytest.raises(ValueError):
        fooling_rate(model, images, labels, np.zeros(D + 1))


def test_random_direction():
    v = random_direction(SHAPE, 0.3, rng=0)
    assert v.shape == SHAPE and v.dtype == np.float32
    assert np.linalg.norm(v) == pytest.approx(0.3, rel=1e-5)
    np.testing.assert_array_equal(v, random_direction(SHAPE, 0.3, rng=0))
    assert not np.array_equal(v, random_direction(SHAPE, 0.3, rng=1))
    assert random_direction(D, 1.0, np.random.default_rng(2)).shape == (D,)
    s = random_direction(SHAPE, 0.1, rng=0, norm="inf")
    np.testing.assert_allclose(np.abs(s), 0.1)


# --- iterative UAP ------------------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["2", "inf"])
@pytest.mark.parametrize("aggregate", ["sequential", "mean"])
def test_iterative_uap_in_ball_and_fools_linear_model(norm, aggregate):
    rng = np.random.default_rng(1)
    weight = rng.standard_normal((3, D)).astype(np.float32)
    images = (0.5 + 0.05 * rng.uniform(-1, 1, (60,) + SHAPE)).astype(np.float32)
    labels = np.zeros(60, dtype=np.int64)
    # class 0 wins on every image by a margin of at least 1
    z = images.reshape(60, -1) @ weight.T
    bias = np.array([(z[:, 1:].max(axis=1) - z[:, 0]).max() + 1.0, 0, 0], dtype=np.float32)
    model = linear_model(weight, bias)
    margins = z[:, 0] + bias[0] - z[:, 1:].max(axis=1)
    diff = weight[1:] - weight[0]
    dual = np.linalg.norm(diff, axis=1) if norm == "2" else np.abs(diff).sum(axis=1)
    eps = float(1.5 * margins.max() / dual.max())  # enough along the best universal direction
    assert fooling_rate(model, images, labels, np.zeros(SHAPE))["clean_accuracy"] == 1
    res = iterative_uap(model, images, labels, eps=eps, norm=norm, max_passes=6, target_fooling=0.9,
                        batch_size=8, aggregate=aggregate, rng=0, progress=False)
    v = res.perturbation
    assert v.shape == SHAPE and v.dtype == np.float32
    if norm == "2":
        assert np.linalg.norm(v) <= eps * (1 + 1e-5)
    else:
        assert np.abs(v).max() <= eps + 1e-6
    assert res.reached and res["fooling_rate"] >= 0.9
    assert res.passes == len(res.history) <= 6
    check = fooling_rate(model, images, labels, v)
    assert check["fooling_rate"] == pytest.approx(res.fooling_rate)
    assert check["accuracy"] == pytest.approx(1 - res.fooling_rate)
    # a random perturbation of the same size does not fool this model
    rand = fooling_rate(model, images, labels, random_direction(SHAPE, eps, rng=0, norm=norm))
    assert rand["fooling_rate"] < 0.5


def test_iterative_uap_tiny_eps_stays_in_ball(rng):
    model = mlp(7)
    images = rng.random((20,) + SHAPE).astype(np.float32)
    res = iterative_uap(model, images, eps=0.01, norm="2", max_passes=2, target_fooling=1.0, batch_size=5,
                        rng=0, progress=False)
    assert np.linalg.norm(res.perturbation) <= 0.01 * (1 + 1e-5)
    assert not res.reached and res.passes == 2
    # the best pass is kept, and its rate is that of the returned perturbation
    assert res.fooling_rate == max(res.history) and res.history[res.best_pass] == res.fooling_rate
    check = fooling_rate(model, images, None, res.perturbation)  # no labels needed
    assert check["fooling_rate"] == pytest.approx(res.fooling_rate) and check["accuracy"] is None
    last = iterative_uap(model, images, eps=0.01, norm="2", max_passes=2, target_fooling=1.0, batch_size=5,
                         rng=0, progress=False, keep_best=False)
    assert last.best_pass == 1 and last.fooling_rate == last.history[-1]


# --- pictures -----------------------------------------------------------------------------------
def test_plots_write_pngs(tmp_path, rng):
    gray = uap_svd(rng.standard_normal((20, D)), k=4, eps=1.0)
    colour = rng.standard_normal((3, 3 * D))
    p1 = plot_singular_vectors({"natural": gray, "adversarial": gray.vectors[:2]}, tmp_path / "sv.png")
    p2 = plot_singular_vectors({"natural": colour, "adversarial": colour}, tmp_path / "sub" / "sv3.png",
                               image_shape=(3, 4, 4), singular_values={"natural": [3.0, 2.0, 1.0]})
    p3 = plot_spectra({"natural": gray.singular_values, "adversarial": singular_spectrum(colour)},
                      tmp_path / "spectra.png", normalize=True)
    p4 = plot_fooling_rates({"natural": {"svd": 0.5, "random": 0.1}, "adversarial": {"svd": 0.2}},
                            tmp_path / "fool.png")
    for p in (p1, p2, p3, p4):
        assert p.exists() and p.stat().st_size > 1000
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_deepfool_finds_the_nearest_boundary_of_a_linear_model(two_class):
    from minidl.adversarial.uap import deepfool
    model, images, _, w = two_class
    x = images[:5]
    b0 = float((x.reshape(5, -1) @ w).max()) + 1.0
    model[1].bias.array[...] = np.array([b0, 0.0], dtype=np.float32)  # class 0 on these images
    margin = b0 - x.reshape(5, -1) @ w  # z0 - z1
    assert (margin > 0).all()
    r, ok = deepfool(model, x, np.zeros(5, dtype=np.int64), norm="2", overshoot=0.02)
    assert ok.all()
    norms = np.linalg.norm(r.reshape(5, -1), axis=1)
    np.testing.assert_allclose(norms, 1.02 * (margin + 1e-4) / np.linalg.norm(w), rtol=1e-3)
    np.testing.assert_allclose(r.reshape(5, -1) / norms[:, None], np.tile(unit(w), (5, 1)), atol=1e-4)
