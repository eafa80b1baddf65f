"""Evaluating a Random Self-Ensemble (or any randomized classifier) honestly.

RSE (Liu et al. 2018) predicts with the mean softmax of many noisy passes. Its paper attacked
it with the gradient of a single noisy pass; such gradients are noisy samples, and an attack
built from them understates what an adversary can do (Athalye, Carlini and Wagner 2018,
"Obfuscated gradients give a false sense of security"). The fix is expectation over
transformation (EOT): average the gradient over many noise draws.

:func:`evaluate_rse` (settings in an :class:`RSEConfig`) reports both numbers side by side,
each judged by the ensemble's prediction on the adversarial points:

* ``pgd_single_pass_accuracy`` -- PGD on the inner noisy model with one noise draw per
  gradient (``eot_samples=1``), the paper's protocol: the *claimed* number;
* ``pgd_eot_accuracy`` -- PGD with the gradient averaged over ``eot_samples`` draws: the
  *honest* number (an upper bound on the true robust accuracy, like every attack);
* ``robust_accuracy`` -- per example, correct only if it survives both attacks.

plus the warnings of :func:`minidl.adversarial.evaluate.is_randomized` and of the gap
between the two attacks.
"""
import dataclasses

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


OP = "evaluate_rse"


@dataclasses.dataclass(frozen=True)
class RSEConfig:
    """The settings of :func:`evaluate_rse`. Predictions are those of the self-ensemble of
    ``n_ensemble`` noisy passes. The attacks are PGD (``eps``, step ``alpha``, ``steps``,
    ``norm`` 'inf' or '2', ``restarts``, ``loss``) with ``eot_samples=1`` (claimed) and with
    ``eot_samples`` draws per gradient (honest, 10 or more recommended), ``batch_size`` images
    at a time. With ``huge_eps`` set, EOT PGD at that radius on the first ``check_n`` examples
    must bring the ensemble to about chance (1 / ``num_classes`` + 0.1; None: the model's
    number of outputs), else a gradient-masking warning is added. A single-pass accuracy more
    than ``gap_slack`` above the EOT one is reported as a warning."""
    eps: float
    alpha: float
    steps: int
    norm: str = "inf"
    n_ensemble: int = 10
    eot_samples: int = 10
    restarts: int = 1
    batch_size: int = 100
    loss: str = "ce"
    huge_eps: float = None
    num_classes: int = None
    check_n: int = 16
    gap_slack: float = 0.02

    def resolved(self):
        """A copy with the norm's canonical name ('inf' or '2'), every number checked; errors
        name ``evaluate_rse`` and the setting."""
        check_number(f"{OP}: eps", self.eps, minimum=0)
        check_number(f"{OP}: alpha", self.alpha, minimum=0, strict=True)
        for name in ("steps", "n_ensemble", "eot_samples", "restarts", "batch_size"):
            check_number(f"{OP}: {name}", getattr(self, name), minimum=1, integer=True)
        check_number(f"{OP}: check_n", self.check_n, minimum=0, integer=True)
        check_number(f"{OP}: huge_eps", self.huge_eps, minimum=0, allow_none=True)
        check_number(f"{OP}: num_classes", self.num_classes, minimum=2, integer=True, allow_none=True)
        check_number(f"{OP}: gap_slack", self.gap_slack, minimum=0)
        return dataclasses.replace(self, norm=resolve_norm(self.norm, OP))

    def settings(self, noise_sigmas):
        """What the report records of the run: the attack and ensemble settings and the noise."""
        return dict(eps=self.eps, alpha=self.alpha, steps=self.steps, norm=self.norm, n_ensemble=self.n_ensemble,
                    eot_samples=self.eot_samples, restarts=self.restarts, batch_size=self.batch_size,
                    loss=self.loss, huge_eps=self.huge_eps, noise_sigmas=noise_sigmas)


def evaluate_rse(model, data, config, progress=False, comm=None):
    """Clean and robust accuracy of the self-ensemble of ``model`` under the attacks of
    ``config`` (an :class:`RSEConfig`).

    ``model`` is the noisy network (e.g. from :func:`minidl.models.rse`) or an
    :class:`~minidl.models.ensemble.Ensemble` of it (its inner model is used; the ensemble
    size is ``config.n_ensemble`` either way). ``data`` is (images, labels) in [0, 1] or a
    dataset. Predictions are always those of ``Ensemble(model, n_ensemble)``; the attacks run
    on the noisy model, and only on the points the ensemble classifies correctly.

    Returns a dict with clean_accuracy (ensemble), single_pass_clean_accuracy (one noisy
    pass), pgd_single_pass_accuracy, pgd_eot_accuracy, robust_accuracy, overestimate
    (single-pass minus EOT accuracy), n, randomized, warnings (list of str), huge_eps_accuracy
    (or None), settings (:meth:`RSEConfig.settings`: the attack settings and the noise sigmas)
    and the per-example boolean arrays clean_correct, single_pass_robust_correct,
    eot_robust_correct.

    Sharded over the ranks of ``comm`` (default :func:`minidl.distributed.world`) as
    ``robust_accuracy`` is: each rank attacks its block, the per-example results are gathered
    in order; the randomness probe and the huge-eps check run on rank 0 and are broadcast.
    """
    if not isinstance(config, RSEConfig):
        raise TypeError(f"{OP}: config must be an RSEConfig, got {type(config).__name__}")
    config = config.resolved()
    inner = model.model if isinstance(model, Ensemble) else model
    ens = Ensemble(inner, config.n_ensemble)
    comm = comm or world()
    full = data if isinstance(data, (tuple, list)) else (data.images, data.labels)
    mine = shard(full, comm) if comm.size > 1 else full
    per_example = _attack_shard(inner, ens, mine, config, progress and comm.is_root)
    if comm.size > 1:
        per_example = [comm.allgather(a) for a in per_example]
    randomized = bool(comm.broadcast_object(_probe_randomized(ens, full[0], config) if comm.is_root else None))
    huge_acc, num_classes = None, config.num_classes
    if config.huge_eps is not None and config.check_n > 0:
        if comm.is_root:
            huge_acc, num_classes = _huge_eps_check(inner, ens, full, config)
        huge_acc, num_classes = comm.broadcast_object((huge_acc, num_classes))
    sigmas = [m.sigma for m in noise_layers(inner) if m.enabled]
    return _report(per_example, randomized, huge_acc, num_classes, config, sigmas)


def _pgd(inner, config, x, y, eot_samples, eps=None):
    """The configured PGD on the noisy model, ``eot_samples`` draws per gradient, radius
    ``eps`` (default config.eps)."""
    return pgd(inner, x, y, config.eps if eps is None else eps, config.alpha, config.steps, norm=config.norm,
               restarts=config.restarts, loss=config.loss, eot_samples=eot_samples)


def _attack_shard(inner, ens, data, config, progress):
    """Per example of ``data``, four boolean host arrays: the ensemble classifies it correctly,
    one noisy pass does, and it survives single-pass PGD, and EOT PGD (both judged by the
    ensemble, only on the points it classifies correctly)."""
    clean, single_clean, robust_single, robust_eot = [], [], [], []
    bar = tqdm(total=len(data[0]), desc=OP, leave=False, disable=not progress)
    for xb, yb in batches(data, config.batch_size):
        x, y = prepare_inputs(inner, xb, yb, OP)
        y_host = backend.to_numpy(y.array)
        ok = predict(ens, x) == y_host
        single_clean.append(predict(inner, x) == y_host)
        ok_single, ok_eot = numpy.zeros_like(ok), numpy.zeros_like(ok)
        rows = numpy.nonzero(ok)[0]
        if len(rows):
            idx = backend.to_device(rows, x.device)
            xr, yr = Tensor(x.array[idx]), Tensor(y.array[idx])
            ok_single[rows] = predict(ens, _pgd(inner, config, xr, yr, 1)) == y_host[rows]
            ok_eot[rows] = predict(ens, _pgd(inner, config, xr, yr, config.eot_samples)) == y_host[rows]
        clean.append(ok)
        robust_single.append(ok_single)
        robust_eot.append(ok_eot)
        bar.update(len(yb))
    bar.close()
    return [numpy.concatenate(a) if a else numpy.zeros(0, dtype=bool)
            for a in (clean, single_clean, robust_single, robust_eot)]


def _probe_randomized(ens, images, config):
    """Whether two passes of the ensemble differ on the first check_n images (16 if none)."""
    return is_randomized(ens, images[:max(1, min(len(images), config.check_n or 16))])


def _huge_eps_check(inner, ens, data, config):
    """The ensemble's accuracy under EOT PGD at huge_eps on the first check_n examples, and the
    number of classes (config.num_classes, else the model's number of outputs)."""
    x, y = prepare_inputs(inner, data[0][:config.check_n], data[1][:config.check_n], OP)
    adv = _pgd(inner, config, x, y, config.eot_samples, eps=config.huge_eps)
    accuracy = float((predict(ens, adv) == backend.to_numpy(y.array)).mean())
    num_classes = config.num_classes
    if num_classes is None:
        num_classes = ens.predict_proba(x[:1]).shape[1]
    return accuracy, num_classes


def _report(per_example, randomized, huge_acc, num_classes, config, sigmas):
    """The result dict of :func:`evaluate_rse` from the gathered per-example arrays, with the
    warnings they call for."""
    clean, single_clean, robust_single, robust_eot = per_example
    warnings = []
    if randomized:
        warnings.append(RANDOMIZED_WARNING)
    if config.eot_samples < 10:
        warnings.append(f"eot_samples={config.eot_samples} is few: use 10 or more draws per gradient for an honest "
                        "estimate of the expected gradient")
    overestimate = float(robust_single.mean() - robust_eot.mean())
    if overestimate > config.gap_slack:
        warnings.append(f"single-pass PGD overstates robustness by {overestimate:.3f} "
                        f"({robust_single.mean():.3f} vs {robust_eot.mean():.3f} with EOT): the single-pass "
                        "number is an artefact of the randomness (Athalye et al. 2018)")
    if huge_acc is not None:
        masked = masked_gradient_warning(huge_acc, num_classes, eps=config.huge_eps)
        if masked:
            warnings.append(masked)
    return {"clean_accuracy": float(clean.mean()), "single_pass_clean_accuracy": float(single_clean.mean()),
            "pgd_single_pass_accuracy": float(robust_single.mean()), "pgd_eot_accuracy": float(robust_eot.mean()),
            "robust_accuracy": float((robust_single & robust_eot).mean()), "overestimate": overestimate,
            "n": int(len(clean)), "randomized": randomized, "warnings": warnings, "huge_eps_accuracy": huge_acc,
            "settings": config.settings(sigmas), "clean_correct": clean,
            "single_pass_robust_correct": robust_single, "eot_robust_correct": robust_eot}
