"""A stopped evaluation loses nothing (minidl.adversarial.journal): the finished batches are
journaled, a resumed run attacks only the rest and returns exactly what an uninterrupted run
returns (NumPy backend), and a journal is never mixed with another evaluation or overwritten.

The attacks here draw from minidl's generator on purpose (random noise, PGD's random start), so
a resumed run that did not restore the generator would give other numbers."""
import importlib
import json

import numpy as np
import pytest

import minidl as md
from minidl import backend, cli, nn
from minidl.adversarial import autoattack_accuracy, robust_accuracy
from minidl.adversarial.journal import EvalJournal, discard_journal, journal_path
from minidl.tensor import Tensor

from test_autoattack import linear_problem
from test_reliability import checkpoint, data_dir, one_error_line, run  # noqa: F401 (fixtures)

autoattack_mod = importlib.import_module("minidl.adversarial.autoattack")  # the name is also the function's
SETTINGS = {"attack": "noise", "eps": 0.5, "seed": 0}


class Stop(Exception):
    """Stands for a crash or Ctrl-C in the middle of an evaluation."""


def noise_attack(calls, stop_at=None):
    """x + U(-0.5, 0.5) noise from minidl's generator; raises Stop on call ``stop_at``."""
    def attack(model, x, y):
        calls.append(len(y))
        if stop_at is not None and len(calls) == stop_at:
            raise Stop
        return Tensor(x.array + backend.rng().uniform(-0.5, 0.5, x.shape))
    return attack


def raising_on_call(function, call, error):
    """``function``, except that its call number ``call`` raises ``error`` instead."""
    calls = []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise error
        return function(*args, **kwargs)
    return wrapped


def problem(n=50):
    model, _, _, x, y = linear_problem(3, n=n)
    return model, x, y


def evaluate(model, x, y, attack, journal=None):
    backend.manual_seed(0)
    return robust_accuracy(model, (x, y), attack, batch_size=10, progress=False, journal=journal)


def test_resumed_evaluation_equals_the_uninterrupted_one(tmp_path):
    model, x, y = problem()
    plain = evaluate(model, x, y, noise_attack([]))
    journaled = evaluate(model, x, y, noise_attack([]), EvalJournal(tmp_path / "a", SETTINGS))
    np.testing.assert_array_equal(journaled["robust_correct"], plain["robust_correct"])
    assert 0 < plain["robust_accuracy"] < plain["clean_accuracy"]  # the noise decides some points

    path = tmp_path / "b"
    with pytest.raises(Stop):
        evaluate(model, x, y, noise_attack([], stop_at=3), EvalJournal(path, SETTINGS))
    assert len(json.loads(path.read_text())["batches"]) == 2
    calls = []
    journal = EvalJournal(path, SETTINGS, resume=True)
    resumed = evaluate(model, x, y, noise_attack(calls), journal)
    assert calls == [10, 10, 10] and journal.resumed == 2  # only the three unfinished batches
    np.testing.assert_array_equal(resumed["clean_correct"], plain["clean_correct"])
    np.testing.assert_array_equal(resumed["robust_correct"], plain["robust_correct"])
    assert resumed["robust_accuracy"] == plain["robust_accuracy"]


def test_resumed_autoattack_counts_every_batch_once(tmp_path, monkeypatch):
    model, x, y = problem(n=40)
    run_aa = lambda journal=None: autoattack_accuracy(model, (x, y), 0.15, batch_size=20, progress=False,
                                                      journal=journal)
    backend.manual_seed(0)
    plain = run_aa()
    path = tmp_path / "aa"
    real = autoattack_mod.autoattack
    monkeypatch.setattr(autoattack_mod, "autoattack", raising_on_call(real, 2, Stop))
    backend.manual_seed(0)
    with pytest.raises(Stop):
        run_aa(EvalJournal(path, SETTINGS))
    monkeypatch.setattr(autoattack_mod, "autoattack", real)
    backend.manual_seed(0)
    resumed = run_aa(EvalJournal(path, SETTINGS, resume=True))
    counts = lambda r: [(row["stage"], row["robust"]) for row in r["breakdown"]]
    assert counts(resumed) == counts(plain)
    assert plain["breakdown"][0]["robust"] == 40 * plain["clean_accuracy"]
    assert resumed["robust_accuracy"] == plain["robust_accuracy"]
    np.testing.assert_array_equal(resumed["robust_correct"], plain["robust_correct"])
    assert resumed["warnings"] == plain["warnings"]


def test_a_journal_is_never_mixed_up_or_overwritten(tmp_path):
    model, x, y = problem(n=20)
    path = tmp_path / "j"
    with pytest.raises(Stop):
        evaluate(model, x, y, noise_attack([], stop_at=2), EvalJournal(path, SETTINGS))
    with pytest.raises(ValueError, match=r"holds 1 finished batches \(10 images\) of this evaluation; "
                                         r"pass resume=True \(--resume\)"):
        EvalJournal(path, SETTINGS)
    with pytest.raises(ValueError, match=r"belongs to another evaluation \(eps: journal 0\.5, this run 0\.25\)"):
        EvalJournal(path, dict(SETTINGS, eps=0.25), resume=True)
    with pytest.raises(ValueError, match=r"batch 0 holds 10 examples, expected 7"):
        robust_accuracy(model, (x, y), noise_attack([]), batch_size=7, progress=False,
                        journal=EvalJournal(path, SETTINGS, resume=True))
    with pytest.raises(FileNotFoundError, match=r"expected the journal .*missing.* of an unfinished run"):
        EvalJournal(tmp_path / "missing", SETTINGS, resume=True)
    (tmp_path / "bad").write_text("{not json")
    with pytest.raises(ValueError, match=r"bad is not a readable evaluation journal"):
        EvalJournal(tmp_path / "bad", SETTINGS, resume=True)
    with pytest.raises(ValueError, match=r"journal and return_points: expected at most one"):
        robust_accuracy(model, (x, y), noise_attack([]), return_points=True, progress=False,
                        journal=EvalJournal(tmp_path / "new", SETTINGS))
    assert path.exists()  # every refusal left the finished work alone
    discard_journal(path)
    assert not path.exists()
    assert journal_path("f", 1, 0) == "f" and journal_path("f", 4, 3) == "f.rank3"


def test_cli_attack_resumes_a_stopped_run(checkpoint, data_dir, tmp_path, capsys, monkeypatch):  # noqa: F811
    from minidl import experiment
    argv = ["attack", "--checkpoint", checkpoint, "--data-dir", data_dir, "--eps", "0.3", "--steps", "2",
            "--batch-size", "8", "--no-checks", "--quiet", "--json"]
    whole = tmp_path / "whole.json"
    assert run(argv + [whole], capsys)[0] == 0
    assert not (tmp_path / "whole.json.partial").exists()

    out, partial = tmp_path / "out.json", tmp_path / "out.json.partial"
    real = experiment.pgd
    monkeypatch.setattr(experiment, "pgd", raising_on_call(real, 3, KeyboardInterrupt))
    assert run(argv + [out], capsys)[0] == 130
    assert not out.exists() and len(json.loads(partial.read_text())["batches"]) == 2
    monkeypatch.setattr(experiment, "pgd", real)

    code, err = run(argv + [out], capsys)
    assert code == 2 and "--resume" in one_error_line(err) and partial.exists()
    code, err = run(argv + [out, "--eps", "0.2", "--resume"], capsys)
    assert code == 2 and "eps: journal 0.3, this run 0.2" in one_error_line(err)
    assert run(argv + [out, "--resume"], capsys)[0] == 0
    result, expected = json.loads(out.read_text()), json.loads(whole.read_text())
    assert not partial.exists() and result["resumed_batches"] == 2 and expected["resumed_batches"] == 0
    for key in ("n", "clean_accuracy", "robust_accuracy"):
        assert result[key] == expected[key]

    code, err = run(["attack", "--checkpoint", checkpoint, "--data-dir", data_dir, "--resume"], capsys)
    assert code == 2 and "--resume: expected --json FILE" in one_error_line(err)
