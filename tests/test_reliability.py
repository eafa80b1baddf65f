"""Runs and inputs that never lose work (issue 14): the CLI and the API under careless and
hostile use. Every case of the issue is a row of a table below; a hypothesis test feeds random
argument vectors to ``train``, ``attack`` and ``eval``.

All runs use a tiny synthetic MNIST (64 training and 32 test images, written here with the
checksum table patched to their MD5s) and the ``mlp`` model, so each run takes a fraction of a
second. Commands run in-process through ``minidl.cli.main(argv)``.
"""
import gzip
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

import minidl as md
from minidl import cli
from minidl.adversarial import fgsm, pgd
from minidl.data import mnist as mnist_mod
from minidl.data.idx import IDXFormatError, read_idx
from minidl.experiment import TrainConfig
from minidl.models import get_model
from minidl.optim import SGD
from minidl.run_folder import LOCK
from minidl.train import CHECKPOINT, TrainingDiverged, fit
from minidl.validation import check_finite_array, check_number, check_writable_file, check_writable_folder

from test_data import cifar_batch, idx_bytes, md5, write_files
from minidl.data import cifar as cifar_mod


# --- fixtures -------------------------------------------------------------------------------
def _tiny_mnist_files(n_train=64, n_test=32, seed=0):
    r = np.random.default_rng(seed)
    files = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = r.integers(0, 10, n).astype(np.uint8)
        pixels = r.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for c in range(10):  # a learnable class signal: a bright row per class
            pixels[labels == c, 2 * c + 4] = 250
        files[f"{split}-images-idx3-ubyte.gz"] = gzip.compress(idx_bytes(pixels, 2051))
        files[f"{split}-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(labels, 2049))
    return files


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    files = _tiny_mnist_files()
    write_files(folder / "mnist", files)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mnist_mod, "MNIST_MD5", {k: md5(v) for k, v in files.items()})
        yield str(folder)


@pytest.fixture(scope="module")
def checkpoint(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "run"
    assert cli.main(_train_argv(data_dir, out)) == 0
    return str(out / CHECKPOINT)


def _train_argv(data_dir, out, *extra):
    return ["train", "--dataset", "mnist", "--model", "mlp", "--epochs", "1", "--batch-size", "32",
            "--data-dir", data_dir, "--out", str(out), "--quiet", *extra]


def run(argv, capsys):
    """(exit code, stderr) of ``python -m minidl argv``, in-process."""
    capsys.readouterr()
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().err


def one_error_line(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# --- the run folder -------------------------------------------------------------------------
def test_finished_run_is_not_overwritten(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(_train_argv(data_dir, out), capsys)[0] == 0
    before = (out / CHECKPOINT).read_bytes()
    recorded = json.loads((out / "config.json").read_text())
    assert recorded["model"] == "mlp" and recorded["lr"] == 1e-3 and recorded["optimizer"] == "adam"
    # another configuration: refused, naming both
    code, err = run(_train_argv(data_dir, out, "--lr", "0.01"), capsys)
    line = one_error_line(err)
    assert code == 2 and "lr=0.001" in line and "lr=0.01" in line and "--overwrite" in line
    # the same configuration again: refused too (it would redo and overwrite finished work)
    code, err = run(_train_argv(data_dir, out), capsys)
    assert code == 2 and "same configuration" in one_error_line(err)
    assert (out / CHECKPOINT).read_bytes() == before
    assert not (out / LOCK).exists()


@pytest.mark.parametrize("changed, shown", [
    (["--lr", "5", "--optimizer", "sgd"], ["lr=0.001", "lr=5.0", "optimizer='adam'", "optimizer='sgd'"]),
    (["--batch-size", "16"], ["batch_size=32", "batch_size=16"]),
    (["--adv", "fgsm"], ["adv='none'", "adv='fgsm'"]),
    (["--seed", "3"], ["seed=0", "seed=3"]),
])
def test_resume_requires_the_same_configuration(data_dir, tmp_path, capsys, changed, shown):
    out = tmp_path / "run"
    assert run(_train_argv(data_dir, out), capsys)[0] == 0
    before = (out / CHECKPOINT).read_bytes()
    code, err = run(_train_argv(data_dir, out, "--resume", "--epochs", "2", *changed), capsys)
    line = one_error_line(err)
    assert code == 2 and "only --epochs may change" in line
    assert all(s in line for s in shown), line
    assert (out / CHECKPOINT).read_bytes() == before
    assert json.loads((out / "config.json").read_text())["lr"] == 1e-3


def test_resume_may_only_grow_epochs(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(_train_argv(data_dir, out, "--epochs", "2"), capsys)[0] == 0
    code, err = run(_train_argv(data_dir, out, "--resume", "--epochs", "1"), capsys)
    assert code == 2 and "--epochs: expected >= 2" in one_error_line(err)
    assert run(_train_argv(data_dir, out, "--resume", "--epochs", "3"), capsys)[0] == 0
    state = md.load(str(out / CHECKPOINT))
    assert state["epoch"] == 3 and [h["epoch"] for h in state["history"]] == [1, 2, 3]
    assert json.loads((out / "config.json").read_text())["epochs"] == 3


def test_overwrite_replaces_the_run(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(_train_argv(data_dir, out, "--epochs", "2"), capsys)[0] == 0
    assert run(_train_argv(data_dir, out, "--lr", "0.01", "--overwrite"), capsys)[0] == 0
    state = md.load(str(out / CHECKPOINT))
    assert state["config"]["lr"] == 0.01 and state["epoch"] == 1 and len(state["history"]) == 1
    code, err = run(_train_argv(data_dir, out, "--resume", "--overwrite"), capsys)
    assert code == 2 and "at most one of them" in one_error_line(err)


@pytest.mark.parametrize("name, content", [("config.json", "[1, 2]"), ("config.json", "{broken"),
                                           ("metrics.json", '"text"'), ("checkpoint.npz", "not a zip")])
def test_damaged_run_records_are_refused_with_one_line(name, content, data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / name).write_text(content)
    code, err = run(_train_argv(data_dir, out), capsys)
    assert code == 2 and name in one_error_line(err)
    assert run(_train_argv(data_dir, out, "--overwrite"), capsys)[0] == 0


def test_resume_without_a_run_is_an_error(data_dir, tmp_path, capsys):
    code, err = run(_train_argv(data_dir, tmp_path / "empty", "--resume"), capsys)
    assert code == 2 and "no run to resume" in one_error_line(err)


def test_lock_refuses_a_second_writer_and_stale_locks_are_taken_over(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK).write_text(json.dumps({"pid": alive.pid, "host": os.uname().nodename}))
        code, err = run(_train_argv(data_dir, out), capsys)
        assert code == 2 and f"in use by another run (pid {alive.pid}" in one_error_line(err)
        assert not (out / CHECKPOINT).exists() and (out / LOCK).exists()
    finally:
        alive.kill()
        alive.wait()
    # the process is gone: its lock is stale, taken over, and released at the end
    assert run(_train_argv(data_dir, out), capsys)[0] == 0
    assert (out / CHECKPOINT).exists() and not (out / LOCK).exists()


@pytest.mark.filterwarnings("ignore:CIFAR-10 .* holds")
def test_two_real_writers_and_a_killed_one(tmp_path, capsys):
    """A second ``train`` into a folder that a running ``python -m minidl train`` holds is
    refused; once that process is killed (no chance to clean up), its lock is stale and a new
    run takes the folder. CIFAR-10 batches are used because they carry no checksum, so the
    subprocess can read tiny synthetic ones."""
    import time
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    write_files(folder, {name: cifar_batch(8, i)[0]
                         for i, name in enumerate(cifar_mod.TRAIN_BATCHES + cifar_mod.TEST_BATCHES)})
    out = tmp_path / "run"
    argv = ["train", "--dataset", "cifar10", "--model", "mlp", "--batch-size", "8", "--data-dir", str(tmp_path),
            "--out", str(out), "--quiet"]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    first = subprocess.Popen([sys.executable, "-W", "ignore", "-m", "minidl", *argv, "--epochs", "100000"], cwd=repo,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not (out / LOCK).exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert (out / LOCK).exists(), "the first run never took the lock"
        code, err = run([*argv, "--epochs", "1"], capsys)
        assert code == 2 and f"in use by another run (pid {first.pid}" in one_error_line(err)
    finally:
        first.kill()
        first.wait()
    assert (out / LOCK).exists()  # SIGKILL: nobody removed it
    code, err = run([*argv, "--epochs", "1", "--overwrite"], capsys)
    assert code == 0, err
    assert md.load(str(out / CHECKPOINT))["epoch"] == 1 and not (out / LOCK).exists()


def test_lock_is_held_during_the_run_and_released_on_errors(data_dir, tmp_path, monkeypatch, capsys):
    import minidl.experiment as experiment
    out = tmp_path / "run"
    seen = []
    real = experiment.load_arrays

    def spy(*args, **kwargs):
        seen.append(json.loads((out / LOCK).read_text())["pid"])
        raise ValueError("stop here")
    monkeypatch.setattr(experiment, "load_arrays", spy)
    code, err = run(_train_argv(data_dir, out), capsys)
    assert code == 2 and "stop here" in one_error_line(err)
    assert seen == [os.getpid()] and not (out / LOCK).exists()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(experiment, "load_arrays", interrupted)
    code, err = run(_train_argv(data_dir, out), capsys)
    assert code == 130 and err.strip() == "interrupted" and not (out / LOCK).exists()
    monkeypatch.setattr(experiment, "load_arrays", real)


# --- fail early -----------------------------------------------------------------------------
def test_bad_out_fails_before_any_data_is_loaded(tmp_path, capsys):
    missing_data = tmp_path / "no-data-here"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    code, err = run(_train_argv(str(missing_data), a_file), capsys)
    assert code == 2 and "which is an existing file" in one_error_line(err)
    code, err = run(_train_argv(str(missing_data), ""), capsys)
    assert code == 2 and "--out: expected a folder path, got ''" in one_error_line(err)
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            code, err = run(_train_argv(str(missing_data), locked / "run"), capsys)
            assert code == 2 and "expected a writable folder" in one_error_line(err)
        finally:
            locked.chmod(0o700)


def test_attack_json_path_is_checked_before_attacking(checkpoint, data_dir, tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(cli, "attack_checkpoint", lambda *a, **k: calls.append(1))
    for bad, message in [(tmp_path, "which is a folder"), ("", "expected a file path, got ''")]:
        code, err = run(["attack", "--checkpoint", checkpoint, "--data-dir", data_dir, "--json", bad], capsys)
        assert code == 2 and message in one_error_line(err)
    assert calls == []


# --- one validation layer: the table ----------------------------------------------------------
BAD_ARGUMENTS = [
    # (command, extra arguments, what the one line must say)
    ("train", ["--lr", "nan"], "--lr: expected a finite number > 0, got nan"),
    ("train", ["--lr", "inf"], "--lr: expected a finite number > 0, got inf"),
    ("train", ["--lr", "0"], "--lr: expected a finite number > 0, got 0.0"),
    ("train", ["--lr", "-1"], "--lr: expected a finite number > 0"),
    ("train", ["--lr", "fast"], "--lr: expected a number, got 'fast'"),
    ("train", ["--epochs", "0"], "--epochs: expected an integer >= 1, got 0"),
    ("train", ["--epochs", "1.5"], "--epochs: expected an integer, got '1.5'"),
    ("train", ["--batch-size", "0"], "--batch-size: expected an integer >= 1, got 0"),
    ("train", ["--train-limit", "0"], "--train-limit: expected an integer >= 1, got 0"),
    ("train", ["--holdout", "-1"], "--holdout: expected an integer >= 0"),
    ("train", ["--seed", "-1"], "--seed: expected an integer >= 0"),
    ("train", ["--adv", "pgd", "--eps", "nan"], "--eps: expected a finite number > 0, got nan"),
    ("train", ["--adv", "pgd", "--alpha", "inf"], "--alpha: expected a finite number > 0, got inf"),
    ("train", ["--adv", "pgd", "--steps", "0"], "--steps: expected an integer >= 1, got 0"),
    ("train", ["--eps-warmup", "nan"], "--eps-warmup: expected a finite number >= 0, got nan"),
    ("train", ["--holdout", "64"], "holdout 64 must be smaller than the training set"),
    ("attack", ["--eps", "nan"], "--eps: expected a finite number > 0, got nan"),
    ("attack", ["--eps", "inf"], "--eps: expected a finite number > 0, got inf"),
    ("attack", ["--eps", "1e999"], "--eps: expected a finite number > 0, got inf"),
    ("attack", ["--steps", "0"], "--steps: expected an integer >= 1, got 0"),
    ("attack", ["--alpha", "nan"], "--alpha: expected a finite number > 0, got nan"),
    ("attack", ["--restarts", "0"], "--restarts: expected an integer >= 1, got 0"),
    ("attack", ["--eot-samples", "0"], "--eot-samples: expected an integer >= 1, got 0"),
    ("attack", ["--limit", "0"], "--limit: expected an integer >= 1, got 0"),
    ("attack", ["--norm", "1"], "invalid choice"),
    ("eval", ["--limit", "0"], "--limit: expected an integer >= 1, got 0"),
    ("eval", ["--limit", "-5"], "--limit: expected an integer >= 1"),
    ("eval", ["--split", "holdout"], "trained without --holdout"),
    ("eval", ["--bogus"], "unrecognized arguments: --bogus"),
    ("study", ["--seed", "-1"], "--seed: expected an integer >= 0, got -1"),
    ("study", ["--seed", "nan"], "--seed: expected an integer"),
    ("study", ["--out", ""], "--out: expected a folder path, got ''"),
    ("study", ["--out", "/proc/minidl-not-writable"], "--out: expected a writable folder"),
]


@pytest.mark.parametrize("command, extra, message", BAD_ARGUMENTS,
                         ids=[f"{c}{''.join(e)}" for c, e, _ in BAD_ARGUMENTS])
def test_bad_arguments_fail_with_one_line(command, extra, message, checkpoint, data_dir, tmp_path, capsys):
    if command == "train":
        argv = _train_argv(data_dir, tmp_path / "run", *extra)
    elif command == "study":
        argv = ["study", "--dataset", "mnist", "--data-dir", data_dir, "--out", str(tmp_path / "run"), "--quiet",
                *extra]
    else:
        argv = [command, "--checkpoint", checkpoint, "--data-dir", data_dir, "--quiet", *extra]
    code, err = run(argv, capsys)
    assert code == 2 and message in one_error_line(err)
    assert not (tmp_path / "run" / CHECKPOINT).exists()


def test_lr_zero_is_never_the_default():
    assert TrainConfig(lr=None, optimizer="sgd").resolved().lr == 0.05
    with pytest.raises(ValueError, match="lr: expected a finite number > 0, got 0"):
        TrainConfig(lr=0, optimizer="sgd").resolved()
    for field, value in [("lr", float("nan")), ("epochs", -1), ("batch_size", 0), ("weight_decay", float("inf")),
                         ("eps_warmup", float("nan")), ("train_limit", 0)]:
        with pytest.raises(ValueError, match=rf"^{field}: expected"):
            TrainConfig(**{field: value}).resolved()
    with pytest.raises(ValueError, match=r"^eps: expected a finite number > 0, got nan"):
        TrainConfig(adv="pgd", eps=float("nan")).resolved()
    with pytest.raises(ValueError, match=r"^optimizer: expected one of 'sgd', 'adam', got 'rmsprop'"):
        TrainConfig(optimizer="rmsprop").resolved()


@pytest.mark.parametrize("call, message", [
    (lambda m, x, y: fgsm(m, x, y, float("nan")), "fgsm: eps: expected a finite number >= 0, got nan"),
    (lambda m, x, y: fgsm(m, x, y, float("inf")), "fgsm: eps: expected a finite number >= 0, got inf"),
    (lambda m, x, y: pgd(m, x, y, 0.1, float("nan"), 2), "pgd: alpha: expected a finite number > 0, got nan"),
    (lambda m, x, y: pgd(m, x, y, 0.1, 0.01, True), "pgd: steps: expected an integer >= 1, got True"),
    (lambda m, x, y: pgd(m, x, y, 0.1, 0.01, 2, restarts=np.int64(0)), "pgd: restarts: expected an integer >= 1"),
])
def test_api_numbers_are_checked(call, message):
    model = get_model("mlp", in_channels=1, image_size=4)
    x, y = np.full((2, 1, 4, 4), 0.5, np.float32), np.array([0, 1])
    with pytest.raises((ValueError, TypeError)) as e:
        call(model, x, y)
    assert str(e.value).startswith(message)


@pytest.mark.parametrize("attack", [lambda m, x, y: fgsm(m, x, y, 0.1), lambda m, x, y: pgd(m, x, y, 0.1, 0.01, 2)])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_attack_inputs_must_be_finite(attack, bad):
    """One NaN pixel made fgsm return an all-NaN image; now it is refused by name."""
    model = get_model("mlp", in_channels=1, image_size=4)
    x, y = np.full((2, 1, 4, 4), 0.5, np.float32), np.array([0, 1])
    x[1, 0, 2, 3] = bad
    with pytest.raises(ValueError, match=r": x: expected finite values, got [01] NaN and [01] infinite of 32"):
        attack(model, x, y)


def test_check_number_and_friends():
    assert check_number("n", 3, minimum=1, integer=True) == 3
    assert type(check_number("n", np.int32(3), integer=True)) is int
    assert check_number("f", np.float32(0.5), minimum=0, maximum=1) == 0.5
    assert check_number("f", None, allow_none=True) is None
    for value, exc in [(None, TypeError), ("1", TypeError), (True, TypeError), (float("nan"), ValueError),
                       (float("-inf"), ValueError), (-1e-9, ValueError), (0.0, ValueError), (1.5, ValueError)]:
        with pytest.raises(exc, match=r"^f: expected a finite number > 0 and <= 1, got "):
            check_number("f", value, minimum=0, maximum=1, strict=True)
    with pytest.raises(TypeError, match=r"^k: expected an integer >= 1, got 2.0"):
        check_number("k", 2.0, minimum=1, integer=True)
    check_finite_array("a", np.array([1, 2]))
    with pytest.raises(ValueError, match=r"^a: expected finite values, got 2 NaN and 1 infinite of 4$"):
        check_finite_array("a", np.array([np.nan, 1, np.inf, np.nan]))


def test_writable_checks(tmp_path):
    assert check_writable_folder("o", str(tmp_path / "a" / "b")) and (tmp_path / "a" / "b").is_dir()
    assert not list((tmp_path / "a" / "b").iterdir())  # the probe file is gone
    with pytest.raises(ValueError, match=r"^o: expected a folder path, got ''"):
        check_writable_folder("o", "")
    with pytest.raises(ValueError, match="^j: expected a file, got .*which is a folder"):
        check_writable_file("j", str(tmp_path))
    assert check_writable_file("j", str(tmp_path / "new" / "r.json")) and not (tmp_path / "new" / "r.json").exists()


# --- the divergence guard -------------------------------------------------------------------
def test_divergence_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    md.manual_seed(0)
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 1, 4, 4)).astype(np.float32), rng.integers(0, 3, 64)
    model = md.nn.Sequential(md.nn.Flatten(), md.nn.Linear(16, 3))
    opt = SGD(model.parameters(), lr=0.1)
    loader = md.data.DataLoader((x, y), 16)

    def blow_up(epoch, record):  # after a good first epoch, an absurd learning rate
        opt.lr = 1e38  # float32 weights overflow within a few steps
    diverged = r"training diverged: .* epoch 2/4.*checkpoint of epoch 1 .* is kept"
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(TrainingDiverged, match=diverged):
        fit(model, loader, opt, 4, out_dir=str(tmp_path), progress=False, epoch_end=blow_up)
    state = md.load(str(tmp_path / CHECKPOINT))
    assert state["epoch"] == 1 and all(np.isfinite(v).all() for v in state["model"].values())
    assert len(json.loads((tmp_path / "metrics.json").read_text())["history"]) == 1


def test_diverging_cli_run_exits_non_zero(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, err = run(_train_argv(data_dir, out, "--optimizer", "sgd", "--lr", "1e30", "--schedule", "constant"), capsys)
    assert code == 2 and "training diverged" in one_error_line(err)
    assert not (out / CHECKPOINT).exists() and not (out / LOCK).exists()


# --- safe loading ---------------------------------------------------------------------------
def _forged_npz(path, shape, data=b"\0" * 64):
    import io
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("model/w.npy", buf.getvalue() + data)


def test_checkpoint_sizes_are_checked_before_allocating(tmp_path, capsys):
    path = tmp_path / "huge.npz"
    _forged_npz(path, (1 << 39,))  # 4 TiB
    with pytest.raises(ValueError, match=r"huge\.npz.*header says shape \(549755813888,\)"):
        md.load(str(path))
    code, err = run(["eval", "--checkpoint", path], capsys)
    assert code == 2 and "huge.npz" in one_error_line(err)
    # a consistent header, but more than the limit
    _forged_npz(path, (8,))
    assert md.load(str(path))["model"]["w"].shape == (8,)
    with pytest.raises(ValueError, match="more than the limit of 32"):
        md.load(str(path), max_bytes=32)
    # a lying zip directory (a stored size larger than the file)
    ok = tmp_path / "ok.npz"
    md.save({"w": np.zeros(1000)}, str(ok))
    raw = bytearray(ok.read_bytes())
    cut = tmp_path / "cut.npz"
    cut.write_bytes(bytes(raw[:len(raw) // 2]))
    code, err = run(["eval", "--checkpoint", cut], capsys)
    assert code == 2 and "cut.npz" in one_error_line(err)


@pytest.mark.parametrize("state, message", [
    ({"config": {"model": "mlp"}, "model": {"0": {"weight": np.zeros(3)}}}, "does not hold a usable 'mlp' model"),
    ({"config": {"model": "nope"}, "model": {"w": np.zeros(1)}}, "unknown model 'nope'"),
    ({"config": {"model": "mlp", "in_channels": "x"}, "model": {"w": np.zeros(1)}}, "does not hold a usable"),
    ({"model": {}}, "has no recorded model"),
    ({"config": [1, 2], "model": {}}, "has no recorded model"),
])
def test_foreign_checkpoints_fail_with_one_line_naming_the_file(state, message, tmp_path, capsys):
    path = tmp_path / "foreign.npz"
    md.save(state, str(path))
    for command in (["eval"], ["attack", "--steps", "1"]):
        code, err = run([*command, "--checkpoint", path], capsys)
        line = one_error_line(err)
        assert code == 2 and "foreign.npz" in line and message in line, line
    code, err = run(["eval", "--checkpoint", tmp_path], capsys)
    assert code == 2 and "is a folder" in one_error_line(err)


def test_idx_header_sizes_are_checked_before_reading(tmp_path):
    header = (2051).to_bytes(4, "big") + b"".join(s.to_bytes(4, "big") for s in (1 << 20, 1 << 10, 1 << 10))
    path = tmp_path / "bomb-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(header + b"\0" * 100))
    with pytest.raises(IDXFormatError, match=r"bomb-idx3-ubyte\.gz: header says shape .* more than the limit"):
        read_idx(path, 2051)
    with pytest.raises(IDXFormatError, match=r"bomb-idx3-ubyte\.gz: truncated, .* can hold at most"):
        read_idx(path, 2051, max_bytes=1 << 40)
    raw = tmp_path / "raw-idx3-ubyte"
    raw.write_bytes(header + b"\0" * 100)
    with pytest.raises(IDXFormatError, match=r"raw-idx3-ubyte: truncated"):
        read_idx(raw, 2051, max_bytes=1 << 40)


@pytest.mark.filterwarnings("ignore:CIFAR-10 .* holds")
def test_truncated_cifar_batch_is_one_line(tmp_path, capsys):
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    files = {name: cifar_batch(8, i)[0] for i, name in enumerate(cifar_mod.TRAIN_BATCHES + cifar_mod.TEST_BATCHES)}
    files["test_batch"] = files["test_batch"][:300]
    write_files(folder, files)
    code, err = run(["train", "--dataset", "cifar10", "--model", "mlp", "--epochs", "1", "--data-dir", tmp_path,
                     "--out", tmp_path / "run", "--quiet"], capsys)
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(lines) == 1 and "test_batch" in lines[0] and "Traceback" not in err


# --- exit codes -----------------------------------------------------------------------------
def test_internal_errors_exit_1_and_debug_shows_the_traceback(monkeypatch, capsys):
    def broken(args):
        return 1 / 0
    monkeypatch.setattr(cli, "cmd_info", broken)
    code, err = run(["info"], capsys)
    assert code == 1 and "Traceback" not in err
    assert err.strip().startswith("internal error: ZeroDivisionError") and len(err.strip().splitlines()) == 1
    with pytest.raises(ZeroDivisionError):
        cli.main(["info", "--debug"])
    with pytest.raises(ZeroDivisionError):
        cli.main(["--debug", "info"])
    assert cli.main(["--help"]) == 0


# --- random argument vectors ----------------------------------------------------------------
_INT = st.one_of(st.integers(-2, 3), st.sampled_from(["", "x", "1.5", "nan", "1e3", "-0", " 2"]))
_BIG_INT = st.one_of(_INT, st.sampled_from([str(2 ** 70), "100000"]))
_FLOAT = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                   st.sampled_from(["", "nan", "-inf", "1e999", "0", "1e-300", "abc", "0.1", "5e-3", "1e4"]))
TRAIN_OPTIONS = {"--epochs": _INT, "--batch-size": _BIG_INT, "--lr": _FLOAT,
                 "--optimizer": st.sampled_from(["sgd", "adam", "x"]),
                 "--schedule": st.sampled_from(["constant", "cosine", "onecycle", "cyclic", "step", ""]),
                 "--seed": _BIG_INT, "--adv": st.sampled_from(["none", "pgd", "fgsm", "cw"]), "--eps": _FLOAT,
                 "--alpha": _FLOAT, "--steps": _INT, "--eps-warmup": _FLOAT, "--train-limit": _BIG_INT,
                 "--holdout": _BIG_INT, "--init": st.sampled_from(["default", "he", "fan_in_uniform", "zero"]),
                 "--resume": st.none(), "--overwrite": st.none(), "--no-augment": st.none()}
ATTACK_OPTIONS = {"--attack": st.sampled_from(["fgsm", "pgd", "cw"]), "--eps": _FLOAT, "--alpha": _FLOAT,
                  "--steps": _INT, "--restarts": _INT, "--norm": st.sampled_from(["inf", "2", "1"]),
                  "--loss": st.sampled_from(["ce", "margin", "x"]), "--eot-samples": _INT, "--limit": _BIG_INT,
                  "--no-checks": st.none(), "--json": st.sampled_from(["ok", "folder", ""])}
EVAL_OPTIONS = {"--split": st.sampled_from(["test", "holdout", "train"]), "--limit": _BIG_INT}


def _options(table):
    return st.dictionaries(st.sampled_from(sorted(table)), st.none(), max_size=6).flatmap(
        lambda chosen: st.fixed_dictionaries({k: table[k] for k in chosen}))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(["train", "attack", "eval"]), train=_options(TRAIN_OPTIONS),
       attack=_options(ATTACK_OPTIONS), evaluate=_options(EVAL_OPTIONS), fresh=st.booleans())
def test_random_argument_vectors_run_or_fail_with_one_line(command, train, attack, evaluate, fresh, checkpoint,
                                                           data_dir, tmp_path_factory, capsys):
    folder = tmp_path_factory.mktemp("fuzz")
    options = {"train": train, "attack": attack, "eval": evaluate}[command]
    argv = [command]
    for key, value in options.items():
        if key == "--json":
            value = {"ok": str(folder / "r.json"), "folder": str(folder), "": ""}[value]
        if key in ("--epochs", "--steps", "--restarts", "--eot-samples") and isinstance(value, int):
            value = min(value, 2)  # the run time grows with these; their range is in the table above
        argv += [key] if value is None else [key, str(value)]
    if command == "train":
        out = folder / "run" if fresh else os.path.dirname(checkpoint)
        argv += ["--dataset", "mnist", "--model", "mlp", "--data-dir", data_dir, "--out", str(out), "--quiet"]
        if not fresh:
            argv = [a for a in argv if a != "--overwrite"]  # never replace the shared checkpoint
    else:
        argv += ["--checkpoint", checkpoint, "--data-dir", data_dir, "--quiet"]
    code, err = run(argv, capsys)
    event(f"{command} exit {code}")
    assert code in (0, 2), (argv, code, err)
    if code == 2:
        one_error_line(err)
    else:
        assert "Traceback" not in err
