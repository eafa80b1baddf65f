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
         "trajectory_natural.png", "trajectory_adversarial.png", "gradient_cosines.png", "spectrum_sensitivity.png"]


def test_quick_study_end_to_end(tmp_path, capsys):
    arrays = (synthetic(128), synthetic(40, seed=1))
    out = str(tmp_path / "study")
    metrics = run_study("mnist", "quick", out_dir=out, arrays=arrays, overrides=TINY, progress=False)
    for name in FILES:
        path = os.path.join(out, name)
        assert os.path.getsize(path) > 0, name
    report = open(os.path.join(out, "report.md")).read()
    for section in ("Accuracy under attack", "Random Self-Ensemble", "singular values", "Loss landscape",
                    "Which claims of the talk reproduce", "Spectrum sensitivity"):
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
    from minidl.study import run_seeds   # one seed, as the command line runs it without --seeds
    again = run_seeds("mnist", "quick", None, out_dir=out, arrays=arrays, overrides=TINY, progress=True)
    printed = capsys.readouterr().out
    assert "reusing" in printed and "training the" not in printed
    assert again["claims"][0]["n"] == 1 and json.load(open(os.path.join(out, "metrics.json")))["accuracy"] == \
        metrics["accuracy"]
    # the run ends with the verdict table, then the report's path (once)
    assert "[study] verdicts (mnist, preset quick, seeds 0):" in printed and "1 of 1 seed" in printed
    assert printed.rstrip().endswith(f"[study] report: {os.path.join(out, 'report.md')}")
    assert printed.count("[study] report:") == 1


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


# --- spectrum sensitivity: the verdict branches on planted and flat matrices ------------------
from minidl.study import spectrum
from minidl.study.report import definition_outcome, spectrum_claims, talk_spectrum_holds


def _planted(rng, n=200, d=40, strength=3.0):
    """Rows a_i u + noise: one shared direction u carries most of the energy (s1/s2 well above 3)."""
    u = rng.standard_normal(d)
    u /= np.linalg.norm(u)
    return (strength + rng.standard_normal(n))[:, None] * u + 0.1 * rng.standard_normal((n, d))


def _flat(rng, n=200, d=40):
    """IID Gaussian rows, many more than columns: every singular value near sqrt(n) (s1/s5 near 1)."""
    return rng.standard_normal((n, d))


@pytest.mark.parametrize("dataset", ["cifar10", "mnist"])
def test_talk_spectrum_verdict_on_a_planted_and_a_flat_matrix(dataset):
    rng = np.random.default_rng(0)
    planted = spectrum.spectrum_numbers(np.linalg.svd(_planted(rng), compute_uv=False))
    flat = spectrum.spectrum_numbers(np.linalg.svd(_flat(rng), compute_uv=False))
    assert planted["s1_s2"] > 10 and flat["s1_s2"] < 1.5 and flat["s1_s5"] < 1.5
    assert len(planted["top"]) == 5 and planted["top"] == sorted(planted["top"], reverse=True)
    # CIFAR-10's claim is one dominant value, MNIST's is none: the planted matrix passes one, the flat the other
    assert talk_spectrum_holds(dataset, planted["s1_s2"], planted["s1_s5"]) is (dataset == "cifar10")
    assert talk_spectrum_holds(dataset, flat["s1_s2"], flat["s1_s5"]) is (dataset == "mnist")
    assert talk_spectrum_holds(dataset, None, None) is None
    assert spectrum.spectrum_numbers([2.0, 0.0]) == {"top": [2.0, 0.0], "s1_s2": None, "s1_s5": None}


def test_group_rows_by_true_class_and_by_adversarial_label():
    labels = np.array([0] * 12 + [1] * 12 + [2] * 3)
    adv = np.array([1] * 11 + [0] + [2] * 12 + [0] * 3)   # one image of class 0 not moved by the attack
    groups, skipped = spectrum.group_rows("all", labels, adv, 10)
    assert list(groups) == ["all"] and len(groups["all"]) == 27 and skipped == {}
    groups, skipped = spectrum.group_rows("true_class", labels, adv, 10)
    assert sorted(groups) == ["0", "1"] and skipped == {"2": 3}
    groups, skipped = spectrum.group_rows("adversarial_label", labels, adv, 10)
    assert sorted(groups) == ["1", "2"] and skipped == {"0": 3}        # the unmoved image has no adversarial label
    assert list(groups["1"]) == list(range(11))
    with pytest.raises(ValueError, match="grouping must be one of"):
        spectrum.group_rows("per_pixel", labels, adv, 10)
    mask = spectrum.test_selection("adversarial_label", "1", np.array([0, 1, 2, 1]))
    assert mask.tolist() == [True, False, True, False]
    assert spectrum.test_selection("true_class", "1", np.array([0, 1, 2, 1])).tolist() == [False, True, False, True]


def _definition(grouping, ratios, fooling=(0.5, 0.1)):
    """A definition as the spectrum stage writes it, from the (s1/s2, s1/s5) of each matrix."""
    groups = {str(i): {"rows": 20, "top": [5, 4, 3, 2, 1], "s1_s2": a, "s1_s5": b, "n_test": 50,
                       "v1_fooling": fooling[0], "random_fooling": fooling[1]} for i, (a, b) in enumerate(ratios)}
    summary = {k: spectrum.spread([g[k] for g in groups.values()])
               for k in ("s1_s2", "s1_s5", "v1_fooling", "random_fooling")}
    summary["top"] = [5, 4, 3, 2, 1]
    return {"source": "pgd", "grouping": grouping, "centred": False, "radius": 2.0, "matrix_rows": 100,
            "groups": groups, "skipped_groups": {}, "summary": summary}


def test_definition_outcome_judges_per_class_definitions_by_the_median():
    # three classes with a dominant value, two without: the median (12) is dominant
    d = _definition("true_class", [(12, 20), (15, 25), (20, 30), (1.1, 1.5), (1.2, 1.6)])
    o = definition_outcome("cifar10", d)
    assert o == {"spectrum": True, "uap": True, "matrices_holding": 3, "matrices": 5}
    o = definition_outcome("mnist", d)
    assert o["spectrum"] is False and o["matrices_holding"] == 2
    flat = _definition("true_class", [(1.1, 1.5)] * 4 + [(12, 20)], fooling=(0.15, 0.1))
    assert definition_outcome("cifar10", flat)["spectrum"] is False
    assert definition_outcome("mnist", flat)["spectrum"] is True
    assert definition_outcome("mnist", flat)["uap"] is False            # 0.15 < 2 x 0.1 + 0.02
    empty = _definition("adversarial_label", [])
    assert definition_outcome("mnist", empty) == {"spectrum": None, "uap": None, "matrices_holding": 0,
                                                  "matrices": 0}


def _spectrum_metrics(nat_ratio, adv_ratio=1.2):
    defs = lambda r: [_definition("all", [(r, r)]), _definition("true_class", [(r, r)] * 3),
                      {**_definition("true_class", [(1.1, 1.3)] * 3), "centred": True}]
    return {"settings": {"radii": [2.0], "rows": [100], "preset_radius": 2.0, "min_rows": 10, "steps": 2},
            "models": {"natural": defs(nat_ratio), "adversarial": defs(adv_ratio)}, "n_test": 50, "figure": "f.png"}


def test_spectrum_claims_name_the_talks_definition_and_count_the_others():
    lines = spectrum_claims("cifar10", _spectrum_metrics(12.0))
    assert lines[0]["outcome"] == "reproduces" and "talk's definition" in lines[0]["claim"]
    assert lines[0]["numbers"]["classes holding natural"] == 3
    assert lines[1]["kind"] == "count"
    assert lines[1]["numbers"]["with the talk's spectrum: natural"] == 2     # the uncentred two
    assert lines[1]["numbers"]["with the talk's spectrum: adversarial"] == 0
    assert spectrum_claims("cifar10", _spectrum_metrics(1.5))[0]["outcome"] == "does not reproduce"
    text = "\n".join(report.spectrum_section(_spectrum_metrics(12.0), "cifar10"))
    assert "(talk's)" in text and "reproduces (3/3)" in text and "54.4" in text


def test_measure_definition_on_a_linear_model_finds_the_planted_class_direction():
    """Per true class: class 0's rows share one direction, class 1's rows are noise; the
    per-class numbers are each matrix's own and the summary their median and range."""
    from minidl import nn
    rng = np.random.default_rng(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    images = (0.4 + 0.2 * rng.random((40, 1, 4, 4))).astype(np.float32)
    labels = np.array([0] * 20 + [1] * 20)
    matrix = np.concatenate([_planted(rng, 20, 16), _flat(rng, 20, 16)]).astype(np.float32)
    test = (images[:10], labels[:10])
    d = spectrum.measure_definition(model, matrix, images, labels, labels, test, np.zeros(10, bool), "pgd",
                                    "true_class", False, 0.5, 10)
    g0, g1 = d["groups"]["0"], d["groups"]["1"]
    assert g0["s1_s2"] > 5 > g1["s1_s2"] and g0["rows"] == g1["rows"] == 20
    assert g0["n_test"] == 10 and g1["n_test"] == 0 and g1["v1_fooling"] is None
    assert d["summary"]["s1_s2"]["median"] == pytest.approx((g0["s1_s2"] + g1["s1_s2"]) / 2)
    assert d["summary"]["s1_s2"]["min"] == g1["s1_s2"] and d["summary"]["s1_s2"]["n"] == 2
    assert d["summary"]["v1_fooling"]["n"] == 1 and d["summary"]["random_fooling"]["median"] == 0.0


# --- several seeds: the aggregate on constructed per-seed metrics --------------------------------
from minidl.study import seeds as seeds_mod


def _seed_metrics(s15, straight, extra=0.1):
    m = _metrics(s15=s15, straight=straight)
    m["preset"] = "quick"
    # the input-Hessian curvature row (no ball: norm "-", radius None) is aggregated as the others
    m["landscape"]["rows"].append({"measure": "input_hessian", "norm": "-", "radius": None, "fraction": 1.0,
                                   "smoother": "lower", "natural": {"mean": 1.0, "median": 1.0, "se": 0.01, "n": 20},
                                   "adversarial": {"mean": extra, "median": extra, "se": 0.01, "n": 20},
                                   "difference": {"mean": extra - 1.0, "median": extra - 1.0, "se": 0.01, "n": 20}})
    m["spectrum"] = _spectrum_metrics(1.2)
    m["accuracy"] = {"rows": {"natural": {"clean": 0.9 + s15 / 100, "pgd Linf-0.3": s15 / 10, "warnings": []}}}
    return m


def test_aggregate_counts_seeds_and_gives_mean_and_range():
    per_seed = {0: _seed_metrics(1.5, (0.5, 0.8)), 1: _seed_metrics(3.0, (0.5, 0.8)),
                2: _seed_metrics(2.0, (0.8, 0.5), extra=2.0)}
    agg = seeds_mod.aggregate(per_seed)
    assert agg["seeds"] == [0, 1, 2]
    by_claim = {c["claim"]: c for c in agg["claims"]}
    spec = by_claim["No dominant singular value on MNIST (all classes, uncentred, natural model)"]
    assert spec["outcomes"] == ["reproduces", "does not reproduce", "reproduces"]
    assert (spec["reproduces"], spec["n"], spec["verdict"]) == (2, 3, seeds_mod.SPLIT)
    assert spec["numbers"]["s1/s5 natural"] == {"mean": pytest.approx(6.5 / 3), "min": 1.5, "max": 3.0, "n": 3}
    straight = by_claim["Adversarial training straightens PGD trajectories"]
    assert straight["reproduces"] == 2 and straight["counts"]["does not reproduce (the natural model is smoother)"] == 1
    uap_claim = by_claim["Top singular vectors are universal perturbations (natural model)"]
    assert uap_claim["verdict"] == "reproduces" and uap_claim["reproduces"] == 3
    assert seeds_mod.k_of_n(spec) == "2 of 3 seeds (does not reproduce: 1)"
    assert seeds_mod.k_of_n(uap_claim) == "3 of 3 seeds"
    assert seeds_mod.k_of_n(seeds_mod.tally(["does not reproduce"] * 2)) == "0 of 2 seeds"
    assert seeds_mod.k_of_n(seeds_mod.tally([NOT_JUDGED] * 2)) == f"0 of 2 seeds ({NOT_JUDGED}: 2)"
    rows = {r["measure"]: r for r in agg["landscape"]}
    assert rows["input_hessian"]["reproduces"] == 2 and rows["input_hessian"]["difference"]["max"] == pytest.approx(1.0)
    assert agg["numbers"]["accuracy.rows.natural.clean"]["min"] == pytest.approx(0.915)
    assert agg["accuracy"]["natural"]["pgd Linf-0.3"]["max"] == pytest.approx(0.3)
    nat = agg["spectrum"]["natural"]
    key = next(k for k in nat if k.startswith("pgd / true_class / uncentred"))
    assert nat[key]["spectrum"]["reproduces"] == 3 and nat[key]["s1_s2"]["mean"] == pytest.approx(1.2)
    table = seeds_mod.verdict_table(agg)
    assert ("No dominant singular value on MNIST (all classes, uncentred, natural model)", seeds_mod.SPLIT,
            "2 of 3 seeds (does not reproduce: 1)") in table
    one = seeds_mod.aggregate({7: per_seed[0]})
    assert one["claims"][0]["verdict"] == "reproduces" and seeds_mod.k_of_n(one["claims"][0]) == "1 of 1 seed"
    with pytest.raises(ValueError, match="at least one seed"):
        seeds_mod.aggregate({})


def test_seeds_report_and_printed_table(tmp_path, capsys):
    per_seed = {0: _seed_metrics(1.5, (0.5, 0.8)), 1: _seed_metrics(3.0, (0.8, 0.5))}
    agg = seeds_mod.aggregate(per_seed)
    path = str(tmp_path / "report.md")
    seeds_mod.write_seeds_report(path, agg, "python -m minidl study --seeds 0,1", 90.0,
                                 {0: str(tmp_path / "seed-0" / "report.md"), 1: str(tmp_path / "seed-1" / "report.md")})
    text = open(path).read()
    assert "[seed 0](seed-0/report.md)" in text and "1 of 2 seeds" in text
    assert "| `input_hessian` | at the image | 2 of 2 | reproduces: 2 | -0.900 |" in text
    assert ("Curvature (`input_hessian`, at the image; lower is smoother): the adversarial model is smoother in 2 of "
            "2 seeds; mean over images natural 1, adversarial 0.1, difference -0.9 (mean [min, max] over seeds)."
            in text)
    assert "| natural: clean | 92.3% [91.5%, 93.0%] |" in text
    seeds_mod.print_verdicts(agg, path)
    printed = capsys.readouterr().out
    assert "verdicts (mnist, preset quick, seeds 0, 1)" in printed and printed.rstrip().endswith(f"report: {path}")
    assert "reproduces in" in printed and "1 of 2 seeds" in printed
    assert seeds_mod.mean_range({"mean": 2.0, "min": 1.0, "max": 3.0, "n": 3}) == "2 [1, 3]"
    half = {"mean": 0.5, "min": 0.0, "max": 1.0, "n": 2}
    assert seeds_mod.mean_range(half, 3) == "0.500 [0.000, 1.000]"                 # a rate, not a count
    assert seeds_mod.mean_range(half, 1, count=True) == "0.5 [0, 1]"
    assert seeds_mod._g3({"mean": 0.002, "min": 0.001, "max": 0.003, "n": 3}) == "0.002 [0.001, 0.003]"
    assert seeds_mod.mean_range({"mean": 0.5, "min": 0.25, "max": 0.75, "n": 2}, percent=True) == "50.0% [25.0%, 75.0%]"


def _landscape_counts(m, kinds):
    """``m`` with one ball_cosine row per entry of ``kinds`` ("adversarial", "natural", "neither")."""
    diff = {"adversarial": 0.5, "natural": -0.5, "neither": 0.0}
    m["landscape"]["rows"] = [{"measure": "ball_cosine", "norm": "inf", "radius": 0.1 * (i + 1), "fraction": 1.0,
                               "smoother": "higher", "natural": {"mean": 0.5, "median": 0.5, "se": 0.01, "n": 20},
                               "adversarial": {"mean": 0.5 + diff[k], "median": 0.5, "se": 0.01, "n": 20},
                               "difference": {"mean": diff[k], "median": diff[k], "se": 0.01, "n": 20}}
                              for i, k in enumerate(kinds)]
    return m


def test_aggregate_count_claims_take_every_seeds_categories_whatever_their_order():
    """A seed with no row of a kind lists no count for it: that is a count of 0, in either order."""
    claim = "The landscape by every measure (rows per verdict)"
    neither = "rows: no clear difference (within 2 standard errors)"
    a = _landscape_counts(_seed_metrics(1.5, (0.5, 0.8)), ["adversarial", "adversarial"])
    b = _landscape_counts(_seed_metrics(1.5, (0.5, 0.8)), ["adversarial", "neither"])
    for order in ({0: a, 1: b}, {0: b, 1: a}):
        c = {x["claim"]: x for x in seeds_mod.aggregate(order)["claims"]}[claim]
        assert c["numbers"][neither] == {"mean": 0.5, "min": 0.0, "max": 1.0, "n": 2}
        assert c["numbers"]["rows: reproduces"] == {"mean": 1.5, "min": 1.0, "max": 2.0, "n": 2}
        assert f"{neither} 0.5 [0, 1]" in seeds_mod._claim_cells(c)[0]


def test_aggregate_matches_claims_by_name_and_a_missing_claim_is_not_judged():
    """A seed without the spectrum stage lacks its two claims: they count that seed as not judged,
    and no claim after a missing one is compared with another claim."""
    full, short = _seed_metrics(1.5, (0.5, 0.8)), _seed_metrics(1.5, (0.5, 0.8))
    short["spectrum"] = None
    for order in ({0: short, 1: full}, {0: full, 1: short}):
        agg = seeds_mod.aggregate(order)
        by = {c["claim"]: c for c in agg["claims"]}
        assert len(by) == len(agg["claims"]) == len(report.claims(full))
        talk = next(c for name, c in by.items() if "talk's definition" in name)
        assert talk["n"] == 2 and talk["reproduces"] == 1 and talk["counts"][NOT_JUDGED] == 1
        assert talk["verdict"] == "reproduces where judged (not judged in 1 of 2 seeds)"
        assert seeds_mod.k_of_n(talk) == f"1 of 2 seeds ({NOT_JUDGED}: 1)"
        assert talk["numbers"]["s1/s2 median natural"]["n"] == 1
        assert seeds_mod.mean_range(talk["numbers"]["s1/s2 median natural"], of=2) == "1.20 (1 of 2 seeds)"
        count = next(c for name, c in by.items() if name.startswith("Definitions of the matrix"))
        assert count["kind"] == "count" and count["numbers"]["v1 beats random: natural"]["n"] == 1
        assert count["verdict"] is None                                   # a count has no verdict to miss
        assert "(1 of 2 seeds)" in seeds_mod._claim_cells(count)[0]
        # every claim common to both seeds is judged by both
        for name in by:
            if name in {c["claim"] for c in report.claims(short)}:
                assert by[name]["n"] == 2 and NOT_JUDGED not in by[name]["counts"]
    assert seeds_mod.aggregate({0: short, 1: short})["spectrum"] is None


def test_seed_verdict_words():
    assert seeds_mod.seed_verdict(["reproduces"] * 3) == "reproduces"
    assert seeds_mod.seed_verdict(["reproduces", "does not reproduce"]) == seeds_mod.SPLIT
    assert seeds_mod.seed_verdict(["does not reproduce", NOT_JUDGED, "does not reproduce"]) == \
        "does not reproduce where judged (not judged in 1 of 3 seeds)"
    assert seeds_mod.seed_verdict(["reproduces", "does not reproduce", NOT_JUDGED]) == seeds_mod.SPLIT
    assert seeds_mod.seed_verdict([NOT_JUDGED] * 2) == NOT_JUDGED
    assert seeds_mod.k_of_n(seeds_mod.tally(["does not reproduce", NOT_JUDGED])) == \
        f"0 of 2 seeds (does not reproduce: 1; {NOT_JUDGED}: 1)"


def test_printed_verdicts_wrap_long_cells_instead_of_cutting_them(capsys):
    agg = seeds_mod.aggregate({0: _seed_metrics(1.5, (0.5, 0.8)), 1: _seed_metrics(3.0, (0.8, 0.5))})
    seeds_mod.print_verdicts(agg, "r.md")
    printed = capsys.readouterr().out
    words = " ".join(printed.split())
    for claim, word, _ in seeds_mod.verdict_table(agg):
        for w in (claim + " " + word).split():
            assert w in words
    assert "..." not in printed and "v1 beats random: adversarial" in words


def test_spectrum_section_shows_the_judged_ratio_and_the_unjudged_definitions():
    sp = _spectrum_metrics(1.2)
    sp["models"]["natural"][1] = _definition("true_class", [(1.3, 2.2), (1.4, 2.4), (1.5, 2.6)])   # the talk's
    sp["models"]["natural"].append(_definition("adversarial_label", []))
    sp["models"]["adversarial"].append(_definition("adversarial_label", []))
    text = "\n".join(report.spectrum_section(sp, "mnist"))
    assert "s1/s5 <" in text and "| natural: s1/s5 |" in text
    talks = next(line for line in text.splitlines() if "(talk's)" in line)
    assert "| 1.40 [1.30, 1.50] | 2.40 [2.20, 2.60] |" in talks         # s1/s2, then s1/s5, median [range]
    assert "not judged (no matrix of 10 rows)" in text
    row = next(line for line in text.splitlines() if line.startswith("| PGD, per adversarial label"))
    assert row.count("| - |") >= 2                                      # no top-5, no ratios
    assert "median s1/s2 over the classes 1.40 (natural)" in text and "median s1/s5 2.40 (natural)" in text


def test_plot_ratios_draws_the_judged_ratio_on_mnist(tmp_path):
    sp = {**_spectrum_metrics(1.2), "dataset": "mnist", "talk": [2.7, 2.5, 2.1, 2.0, 1.8]}
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    seen = []
    real = plt.subplots
    plt.subplots = lambda *a, **k: seen.append(a) or real(*a, **k)
    try:
        assert os.path.exists(spectrum.plot_ratios(sp, str(tmp_path / "m.png")))
        assert os.path.exists(spectrum.plot_ratios({**sp, "dataset": "cifar10"}, str(tmp_path / "c.png")))
    finally:
        plt.subplots = real
    assert [a[0] for a in seen] == [2, 1]                               # MNIST: s1/s2 and s1/s5; CIFAR-10: s1/s2


def test_measure_definition_centring_removes_a_shared_mean():
    """Rows that share one mean perturbation: uncentred, the mean is a dominant direction; centred,
    what is left is noise and the spectrum is flat."""
    from minidl import nn
    rng = np.random.default_rng(5)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    images = (0.4 + 0.2 * rng.random((40, 1, 4, 4))).astype(np.float32)
    labels = np.zeros(40, int)
    mean = rng.standard_normal(16)
    matrix = (3 * mean / np.linalg.norm(mean) + 0.1 * rng.standard_normal((40, 16))).astype(np.float32)
    test = (images[:10], labels[:10])
    run = lambda centred: spectrum.measure_definition(model, matrix, images, labels, labels, test, np.zeros(10, bool),
                                                      "pgd", "all", centred, 0.5, 10)["groups"]["all"]
    assert run(False)["s1_s2"] > 10 and run(True)["s1_s2"] < 1.5


def test_study_seeds_on_the_command_line(capsys):
    from minidl.cli import build_parser, main
    args = build_parser().parse_args(["study", "--dataset", "mnist", "--seeds", "0,1,2", "--out", "runs/x"])
    assert args.seeds == [0, 1, 2] and args.seed is None
    build = build_parser()
    with pytest.raises(SystemExit):                   # '\u00b2'.isdigit() is True, but int() refuses it
        build.parse_args(["study", "--dataset", "mnist", "--seeds", "\u00b2", "--out", "runs/x"])
    assert "expected non-negative integers separated by commas" in capsys.readouterr().err
    for bad in ("0,,1", "a", "0,0", "-1", "1e3", ""):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["study", "--dataset", "mnist", "--seeds", bad, "--out", "runs/x"])
    assert "expected distinct seeds" in capsys.readouterr().err
    assert main(["study", "--dataset", "mnist", "--seed", "1", "--seeds", "0,1", "--out", "runs/x"]) == 2
    assert "give --seed or --seeds, not both" in capsys.readouterr().err


def test_two_seeds_end_to_end(tmp_path, capsys):
    """``--seeds 0,1`` on tiny data: each seed in its folder, the aggregate report, the printed
    table; a second call reuses every seed's stages."""
    from minidl.study import run_seeds
    arrays = (synthetic(128), synthetic(40, seed=1))
    out = str(tmp_path / "study")
    agg = run_seeds("mnist", "quick", [0, 1], out_dir=out, arrays=arrays, overrides=TINY, progress=False)
    for s in (0, 1):
        seed_report = open(os.path.join(out, f"seed-{s}", "report.md")).read()
        assert f", seed {s}\n" in seed_report and f"--seed {s} --data-dir" in seed_report   # says which seed it is
        assert json.load(open(os.path.join(out, f"seed-{s}", "metrics.json")))["seed"] == s
        assert os.path.getsize(os.path.join(out, f"seed-{s}", "spectrum_sensitivity.png")) > 0
    saved = json.load(open(os.path.join(out, "metrics.json")))
    assert saved["seeds"] == [0, 1] and saved["aggregate"]["claims"][0]["n"] == 2
    assert len(saved["aggregate"]["spectrum"]["natural"]) == 24
    report_text = open(os.path.join(out, "report.md")).read()
    assert "seeds 0, 1" in report_text and "Spectrum sensitivity over seeds" in report_text
    printed = capsys.readouterr().out
    assert printed.rstrip().endswith(f"report: {os.path.join(out, 'report.md')}")
    seed0 = json.load(open(os.path.join(out, "seed-0", "metrics.json")))
    assert seed0["uap"]["natural"] != json.load(open(os.path.join(out, "seed-1", "metrics.json")))["uap"]["natural"]
    again = run_seeds("mnist", "quick", [0, 1], out_dir=out, arrays=arrays, overrides=TINY, progress=True)
    printed = capsys.readouterr().out
    assert "training the" not in printed and printed.count("spectrum: reusing") == 2
    assert again["claims"] == agg["claims"]
