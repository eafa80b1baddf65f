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
    from minidl.study import same_settings as _same_settings
    settings = dataclasses.asdict(TrainConfig(dataset="mnist", model="wong_mnist").resolved())
    settings["train_n"] = 100
    old = {k: v for k, v in settings.items() if k not in ("init", "eps_warmup")}
    assert _same_settings(old, settings)
    assert not _same_settings({**old, "init": "fan_in_uniform"}, settings)
    assert not _same_settings({**old, "epochs": 99}, settings)
    assert not _same_settings(None, settings)


# --- the verdicts, on constructed inputs ------------------------------------------------------
import math

import pytest

from minidl.study import report
from minidl.study.report import (CLOSE_S1_S5, DOMINANT_S1_S2, NOT_JUDGED, UAP_OVER_RANDOM_MARGIN, findings,
                                 one_dominant_direction, several_close_directions, svd_beats_random, verdict)


def test_verdict_words():
    assert verdict(True) == "reproduces"
    assert verdict(False) == "does not reproduce"
    assert verdict(None) == NOT_JUDGED


@pytest.mark.parametrize("check, below, above", [
    (one_dominant_direction, False, True), (several_close_directions, True, False)])
def test_ratio_thresholds_on_both_sides_and_at_the_threshold(check, below, above):
    threshold = DOMINANT_S1_S2 if check is one_dominant_direction else CLOSE_S1_S5
    assert check(threshold - 0.01) is below
    assert check(threshold + 0.01) is above
    assert check(threshold) is False        # both comparisons are strict
    assert check(None) is None and check(math.nan) is None


def test_svd_beats_random_needs_twice_the_random_rate_plus_the_margin():
    assert svd_beats_random(0.30, 0.10) is True           # 0.30 > 0.22
    assert svd_beats_random(0.21, 0.10) is False          # 0.21 < 0.22
    assert svd_beats_random(UAP_OVER_RANDOM_MARGIN + 0.001, 0.0) is True
    assert svd_beats_random(UAP_OVER_RANDOM_MARGIN, 0.0) is False   # a tiny rate against a zero random rate
    assert svd_beats_random(math.nan, 0.1) is None and svd_beats_random(0.5, None) is None


def _metrics(dataset="mnist", s12=1.2, s15=1.5, adv_s15=1.4, svd=0.4, random=0.05, straight=(0.5, 0.8),
             cosine=(0.2, 0.6)):
    def uap(ratio_s1_s5):
        return {"ratio_s1_s2": s12, "ratio_s1_s5": ratio_s1_s5,
                "fooling": {"svd v1": {"fooling_rate": svd / 2}, "svd v2": {"fooling_rate": svd},
                            "average": {"fooling_rate": 0.9}, "random": {"fooling_rate": random}}}
    def row(measure, norm, nat, adv):   # the talk's two rows, standard error 0.01
        summary = lambda v: {"mean": v, "median": v, "se": 0.01, "n": 20}
        return {"measure": measure, "norm": norm, "radius": 0.3, "fraction": 1.0, "smoother": "higher",
                "natural": summary(nat), "adversarial": summary(adv), "difference": summary(adv - nat)}
    return {"dataset": dataset, "uap": {"natural": uap(s15), "adversarial": uap(adv_s15)},
            "landscape": {"rows": [row("ball_cosine", "inf", *cosine), row("straightness", "2", *straight)]}}


def _verdicts(lines):
    return [line.rsplit("-> ", 1)[1] for line in lines if "-> " in line]


def test_findings_all_reproduce_then_none_does():
    lines = findings(_metrics())
    assert len(lines) == 6 and "a visual claim" in lines[2]
    assert [v.split(" for")[0].rstrip(".") for v in _verdicts(lines)] == ["reproduces"] * 4
    assert "(threshold used: s1/s5 < 2.5)" in lines[0] and "best SVD vector fools 40.0%" in lines[1]
    lines = findings(_metrics(s15=3.0, svd=0.1, straight=(0.8, 0.5), cosine=(0.6, 0.2)))
    assert [v.split(" for")[0].split(" (")[0].rstrip(".") for v in _verdicts(lines)] == ["does not reproduce"] * 4


def test_findings_cifar_asks_for_one_dominant_direction():
    assert "reproduces for the natural model" in findings(_metrics("cifar10", s12=12.1))[0]
    assert "does not reproduce for the natural model" in findings(_metrics("cifar10", s12=1.5))[0]
    assert "average" not in findings(_metrics("cifar10"))[1]   # only SVD vectors compete with random


def test_findings_with_missing_or_nan_numbers_say_so():
    """Fewer than five singular values (ratio None) and NaN means are not judged (once: a crash
    and a silent "does not reproduce")."""
    lines = findings(_metrics(s15=None, adv_s15=None, straight=(math.nan, 0.5), cosine=(0.1, math.nan)))
    assert "s1/s5 = - (natural), - (adversarial)" in lines[0]
    assert [v.split(" for")[0].rstrip(".") for v in _verdicts(lines)] == [NOT_JUDGED, "reproduces", NOT_JUDGED,
                                                                          NOT_JUDGED]
    assert report.verdict(report.several_close_directions(None)) == NOT_JUDGED
