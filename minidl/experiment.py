"""Glue shared by the CLI, the examples and the study: build the data, model, optimizer and
schedule that a :class:`TrainConfig` describes, train with checkpoints, evaluate a checkpoint."""
import contextlib
import dataclasses
import functools
import os

import numpy

from . import backend
from .adversarial import fgsm, fgsm_random_start, noisy_fgsm, pgd, robust_accuracy, sanity_checks
from .adversarial.attacks import PGD_ALPHA_FACTOR, pgd_alpha
from .adversarial.norms import resolve_norm
from .adversarial.autoattack import autoattack_accuracy
from .adversarial.evaluate import PROBE_N, judge_samples_for
from .adversarial.gradalign import grad_align_penalty
from .adversarial.journal import EvalJournal, journal_path
from .distributed import DistributedOptimizer, broadcast_parameters, world
from .data import CIFAR10, MNIST, DataLoader, random_crop_flip
from .models import get_model
from .nn.init import SCHEMES, init_model
from .optim import SGD, Adam
from .optim.lr_scheduler import CosineAnnealingLR, LambdaLR, OneCycleLR, StepLR
from .run_folder import RunFolderError, claim_run_folder
from .io import file_digest
from .serialization import load
from .train import CHECKPOINT, evaluate, fit
from .validation import check_choice, check_finite_array, check_number

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine", "onecycle", "cyclic", "step")
ADVERSARIES = ("none", "pgd", "fgsm", "nfgsm")
SINGLE_STEP = ("fgsm", "nfgsm")  # fast training: a cyclic lr, and a guard against catastrophic overfitting
ATTACKS = ("fgsm", "pgd", "autoattack")


@dataclasses.dataclass
class TrainConfig:
    dataset: str = "mnist"
    model: str = "madry_mnist"
    epochs: int = 3
    batch_size: int = 128
    lr: float = None
    optimizer: str = None
    schedule: str = None
    device: str = "cpu"
    data_dir: str = None
    seed: int = 0
    adv: str = "none"          # none | pgd | fgsm | nfgsm
    eps: float = 0.3
    alpha: float = None
    steps: int = 40
    train_limit: int = None
    holdout: int = 0
    augment: bool = True
    weight_decay: float = None
    init: str = "default"      # default (the zoo model's own) | he | fan_in_uniform (nn.init.init_model)
    eps_warmup: float = 0.0    # epochs over which the training eps grows linearly from 0
    noise: float = None        # nfgsm: radius of the random offset (default 2 eps)
    grad_align: float = 0.0    # single-step adversaries: weight lambda of the GradAlign penalty (0: off)

    def resolved(self):
        """A copy with the dataset-dependent defaults filled in, every number checked."""
        c = dataclasses.replace(self)
        c.optimizer = c.optimizer or ("adam" if c.dataset == "mnist" else "sgd")
        check_choice("optimizer", c.optimizer, OPTIMIZERS)
        check_choice("adv", c.adv, ADVERSARIES)
        if c.lr is None:  # not `c.lr or ...`: an explicit lr of 0 is an error, not the default
            c.lr = 1e-3 if c.optimizer == "adam" else 0.05
        # Fast adversarial training relies on a cyclic learning rate (Wong et al. 2020).
        default_schedule = "cyclic" if c.adv in SINGLE_STEP else "cosine" if c.optimizer == "adam" else "onecycle"
        c.schedule = c.schedule or default_schedule
        check_choice("schedule", c.schedule, SCHEDULES)
        if c.weight_decay is None:
            c.weight_decay = 5e-4 if c.optimizer == "sgd" else 0.0
        if c.adv != "none" and c.alpha is None:
            c.alpha = {"fgsm": 1.25 * c.eps, "nfgsm": c.eps}.get(c.adv, 0.01 if c.dataset == "mnist" else 2 / 255)
        if c.adv == "nfgsm" and c.noise is None:
            c.noise = 2.0 * c.eps
        if c.noise is not None and c.adv != "nfgsm":
            raise ValueError(f"noise is the nfgsm adversary's setting, got noise={c.noise!r} with adv={c.adv!r}")
        if c.init != "default" and c.init not in SCHEMES:
            raise ValueError(f"init must be 'default' or one of {SCHEMES}, got {c.init!r}")
        check_number("epochs", c.epochs, minimum=0, integer=True)
        check_number("batch_size", c.batch_size, minimum=1, integer=True)
        check_number("lr", c.lr, minimum=0, strict=True)
        check_number("weight_decay", c.weight_decay, minimum=0)
        check_number("seed", c.seed, minimum=0, integer=True)
        check_number("train_limit", c.train_limit, minimum=1, integer=True, allow_none=True)
        check_number("holdout", c.holdout, minimum=0, integer=True)
        check_number("eps_warmup", c.eps_warmup, minimum=0)
        if c.adv != "none":
            check_number("eps", c.eps, minimum=0, strict=True)
            check_number("alpha", c.alpha, minimum=0, strict=True)
            check_number("steps", c.steps, minimum=1, integer=True)
        check_number("noise", c.noise, minimum=0, allow_none=True)
        check_number("grad_align", c.grad_align, minimum=0)
        if c.grad_align and c.adv not in SINGLE_STEP:
            raise ValueError(f"grad_align regularises single-step adversarial training (adv one of {SINGLE_STEP}), "
                             f"got grad_align={c.grad_align!r} with adv={c.adv!r}")
        return c


def load_arrays(dataset, data_dir, train, limit=None):
    """(images, labels) of a split, raising one clear error when the files are missing."""
    if dataset not in ("mnist", "cifar10"):
        raise ValueError(f"dataset must be 'mnist' or 'cifar10', got {dataset!r}")
    if data_dir is not None and not os.path.isdir(data_dir):
        if os.path.exists(data_dir):
            raise NotADirectoryError(f"--data-dir {data_dir!r} is not a folder")
        raise FileNotFoundError(f"--data-dir {data_dir!r} does not exist")
    cls = MNIST if dataset == "mnist" else CIFAR10
    ds = cls(root=data_dir, train=train)
    images, labels = ds.images, ds.labels
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, labels


def split_holdout(images, labels, holdout):
    """The last ``holdout`` training images become a validation set."""
    if holdout <= 0:
        return (images, labels), None
    if holdout >= len(images):
        raise ValueError(f"holdout {holdout} must be smaller than the training set ({len(images)} images)")
    return (images[:-holdout], labels[:-holdout]), (images[-holdout:], labels[-holdout:])


def make_optimizer(config, model, steps_per_epoch):
    params = model.parameters()
    if config.optimizer == "adam":
        opt = Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    else:
        opt = SGD(params, lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)
    total = max(1, config.epochs * steps_per_epoch)
    schedule = {"constant": lambda: None,
                "cosine": lambda: CosineAnnealingLR(opt, T_max=total),
                # the shapes these commands always had: linear ramps, momentum left alone
                "onecycle": lambda: OneCycleLR(opt, max_lr=config.lr, total_steps=total, anneal_strategy="linear",
                                               cycle_momentum=False),
                # Wong et al.'s fast-training triangle, 0 -> lr at 40% -> 0, read one step ahead:
                # their batch i of epoch e runs at interp(e + (i + 1) / n), set before the step,
                # so the first step is not wasted at rate 0 and the last one runs at 0.
                "cyclic": lambda: LambdaLR(opt, lambda t: _triangle(t + 1, total)),
                "step": lambda: StepLR(opt, step_size=max(1, total // 3), gamma=0.1)}[config.schedule]()
    return opt, schedule


def _triangle(t, total, peak=0.4):
    """0 at t = 0, 1 at t = peak * total, 0 from t = total on; linear in between."""
    up = peak * total
    return min(t, total) / up if t <= up else max(0.0, (total - t) / (total - up))


def make_perturb(config, optimizer=None, steps_per_epoch=None):
    """The adversary used in training (None for natural training).

    With ``config.eps_warmup`` = E > 0 epochs, the batch trained at optimizer step t (0-based)
    is attacked with eps_t = eps * min(1, (t + 1) / (E * steps_per_epoch)), and the step size
    and N-FGSM's noise radius are scaled alike (alpha * eps_t / eps): PGD training from scratch
    at MNIST's eps = 0.3 can otherwise stall at chance accuracy. The step is read from the optimizer, so a resumed
    run continues the ramp where it stopped."""
    if config.adv == "none":
        return None
    if config.eps_warmup > 0 and (optimizer is None or not steps_per_epoch):
        raise ValueError("make_perturb: eps_warmup needs the optimizer and steps_per_epoch")
    attack = {"pgd": functools.partial(pgd, steps=config.steps, random_start=True),
              "fgsm": fgsm_random_start, "nfgsm": noisy_fgsm}[config.adv]

    def perturb(model, x, y):
        f = 1.0
        if config.eps_warmup > 0:
            f = min(1.0, (optimizer.steps + 1) / (config.eps_warmup * steps_per_epoch))
        extra = {"noise": config.noise * f} if config.adv == "nfgsm" else {}
        return attack(model, x, y, eps=config.eps * f, alpha=config.alpha * f, **extra)
    return perturb


def make_penalty(config, optimizer=None, steps_per_epoch=None):
    """The regulariser added to the training loss: GradAlign's penalty (``grad_align`` > 0,
    ``adversarial.gradalign``) at the training eps (scaled during ``eps_warmup`` as the
    adversary's), or None."""
    if not config.grad_align:
        return None

    def penalty(model, x, y):
        f = 1.0
        if config.eps_warmup > 0:
            f = min(1.0, (optimizer.steps + 1) / (config.eps_warmup * steps_per_epoch))
        return grad_align_penalty(model, x, y, eps=config.eps * f, weight=config.grad_align)
    return penalty


def _claimed(config, out_dir, resume, overwrite):
    """The run folder held for the run (see ``run_folder``), or a no-op without ``out_dir``."""
    if out_dir is None:
        return contextlib.nullcontext()
    record = dataclasses.asdict(config)
    return held_by_root(lambda: claim_run_folder(out_dir, record, resume=resume, overwrite=overwrite))


def held_by_root(claim):
    """``claim()`` (a context manager that takes a lock, ``run_folder``), entered by rank 0
    alone in a data-parallel run; every rank gets its verdict (a RunFolderError refusal)."""
    comm = world()
    if comm.size == 1:
        return claim()
    return _held_by_root(comm, claim)


@contextlib.contextmanager
def _held_by_root(comm, claim):
    held, refusal = contextlib.ExitStack(), None
    if comm.is_root:
        try:
            held.enter_context(claim())
        except RunFolderError as e:
            refusal = str(e)
    refusal = comm.broadcast_object(refusal)
    if refusal is not None:
        raise RunFolderError(refusal)
    with held:
        yield


def run_training(config, out_dir, resume=False, overwrite=False, progress=True, epoch_end=None):
    """Train the model a config describes on its dataset; checkpoint and metrics go to
    ``out_dir``. The folder is checked and locked before any data is loaded (see
    :func:`train_on_arrays` for ``resume`` and ``overwrite``). Returns (model, history)."""
    config = config.resolved()
    with _claimed(config, out_dir, resume, overwrite):
        images, labels = load_arrays(config.dataset, config.data_dir, train=True, limit=config.train_limit)
        _check_not_empty(images, f"the {config.dataset} training set" + (f" in {config.data_dir}" if config.data_dir else ""))
        (images, labels), held = split_holdout(images, labels, config.holdout)
        test = held if held is not None else load_arrays(config.dataset, config.data_dir, train=False)
        return _train(config, (images, labels), test, out_dir, resume, progress, epoch_end,
                      "holdout" if held is not None else "test")


def train_on_arrays(config, train, test, out_dir, resume=False, overwrite=False, progress=True, epoch_end=None,
                    eval_split="test"):
    """Train on ``train`` = (images, labels), evaluating on ``test`` after each epoch.

    ``out_dir`` (None: nothing is saved) becomes a run folder (``minidl.run_folder``): a
    folder that holds another run is refused unless ``resume`` (same configuration, only
    ``epochs`` may grow; a run stopped before its first checkpoint starts over) or
    ``overwrite``; it is locked while the run lasts.

    Fast FGSM training gets the guard against catastrophic overfitting of Wong et al. (2020):
    after each epoch, PGD accuracy on a fixed training batch is measured; if it collapses
    (falls by more than 0.2 below its best), the weights of the best epoch are restored and
    training stops.
    """
    config = config.resolved()
    with _claimed(config, out_dir, resume, overwrite):
        return _train(config, train, test, out_dir, resume, progress, epoch_end, eval_split)


def _train(config, train, test, out_dir, resume, progress, epoch_end, eval_split):
    _check_not_empty(train[0], "the training set")
    device = backend.normalize_device(config.device)
    backend.manual_seed(config.seed)
    comm = world()
    images, labels = train
    transform = random_crop_flip if (config.dataset == "cifar10" and config.augment) else None
    # Data-parallel (under mpirun): the same seed on every rank gives one global batch order,
    # and each rank trains on its block of every batch of config.batch_size (the global batch).
    train_loader = DataLoader((images, labels), config.batch_size, shuffle=True, seed=config.seed,
                              device=device, transform=transform, shard=comm if comm.size > 1 else None)
    eval_loader = DataLoader(test, 500, device=device)
    model = get_model(config.model, in_channels=images.shape[1], image_size=images.shape[2])
    if config.init != "default":
        init_model(model, config.init)
    model = model.to(device)
    optimizer, schedule = make_optimizer(config, model, len(train_loader))
    if comm.size > 1:
        broadcast_parameters(model, comm)
        optimizer = DistributedOptimizer(optimizer, share=train_loader.batch_share, comm=comm)
        # Each rank's own stream of random starts and dropout masks (rank 0 keeps the seed's).
        backend.manual_seed(config.seed + 1_000_003 * comm.rank)
    record = dataclasses.asdict(config)
    record["eval_split"] = eval_split
    record["in_channels"], record["image_size"] = int(images.shape[1]), int(images.shape[2])
    if comm.size > 1:
        record["world_size"] = comm.size
    resume = resume and os.path.exists(os.path.join(out_dir, CHECKPOINT))  # no checkpoint yet: start over
    if config.adv in SINGLE_STEP:
        guard = OverfittingGuard(model, images[:256], labels[:256], config)
        epoch_end = _chain(guard, epoch_end)
    history = fit(model, train_loader, optimizer, config.epochs, schedule=schedule, eval_loader=eval_loader,
                  out_dir=out_dir, resume=resume, perturb=make_perturb(config, optimizer, len(train_loader)),
                  config=record, progress=progress, epoch_end=epoch_end,
                  penalty=make_penalty(config, optimizer, len(train_loader)))
    return model, history


def _chain(first, second):
    if second is None:
        return first
    return lambda epoch, record: bool(first(epoch, record)) | bool(second(epoch, record))


class OverfittingGuard:
    """Detects catastrophic overfitting of fast FGSM training: PGD accuracy on a fixed training
    batch drops sharply while FGSM accuracy stays high. On a drop of more than ``drop`` below the
    best value seen, the best weights are restored and training is told to stop."""

    def __init__(self, model, images, labels, config, drop=0.2, steps=10):
        self.model, self.images, self.labels = model, images, labels
        self.config, self.drop, self.steps = config, drop, steps
        self.best, self.best_state = -1.0, None

    def __call__(self, epoch, record):
        alpha = max(self.config.eps / 4, 1e-8)
        attack = lambda m, x, y: pgd(m, x, y, eps=self.config.eps, alpha=alpha, steps=self.steps)
        acc = robust_accuracy(self.model, (self.images, self.labels), attack, progress=False)["robust_accuracy"]
        record["guard_pgd_accuracy"] = acc
        if acc >= self.best:
            self.best, self.best_state = acc, self.model.state_dict()
            return False
        if acc < self.best - self.drop:
            self.model.load_state_dict(self.best_state)
            record["stopped"] = (f"catastrophic overfitting: PGD accuracy on a fixed training batch fell from "
                                 f"{self.best:.3f} to {acc:.3f}; restored the best epoch's weights")
            return True
        return False


# The image shape of each data set, which bounds a checkpoint's recorded config: a tampered
# ``image_size`` would otherwise size the model (3000 -> gigabytes) before its weights are
# compared with anything. A run may train on downscaled images (the study's tests do), so the
# size is an upper bound; arrays trained under another data set name (``train_on_arrays``) get
# SHAPE_LIMITS, the largest images the zoo's models are meant for.
DATASET_SHAPES = {"mnist": (1, 28), "cifar10": (3, 32)}
SHAPE_LIMITS = (4, 64)  # in_channels, image_size


def load_model(checkpoint_path, device="cpu"):
    """(model, checkpoint dict) rebuilt from a training checkpoint.

    Before the model is built, the recorded configuration is checked (``in_channels`` and
    ``image_size`` against the data set's image shape, :func:`_recorded_shape`) and every
    stored weight must be
    finite: a NaN weight gives a NaN loss and a meaningless accuracy, never a result."""
    if not os.path.exists(checkpoint_path):
        raise FileNotFoundError(f"checkpoint {checkpoint_path!r} does not exist")
    state = load(checkpoint_path)
    config = state.get("config") or {}
    if not isinstance(config, dict) or "model" not in config or not isinstance(state.get("model"), dict):
        raise ValueError(f"{checkpoint_path} has no recorded model (not a minidl training checkpoint?)")
    try:
        in_channels, image_size = _recorded_shape(config)
        for name, value in state["model"].items():
            if hasattr(value, "dtype"):
                check_finite_array(f"parameter {name!r}", value)
        model = get_model(config["model"], in_channels=in_channels, image_size=image_size)
        model.load_state_dict(state["model"])
    except (KeyError, ValueError, TypeError) as e:  # a tampered or foreign checkpoint: name the file
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise ValueError(f"{checkpoint_path}: does not hold a usable {config['model']!r} model ({message})") from None
    return model.to(device).eval(), state


def _recorded_shape(config):
    """(in_channels, image_size) a checkpoint's recorded ``config`` gives its model: the
    channels of its data set (:data:`DATASET_SHAPES`; MNIST's when none is recorded) and at
    most its image size, or for another data set within :data:`SHAPE_LIMITS`."""
    dataset = config.get("dataset", "mnist")
    known = DATASET_SHAPES.get(dataset) if isinstance(dataset, str) else None
    channels, size = known or SHAPE_LIMITS
    where = f" (the {dataset} images')" if known else ""
    shape = []
    for key, low, high in (("in_channels", channels if known else 1, channels), ("image_size", 1, size)):
        value = config.get(key, (known or DATASET_SHAPES["mnist"])[len(shape)])
        if isinstance(value, bool) or not isinstance(value, (int, numpy.integer)):
            raise TypeError(f"recorded {key}: expected an integer, got {value!r}")
        if not low <= value <= high:
            expected = f"{high}{where}" if low == high else f"an integer in [{low}, {high}]{where}"
            raise ValueError(f"recorded {key}: expected {expected}, got {value!r}")
        shape.append(int(value))
    return tuple(shape)


def _check_not_empty(images, what):
    """Refuse an empty image set: 0 steps, or an accuracy over 0 images, is no result."""
    if len(images) == 0:
        raise ValueError(f"{what} holds 0 images; expected at least 1")


def evaluate_checkpoint(checkpoint_path, data_dir=None, device="cpu", split="test", limit=None, progress=True):
    check_choice("split", split, ("test", "holdout"))
    check_number("limit", limit, minimum=1, integer=True, allow_none=True)
    model, state = load_model(checkpoint_path, device)
    config = state["config"]
    data_dir = data_dir or config.get("data_dir")
    if split == "holdout":
        images, labels = load_arrays(config["dataset"], data_dir, train=True, limit=config.get("train_limit"))
        _, held = split_holdout(images, labels, int(config.get("holdout") or 0))
        if held is None:
            raise ValueError("this checkpoint was trained without --holdout; use --split test")
        images, labels = held
    else:
        images, labels = load_arrays(config["dataset"], data_dir, train=False)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    _check_not_empty(images, f"the {config['dataset']} {split} set")
    result = evaluate(model, DataLoader((images, labels), 500, device=device), progress=progress)
    result.update(split=split, model=config["model"], dataset=config["dataset"])
    return result


# The largest distance between two images in [0, 1]^d: 1 under L-inf, sqrt(d) under L2, where
# 64 covers the data sets minidl reads (sqrt(3 * 32 * 32) = 55.4). A larger radius or step
# means nothing more, and 1e308 would overflow on the way.
EPS_LIMITS = {"inf": 1.0, "2": 64.0}


@dataclasses.dataclass
class AttackConfig:
    """What ``attack`` measures: a checkpoint's clean and robust accuracy on its dataset's test
    set (or ``data_dir``'s), under FGSM, PGD or AutoAttack (``version``). ``alpha`` None is
    the PGD default ``2.5 eps / steps``; ``judge_samples`` None is 20 for a randomized model
    and 1 otherwise (``adversarial.evaluate``); ``checks`` adds the sanity checks."""
    checkpoint: str
    attack: str = "pgd"        # fgsm | pgd | autoattack
    eps: float = 0.3
    alpha: float = None
    steps: int = 50
    restarts: int = 1
    norm: str = "inf"          # inf | 2
    loss: str = "ce"           # ce | margin
    eot_samples: int = 1
    data_dir: str = None
    device: str = "cpu"
    limit: int = None
    batch_size: int = 500
    checks: bool = True
    version: str = "standard"  # AutoAttack's: standard | rand
    seed: int = 0
    judge_samples: int = None

    def resolved(self):
        """A copy with ``alpha`` filled in, every setting checked (before anything is loaded)."""
        c = dataclasses.replace(self)
        if not isinstance(c.checkpoint, (str, os.PathLike)) or not os.fspath(c.checkpoint):
            raise ValueError(f"checkpoint: expected a file path, got {c.checkpoint!r}")
        check_choice("attack", c.attack, ATTACKS)
        check_choice("version", c.version, ("standard", "rand"))
        check_choice("loss", c.loss, ("ce", "margin"))
        limit = EPS_LIMITS[resolve_norm(c.norm, "attack")]
        check_number("eps", c.eps, minimum=0, strict=True, maximum=limit)
        check_number("steps", c.steps, minimum=1, integer=True)
        # the default step 2.5 eps / steps may exceed the radius (one step): at most 2.5 x the limit
        check_number("alpha", c.alpha, minimum=0, strict=True, maximum=PGD_ALPHA_FACTOR * limit, allow_none=True)
        check_number("restarts", c.restarts, minimum=1, integer=True)
        check_number("eot_samples", c.eot_samples, minimum=1, integer=True)
        check_number("limit", c.limit, minimum=1, integer=True, allow_none=True)
        check_number("batch_size", c.batch_size, minimum=1, integer=True)
        check_number("seed", c.seed, minimum=0, integer=True)
        check_number("judge_samples", c.judge_samples, minimum=1, integer=True, allow_none=True)
        c.alpha = pgd_alpha(c.eps, c.steps) if c.alpha is None else c.alpha
        return c


def attack_checkpoint(config, journal=None, resume=False, progress=True):
    """Clean and robust accuracy of the checkpoint an :class:`AttackConfig` names, plus the
    sanity checks of ``adversarial.evaluate`` on the first 500 images (``config.checks``).
    Under MPI the test set is split over the ranks and the result gathered; AutoAttack's result
    holds the per-stage ``breakdown``. The result says how points were judged
    (``judge_samples``, ``judged_by``).

    ``journal``: a file (``adversarial.journal``) that records every finished batch of the
    attack, so that a stopped run continues with ``resume=True`` where it stopped and, on the
    NumPy backend, returns what an uninterrupted run returns; the caller removes it
    (:func:`~minidl.adversarial.journal.discard_journal`) once the result is stored. The sanity
    checks are not journaled: a resumed run repeats them."""
    if not isinstance(config, AttackConfig):
        raise TypeError(f"attack_checkpoint: config: expected an AttackConfig, got {type(config).__name__}")
    config = config.resolved()  # every setting is checked before the model and the data are loaded
    model, state, (images, labels) = _load_attacked(config)
    comm = world()
    journal = _open_journal(config, journal, resume, comm, len(labels))
    judge = comm.broadcast_object(judge_samples_for(model, images[:PROBE_N], config.judge_samples))
    result = _run_attack(config, model, (images, labels), judge, journal, progress)
    out = _attack_report(config, state["config"], result, judge)
    if journal is not None:
        out["resumed_batches"] = comm.allgather_object(journal.resumed) if comm.size > 1 else journal.resumed
    if config.attack == "autoattack":
        out.update(version=config.version, breakdown=result["breakdown"])
    if config.checks:
        out["warnings"], out["checks"] = _attack_checks(config, model, (images, labels), judge, progress)
    if config.attack == "autoattack":
        out["warnings"] = out.get("warnings", []) + result["warnings"]
    return out


def _load_attacked(config):
    """(model, checkpoint dict, (images, labels)) of the test set the attack runs on."""
    # Seeded before the model is built (its initialisation draws from the generator), so that
    # with seed 0, the generator's state at import, a fresh process draws what earlier runs drew.
    backend.manual_seed(config.seed)
    model, state = load_model(config.checkpoint, config.device)
    recorded = state["config"]
    images, labels = load_arrays(recorded["dataset"], config.data_dir or recorded.get("data_dir"), train=False,
                                 limit=config.limit)
    _check_not_empty(images, f"the {recorded['dataset']} test set")
    return model, state, (images, labels)


def _open_journal(config, journal, resume, comm, n):
    """This rank's :class:`EvalJournal` at ``journal`` (None: no journal)."""
    if journal is None:
        if resume:
            raise ValueError("resume: expected a journal to resume from, got journal=None")
        return None
    settings = {"checkpoint_sha256": file_digest(config.checkpoint), "attack": config.attack, "eps": config.eps,
                "alpha": config.alpha, "steps": config.steps, "restarts": config.restarts, "norm": config.norm,
                "loss": config.loss, "eot_samples": config.eot_samples, "version": config.version,
                "seed": config.seed, "judge_samples": config.judge_samples, "n": n,
                "batch_size": config.batch_size, "ranks": comm.size, "rank": comm.rank}
    return EvalJournal(journal_path(journal, comm.size, comm.rank), settings, resume=resume)


def _run_attack(config, model, data, judge, journal, progress):
    """``robust_accuracy`` (or ``autoattack_accuracy``) of ``model`` under the configured attack."""
    c = config
    if c.attack == "autoattack":
        return autoattack_accuracy(model, data, c.eps, norm=c.norm, version=c.version, seed=c.seed,
                                   batch_size=c.batch_size, progress=progress, desc="attack", judge_samples=judge,
                                   journal=journal)
    if c.attack == "fgsm":
        run = lambda m, x, y: fgsm(m, x, y, c.eps, norm=c.norm, loss=c.loss)
    else:
        run = lambda m, x, y: pgd(m, x, y, c.eps, c.alpha, c.steps, norm=c.norm, restarts=c.restarts, loss=c.loss,
                                  eot_samples=c.eot_samples)
    return robust_accuracy(model, data, run, batch_size=c.batch_size, progress=progress, judge_samples=judge,
                           journal=journal)


def _attack_report(config, recorded, result, judge):
    """The result's settings and numbers, as the ``attack`` command prints and stores them."""
    c = config
    return {"checkpoint": c.checkpoint, "model": recorded["model"], "dataset": recorded["dataset"],
            "attack": c.attack, "eps": c.eps, "alpha": c.alpha, "steps": c.steps, "restarts": c.restarts,
            "norm": c.norm, "loss": c.loss, "eot_samples": c.eot_samples, "n": result["n"],
            "clean_accuracy": result["clean_accuracy"], "robust_accuracy": result["robust_accuracy"],
            "judge_samples": judge, "judged_by": judged_by(judge), "seed": c.seed,
            "training": {k: recorded.get(k)
                         for k in ("adv", "eps", "alpha", "steps", "epochs", "init", "eps_warmup", "noise")}}


def _attack_checks(config, model, data, judge, progress):
    """(warnings, numbers) of ``adversarial.sanity_checks`` on the first 500 images."""
    c = config
    images, labels = data
    huge_eps, huge_alpha = (1.0, 0.1) if resolve_norm(c.norm, "attack") == "inf" else (50.0, 5.0)
    return sanity_checks(
        model, (images[:500], labels[:500]),
        lambda m, x, y: pgd(m, x, y, c.eps, c.alpha, c.steps, norm=c.norm, eot_samples=c.eot_samples),
        fgsm_attack=lambda m, x, y: fgsm(m, x, y, c.eps, norm=c.norm),
        more_steps_attack=lambda m, x, y: pgd(m, x, y, c.eps, c.alpha, 2 * c.steps, norm=c.norm,
                                              eot_samples=c.eot_samples),
        huge_eps_attack=lambda m, x, y: pgd(m, x, y, huge_eps, huge_alpha, c.steps, norm=c.norm,
                                            eot_samples=c.eot_samples),
        batch_size=c.batch_size, progress=progress, judge_samples=judge)


def judged_by(samples):
    """How ``attack_checkpoint`` judged the points, in words (for its result and the JSON)."""
    if samples == 1:
        return "the argmax of one forward pass"
    return f"the argmax of the mean softmax of {samples} forward passes (the expectation over the model's noise)"
