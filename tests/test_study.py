"""The study's quick pipeline end to end on a tiny synthetic dataset: every promised file appears,
a second run reuses finished stages, and the report's numbers are those of metrics.json."""
import json
import os


import pytest

from minidl.study import PRESETS, get_preset, run_study

from test_train import synthetic

TINY = dict(natural_epochs=1, adv_epochs=1, rse_epochs=1, eval_n=30, pgd_steps=2, rse_n=2, rse_eot=2,
            rse_eval_n=12, uap_n=24, uap_test_n=20, uap_steps=2, uap_k=3, iterative_passes=1, landscape_n=3,
            landscape_steps=2, cos_points=3, batch_size=32, autoattack_n=4)
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

    for name in ("natural", "adversarial"):   # AutoAttack's figures are in metrics.json and in the report
        aa = saved["accuracy"]["rows"][name]["autoattack"]
        assert aa["n"] == TINY["autoattack_n"] and aa["eps"] == 0.3
        assert [b["stage"] for b in aa["breakdown"]] == ["clean", "apgd-ce", "apgd-t", "fab-t", "square"]
        assert aa["worst_case"] <= min(aa["same_images"].values())
        assert f"**{100 * aa['worst_case']:.1f}%**" in report
    assert "AutoAttack (standard), L-inf eps 0.3, first 4 test images" in report
    assert "PGD-5 adversarial training" in report          # the quick preset's model is PGD-trained
    assert "adam with a cyclic lr schedule peaking at 0.005, batch 32, init fan_in_uniform" in report

    capsys.readouterr()
    again = run_study("mnist", "quick", out_dir=out, arrays=arrays, overrides=TINY, progress=True)
    printed = capsys.readouterr().out
    assert "reusing" in printed and "training the" not in printed
    assert again["accuracy"] == metrics["accuracy"]


@pytest.mark.parametrize("dataset, preset, channels", [("mnist", "standard", 1), ("cifar10", "standard", 3)])
def test_standard_presets_end_to_end(tmp_path, dataset, preset, channels):
    """The hour-long presets on tiny data: madry_mnist (PGD-trained) and cifar_cnn (fast FGSM)."""
    arrays = (synthetic(96, channels=channels), synthetic(24, seed=1, channels=channels))
    out = str(tmp_path / "study")
    overrides = {**TINY, "eval_n": 16, "autoattack_n": 3, "uap_n": 16, "uap_test_n": 12}
    metrics = run_study(dataset, preset, out_dir=out, arrays=arrays, overrides=overrides, progress=False)
    assert metrics["settings"]["model"] == get_preset(dataset, preset).model
    report = open(os.path.join(out, "report.md")).read()
    assert f"preset {preset}" in report and "AutoAttack (standard)" in report
    rows = metrics["accuracy"]["rows"]
    assert all(rows[name]["autoattack"]["n"] == 3 for name in ("natural", "adversarial"))
    eps = 0.3 if dataset == "mnist" else 8 / 255
    assert rows["adversarial"]["autoattack"]["eps"] == pytest.approx(eps)
    for name in FILES:
        assert os.path.getsize(os.path.join(out, name)) > 0, name


def test_presets_train_what_they_promise():
    """The adversarial model of each CPU preset: the quick and standard MNIST ones PGD-trained with
    the eps warm-up (Wong et al.'s recipe, shortened), CIFAR-10's by fast FGSM at 8/255; every
    preset's three configurations are valid."""
    from minidl.study.stages import model_configs
    for (dataset, name), p in PRESETS.items():
        for config in model_configs(p, dataset, "cpu", 0).values():
            config.resolved()
        assert 0 < p.autoattack_n <= p.eval_n, (dataset, name)
    quick = model_configs(get_preset("mnist", "quick"), "mnist", "cpu", 0)["adversarial"].resolved()
    assert (quick.model, quick.adv, quick.eps, quick.steps) == ("wong_mnist", "pgd", 0.3, 5)
    assert quick.alpha == pytest.approx(0.15) and quick.eps_warmup == 1
    assert (quick.init, quick.schedule, quick.optimizer, quick.lr) == ("fan_in_uniform", "cyclic", "adam", 5e-3)
    standard = model_configs(get_preset("mnist", "standard"), "mnist", "cpu", 0)
    assert standard["natural"].model == standard["adversarial"].model == "madry_mnist"
    assert standard["adversarial"].adv == "pgd" and standard["adversarial"].eps_warmup > 0
    assert get_preset("mnist", "standard").uap_n >= 1000
    cifar = model_configs(get_preset("cifar10", "standard"), "cifar10", "cpu", 0)["adversarial"].resolved()
    assert (cifar.model, cifar.adv) == ("cifar_cnn", "fgsm") and cifar.eps == pytest.approx(8 / 255)
    assert cifar.alpha == pytest.approx(10 / 255)
    with pytest.raises(ValueError, match="no preset 'tiny'"):
        get_preset("mnist", "tiny")


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


# --- AutoAttack rows: the worst case over attacks and the report's table ------------------------
import numpy as np

from minidl.study import analyses
from minidl.study.analyses import autoattack_row, worst_case
from minidl.study.report import autoattack_lines


def test_worst_case_counts_images_that_survive_every_attack():
    points = {"pgd": [True, True, False, True], "autoattack": [True, False, True, True], "fgsm": [True] * 4}
    assert worst_case(points) == 0.5           # images 0 and 3; each attack alone leaves 75%
    assert worst_case({"pgd": [True, False]}) == 0.5
    assert math.isnan(worst_case({"pgd": []}))
    with pytest.raises(ValueError, match="worst_case: expected per-image results of one length, got lengths"):
        worst_case({"pgd": [True], "autoattack": [True, False]})


def _breakdown(n, robust_after):
    return [{"stage": s, "robust": int(round(r * n)), "robust_accuracy": r, "seconds": 1.0}
            for s, r in zip(["clean", "apgd-ce", "apgd-t", "fab-t", "square"], robust_after)]


def test_autoattack_row_judges_the_same_images_by_every_attack(monkeypatch):
    """A constructed AutoAttack result on the first 4 of 6 images: the row takes the other attacks'
    results on those 4 images only, names the strongest one, and counts the images none broke."""
    seen = {}

    def fake(model, data, eps, norm, version, seed, progress, desc):
        seen.update(n=len(data[1]), eps=eps, norm=norm, version=version, seed=seed)
        return {"n": 4, "clean_accuracy": 1.0, "robust_accuracy": 0.75,
                "robust_correct": np.array([True, True, True, False]),
                "breakdown": _breakdown(4, [1.0, 1.0, 0.75, 0.75, 0.75]), "warnings": []}
    monkeypatch.setattr(analyses, "autoattack_accuracy", fake)
    data = (np.zeros((6, 1, 4, 4), np.float32), np.zeros(6, np.int64))
    others = {"pgd Linf-0.3": np.array([True, False, True, True, False, False]),   # 75% on the first 4
              "fgsm Linf-0.3": np.array([True, True, True, True, False, False])}
    row = autoattack_row(None, data, 0.3, 4, others, seed=7, progress=False)
    assert seen == {"n": 4, "eps": 0.3, "norm": "inf", "version": "standard", "seed": 7}
    assert row["same_images"] == {"autoattack": 0.75, "pgd Linf-0.3": 0.75, "fgsm Linf-0.3": 1.0}
    assert row["strongest"] == "autoattack"            # a tie goes to AutoAttack
    assert row["worst_case"] == 0.5                    # images 0 and 2
    others["pgd Linf-0.3"] = np.array([True, False, False, True, True, True])   # now 50%: PGD is strongest
    row = autoattack_row(None, data, 0.3, 4, others, seed=7, progress=False)
    assert row["strongest"] == "pgd Linf-0.3" and row["worst_case"] == 0.25


def _aa_row(worst, warnings=()):
    return {"eps": 0.3, "n": 100, "clean": 0.99, "breakdown": _breakdown(100, [0.99, 0.9, 0.88, 0.87, 0.85]),
            "same_images": {"autoattack": 0.85, "pgd Linf-0.3": 0.9}, "strongest": "autoattack",
            "worst_case": worst, "warnings": list(warnings), "robust_accuracy": 0.85}


def test_autoattack_lines_show_the_breakdown_and_the_worst_case():
    lines = autoattack_lines({"natural": {"autoattack": _aa_row(0.0)},
                              "adversarial": {"autoattack": _aa_row(0.843, ["square lowered it"])}})
    text = "\n".join(lines)
    assert "### AutoAttack (standard), L-inf eps 0.3, first 100 test images" in text
    header = next(line for line in lines if line.startswith("| model"))
    assert header.count("after ") == 4 and "pgd Linf-0.3 (same images)" in header and "**robust**" in header
    adv = next(line for line in lines if line.startswith("| adversarial"))
    assert adv == ("| adversarial | 99.0% | 90.0% | 88.0% | 87.0% | 85.0% | 90.0% | autoattack | **84.3%** |")
    assert len(header.split("|")) == len(adv.split("|"))
    assert "**Warning (adversarial, AutoAttack)**: square lowered it" in text
    assert "Warning (natural" not in text
    # metrics written before AutoAttack joined the study (or autoattack_n = 0) have no section
    assert autoattack_lines({"natural": {"clean": 0.9}, "adversarial": {"clean": 0.9}}) == []


def test_the_command_line_offers_every_preset():
    from minidl.cli import build_parser
    for preset in ("quick", "standard", "full"):
        args = build_parser().parse_args(["study", "--dataset", "cifar10", "--preset", preset, "--out", "runs/x"])
        assert args.preset == preset
    assert {name for _, name in PRESETS} == {"quick", "standard", "full"}
