"""The study's quick pipeline end to end on a tiny synthetic dataset: every promised file appears,
a second run reuses finished stages, and the report's numbers are those of metrics.json."""
import json
import os


from minidl.study import run_study

from test_train import synthetic

TINY = dict(natural_epochs=1, adv_epochs=1, rse_epochs=1, eval_n=30, pgd_steps=2, rse_n=2, rse_eot=2,
            rse_eval_n=12, uap_n=24, uap_test_n=20, uap_steps=2, uap_k=3, iterative_passes=1, landscape_n=3,
            landscape_steps=2, cos_points=3, batch_size=32)
FILES = ["report.md", "metrics.json", "uap_spectra.png", "uap_singular_vectors.png", "uap_fooling_rates.png",
         "trajectory_natural.png", "trajectory_adversarial.png", "gradient_cosines.png"]


def test_quick_study_end_to_end(tmp_path, capsys):
    arrays = (synthetic(128), synthetic(40, seed=1))
    out = str(tmp_path / "study")
    metrics = run_study("mnist", "quick", out_dir=out, arrays=arrays, overrides=TINY, progress=False)
    for name in FILES:
        path = os.path.join(out, name)
        assert os.path.getsize(path) > 0, name
    report = open(os.path.join(out, "report.md")).read()
    for section in ("Accuracy under attack", "Random Self-Ensemble", "singular values", "Loss landscape",
                    "Which claims of the talk reproduce"):
        assert section in report
    saved = json.load(open(os.path.join(out, "metrics.json")))
    clean = saved["accuracy"]["rows"]["natural"]["clean"]
    assert f"{100 * clean:.1f}%" in report
    spectrum = saved["uap"]["natural"]["top_singular_values"]
    assert spectrum == sorted(spectrum, reverse=True) and min(spectrum) >= 0

    capsys.readouterr()
    again = run_study("mnist", "quick", out_dir=out, arrays=arrays, overrides=TINY, progress=True)
    printed = capsys.readouterr().out
    assert "reusing" in printed and "training the" not in printed
    assert again["accuracy"] == metrics["accuracy"]


def test_settings_written_before_new_config_keys_still_match():
    """A study folder written before TrainConfig gained a key (here init, eps_warmup) is reused:
    the missing keys count as their defaults; a real difference still forces retraining."""
    import dataclasses
    from minidl.experiment import TrainConfig
    from minidl.study import _same_settings
    settings = dataclasses.asdict(TrainConfig(dataset="mnist", model="wong_mnist").resolved())
    settings["train_n"] = 100
    old = {k: v for k, v in settings.items() if k not in ("init", "eps_warmup")}
    assert _same_settings(old, settings)
    assert not _same_settings({**old, "init": "fan_in_uniform"}, settings)
    assert not _same_settings({**old, "epochs": 99}, settings)
    assert not _same_settings(None, settings)
