"""Spectrum sensitivity (issue 33): does the talk's picture of the singular values hold under the
talk's own definition of the matrix, and under the others one could have meant?

A *definition* is one way of building the matrix M whose rows are per-image vectors:

* the source of a row: the image's L2 PGD perturbation x_adv - x (``"pgd"``, at one of three radii,
  see :func:`minidl.study.presets.spectrum_settings`), or its loss gradient d loss / dx divided by
  its L2 norm (``"gradient"``; it does not depend on a radius, so it is taken once and its top
  vector scaled to the preset's radius);
* the grouping (:data:`GROUPINGS`): every image in one matrix (what the study did before), one
  matrix per true class (the talk: "one perturbation for all images in a particular class"), or
  one matrix per adversarial label, the class PGD's perturbation at that radius reaches
  (images PGD did not move out of their class have no adversarial label and are left out);
* centred (rows minus their mean: the principal components) or not.

For each matrix: its top-5 singular values s1..s5, s1/s2 and s1/s5, and the fooling rate of its
top right singular vector v1 (scaled to the radius, signed to raise the loss on the matrix's
images, :func:`minidl.adversarial.uap.uap_svd`) against a random direction of the same norm, both
on held-out test images: for a true-class matrix the held-out images of that class, for an
adversarial-label matrix those of every other class, else all of them. A per-class definition
holds ten such matrices; its summary gives each number's median and range over them (matrices
with fewer than ``min_rows`` rows are left out and counted). The verdicts are taken in
``report.py`` from these numbers.
"""
import os

import numpy

from ..adversarial import uap
from ..adversarial.plots import _pyplot, _save
from .presets import spectrum_settings
from .report import CLOSE_S1_S5, DOMINANT_S1_S2, definition_label

GROUPINGS = ("all", "true_class", "adversarial_label")
# The talk's singular values (Bhat and Tsipras, MIT PRIMES 2019), drawn on the figure.
TALK_SPECTRA = {"cifar10": (54.4, 4.5, 4.1, 3.4, 3.0), "mnist": (2.7, 2.5, 2.1, 2.0, 1.8)}
FIGURE = "spectrum_sensitivity.png"
# The random baseline's generator is the run's seed plus this, so it differs from the UAP
# stage's random direction (seeded by the seed itself) and the two baselines are independent.
RANDOM_SEED_OFFSET = 1000


def group_rows(grouping, labels, adv_labels, min_rows):
    """The rows of each matrix of ``grouping``: ({group name: row indices}, {left-out group:
    its number of rows}). ``labels`` are the true classes, ``adv_labels`` the classes the
    attack reached (only rows with adv_labels != labels have an adversarial label)."""
    labels = numpy.asarray(labels)
    if grouping == "all":
        return {"all": numpy.arange(len(labels))}, {}
    if grouping == "true_class":
        keys, mask = labels, numpy.ones(len(labels), dtype=bool)
    elif grouping == "adversarial_label":
        adv_labels = numpy.asarray(adv_labels)
        if adv_labels.shape != labels.shape:
            raise ValueError(f"group_rows: adv_labels must have shape {labels.shape}, got {adv_labels.shape}")
        keys, mask = adv_labels, adv_labels != labels
    else:
        raise ValueError(f"group_rows: grouping must be one of {GROUPINGS}, got {grouping!r}")
    groups, skipped = {}, {}
    for c in numpy.unique(keys[mask]):
        idx = numpy.nonzero(mask & (keys == c))[0]
        if len(idx) >= min_rows:
            groups[str(int(c))] = idx
        else:
            skipped[str(int(c))] = int(len(idx))
    return groups, skipped


def spectrum_numbers(singular_values):
    """top-5 singular values, s1/s2 and s1/s5 of a spectrum (descending); a ratio is None where
    there are too few values or its denominator is 0."""
    s = [float(v) for v in singular_values]
    ratio = lambda i: s[0] / s[i] if len(s) > i and s[i] > 0 else None
    return {"top": s[:5], "s1_s2": ratio(1), "s1_s5": ratio(4)}


def spread(values):
    """median, min and max of the finite entries of ``values`` (Nones when there are none)."""
    v = numpy.asarray([x for x in values if x is not None], dtype=numpy.float64)
    v = v[numpy.isfinite(v)]
    if not len(v):
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": float(numpy.median(v)), "min": float(v.min()), "max": float(v.max()), "n": int(len(v))}


def test_selection(grouping, group, test_labels):
    """Which held-out images a group's v1 is judged on (a boolean mask over ``test_labels``)."""
    test_labels = numpy.asarray(test_labels)
    if grouping == "all":
        return numpy.ones(len(test_labels), dtype=bool)
    c = int(group)
    return test_labels == c if grouping == "true_class" else test_labels != c


def measure_definition(model, matrix, images, labels, adv_labels, test, random_fooled, source, grouping, centred,
                       radius, min_rows, clean_test=None):
    """The numbers of one definition (see the module's docstring): per group its rows, top-5,
    s1/s2, s1/s5, v1's and the random direction's fooling rate on its held-out images; and
    their median and range over the groups. ``random_fooled`` is the random direction's
    per-image "prediction changed" on all of ``test`` (the same direction for every group);
    ``clean_test`` the model's classes on the clean test images, when known."""
    groups, skipped = group_rows(grouping, labels, adv_labels, min_rows)
    test_x, test_y = test
    per = {}
    for g, idx in groups.items():
        svd = uap.uap_svd(matrix[idx], k=1, eps=radius, center=centred, model=model, images=images[idx],
                          labels=labels[idx])
        sel = test_selection(grouping, g, test_y)
        entry = {"rows": int(len(idx)), **spectrum_numbers(svd.singular_values), "n_test": int(sel.sum()),
                 "v1_fooling": None, "random_fooling": None}
        if sel.any():
            entry["v1_fooling"] = uap.fooling_rate(
                model, test_x[sel], test_y[sel], svd.vectors[0],
                clean_predictions=None if clean_test is None else numpy.asarray(clean_test)[sel])["fooling_rate"]
            entry["random_fooling"] = float(numpy.asarray(random_fooled)[sel].mean())
        per[g] = entry
    summary = {k: spread([e[k] for e in per.values()]) for k in ("s1_s2", "s1_s5", "v1_fooling", "random_fooling")}
    tops = [e["top"] for e in per.values() if len(e["top"]) == 5]
    summary["top"] = [float(v) for v in numpy.median(numpy.asarray(tops), axis=0)] if tops else []
    return {"source": source, "grouping": grouping, "centred": bool(centred), "radius": float(radius),
            "matrix_rows": int(len(labels)), "groups": per, "skipped_groups": skipped, "summary": summary}


def perturbation_arrays(stages, name, model, mtime, images, labels, eps, steps, progress=False):
    """The per-image L2 PGD perturbations of ``images`` at radius ``eps`` (rows, float32) and the
    class each perturbed image is predicted as (the adversarial label), saved in the stage
    folder so that the UAP and spectrum stages share them (``stages`` None: no saving)."""
    def compute():
        matrix, adv = uap.per_example_perturbations(model, images, labels, eps=eps, steps=steps, norm="2",
                                                    progress=progress, return_labels=True)
        return {"matrix": matrix, "adv_labels": adv}
    if stages is None:
        return compute()
    settings = {"model": name, "checkpoint_mtime": mtime, "eps": float(eps), "steps": int(steps),
                "n": int(len(labels)), "images_sum": float(numpy.asarray(images, dtype=numpy.float64).sum())}
    return stages.arrays(f"perturbations-{name}-r{eps:.4g}-n{len(labels)}", settings, compute)


def spectrum_analysis(p, dataset, models, uap_train, uap_test, out_dir, stages=None, progress=False, seed=0):
    """Every definition's numbers for the natural and the adversarial model, and the figure of
    s1/s2 (on MNIST also s1/s5) by definition. The PGD matrix at the preset's radius is the UAP stage's (shared
    through ``stages``); the other radii use the first ``rows`` images of ``spectrum_settings``."""
    st = spectrum_settings(p)
    shape = uap_train[0].shape[1:]
    rng = numpy.random.default_rng(seed + RANDOM_SEED_OFFSET)
    out = {"settings": st, "dataset": dataset, "talk": list(TALK_SPECTRA.get(dataset, ())),
           "n_test": int(len(uap_test[1])), "models": {}}
    for name in ("natural", "adversarial"):
        model, mtime = models[name]["model"], models[name].get("checkpoint_mtime")
        definitions, preset_adv = [], None
        random_fooled = {}
        clean = None   # the model's classes on the held-out images: judged once, for every v1
        for radius, n in zip(st["radii"], st["rows"]):
            x, y = uap_train[0][:n], uap_train[1][:n]
            arrays = perturbation_arrays(stages, name, model, mtime, x, y, radius, st["steps"], progress)
            if radius == st["preset_radius"]:
                preset_adv = arrays["adv_labels"]
            direction = uap.random_direction(shape, radius, rng=rng)
            judged = uap.fooling_rate(model, *uap_test, direction, clean_predictions=clean)
            random_fooled[radius], clean = judged["fooled"], judged["clean_predictions"]
            for grouping in GROUPINGS:
                for centred in (False, True):
                    definitions.append(measure_definition(
                        model, arrays["matrix"], x, y, arrays["adv_labels"], uap_test, random_fooled[radius], "pgd",
                        grouping, centred, radius, st["min_rows"], clean))
        grads = uap.per_example_gradients(model, *uap_train, normalize=True, progress=progress)
        for grouping in GROUPINGS:
            for centred in (False, True):
                definitions.append(measure_definition(
                    model, grads, uap_train[0], uap_train[1], preset_adv, uap_test,
                    random_fooled[st["preset_radius"]], "gradient", grouping, centred, st["preset_radius"],
                    st["min_rows"], clean))
        out["models"][name] = definitions
    out["figure"] = os.path.basename(plot_ratios(out, os.path.join(out_dir, FIGURE)))
    return out


def plot_ratios(result, path):
    """s1/s2 of every definition (median over the groups, bars: the range), one marker per
    model, with the "dominant" threshold and the talk's own s1/s2 as horizontal lines. On MNIST,
    whose verdict reads s1/s5 (several close directions), a second panel draws s1/s5 with its
    threshold and the talk's s1/s5 the same way."""
    plt = _pyplot()
    models = list(result["models"])
    labels = [definition_label(d) for d in result["models"][models[0]]]
    talk = result.get("talk") or []
    panels = [("s1_s2", "s1 / s2", DOMINANT_S1_S2, "'dominant' threshold", 1)]
    if result.get("dataset") == "mnist":
        panels.append(("s1_s5", "s1 / s5", CLOSE_S1_S5, "'close' threshold (the verdict's)", 4))
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(8, 0.42 * len(labels)), 3.0 + 2.5 * len(panels)),
                             sharex=True, squeeze=False)
    xs = numpy.arange(len(labels))
    for ax, (key, name_ratio, threshold, words, k) in zip(axes[:, 0], panels):
        for j, name in enumerate(models):
            su = [d["summary"][key] for d in result["models"][name]]
            med = numpy.array([x["median"] if x["median"] is not None else numpy.nan for x in su], float)
            lo = numpy.array([x["min"] if x["min"] is not None else numpy.nan for x in su], float)
            hi = numpy.array([x["max"] if x["max"] is not None else numpy.nan for x in su], float)
            offset = (j - (len(models) - 1) / 2) * 0.25
            ax.errorbar(xs + offset, med, yerr=[numpy.nan_to_num(med - lo), numpy.nan_to_num(hi - med)], fmt="o",
                        capsize=2, label=name)
        ax.axhline(threshold, color="grey", linestyle="--", label=f"{words} ({threshold:g})")
        if len(talk) > k:
            ax.axhline(talk[0] / talk[k], color="black", linestyle=":",
                       label=f"the talk's {name_ratio.replace(' ', '')} on {result.get('dataset')} "
                             f"({talk[0] / talk[k]:.2f})")
        ax.set_yscale("log")
        from matplotlib.ticker import ScalarFormatter   # matplotlib is imported only where a figure is drawn
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.set_ylabel(f"{name_ratio} (median over the matrices; bars: range)", fontsize=8)
        ax.legend(fontsize=7)
    axes[-1, 0].set_xticks(xs)
    axes[-1, 0].set_xticklabels(labels, rotation=75, ha="right", fontsize=7)
    axes[0, 0].set_title("Spectrum sensitivity: " + " and ".join(p[1] for p in panels) + " by definition of the matrix")
    fig.tight_layout()
    return _save(fig, path, plt)
