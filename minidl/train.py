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

import numpy

from tqdm.auto import tqdm

from . import backend
from .autograd import no_grad
from .distributed import world
from .functional import cross_entropy
from .io import as_json, write_json
from .serialization import load, save
from .validation import check_number

CHECKPOINT = "checkpoint.npz"


class TrainingDiverged(RuntimeError):
    """The training loss or the weights became NaN or infinite."""


def _finite(value):
    return bool(numpy.isfinite(float(value)))


def _weights_finite(model):
    xp = None
    for p in model.parameters():
        xp = xp or backend.get_array_module(p.array)
        if not bool(xp.isfinite(p.array).all()):
            return False
    return True


def _count_correct(logits, y):
    return (logits.array.argmax(axis=1) == y.array).sum()


def _sum_over_ranks(loader, *values):
    """The values summed over the ranks that share ``loader`` (themselves when unsharded)."""
    comm = getattr(loader, "shard", None)
    if comm is None or comm.size == 1:
        return values
    return tuple(comm.allreduce_sum(numpy.asarray([float(v) for v in values], dtype=numpy.float64)).tolist())


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
    loss_sum, correct, seen = _sum_over_ranks(loader, loss_sum, correct, seen)
    return {"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1), "n": int(seen)}


def train_epoch(model, loader, optimizer, schedule=None, perturb=None, progress=True, desc="train",
                schedule_per_batch=True, penalty=None):
    """One pass over ``loader``. ``perturb(model, x, y) -> x'`` replaces each batch by an
    adversarial one (adversarial training); ``penalty(model, x, y) -> Tensor`` (on the clean
    batch) is added to the loss that is minimised (a regulariser such as GradAlign) but not to
    the reported loss; the schedule steps after every batch."""
    model.train()
    loss_sum = None
    correct = seen = 0
    start = time.perf_counter()
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress)
    for i, (x, y) in enumerate(bar):
        clean = x
        if perturb is not None:
            x = perturb(model, x, y)
            model.train()
        logits = model(x)
        loss = cross_entropy(logits, y)
        optimizer.zero_grad()
        (loss if penalty is None else loss + penalty(model, clean, y)).backward()
        optimizer.step()
        if schedule is not None and schedule_per_batch:
            schedule.step()
        # Sums stay on the device; reading them (a host sync on a GPU) happens only for the bar.
        batch_loss = loss.array * len(y)
        loss_sum = batch_loss if loss_sum is None else loss_sum + batch_loss
        correct += _count_correct(logits, y)
        seen += len(y)
        # The divergence guard reads the running sum (a host sync) only every 20 batches: a
        # NaN or infinity in any batch's loss stays in the sum.
        if (i % 20 == 0 or i == len(loader) - 1) and not _finite(loss_sum):
            raise TrainingDiverged(f"the training loss became {float(loss_sum) / seen} by batch {i + 1} of {desc}")
        if progress and (i % 20 == 0 or i == len(loader) - 1):
            elapsed = time.perf_counter() - start
            bar.set_postfix(loss=f"{float(loss_sum) / seen:.4f}", acc=f"{float(correct) / seen:.4f}",
                            img_s=f"{seen / max(elapsed, 1e-9):.0f}", lr=f"{optimizer.lr:.3g}")
    if schedule is not None and not schedule_per_batch:
        schedule.step()
    elapsed = time.perf_counter() - start
    loss_sum, correct, seen = _sum_over_ranks(loader, 0.0 if loss_sum is None else loss_sum, correct, seen)
    return {"loss": float(loss_sum) / max(seen, 1), "accuracy": float(correct) / max(seen, 1),
            "images_per_s": seen / max(elapsed, 1e-9), "seconds": elapsed}


def checkpoint_state(model, optimizer, schedule, loader, epoch, history, config, comm=None):
    """Everything a resumed run needs. In a data-parallel run (``comm`` of N > 1 ranks) the
    weights, optimizer and loader are the same on every rank, but each rank's library
    generator (random starts, dropout) is its own: all N are gathered under ``rng_ranks``."""
    comm = comm or world()
    rng = as_json(backend.get_rng_state())
    state = {
        "model": dict(model.state_dict()),
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict() if schedule is not None else {},
        "loader": loader.state_dict(),
        "rng": rng,
        "epoch": epoch,
        "history": history,
        "config": config,
    }
    if comm.size > 1:
        state["world_size"] = comm.size
        state["rng_ranks"] = comm.allgather_object(rng)
    return state


def restore_checkpoint(path, model, optimizer=None, schedule=None, loader=None, comm=None):
    """Load ``path`` into the given objects; returns the checkpoint dict.

    A checkpoint of a data-parallel run resumes only with the same number of ranks (each
    rank takes back its own generator state)."""
    comm = comm or world()
    state = load(path)
    saved_size = int(state.get("world_size", 1))
    if saved_size != comm.size:
        raise ValueError(f"{path}: resume with the same number of ranks: expected {saved_size}, got {comm.size}")
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if schedule is not None and state.get("schedule"):
        schedule.load_state_dict(state["schedule"])
    if loader is not None:
        loader.load_state_dict(state["loader"])
    if "rng_ranks" in state:
        backend.set_rng_state(state["rng_ranks"][comm.rank])
    elif "rng" in state:
        backend.set_rng_state(state["rng"])
    return state


def fit(model, train_loader, optimizer, epochs, schedule=None, eval_loader=None, out_dir=None, resume=False,
        perturb=None, config=None, progress=True, epoch_end=None, schedule_per_batch=True, penalty=None):
    """Train for ``epochs`` epochs, evaluating and checkpointing after each.

    ``epoch_end(epoch, record)`` may return True to stop early (the reason goes in the record).
    ``perturb`` and ``penalty`` are :func:`train_epoch`'s.
    Returns the history: a list of per-epoch dicts (train and eval metrics, seconds).
    Writes ``checkpoint.npz`` and ``metrics.json`` into ``out_dir`` when given.

    In a data-parallel run (``minidl.distributed.world()`` of N > 1 ranks, loaders built with
    ``shard=``) every rank calls ``fit``; metrics are summed over the ranks, rank 0 alone shows
    progress and writes files, and rank 0's ``epoch_end`` decision holds for all.

    Divergence guard: when the training loss or a weight becomes NaN or infinite, training
    stops with :class:`TrainingDiverged`; the checkpoint of the last good epoch (if any) is
    left as it was.
    """
    check_number("fit: epochs", epochs, minimum=0, integer=True)
    comm = world()
    progress = progress and comm.is_root
    history, first_epoch = [], 0
    ckpt = os.path.join(out_dir, CHECKPOINT) if out_dir else None
    if resume:
        if not ckpt or not os.path.exists(ckpt):
            raise FileNotFoundError(f"fit(resume=True): no checkpoint to resume from at {ckpt}")
        state = restore_checkpoint(ckpt, model, optimizer, schedule, train_loader, comm)
        history = list(state.get("history", []))
        first_epoch = int(state["epoch"])
    for epoch in range(first_epoch, epochs):
        record = {"epoch": epoch + 1}
        try:
            record.update({f"train_{k}": v for k, v in train_epoch(
                model, train_loader, optimizer, schedule, perturb, progress, desc=f"epoch {epoch + 1}/{epochs}",
                schedule_per_batch=schedule_per_batch, penalty=penalty).items()})
            if not _weights_finite(model):
                raise TrainingDiverged(f"a weight became NaN or infinite in epoch {epoch + 1}/{epochs}")
        except TrainingDiverged as e:
            kept = (f"the checkpoint of epoch {epoch} in {out_dir} is kept" if out_dir and epoch > 0
                    else "no checkpoint was written")
            raise TrainingDiverged(f"training diverged: {e} (lr {optimizer.lr:.3g}); {kept}; "
                                   "try a smaller learning rate") from None
        if eval_loader is not None:
            record.update({f"test_{k}": v for k, v in evaluate(model, eval_loader, progress).items()})
        stop = bool(epoch_end(epoch + 1, record)) if epoch_end is not None else False
        stop = comm.broadcast_object(stop)  # one rank stopping alone would leave the others waiting
        history.append(record)
        if progress:
            shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in record.items()}
            tqdm.write(json.dumps(shown))
        if out_dir:
            state = checkpoint_state(model, optimizer, schedule, train_loader, epoch + 1, history, config or {}, comm)
            if comm.is_root:
                save(state, ckpt)
                write_json(os.path.join(out_dir, "metrics.json"), {"config": config or {}, "history": history})
            comm.barrier()  # a rank that went on before the file exists could not resume from it
        if stop:
            break
    return history
