"""Evaluating a Random Self-Ensemble (or any randomized classifier) honestly.

RSE (Liu et al. 2018) predicts with the mean softmax of many noisy passes. Its paper attacked
it with the gradient of a single noisy pass; such gradients are noisy samples, and an attack
built from them understates what an adversary can do (Athalye, Carlini and Wagner 2018,
"Obfuscated gradients give a false sense of security"). The fix is expectation over
transformation (EOT): average the gradient over many noise draws.

:func:`evaluate_rse` reports both numbers side by side, each judged by the ensemble's
prediction on the adversarial points:

* ``pgd_single_pass_accuracy`` -- PGD on the inner noisy model with one noise draw per
  gradient (``eot_samples=1``), the paper's protocol: the *claimed* number;
* ``pgd_eot_accuracy`` -- PGD with the gradient averaged over ``eot_samples`` draws: the
  *honest* number (an upper bound on the true robust accuracy, like every attack);
* ``robust_accuracy`` -- per example, correct only if it survives both attacks.

plus the warnings of :func:`minidl.adversarial.evaluate.is_randomized` and of the gap
between the two attacks.
"""
import numpy
from tqdm.auto import tqdm

from .. import backend
from ..distributed import shard, world
from ..models.ensemble import Ensemble
from ..nn.noise import noise_layers
from ..tensor import Tensor
from ..validation import check_number
from .attacks import pgd, prepare_inputs
from . import evaluate
from .evaluate import batches, is_randomized, masked_gradient_warning, predict
from .norms import resolve_norm

RANDOMIZED_WARNING = evaluate.RANDOMIZED_WARNING + "; report pgd_eot_accuracy, not pgd_single_pass_accuracy"


def evaluate_rse(model, data, eps, alpha, steps, norm="inf", n_ensemble=10, eot_samples=10, restarts=1,
                 batch_size=100, loss="ce", huge_eps=None, num_classes=None, check_n=16, gap_slack=0.02,
                 progress=False, comm=None):
    """Clean and robust accuracy of the self-ensemble of ``model``.

    ``model`` is the noisy network (e.g. from :func:`minidl.models.rse`) or an
    :class:`~minidl.models.ensemble.Ensemble` of it (its inner model is used; the ensemble
    size is ``n_ensemble`` either way). ``data`` is (images, labels) in [0, 1] or a dataset.
    Predictions are always those of ``Ensemble(model, n_ensemble)``; attacks run on the
    noisy model: PGD (``eps``, ``alpha``, ``steps``, ``norm``, ``restarts``, ``loss``) with
    ``eot_samples=1`` (claimed) and with ``eot_samples`` (honest, 10 or more recommended).
    Only correctly classified points are attacked. With ``huge_eps`` set, EOT PGD at that
    radius on the first ``check_n`` examples must bring the ensemble to about chance
    (1 / num_classes + 0.1), else a gradient-masking warning is added.

    Returns a dict with clean_accuracy (ensemble), single_pass_clean_accuracy (one noisy
    pass), pgd_single_pass_accuracy, pgd_eot_accuracy, robust_accuracy, overestimate
    (single-pass minus EOT accuracy), n, randomized, warnings (list of str), huge_eps_accuracy
    (or None), settings (every argument and the noise sigmas) and the per-example boolean
    arrays clean_correct, single_pass_robust_correct, eot_robust_correct.

    Sharded over the ranks of ``comm`` (default :func:`minidl.distributed.world`) as
    ``robust_accuracy`` is: each rank attacks its block, the per-example results are gathered
    in order; the randomness probe and the huge-eps check run on rank 0 and are broadcast.
    """
    op = "evaluate_rse"
    inner = model.model if isinstance(model, Ensemble) else model
    norm_key = resolve_norm(norm, op)
    check_number(f"{op}: eps", eps, minimum=0)
    check_number(f"{op}: alpha", alpha, minimum=0, strict=True)
    for name, value in (("steps", steps), ("n_ensemble", n_ensemble), ("eot_samples", eot_samples),
                        ("restarts", restarts), ("batch_size", batch_size)):
        check_number(f"{op}: {name}", value, minimum=1, integer=True)
    check_number(f"{op}: check_n", check_n, minimum=0, integer=True)
    ens = Ensemble(inner, n_ensemble)
    sigmas = [m.sigma for m in noise_layers(inner) if m.enabled]

    def attack(x, y, eot, radius=eps):
        return pgd(inner, x, y, radius, alpha, steps, norm=norm_key, restarts=restarts, loss=loss,
                   eot_samples=eot)

    comm = comm or world()
    full = data if isinstance(data, (tuple, list)) else (data.images, data.labels)
    mine = shard(full, comm) if comm.size > 1 else full
    clean, single_clean, robust_single, robust_eot = [], [], [], []
    bar = tqdm(total=len(mine[0]), desc=op, leave=False, disable=not (progress and comm.is_root))
    for xb, yb in batches(mine, batch_size):
        x, y = prepare_inputs(inner, xb, yb, op)
        y_host = backend.to_numpy(y.array)
        ok = predict(ens, x) == y_host
        single_clean.append(predict(inner, x) == y_host)
        ok_single, ok_eot = numpy.zeros_like(ok), numpy.zeros_like(ok)
        rows = numpy.nonzero(ok)[0]
        if len(rows):
            idx = backend.to_device(rows, x.device)
            xr, yr = Tensor(x.array[idx]), Tensor(y.array[idx])
            ok_single[rows] = predict(ens, attack(xr, yr, 1)) == y_host[rows]
            ok_eot[rows] = predict(ens, attack(xr, yr, eot_samples)) == y_host[rows]
        clean.append(ok)
        robust_single.append(ok_single)
        robust_eot.append(ok_eot)
        bar.update(len(yb))
    bar.close()
    per_example = [numpy.concatenate(a) if a else numpy.zeros(0, dtype=bool)
                   for a in (clean, single_clean, robust_single, robust_eot)]
    if comm.size > 1:
        per_example = [comm.allgather(a) for a in per_example]
    clean, single_clean, robust_single, robust_eot = per_example
    both = robust_single & robust_eot

    warnings = []
    images = full[0]
    probe = images[:max(1, min(len(images), check_n or 16))]
    randomized = bool(comm.broadcast_object(is_randomized(ens, probe) if comm.is_root else None))
    if randomized:
        warnings.append(RANDOMIZED_WARNING)
    if eot_samples < 10:
        warnings.append(f"eot_samples={eot_samples} is few: use 10 or more draws per gradient for an honest "
                        "estimate of the expected gradient")
    overestimate = float(robust_single.mean() - robust_eot.mean())
    if overestimate > gap_slack:
        warnings.append(f"single-pass PGD overstates robustness by {overestimate:.3f} "
                        f"({robust_single.mean():.3f} vs {robust_eot.mean():.3f} with EOT): the single-pass "
                        "number is an artefact of the randomness (Athalye et al. 2018)")
    huge_acc = None
    if huge_eps is not None and check_n > 0:
        if comm.is_root:
            x, y = prepare_inputs(inner, images[:check_n], full[1][:check_n], op)
            huge_acc = float((predict(ens, attack(x, y, eot_samples, radius=huge_eps))
                              == backend.to_numpy(y.array)).mean())
            if num_classes is None:
                num_classes = ens.predict_proba(x[:1]).shape[1]
        huge_acc, num_classes = comm.broadcast_object((huge_acc, num_classes))
        masked = masked_gradient_warning(huge_acc, num_classes, eps=huge_eps)
        if masked:
            warnings.append(masked)

    settings = dict(eps=eps, alpha=alpha, steps=steps, norm=norm_key, n_ensemble=n_ensemble,
                    eot_samples=eot_samples, restarts=restarts, batch_size=batch_size, loss=loss,
                    huge_eps=huge_eps, noise_sigmas=sigmas)
    return {"clean_accuracy": float(clean.mean()), "single_pass_clean_accuracy": float(single_clean.mean()),
            "pgd_single_pass_accuracy": float(robust_single.mean()), "pgd_eot_accuracy": float(robust_eot.mean()),
            "robust_accuracy": float(both.mean()), "overestimate": overestimate, "n": int(len(clean)),
            "randomized": randomized, "warnings": warnings, "huge_eps_accuracy": huge_acc, "settings": settings,
            "clean_correct": clean, "single_pass_robust_correct": robust_single, "eot_robust_correct": robust_eot}

