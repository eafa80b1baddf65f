"""The robustness study: ``python -m minidl study --dataset mnist|cifar10 --preset quick|full``.

It reproduces, on models minidl trains itself, the questions of "Probing the Structure of Deep
Neural Networks with Universal Adversarial Perturbations" (Bhat, with Tsipras, MIT PRIMES 2019):

1. train a natural, an adversarially trained (fast FGSM or PGD) and a Random Self-Ensemble model;
2. evaluate clean, FGSM and PGD accuracy (RSE: with the single-pass gradient of the original
   paper and with expectation over noise), with the sanity checks of ``adversarial.evaluate``;
3. compute per-image L2 PGD perturbations, their singular-value spectrum and the universal
   perturbations built from them (top singular vectors, the average, the iterative UAP of
   Moosavi-Dezfooli et al. as a baseline, a random direction of the same norm), and their
   fooling rates on held-out images;
4. probe the loss landscape: straightness of PGD trajectories and the cosine similarity of
   gradients at random points around an image;
5. write ``report.md`` (tables and figures, each with what produced it), the PNGs and
   ``metrics.json`` into ``--out``.

Every stage stores its result under ``<out>/stages``; a second run with the same settings reuses
finished stages (and trained models) instead of recomputing them.
"""
import dataclasses
import json
import os
import time

import numpy

from . import backend
from .experiment import TrainConfig, load_arrays, load_model, train_on_arrays
from .train import CHECKPOINT, write_json

STAGES = "stages"


@dataclasses.dataclass
class Preset:
    """Every knob of one study run."""
    model: str
    rse_model: str
    natural_epochs: int
    adv: str                 # fgsm | pgd
    adv_epochs: int
    adv_eps: float
    adv_steps: int
    adv_lr: float            # Adam's peak learning rate for adversarial training (Wong et al.: 5e-3)
    rse_epochs: int
    train_limit: int         # None = the whole training set
    batch_size: int
    eval_n: int              # test images for the accuracy table
    linf_eps: tuple          # L-inf eps values of the accuracy table
    l2_eps: float            # L2 eps of the accuracy table and of the UAPs
    pgd_steps: int
    pgd_restarts: int
    rse_n: int               # ensemble size
    rse_eot: int             # expectation-over-noise samples
    rse_eval_n: int
    uap_n: int               # images whose perturbations form the matrix
    uap_test_n: int          # held-out images for fooling rates
    uap_steps: int
    uap_k: int               # singular vectors shown and tested
    iterative_passes: int
    landscape_n: int         # images for trajectories / cosine similarities
    landscape_steps: int
    cos_points: int
    cos_eps: float

    def to_dict(self):
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


PRESETS = {
    ("mnist", "quick"): Preset(
        model="wong_mnist", rse_model="rse_wong_mnist", natural_epochs=1, adv="fgsm", adv_epochs=6, adv_eps=0.3,
        adv_steps=1, adv_lr=5e-3, rse_epochs=1, train_limit=None, batch_size=128, eval_n=500, linf_eps=(0.1, 0.3), l2_eps=2.0,
        pgd_steps=20, pgd_restarts=1, rse_n=10, rse_eot=10, rse_eval_n=200, uap_n=500, uap_test_n=500,
        uap_steps=20, uap_k=5, iterative_passes=2, landscape_n=20, landscape_steps=20, cos_points=16,
        cos_eps=0.3),
    ("mnist", "full"): Preset(
        model="madry_mnist", rse_model="rse_madry_mnist", natural_epochs=3, adv="fgsm", adv_epochs=10,
        adv_eps=0.3, adv_steps=1, adv_lr=5e-3, rse_epochs=3, train_limit=None, batch_size=128, eval_n=10000,
        linf_eps=(0.1, 0.3), l2_eps=2.0, pgd_steps=50, pgd_restarts=10, rse_n=20, rse_eot=20, rse_eval_n=1000,
        uap_n=2000, uap_test_n=2000, uap_steps=50, uap_k=5, iterative_passes=5, landscape_n=100,
        landscape_steps=50, cos_points=32, cos_eps=0.3),
    ("cifar10", "quick"): Preset(
        model="cifar_cnn", rse_model="rse_cifar_cnn", natural_epochs=2, adv="fgsm", adv_epochs=2, adv_eps=8 / 255,
        adv_steps=1, adv_lr=None, rse_epochs=2, train_limit=10000, batch_size=128, eval_n=500, linf_eps=(2 / 255, 8 / 255),
        l2_eps=0.5, pgd_steps=10, pgd_restarts=1, rse_n=10, rse_eot=10, rse_eval_n=100, uap_n=300,
        uap_test_n=300, uap_steps=10, uap_k=5, iterative_passes=1, landscape_n=10, landscape_steps=10,
        cos_points=8, cos_eps=8 / 255),
    ("cifar10", "full"): Preset(
        model="preact_resnet18", rse_model="rse_cifar_cnn", natural_epochs=15, adv="fgsm", adv_epochs=15,
        adv_eps=8 / 255, adv_steps=1, adv_lr=None, rse_epochs=15, train_limit=None, batch_size=128, eval_n=1000,
        linf_eps=(2 / 255, 8 / 255), l2_eps=0.5, pgd_steps=50, pgd_restarts=10, rse_n=20, rse_eot=20,
        rse_eval_n=500, uap_n=2000, uap_test_n=1000, uap_steps=50, uap_k=5, iterative_passes=5,
        landscape_n=100, landscape_steps=50, cos_points=32, cos_eps=8 / 255),
}


def get_preset(dataset, preset, **overrides):
    key = (dataset, preset)
    if key not in PRESETS:
        raise ValueError(f"no preset {preset!r} for dataset {dataset!r}; choose from {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[key], **overrides)


# --- stage cache ------------------------------------------------------------------------------
class Stages:
    """Each stage's result is a JSON file (plus an optional .npz of arrays) keyed by its settings:
    a finished stage with the same settings is loaded instead of recomputed."""

    def __init__(self, out_dir, progress=True):
        self.dir = os.path.join(out_dir, STAGES)
        os.makedirs(self.dir, exist_ok=True)
        self.progress = progress
        self.timings = {}

    def run(self, name, settings, compute):
        path = os.path.join(self.dir, f"{name}.json")
        settings = json.loads(json.dumps(settings, default=_jsonable))
        if os.path.exists(path):
            with open(path) as f:
                saved = json.load(f)
            if saved.get("settings") == settings:
                self._say(f"[study] {name}: reusing finished stage ({path})")
                self.timings[name] = saved.get("seconds", 0.0)
                return saved["result"]
        self._say(f"[study] {name} ...")
        start = time.perf_counter()
        result = compute()
        seconds = time.perf_counter() - start
        self.timings[name] = seconds
        write_json(path, {"settings": settings, "result": result, "seconds": seconds})
        self._say(f"[study] {name}: done in {seconds:.1f} s")
        return json.loads(json.dumps(result, default=_jsonable))

    def _say(self, text):
        if self.progress:
            print(text, flush=True)


def _jsonable(value):
    if isinstance(value, numpy.integer):
        return int(value)
    if isinstance(value, numpy.floating):
        return float(value)
    if isinstance(value, (numpy.ndarray, numpy.bool_)):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


# --- the study --------------------------------------------------------------------------------
def run_study(dataset, preset="quick", device="cpu", data_dir=None, out_dir="runs/study", arrays=None,
              overrides=None, progress=True, seed=0):
    """Run (or resume) the whole study and write the report. ``arrays`` = ((train_x, train_y),
    (test_x, test_y)) replaces the dataset files (used by the tests with synthetic data)."""
    device = backend.normalize_device(device)
    base = "cifar10" if dataset == "cifar10" else "mnist"
    p = get_preset(base, preset, **(overrides or {}))
    os.makedirs(out_dir, exist_ok=True)
    stages = Stages(out_dir, progress)
    total_start = time.perf_counter()
    if arrays is None:
        train = load_arrays(dataset, data_dir, train=True, limit=p.train_limit)
        test = load_arrays(dataset, data_dir, train=False)
    else:
        (train, test) = arrays
        if p.train_limit:
            train = (train[0][:p.train_limit], train[1][:p.train_limit])
    num_classes = int(max(train[1].max(), test[1].max())) + 1
    # Test images are split once: the first part for the accuracy table and landscape, a disjoint
    # part for UAP fooling rates (so UAPs are judged on images they were not built from).
    test_x, test_y = test
    uap_train = (train[0][-p.uap_n:], train[1][-p.uap_n:])
    uap_test = (test_x[:p.uap_test_n], test_y[:p.uap_test_n])
    eval_set = (test_x[:p.eval_n], test_y[:p.eval_n])

    models = train_models(p, dataset, train, test, device, out_dir, stages, progress, seed)
    accuracy = stages.run("accuracy", {"preset": p.to_dict(), "n": len(eval_set[1]), "models": _model_ids(models)},
                          lambda: accuracy_table(p, models, eval_set, num_classes, progress))
    rse = stages.run("rse", {"preset": p.to_dict(), "models": _model_ids(models)},
                     lambda: rse_table(p, models["rse"], (test_x[:p.rse_eval_n], test_y[:p.rse_eval_n]),
                                       num_classes, progress))
    uap = stages.run("uap", {"preset": p.to_dict(), "models": _model_ids(models)},
                     lambda: uap_analysis(p, models, uap_train, uap_test, out_dir, progress, seed))
    landscape = stages.run("landscape", {"preset": p.to_dict(), "models": _model_ids(models)},
                           lambda: landscape_analysis(p, models, eval_set, out_dir, seed))
    metrics = {"dataset": dataset, "preset": preset, "device": device, "settings": p.to_dict(),
               "training": {k: v["history"] for k, v in models.items()},
               "accuracy": accuracy, "rse": rse, "uap": uap, "landscape": landscape,
               "stage_seconds": stages.timings, "total_seconds": time.perf_counter() - total_start}
    write_json(os.path.join(out_dir, "metrics.json"), metrics)
    write_report(os.path.join(out_dir, "report.md"), metrics)
    if progress:
        print(f"[study] report: {os.path.join(out_dir, 'report.md')}")
    return metrics


def _model_ids(models):
    return {k: v["checkpoint_mtime"] for k, v in models.items()}


def train_models(p, dataset, train, test, device, out_dir, stages, progress, seed):
    """Train (or reuse from ``<out>/models``) the natural, adversarial and RSE models."""
    configs = {
        "natural": TrainConfig(dataset=dataset, model=p.model, epochs=p.natural_epochs, batch_size=p.batch_size,
                               device=device, seed=seed),
        "adversarial": TrainConfig(dataset=dataset, model=p.model, epochs=p.adv_epochs, batch_size=p.batch_size,
                                   device=device, seed=seed, adv=p.adv, eps=p.adv_eps, lr=p.adv_lr,
                                   steps=p.adv_steps, alpha=None if p.adv == "fgsm" else 2.5 * p.adv_eps / p.adv_steps),
        "rse": TrainConfig(dataset=dataset, model=p.rse_model, epochs=p.rse_epochs, batch_size=p.batch_size,
                           device=device, seed=seed),
    }
    models = {}
    for name, config in configs.items():
        folder = os.path.join(out_dir, "models", name)
        ckpt = os.path.join(folder, CHECKPOINT)
        settings = dataclasses.asdict(config.resolved())
        settings["train_n"] = int(len(train[1]))
        marker = os.path.join(folder, "finished.json")
        done = False
        if os.path.exists(marker) and os.path.exists(ckpt):
            with open(marker) as f:
                done = _same_settings(json.load(f).get("settings"), settings)
        if done:
            if progress:
                print(f"[study] model {name}: reusing {ckpt}")
            model, state = load_model(ckpt, device)
            history = state.get("history", [])
        else:
            if progress:
                print(f"[study] training the {name} model ({config.model}, {config.epochs} epochs"
                      f"{', adversarial: ' + config.adv if config.adv != 'none' else ''})")
            resume = os.path.exists(ckpt) and os.path.exists(os.path.join(folder, "settings.json")) and \
                _same_json(os.path.join(folder, "settings.json"), settings)
            write_json(os.path.join(folder, "settings.json"), settings)
            model, history = train_on_arrays(config, train, (test[0][:p.eval_n], test[1][:p.eval_n]), folder,
                                             resume=resume, overwrite=not resume, progress=progress)
            write_json(marker, {"settings": settings})
        model.eval()
        models[name] = {"model": model, "history": history, "config": settings,
                        "checkpoint_mtime": os.path.getmtime(ckpt)}
    return models


def _same_json(path, obj):
    with open(path) as f:
        return _same_settings(json.load(f), obj)


def _same_settings(saved, settings):
    """Whether saved training settings equal ``settings``. Keys that TrainConfig gained after
    the folder was written count as their defaults, so older study folders are still reused."""
    if not isinstance(saved, dict):
        return False
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    saved = {**{k: v for k, v in defaults.items() if k not in saved and k in settings}, **saved}
    return saved == json.loads(json.dumps(settings))


def accuracy_table(p, models, data, num_classes, progress):
    """Clean, FGSM and PGD accuracy of the natural and adversarial models at each eps, with the
    sanity checks (PGD at least as strong as FGSM; accuracy near chance at a huge eps)."""
    from .adversarial import fgsm, pgd, robust_accuracy, sanity_checks
    rows = {}
    for name in ("natural", "adversarial"):
        model = models[name]["model"]
        row = {"clean": robust_accuracy(model, data, lambda m, x, y: x, progress=False)["clean_accuracy"]}
        for norm, eps_list in (("inf", p.linf_eps), ("2", (p.l2_eps,))):
            for eps in eps_list:
                alpha = 2.5 * eps / p.pgd_steps
                key = f"L{norm}-{eps:.4g}"
                f_attack = lambda m, x, y, e=eps, n=norm: fgsm(m, x, y, e, norm=n)
                p_attack = lambda m, x, y, e=eps, a=alpha, n=norm: pgd(m, x, y, e, a, p.pgd_steps, norm=n,
                                                                       restarts=p.pgd_restarts)
                row[f"fgsm {key}"] = robust_accuracy(model, data, f_attack, progress=progress,
                                                     desc=f"{name} fgsm {key}")["robust_accuracy"]
                row[f"pgd {key}"] = robust_accuracy(model, data, p_attack, progress=progress,
                                                    desc=f"{name} pgd {key}")["robust_accuracy"]
        eps = max(p.linf_eps)
        check_data = (data[0][:100], data[1][:100])
        warnings, numbers = sanity_checks(
            model, check_data,
            lambda m, x, y: pgd(m, x, y, eps, 2.5 * eps / p.pgd_steps, p.pgd_steps),
            fgsm_attack=lambda m, x, y: fgsm(m, x, y, eps),
            huge_eps_attack=lambda m, x, y: pgd(m, x, y, 1.0, 0.1, p.pgd_steps), num_classes=num_classes)
        row["warnings"], row["checks"] = warnings, numbers
        rows[name] = row
    return {"rows": rows, "n": int(len(data[1])), "pgd_steps": p.pgd_steps, "pgd_restarts": p.pgd_restarts,
            "alpha_rule": "alpha = 2.5 * eps / steps"}


def rse_table(p, rse_entry, data, num_classes, progress):
    """The RSE model judged by its ensemble prediction, against PGD with the gradient of one noisy
    pass (as the original paper did) and with expectation over noise (the honest number)."""
    from .adversarial.rse_eval import evaluate_rse
    from .nn.noise import noise_layers
    model = rse_entry["model"]
    sigmas = [layer.sigma for layer in noise_layers(model)]
    out = {"n": int(len(data[1])), "ensemble": p.rse_n, "eot_samples": p.rse_eot, "sigmas": sigmas, "rows": {}}
    for norm, eps in [("inf", e) for e in p.linf_eps] + [("2", p.l2_eps)]:
        result = evaluate_rse(model, data, eps=eps, alpha=2.5 * eps / p.pgd_steps, steps=p.pgd_steps, norm=norm,
                              n_ensemble=p.rse_n, eot_samples=p.rse_eot, num_classes=num_classes,
                              progress=progress)
        out["rows"][f"L{norm}-{eps:.4g}"] = {k: result[k] for k in (
            "clean_accuracy", "pgd_single_pass_accuracy", "pgd_eot_accuracy", "robust_accuracy", "warnings")}
    return out


def uap_analysis(p, models, uap_train, uap_test, out_dir, progress, seed):
    """Spectra, SVD/average/iterative/random UAPs and their fooling rates, for both models."""
    from .adversarial import plots, uap
    result, spectra, vectors = {}, {}, {}
    rng = numpy.random.default_rng(seed)
    shape = uap_train[0].shape[1:]
    for name in ("natural", "adversarial"):
        model = models[name]["model"]
        matrix = uap.per_example_perturbations(model, *uap_train, eps=p.l2_eps, steps=p.uap_steps, norm="2",
                                               progress=progress)
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


def landscape_analysis(p, models, data, out_dir, seed):
    """PGD trajectory straightness and gradient cosine similarity, natural vs adversarial."""
    from .adversarial import landscape, plots
    images, labels = data[0][:p.landscape_n], data[1][:p.landscape_n]
    alpha = 2.5 * p.l2_eps / p.landscape_steps
    result, cosines = {}, {}
    for name in ("natural", "adversarial"):
        model = models[name]["model"]
        trajs = landscape.pgd_trajectories(model, images, labels, p.l2_eps, alpha, p.landscape_steps, norm="2")
        straight = landscape.batch_straightness(trajs)
        cos = landscape.gradient_cosine_similarities_many(model, images, labels, p.cos_eps, n_points=p.cos_points,
                                                          norm="inf", rng=seed)
        cosines[name] = cos["values"]
        landscape.plot_trajectory(model, images[0], labels[0], trajs[:, 0],
                                  os.path.join(out_dir, f"trajectory_{name}.png"))
        result[name] = {"straightness_mean": float(numpy.nanmean(straight)),
                        "straightness_median": float(numpy.nanmedian(straight)),
                        "cosine_mean": float(numpy.nanmean(cos["values"])),
                        "cosine_median": float(numpy.nanmedian(cos["values"]))}
    plots.plot_cosine_histograms(cosines, os.path.join(out_dir, "gradient_cosines.png"))
    result["settings"] = {"n_images": int(len(labels)), "trajectory_eps_l2": p.l2_eps, "steps": p.landscape_steps,
                          "alpha": alpha, "cos_eps_linf": p.cos_eps, "cos_points": p.cos_points}
    result["figures"] = ["trajectory_natural.png", "trajectory_adversarial.png", "gradient_cosines.png"]
    return result


# --- report -----------------------------------------------------------------------------------
def _pct(x):
    return "-" if x is None else f"{100 * x:.1f}%"


def write_report(path, m):
    s = m["settings"]
    cmd = (f"python -m minidl study --dataset {m['dataset']} --preset {m['preset']} --device {m['device']} "
           f"--data-dir DIR --out DIR")
    lines = [f"# minidl robustness study: {m['dataset']}, preset {m['preset']}", "",
             f"Produced by `{cmd}` in {m['total_seconds'] / 60:.1f} minutes (this run; reused stages count "
             "their original time below). Every number below comes from this run; `metrics.json` holds them all.",
             "", "## Models", "",
             "| model | architecture | training | last epoch: train acc (epoch mean) | test acc (first "
             f"{s['eval_n']} test images) |", "| --- | --- | --- | --- | --- |"]
    arch = {"natural": s["model"], "adversarial": s["model"], "rse": s["rse_model"]}
    how = {"natural": f"natural, {s['natural_epochs']} epoch(s)",
           "adversarial": (f"fast FGSM adversarial training (random start, alpha = 1.25 eps), eps {s['adv_eps']:.4g}, "
                           f"{s['adv_epochs']} epochs, Adam with a cyclic lr peaking at {s['adv_lr'] or 'the default'}"
                           if s["adv"] == "fgsm" else
                           f"PGD-{s['adv_steps']} adversarial training, eps {s['adv_eps']:.4g}, {s['adv_epochs']} epochs"),
           "rse": f"Random Self-Ensemble, noise on while training, {s['rse_epochs']} epoch(s)"}
    for name, hist in m["training"].items():
        last = hist[-1] if hist else {}
        stopped = f" ({last['stopped']})" if last.get("stopped") else ""
        lines.append(f"| {name} | `{arch[name]}` | {how[name]}{stopped} | {_pct(last.get('train_accuracy'))} | "
                     f"{_pct(last.get('test_accuracy'))} |")
    acc = m["accuracy"]
    keys = [k for k in acc["rows"]["natural"] if k not in ("clean", "warnings", "checks")]
    lines += ["", "## Accuracy under attack", "",
              f"On the first {acc['n']} test images. PGD: {acc['pgd_steps']} steps, {acc['pgd_restarts']} restart(s), "
              f"{acc['alpha_rule']}, random start. Linf / L2 give the norm and eps.", "",
              "| model | clean | " + " | ".join(keys) + " |", "| --- " * (len(keys) + 2) + "|"]
    for name, row in acc["rows"].items():
        lines.append(f"| {name} | {_pct(row['clean'])} | " + " | ".join(_pct(row[k]) for k in keys) + " |")
    for name, row in acc["rows"].items():
        for w in row["warnings"]:
            lines.append(f"\n**Warning ({name})**: {w}")
        if not row["warnings"]:
            lines.append(f"\nSanity checks ({name}): no warnings (PGD >= FGSM on every point; accuracy at eps 1.0: "
                         f"{_pct(row['checks'].get('huge_eps_accuracy'))}).")
    rse = m["rse"]
    lines += ["", "## Random Self-Ensemble: claimed and honest robustness", "",
              f"Ensemble of {rse['ensemble']} noisy passes, noise sigmas {rse['sigmas']} (first conv, then the "
              f"others), {rse['n']} test images. *Single pass*: PGD follows the gradient of one noisy pass, as the "
              f"original paper evaluated. *EOT*: the gradient is averaged over {rse['eot_samples']} noise samples. "
              "Both are judged by the ensemble's prediction.", "",
              "| attack | clean | PGD, single-pass gradient | PGD with EOT | robustness lost under EOT |",
              "| --- | --- | --- | --- | --- |"]
    for key, row in rse["rows"].items():
        lost = row["pgd_single_pass_accuracy"] - row["pgd_eot_accuracy"]
        lines.append(f"| {key} | {_pct(row['clean_accuracy'])} | {_pct(row['pgd_single_pass_accuracy'])} | "
                     f"{_pct(row['pgd_eot_accuracy'])} | {100 * lost:.1f} points |")
    warn = sorted({w for row in rse["rows"].values() for w in row["warnings"]})
    lines += [f"\n**Warning (rse)**: {w}" for w in warn]
    u = m["uap"]
    lines += ["", "## Universal perturbations from the SVD of per-image perturbations", "",
              f"Rows: L2 PGD perturbations (eps {u['eps']}, {s['uap_steps']} steps, no random start) of "
              f"{u['n_matrix']} training images; rows are not mean-centred for the main SVD (a centred top vector "
              f"is reported too). Fooling rate = prediction changed, on {u['n_test']} held-out test images; every "
              f"UAP has L2 norm {u['eps']}.", "",
              "| model | top-5 singular values | s1/s2 | s1/s5 |", "| --- | --- | --- | --- |"]
    for name in ("natural", "adversarial"):
        r = u[name]
        top = ", ".join(f"{v:.2f}" for v in r["top_singular_values"][:5])
        lines.append(f"| {name} | {top} | {r['ratio_s1_s2']:.2f} | "
                     f"{r['ratio_s1_s5']:.2f} |" if r["ratio_s1_s5"] else f"| {name} | {top} | {r['ratio_s1_s2']:.2f} | - |")
    methods = list(u["natural"]["fooling"])
    lines += ["", "| UAP | " + " | ".join(f"{n}: fooling rate / accuracy" for n in ("natural", "adversarial")) + " |",
              "| --- | --- | --- |"]
    for meth in methods:
        cells = [f"{_pct(u[n]['fooling'][meth]['fooling_rate'])} / {_pct(u[n]['fooling'][meth]['accuracy'])}"
                 for n in ("natural", "adversarial")]
        lines.append(f"| {meth} | " + " | ".join(cells) + " |")
    lines += ["", f"![spectra]({u['figures']['spectra']})", "",
              f"![singular vectors]({u['figures']['vectors']})", "",
              f"![fooling rates]({u['figures']['fooling']})"]
    ls = m["landscape"]
    st = ls["settings"]
    lines += ["", "## Loss landscape", "",
              f"Straightness of L2 PGD paths (eps {st['trajectory_eps_l2']}, {st['steps']} steps, from the clean "
              f"image) = |x_T - x_0| / path length (1 = straight), over {st['n_images']} test images; cosine "
              f"similarity of loss gradients at {st['cos_points']} random points of the L-inf ball of radius "
              f"{st['cos_eps_linf']:.4g} around each image (all pairs).", "",
              "| model | straightness mean (median) | gradient cosine mean (median) |", "| --- | --- | --- |"]
    for name in ("natural", "adversarial"):
        r = ls[name]
        lines.append(f"| {name} | {r['straightness_mean']:.3f} ({r['straightness_median']:.3f}) | "
                     f"{r['cosine_mean']:.3f} ({r['cosine_median']:.3f}) |")
    lines += [""] + [f"![{f}]({f})" for f in ls["figures"]]
    lines += ["", "## Which claims of the talk reproduce here", ""] + findings(m)
    lines += ["", "## Time per stage", "", "| stage | seconds |", "| --- | --- |"]
    lines += [f"| training: {name} model | {sum(h.get('train_seconds', 0) for h in hist):.1f} |"
              for name, hist in m["training"].items()]
    lines += [f"| {k} | {v:.1f} |" for k, v in m["stage_seconds"].items()]
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(path + ".tmp", path)


def findings(m):
    """Plain statements comparing this run with the talk's claims (numbers, not adjectives)."""
    u, ls = m["uap"], m["landscape"]
    nat, adv = u["natural"], u["adversarial"]
    out = []
    if m["dataset"] == "cifar10":
        out.append(f"- *One dominant singular value on CIFAR-10* (talk: 54.4 vs 4.5, s1/s2 = 12.1): here s1/s2 = "
                   f"{nat['ratio_s1_s2']:.2f} (natural), {adv['ratio_s1_s2']:.2f} (adversarial) -> "
                   f"{'reproduces' if nat['ratio_s1_s2'] > 3 else 'does not reproduce'} for the natural model.")
    else:
        s15 = nat["ratio_s1_s5"]
        out.append(f"- *Several universal directions on MNIST: top-5 singular values close together* (talk: 2.7 ... "
                   f"1.8, s1/s5 = 1.5): here s1/s5 = {s15:.2f} (natural), {adv['ratio_s1_s5']:.2f} (adversarial) -> "
                   f"{'reproduces' if s15 < 2.5 else 'does not reproduce'} for the natural model "
                   f"(threshold used: s1/s5 < 2.5).")
    best = lambda r: max(v["fooling_rate"] for k, v in r["fooling"].items() if k.startswith("svd"))
    out.append(f"- *Top singular vectors are universal perturbations*: best SVD vector fools {_pct(best(nat))} of held-out "
               f"images of the natural model vs {_pct(nat['fooling']['random']['fooling_rate'])} for a random direction "
               f"of the same norm (adversarial model: {_pct(best(adv))} vs "
               f"{_pct(adv['fooling']['random']['fooling_rate'])}) -> "
               f"{'reproduces' if best(nat) > 2 * nat['fooling']['random']['fooling_rate'] + 0.02 else 'does not reproduce'}.")
    out.append("- *Singular vectors of adversarially trained models look like features, natural ones like noise*: "
               "a visual claim; compare the two rows of `uap_singular_vectors.png` above.")
    sn, sa = ls["natural"]["straightness_mean"], ls["adversarial"]["straightness_mean"]
    out.append(f"- *Adversarial training straightens PGD trajectories*: mean straightness {sn:.3f} (natural) vs "
               f"{sa:.3f} (adversarial) -> {'reproduces' if sa > sn else 'does not reproduce'}.")
    cn, ca = ls["natural"]["cosine_mean"], ls["adversarial"]["cosine_mean"]
    out.append(f"- *Gradients around an image are more similar after adversarial training*: mean cosine {cn:.3f} "
               f"(natural) vs {ca:.3f} (adversarial) -> {'reproduces' if ca > cn else 'does not reproduce'}.")
    return out


def add_study_parser(sub):
    parser = sub.add_parser("study", help="the robustness study: train, attack, UAP/SVD, landscape, report")
    parser.add_argument("--dataset", choices=["mnist", "cifar10"], required=True)
    parser.add_argument("--preset", choices=["quick", "full"], default="quick")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    parser.set_defaults(run=lambda a: (run_study(a.dataset, a.preset, a.device, a.data_dir, a.out,
                                                 progress=not a.quiet, seed=a.seed), 0)[1])
