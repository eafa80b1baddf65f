"""Programs run under ``mpirun -n N`` by tests/test_distributed.py: one case per call,
``python tests/mpi/worker.py CASE OUT_DIR``. Rank 0 writes what the test compares."""
import json
import os
import sys

import numpy as np

import minidl as md
from minidl import distributed
from minidl.adversarial import StageLog, autoattack, fgsm, pgd, robust_accuracy
from minidl.experiment import TrainConfig, train_on_arrays
from minidl.models import get_model
from minidl.functional import cross_entropy

sys.path.insert(0, os.path.dirname(__file__))
from cases import AA_EPS, autoattack_data, banded_model, dataset, tiny_model, train_config  # noqa: E402  (shared with the in-process side)


def case_grads(out, comm):
    """Each rank computes the gradient of its own block; the weighted allreduce must give the
    gradient of the whole batch (rank 0 saves it, and every rank's own gradient)."""
    model = tiny_model()
    x, y = dataset(11)
    lo, hi = distributed.shard_bounds(len(x), comm.rank, comm.size)
    loss = cross_entropy(model(md.tensor(x[lo:hi])), md.tensor(y[lo:hi]))
    loss.backward()
    own = {name: p.grad.numpy().copy() for name, p in model.named_parameters()}
    distributed.allreduce_gradients(model.parameters(), share=(hi - lo) / len(x), comm=comm, bucket_bytes=64)
    averaged = {name: p.grad.numpy() for name, p in model.named_parameters()}
    everyone = comm.allgather_object(own)
    if comm.is_root:
        np.savez(os.path.join(out, "grads.npz"), **{f"avg/{k}": v for k, v in averaged.items()},
                 **{f"rank{r}/{k}": v for r, g in enumerate(everyone) for k, v in g.items()})
    same = comm.allgather_object({k: v.tobytes() for k, v in averaged.items()})
    assert all(s == same[0] for s in same), "ranks hold different averaged gradients"


def case_broadcast(out, comm):
    """Ranks start from different weights and buffers; afterwards all hold rank 0's."""
    model = tiny_model()
    for p in model.parameters():
        p.array += comm.rank
    model.register_buffer("counter", np.full(3, float(comm.rank)))
    distributed.broadcast_parameters(model, comm)
    state = {k: v.tobytes() for k, v in model.state_dict().items()}
    everyone = comm.allgather_object(state)
    if comm.is_root:
        expected = tiny_model().state_dict()
        same = all(e == everyone[0] for e in everyone)
        zero = all(np.array_equal(np.frombuffer(everyone[1][k], dtype=v.dtype), v.reshape(-1))
                   for k, v in expected.items())
        json.dump({"same": same, "rank0_weights": zero}, open(os.path.join(out, "broadcast.json"), "w"))


def case_train(out, comm, epochs=1, resume=False, subdir="run", adv="none"):
    train, test = dataset(62), dataset(20, seed=1)
    model, history = train_on_arrays(train_config(epochs, adv), train, test, os.path.join(out, subdir), resume=resume,
                                     progress=False)
    weights = comm.allgather_object({k: v.tobytes() for k, v in model.state_dict().items()})
    assert all(w == weights[0] for w in weights), "ranks hold different weights after training"


def case_resume(out, comm):
    """PGD training (random starts from each rank's own generator), stopped and resumed."""
    case_train(out, comm, epochs=1, subdir="resumed", adv="pgd")
    case_train(out, comm, epochs=2, resume=True, subdir="resumed", adv="pgd")
    case_train(out, comm, epochs=2, subdir="straight", adv="pgd")


def case_robust(out, comm):
    model = tiny_model()
    data = dataset(13, seed=2)
    result = {
        "fgsm": robust_accuracy(model, data, lambda m, x, y: fgsm(m, x, y, 0.1), batch_size=4, progress=False),
        "pgd": robust_accuracy(model, data, lambda m, x, y: pgd(m, x, y, 0.1, 0.03, 5, random_start=False),
                               batch_size=4, progress=False),
    }
    if comm.is_root:
        json.dump({k: {"robust_correct": v["robust_correct"].tolist(), "clean_correct": v["clean_correct"].tolist(),
                       "robust_accuracy": v["robust_accuracy"], "n": v["n"]} for k, v in result.items()},
                  open(os.path.join(out, "robust.json"), "w"))


def case_autoattack(out, comm):
    """AutoAttack's breakdown over the shards: rank 0 writes the gathered rows and every rank's
    own ones (12 images in batches of 3: each rank's batches are batches of the unsharded run)."""
    model = tiny_model()
    log = StageLog()
    result = robust_accuracy(model, autoattack_data(model), lambda m, x, y: autoattack(m, x, y, AA_EPS, log=log),
                             batch_size=3, progress=False)
    own = comm.allgather_object(log.rows())
    rows = log.gathered(comm).rows()
    if comm.is_root:
        json.dump({"rows": rows, "own": own, "robust_accuracy": result["robust_accuracy"]},
                  open(os.path.join(out, "autoattack.json"), "w"))


def case_journal(out, comm):
    """Each rank journals its shard in its own file; a run stopped on every rank after one batch
    and resumed gives the uninterrupted run's per-example results (the attack is noise from each
    rank's generator, restored from the journal, strong enough to decide some points)."""
    from minidl import backend
    from minidl.adversarial.journal import EvalJournal, journal_path
    from minidl.adversarial.evaluate import predict
    model = md.nn.Sequential(md.nn.Flatten(), md.nn.Linear(64, 3)).eval()  # random weights: noise flips points
    model[1].weight.array[...] = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    x, _ = dataset(13, seed=3)
    data = (x, predict(model, md.tensor(x)))
    settings = {"case": "journal", "ranks": comm.size, "rank": comm.rank}
    calls = []

    def attack(m, x, y, stop_at=None):
        calls.append(1)
        if len(calls) == stop_at:
            raise KeyboardInterrupt
        return md.Tensor(x.array + backend.rng().uniform(-0.5, 0.5, x.shape).astype(np.float32))

    def evaluate(name, resume=False, stop_at=None):
        backend.manual_seed(comm.rank)
        journal = EvalJournal(journal_path(os.path.join(out, name), comm.size, comm.rank), settings, resume=resume)
        return robust_accuracy(model, data, lambda m, x, y: attack(m, x, y, stop_at), batch_size=3, progress=False,
                               journal=journal)

    whole = evaluate("whole")
    try:
        evaluate("stopped", stop_at=len(calls) + 2)
    except KeyboardInterrupt:
        pass
    kept = len(json.load(open(journal_path(os.path.join(out, "stopped"), comm.size, comm.rank)))["batches"])
    resumed = evaluate("stopped", resume=True)
    kept = comm.allgather_object(kept)
    if comm.is_root:
        json.dump({"kept": kept, **{k: [r[k].tolist() for r in (whole, resumed)]
                                    for k in ("clean_correct", "robust_correct")}},
                  open(os.path.join(out, "journal.json"), "w"))


def case_fail(out, comm):
    """Rank 1 fails while rank 0 waits in a collective: the job must end, not hang."""
    from minidl import cli

    def planted(args):
        if comm.rank == 1:
            raise ValueError("planted failure")
        comm.barrier()
        return 0
    cli.cmd_info = planted  # the parser binds the command when main() builds it
    sys.exit(cli.main(["info"]))


def case_wrong_size_resume(out, comm):
    """Resuming a 2-rank checkpoint with another number of ranks is refused (here: N given)."""
    try:
        case_train(out, comm, epochs=2, resume=True, subdir="run", adv="pgd")
    except ValueError as e:
        if comm.is_root:
            open(os.path.join(out, "error.txt"), "w").write(str(e))
        return 0
    raise AssertionError("resume with another number of ranks was not refused")


def case_rse(out, comm):
    """evaluate_rse sharded: at eps 0 nothing random is left, so the gathered per-example results
    must be the one-process ones; at eps 0.1 every rank must hold the same gathered result."""
    from minidl.adversarial.rse_eval import RSEConfig, evaluate_rse
    model, data = banded_model(), dataset(13, seed=2)
    keys = ("clean_correct", "single_pass_robust_correct", "eot_robust_correct")
    exact = evaluate_rse(model, data, RSEConfig(eps=0.0, alpha=0.01, steps=2, n_ensemble=2, eot_samples=2,
                                                batch_size=4, huge_eps=1.0, check_n=5))
    noisy = evaluate_rse(model, data, RSEConfig(eps=0.1, alpha=0.05, steps=2, n_ensemble=2, eot_samples=2,
                                                batch_size=4))
    everyone = comm.allgather_object({k: noisy[k].tolist() for k in keys})
    assert all(e == everyone[0] for e in everyone), "ranks hold different gathered RSE results"
    if comm.is_root:
        json.dump({**{k: exact[k].tolist() for k in keys}, "n": exact["n"], "huge": exact["huge_eps_accuracy"],
                   "noisy_n": noisy["n"]}, open(os.path.join(out, "rse.json"), "w"))


def case_study(out, comm):
    """The study's whole pipeline on tiny synthetic data, twice: the second run must reuse
    every stage on every rank (rank 0's decision), and nothing but rank 0 writes."""
    from minidl.study import run_study
    from cases import STUDY_TINY, study_arrays
    for _ in range(2):
        metrics = run_study("mnist", "quick", out_dir=os.path.join(out, "study"), arrays=study_arrays(),
                            overrides=STUDY_TINY, progress=True)
    same = comm.allgather_object(json.dumps(metrics["accuracy"], sort_keys=True))
    assert all(s == same[0] for s in same), "ranks hold different accuracy tables"


if __name__ == "__main__":
    case, out = sys.argv[1], sys.argv[2]
    comm = distributed.init()
    globals()[f"case_{case}"](out, comm)
    comm.barrier()
