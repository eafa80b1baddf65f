"""What a second run of the study reuses instead of recomputing: finished stages and trained models.

A stage's result is ``<out>/stages/<name>.json`` holding the settings it was computed with; a
model is ``<out>/models/<name>/checkpoint.npz`` with ``finished.json`` once its training
ended. Either is reused when its saved settings equal the current ones, else recomputed (a
model whose training stopped half-way resumes from its last checkpoint).

Under ``mpirun`` rank 0 alone reads the folder, decides what to reuse and writes; every rank
gets its decisions (a rank that decided alone could skip a stage the others run collectively,
and the job would hang). A *sharded* stage runs on every rank, each on its part of the test
set; any other stage runs on rank 0 alone, as one process, and its result is broadcast.
"""
import dataclasses
import json
import os
import time

from ..adversarial.attacks import pgd_alpha
from ..distributed import SingleProcess, set_world, world
from ..experiment import TrainConfig, load_model, train_on_arrays
from ..io import as_json, read_json, write_json
from ..serialization import load as load_npz, save as save_npz
from ..train import CHECKPOINT

STAGES = "stages"


class Stages:
    """Each stage's result is a JSON file (plus an optional .npz of arrays) keyed by its settings:
    a finished stage with the same settings is loaded instead of recomputed."""

    def __init__(self, out_dir, progress=True, comm=None):
        self.comm = comm or world()
        self.dir = os.path.join(out_dir, STAGES)
        if self.comm.is_root:
            os.makedirs(self.dir, exist_ok=True)
        self.progress = progress and self.comm.is_root
        self.timings = {}

    def run(self, name, settings, compute, sharded=False):
        """The result of ``compute()``, or the saved one of an earlier run with equal settings.
        ``sharded``: ``compute`` splits its work over the ranks itself (``robust_accuracy``)."""
        path = os.path.join(self.dir, f"{name}.json")
        settings = as_json(settings)
        saved = None
        if self.comm.is_root and os.path.exists(path):
            saved = read_json(path)
            saved = saved if saved.get("settings") == settings else None
        saved = self.comm.broadcast_object(saved)
        if saved is not None:
            self._say(f"[study] {name}: reusing finished stage ({path})")
            self.timings[name] = saved.get("seconds", 0.0)
            return saved["result"]
        self._say(f"[study] {name} ...")
        start = time.perf_counter()
        if sharded:
            result = as_json(compute())
        else:
            result = self.comm.broadcast_object(as_json(alone(compute)) if self.comm.is_root else None)
        seconds = self.comm.broadcast_object(time.perf_counter() - start)
        self.timings[name] = seconds
        if self.comm.is_root:
            write_json(path, {"settings": settings, "result": result, "seconds": seconds})
        self._say(f"[study] {name}: done in {seconds:.1f} s")
        return result

    def arrays(self, name, settings, compute):
        """The dict of host arrays that ``compute()`` returns, or the one saved in
        ``<out>/stages/<name>.npz`` by an earlier call with equal ``settings`` (the arrays that
        several stages share, such as a matrix of per-image perturbations). Call it inside a
        stage's ``compute``, which runs on rank 0 alone."""
        path = os.path.join(self.dir, f"{name}.npz")
        key = json.dumps(as_json(settings), sort_keys=True)
        if os.path.exists(path):
            saved = load_npz(path)
            if saved.pop("settings_json", None) == key:
                self._say(f"[study] {name}: reusing saved arrays ({path})")
                return saved
        result = compute()
        save_npz({**result, "settings_json": key}, path)
        return result

    def _say(self, text):
        if self.progress:
            print(text, flush=True)


def alone(compute):
    """``compute()`` with this process as the whole world (nothing in it waits for other ranks)."""
    old = set_world(SingleProcess())
    try:
        return compute()
    finally:
        set_world(old)


def model_configs(p, dataset, device, seed):
    """The TrainConfig of the natural, adversarial and RSE models of preset ``p``."""
    return {
        "natural": TrainConfig(dataset=dataset, model=p.model, epochs=p.natural_epochs, batch_size=p.batch_size,
                               device=device, seed=seed),
        "adversarial": TrainConfig(dataset=dataset, model=p.model, epochs=p.adv_epochs, batch_size=p.batch_size,
                                   device=device, seed=seed, adv=p.adv, eps=p.adv_eps, lr=p.adv_lr,
                                   steps=p.adv_steps, alpha=_training_alpha(p), eps_warmup=p.adv_eps_warmup,
                                   init=p.adv_init, schedule=p.adv_schedule),
        "rse": TrainConfig(dataset=dataset, model=p.rse_model, epochs=p.rse_epochs, batch_size=p.batch_size,
                           device=device, seed=seed),
    }


def train_models(p, dataset, train, test, device, out_dir, stages, progress, seed):
    """Train (or reuse from ``<out>/models``) the natural, adversarial and RSE models."""
    configs = model_configs(p, dataset, device, seed)
    comm = world()
    progress = progress and comm.is_root
    models = {}
    for name, config in configs.items():
        folder = os.path.join(out_dir, "models", name)
        ckpt = os.path.join(folder, CHECKPOINT)
        settings = dataclasses.asdict(config.resolved())
        settings["train_n"] = int(len(train[1]))
        marker = os.path.join(folder, "finished.json")
        done = resume = False
        if comm.is_root:
            done = os.path.exists(marker) and os.path.exists(ckpt) and \
                same_settings(read_json(marker).get("settings"), settings)
            resume = not done and os.path.exists(ckpt) and os.path.exists(os.path.join(folder, "settings.json")) \
                and same_settings(read_json(os.path.join(folder, "settings.json")), settings)
        done, resume = comm.broadcast_object((done, resume))
        if done:
            if progress:
                print(f"[study] model {name}: reusing {ckpt}")
            model, state = load_model(ckpt, device)
            history = state.get("history", [])
        else:
            if progress:
                print(f"[study] training the {name} model ({config.model}, {config.epochs} epochs"
                      f"{', adversarial: ' + config.adv if config.adv != 'none' else ''})")
            if comm.is_root:
                os.makedirs(folder, exist_ok=True)
                write_json(os.path.join(folder, "settings.json"), settings)
            model, history = train_on_arrays(config, train, (test[0][:p.eval_n], test[1][:p.eval_n]), folder,
                                             resume=resume, overwrite=not resume, progress=progress)
            if comm.is_root:
                write_json(marker, {"settings": settings})
            comm.barrier()  # the checkpoint is written before any rank reads its time
        model.eval()
        models[name] = {"model": model, "history": history, "config": settings,
                        "checkpoint_mtime": comm.broadcast_object(os.path.getmtime(ckpt) if comm.is_root else None)}
    return models


def _training_alpha(p):
    """The preset's step for the training attack; None leaves FGSM at TrainConfig's 1.25 eps, and
    PGD gets the evaluation's rule (``pgd_alpha``) rather than TrainConfig's MNIST-only 0.01."""
    if p.adv_alpha is not None or p.adv == "fgsm":
        return p.adv_alpha
    return pgd_alpha(p.adv_eps, p.adv_steps)


def same_settings(saved, settings):
    """Whether saved training settings equal ``settings``. Keys that TrainConfig gained after
    the folder was written count as their defaults, so older study folders are still reused."""
    if not isinstance(saved, dict):
        return False
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    saved = {**{k: v for k, v in defaults.items() if k not in saved and k in settings}, **saved}
    return saved == as_json(settings)
