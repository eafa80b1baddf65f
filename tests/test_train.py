"""Training loop, checkpoints and exact resume; model zoo shapes; the CLI's one-line errors."""
import json
import os

import numpy as np
import pytest

import minidl as md
from minidl.cli import main as cli_main
from minidl.data import DataLoader
from minidl.experiment import TrainConfig, load_model, train_on_arrays
from minidl.models import MODELS, get_model
from minidl.optim import SGD, OneCycleLR
from minidl.train import CHECKPOINT, evaluate, fit


def synthetic(n, classes=3, size=8, channels=1, seed=0):
    """Images whose class is written as a bright band at a class-specific height."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.random((n, channels, size, size)).astype(np.float32) * 0.3
    for c in range(classes):
        x[y == c, :, 2 * c:2 * c + 2, :] += 0.6
    return np.clip(x, 0, 1), y.astype(np.int64)


def _run(out_dir, epochs, resume=False, dropout_model=True):
    """A tiny run whose result depends on every random source: shuffling, dropout and init."""
    md.manual_seed(3)
    x, y = synthetic(96)
    loader = DataLoader((x, y), 16, shuffle=True, seed=5)
    model = md.nn.Sequential(md.nn.Flatten(), md.nn.Linear(64, 32), md.nn.ReLU(), md.nn.Dropout(0.3),
                             md.nn.Linear(32, 3))
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    schedule = OneCycleLR(opt, max_lr=opt.lr, total_steps=4 * len(loader))
    history = fit(model, loader, opt, epochs, schedule=schedule, out_dir=out_dir, resume=resume, progress=False)
    return model, history


def test_resume_reproduces_uninterrupted_run(tmp_path):
    straight, _ = _run(str(tmp_path / "a"), 4)
    _run(str(tmp_path / "b"), 2)                      # "stopped" after two epochs
    resumed, history = _run(str(tmp_path / "b"), 4, resume=True)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    for (name, p), (_, q) in zip(straight.named_parameters(), resumed.named_parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=name)


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        _run(str(tmp_path / "none"), 2, resume=True)


def test_evaluate_restores_each_submodule_mode():
    """A training model with a layer frozen in eval mode comes back exactly as it was (the loop
    once reset every sub-module to the root's mode)."""
    x, y = synthetic(20)
    model = md.nn.Sequential(md.nn.Flatten(), md.nn.Linear(64, 8), md.nn.Dropout(0.5), md.nn.Linear(8, 3))
    model.train()
    model[2].eval()
    before = [m.training for m in model.modules()]
    seen = []
    model[1].forward = lambda t, f=model[1].forward: (seen.append([m.training for m in model.modules()]), f(t))[1]
    evaluate(model, DataLoader((x, y), 10), progress=False)
    assert seen and all(not any(modes) for modes in seen)
    assert [m.training for m in model.modules()] == before == [True, True, True, False, True]


def test_checkpoint_and_metrics_written_every_epoch(tmp_path):
    _run(str(tmp_path), 2)
    state = md.load(str(tmp_path / CHECKPOINT))
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert {"model", "optimizer", "schedule", "loader", "rng"} <= set(state)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]


def test_training_learns_and_evaluate_counts(tmp_path):
    config = TrainConfig(dataset="synthetic", model="lenet", epochs=3, batch_size=16, lr=3e-3, optimizer="adam")
    train, test = synthetic(192, size=12), synthetic(64, size=12, seed=1)
    model, history = train_on_arrays(config, train, test, str(tmp_path), progress=False)
    assert history[-1]["test_accuracy"] > 0.9
    result = evaluate(model, DataLoader(test, 10), progress=False)
    with md.no_grad():
        direct = (model(md.tensor(test[0])).numpy().argmax(1) == test[1]).mean()
    assert result["accuracy"] == pytest.approx(direct) and result["n"] == 64
    loaded, state = load_model(str(tmp_path / CHECKPOINT))
    assert state["config"]["model"] == "lenet"
    assert evaluate(loaded, DataLoader(test, 10), progress=False)["accuracy"] == pytest.approx(direct)


def test_fast_adversarial_training_records_attack_settings(tmp_path):
    config = TrainConfig(dataset="synthetic", model="mlp", epochs=1, batch_size=32, adv="fgsm", eps=0.1)
    train_on_arrays(config, synthetic(64), synthetic(32, seed=1), str(tmp_path), progress=False)
    saved = md.load(str(tmp_path / CHECKPOINT))["config"]
    assert saved["adv"] == "fgsm" and saved["eps"] == 0.1 and saved["alpha"] == pytest.approx(0.125)
    assert saved["schedule"] == "cyclic"
    assert "guard_pgd_accuracy" in md.load(str(tmp_path / CHECKPOINT))["history"][0]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_zoo_shapes(name):
    md.manual_seed(0)
    channels, size = (3, 32) if ("cifar" in name or "resnet" in name) else (1, 28)
    model = get_model(name, in_channels=channels, image_size=size, **({"width": 4} if "resnet" in name else {}))
    with md.no_grad():
        out = model.eval()(md.rand(2, channels, size, size))
    assert out.shape == (2, 10)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        get_model("nope")


@pytest.mark.parametrize("argv, message", [
    (["train", "--dataset", "mnist", "--model", "nope", "--out", "x"], "invalid choice"),
    (["train", "--dataset", "mnist", "--model", "mlp", "--epochs", "-1", "--out", "x"],
     "--epochs: expected an integer >= 1, got -1"),
])
def test_cli_bad_arguments_one_line(argv, message, capsys):
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_missing_data_folder(tmp_path, capsys):
    code = cli_main(["train", "--dataset", "mnist", "--model", "mlp", "--data-dir", str(tmp_path / "missing"),
                     "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1


def test_cli_info(capsys):
    assert cli_main(["info"]) == 0
    out = capsys.readouterr().out
    assert "numpy" in out and "backend cpu" in out and "BLAS" in out and "kernel threads:" in out


def test_cli_eval_missing_checkpoint(tmp_path, capsys):
    assert cli_main(["eval", "--checkpoint", str(tmp_path / "nope.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_attack_on_checkpoint(tmp_path, capsys):
    """`python -m minidl attack` on a trained checkpoint: numbers printed, JSON written, and the
    robust accuracy never above the clean one. Needs the real MNIST test files."""
    from pathlib import Path
    real = Path(os.environ.get("MINIDL_TEST_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
    if not (real / "mnist" / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("real MNIST files not found")
    x, y = synthetic(64, classes=10, size=28)
    config = TrainConfig(dataset="mnist", model="mlp", epochs=1, batch_size=32)
    train_on_arrays(config, (x, y), (x[:16], y[:16]), str(tmp_path), progress=False)
    out = tmp_path / "attack.json"
    code = cli_main(["attack", "--checkpoint", str(tmp_path / CHECKPOINT), "--data-dir", str(real), "--limit", "40",
                     "--steps", "3", "--eps", "0.1", "--json", str(out), "--quiet", "--no-checks"])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["n"] == 40 and result["robust_accuracy"] <= result["clean_accuracy"]
    assert "robust" in capsys.readouterr().out


def test_eps_warmup_ramps_the_training_attack():
    """The perturbation used at optimizer step t stays within eps * (t + 1) / (E * steps/epoch),
    and reaches the full eps once the ramp is over."""
    from minidl.experiment import make_perturb
    md.manual_seed(0)
    model = get_model("mlp", in_channels=1, image_size=8)
    x, y = synthetic(32)
    config = TrainConfig(dataset="synthetic", model="mlp", adv="pgd", eps=0.2, alpha=0.05, steps=3,
                         eps_warmup=2).resolved()

    class Steps:
        steps = 0
    perturb = make_perturb(config, Steps, steps_per_epoch=5)
    for t, expected in [(0, 0.02), (4, 0.1), (9, 0.2), (30, 0.2)]:
        Steps.steps = t
        size = np.abs(perturb(model, x, y).numpy() - x).max()
        assert size <= expected + 1e-6 and size > 0.9 * expected, (t, size, expected)
    with pytest.raises(ValueError, match="eps_warmup needs the optimizer"):
        make_perturb(config)
    with pytest.raises(ValueError, match="eps_warmup: expected a finite number >= 0, got -1"):
        TrainConfig(eps_warmup=-1).resolved()
    with pytest.raises(ValueError, match="init must be 'default' or one of"):
        TrainConfig(init="xavier").resolved()


def test_training_applies_init_and_warmup(tmp_path, monkeypatch):
    """train_on_arrays re-initialises the model as asked, ramps the attack's eps over the
    warm-up (read from the optimizer's steps) and records both settings."""
    import minidl.experiment as experiment
    sizes = []
    real_make_perturb = experiment.make_perturb

    def recording_make_perturb(config, optimizer=None, steps_per_epoch=None):
        perturb = real_make_perturb(config, optimizer, steps_per_epoch)

        def wrapped(model, x, y):
            out = perturb(model, x, y)
            sizes.append(float(np.abs(out.numpy() - x.numpy()).max()))
            return out
        return wrapped
    monkeypatch.setattr(experiment, "make_perturb", recording_make_perturb)
    config = TrainConfig(dataset="synthetic", model="mlp", epochs=2, batch_size=32, adv="pgd", eps=0.1, steps=2,
                         alpha=0.05, init="fan_in_uniform", eps_warmup=1)
    model, _ = train_on_arrays(config, synthetic(64), synthetic(32, seed=1), str(tmp_path), progress=False)
    # 2 steps per epoch: eps 0.05 at the first step, then the full 0.1
    assert len(sizes) == 4
    assert 0.04 < sizes[0] <= 0.05 + 1e-6 and all(0.09 < s <= 0.1 + 1e-6 for s in sizes[1:])
    saved = md.load(str(tmp_path / CHECKPOINT))["config"]
    assert saved["init"] == "fan_in_uniform" and saved["eps_warmup"] == 1

    config0 = TrainConfig(dataset="synthetic", model="mlp", epochs=0, batch_size=32, init="fan_in_uniform")
    fresh, _ = train_on_arrays(config0, synthetic(64), synthetic(32, seed=1), str(tmp_path / "b"), progress=False)
    dense = [m for m in fresh.modules() if getattr(m, "bias", None) is not None and len(m.weight.shape) == 2]
    assert len(dense) >= 2
    for module in dense:
        bound = 1 / np.sqrt(module.weight.shape[1])
        assert np.abs(module.weight.numpy()).max() <= bound and np.abs(module.bias.numpy()).max() > 0


@pytest.mark.parametrize("adv", ["pgd", "fgsm", "nfgsm"])
def test_eps_warmup_scales_alpha_with_eps(adv, monkeypatch):
    """The training attack receives eps_t = eps * min(1, (t + 1) / (E * steps/epoch)) and
    alpha_t = alpha * eps_t / eps at step t (N-FGSM's noise radius alike). Checking the
    perturbation's size alone cannot see a wrong alpha (the projection caps the step whatever
    alpha is), so the arguments are recorded."""
    import minidl.experiment as experiment
    from minidl.experiment import make_perturb
    received = []

    def recorder(model, x, y, eps, alpha, **kwargs):
        received.append((eps, alpha))
        if adv == "nfgsm":
            assert kwargs["noise"] == pytest.approx(0.3 * eps / 0.2), (eps, kwargs)
        else:
            assert "noise" not in kwargs
        return x
    monkeypatch.setattr(experiment, {"pgd": "pgd", "fgsm": "fgsm_random_start", "nfgsm": "noisy_fgsm"}[adv], recorder)
    config = TrainConfig(dataset="synthetic", model="mlp", adv=adv, eps=0.2, alpha=0.05, steps=3,
                         eps_warmup=2, noise=0.3 if adv == "nfgsm" else None).resolved()

    class Steps:
        steps = 0
    perturb = make_perturb(config, Steps, steps_per_epoch=5)
    x, y = synthetic(4)
    for t in [0, 1, 4, 8, 9, 30]:
        Steps.steps = t
        perturb(None, x, y)
        f = min(1.0, (t + 1) / 10)
        eps, alpha = received[-1]
        assert eps == pytest.approx(0.2 * f) and alpha == pytest.approx(0.05 * f), (t, eps, alpha)
        assert alpha / eps == pytest.approx(0.05 / 0.2)


def test_nfgsm_defaults_and_noise_only_for_nfgsm():
    """N-FGSM's settings default to the paper's (alpha = eps, noise = 2 eps, cyclic lr, the
    overfitting guard like fast FGSM); a noise radius with another adversary is an error, not
    silently ignored."""
    c = TrainConfig(dataset="mnist", model="mlp", adv="nfgsm", eps=0.3).resolved()
    assert (c.alpha, c.noise, c.schedule) == (pytest.approx(0.3), pytest.approx(0.6), "cyclic")
    c = TrainConfig(dataset="mnist", model="mlp", adv="nfgsm", eps=0.3, alpha=0.2, noise=0.1).resolved()
    assert (c.alpha, c.noise) == (0.2, 0.1)
    for adv in ("none", "fgsm", "pgd"):
        with pytest.raises(ValueError, match="noise"):
            TrainConfig(dataset="mnist", model="mlp", adv=adv, noise=0.2).resolved()
    with pytest.raises(ValueError, match="noise"):
        TrainConfig(dataset="mnist", model="mlp", adv="nfgsm", noise=-0.1).resolved()
