"""minidl.distributed: sharding arithmetic and gradient weighting in one process, and the real
thing under ``mpirun -n 2`` (skipped without mpi4py and an MPI launcher; the ``distributed``
extra provides both)."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, strategies as st

import minidl as md
from minidl import distributed
from minidl.adversarial import StageLog, autoattack, fgsm, pgd, robust_accuracy
from minidl.data import DataLoader
from minidl.experiment import train_on_arrays
from minidl.functional import cross_entropy
from minidl.train import CHECKPOINT

from conftest import examples

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "mpi"))
from cases import AA_EPS, autoattack_data, banded_model, dataset, tiny_model, train_config  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "mpi", "worker.py")
MPIRUN = shutil.which("mpirun") or shutil.which("mpiexec")
try:
    import mpi4py  # noqa: F401
    HAVE_MPI4PY = True
except ImportError:
    HAVE_MPI4PY = False
needs_mpi = pytest.mark.skipif(not (MPIRUN and HAVE_MPI4PY), reason="needs mpi4py and mpirun (extra 'distributed')")


class FakeComm(distributed.SingleProcess):
    """Rank ``rank`` of ``size`` for the arithmetic that needs no other process."""

    def __init__(self, rank, size):
        self.rank, self.size = rank, size


# --- one process -----------------------------------------------------------------------------
@examples(60)
@given(n=st.integers(0, 200), size=st.integers(1, 9))
def test_shards_are_disjoint_ordered_and_cover_everything(n, size):
    bounds = [distributed.shard_bounds(n, r, size) for r in range(size)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("args, message", [((10, 2, 2), "rank"), ((10, -1, 2), "rank"), ((10, 0, 0), "size"),
                                           ((-1, 0, 1), "n"), ((2.5, 0, 1), "n")])
def test_shard_bounds_rejects_bad_arguments(args, message):
    with pytest.raises((ValueError, TypeError), match=message):
        distributed.shard_bounds(*args)


@examples(25)
@given(n=st.integers(6, 40), batch=st.integers(3, 12), size=st.integers(1, 3), shuffle=st.booleans())
def test_sharded_loader_blocks_make_up_the_global_batches(n, batch, size, shuffle):
    x, y = np.arange(n, dtype=np.float32)[:, None], np.arange(n)
    last = n % batch
    if batch < size or 0 < last < size:
        with pytest.raises(ValueError, match="batch_size"):
            DataLoader((x, y), batch, shuffle=shuffle, seed=1, shard=FakeComm(0, size))
        return
    whole = [yb.numpy() for _, yb in DataLoader((x, y), batch, shuffle=shuffle, seed=1)]
    parts = []
    for r in range(size):
        loader = DataLoader((x, y), batch, shuffle=shuffle, seed=1, shard=FakeComm(r, size))
        blocks = []
        for _, yb in loader:
            blocks.append((yb.numpy(), loader.batch_share()))
        parts.append(blocks)
    for i, global_batch in enumerate(whole):
        got = np.concatenate([parts[r][i][0] for r in range(size)])
        np.testing.assert_array_equal(got, global_batch)
        assert sum(parts[r][i][1] for r in range(size)) == pytest.approx(1.0)


def test_sharded_loader_augments_each_image_as_the_unsharded_loader_does():
    x, y = np.random.default_rng(0).random((12, 3, 8, 8)).astype(np.float32), np.arange(12)
    flip = lambda images, rng: np.where((rng.random(len(images)) < 0.5)[:, None, None, None],
                                        images[..., ::-1], images)
    whole = np.concatenate([xb.numpy() for xb, _ in DataLoader((x, y), 6, shuffle=True, seed=3, transform=flip)])
    parts = [[xb.numpy() for xb, _ in DataLoader((x, y), 6, shuffle=True, seed=3, transform=flip,
                                                 shard=FakeComm(r, 2))] for r in range(2)]
    got = np.concatenate([np.concatenate([parts[0][i], parts[1][i]]) for i in range(2)])
    np.testing.assert_array_equal(got, whole)


def test_sharded_shuffled_loader_needs_a_seed():
    with pytest.raises(ValueError, match="seed"):
        DataLoader(dataset(8), 4, shuffle=True, shard=FakeComm(0, 2))


def test_allreduce_weights_by_share_and_zero_share_adds_nothing():
    model = tiny_model()
    x, y = dataset(6)
    cross_entropy(model(md.tensor(x)), md.tensor(y)).backward()
    before = [p.grad.numpy().copy() for p in model.parameters()]
    distributed.allreduce_gradients(model.parameters(), share=0.25, bucket_bytes=100)
    for b, p in zip(before, model.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), 0.25 * b, rtol=1e-6)
    for p in model.parameters():
        p.grad.array[...] = np.nan  # an empty shard's mean gradient
    distributed.allreduce_gradients(model.parameters(), share=0.0)
    assert all(np.all(p.grad.numpy() == 0) for p in model.parameters())


@pytest.mark.parametrize("share", [float("nan"), -0.1, 1.5])
def test_allreduce_rejects_bad_share(share):
    model = tiny_model()
    with pytest.raises(ValueError, match="share"):
        distributed.allreduce_gradients(model.parameters(), share=share)


def test_buckets_respect_size_dtype_and_order():
    from minidl.distributed.data_parallel import _buckets
    params = [md.tensor(np.zeros(n, dtype=dtype), requires_grad=True)
              for n, dtype in ((3, np.float32), (3, np.float32), (10, np.float32), (2, np.float64), (1, np.float64))]
    for p in params:
        p.grad = md.tensor(np.zeros(p.shape, dtype=p.dtype))
    params[4].grad = None  # no gradient: in no bucket
    where = lambda buckets: [[next(i for i, q in enumerate(params) if q is p) for p in b] for b in buckets]
    assert where(_buckets(params, bucket_bytes=24)) == [[0, 1], [2], [3]]  # 12 + 12 bytes fit, 40 does not
    assert where(_buckets(params, bucket_bytes=23)) == [[0], [1], [2], [3]]
    assert where(_buckets(params, bucket_bytes=10**6)) == [[0, 1, 2], [3]]  # a new dtype starts a bucket


def test_distributed_optimizer_forwards_to_the_wrapped_one():
    model = tiny_model()
    opt = md.optim.SGD(model.parameters(), lr=0.1)
    wrapped = distributed.DistributedOptimizer(opt, share=lambda: 1.0)
    wrapped.lr = 0.5
    assert opt.lr == 0.5 and wrapped.steps == 0
    x, y = dataset(4)
    cross_entropy(model(md.tensor(x)), md.tensor(y)).backward()
    wrapped.step()
    assert opt.steps == 1
    with pytest.raises(TypeError, match="share"):
        distributed.DistributedOptimizer(opt, share=0.5)


def test_init_without_a_launcher_is_the_single_process():
    assert not distributed.launched_by_mpi({"PMI_SIZE": "1"})
    assert distributed.launched_by_mpi({"OMPI_COMM_WORLD_SIZE": "4"})
    comm = distributed.init() if not distributed.launched_by_mpi() else None
    if comm is not None:
        assert isinstance(comm, distributed.SingleProcess) and comm.size == 1 and comm.is_root
    with pytest.raises(ValueError, match="backend_name"):
        distributed.init("gloo")


class RootSays(FakeComm):
    """Rank 1 of 2 whose broadcasts deliver what rank 0 decided (``said``, in order)."""

    def __init__(self, said):
        super().__init__(1, 2)
        self.said = list(said)

    def broadcast_object(self, obj, root=0):
        return self.said.pop(0)


def test_study_stage_follows_rank_zeros_decision_not_its_own_disk(tmp_path):
    """A rank that found a finished stage on its own disk while rank 0 recomputes it would skip
    the collective work the others do (a hang); it follows rank 0's broadcast decision, and
    leaves writing to rank 0."""
    from minidl.study.stages import Stages
    Stages(str(tmp_path)).run("s", {"a": 1}, lambda: {"old": True})  # a finished stage on this disk
    calls = []
    stages = Stages(str(tmp_path), progress=False, comm=RootSays([None, 1.5]))
    result = stages.run("s", {"a": 1}, lambda: calls.append(1) or {"new": True}, sharded=True)
    assert calls == [1] and result == {"new": True} and stages.timings["s"] == 1.5
    assert json.load(open(tmp_path / "stages" / "s.json"))["result"] == {"old": True}  # rank 1 wrote nothing
    # a stage rank 0 runs alone: rank 1 takes the broadcast result and computes nothing
    stages = Stages(str(tmp_path), progress=False, comm=RootSays([None, {"root": 1}, 0.5]))
    assert stages.run("t", {}, lambda: calls.append(2)) == {"root": 1} and calls == [1]
    assert not os.path.exists(tmp_path / "stages" / "t.json")


def test_a_stage_run_alone_sees_a_one_process_world():
    from minidl.study.stages import alone
    old = distributed.set_world(FakeComm(1, 2))
    try:
        assert alone(lambda: distributed.world().size) == 1
        assert distributed.world().size == 2
    finally:
        distributed.set_world(old)


class LogsOfRanks(distributed.SingleProcess):
    """A communicator whose allgather_object answers the given per-rank objects."""

    def __init__(self, objects):
        self.objects = objects

    def allgather_object(self, obj):
        return self.objects


def test_stage_log_gathered_sums_counts_and_takes_the_slowest_rank():
    a, b, empty = StageLog(), StageLog(), StageLog()
    a.add("clean", 5, 0.5, n=6)
    a.add("apgd-ce", 3, 2.0)
    b.add("clean", 4, 0.25, n=5)
    b.add("apgd-ce", 2, 3.0)
    ranks = [(log.n, list(log.stages.items())) for log in (a, empty, b)]  # a rank without examples logs nothing
    rows = a.gathered(LogsOfRanks(ranks)).rows()
    assert rows == [{"stage": "clean", "robust": 9, "robust_accuracy": 9 / 11, "seconds": 0.5},
                    {"stage": "apgd-ce", "robust": 5, "robust_accuracy": 5 / 11, "seconds": 3.0}]
    assert a.gathered().rows() == a.rows()  # one process: the log itself


# --- under mpirun -n 2 ------------------------------------------------------------------------
def _mpirun(case, out, n=2, timeout=180):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OPENBLAS_NUM_THREADS="1", MINIDL_NUM_THREADS="1", OMP_NUM_THREADS="1")
    return subprocess.run([MPIRUN, "-n", str(n), sys.executable, WORKER, case, str(out)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def _ok(proc):
    assert proc.returncode == 0, f"mpirun failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"


@needs_mpi
def test_allreduce_is_the_share_weighted_mean_of_the_rank_gradients(tmp_path):
    _ok(_mpirun("grads", tmp_path))
    saved = np.load(tmp_path / "grads.npz")
    model = tiny_model()
    x, y = dataset(11)
    cross_entropy(model(md.tensor(x)), md.tensor(y)).backward()
    for name, p in model.named_parameters():
        mean_of_ranks = 5 / 11 * saved[f"rank0/{name}"] + 6 / 11 * saved[f"rank1/{name}"]  # 5 + 6 examples
        np.testing.assert_allclose(saved[f"avg/{name}"], mean_of_ranks, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(saved[f"avg/{name}"], p.grad.numpy(), rtol=1e-4, atol=1e-6)


@needs_mpi
def test_broadcast_gives_every_rank_rank_zeros_weights_and_buffers(tmp_path):
    _ok(_mpirun("broadcast", tmp_path))
    assert json.load(open(tmp_path / "broadcast.json")) == {"same": True, "rank0_weights": True}


@needs_mpi
def test_two_ranks_train_the_weights_of_one_process(tmp_path):
    _ok(_mpirun("train", tmp_path))
    reference = tmp_path / "one"
    model, history = train_on_arrays(train_config(1), dataset(62), dataset(20, seed=1), str(reference),
                                     progress=False)
    state = md.load(str(tmp_path / "run" / CHECKPOINT))
    assert state["world_size"] == 2 and state["config"]["world_size"] == 2
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(state["model"][name], value, rtol=1e-4, atol=1e-6, err_msg=name)
    metrics = json.load(open(tmp_path / "run" / "metrics.json"))["history"][0]
    assert metrics["train_loss"] == pytest.approx(history[0]["train_loss"], rel=1e-4)
    assert metrics["test_accuracy"] == pytest.approx(history[0]["test_accuracy"])
    assert not os.path.exists(tmp_path / "run" / "metrics.json.tmp-0")


@needs_mpi
def test_two_rank_resume_is_exact_and_another_rank_count_is_refused(tmp_path):
    _ok(_mpirun("resume", tmp_path))
    a, b = md.load(str(tmp_path / "resumed" / CHECKPOINT)), md.load(str(tmp_path / "straight" / CHECKPOINT))
    for name in a["model"]:
        np.testing.assert_array_equal(a["model"][name], b["model"][name], err_msg=name)
    shutil.copytree(tmp_path / "resumed", tmp_path / "run")
    proc = _mpirun("wrong_size_resume", tmp_path, n=1)
    _ok(proc)
    assert "same number of ranks: expected 2, got 1" in (tmp_path / "error.txt").read_text()


@needs_mpi
def test_sharded_robust_accuracy_equals_the_unsharded_one(tmp_path):
    _ok(_mpirun("robust", tmp_path))
    got = json.load(open(tmp_path / "robust.json"))
    model, data = tiny_model(), dataset(13, seed=2)
    attacks = {"fgsm": lambda m, x, y: fgsm(m, x, y, 0.1),
               "pgd": lambda m, x, y: pgd(m, x, y, 0.1, 0.03, 5, random_start=False)}
    for name, attack in attacks.items():
        ref = robust_accuracy(model, data, attack, batch_size=4, progress=False)
        assert got[name]["n"] == 13
        assert got[name]["robust_correct"] == ref["robust_correct"].tolist()
        assert got[name]["clean_correct"] == ref["clean_correct"].tolist()
        assert got[name]["robust_accuracy"] == ref["robust_accuracy"]


@needs_mpi
def test_each_rank_journals_its_shard_and_a_resumed_run_gives_the_same_results(tmp_path):
    _ok(_mpirun("journal", tmp_path))
    got = json.load(open(tmp_path / "journal.json"))
    assert got["kept"] == [1, 1]  # rank 0's shard (7 images) and rank 1's (6), stopped in their second batch
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("whole")) == ["whole.rank0", "whole.rank1"]
    for key in ("clean_correct", "robust_correct"):
        whole, resumed = got[key]
        assert len(whole) == 13 and resumed == whole, key
    assert 0 < sum(got["robust_correct"][0]) < sum(got["clean_correct"][0])  # the noise decides some points


@needs_mpi
def test_sharded_rse_evaluation_gathers_the_one_process_results(tmp_path):
    from minidl.adversarial.rse_eval import RSEConfig, evaluate_rse
    _ok(_mpirun("rse", tmp_path))
    got = json.load(open(tmp_path / "rse.json"))
    ref = evaluate_rse(banded_model(), dataset(13, seed=2), RSEConfig(eps=0.0, alpha=0.01, steps=2, n_ensemble=2,
                                                                      eot_samples=2, batch_size=4, huge_eps=1.0,
                                                                      check_n=5))
    assert got["n"] == got["noisy_n"] == 13
    for key in ("clean_correct", "single_pass_robust_correct", "eot_robust_correct"):
        assert got[key] == ref[key].tolist(), key
    assert got["huge"] == ref["huge_eps_accuracy"]


@needs_mpi
def test_sharded_autoattack_breakdown_equals_the_unsharded_one(tmp_path):
    """Every stage's robust count over both ranks' shards is the one-process count (not one
    shard's), and a stage's seconds are those of the slower rank."""
    _ok(_mpirun("autoattack", tmp_path))
    got = json.load(open(tmp_path / "autoattack.json"))
    log = StageLog()
    model = tiny_model()
    ref = robust_accuracy(model, autoattack_data(model), lambda m, x, y: autoattack(m, x, y, AA_EPS, log=log),
                          batch_size=3, progress=False)
    expected = log.rows()
    assert [r["stage"] for r in got["rows"]] == ["clean", "apgd-ce", "apgd-t", "fab-t", "square"]
    assert [(r["stage"], r["robust"], r["robust_accuracy"]) for r in got["rows"]] == \
        [(r["stage"], r["robust"], r["robust_accuracy"]) for r in expected]
    assert expected[0]["robust"] > expected[-1]["robust"]  # the stages broke points: the counts say something
    assert all(sum(own[i]["robust"] for own in got["own"]) == r["robust"] for i, r in enumerate(got["rows"]))
    assert all(0 < own[0]["robust"] < r["robust"] for own in got["own"] for r in got["rows"][:1])  # each rank a part
    for i, row in enumerate(got["rows"]):
        assert row["seconds"] == max(own[i]["seconds"] for own in got["own"])
    assert got["robust_accuracy"] == ref["robust_accuracy"] == expected[-1]["robust_accuracy"]


@needs_mpi
def test_a_failing_rank_ends_every_rank_with_one_clear_line(tmp_path):
    proc = _mpirun("fail", tmp_path, timeout=60)  # a hang would raise TimeoutExpired
    assert proc.returncode != 0
    assert "error on rank 1 of 2: planted failure" in proc.stderr
    assert "Traceback" not in proc.stderr


@needs_mpi
def test_study_under_mpirun_writes_once_shards_the_table_and_reuses_stages(tmp_path):
    """Under mpirun -n 2 the study trains data-parallel, shards the accuracy table and writes
    from rank 0 alone; a second run reuses every stage on every rank (a rank deciding alone
    would leave the others waiting in a collective: the timeout). The figures are those of one
    process, up to the summation order of data-parallel training."""
    from minidl.study import run_study
    from cases import STUDY_TINY, study_arrays
    proc = _mpirun("study", tmp_path, timeout=300)
    _ok(proc)
    assert proc.stdout.count("[study] report:") == 2  # rank 0 reports, once per run
    assert proc.stdout.count("reusing finished stage") == 5 and proc.stdout.count("training the") == 3
    out = tmp_path / "study"
    parallel = json.load(open(out / "metrics.json"))
    assert parallel["world_size"] == 2
    leftovers = [f for _, _, files in os.walk(out) for f in files if ".tmp" in f or f.endswith(".lock")]
    assert leftovers == []
    one = run_study("mnist", "quick", out_dir=str(tmp_path / "one"), arrays=study_arrays(), overrides=STUDY_TINY,
                    progress=False)
    assert sorted(os.listdir(out)) == sorted(os.listdir(tmp_path / "one"))
    # The natural model trains without randomness beyond the shared batch order, and FGSM has no
    # random start: one example of 30 may flip with the summation order, no more. (Adversarial
    # training draws each rank's random starts from its own generator, so that model differs.)
    natural = parallel["accuracy"]["rows"]["natural"]
    for key, value in one["accuracy"]["rows"]["natural"].items():
        if key == "clean" or key.startswith("fgsm"):
            assert abs(natural[key] - value) <= 1 / 30 + 1e-9, key
    assert parallel["accuracy"]["n"] == one["accuracy"]["n"] == STUDY_TINY["eval_n"]


REAL_DATA = os.environ.get("MINIDL_TEST_DATA")


@needs_mpi
@pytest.mark.skipif(not (REAL_DATA and os.path.exists(os.path.join(REAL_DATA, "mnist", "t10k-images-idx3-ubyte.gz"))),
                    reason="needs the real MNIST files (MINIDL_TEST_DATA)")
def test_cli_train_and_attack_under_mpirun(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OPENBLAS_NUM_THREADS="1", MINIDL_NUM_THREADS="1")
    common = ["--data-dir", REAL_DATA]
    run = lambda n, *args: subprocess.run(
        ([MPIRUN, "-n", str(n)] if n > 1 else []) + [sys.executable, "-m", "minidl", *args, *common],
        env=env, capture_output=True, text=True, timeout=240)
    out = tmp_path / "run"
    proc = run(2, "train", "--dataset", "mnist", "--model", "mlp", "--epochs", "1", "--batch-size", "16",
               "--train-limit", "96", "--out", str(out), "--quiet")
    _ok(proc)
    assert md.load(str(out / CHECKPOINT))["world_size"] == 2
    assert sorted(os.listdir(out)) == sorted([CHECKPOINT, "config.json", "metrics.json"])  # lock released
    attack = ["attack", "--checkpoint", str(out / CHECKPOINT), "--attack", "fgsm", "--eps", "0.1", "--no-checks",
              "--limit", "50"]
    two = run(2, *attack, "--json", str(tmp_path / "two.json"), "--quiet")
    _ok(two)
    assert two.stdout.count("clean") == 1  # one rank reports
    _ok(run(1, *attack, "--json", str(tmp_path / "one.json"), "--quiet"))
    one, two = json.load(open(tmp_path / "one.json")), json.load(open(tmp_path / "two.json"))
    assert one["n"] == two["n"] == 50
    assert one["robust_accuracy"] == two["robust_accuracy"] and one["clean_accuracy"] == two["clean_accuracy"]
    # AutoAttack's breakdown covers both shards: its clean row counts every image, not one rank's
    aa = ["attack", "--checkpoint", str(out / CHECKPOINT), "--attack", "autoattack", "--eps", "0.3", "--no-checks",
          "--limit", "8", "--quiet"]
    _ok(run(2, *aa, "--json", str(tmp_path / "aa2.json")))
    _ok(run(1, *aa, "--json", str(tmp_path / "aa1.json")))
    one, two = json.load(open(tmp_path / "aa1.json")), json.load(open(tmp_path / "aa2.json"))
    assert two["breakdown"][0] == {**one["breakdown"][0], "seconds": two["breakdown"][0]["seconds"]}
    assert two["breakdown"][0]["robust"] == round(8 * one["clean_accuracy"])
    assert two["breakdown"][-1]["robust_accuracy"] == two["robust_accuracy"]
