"""Training and evaluation loops with progress bars, per-epoch atomic checkpoints and exact resume.

A checkpoint (``<out>/checkpoint.npz``) holds the model's weights and buffers, the optimizer
and schedule state, the epoch just finished, every random state that the next epoch consumes
(the data loader's shuffling generator and the library generator behind dropout, noise
layers and attack random starts) and the metrics so far. ``fit(..., resume=True)`` restores
all of it, so a run stopped after epoch k and resumed reproduces, on the CPU, the weights of
an uninterrupted run with the same seed exactly.
"""
import json
import os
import time

from tqdm.auto import tqdm

from . import backend
from .autograd import no_grad
from .functional import cross_entropy
from .io import as_json, write_json
from .serialization import load, save

CHECKPOINT = "checkpoint.npz"


def _count_correct(logits, y):
    return (logits.data.argmax(axis=1) == y.data).sum()


def evaluate(model, loader, progress=True, desc="eval"):
    """Mean cross-entropy and accuracy of ``model`` (in eval mode; every sub-module's own
    mode restored afterwards) over ``loader``."""
    loss_sum, correct, seen = 0.0, 0, 0
    with model.mode(training=False), no_grad():
        for x, y in tqdm(loader, desc=desc, leave=False, disable=not progress):
            logits = model(x)
            loss_sum += float(cross_entropy(logits, y, reduction="sum").item())
            correct += int(_count_correct(logits, y))
            seen += len(y)
    return {"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1), "n": seen}


def train_epoch(model, loader, optimizer, schedule=None, perturb=None, progress=True, desc="train",
                schedule_per_batch=True):
    """One pass over ``loader``. ``perturb(model, x, y) -> x'`` replaces each batch by an
    adversarial one (adversarial training); the schedule steps after every batch."""
    model.train()
    loss_sum = None
    correct = seen = 0
    start = time.perf_counter()
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress)
    for i, (x, y) in enumerate(bar):
        if perturb is not None:
            x = perturb(model, x, y)
            model.train()
        logits = model(x)
        loss = cross_entropy(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if schedule is not None and schedule_per_batch:
            schedule.step()
        # Sums stay on the device; reading them (a host sync on a GPU) happens only for the bar.
        batch_loss = loss.data * len(y)
        loss_sum = batch_loss if loss_sum is None else loss_sum + batch_loss
        correct += _count_correct(logits, y)
        seen += len(y)
        if progress and (i % 20 == 0 or i == len(loader) - 1):
            elapsed = time.perf_counter() - start
            bar.set_postfix(loss=f"{float(loss_sum) / seen:.4f}", acc=f"{float(correct) / seen:.4f}",
                            img_s=f"{seen / max(elapsed, 1e-9):.0f}", lr=f"{optimizer.lr:.3g}")
    if schedule is not None and not schedule_per_batch:
        schedule.step()
    elapsed = time.perf_counter() - start
    return {"loss": float(loss_sum) / max(seen, 1), "accuracy": float(correct) / max(seen, 1),
            "images_per_s": seen / max(elapsed, 1e-9), "seconds": elapsed}


def checkpoint_state(model, optimizer, schedule, loader, epoch, history, config):
    return {
        "model": dict(model.state_dict()),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict() if schedule is not None else {},
        "loader": loader.state_dict(),
        "rng": as_json(backend.get_rng_state()),
        "epoch": epoch,
        "history": history,
        "config": config,
    }


def restore_checkpoint(path, model, optimizer=None, schedule=None, loader=None):
    """Load ``path`` into the given objects; returns the checkpoint dict."""
    state = load(path)
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if schedule is not None and state.get("schedule"):
        schedule.load_state_dict(state["schedule"])
    if loader is not None:
        loader.load_state_dict(state["loader"])
    if "rng" in state:
        backend.set_rng_state(state["rng"])
    return state


def fit(model, train_loader, optimizer, epochs, schedule=None, eval_loader=None, out_dir=None, resume=False,
        perturb=None, config=None, progress=True, epoch_end=None, schedule_per_batch=True):
    """Train for ``epochs`` epochs, evaluating and checkpointing after each.

    ``epoch_end(epoch, record)`` may return True to stop early (the reason goes in the record).
    Returns the history: a list of per-epoch dicts (train and eval metrics, seconds).
    Writes ``checkpoint.npz`` and ``metrics.json`` into ``out_dir`` when given.
    """
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"fit: epochs must be a non-negative integer, got {epochs!r}")
    history, first_epoch = [], 0
    ckpt = os.path.join(out_dir, CHECKPOINT) if out_dir else None
    if resume:
        if not ckpt or not os.path.exists(ckpt):
            raise FileNotFoundError(f"fit(resume=True): no checkpoint to resume from at {ckpt}")
        state = restore_checkpoint(ckpt, model, optimizer, schedule, train_loader)
        history = list(state.get("history", []))
        first_epoch = int(state["epoch"])
    for epoch in range(first_epoch, epochs):
        record = {"epoch": epoch + 1}
        record.update({f"train_{k}": v for k, v in train_epoch(
            model, train_loader, optimizer, schedule, perturb, progress, desc=f"epoch {epoch + 1}/{epochs}",
            schedule_per_batch=schedule_per_batch).items()})
        if eval_loader is not None:
            record.update({f"test_{k}": v for k, v in evaluate(model, eval_loader, progress).items()})
        stop = bool(epoch_end(epoch + 1, record)) if epoch_end is not None else False
        history.append(record)
        if progress:
            shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in record.items()}
            tqdm.write(json.dumps(shown))
        if out_dir:
            save(checkpoint_state(model, optimizer, schedule, train_loader, epoch + 1, history, config or {}), ckpt)
            write_json(os.path.join(out_dir, "metrics.json"), {"config": config or {}, "history": history})
        if stop:
            break
    return history
