"""The study's measurements, each a function of the preset and the trained models that returns
plain JSON values (the stage cache stores them): accuracy under attack, the Random Self-Ensemble
with and without EOT, the UAP/SVD analysis and the loss landscape (the last two also draw their
figures into the output folder)."""
import os

import numpy

from ..adversarial import fgsm, landscape, pgd, plots, robust_accuracy, sanity_checks, uap
from ..adversarial.attacks import PGD_ALPHA_FACTOR, pgd_alpha
from ..adversarial.autoattack import autoattack_accuracy
from ..adversarial.rse_eval import RSEConfig, evaluate_rse
from ..nn.noise import noise_layers
from .spectrum import perturbation_arrays

# Images of the evaluation set used for the sanity checks: each check runs three attacks, so
# a slice keeps them cheap while 100 points still show a PGD that is weaker than FGSM.
SANITY_N = 100
# The "huge eps" check: an L-inf radius of 1 covers the whole [0, 1] image box, so any input
# can become any image and accuracy must fall to chance; 0.1 is a step that reaches across it
# within the preset's PGD steps.
HUGE_EPS = 1.0
HUGE_ALPHA = 0.1


def accuracy_table(p, models, data, num_classes, progress, seed=0):
    """Clean, FGSM and PGD accuracy of the natural and adversarial models at each eps, with the
    sanity checks (PGD at least as strong as FGSM; accuracy near chance at a huge eps), and
    AutoAttack at the largest L-inf eps on the first ``p.autoattack_n`` images (:func:`autoattack_row`)."""
    rows = {}
    aa_eps = max(p.linf_eps)
    for name in ("natural", "adversarial"):
        model = models[name]["model"]
        row = {"clean": robust_accuracy(model, data, lambda m, x, y: x, progress=False)["clean_accuracy"]}
        points = {}   # per-image results of the attacks at AutoAttack's eps
        for norm, eps_list in (("inf", p.linf_eps), ("2", (p.l2_eps,))):
            for eps in eps_list:
                alpha = pgd_alpha(eps, p.pgd_steps)
                key = f"L{norm}-{eps:.4g}"
                f_attack = lambda m, x, y, e=eps, n=norm: fgsm(m, x, y, e, norm=n)
                p_attack = lambda m, x, y, e=eps, a=alpha, n=norm: pgd(m, x, y, e, a, p.pgd_steps, norm=n,
                                                                       restarts=p.pgd_restarts)
                for attack, run in (("fgsm", f_attack), ("pgd", p_attack)):
                    result = robust_accuracy(model, data, run, progress=progress, desc=f"{name} {attack} {key}")
                    row[f"{attack} {key}"] = result["robust_accuracy"]
                    if norm == "inf" and eps == aa_eps:
                        points[f"{attack} {key}"] = result["robust_correct"]
        eps = max(p.linf_eps)
        check_data = (data[0][:SANITY_N], data[1][:SANITY_N])
        warnings, numbers = sanity_checks(
            model, check_data,
            lambda m, x, y: pgd(m, x, y, eps, pgd_alpha(eps, p.pgd_steps), p.pgd_steps),
            fgsm_attack=lambda m, x, y: fgsm(m, x, y, eps),
            huge_eps_attack=lambda m, x, y: pgd(m, x, y, HUGE_EPS, HUGE_ALPHA, p.pgd_steps), num_classes=num_classes)
        row["warnings"], row["checks"] = warnings, numbers
        if p.autoattack_n:
            row["autoattack"] = autoattack_row(model, data, aa_eps, p.autoattack_n, points, seed, progress,
                                               desc=f"{name} autoattack")
        rows[name] = row
    return {"rows": rows, "n": int(len(data[1])), "pgd_steps": p.pgd_steps, "pgd_restarts": p.pgd_restarts,
            "alpha_rule": f"alpha = {PGD_ALPHA_FACTOR} * eps / steps"}


def autoattack_row(model, data, eps, n, others, seed, progress, desc="autoattack"):
    """AutoAttack (standard: APGD-CE, APGD-T, FAB-T, Square, the paper's settings) at L-inf
    ``eps`` on the first ``n`` images of ``data``, with its per-stage breakdown and warnings.

    ``others`` maps the table's other attacks at the same eps to their per-image results on
    ``data`` (robust_correct); on the same ``n`` images the row holds each attack's accuracy
    ("same_images") and the per-image worst case over all of them ("worst_case", see
    :func:`worst_case`): the robust number the report gives."""
    sub = (data[0][:n], data[1][:n])
    r = autoattack_accuracy(model, sub, eps, norm="inf", version="standard", seed=seed, progress=progress, desc=desc)
    # AutoAttack first, so that a tie names it as the strongest attack
    points = {"autoattack": r["robust_correct"], **{k: numpy.asarray(v)[:r["n"]] for k, v in others.items()}}
    same = {k: float(v.mean()) for k, v in points.items()}
    return {"eps": eps, "norm": "inf", "version": "standard", "n": r["n"], "clean": r["clean_accuracy"],
            "robust_accuracy": r["robust_accuracy"], "breakdown": r["breakdown"], "warnings": r["warnings"],
            "same_images": same, "strongest": min(same, key=same.get), "worst_case": worst_case(points)}


def worst_case(points):
    """The fraction of images that every attack leaves correctly classified: ``points`` maps
    attack names to per-image booleans (True = still correct) of equal length."""
    lengths = {len(v) for v in points.values()}
    if len(lengths) != 1:
        raise ValueError(f"worst_case: expected per-image results of one length, got lengths {sorted(lengths)}")
    survived = numpy.logical_and.reduce([numpy.asarray(v, dtype=bool) for v in points.values()])
    return float(survived.mean()) if survived.size else float("nan")


def rse_table(p, rse_entry, data, num_classes, progress):
    """The RSE model judged by its ensemble prediction, against PGD with the gradient of one noisy
    pass (as the original paper did) and with expectation over noise (the honest number)."""
    model = rse_entry["model"]
    sigmas = [layer.sigma for layer in noise_layers(model)]
    out = {"n": int(len(data[1])), "ensemble": p.rse_n, "eot_samples": p.rse_eot, "sigmas": sigmas, "rows": {}}
    for norm, eps in [("inf", e) for e in p.linf_eps] + [("2", p.l2_eps)]:
        result = evaluate_rse(model, data, RSEConfig(eps=eps, alpha=pgd_alpha(eps, p.pgd_steps), steps=p.pgd_steps,
                                                     norm=norm, n_ensemble=p.rse_n, eot_samples=p.rse_eot,
                                                     num_classes=num_classes), progress=progress)
        out["rows"][f"L{norm}-{eps:.4g}"] = {k: result[k] for k in (
            "clean_accuracy", "pgd_single_pass_accuracy", "pgd_eot_accuracy", "robust_accuracy", "warnings")}
    return out


def uap_analysis(p, models, uap_train, uap_test, out_dir, progress, seed, stages=None):
    """Spectra, SVD/average/iterative/random UAPs and their fooling rates, for both models.
    With ``stages`` the perturbation matrices are saved for the spectrum stage to reuse."""
    result, spectra, vectors = {}, {}, {}
    rng = numpy.random.default_rng(seed)
    shape = uap_train[0].shape[1:]
    for name in ("natural", "adversarial"):
        model = models[name]["model"]
        matrix = perturbation_arrays(stages, name, model, models[name].get("checkpoint_mtime"), *uap_train,
                                     p.l2_eps, p.uap_steps, progress)["matrix"]
        spectrum = uap.singular_spectrum(matrix)
        svd = uap.uap_svd(matrix, k=p.uap_k, eps=p.l2_eps, model=model, images=uap_train[0], labels=uap_train[1])
        svd_centered = uap.uap_svd(matrix, k=1, eps=p.l2_eps, center=True, model=model, images=uap_train[0],
                                   labels=uap_train[1])
        average = uap.uap_average(matrix, p.l2_eps)
        iterative = uap.iterative_uap(model, *uap_train, eps=p.l2_eps, norm="2", max_passes=p.iterative_passes,
                                      rng=seed, progress=progress)
        random_v = uap.random_direction(shape, p.l2_eps, rng=rng)
        candidates = {f"svd v{i + 1}": svd.vectors[i].reshape(shape) for i in range(len(svd.vectors))}
        candidates.update({"svd v1 (centred)": svd_centered.vectors[0].reshape(shape),
                           "average": average.reshape(shape),
                           "iterative UAP": numpy.asarray(iterative.perturbation).reshape(shape),
                           "random": numpy.asarray(random_v).reshape(shape)})
        fooling = {}
        for label, v in candidates.items():
            r = uap.fooling_rate(model, *uap_test, v)
            fooling[label] = {"fooling_rate": r["fooling_rate"], "accuracy": r["accuracy"]}
        result[name] = {"top_singular_values": [float(s) for s in spectrum[:10]],
                        "ratio_s1_s2": float(spectrum[0] / spectrum[1]),
                        "ratio_s1_s5": float(spectrum[0] / spectrum[4]) if len(spectrum) > 4 else None,
                        "clean_accuracy": uap.fooling_rate(model, *uap_test, numpy.zeros(shape))["accuracy"],
                        "fooling": fooling, "svd_sign_method": svd.sign_method,
                        "matrix_rows": int(matrix.shape[0]), "centered_rows_used_for_main_svd": False}
        spectra[name] = spectrum
        vectors[name] = svd
    figures = {
        "spectra": plots.plot_spectra(spectra, os.path.join(out_dir, "uap_spectra.png"), top=20) or "uap_spectra.png",
        "vectors": plots.plot_singular_vectors(vectors, os.path.join(out_dir, "uap_singular_vectors.png"),
                                               image_shape=shape) or "uap_singular_vectors.png",
        "fooling": plots.plot_fooling_rates({n: {k: v["fooling_rate"] for k, v in r["fooling"].items()}
                                             for n, r in result.items()},
                                            os.path.join(out_dir, "uap_fooling_rates.png")) or "uap_fooling_rates.png",
    }
    result["figures"] = {k: os.path.basename(str(v)) for k, v in figures.items()}
    result["eps"], result["n_matrix"], result["n_test"] = p.l2_eps, int(len(uap_train[1])), int(len(uap_test[1]))
    return result


# The input-Hessian curvature (Moosavi-Dezfooli et al., CVPR 2019) of the landscape images: the
# top eigenvalue alone (k = 1) is the quantity the paper regularises, and 20 power iterations
# (each one double backward pass per batch) settle it to well under the per-image scatter the
# verdict compares against, at a cost near the landscape stage's other measures. Constants, not
# preset fields, so that only the landscape stage's cache key carries them (run.py).
HESSIAN_K = 1
HESSIAN_ITERS = 20
CURVATURE_MEASURE = "input_hessian"
CURVATURE_DEFINITION = ("largest magnitude |lambda_1| of the input Hessian of the loss at the image, d^2 L / dx^2 "
                        "(power iteration on Hessian-vector products; Moosavi-Dezfooli et al., CVPR 2019)")
# The norm and fraction that mark the curvature row: it has no ball and no radius, so it is one
# row per model pair, keyed "-" where the other rows name a ball.
CURVATURE_NORM = "-"


def curvature_row(models, images, labels, seed, k=HESSIAN_K, iters=HESSIAN_ITERS):
    """The landscape row of the input-Hessian curvature: per image n and model, |lambda_1(H_n)|
    with H_n = d^2 loss(model(x_n), y_n) / dx_n^2 (cross-entropy, :func:`landscape.input_hessian_eigenvalues`,
    the same starting vectors for both models), summarised as the other rows are, with the paired
    difference adversarial - natural; "lower" is smoother (a linear loss scores 0). Norm
    :data:`CURVATURE_NORM`, radius None, fraction 1.0 (the measure is taken at the image)."""
    top = {name: numpy.abs(landscape.input_hessian_eigenvalues(models[name]["model"], images, labels, k=k,
                                                               iters=iters, rng=seed)[:, 0])
           for name in ("natural", "adversarial")}
    return {"measure": CURVATURE_MEASURE, "norm": CURVATURE_NORM, "radius": None, "fraction": 1.0,
            "smoother": "lower", "natural": _summary(top["natural"]), "adversarial": _summary(top["adversarial"]),
            "difference": _summary(top["adversarial"] - top["natural"])}


def landscape_fractions(p):
    """The preset's landscape radii as fractions of the full radius, 1.0 included, ascending."""
    return sorted({float(f) for f in p.landscape_fractions} | {1.0})


def _summary(values):
    """mean, median, standard error of the mean and count of the finite entries of ``values``
    (None for what needs more entries than there are)."""
    v = numpy.asarray(values, dtype=numpy.float64)
    v = v[numpy.isfinite(v)]
    n = len(v)
    return {"mean": float(v.mean()) if n else None, "median": float(numpy.median(v)) if n else None,
            "se": float(v.std(ddof=1) / numpy.sqrt(n)) if n > 1 else None, "n": int(n)}


def landscape_analysis(p, models, data, out_dir, seed):
    """Every measure of :data:`minidl.adversarial.landscape.MEASURES` for the natural and the
    adversarial model, in L-inf balls (radii: fractions of cos_eps) and L2 balls (fractions of
    l2_eps), on the same test images and the same random draws for both models. One row per
    (measure, norm, radius) holds each model's summary over the images and the paired
    per-image difference adversarial - natural (what the verdicts judge); one more row, norm
    "-", holds the input-Hessian curvature (:func:`curvature_row`). The old summary keys
    (straightness: L2 paths at l2_eps; cosine: pairwise in the L-inf ball of cos_eps) stay."""
    images, labels = data[0][:p.landscape_n], data[1][:p.landscape_n]
    fractions = landscape_fractions(p)
    radii = {"inf": [f * p.cos_eps for f in fractions], "2": [f * p.l2_eps for f in fractions]}
    full = fractions.index(1.0)
    measured = {}
    for name in ("natural", "adversarial"):
        model = models[name]["model"]
        measured[name] = {norm: landscape.landscape_measures(
            model, images, labels, radii[norm], norm, n_points=p.cos_points, n_directions=p.landscape_directions,
            steps=p.landscape_steps, rng=seed) for norm in ("inf", "2")}
    rows = []
    for measure, (way, definition) in landscape.MEASURES.items():
        for norm in ("inf", "2"):
            for i, (fraction, radius) in enumerate(zip(fractions, radii[norm])):
                nat, adv = (measured[name][norm][measure][i] for name in ("natural", "adversarial"))
                rows.append({"measure": measure, "norm": norm, "radius": radius, "fraction": fraction,
                             "smoother": way, "natural": _summary(nat), "adversarial": _summary(adv),
                             "difference": _summary(adv - nat)})
    rows.append(curvature_row(models, images, labels, seed))
    result = {"rows": rows}
    cosines = {}
    for name in ("natural", "adversarial"):
        straight = measured[name]["2"]["straightness"][full]
        pairs = measured[name]["inf"]["pairwise"][full].reshape(-1)
        cosines[name] = pairs
        example = measured[name]["2"]["example_path"][full]
        landscape.plot_trajectory(models[name]["model"], images[0], labels[0], example,
                                  os.path.join(out_dir, f"trajectory_{name}.png"))
        with numpy.errstate(all="ignore"):
            result[name] = {"straightness_mean": float(numpy.nanmean(straight)),
                            "straightness_median": float(numpy.nanmedian(straight)),
                            "cosine_mean": float(numpy.nanmean(pairs)), "cosine_median": float(numpy.nanmedian(pairs))}
    plots.plot_cosine_histograms(cosines, os.path.join(out_dir, "gradient_cosines.png"))
    plots.plot_landscape_measures(rows, os.path.join(out_dir, "landscape_measures.png"))
    result["settings"] = {"n_images": int(len(labels)), "trajectory_eps_l2": p.l2_eps, "steps": p.landscape_steps,
                          "alpha": pgd_alpha(p.l2_eps, p.landscape_steps),
                          "alpha_rule": f"alpha = {PGD_ALPHA_FACTOR} * r / steps",
                          "cos_eps_linf": p.cos_eps, "cos_points": p.cos_points, "fractions": fractions,
                          "radii_linf": radii["inf"], "radii_l2": radii["2"], "directions": p.landscape_directions,
                          "hessian_k": HESSIAN_K, "hessian_iters": HESSIAN_ITERS,
                          "definitions": {**{k: v[1] for k, v in landscape.MEASURES.items()},
                                          CURVATURE_MEASURE: CURVATURE_DEFINITION}}
    result["figures"] = ["trajectory_natural.png", "trajectory_adversarial.png", "gradient_cosines.png",
                         "landscape_measures.png"]
    return result
