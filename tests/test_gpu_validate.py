"""The CPU-side logic of benchmarks/gpu_validate.py: arguments, stage timeouts (the whole process
group is killed), missing pieces, the time budget, and the summary it writes."""
import importlib.util
import json
import os
import sys
import time

import pytest

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "gpu_validate.py")
_spec = importlib.util.spec_from_file_location("gpu_validate", _PATH)
gv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gv)

PY = sys.executable
ALL = {"gpu": True, "torch_cuda": True, "cifar10": True}


def py(code, name, timeout=20, needs=()):
    return gv.Stage(name, [PY, "-c", code], timeout, needs)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting to be reaped counts as dead
        return open(f"/proc/{pid}/stat").read().split(") ")[1][0] != "Z"
    except OSError:
        return True


def test_dry_run_writes_every_stage_into_both_summaries(tmp_path):
    out = tmp_path / "gv"
    assert gv.main([str(out), "--dry-run", "--data-dir", str(tmp_path)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    names = [r["name"] for r in summary["stages"]]
    assert names == ["info", "nvidia_smi", "tests", "step_madry_mnist_128", "step_madry_mnist_512",
                     "step_cifar_cnn_128", "step_preact_resnet18_128", "pgd10", "train_cifar"]
    assert all(r["status"] == "passed" for r in summary["stages"]) and summary["ok"] and summary["dry_run"]
    # The stand-in prints the command the real run would use.
    assert "--model preact_resnet18 --batch 128 --device cuda" in (out / "step_preact_resnet18_128.log").read_text()
    md = (out / "summary.md").read_text()
    assert "| train_cifar | passed |" in md and "dry run" in md
    assert "## info" in md and "-m minidl info" in md   # the environment's output is kept in full


def test_timeout_kills_the_stage_and_its_children_and_the_run_goes_on(tmp_path):
    pid_file = tmp_path / "child.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    hang = py(f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])", "hang", timeout=3)
    start = time.monotonic()
    summary = gv.validate(str(tmp_path), [hang, py("print('after')", "after")], 60, ALL, {})
    assert time.monotonic() - start < 20
    pid = int(pid_file.read_text())
    for _ in range(50):  # the orphaned child is reaped by init shortly after the kill
        if not _alive(pid):
            break
        time.sleep(0.1)
    assert not _alive(pid), "the stage's child process survived the timeout"
    hung, after = summary["stages"]
    assert hung["status"] == "timeout" and "killed after 3 s" in hung["detail"]
    assert after["status"] == "passed" and "after" in after["tail"]
    assert not summary["ok"]


def test_failures_missing_tools_and_unmet_needs_are_reported(tmp_path):
    stages = [py("import sys; print('boom'); sys.exit(3)", "fails"),
              gv.Stage("absent", ["no-such-tool-minidl"], 5),
              py("print('never')", "needs_gpu", needs=("gpu",))]
    summary = gv.validate(str(tmp_path), stages, 60, {"gpu": False}, {"gpu": "no GPU here"})
    fails, absent, gpu = summary["stages"]
    assert fails["status"] == "failed" and fails["returncode"] == 3 and "boom" in fails["tail"]
    assert absent["status"] == "missing" and "no-such-tool-minidl" in absent["detail"]
    assert gpu["status"] == "skipped" and gpu["detail"] == "needs gpu"
    md = (tmp_path / "summary.md").read_text()
    assert "- gpu: NO (no GPU here)" in md and "### fails (failed)" in md and "boom" in md
    assert not summary["ok"]


def test_budget_cuts_timeouts_and_skips_what_does_not_fit(tmp_path):
    stages = [py("import time; time.sleep(30)", "long", timeout=100), py("print(1)", "late")]
    summary = gv.validate(str(tmp_path), stages, budget=2, facts=ALL, notes={}, reserve=0)
    long, late = summary["stages"]
    assert long["status"] == "timeout" and long["timeout_s"] == pytest.approx(2, abs=0.5)
    assert late["status"] == "skipped" and late["detail"] == "out of time"


def test_results_are_parsed_from_the_outputs(tmp_path):
    bench = py("print('minidl :   2.00 ms'); print('json: {\"model\": \"cifar_cnn\", \"ratio\": 1.5}')", "step_x")
    pgd = py("print('minidl :     30.0 ms  -> 1 images'); print('PyTorch:     10.0 ms  -> 2 images')", "pgd10")
    xml = tmp_path / "tests.xml"
    tests = py(f"open({str(xml)!r}, 'w').write('<testsuites><testsuite tests=\"7\" failures=\"1\" errors=\"0\" "
               f"skipped=\"2\"/></testsuites>')", "tests")
    history = {"history": [{"epoch": 1, "train_seconds": 12.5, "train_images_per_s": 4000.0, "test_accuracy": 0.5}]}
    train = py(f"import json, os; os.makedirs({str(tmp_path / 'train_cifar')!r}); "
               f"json.dump({history!r}, open({str(tmp_path / 'train_cifar' / 'metrics.json')!r}, 'w'))", "train_cifar")
    summary = gv.validate(str(tmp_path), [bench, pgd, tests, train], 60, ALL, {})
    assert summary["stages"][3]["result"] == {"train_seconds": 12.5, "train_images_per_s": 4000.0,
                                              "test_accuracy": 0.5}
    assert summary["stages"][0]["result"] == {"model": "cifar_cnn", "ratio": 1.5}
    assert summary["stages"][1]["result"] == {"minidl_ms": 30.0, "pytorch_ms": 10.0}
    assert summary["stages"][2]["result"] == {"tests": 7, "failures": 1, "errors": 0, "skipped": 2}
    assert "| pgd10 | passed |" in (tmp_path / "summary.md").read_text()


def test_bad_arguments_are_one_clear_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        gv.main([str(tmp_path), "--budget", "0", "--dry-run"])
    assert "--budget must be > 0 seconds, got 0.0" in capsys.readouterr().err
    target = tmp_path / "a_file"
    target.write_text("")
    with pytest.raises(SystemExit):
        gv.main([str(target), "--dry-run"])
    assert "out_dir: expected a folder, got the file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gv.main([])


def test_without_a_gpu_only_the_gpu_free_stages_would_run(tmp_path):
    facts, notes = gv.preflight(None)
    assert not facts["cifar10"] and "no CIFAR-10 training set" in notes["cifar10"]
    from minidl import backend
    assert facts["gpu"] == backend.cuda_available()
    needs = {s.name: s.needs for s in gv.default_stages(str(tmp_path), None)}
    assert needs["tests"] == () and needs["info"] == ()
    assert all("gpu" in n for name, n in needs.items() if name.startswith(("step_", "pgd", "train")))
