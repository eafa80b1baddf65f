"""Glue shared by the CLI, the examples and the study: build the data, model, optimizer and
schedule that a :class:`TrainConfig` describes, train with checkpoints, evaluate a checkpoint."""
import dataclasses
import functools
import os

from . import backend
from .data import CIFAR10, MNIST, DataLoader, random_crop_flip
from .models import get_model
from .nn.init import SCHEMES, init_model
from .optim import SGD, Adam, CosineLR, CyclicLR, OneCycleLR, StepLR
from .serialization import load
from .train import CHECKPOINT, evaluate, fit


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
    adv: str = "none"          # none | pgd | fgsm
    eps: float = 0.3
    alpha: float = None
    steps: int = 40
    train_limit: int = None
    holdout: int = 0
    augment: bool = True
    weight_decay: float = None
    init: str = "default"      # default (the zoo model's own) | he | fan_in_uniform (nn.init.init_model)
    eps_warmup: float = 0.0    # epochs over which the training eps grows linearly from 0

    def resolved(self):
        """A copy with the dataset-dependent defaults filled in."""
        c = dataclasses.replace(self)
        c.optimizer = c.optimizer or ("adam" if c.dataset == "mnist" else "sgd")
        c.lr = c.lr or (1e-3 if c.optimizer == "adam" else 0.05)
        # Fast adversarial training relies on a cyclic learning rate (Wong et al. 2020).
        default_schedule = "cyclic" if c.adv == "fgsm" else "cosine" if c.optimizer == "adam" else "onecycle"
        c.schedule = c.schedule or default_schedule
        if c.weight_decay is None:
            c.weight_decay = 5e-4 if c.optimizer == "sgd" else 0.0
        if c.adv != "none" and c.alpha is None:
            c.alpha = 1.25 * c.eps if c.adv == "fgsm" else 0.01 if c.dataset == "mnist" else 2 / 255
        if c.init != "default" and c.init not in SCHEMES:
            raise ValueError(f"init must be 'default' or one of {SCHEMES}, got {c.init!r}")
        if c.eps_warmup < 0:
            raise ValueError(f"eps_warmup must be >= 0 epochs, got {c.eps_warmup}")
        if c.epochs < 0 or c.batch_size < 1:
            raise ValueError(f"epochs must be >= 0 and batch size >= 1, got {c.epochs} and {c.batch_size}")
        return c


def load_arrays(dataset, data_dir, train, limit=None):
    """(images, labels) of a split, raising one clear error when the files are missing."""
    if dataset not in ("mnist", "cifar10"):
        raise ValueError(f"dataset must be 'mnist' or 'cifar10', got {dataset!r}")
    if data_dir is not None and not os.path.isdir(data_dir):
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
                "cosine": lambda: CosineLR(opt, total),
                "onecycle": lambda: OneCycleLR(opt, total),
                "cyclic": lambda: CyclicLR(opt, total, high=config.lr, low=0.0, peak=0.4, offset=1),
                "step": lambda: StepLR(opt, step_size=max(1, total // 3), gamma=0.1)}[config.schedule]()
    return opt, schedule


def make_perturb(config, optimizer=None, steps_per_epoch=None):
    """The adversary used in training (None for natural training).

    With ``config.eps_warmup`` = E > 0 epochs, the batch trained at optimizer step t (0-based)
    is attacked with eps_t = eps * min(1, (t + 1) / (E * steps_per_epoch)) and the step size
    scaled alike (alpha * eps_t / eps): PGD training from scratch at MNIST's eps = 0.3 can
    otherwise stall at chance accuracy. The step is read from the optimizer, so a resumed
    run continues the ramp where it stopped."""
    if config.adv == "none":
        return None
    from .adversarial import fgsm_random_start, pgd
    if config.eps_warmup > 0 and (optimizer is None or not steps_per_epoch):
        raise ValueError("make_perturb: eps_warmup needs the optimizer and steps_per_epoch")
    attack = (functools.partial(pgd, steps=config.steps, random_start=True) if config.adv == "pgd"
              else fgsm_random_start)

    def perturb(model, x, y):
        f = 1.0
        if config.eps_warmup > 0:
            f = min(1.0, (optimizer.steps + 1) / (config.eps_warmup * steps_per_epoch))
        return attack(model, x, y, eps=config.eps * f, alpha=config.alpha * f)
    return perturb


def run_training(config, out_dir, resume=False, progress=True, epoch_end=None):
    """Train the model a config describes on its dataset; checkpoint and metrics go to
    ``out_dir``. Returns (model, history)."""
    config = config.resolved()
    images, labels = load_arrays(config.dataset, config.data_dir, train=True, limit=config.train_limit)
    (images, labels), held = split_holdout(images, labels, config.holdout)
    test = held if held is not None else load_arrays(config.dataset, config.data_dir, train=False)
    return train_on_arrays(config, (images, labels), test, out_dir, resume=resume, progress=progress,
                           epoch_end=epoch_end, eval_split="holdout" if held is not None else "test")


def train_on_arrays(config, train, test, out_dir, resume=False, progress=True, epoch_end=None, eval_split="test"):
    """Train on ``train`` = (images, labels), evaluating on ``test`` after each epoch.

    Fast FGSM training gets the guard against catastrophic overfitting of Wong et al. (2020):
    after each epoch, PGD accuracy on a fixed training batch is measured; if it collapses
    (falls by more than 0.2 below its best), the weights of the best epoch are restored and
    training stops.
    """
    config = config.resolved()
    device = backend.normalize_device(config.device)
    backend.manual_seed(config.seed)
    images, labels = train
    transform = random_crop_flip if (config.dataset == "cifar10" and config.augment) else None
    train_loader = DataLoader((images, labels), config.batch_size, shuffle=True, seed=config.seed,
                              device=device, transform=transform)
    eval_loader = DataLoader(test, 500, device=device)
    model = get_model(config.model, in_channels=images.shape[1], image_size=images.shape[2])
    if config.init != "default":
        init_model(model, config.init)
    model = model.to(device)
    optimizer, schedule = make_optimizer(config, model, len(train_loader))
    record = dataclasses.asdict(config)
    record["eval_split"] = eval_split
    record["in_channels"], record["image_size"] = int(images.shape[1]), int(images.shape[2])
    if resume and not os.path.exists(os.path.join(out_dir, CHECKPOINT)):
        raise FileNotFoundError(f"--resume: no checkpoint in {out_dir}")
    if config.adv == "fgsm":
        guard = OverfittingGuard(model, images[:256], labels[:256], config)
        epoch_end = _chain(guard, epoch_end)
    history = fit(model, train_loader, optimizer, config.epochs, schedule=schedule, eval_loader=eval_loader,
                  out_dir=out_dir, resume=resume, perturb=make_perturb(config, optimizer, len(train_loader)),
                  config=record, progress=progress, epoch_end=epoch_end)
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
        from .adversarial import pgd, robust_accuracy
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


def load_model(checkpoint_path, device="cpu"):
    """(model, checkpoint dict) rebuilt from a training checkpoint."""
    if not os.path.exists(checkpoint_path):
        raise FileNotFoundError(f"checkpoint {checkpoint_path!r} does not exist")
    state = load(checkpoint_path)
    config = state.get("config") or {}
    if "model" not in config:
        raise ValueError(f"{checkpoint_path} has no recorded model name (not a minidl training checkpoint?)")
    model = get_model(config["model"], in_channels=int(config.get("in_channels", 1)),
                      image_size=int(config.get("image_size", 28)))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), state


def evaluate_checkpoint(checkpoint_path, data_dir=None, device="cpu", split="test", limit=None, progress=True):
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
    result = evaluate(model, DataLoader((images, labels), 500, device=device), progress=progress)
    result.update(split=split, model=config["model"], dataset=config["dataset"])
    return result


def attack_checkpoint(checkpoint_path, attack="pgd", eps=0.3, alpha=None, steps=50, restarts=1, norm="inf",
                      loss="ce", eot_samples=1, data_dir=None, device="cpu", limit=None, batch_size=500,
                      checks=True, progress=True):
    """Clean and robust accuracy of a checkpoint on its dataset's test set under FGSM or PGD,
    plus the sanity checks of ``adversarial.evaluate`` on the first 500 images."""
    from .adversarial import fgsm, pgd, robust_accuracy, sanity_checks
    model, state = load_model(checkpoint_path, device)
    config = state["config"]
    images, labels = load_arrays(config["dataset"], data_dir or config.get("data_dir"), train=False)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    alpha = 2.5 * eps / steps if alpha is None else alpha
    if attack == "fgsm":
        run = lambda m, x, y: fgsm(m, x, y, eps, norm=norm, loss=loss)
    elif attack == "pgd":
        run = lambda m, x, y: pgd(m, x, y, eps, alpha, steps, norm=norm, restarts=restarts, loss=loss,
                                  eot_samples=eot_samples)
    else:
        raise ValueError(f"attack must be 'fgsm' or 'pgd', got {attack!r}")
    result = robust_accuracy(model, (images, labels), run, batch_size=batch_size, progress=progress)
    out = {"checkpoint": checkpoint_path, "model": config["model"], "dataset": config["dataset"],
           "attack": attack, "eps": eps, "alpha": alpha, "steps": steps, "restarts": restarts, "norm": norm,
           "loss": loss, "eot_samples": eot_samples, "n": result["n"],
           "clean_accuracy": result["clean_accuracy"], "robust_accuracy": result["robust_accuracy"],
           "training": {k: config.get(k) for k in ("adv", "eps", "alpha", "steps", "epochs", "init", "eps_warmup")}}
    if checks:
        sub = (images[:500], labels[:500])
        warnings, numbers = sanity_checks(
            model, sub, lambda m, x, y: pgd(m, x, y, eps, alpha, steps, norm=norm, eot_samples=eot_samples),
            fgsm_attack=lambda m, x, y: fgsm(m, x, y, eps, norm=norm),
            huge_eps_attack=lambda m, x, y: pgd(m, x, y, 1.0 if norm == "inf" else 50.0, 0.1 if norm == "inf" else 5.0,
                                                steps, norm=norm, eot_samples=eot_samples),
            batch_size=batch_size, progress=progress)
        out["warnings"], out["checks"] = warnings, numbers
    return out
