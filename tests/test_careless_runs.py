"""Careless runs, second round (issue 31): no lost or wrong result, and one clear line for each
user error. Every test here failed before its fix.

The CLI runs in-process (``minidl.cli.main``) on the tiny synthetic MNIST of
``test_reliability`` (64 training and 32 test images, the ``mlp`` model)."""
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import minidl as md
from minidl import cli, experiment, nn
from minidl.adversarial import pgd
from minidl.adversarial.journal import EvalJournal
from minidl.experiment import AttackConfig, TrainConfig, attack_checkpoint, train_on_arrays
from minidl.models import get_model
from minidl.train import CHECKPOINT

from test_data import cifar_batch, write_files
from test_reliability import checkpoint, data_dir, one_error_line, run  # noqa: F401 (fixtures)
from minidl.data import cifar as cifar_mod


def attack_argv(checkpoint, data_dir, *extra):  # noqa: F811
    return ["attack", "--checkpoint", checkpoint, "--data-dir", data_dir, "--steps", "2", "--batch-size", "8",
            "--no-checks", "--quiet", *extra]


@pytest.fixture
def attacks_run(monkeypatch):
    """The configs ``attack_checkpoint`` was called with (the real one still runs)."""
    calls, real = [], cli.attack_checkpoint

    def recording(config, **kwargs):
        calls.append(config)
        return real(config, **kwargs)
    monkeypatch.setattr(cli, "attack_checkpoint", recording)
    return calls


# --- attack --json: a lock, and a name whose temporary files can be made ---------------------------
def test_a_second_attack_on_the_same_json_is_refused(checkpoint, data_dir, tmp_path, capsys, attacks_run):  # noqa: F811
    out = tmp_path / "r.json"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "r.json.lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname()}))
        code, err = run(attack_argv(checkpoint, data_dir, "--json", out), capsys)
        line = one_error_line(err)
        assert code == 2 and "r.json is in use by another attack" in line and "r.json.lock" in line, line
        assert attacks_run == [] and not out.exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its lock is stale and taken over; the run's own lock is released
    assert run(attack_argv(checkpoint, data_dir, "--json", out), capsys)[0] == 0
    assert out.exists() and not (tmp_path / "r.json.lock").exists() and len(attacks_run) == 1


def test_the_lock_is_held_while_the_attack_runs(checkpoint, data_dir, tmp_path, capsys, monkeypatch):  # noqa: F811
    out, seen = tmp_path / "r.json", []
    real = cli.attack_checkpoint

    def attack(config, **kwargs):
        seen.append(json.loads((tmp_path / "r.json.lock").read_text())["pid"])
        return real(config, **kwargs)
    monkeypatch.setattr(cli, "attack_checkpoint", attack)
    assert run(attack_argv(checkpoint, data_dir, "--json", out), capsys)[0] == 0
    assert seen == [os.getpid()] and not (tmp_path / "r.json.lock").exists()


@pytest.mark.parametrize("length", [240, 232])  # 232: the result's temporary name fits, the journal's does not
def test_a_json_name_too_long_for_its_temporary_file_fails_before_attacking(length, checkpoint, data_dir,  # noqa: F811
                                                                            tmp_path, capsys, attacks_run):
    out = tmp_path / ("a" * (length - 5) + ".json")  # the name fits in 255 bytes, ".<name>.partial.<hex>.tmp" not
    code, err = run(attack_argv(checkpoint, data_dir, "--json", out), capsys)
    line = one_error_line(err)
    assert code == 2 and line.startswith("error: --json: cannot write") and "temporary file" in line, line
    assert attacks_run == [] and os.listdir(tmp_path) == []


# --- journals edited by hand ---------------------------------------------------------------------
def _stopped_attack(checkpoint, data_dir, out, capsys, monkeypatch):  # noqa: F811
    """Leave the journal of an attack stopped after its second batch (of four)."""
    calls, real = [], experiment.pgd

    def stopping(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(experiment, "pgd", stopping)
    assert run(attack_argv(checkpoint, data_dir, "--json", out), capsys)[0] == 130
    monkeypatch.setattr(experiment, "pgd", real)
    return out.parent / (out.name + ".partial")


def _robust_above_clean(saved):
    batch = saved["batches"][1]
    j = batch["clean"].index(0)
    batch["robust"][j] = 1


EDITS = [
    ("batches as a dict", lambda s: s.update(batches={"0": s["batches"][0]}), "batches: expected a list"),
    ("an entry as a list", lambda s: s["batches"].__setitem__(0, [1, 0]), "batches[0]: expected an object"),
    ("garbage rng", lambda s: s["batches"][1].update(rng="garbage"), "batches[1].rng: expected a state of NumPy's"),
    ("rng of another generator", lambda s: s["batches"][0]["rng"].update(bit_generator="MT19937"),
     "batches[0].rng: expected a state"),
    ("clean as text", lambda s: s["batches"][0].update(clean="11"), "batches[0].clean: expected a list of 0 and 1"),
    ("a clean entry of 2", lambda s: s["batches"][0]["clean"].__setitem__(3, 2), "batches[0].clean[3]: expected 0 or 1"),
    ("robust shorter", lambda s: s["batches"][0]["robust"].pop(), "batches[0].robust: expected 8 entries"),
    ("robust above clean", _robust_above_clean, "robust["),
    ("settings as a list", lambda s: s.update(settings=[1]), "settings: expected an object"),
    ("a list", lambda s: (s.clear(), s.update(wrapped=True)), "version: expected 1"),
]


@pytest.mark.parametrize("what, edit, message", EDITS, ids=[e[0] for e in EDITS])
def test_hand_edited_journals_are_refused_naming_file_and_field(what, edit, message, checkpoint, data_dir,  # noqa: F811
                                                                 tmp_path, capsys, monkeypatch):
    out = tmp_path / "r.json"
    partial = _stopped_attack(checkpoint, data_dir, out, capsys, monkeypatch)
    saved = json.loads(partial.read_text())
    assert len(saved["batches"]) == 2
    edit(saved)
    partial.write_text(json.dumps(saved))
    code, err = run(attack_argv(checkpoint, data_dir, "--json", out, "--resume"), capsys)
    line = one_error_line(err)
    assert code == 2 and f"journal: {partial}: " in line and message in line, line
    assert partial.exists() and not out.exists()  # the finished work is left for the user to mend


def test_robust_above_clean_is_refused_by_the_api(tmp_path):
    path = tmp_path / "j"
    rng = md.backend.get_rng_state()
    path.write_text(json.dumps({"version": 1, "settings": {"a": 1},
                                "batches": [{"clean": [1, 0], "robust": [0, 1], "rng": rng, "state": None}]}))
    with pytest.raises(ValueError, match=r"batches\[0\]\.robust\[1\]: expected 0 where clean is 0"):
        EvalJournal(path, {"a": 1}, resume=True)


def test_a_bad_caller_state_in_a_journal_names_the_field(tmp_path):
    from minidl.adversarial import StageLog
    path = tmp_path / "j"
    rng = md.backend.get_rng_state()
    path.write_text(json.dumps({"version": 1, "settings": {"a": 1},
                                "batches": [{"clean": [1], "robust": [1], "rng": rng, "state": {"n": "many"}}]}))
    journal = EvalJournal(path, {"a": 1}, resume=True)
    journal.keep(StageLog().state, StageLog().load)
    with pytest.raises(ValueError, match=r"journal: .*j: batches\[0\]\.state: expected the state its evaluation saved"):
        journal.finished(0, 1)


# --- results that cannot be right ------------------------------------------------------------------
def _edited_checkpoint(checkpoint, path, edit):  # noqa: F811
    state = md.load(checkpoint)
    edit(state)
    md.save(state, str(path))
    return str(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_checkpoint_with_non_finite_weights_is_refused(bad, checkpoint, data_dir, tmp_path, capsys):  # noqa: F811
    name = sorted(md.load(checkpoint)["model"])[-1]

    def poison(state):
        state["model"][name] = np.array(state["model"][name], copy=True)
        state["model"][name].flat[1] = bad
    path = _edited_checkpoint(checkpoint, tmp_path / "poisoned.npz", poison)
    for command in (["eval", "--checkpoint", path, "--data-dir", data_dir],
                    attack_argv(path, data_dir)):
        code, err = run(command, capsys)
        line = one_error_line(err)
        assert code == 2 and "poisoned.npz" in line and f"parameter {name!r}" in line, line
        assert ("1 NaN" if np.isnan(bad) else "1 infinite") in line


@pytest.mark.parametrize("edit, key", [({"image_size": 3000}, "image_size"), ({"in_channels": 3000}, "in_channels"),
                                       ({"image_size": 32}, "image_size"), ({"image_size": "28"}, "image_size"),
                                       ({"in_channels": 3}, "in_channels"),
                                       ({"dataset": "synthetic", "image_size": 3000}, "image_size"),
                                       ({"dataset": "synthetic", "in_channels": 0}, "in_channels")])
def test_a_tampered_recorded_shape_is_refused_before_the_model_is_built(edit, key, checkpoint, data_dir,  # noqa: F811
                                                                        tmp_path, capsys, monkeypatch):
    path = _edited_checkpoint(checkpoint, tmp_path / "tampered.npz", lambda s: s["config"].update(edit))
    built = []
    monkeypatch.setattr(experiment, "get_model", lambda *a, **k: built.append(k) or get_model(*a, **k))
    code, err = run(["eval", "--checkpoint", path, "--data-dir", data_dir], capsys)
    line = one_error_line(err)
    assert code == 2 and "tampered.npz" in line and f"recorded {key}" in line, line
    assert built == []  # nothing sized by the tampered number was allocated


@pytest.mark.filterwarnings("ignore:CIFAR-10 training set .* holds 0 images")
def test_an_empty_training_set_is_refused(tmp_path, capsys):
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    empty = pickle.dumps({"batch_label": "empty", "labels": [], "data": np.zeros((0, 3072), np.uint8),
                          "filenames": []}, protocol=3)  # protocol 2 spells an empty array with bytes()
    files = {name: empty for name in cifar_mod.TRAIN_BATCHES}
    files["test_batch"] = cifar_batch(8, 9)[0]
    write_files(folder, files)
    out = tmp_path / "run"
    code, err = run(["train", "--dataset", "cifar10", "--model", "mlp", "--epochs", "1", "--data-dir", tmp_path,
                     "--out", out, "--quiet"], capsys)
    line = one_error_line(err)
    assert code == 2 and not (out / CHECKPOINT).exists(), line
    assert "cifar10 training set" in line and "holds 0 images" in line, line
    x, y = np.zeros((0, 1, 28, 28), np.float32), np.zeros(0, np.int64)
    test = (np.zeros((4, 1, 28, 28), np.float32), np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="the training set holds 0 images; expected at least 1"):
        train_on_arrays(TrainConfig(model="mlp", epochs=1), (x, y), test, None, progress=False)


# --- what killed writers leave, and SIGTERM ---------------------------------------------------------
def test_leftover_temporary_files_are_removed_at_the_next_run(checkpoint, data_dir, tmp_path, capsys):  # noqa: F811
    from test_reliability import _train_argv
    out = tmp_path / "run"
    out.mkdir()
    leftovers = [out / ".checkpoint.npz.0123456789ab.tmp", out / ".metrics.json.ba9876543210.tmp",
                 out / ".config.json.00000000cafe.tmp"]
    others = [out / ".notes.txt.0123456789ab.tmp", out / ".checkpoint.npz.tmp", out / "checkpoint.npz.0123456789ab.tmp"]
    for path in leftovers + others:
        path.write_bytes(b"half")
    assert run(_train_argv(data_dir, out), capsys)[0] == 0
    assert not any(p.exists() for p in leftovers) and all(p.exists() for p in others)
    # and with --overwrite of a finished run
    leftovers[0].write_bytes(b"half")
    assert run(_train_argv(data_dir, out, "--overwrite"), capsys)[0] == 0
    assert not leftovers[0].exists()
    # attack --json: the result's and the journal's
    res = tmp_path / "r.json"
    stale = [tmp_path / ".r.json.0123456789ab.tmp", tmp_path / ".r.json.partial.0123456789ab.tmp"]
    for path in stale:
        path.write_bytes(b"half")
    assert run(attack_argv(checkpoint, data_dir, "--json", res), capsys)[0] == 0
    assert not any(p.exists() for p in stale) and res.exists()


def test_sigterm_unwinds_like_ctrl_c(data_dir, tmp_path, capsys, monkeypatch):  # noqa: F811
    from test_reliability import _train_argv
    real = experiment.fit

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the signal arrives long before this ends
        return real(*args, **kwargs)
    monkeypatch.setattr(experiment, "fit", terminated)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "run"
    code, err = run(_train_argv(data_dir, out), capsys)
    assert code == 130 and err.strip() == "terminated (SIGTERM)", err
    assert not (out / ".lock").exists() and not (out / CHECKPOINT).exists()
    assert signal.getsignal(signal.SIGTERM) is before  # the handler lives only while a command runs


def test_sigterm_in_a_real_process_releases_the_lock(data_dir, tmp_path):  # noqa: F811
    from test_reliability import _train_argv
    out = tmp_path / "run"
    from minidl.data import mnist as mnist_mod
    code = ("import sys, time; from minidl import cli, experiment; from minidl.data import mnist; "
            f"mnist.MNIST_MD5 = {dict(mnist_mod.MNIST_MD5)!r}; "  # the tiny files' (see test_reliability)
            "experiment.fit = lambda *a, **k: (print('training', flush=True), time.sleep(60)); "
            f"sys.exit(cli.main({[str(a) for a in _train_argv(data_dir, out)]!r}))")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=root))
    if proc.stdout.readline().strip() != "training":
        proc.kill()
        pytest.fail(f"the run did not start: {proc.communicate()[1]}")
    assert (out / ".lock").exists()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and err.strip() == "terminated (SIGTERM)", err
    assert not (out / ".lock").exists()


# --- one line and exit 2 ---------------------------------------------------------------------------
@pytest.mark.parametrize("extra, message", [
    (["--eps", "1e308"], "eps: expected a finite number > 0 and <= 1.0, got 1e+308"),
    (["--eps", "1e308", "--alpha", "0.01"], "eps: expected a finite number > 0 and <= 1.0, got 1e+308"),
    (["--eps", "1.5"], "eps: expected a finite number > 0 and <= 1.0, got 1.5"),
    (["--eps", "65", "--norm", "2"], "eps: expected a finite number > 0 and <= 64.0, got 65.0"),
    (["--alpha", "1e300"], "alpha: expected a finite number > 0 and <= 2.5, got 1e+300"),
])
def test_absurd_radii_are_refused_before_loading(extra, message, checkpoint, data_dir, capsys, monkeypatch):  # noqa: F811
    loaded = []
    monkeypatch.setattr(experiment, "load_model", lambda *a, **k: loaded.append(a))
    code, err = run(attack_argv(checkpoint, data_dir, *extra), capsys)
    line = one_error_line(err)
    assert code == 2 and line == f"error: {message}", line
    assert loaded == []


def test_the_largest_radii_still_run(checkpoint, data_dir, capsys):  # noqa: F811
    assert run(attack_argv(checkpoint, data_dir, "--eps", "1", "--limit", "8"), capsys)[0] == 0
    assert run(attack_argv(checkpoint, data_dir, "--eps", "64", "--norm", "2", "--limit", "8"), capsys)[0] == 0


@pytest.mark.parametrize("batch, message", [("1000000000", "--batch: expected an integer >= 1 and <= 4096"),
                                            ("1e9", "--batch: expected an integer, got '1e9'")])
def test_info_warm_up_batch_is_bounded(batch, message, capsys, monkeypatch):
    called = []
    monkeypatch.setattr(cli, "warm_up", lambda *a: called.append(a) or [])
    code, err = run(["info", "--warm-up", "mlp", "--batch", batch], capsys)
    assert code == 2 and message in one_error_line(err) and called == []
    from minidl.info import warm_up
    with pytest.raises(ValueError, match="warm_up: batch: expected an integer >= 1 and <= 4096"):
        warm_up("mlp", 10 ** 9)


def test_an_mpi_launcher_without_mpi4py_is_one_line(capsys, monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py fails, installed or not
    monkeypatch.setattr(md.backend, "cuda_available", lambda: False)
    code, err = run(["info"], capsys)
    line = one_error_line(err)
    assert code == 2 and "MPI job" in line and "mpi4py" in line, line
    assert md.distributed.world().size == 1


def test_data_dir_that_is_a_file(tmp_path, capsys):
    from test_reliability import _train_argv
    file = tmp_path / "data.txt"
    file.write_text("not a folder")
    code, err = run(_train_argv(str(file), tmp_path / "run"), capsys)
    line = one_error_line(err)
    assert code == 2 and "is not a folder" in line and "does not exist" not in line, line
    code, err = run(_train_argv(str(tmp_path / "missing"), tmp_path / "run"), capsys)
    assert code == 2 and "does not exist" in one_error_line(err)


# --- the API ---------------------------------------------------------------------------------------
def test_a_model_called_on_a_numpy_array_names_the_argument():
    model = get_model("mlp")
    with pytest.raises(TypeError, match=r"Sequential: x: expected a minidl Tensor, got a numpy\.ndarray of shape "
                                        r"\(2, 1, 28, 28\)"):
        model(np.zeros((2, 1, 28, 28), np.float32))
    with pytest.raises(TypeError, match=r"Linear: x: expected a minidl Tensor"):
        nn.Linear(3, 2)(np.zeros((1, 3), np.float32))
    assert model(md.tensor(np.zeros((2, 1, 28, 28), np.float32))).shape == (2, 10)


def test_load_state_dict_changes_nothing_unless_everything_loads():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    before = {k: np.array(v, copy=True) for k, v in model.state_dict().items()}
    state = {k: np.ones_like(v) for k, v in before.items()}
    last = sorted(state)[-1]
    state[last] = np.full(state[last].shape, "x")  # the right shape, but text
    with pytest.raises(TypeError, match=rf"load_state_dict\(Sequential\): '{last}': expected a numeric array, "
                                        r"got dtype <U1"):
        model.load_state_dict(state)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    state[last] = np.empty(before[last].shape, dtype=object)
    with pytest.raises(TypeError, match=rf"'{last}': expected a numeric array, got dtype object"):
        model.load_state_dict(state)
    state[last] = np.ones_like(before[last])
    model.load_state_dict(state)
    assert all((v == 1).all() for v in model.state_dict().values())


@pytest.mark.parametrize("label", [-1, 12])
@pytest.mark.parametrize("loss", ["margin", "ce"])
def test_pgd_labels_out_of_range_are_refused(label, loss):
    model = get_model("mlp")
    x = np.full((3, 1, 28, 28), 0.5, np.float32)
    y = np.array([0, label, 3])
    with pytest.raises(ValueError, match=rf"labels: expected class indices in \[0, 10\).*got .*{label}"
                       if loss == "margin" else r"target values must lie in \[0, 10\)"):
        pgd(model, x, y, eps=0.1, alpha=0.05, steps=1, loss=loss)


@pytest.mark.parametrize("make, message", [
    (lambda: nn.Linear(0, 5), "Linear: in_features: expected an integer >= 1, got 0"),
    (lambda: nn.Linear(5, 0), "Linear: out_features: expected an integer >= 1, got 0"),
    (lambda: nn.Conv2d(0, 4, 3), "Conv2d: in_channels: expected an integer >= 1, got 0"),
])
def test_empty_layers_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()
    with pytest.raises(TypeError, match="Linear: in_features: expected an integer"):
        nn.Linear(2.5, 3)


# --- AttackConfig ----------------------------------------------------------------------------------
def test_attack_config_is_checked_in_one_place(checkpoint):  # noqa: F811
    c = AttackConfig(checkpoint=checkpoint, eps=0.2, steps=4).resolved()
    assert c.alpha == pytest.approx(2.5 * 0.2 / 4)
    largest = AttackConfig(checkpoint=checkpoint, eps=1.0, steps=1).resolved()
    assert largest.resolved() == largest  # resolving twice changes nothing
    assert AttackConfig(checkpoint=checkpoint).alpha is None  # resolved() returns a copy
    for bad, message in [({"attack": "cw"}, "attack: expected one of"), ({"eps": 0}, "eps: expected"),
                         ({"loss": "dlr"}, "loss: expected one of 'ce', 'margin'"),
                         ({"norm": "1"}, "attack: norm must be 'inf' or '2'"),
                         ({"batch_size": 0}, "batch_size: expected an integer >= 1"),
                         ({"checkpoint": ""}, "checkpoint: expected a file path")]:
        with pytest.raises((ValueError, TypeError), match=message):
            AttackConfig(**{"checkpoint": checkpoint, **bad}).resolved()
    with pytest.raises(TypeError, match="config: expected an AttackConfig"):
        attack_checkpoint(checkpoint)


def test_the_api_and_the_cli_give_the_same_result(checkpoint, data_dir, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "r.json"
    assert run(attack_argv(checkpoint, data_dir, "--json", out, "--seed", "3"), capsys)[0] == 0
    config = AttackConfig(checkpoint=checkpoint, data_dir=data_dir, steps=2, batch_size=8, checks=False, seed=3)
    api = json.loads(json.dumps(attack_checkpoint(config, progress=False)))
    cli_result = json.loads(out.read_text())
    assert cli_result.pop("resumed_batches") == 0
    assert api == cli_result
