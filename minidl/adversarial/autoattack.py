"""AutoAttack (Croce and Hein, ICML 2020): a fixed ensemble of complementary attacks, each run
only on the points all earlier ones failed on; a point counts as robust only if it survives
every stage.

* version "standard" (deterministic models): APGD-CE (100 steps), APGD-T (targeted DLR, 9
  target classes, 100 steps each), FAB-T (9 targets, 100 steps each), Square (5,000 queries).
  The first two follow the gradient; FAB-T follows a linearised boundary; Square needs no
  gradient at all, so it is the stage that catches masked gradients.
* version "rand" (randomized models, e.g. Random Self-Ensemble): APGD-CE and APGD-DLR, each
  gradient and loss averaged over 20 forward passes (expectation over transformation).

``StageLog`` collects the per-stage breakdown (robust accuracy after each stage, seconds),
summed over every batch the attack is called on. For "rand" a point counts as broken when the
mean logits of 20 passes misclassify it; a later single noisy pass (``robust_accuracy``) may
still classify it correctly, so the two numbers differ for randomized models.
"""
import time

from .. import backend
from ..tensor import Tensor
from .apgd import apgd, mean_logits
from ..validation import check_number
from .attacks import attack_mode, prepare_inputs
from .norms import resolve_norm
from .fab import fab
from .square import square

VERSIONS = ("standard", "rand")
EOT_SAMPLES = 20


class StageLog:
    """Running totals of an AutoAttack evaluation: examples seen, and per stage the examples
    still robust after it and the seconds spent in it."""

    def __init__(self):
        self.n = 0
        self.stages = {}

    def add(self, stage, robust, seconds, n=0):
        self.n += n
        entry = self.stages.setdefault(stage, [0, 0.0])
        entry[0] += int(robust)
        entry[1] += float(seconds)

    def rows(self):
        """[{"stage", "robust", "robust_accuracy", "seconds"}] in the order the stages ran."""
        return [{"stage": s, "robust": r, "robust_accuracy": r / self.n if self.n else float("nan"), "seconds": sec}
                for s, (r, sec) in self.stages.items()]


def stages(eps, norm, version, seed, progress=False):
    """[(name, attack(model, x, y))] of an AutoAttack version, in order."""
    if version == "standard":
        return [
            ("apgd-ce", lambda m, x, y: apgd(m, x, y, eps, norm, steps=100, loss="ce", seed=seed, progress=progress)),
            ("apgd-t", lambda m, x, y: apgd(m, x, y, eps, norm, steps=100, loss="dlr", targeted=True,
                                            n_target_classes=min(9, _classes(m, x) - 1), seed=seed,
                                            progress=progress)),
            ("fab-t", lambda m, x, y: fab(m, x, y, eps, norm, steps=100, n_target_classes=min(9, _classes(m, x) - 1),
                                          seed=seed, progress=progress)),
            ("square", lambda m, x, y: square(m, x, y, eps, norm, queries=5000, seed=seed, progress=progress)),
        ]
    return [
        ("apgd-ce", lambda m, x, y: apgd(m, x, y, eps, norm, steps=100, loss="ce", eot_samples=EOT_SAMPLES, seed=seed,
                                         progress=progress)),
        ("apgd-dlr", lambda m, x, y: apgd(m, x, y, eps, norm, steps=100, loss="dlr", eot_samples=EOT_SAMPLES, seed=seed,
                                          progress=progress)),
    ]


def _classes(model, x):
    return int(mean_logits(model, x[:1].data).shape[1])


def autoattack(model, x, y, eps, norm="inf", version="standard", seed=0, log=None, progress=False):
    """AutoAttack on the batch (x, y) (module docstring); each stage attacks only the examples
    still classified correctly. ``log``, a ``StageLog``, receives the breakdown; ``progress``
    shows a bar per stage. Returns a detached Tensor of worst-case inputs (x where every stage
    failed, or the model misclassifies x already)."""
    op = "autoattack"
    norm = resolve_norm(norm, op)
    check_number(f"{op}: eps", eps, minimum=0)
    if version not in VERSIONS:
        raise ValueError(f"{op}: version must be 'standard' or 'rand', got {version!r}")
    check_number(f"{op}: seed", seed, minimum=0, integer=True)
    if log is not None and not isinstance(log, StageLog):
        raise TypeError(f"{op}: log must be a StageLog or None, got {type(log).__name__}")
    x, y = prepare_inputs(model, x, y, op)
    xp = backend.get_array_module(x.data)
    out = x.data.copy()
    eot = 1 if version == "standard" else EOT_SAMPLES
    with attack_mode(model):
        t0 = time.perf_counter()
        robust = mean_logits(model, x.data, eot).argmax(axis=1) == y.data
        if log is not None:
            log.add("clean", robust.sum(), time.perf_counter() - t0, n=len(y))
        for name, attack in stages(eps, norm, version, seed, progress):
            t0 = time.perf_counter()
            rows = xp.nonzero(robust)[0]
            if len(rows):
                adv = attack(model, Tensor(x.data[rows]), Tensor(y.data[rows])).data
                broken = mean_logits(model, adv, eot).argmax(axis=1) != y.data[rows]
                out[rows[broken]] = adv[broken]
                robust[rows[broken]] = False
            if log is not None:
                log.add(name, robust.sum(), time.perf_counter() - t0)
    return Tensor(out)
