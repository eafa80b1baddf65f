"""Tests for Random Self-Ensemble: the GaussianNoise layer, rse(), the batched Ensemble, the
EOT input gradient and evaluate_rse.

Exactness of the ensemble: replicas draw their noise from per-replica generators
(minidl.nn.noise.replica_streams), so the batched ensemble can be compared with n separate
forward passes run with the same generators. The comparison is made in float64 (parameters
cast), where batched and separate matrix products agree to ~1e-15.
"""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import minidl as md
import minidl.functional as F
from minidl import backend, nn
from minidl.adversarial.attacks import input_gradient, pgd
from minidl.adversarial.rse_eval import RANDOMIZED_WARNING, RSEConfig, evaluate_rse
from minidl.models import MODELS, Ensemble, get_model, rse
from minidl.models.cifar import PreActBlock, preact_resnet18
from minidl.nn.noise import (GaussianNoise, noise_disabled, noise_layers, replica_generators, replica_seeds,
                             replica_streams, set_noise)
from minidl.tensor import Tensor
from minidl.testing import gradcheck

from conftest import examples

SIDE, CLASSES = 6, 3


def tiny_cnn(in_channels=1):
    return nn.Sequential(
        nn.Conv2d(in_channels, 4, 3, padding=1), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * SIDE * SIDE, CLASSES))


def to_double(model):
    for p in model.parameters():
        p.array = p.array.astype(np.float64)
    return model


def tiny_rse(init=0.3, inner=0.1, double=False, seed=0, device="cpu"):
    md.manual_seed(seed)
    model = rse(tiny_cnn(), init, inner)
    return (to_double(model) if double else model).to(device)


def images(n, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).random((n, 1, SIDE, SIDE)).astype(dtype)


def probs(logits):
    return np.exp(F.log_softmax(logits, axis=1).numpy())


# --- GaussianNoise --------------------------------------------------------------------------
@examples(15)
@given(sigma=st.floats(0.01, 5.0), seed=st.integers(0, 2 ** 31), dtype=st.sampled_from([np.float32, np.float64]))
def test_noise_statistics(device, sigma, seed, dtype):
    md.manual_seed(seed)
    layer = GaussianNoise(sigma)
    x = md.tensor(np.random.default_rng(seed).random((400, 250)).astype(dtype), device=device)
    d = (layer(x) - x).numpy().astype(np.float64)
    n = d.size
    assert layer(x).dtype == dtype
    assert abs(d.mean()) < 5 * sigma / np.sqrt(n)
    assert abs(d.std() / sigma - 1) < 5 / np.sqrt(2 * n) + 1e-4


def test_noise_on_in_eval_off_when_switched():
    x = md.tensor(images(4))
    layer = GaussianNoise(0.2).eval()
    assert not layer.training and not np.array_equal(layer(x).numpy(), x.numpy())
    layer.enabled = False
    assert layer(x) is x
    assert GaussianNoise(0.0)(x) is x

    model = tiny_rse().eval()
    assert not np.array_equal(model(x).numpy(), model(x).numpy())
    assert set_noise(model, False) == 2
    assert all(not m.enabled for m in noise_layers(model))
    np.testing.assert_array_equal(model(x).numpy(), model(x).numpy())
    set_noise(model, True)
    with noise_disabled(model):
        np.testing.assert_array_equal(model(x).numpy(), model(x).numpy())
    assert all(m.enabled for m in noise_layers(model))
    assert "sigma=0.3" in repr(model)


def test_noise_reproducible_under_manual_seed(device):
    layer, x = GaussianNoise(0.5), md.tensor(images(3), device=device)
    md.manual_seed(11)
    a = layer(x).numpy()
    b = layer(x).numpy()
    md.manual_seed(11)
    np.testing.assert_array_equal(layer(x).numpy(), a)
    np.testing.assert_array_equal(layer(x).numpy(), b)
    md.manual_seed(12)
    assert not np.array_equal(layer(x).numpy(), a)
    assert not np.array_equal(a, b)


def test_noise_rejects_bad_arguments():
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            GaussianNoise(bad)
    with pytest.raises(TypeError):
        GaussianNoise(0.1)(np.zeros(3))


@examples(10)
@given(seed=st.integers(0, 2 ** 31), sigma=st.floats(0.0, 3.0))
def test_noise_gradient_is_identity(device, seed, sigma):
    layer = GaussianNoise(sigma)
    x = Tensor(backend.to_device(np.random.default_rng(seed).standard_normal((2, 3, 4)), device), requires_grad=True)
    u = np.random.default_rng(seed + 1).standard_normal((2, 3, 4))
    md.manual_seed(seed)
    layer(x).backward(u)
    np.testing.assert_array_equal(x.grad.numpy(), u)

    def fn(t):  # the same noise on every call, so finite differences see a smooth function
        md.manual_seed(seed)
        return layer(t * t) * 2.0

    assert gradcheck(fn, Tensor(x.array.copy(), requires_grad=True))


# --- rse() ------------------------------------------------------------------------------------
def noise_before_convs(model):
    """[(sigma, conv)] for each conv, asserting it is immediately preceded by a noise layer in a
    Sequential and that no noise layer is anywhere else."""
    pairs, noise_seen = [], 0
    for m in model.modules():
        if isinstance(m, nn.Sequential):
            kids = list(m.children())
            for i, k in enumerate(kids):
                if isinstance(k, GaussianNoise):
                    noise_seen += 1
                    assert i + 1 < len(kids) and isinstance(kids[i + 1], nn.Conv2d), "noise not followed by a conv"
                if isinstance(k, nn.Conv2d):
                    assert i > 0 and isinstance(kids[i - 1], GaussianNoise), "conv without noise in front"
                    pairs.append((kids[i - 1].sigma, k))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(pairs) == len(convs) == noise_seen == len(noise_layers(model))
    return pairs


@pytest.mark.parametrize("name,base,n_convs", [("rse_madry_mnist", "madry_mnist", 2),
                                               ("rse_wong_mnist", "wong_mnist", 2),
                                               ("rse_cifar_cnn", "cifar_cnn", 6)])
def test_zoo_entries(name, base, n_convs):
    assert name in MODELS
    kw = dict(width=4) if "cifar" in name else {}
    model = get_model(name, **kw)
    sigmas = [s for s, _ in noise_before_convs(model)]
    init, inner = (0.2, 0.1) if "cifar" in name else (0.3, 0.1)
    assert sigmas == [init] + [inner] * (n_convs - 1)
    assert MODELS[name].__doc__ and str(init) in MODELS[name].__doc__
    chans, side = (3, 32) if "cifar" in name else (1, 28)
    x = md.tensor(np.random.default_rng(0).random((2, chans, side, side)).astype(np.float32))
    assert model.eval()(x).shape == (2, 10)
    # the same architecture as the base model: with noise off it is that model
    plain = get_model(base, **kw)
    assert [p.shape for p in plain.parameters()] == [p.shape for p in model.parameters()]


def test_rse_structure_and_outputs_unchanged_without_noise():
    md.manual_seed(0)
    plain = tiny_cnn()
    before = {k: v.copy() for k, v in plain.state_dict().items()}
    noisy = rse(plain, 0.25, 0.05)
    assert [type(m).__name__ for m in noisy] == ["GaussianNoise", "Conv2d", "ReLU", "GaussianNoise", "Conv2d",
                                                 "ReLU", "Flatten", "Linear"]
    assert [s for s, _ in noise_before_convs(noisy)] == [0.25, 0.05]
    # the original is untouched and the copy does not share its parameters
    assert noise_layers(plain) == [] and len(list(plain.children())) == 6
    assert all(np.array_equal(before[k], v) for k, v in plain.state_dict().items())
    assert not set(map(id, plain.parameters())) & set(map(id, noisy.parameters()))
    x = md.tensor(images(5))
    with noise_disabled(noisy):
        np.testing.assert_array_equal(noisy.eval()(x).numpy(), plain.eval()(x).numpy())
    assert noisy(x).shape == plain(x).shape == (5, CLASSES)
    # a builder works too, with its keyword arguments
    built = rse(tiny_cnn, 0.3, 0.1, in_channels=2)
    assert built[1].in_channels == 2


def test_rse_walks_residual_blocks():
    model = rse(preact_resnet18(width=4), 0.2, 0.1)
    pairs = noise_before_convs(model)
    assert pairs[0][1] is model.conv1[1] and pairs[0][0] == 0.2
    assert [s for s, _ in pairs[1:]] == [0.1] * (len(pairs) - 1) and len(pairs) == 1 + 8 * 2 + 3
    block = model.layer2[0]  # first block of stage 2: has a strided 1x1 shortcut
    assert isinstance(block, PreActBlock) and isinstance(block.shortcut, nn.Sequential)
    x = md.tensor(np.random.default_rng(0).random((2, 3, 8, 8)).astype(np.float32))
    assert model.eval()(x).shape == (2, 10)


def test_rse_rejects():
    with pytest.raises(ValueError, match="no Conv2d"):
        rse(get_model("mlp"), 0.1, 0.1)
    with pytest.raises(ValueError, match="already"):
        rse(rse(tiny_cnn(), 0.1, 0.1), 0.1, 0.1)
    with pytest.raises(ValueError):
        rse(tiny_cnn(), -1, 0.1)
    with pytest.raises(TypeError):
        rse(42, 0.1, 0.1)


# --- Ensemble ---------------------------------------------------------------------------------
def separate_passes(model, x, n, seed):
    """Probabilities of n separate forward passes, replica k with generator k (as the ensemble)."""
    md.manual_seed(seed)
    gens = replica_generators(replica_seeds(n), backend.get_array_module(x.array))
    out = []
    for g in gens:
        with replica_streams([g]):
            out.append(probs(model(x)))
    return np.stack(out)


@examples(8)
@given(n=st.integers(1, 7), batch=st.integers(1, 4), seed=st.integers(0, 2 ** 31))
def test_ensemble_equals_mean_of_separate_passes(device, n, batch, seed):
    model = tiny_rse(double=True, device=device).eval()
    x = md.tensor(images(batch, seed, np.float64), device=device)
    passes = separate_passes(model, x, n, seed)
    if n > 1:
        assert not np.allclose(passes[0], passes[1])  # the passes really are noisy
    expected = passes.mean(axis=0)
    for chunk in (10 ** 6, batch, 2 * batch + 1):  # one pass, one replica per chunk, uneven chunks
        md.manual_seed(seed)
        ens = Ensemble(model, n, chunk_size=chunk)
        out = ens(x)
        assert out.shape == (batch, CLASSES)
        np.testing.assert_allclose(np.exp(out.numpy()), expected, rtol=0, atol=1e-12)
        md.manual_seed(seed)
        np.testing.assert_allclose(ens.pass_probs(x), passes, rtol=0, atol=1e-12)
    md.manual_seed(seed)
    p = Ensemble(model, n).predict_proba(x).numpy()
    np.testing.assert_allclose(p.sum(axis=1), 1, atol=1e-12)
    np.testing.assert_allclose(p, expected, rtol=0, atol=1e-12)


def test_ensemble_float32_matches_to_1e6_and_deterministic_model():
    model = tiny_rse().eval()
    x = md.tensor(images(3))
    expected = separate_passes(model, x, 6, 5).mean(axis=0)
    md.manual_seed(5)
    np.testing.assert_allclose(Ensemble(model, 6).predict_proba(x).numpy(), expected, rtol=0, atol=1e-6)
    with noise_disabled(model):  # no randomness: the ensemble is the model's softmax
        np.testing.assert_allclose(np.exp(Ensemble(model, 4)(x).numpy()), probs(model(x)), atol=1e-6)


def test_ensemble_variance_falls_with_n():
    model = tiny_rse(init=1.0, inner=0.5).eval()
    x = md.tensor(images(4))
    md.manual_seed(0)
    var = {n: np.stack([Ensemble(model, n).predict_proba(x).numpy() for _ in range(30)]).var(axis=0).mean()
           for n in (1, 32)}
    assert var[1] > 0
    assert var[32] < var[1] / 8  # expected ratio 1/32


def test_ensemble_delegates_to_inner_model():
    model = tiny_rse()
    ens = Ensemble(model, 3)
    assert [id(p) for p in ens.parameters()] == [id(p) for p in model.parameters()]
    assert list(ens.state_dict()) == list(model.state_dict())
    state = {k: v + 1 for k, v in model.state_dict().items()}
    ens.load_state_dict(state)
    assert all(np.array_equal(model.state_dict()[k], v) for k, v in state.items())
    ens.eval()
    assert not model.training and all(not m.training for m in model.modules())
    ens.train()
    assert model.training
    assert ens.to("cpu") is ens and ens.device == "cpu"
    assert "n=3" in repr(ens)
    opt = md.optim.SGD(ens.parameters(), lr=0.1)
    x, y = md.tensor(images(4)), np.array([0, 1, 2, 0])
    loss = F.cross_entropy(ens(x), y)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    opt.step()
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError):
            Ensemble(model, bad)
    with pytest.raises(TypeError):
        Ensemble(lambda x: x, 2)


def test_ensemble_gradient():
    model = tiny_rse(double=True).eval()
    for p in model.parameters():
        p.requires_grad = False
    ens = Ensemble(model, 4, chunk_size=2)  # two chunks of two replicas

    def fn(x):
        md.manual_seed(3)
        return ens(x)

    assert gradcheck(fn, Tensor(images(1, 1, np.float64), requires_grad=True), atol=1e-5)
    # usable by attacks, also with EOT
    x, y = images(3, 2), np.array([0, 1, 2])
    adv = pgd(ens, x, y, eps=0.1, alpha=0.05, steps=2, eot_samples=2).numpy()
    assert adv.shape == x.shape and np.abs(adv - x).max() <= 0.1 + 1e-6


# --- EOT gradient ---------------------------------------------------------------------------
@examples(6)
@given(k=st.integers(1, 5), seed=st.integers(0, 2 ** 31))
def test_eot_gradient_is_mean_of_per_sample_gradients(device, k, seed):
    model = tiny_rse(init=0.5, inner=0.2, double=True, device=device).eval()
    x = md.tensor(images(3, seed, np.float64), device=device)
    y = md.tensor(np.array([0, 1, 2]), device=device)
    md.manual_seed(seed)
    g, logits, losses = input_gradient(model, x, y, eot_samples=k)
    md.manual_seed(seed)
    grads, all_logits = [], []
    for _ in range(k):
        xg = Tensor(x.array.copy(), requires_grad=True)
        out = model(xg)
        F.cross_entropy(out, y, reduction="none").sum().backward()
        grads.append(xg.grad.numpy())
        all_logits.append(out.numpy())
    np.testing.assert_allclose(g, np.mean(grads, axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(logits, np.mean(all_logits, axis=0), rtol=0, atol=1e-12)
    if k > 1:
        assert not np.allclose(grads[0], grads[1])  # each sample is a different noisy gradient


# --- evaluate_rse ---------------------------------------------------------------------------
def test_evaluate_rse_end_to_end():
    model = tiny_rse(init=0.1, inner=0.05).eval()
    x = images(12, 4)
    md.manual_seed(1)
    y = Ensemble(model, 64).predict_proba(md.tensor(x)).numpy().argmax(axis=1)  # labels the model mostly gets
    md.manual_seed(2)
    res = evaluate_rse(model, (x, y), RSEConfig(eps=0.1, alpha=0.05, steps=3, n_ensemble=4, eot_samples=3,
                                                batch_size=5, huge_eps=1.0, check_n=8))
    assert res["n"] == 12
    assert res["clean_accuracy"] >= 0.5
    for key in ("pgd_single_pass_accuracy", "pgd_eot_accuracy"):
        assert 0 <= res["robust_accuracy"] <= res[key] <= res["clean_accuracy"] <= 1
    assert res["overestimate"] == pytest.approx(res["pgd_single_pass_accuracy"] - res["pgd_eot_accuracy"])
    assert not (res["single_pass_robust_correct"] & ~res["clean_correct"]).any()
    assert not (res["eot_robust_correct"] & ~res["clean_correct"]).any()
    assert res["randomized"] and RANDOMIZED_WARNING in res["warnings"]
    assert any("eot_samples=3" in w for w in res["warnings"])
    assert 0 <= res["huge_eps_accuracy"] <= 1
    s = res["settings"]
    assert (s["eps"], s["steps"], s["n_ensemble"], s["eot_samples"], s["norm"]) == (0.1, 3, 4, 3, "inf")
    assert s["noise_sigmas"] == [0.1, 0.05]
    # an Ensemble is accepted too, and a model without noise is not flagged as randomized
    with noise_disabled(model):
        res2 = evaluate_rse(Ensemble(model, 2), (x[:4], y[:4]), RSEConfig(eps=0.05, alpha=0.05, steps=1, norm="2",
                                                                          n_ensemble=2, eot_samples=10))
    assert not res2["randomized"] and RANDOMIZED_WARNING not in res2["warnings"]
    assert res2["settings"]["noise_sigmas"] == []
    assert res2["robust_accuracy"] <= res2["clean_accuracy"]


@pytest.mark.parametrize("change, error, message", [
    (dict(eps=-0.1), ValueError, "evaluate_rse: eps: expected"),
    (dict(alpha=0.0), ValueError, "evaluate_rse: alpha: expected"),
    (dict(steps=2.0), TypeError, "evaluate_rse: steps: expected"),
    (dict(eot_samples=0), ValueError, "evaluate_rse: eot_samples: expected"),
    (dict(check_n=-1), ValueError, "evaluate_rse: check_n: expected"),
    (dict(huge_eps=float("nan")), ValueError, "evaluate_rse: huge_eps: expected"),
    (dict(num_classes=1), ValueError, "evaluate_rse: num_classes: expected"),
    (dict(gap_slack=-0.01), ValueError, "evaluate_rse: gap_slack: expected"),
    (dict(norm="1"), ValueError, "evaluate_rse: norm must be 'inf' or '2'"),
])
def test_rse_config_is_checked_before_any_work(change, error, message):
    config = RSEConfig(**{**dict(eps=0.1, alpha=0.05, steps=2), **change})
    with pytest.raises(error, match=message):
        evaluate_rse(tiny_rse(), (images(2), np.zeros(2, dtype=np.int64)), config)


def test_rse_config_resolves_the_norm_and_is_required():
    assert RSEConfig(eps=1.0, alpha=0.1, steps=2, norm="L2").resolved().norm == "2"
    assert RSEConfig(eps=1.0, alpha=0.1, steps=2).resolved() == RSEConfig(eps=1.0, alpha=0.1, steps=2)
    with pytest.raises(TypeError, match="evaluate_rse: config must be an RSEConfig, got dict"):
        evaluate_rse(tiny_rse(), (images(2), np.zeros(2, dtype=np.int64)), dict(eps=0.1, alpha=0.05, steps=2))
