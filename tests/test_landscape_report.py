"""The landscape part of the study's report on constructed inputs: the verdict of one row (every
branch), the summary of how verdicts move with the radius and the norm, the rows that test the
talk's claims, and the summaries the analysis stores."""
import math

import numpy as np
import pytest

from minidl.adversarial.landscape import MEASURES
from minidl.study import analyses, report
from minidl.study.presets import get_preset
from minidl.study.report import (LANDSCAPE_WORDS, LANDSCAPE_Z, NOT_JUDGED, TALK_LANDSCAPE_CLAIMS, definition_summary,
                                 findings, landscape_section, row_verdict, smoother_model, talk_row)


@pytest.mark.parametrize("way, difference, expected", [
    ("higher", 0.05, "adversarial"), ("higher", -0.05, "natural"), ("higher", 0.01, "neither"),
    ("higher", -0.01, "neither"), ("lower", -0.05, "adversarial"), ("lower", 0.05, "natural"),
    ("lower", 0.01, "neither"), ("higher", 0.0, "neither")])
def test_smoother_model_branches(way, difference, expected):
    """se 0.01: a difference beyond LANDSCAPE_Z (2) standard errors in the smoother direction
    picks the adversarial model, the other way the natural one, anything in between neither."""
    assert smoother_model(difference, 0.01, way) == expected


def test_smoother_model_at_the_threshold_and_without_numbers():
    se = 0.01
    assert smoother_model(LANDSCAPE_Z * se, se, "higher") == "neither"          # strict on both sides
    assert smoother_model(LANDSCAPE_Z * se * 1.001, se, "higher") == "adversarial"
    assert smoother_model(-LANDSCAPE_Z * se, se, "lower") == "neither"
    assert smoother_model(-LANDSCAPE_Z * se * 1.001, se, "lower") == "adversarial"
    assert smoother_model(0.0, 0.0, "higher") == "neither"                      # identical models
    assert smoother_model(1e-9, 0.0, "higher") == "adversarial"
    for d, se in ((None, 0.1), (0.1, None), (math.nan, 0.1), (0.1, math.nan)):
        assert smoother_model(d, se, "higher") is None
    with pytest.raises(ValueError, match="smoother_model: smoother must be 'higher' or 'lower', got 'up'"):
        smoother_model(0.1, 0.01, "up")


def row(measure, norm, fraction, difference, se=0.01, nat=0.5, radius=None):
    summary = lambda v: {"mean": v, "median": v, "se": se, "n": 20}
    adv = None if difference is None else nat + difference
    return {"measure": measure, "norm": norm, "fraction": fraction, "radius": radius or fraction,
            "smoother": MEASURES[measure][0], "natural": summary(nat), "adversarial": summary(adv),
            "difference": {"mean": difference, "se": se, "n": 20}}


def test_row_verdict_words():
    assert row_verdict(row("ball_cosine", "inf", 1.0, 0.1)) == "reproduces"
    assert row_verdict(row("ball_cosine", "inf", 1.0, -0.1)).startswith("does not reproduce")
    assert row_verdict(row("taylor_remainder", "2", 1.0, -0.1)) == "reproduces"   # lower is smoother
    assert row_verdict(row("taylor_remainder", "2", 1.0, 0.1)) == LANDSCAPE_WORDS["natural"]
    assert row_verdict(row("straightness", "2", 1.0, 0.0)) == LANDSCAPE_WORDS["neither"]
    assert row_verdict(row("straightness", "2", 1.0, None)) == NOT_JUDGED


def _summary_line(lines, measure):
    return next(line for line in lines if line.startswith(f"- `{measure}`"))


def test_definition_summary_says_how_the_verdict_moves():
    rows = ([row("ball_cosine", n, f, 0.1) for n in ("inf", "2") for f in (0.5, 1.0)]            # the same everywhere
            + [row("centre_cosine", n, f, d) for n in ("inf", "2") for f, d in ((0.5, 0.1), (1.0, -0.1))]  # radius
            + [row("straightness", n, f, 0.1 if n == "inf" else 0.0) for n in ("inf", "2") for f in (0.5, 1.0)]
            + [row("taylor_remainder", "inf", 0.5, -0.1), row("taylor_remainder", "inf", 1.0, 0.0),
               row("taylor_remainder", "2", 0.5, 0.1), row("taylor_remainder", "2", 1.0, 0.1)]     # both
            + [row("path_initial_cosine", n, f, -0.1) for n in ("inf", "2") for f in (0.5, 1.0)])
    lines = definition_summary(rows)
    assert "the same at every radius and in both balls" in _summary_line(lines, "ball_cosine")
    assert "changes with the radius (" in _summary_line(lines, "centre_cosine")
    assert "changes with the norm (" in _summary_line(lines, "straightness")
    assert "changes with the radius and with the norm" in _summary_line(lines, "taylor_remainder")
    assert "L-inf r = 0.5: adversarial smoother; L-inf r = 1: natural smoother" in _summary_line(lines, "centre_cosine")
    assert lines[-3] == "- Every row reproduces the talk's direction for: `ball_cosine`."
    assert lines[-2] == "- Every row finds the natural model smoother for: `path_initial_cosine`."
    assert lines[-1] == ("- The verdict depends on the radius, the norm or the scatter for: `centre_cosine`, "
                         "`straightness`, `taylor_remainder`.")
    none = definition_summary([row("ball_cosine", "inf", 1.0, 0.0)])
    assert none[-3].endswith("for: no measure.") and none[-2].endswith("for: no measure.")


def _landscape(rows):
    return {"rows": rows, "natural": {"straightness_mean": 0.7, "cosine_mean": 0.6},
            "adversarial": {"straightness_mean": 0.5, "cosine_mean": 0.4},
            "settings": {"n_images": 20, "radii_linf": [0.15, 0.3], "radii_l2": [1.0, 2.0], "fractions": [0.5, 1.0],
                         "cos_points": 16, "steps": 20, "alpha_rule": "alpha = 2.5 * r / steps", "directions": 4,
                         "cos_eps_linf": 0.3, "trajectory_eps_l2": 2.0,
                         "definitions": {k: v[1] for k, v in MEASURES.items()}},
            "figures": ["landscape_measures.png"]}


def test_talk_rows_and_findings():
    rows = [row("ball_cosine", "inf", 0.5, 0.1, radius=0.15), row("ball_cosine", "inf", 1.0, -0.1, radius=0.3),
            row("ball_cosine", "2", 1.0, 0.1, radius=2.0), row("straightness", "2", 1.0, 0.0, radius=2.0)]
    assert talk_row(rows, "ball_cosine", "inf") is rows[1]
    assert talk_row(rows, "straightness", "inf") is None
    uap = {"ratio_s1_s2": 1.2, "ratio_s1_s5": 1.5,
           "fooling": {"svd v1": {"fooling_rate": 0.3}, "random": {"fooling_rate": 0.01}}}
    m = {"dataset": "mnist", "uap": {"natural": uap, "adversarial": uap}, "landscape": _landscape(rows)}
    lines = findings(m)
    gradient = next(line for line in lines if "more similar" in line)
    assert "(`ball_cosine`, L-inf r = 0.3): mean 0.500 (natural) vs 0.400 (adversarial) -> does not reproduce" in gradient
    straight = next(line for line in lines if "straightens" in line)
    assert straight.endswith(LANDSCAPE_WORDS["neither"] + ".")
    assert lines[-1] == ("- *The landscape by every measure* (4 rows: measures x balls x radii, see \"Loss landscape\"): "
                         f"2 reproduces, 1 {LANDSCAPE_WORDS['natural']}, 1 {LANDSCAPE_WORDS['neither']}.")
    m["landscape"]["rows"] = rows[:1]
    missing = [line for line in findings(m) if NOT_JUDGED in line]
    assert len(missing) == len(TALK_LANDSCAPE_CLAIMS)


def test_landscape_section_has_a_row_per_measure_ball_and_radius():
    rows = [row(measure, n, f, 0.1) for measure in MEASURES for n in ("inf", "2") for f in (0.5, 1.0)]
    text = "\n".join(landscape_section(_landscape(rows)))
    table = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(table) == len(MEASURES) + len(rows)      # the definitions, then one line per row
    assert "| `taylor_remainder` | L2 r = 1 | 0.5 (0.5) | 0.6 (0.6) | 0.1 (0.01) | does not reproduce" in text
    assert "| `ball_cosine` | L-inf r = 0.5 | 0.5 (0.5) | 0.6 (0.6) | 0.1 (0.01) | reproduces |" in text
    assert "**Which definition tests the talk's claim.**" in text and "![landscape_measures.png]" in text


def test_summaries_and_fractions_of_the_analysis():
    s = analyses._summary([1.0, 2.0, 3.0, np.nan])
    assert s == {"mean": 2.0, "median": 2.0, "se": pytest.approx(1 / math.sqrt(3)), "n": 3}
    assert analyses._summary([4.0])["se"] is None and analyses._summary([np.nan])["mean"] is None
    assert analyses.landscape_fractions(get_preset("mnist", "quick")) == [0.25, 0.5, 1.0]
    assert analyses.landscape_fractions(get_preset("mnist", "quick", landscape_fractions=(0.5,))) == [0.5, 1.0]
    assert report.LANDSCAPE_Z > 0


def test_landscape_analysis_rows_on_two_tiny_models(tmp_path):
    """A row per (measure, norm, radius); the difference is adversarial - natural over the same
    images; the talk's summary keys equal the talk's rows; every figure is written."""
    import minidl
    from minidl import nn
    models = {}
    for name, seed in (("natural", 0), ("adversarial", 1)):
        minidl.manual_seed(seed)
        models[name] = {"model": nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))}
    rng = np.random.default_rng(0)
    data = (rng.random((4, 1, 4, 4)).astype(np.float32), np.array([0, 1, 2, 0]))
    p = get_preset("mnist", "quick", landscape_n=3, landscape_steps=3, cos_points=3, landscape_directions=1)
    out = analyses.landscape_analysis(p, models, data, str(tmp_path), seed=0)
    assert len(out["rows"]) == len(MEASURES) * 2 * 3 + 1        # and one curvature row
    assert {(r["norm"], r["radius"]) for r in out["rows"]} == {("inf", 0.075), ("inf", 0.15), ("inf", 0.3),
                                                               ("2", 0.5), ("2", 1.0), ("2", 2.0), ("-", None)}
    curv = out["rows"][-1]
    assert (curv["measure"], curv["smoother"], curv["fraction"]) == ("input_hessian", "lower", 1.0)
    assert curv["natural"]["n"] == 3 and curv["natural"]["mean"] > 0
    assert out["settings"]["hessian_iters"] == analyses.HESSIAN_ITERS and "input_hessian" in out["settings"]["definitions"]
    for r in out["rows"][:-1]:
        assert r["smoother"] == MEASURES[r["measure"]][0]
        if r["natural"]["n"] == r["adversarial"]["n"] == r["difference"]["n"] == 3:
            assert r["difference"]["mean"] == pytest.approx(r["adversarial"]["mean"] - r["natural"]["mean"], abs=1e-12)
    cos = talk_row(out["rows"], "ball_cosine", "inf")
    straight = talk_row(out["rows"], "straightness", "2")
    for name in ("natural", "adversarial"):
        assert out[name]["cosine_mean"] == pytest.approx(cos[name]["mean"])
        assert out[name]["straightness_mean"] == pytest.approx(straight[name]["mean"])
    for f in out["figures"]:
        assert (tmp_path / f).stat().st_size > 1000, f


# --- the input-Hessian curvature row ------------------------------------------------------------
def _linear(scale, seed=3):
    """A linear classifier z = s (W x + b) on 4x4 images: the input Hessian of its cross-entropy
    is H = s^2 W^T (diag p - p p^T) W with p = softmax(z), known in closed form."""
    import minidl
    from minidl import nn
    minidl.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    for prm in net.parameters():
        prm.array = (prm.array * scale).astype(np.float64)
    return net


def _closed_form_top(net, images):
    w, b = (prm.array for prm in net.parameters())
    out = []
    for x in images.reshape(len(images), -1):
        z = w @ x + b
        p = np.exp(z - z.max())
        p /= p.sum()
        out.append(np.abs(np.linalg.eigvalsh(w.T @ (np.diag(p) - np.outer(p, p)) @ w)).max())
    return np.array(out)


def test_curvature_row_matches_the_closed_form_and_judges_both_ways():
    """Natural and adversarial swapped: the flatter model (weights x 0.1, its curvature ~100 times
    smaller) is found smoother whichever role it plays; the row's means equal the closed form."""
    rng = np.random.default_rng(0)
    images, labels = rng.random((6, 1, 4, 4)), np.array([0, 1, 2, 0, 1, 2])
    sharp, flat = _linear(1.0), _linear(0.1)
    row_ = analyses.curvature_row({"natural": {"model": sharp}, "adversarial": {"model": flat}}, images, labels,
                                  seed=0, iters=100)
    want_sharp, want_flat = _closed_form_top(sharp, images), _closed_form_top(flat, images)
    assert row_["natural"]["mean"] == pytest.approx(want_sharp.mean(), rel=1e-6)
    assert row_["adversarial"]["mean"] == pytest.approx(want_flat.mean(), rel=1e-6)
    assert row_["difference"]["mean"] == pytest.approx((want_flat - want_sharp).mean(), rel=1e-6)
    assert (row_["norm"], row_["radius"], row_["smoother"]) == ("-", None, "lower")
    assert row_verdict(row_) == "reproduces"
    swapped = analyses.curvature_row({"natural": {"model": flat}, "adversarial": {"model": sharp}}, images, labels,
                                     seed=0, iters=100)
    assert row_verdict(swapped) == LANDSCAPE_WORDS["natural"]
    same = analyses.curvature_row({"natural": {"model": sharp}, "adversarial": {"model": sharp}}, images, labels,
                                  seed=0)
    assert same["difference"]["mean"] == 0.0 and row_verdict(same) == LANDSCAPE_WORDS["neither"]


def _curvature(difference, nat=2.0, se=0.1):
    summary = lambda v: {"mean": v, "median": v, "se": se, "n": 20}
    return {"measure": "input_hessian", "norm": "-", "radius": None, "fraction": 1.0, "smoother": "lower",
            "natural": summary(nat), "adversarial": summary(nat + difference),
            "difference": {"mean": difference, "se": se, "n": 20}}


def test_the_report_renders_the_curvature_row(tmp_path):
    rows = [row(measure, n, f, 0.1) for measure in MEASURES for n in ("inf", "2") for f in (0.5, 1.0)]
    rows.append(_curvature(-1.0))
    ls = _landscape(rows)
    ls["settings"]["definitions"]["input_hessian"] = analyses.CURVATURE_DEFINITION
    ls["settings"].update(hessian_k=1, hessian_iters=20)
    text = "\n".join(landscape_section(ls))
    assert "| `input_hessian` | at the image | 2 (2) | 1 (1) | -1 (0.1) | reproduces |" in text
    assert "Moosavi-Dezfooli et al., CVPR 2019" in text and "20 power iterations" in text
    definition = next(line for line in text.splitlines() if line.startswith("| `input_hessian` | largest"))
    assert definition.replace("\\|", "").count("|") == 4 and "\\|lambda_1\\|" in definition   # escaped bars
    lines = definition_summary(rows)
    assert _summary_line(lines, "input_hessian") == ("- `input_hessian`: one row, taken at the image (no ball, no "
                                                      "radius) (at the image: adversarial smoother).")
    assert "`input_hessian`" in lines[-3]
    assert "`input_hessian`" in definition_summary([_curvature(1.0)])[-2]       # natural smoother
    from minidl.adversarial.plots import plot_landscape_measures
    plot_landscape_measures(rows[-3:], str(tmp_path / "m.png"))      # a ball measure and the curvature point
    assert (tmp_path / "m.png").stat().st_size > 1000
