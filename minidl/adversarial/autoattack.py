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
summed over every batch the attack is called on; under MPI, :meth:`StageLog.gathered` sums the
counts of every rank's shard (and takes the slowest rank's seconds).

A point counts as broken when the model's expected prediction misclassifies it: the argmax of
the mean softmax of ``judge_samples`` passes, the rule of ``robust_accuracy`` and of RSE's
ensemble (:mod:`minidl.adversarial.evaluate`); by default 20 passes for a randomized model,
one for a deterministic one. ``robust_accuracy`` judges the returned points afresh by the same
rule, so on a randomized model its number can differ from the log's last row by the points
whose judgement the noise decides.
"""
import time

from .. import backend
from ..distributed import world
from ..tensor import Tensor
from .apgd import apgd, mean_logits
from ..validation import check_number
from .attacks import attack_mode, prepare_inputs
from .evaluate import PROBE_N, judge_samples_for, predict, robust_accuracy, stage_warnings
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

    def state(self):
        """The totals as a JSON-like value (for a journal, ``adversarial.journal``)."""
        return {"n": self.n, "stages": [[s, r, sec] for s, (r, sec) in self.stages.items()]}

    def load(self, state):
        """Replace the totals by those of :meth:`state`."""
        self.n = int(state["n"])
        self.stages = {s: [int(r), float(sec)] for s, r, sec in state["stages"]}

    def rows(self):
        """[{"stage", "robust", "robust_accuracy", "seconds"}] in the order the stages ran."""
        return [{"stage": s, "robust": r, "robust_accuracy": r / self.n if self.n else float("nan"), "seconds": sec}
                for s, (r, sec) in self.stages.items()]

    def gathered(self, comm=None):
        """The log of the whole job when each rank of ``comm`` (default
        :func:`minidl.distributed.world`) logged its own shard: examples and robust counts
        summed over the ranks, seconds the largest of any rank (the ranks run side by side,
        so a stage lasts as long as its slowest rank). A new StageLog; every rank gets it."""
        comm = comm or world()
        out = StageLog()
        for n, stages in comm.allgather_object((self.n, list(self.stages.items()))):
            out.n += n
            for stage, (robust, seconds) in stages:  # a rank without examples logged no stage
                entry = out.stages.setdefault(stage, [0, 0.0])
                entry[0] += robust
                entry[1] = max(entry[1], seconds)
        return out


# The stages each version runs, in order; ``autoattack(..., attacks=[...])`` picks and orders
# any of STAGE_NAMES instead (AutoAttack's version='custom'), with the version's settings.
VERSION_STAGES = {"standard": ("apgd-ce", "apgd-t", "fab-t", "square"), "rand": ("apgd-ce", "apgd-dlr")}
STAGE_NAMES = ("apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square")


def stages(eps, norm, version, seed, progress=False, attacks=None):
    """[(name, attack(model, x, y))] of an AutoAttack version, in order, or of the stage names
    ``attacks`` (each gradient stage averaged over EOT_SAMPLES passes under version 'rand')."""
    eot = EOT_SAMPLES if version == "rand" else 1

    def targets(m, x):
        return min(9, _classes(m, x) - 1)

    every = {
        "apgd-ce": lambda m, x, y: apgd(m, x, y, eps, norm, steps=100, loss="ce", eot_samples=eot, seed=seed,
                                        progress=progress),
        "apgd-dlr": lambda m, x, y: apgd(m, x, y, eps, norm, steps=100, loss="dlr", eot_samples=eot, seed=seed,
                                         progress=progress),
        "apgd-t": lambda m, x, y: apgd(m, x, y, eps, norm, steps=100, loss="dlr", targeted=True,
                                       n_target_classes=targets(m, x), eot_samples=eot, seed=seed, progress=progress),
        "fab-t": lambda m, x, y: fab(m, x, y, eps, norm, steps=100, n_target_classes=targets(m, x), seed=seed,
                                     progress=progress),
        "square": lambda m, x, y: square(m, x, y, eps, norm, queries=5000, seed=seed, progress=progress),
    }
    return [(name, every[name]) for name in (VERSION_STAGES[version] if attacks is None else attacks)]


def _classes(model, x):
    return int(mean_logits(model, x[:1].array).shape[1])


def autoattack(model, x, y, eps, norm="inf", version="standard", seed=0, log=None, progress=False,
               judge_samples=None, attacks=None):
    """AutoAttack on the batch (x, y) (module docstring); each stage attacks only the examples
    still classified correctly, judged by the mean softmax of ``judge_samples`` passes (None:
    20 for a randomized model, 1 otherwise). ``log``, a ``StageLog``, receives the breakdown;
    ``progress`` shows a bar per stage. ``attacks``, a list of names from STAGE_NAMES, runs those
    stages in that order instead of the version's own. Returns a detached Tensor of worst-case inputs (x where
    every stage failed, or the model misclassifies x already)."""
    op = "autoattack"
    norm = resolve_norm(norm, op)
    check_number(f"{op}: eps", eps, minimum=0)
    if version not in VERSIONS:
        raise ValueError(f"{op}: version must be 'standard' or 'rand', got {version!r}")
    check_number(f"{op}: seed", seed, minimum=0, integer=True)
    if log is not None and not isinstance(log, StageLog):
        raise TypeError(f"{op}: log must be a StageLog or None, got {type(log).__name__}")
    if attacks is not None:
        if isinstance(attacks, str) or not all(isinstance(a, str) for a in attacks):
            raise TypeError(f"{op}: attacks must be a list of stage names or None, got {attacks!r}")
        unknown = [a for a in attacks if a not in STAGE_NAMES]
        if unknown or not attacks:
            raise ValueError(f"{op}: attacks must be a non-empty list of {STAGE_NAMES}, got {list(attacks)!r}")
    x, y = prepare_inputs(model, x, y, op)
    samples = judge_samples_for(model, x[:PROBE_N], judge_samples, op)
    xp = backend.get_array_module(x.array)
    out = x.array.copy()

    def correct(points, labels):
        return xp.asarray(predict(model, Tensor(points), samples)) == labels

    with attack_mode(model):
        t0 = time.perf_counter()
        robust = correct(x.array, y.array)
        if log is not None:
            log.add("clean", robust.sum(), time.perf_counter() - t0, n=len(y))
        for name, attack in stages(eps, norm, version, seed, progress, attacks):
            t0 = time.perf_counter()
            rows = xp.nonzero(robust)[0]
            if len(rows):
                adv = attack(model, Tensor(x.array[rows]), Tensor(y.array[rows])).array
                broken = ~correct(adv, y.array[rows])
                out[rows[broken]] = adv[broken]
                robust[rows[broken]] = False
            if log is not None:
                log.add(name, robust.sum(), time.perf_counter() - t0)
    return Tensor(out)


def autoattack_accuracy(model, data, eps, norm="inf", version="standard", seed=0, batch_size=200, progress=True,
                        desc="autoattack", judge_samples=None, comm=None, journal=None):
    """:func:`robust_accuracy` under :func:`autoattack`, plus "breakdown" (the per-stage rows of
    ``StageLog.rows()``, summed over the batches and, under MPI, over the ranks) and "warnings"
    (:func:`stage_warnings`). AutoAttack's bookkeeping and the final count judge the points
    alike (``judge_samples``, see :func:`robust_accuracy`). A ``journal`` keeps the per-stage
    totals with every finished batch, so a resumed run's breakdown counts every batch once."""
    comm = comm or world()
    images, labels = data if isinstance(data, (tuple, list)) else (data.images, data.labels)
    probe = images[:PROBE_N]
    if len(probe):
        probe, _ = prepare_inputs(model, probe, labels[:PROBE_N], "autoattack_accuracy")
    judge = comm.broadcast_object(judge_samples_for(model, probe, judge_samples, "autoattack_accuracy"))
    log = StageLog()
    if journal is not None:
        journal.keep(log.state, log.load)
    attack = lambda m, x, y: autoattack(m, x, y, eps, norm=norm, version=version, seed=seed, log=log,
                                        progress=progress, judge_samples=judge)
    result = robust_accuracy(model, (images, labels), attack, batch_size=batch_size, progress=progress, desc=desc,
                             comm=comm, judge_samples=judge, journal=journal)
    rows = log.gathered(comm).rows()
    result.update(breakdown=rows, warnings=stage_warnings(rows))
    return result
