"""The whole study in one call, and its command line: load the data, train (or reuse) the three
models, run every analysis as a cached stage, write ``metrics.json`` and ``report.md``."""
import os
import time

from .. import backend
from ..distributed import world
from ..experiment import load_arrays
from ..io import write_json
from .analyses import HESSIAN_ITERS, HESSIAN_K, accuracy_table, landscape_analysis, rse_table, uap_analysis
from .presets import get_preset, spectrum_settings
from .report import write_report
from .seeds import aggregate, print_verdicts, seed_folder, write_seeds_report
from .spectrum import spectrum_analysis
from .stages import Stages, train_models


def run_study(dataset, preset="quick", device="cpu", data_dir=None, out_dir="runs/study", arrays=None,
              overrides=None, progress=True, seed=0, say_report=True):
    """Run (or resume) the whole study and write the report. ``arrays`` = ((train_x, train_y),
    (test_x, test_y)) replaces the dataset files (used by the tests with synthetic data).

    Under ``mpirun`` the models train data-parallel and the accuracy table is sharded over the
    ranks (exact, gathered), as is the RSE table; the UAP and landscape stages run on rank 0 alone; rank 0
    alone writes. Every rank returns the metrics."""
    device = backend.normalize_device(device)
    base = "cifar10" if dataset == "cifar10" else "mnist"
    p = get_preset(base, preset, **(overrides or {}))
    comm = world()
    progress = progress and comm.is_root
    if comm.is_root:
        os.makedirs(out_dir, exist_ok=True)
    comm.barrier()
    stages = Stages(out_dir, progress, comm)
    total_start = time.perf_counter()
    if arrays is None:
        train = load_arrays(dataset, data_dir, train=True, limit=p.train_limit)
        test = load_arrays(dataset, data_dir, train=False)
    else:
        (train, test) = arrays
        if p.train_limit:
            train = (train[0][:p.train_limit], train[1][:p.train_limit])
    num_classes = int(max(train[1].max(), test[1].max())) + 1
    # Test images are split once: the first part for the accuracy table and landscape, a disjoint
    # part for UAP fooling rates (so UAPs are judged on images they were not built from).
    test_x, test_y = test
    uap_train = (train[0][-p.uap_n:], train[1][-p.uap_n:])
    uap_test = (test_x[:p.uap_test_n], test_y[:p.uap_test_n])
    eval_set = (test_x[:p.eval_n], test_y[:p.eval_n])

    models = train_models(p, dataset, train, test, device, out_dir, stages, progress, seed)
    accuracy = stages.run("accuracy", {"preset": p.to_dict(), "n": len(eval_set[1]), "models": _model_ids(models)},
                          lambda: accuracy_table(p, models, eval_set, num_classes, progress, seed), sharded=True)
    rse = stages.run("rse", {"preset": p.to_dict(), "models": _model_ids(models)},
                     lambda: rse_table(p, models["rse"], (test_x[:p.rse_eval_n], test_y[:p.rse_eval_n]),
                                       num_classes, progress), sharded=True)
    uap = stages.run("uap", {"preset": p.to_dict(), "models": _model_ids(models)},
                     lambda: uap_analysis(p, models, uap_train, uap_test, out_dir, progress, seed, stages))
    spectrum = stages.run("spectrum", {"preset": p.to_dict(), "models": _model_ids(models), "seed": seed,
                                       "settings": spectrum_settings(p)},
                          lambda: spectrum_analysis(p, base, models, uap_train, uap_test, out_dir, stages, progress,
                                                    seed))
    landscape = stages.run("landscape", {"preset": p.to_dict(), "models": _model_ids(models),
                                         "curvature": {"k": HESSIAN_K, "iters": HESSIAN_ITERS}},
                           lambda: landscape_analysis(p, models, eval_set, out_dir, seed))
    metrics = {"dataset": dataset, "preset": preset, "device": device, "seed": seed, "settings": p.to_dict(),
               "training": {k: v["history"] for k, v in models.items()},
               "training_configs": {k: v["config"] for k, v in models.items()},
               "accuracy": accuracy, "rse": rse, "uap": uap, "spectrum": spectrum, "landscape": landscape,
               "stage_seconds": stages.timings, "total_seconds": time.perf_counter() - total_start}
    if comm.size > 1:
        metrics["world_size"] = comm.size
    if comm.is_root:
        write_json(os.path.join(out_dir, "metrics.json"), metrics)
        write_report(os.path.join(out_dir, "report.md"), metrics)
    if progress and say_report:
        print(f"[study] report: {os.path.join(out_dir, 'report.md')}")
    return metrics


def run_seeds(dataset, preset="quick", seeds=None, device="cpu", data_dir=None, out_dir="runs/study", arrays=None,
              overrides=None, progress=True, seed=0, command=None):
    """The study at each seed of ``seeds`` (a list; None: one run at ``seed`` in ``out_dir``
    itself), then the verdict table printed with the report's path. Several seeds run in
    ``<out>/seed-<seed>`` (each reusing what it finished before) and ``<out>/report.md`` and
    ``<out>/metrics.json`` hold the aggregate (:mod:`minidl.study.seeds`). Returns the aggregate."""
    start = time.perf_counter()
    if seeds is None:
        metrics = run_study(dataset, preset, device, data_dir, out_dir, arrays, overrides, progress, seed,
                            say_report=False)   # the table's last line names it
        agg = aggregate({seed: metrics})
        if world().is_root:
            print_verdicts(agg, os.path.join(out_dir, "report.md"))
        return agg
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"run_seeds: seeds must be distinct and at least one, got {seeds}")
    per_seed, reports = {}, {}
    for s in seeds:
        folder = seed_folder(out_dir, s)
        if progress and world().is_root:
            print(f"[study] seed {s} -> {folder}", flush=True)
        per_seed[s] = run_study(dataset, preset, device, data_dir, folder, arrays, overrides, progress, s)
        reports[s] = os.path.join(folder, "report.md")
    agg = aggregate(per_seed)
    seconds = time.perf_counter() - start
    command = command or (f"python -m minidl study --dataset {dataset} --preset {preset} --device {device} "
                          f"--seeds {','.join(map(str, seeds))} --data-dir DIR --out DIR")
    path = os.path.join(out_dir, "report.md")
    if world().is_root:
        write_json(os.path.join(out_dir, "metrics.json"),
                   {"dataset": dataset, "preset": preset, "seeds": seeds, "command": command, "total_seconds": seconds,
                    "seed_folders": {str(s): seed_folder(out_dir, s) for s in seeds}, "aggregate": agg})
        write_seeds_report(path, agg, command, seconds, reports)
        print_verdicts(agg, path)
    return agg


def _model_ids(models):
    """What identifies the trained models in a stage's settings: their checkpoints' times."""
    return {k: v["checkpoint_mtime"] for k, v in models.items()}
