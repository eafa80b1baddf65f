"""Judging a randomized model by its expected prediction (minidl.adversarial.evaluate):
``robust_accuracy`` and ``autoattack`` count a point as correct when the argmax of the mean
softmax of ``judge_samples`` passes is its label, as RSE's ensemble predicts.

The reference is a model whose pass distribution is known exactly (``Skewed``), so the
accuracy under each judgement is a binomial probability, and a single-pass judgement, an
expectation judgement and a mean-logits judgement give three well separated values."""
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

import minidl as md
from minidl import nn
from minidl.adversarial import StageLog, autoattack, robust_accuracy
from minidl.adversarial.evaluate import JUDGE_SAMPLES, predict
from minidl.models.ensemble import Ensemble
from minidl.tensor import Tensor

P_RIGHT = 0.7  # probability that one pass of Skewed predicts the label (class 1)


class Skewed(nn.Module):
    """Three classes. With probability 0.7 a pass gives logits [0, 5, 0] (class 1 by a margin
    of 5), else [100, 0, 0] (class 0 by a margin of 100); a zero-weight linear map of x gives
    the attacks a graph. With m passes of the first kind out of k, the mean softmax is
    0.9867 m / k for class 1 and (0.0067 m + k - m) / k for class 0, so the expectation judge
    is right exactly when m > 0.505 k (m >= 11 of 20); mean logits (5 m / k against
    100 (k - m) / k) would be right only when m > 20 k / 21 (m = 20 of 20)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.lin.weight.array[...] = 0
        self.lin.bias.array[...] = 0

    def forward(self, x):
        z = self.lin(x)
        xp = md.backend.get_array_module(z.array)
        right = md.backend.rng(xp).random(z.shape[0]) < P_RIGHT
        offset = xp.where(right[:, None], xp.array([0.0, 5.0, 0.0]), xp.array([100.0, 0.0, 0.0]))
        return z + Tensor(offset.astype(z.dtype))


def at_least(m, k, p=P_RIGHT):
    """P(Binomial(k, p) >= m)."""
    return sum(math.comb(k, i) * p ** i * (1 - p) ** (k - i) for i in range(m, k + 1))


def points(n):
    x = np.random.default_rng(0).random((n, 4))
    return x, np.ones(n, dtype=np.int64)


IDENTITY = lambda m, x, y: x  # noqa: E731  (the adversarial point is the clean one, judged afresh)


def test_expectation_and_single_pass_judging_give_the_binomial_values():
    """Default (a randomized model): 20 passes, right with P(B(20, 0.7) >= 11) = 0.952 on the
    clean and, independently, on the adversarial point; one pass: 0.7 each. Mean logits would
    give 0.7^20 < 0.001."""
    md.manual_seed(0)
    model, (x, y) = Skewed(), points(400)
    expected = at_least(11, JUDGE_SAMPLES)
    assert JUDGE_SAMPLES == 20 and abs(expected - 0.952) < 1e-3
    res = robust_accuracy(model, (x, y), IDENTITY, batch_size=100, progress=False)
    assert res["judge_samples"] == 20
    tol = 4 * math.sqrt(expected * (1 - expected) / 400)  # 0.043
    assert abs(res["clean_accuracy"] - expected) < tol
    assert abs(res["robust_accuracy"] - expected ** 2) < 2 * tol  # a fresh judgement of each point
    one = robust_accuracy(model, (x, y), IDENTITY, batch_size=100, progress=False, judge_samples=1)
    assert one["judge_samples"] == 1
    tol1 = 4 * math.sqrt(P_RIGHT * (1 - P_RIGHT) / 400)  # 0.092
    assert abs(one["clean_accuracy"] - P_RIGHT) < tol1
    assert abs(one["robust_accuracy"] - P_RIGHT ** 2) < tol1
    five = robust_accuracy(model, (x, y), IDENTITY, batch_size=100, progress=False, judge_samples=5)
    assert abs(five["clean_accuracy"] - at_least(3, 5)) < tol1  # 0.837: m >= 3 of 5


def test_autoattack_rand_bookkeeping_judges_by_the_expectation():
    """The "clean" row of the breakdown counts the points the expectation judge gets right
    (0.952 of them), not one pass's (0.7) nor the mean logits' (< 0.001)."""
    md.manual_seed(1)
    model, (x, y) = Skewed(), points(200)
    tol = 4 * math.sqrt(0.952 * 0.048 / 200)
    log = StageLog()
    autoattack(model, x, y, 0.05, version="rand", log=log)
    clean = log.rows()[0]
    assert clean["stage"] == "clean" and abs(clean["robust_accuracy"] - at_least(11, 20)) < tol
    log1 = StageLog()
    autoattack(model, x[:100], y[:100], 0.05, version="rand", log=log1, judge_samples=1)
    assert abs(log1.rows()[0]["robust_accuracy"] - P_RIGHT) < 4 * math.sqrt(0.21 / 100)


def test_predict_with_samples_is_the_ensembles_prediction():
    """The judge is RSE's ensemble rule itself: under the same seed it gives exactly the
    argmax of ``Ensemble(model, k).predict_proba``."""
    model, (x, _) = Skewed(), points(50)
    md.manual_seed(5)
    ours = predict(model, Tensor(x), 7)
    md.manual_seed(5)
    theirs = Ensemble(model, 7).predict_proba(Tensor(x)).numpy().argmax(axis=1)
    np.testing.assert_array_equal(ours, theirs)


def test_a_model_with_noise_layers_is_judged_by_expectation_and_without_them_by_one_pass():
    md.manual_seed(0)
    model = nn.Sequential(nn.GaussianNoise(0.3), nn.Linear(4, 3))
    x, y = points(20)
    assert robust_accuracy(model, (x, y), IDENTITY, progress=False)["judge_samples"] == JUDGE_SAMPLES
    nn.set_noise(model, False)
    assert robust_accuracy(model, (x, y), IDENTITY, progress=False)["judge_samples"] == 1


def test_deterministic_models_are_unchanged_by_any_judge():
    """One pass by default, and k passes of a deterministic model predict what one does."""
    md.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    x = np.random.default_rng(1).random((60, 4))
    y = np.random.default_rng(2).integers(0, 3, 60)
    attack = lambda m, xb, yb: md.adversarial.fgsm(m, xb, yb, 0.2)  # noqa: E731
    default = robust_accuracy(model, (x, y), attack, batch_size=16, progress=False)
    with md.no_grad():
        clean = model(Tensor(x)).numpy().argmax(1) == y
        adv = np.concatenate([attack(model, x[i:i + 16], y[i:i + 16]).numpy() for i in range(0, 60, 16)])
        robust = clean & (model(Tensor(adv)).numpy().argmax(1) == y)
    assert default["judge_samples"] == 1
    np.testing.assert_array_equal(default["clean_correct"], clean)
    np.testing.assert_array_equal(default["robust_correct"], robust)
    assert 0 < robust.sum() < clean.sum()
    three = robust_accuracy(model, (x, y), attack, batch_size=16, progress=False, judge_samples=3)
    np.testing.assert_array_equal(three["robust_correct"], robust)


def test_judging_is_reproducible_under_a_seed():
    model, (x, y) = Skewed(), points(300)
    runs = []
    for seed in (3, 3, 4):
        md.manual_seed(seed)
        runs.append(robust_accuracy(model, (x, y), IDENTITY, batch_size=100, progress=False, judge_samples=1))
    np.testing.assert_array_equal(runs[0]["robust_correct"], runs[1]["robust_correct"])
    np.testing.assert_array_equal(runs[0]["clean_correct"], runs[1]["clean_correct"])
    assert not np.array_equal(runs[0]["clean_correct"], runs[2]["clean_correct"])  # the judge does draw noise


@pytest.mark.parametrize("value, error", [(0, ValueError), (2.5, TypeError), (True, TypeError)])
def test_bad_judge_samples_are_named(value, error):
    model, (x, y) = Skewed(), points(4)
    with pytest.raises(error, match=f"robust_accuracy: judge_samples: expected an integer >= 1, got {value!r}"):
        robust_accuracy(model, (x, y), IDENTITY, progress=False, judge_samples=value)
    with pytest.raises(error, match=f"autoattack: judge_samples: expected an integer >= 1, got {value!r}"):
        autoattack(model, x, y, 0.1, judge_samples=value)


def test_cli_attack_says_how_points_were_judged(tmp_path):
    """An RSE checkpoint is judged by 20 passes (the JSON says so), unless --judge-samples says
    otherwise; a deterministic one by one pass. Needs the real MNIST test files."""
    from minidl.cli import main as cli_main
    from minidl.experiment import TrainConfig, train_on_arrays
    from minidl.train import CHECKPOINT
    real = Path(os.environ.get("MINIDL_TEST_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
    if not (real / "mnist" / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("real MNIST files not found")
    rng = np.random.default_rng(0)
    x, y = rng.random((32, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 32)
    results, draws = {}, {}
    for name, extra in (("rse_wong_mnist", []), ("rse_wong_mnist", ["--judge-samples", "3"]), ("mlp", []),
                        ("rse_wong_mnist", ["--seed", "0"])):
        run = tmp_path / name
        if not run.exists():
            train_on_arrays(TrainConfig(dataset="mnist", model=name, epochs=1, batch_size=32), (x, y),
                            (x[:8], y[:8]), str(run), progress=False)
        out = tmp_path / f"{name}{len(results)}.json"
        code = cli_main(["attack", "--checkpoint", str(run / CHECKPOINT), "--eps", "0.05", "--steps", "2",
                         "--data-dir", str(real), "--limit", "8", "--no-checks", "--quiet", "--json", str(out)] + extra)
        assert code == 0
        results[(name, " ".join(extra))] = json.loads(out.read_text())
        draws[(name, " ".join(extra))] = md.backend.rng().random()  # where the run left the generator
    rse, mlp = results[("rse_wong_mnist", "")], results[("mlp", "")]
    assert rse["judge_samples"] == 20 and "mean softmax of 20" in rse["judged_by"]
    assert results[("rse_wong_mnist", "--judge-samples 3")]["judge_samples"] == 3
    assert mlp["judge_samples"] == 1 and "one forward pass" in mlp["judged_by"]
    # the same seed: the same noise and starts from the same generator state, the same numbers
    again = ("rse_wong_mnist", "--seed 0")
    assert results[again] == rse and draws[again] == draws[("rse_wong_mnist", "")]
