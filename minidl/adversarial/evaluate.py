"""Robust accuracy over a dataset, accuracy-vs-eps curves, and sanity checks.

An attack that is weaker than it should be makes a defence look good, so results carry
warnings in the spirit of AutoAttack's checks (Croce and Hein 2020):

* at a huge eps every input can be turned into anything, so accuracy must fall to about
  chance; if it does not, the gradients are probably masked;
* PGD must be at least as strong as FGSM on every point set: a point FGSM breaks but PGD
  does not means PGD is failing;
* if two forward passes on the same input differ, the model is randomized and gradient
  attacks need expectation over transformation (``eot_samples``);
* more steps of the same attack must not leave more points robust: if they do, the attack
  is not converging or the gradients mislead it;
* in AutoAttack's breakdown, points that survive APGD but fall to FAB or to the gradient-free
  Square mean the gradients were not showing the way (``stage_warnings``).

Judging a randomized model. A randomized classifier (Random Self-Ensemble) predicts by the
expectation over its noise, the argmax of the mean softmax of many passes
(:class:`~minidl.models.ensemble.Ensemble`). An adversarial point is judged by that same rule:
``robust_accuracy`` and ``autoattack`` count a point as classified correctly when the argmax
of the mean softmax of ``judge_samples`` passes is its label. One fresh noisy pass would
instead ask whether a single draw of the noise happens to classify the point correctly, which
neither the model's own prediction nor an adversary's goal is. By default a model that
:func:`is_randomized` finds randomized is judged by ``JUDGE_SAMPLES`` passes, any other by one
pass (for a deterministic model the two are the same).
"""
import os

import numpy
from tqdm.auto import tqdm

from .. import backend
from ..autograd import no_grad
from ..distributed import shard, world
from ..models.ensemble import Ensemble
from ..validation import check_number
from .attacks import attack_mode, prepare_inputs

# Accuracy at a huge eps may exceed chance (1 / classes) by this much before it counts as a sign
# of masked gradients: the checks run on about 100 points, where 0.1 is three standard errors
# of an accuracy near chance for 10 classes (sqrt(0.1 * 0.9 / 100) = 0.03).
CHANCE_SLACK = 0.1
# Passes whose mean softmax judges a randomized model's prediction by default: as many as
# AutoAttack's rand version averages each gradient over (Croce and Hein 2020).
JUDGE_SAMPLES = 20
# Images on which robust_accuracy checks whether a model is randomized.
PROBE_N = 16
RANDOMIZED_WARNING = ("the model is randomized (two forward passes differ): gradient attacks need "
                      "expectation over transformation (eot_samples > 1) for an honest robust accuracy")


def masked_gradient_warning(accuracy, num_classes, eps=None, slack=CHANCE_SLACK):
    """The warning for an accuracy at a huge ``eps`` far above chance, or None when it is not."""
    if not accuracy > 1.0 / num_classes + slack:
        return None
    at = "a huge eps" if eps is None else f"a huge eps ({eps})"
    return (f"accuracy at {at} is {accuracy:.3f}, far above chance ({1.0 / num_classes:.2f}): "
            "the gradients are probably masked")


def batches(data, batch_size):
    """(images, labels) slices of ``batch_size`` of ``data`` ((images, labels) or a dataset)."""
    images, labels = data if isinstance(data, (tuple, list)) else (data.images, data.labels)
    if len(images) != len(labels):
        raise ValueError(f"images and labels differ in length: {len(images)} vs {len(labels)}")
    for i in range(0, len(images), batch_size):
        yield images[i:i + batch_size], labels[i:i + batch_size]


def predict(model, x, samples=1):
    """Predicted classes (host array) of ``model`` in eval mode (its modes kept). With
    ``samples`` > 1, the prediction of ``Ensemble(model, samples)``: the argmax over classes of
    (1/samples) sum_k softmax(model_k(x)), the mean over that many (noisy) passes."""
    judge = model if samples == 1 else Ensemble(model, samples)
    with model.mode(training=False), no_grad():
        return backend.to_numpy(judge(x).array.argmax(axis=1))


def is_randomized(model, x, trials=2):
    """True when repeated eval-mode forward passes on the same input differ."""
    x, _ = prepare_inputs(model, x, numpy.zeros(len(x), dtype=numpy.int64), "is_randomized")
    with attack_mode(model), no_grad():
        first = backend.to_numpy(model(x).array)
        return any(not numpy.array_equal(first, backend.to_numpy(model(x).array)) for _ in range(trials - 1))


def judge_samples_for(model, x, judge_samples=None, op="robust_accuracy"):
    """The number of passes whose mean softmax judges ``model``'s predictions (module
    docstring): ``judge_samples`` when given, else ``JUDGE_SAMPLES`` when the model is
    randomized on the images ``x`` (a few are enough) and 1 when it is not."""
    check_number(f"{op}: judge_samples", judge_samples, minimum=1, integer=True, allow_none=True)
    if judge_samples is not None:
        return judge_samples
    return JUDGE_SAMPLES if len(x) and is_randomized(model, x) else 1


def robust_accuracy(model, data, attack, batch_size=200, progress=True, desc="attack", return_points=False,
                    comm=None, judge_samples=None, journal=None):
    """Clean and robust accuracy of ``model`` on ``data`` ((images, labels) arrays or a dataset)
    under ``attack(model, x, y) -> x_adv``, in batches with a progress bar.

    Clean and adversarial points are judged by the argmax of the mean softmax of
    ``judge_samples`` passes (:func:`predict`); None: ``JUDGE_SAMPLES`` for a randomized model,
    one pass for a deterministic one (:func:`judge_samples_for`, on the first images).

    Returns a dict: clean_accuracy, robust_accuracy, n, judge_samples, and per-example boolean
    arrays ``clean_correct`` and ``robust_correct`` (robust_correct implies the attack failed on
    a correctly classified point; misclassified clean points count as broken).

    Sharded over the ranks of ``comm`` (default :func:`minidl.distributed.world`, one process
    unless launched by MPI): each rank attacks its contiguous block of the data and the
    per-example results are gathered in order, so every rank returns the whole-set result.
    For an attack whose result on an example does not depend on the other examples of its
    batch (FGSM, PGD without random start) that is exactly the unsharded result; random
    starts are drawn per rank, so a random-start attack gives another draw of the same test.

    ``journal``, an :class:`~minidl.adversarial.journal.EvalJournal` (of this rank's shard),
    records every finished batch; the batches it already holds are taken from it instead of
    being attacked again (a resumed run).
    """
    comm = comm or world()
    if journal is not None and return_points:
        raise ValueError("robust_accuracy: journal and return_points: expected at most one of them, got both "
                         "(a journal keeps results, not adversarial points)")
    if not isinstance(data, (tuple, list)):
        data = (data.images, data.labels)
    if len(data[0]) != len(data[1]):
        raise ValueError(f"images and labels differ in length: {len(data[0])} vs {len(data[1])}")
    probe = data[0][:PROBE_N]
    if len(probe):
        probe, _ = prepare_inputs(model, probe, data[1][:PROBE_N], "robust_accuracy")
    # decided on the same images on every rank, and rank 0's decision taken, so all ranks judge alike
    samples = comm.broadcast_object(judge_samples_for(model, probe, judge_samples))
    data = shard(data, comm) if comm.size > 1 else data
    clean, robust, points = [], [], []
    total = len(data[0])
    bar = tqdm(total=total, desc=desc, leave=False, disable=not (progress and comm.is_root))
    for index, (xb, yb) in enumerate(batches(data, batch_size)):
        done = journal.finished(index, len(yb)) if journal is not None else None
        if done is not None:
            ok, adv_ok = done
        else:
            x, y = prepare_inputs(model, xb, yb, "robust_accuracy")
            y_host = backend.to_numpy(y.array)
            ok = predict(model, x, samples) == y_host
            x_adv = attack(model, x, y)
            adv_ok = (predict(model, x_adv, samples) == y_host) & ok
            if journal is not None:
                journal.record(ok, adv_ok)
        clean.append(ok)
        robust.append(adv_ok)
        if return_points:
            points.append(x_adv.numpy())
        bar.update(len(yb))
        bar.set_postfix(clean=f"{numpy.concatenate(clean).mean():.4f}", robust=f"{numpy.concatenate(robust).mean():.4f}")
    bar.close()
    empty = numpy.zeros(0, dtype=bool)
    clean = numpy.concatenate(clean) if clean else empty
    robust = numpy.concatenate(robust) if robust else empty
    if comm.size > 1:
        clean, robust = comm.allgather(clean), comm.allgather(robust)
        if return_points:
            points = [comm.allgather(numpy.concatenate(points) if points else
                                     numpy.zeros((0,) + tuple(data[0].shape[1:]), dtype=numpy.float32))]
    out = {"clean_accuracy": float(clean.mean()), "robust_accuracy": float(robust.mean()), "n": int(len(clean)),
           "judge_samples": samples, "clean_correct": clean, "robust_correct": robust}
    if return_points:
        out["adversarial"] = numpy.concatenate(points)
    return out


def accuracy_vs_eps(model, data, make_attack, eps_values, plot_path=None, label=None, batch_size=200,
                    progress=True, ax=None):
    """Robust accuracy at each eps in ``eps_values`` with ``make_attack(eps) -> attack``.
    Optionally draws the curve (matplotlib) and saves it to ``plot_path``. Returns a list of
    (eps, accuracy) pairs."""
    curve = []
    for eps in eps_values:
        attack = make_attack(eps)
        result = robust_accuracy(model, data, attack, batch_size=batch_size, progress=progress, desc=f"eps={eps:.3g}")
        curve.append((float(eps), result["robust_accuracy"]))
    if plot_path is not None or ax is not None:
        import matplotlib
        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        own = ax is None
        if own:
            fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot([e for e, _ in curve], [a for _, a in curve], marker="o", label=label)
        ax.set_xlabel("eps")
        ax.set_ylabel("accuracy under attack")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        if label:
            ax.legend()
        if own and plot_path is not None:
            os.makedirs(os.path.dirname(os.path.abspath(plot_path)), exist_ok=True)
            fig.tight_layout()
            fig.savefig(plot_path, dpi=120)
            plt.close(fig)
    return curve


def stage_warnings(rows, slack=0.001):
    """Warnings from an AutoAttack breakdown (``StageLog.rows()``): a FAB or Square stage that
    lowers the robust accuracy left by the APGD stages by more than ``slack`` (a fraction of
    all examples) found points the gradient attacks could not see."""
    warnings, after_apgd = [], None
    for row in rows:
        if row["stage"].startswith("apgd"):
            after_apgd = row["robust_accuracy"]
    if after_apgd is None:
        return warnings
    previous = after_apgd
    for row in rows:
        if row["stage"].startswith(("fab", "square")):
            drop = previous - row["robust_accuracy"]
            if drop > slack:
                kind = "the gradient-free Square attack" if row["stage"].startswith("square") else "FAB"
                warnings.append(f"{row['stage']} lowered the robust accuracy from {previous:.4f} to "
                                f"{row['robust_accuracy']:.4f} on points APGD could not break: {kind} beats "
                                "APGD, so the gradients are probably masked and gradient-only numbers overstate")
            previous = row["robust_accuracy"]
    return warnings


def sanity_checks(model, data, pgd_attack, fgsm_attack=None, huge_eps_attack=None, num_classes=10,
                  batch_size=200, progress=False, chance_slack=CHANCE_SLACK, more_steps_attack=None,
                  steps_slack=0.005, judge_samples=None):
    """Run the checks described in the module docstring; returns a list of warning strings
    (empty when everything looks right) and the numbers behind them. ``more_steps_attack`` is
    ``pgd_attack`` with more steps; its accuracy may exceed PGD's by ``steps_slack`` at most.
    ``judge_samples`` goes to every ``robust_accuracy``."""
    warnings, numbers = [], {}
    images = data[0] if isinstance(data, (tuple, list)) else data.images
    if is_randomized(model, images[:min(len(images), 16)]):
        warnings.append(RANDOMIZED_WARNING)
        numbers["randomized"] = True
    pgd_res = robust_accuracy(model, data, pgd_attack, batch_size, progress, desc="check: pgd",
                             judge_samples=judge_samples)
    numbers["pgd_accuracy"] = pgd_res["robust_accuracy"]
    if fgsm_attack is not None:
        fgsm_res = robust_accuracy(model, data, fgsm_attack, batch_size, progress, desc="check: fgsm",
                                   judge_samples=judge_samples)
        numbers["fgsm_accuracy"] = fgsm_res["robust_accuracy"]
        fgsm_only = int((~fgsm_res["robust_correct"] & pgd_res["robust_correct"]).sum())
        numbers["broken_by_fgsm_not_pgd"] = fgsm_only
        if fgsm_only:
            warnings.append(f"PGD is weaker than FGSM on {fgsm_only} points (FGSM breaks them, PGD does not): "
                            "PGD is not converging (step size, steps) or gradients are masked")
    if more_steps_attack is not None:
        more = robust_accuracy(model, data, more_steps_attack, batch_size, progress, desc="check: more steps",
                               judge_samples=judge_samples)
        numbers["more_steps_accuracy"] = more["robust_accuracy"]
        if more["robust_accuracy"] > pgd_res["robust_accuracy"] + steps_slack:
            warnings.append(f"robust accuracy rose from {pgd_res['robust_accuracy']:.4f} to "
                            f"{more['robust_accuracy']:.4f} with more attack steps: the attack is not converging "
                            "or the gradients are masked")
    if huge_eps_attack is not None:
        huge = robust_accuracy(model, data, huge_eps_attack, batch_size, progress, desc="check: huge eps",
                               judge_samples=judge_samples)
        numbers["huge_eps_accuracy"] = huge["robust_accuracy"]
        masked = masked_gradient_warning(huge["robust_accuracy"], num_classes, slack=chance_slack)
        if masked:
            warnings.append(masked)
    return warnings, numbers
