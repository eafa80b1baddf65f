"""One unattended GPU validation run (at most 8 minutes): the test suite with CuPy, the GPU
benchmarks against PyTorch CUDA, and one epoch of CIFAR-10 training; one summary at the end.

    python benchmarks/gpu_validate.py OUT_DIR [--data-dir DIR] [--budget 480] [--dry-run]

Stages, in order, each a subprocess with its own timeout (cut to what is left of ``--budget``,
so one stage that hangs cannot eat the window; its process group is killed):

    environment   python -m minidl info; nvidia-smi
    tests         the whole suite (python -m pytest), JUnit XML kept for the counts
    step_*        benchmarks/bench_models.py: madry_mnist at batch 128 and 512, cifar_cnn and
                  preact_resnet18 at 128, training step against PyTorch CUDA
    pgd10         benchmarks/bench_attacks.py: PGD-10 on madry_mnist, batch 128
    train_cifar   python -m minidl train --dataset cifar10 --model cifar_cnn --epochs 1

Writes OUT_DIR/summary.json and OUT_DIR/summary.md (rewritten after every stage, so a run cut
short still leaves one), plus each stage's full output as OUT_DIR/<stage>.log. A missing piece
(no GPU, no PyTorch CUDA, no CIFAR-10 files, no nvidia-smi) is reported and the stages that need
it are skipped; the exit status is 0 when every stage that ran passed.

``--dry-run`` runs a trivial stand-in command per stage (no GPU needed) to check argument
handling, timeouts and the summary (tests/test_gpu_validate.py).
"""
import argparse
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")
PY = sys.executable
sys.path.insert(0, ROOT)  # preflight imports this checkout's minidl


class Stage:
    """A named command with a timeout; ``needs`` lists the preflight facts it requires."""

    def __init__(self, name, argv, timeout, needs=(), env=None):
        self.name, self.argv, self.timeout, self.needs, self.env = name, list(argv), timeout, tuple(needs), env or {}


def default_stages(out_dir, data_dir):
    step = lambda model, batch: Stage(  # noqa: E731
        f"step_{model}_{batch}", [PY, os.path.join(BENCH, "bench_models.py"), "--model", model, "--batch",
                                  str(batch), "--device", "cuda"], 40, needs=("gpu", "torch_cuda"))
    train = [PY, "-m", "minidl", "train", "--dataset", "cifar10", "--model", "cifar_cnn", "--epochs", "1",
             "--device", "cuda", "--out", os.path.join(out_dir, "train_cifar"), "--quiet"]
    if data_dir:
        train += ["--data-dir", data_dir]
    test_env = {"MPLBACKEND": "Agg"}
    if data_dir:
        test_env["MINIDL_TEST_DATA"] = data_dir
    return [
        Stage("info", [PY, "-m", "minidl", "info"], 30),
        Stage("nvidia_smi", ["nvidia-smi"], 15),
        Stage("tests", [PY, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider",
                        f"--junitxml={os.path.join(out_dir, 'tests.xml')}"], 190, env=test_env),
        step("madry_mnist", 128), step("madry_mnist", 512), step("cifar_cnn", 128), step("preact_resnet18", 128),
        Stage("pgd10", [PY, os.path.join(BENCH, "bench_attacks.py"), "--batch", "128", "--steps", "10",
                        "--device", "cuda"], 40, needs=("gpu", "torch_cuda")),
        Stage("train_cifar", train, 100, needs=("gpu", "cifar10")),
    ]


def preflight(data_dir):
    """What this machine has: a GPU CuPy can use, PyTorch with CUDA, the CIFAR-10 files."""
    facts, notes = {}, {}
    try:
        from minidl import backend
        facts["gpu"] = backend.cuda_available()
        if not facts["gpu"]:
            notes["gpu"] = "minidl.backend.cuda_available() is False (CuPy missing, or no GPU/driver)"
    except Exception as e:
        facts["gpu"], notes["gpu"] = False, f"importing minidl failed: {e}"
    try:
        import torch
        facts["torch_cuda"] = bool(torch.cuda.is_available())
        notes["torch_cuda"] = f"torch {torch.__version__}" + ("" if facts["torch_cuda"] else ", no CUDA")
    except Exception as e:
        facts["torch_cuda"], notes["torch_cuda"] = False, f"PyTorch not importable: {e}"
    try:  # the loader itself, without downloading (the GPU machine may have no network)
        from minidl.data import CIFAR10
        facts["cifar10"] = len(CIFAR10(root=data_dir, train=True, download=False, progress=False)) > 0
        notes["cifar10"] = f"training set found under {data_dir}"
    except Exception as e:
        facts["cifar10"], notes["cifar10"] = False, f"no CIFAR-10 training set under {data_dir!r}: {e}"
    return facts, notes


def run_stage(stage, timeout, log_path):
    """Run one stage; returns its record. The command gets its own process group, so a timeout
    kills everything it started (pytest's workers, a stuck benchmark)."""
    record = {"name": stage.name, "command": " ".join(stage.argv), "timeout_s": round(timeout, 1)}
    if shutil.which(stage.argv[0]) is None and not os.path.exists(stage.argv[0]):
        record.update(status="missing", detail=f"{stage.argv[0]} not found", seconds=0.0)
        return record
    env = {**os.environ, **stage.env}
    start = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(stage.argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
            record.update(status="passed" if rc == 0 else "failed", returncode=rc)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            record.update(status="timeout", detail=f"killed after {timeout:.0f} s")
    record["seconds"] = round(time.monotonic() - start, 1)
    with open(log_path, errors="replace") as log:
        record["tail"] = log.read()[-3000:]
    return record


def parse_results(record, out_dir):
    """Figures from a stage's output: the benchmarks' json line, PGD throughput, test counts."""
    tail = record.get("tail", "")
    for line in tail.splitlines():
        if line.startswith("json: "):
            try:
                record["result"] = json.loads(line[6:])
            except ValueError:
                pass
    if record["name"] == "pgd10":
        ms = re.findall(r"(minidl|PyTorch)\s*:\s*([\d.]+) ms", tail)
        if ms:
            record["result"] = {k.lower() + "_ms": float(v) for k, v in ms}
    metrics = os.path.join(out_dir, "train_cifar", "metrics.json")
    if record["name"] == "train_cifar" and os.path.exists(metrics):
        try:
            last = json.load(open(metrics))["history"][-1]
            record["result"] = {k: last[k] for k in ("train_seconds", "train_images_per_s", "test_accuracy")
                                if k in last}
        except (ValueError, KeyError, IndexError):
            pass
    if record["name"] == "tests":
        xml = os.path.join(out_dir, "tests.xml")
        if os.path.exists(xml):
            try:
                suite = ET.parse(xml).getroot()
                suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
                record["result"] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
            except (ET.ParseError, AttributeError):
                pass
    return record


def write_summary(out_dir, summary):
    with open(os.path.join(out_dir, "summary.json.tmp"), "w") as f:
        json.dump(summary, f, indent=2)
    os.replace(os.path.join(out_dir, "summary.json.tmp"), os.path.join(out_dir, "summary.json"))
    lines = [f"# GPU validation, {summary['started']}", "",
             f"{'dry run, ' if summary['dry_run'] else ''}budget {summary['budget_s']} s, "
             f"used {summary['elapsed_s']} s", "", "## Machine", ""]
    lines += [f"- {k}: {'yes' if v else 'NO'} ({summary['notes'].get(k, '')})" for k, v in summary["facts"].items()]
    lines += ["", "## Stages", "", "| stage | status | seconds | result |", "| --- | --- | --- | --- |"]
    for r in summary["stages"]:
        result = r.get("result")
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()) \
            if isinstance(result, dict) else r.get("detail", "")
        lines.append(f"| {r['name']} | {r['status']} | {r.get('seconds', '')} | {shown} |")
    for r in summary["stages"]:  # the GPU's name, driver and versions, for the figures' caption
        if r["name"] in ("info", "nvidia_smi") and r["status"] == "passed":
            lines += ["", f"## {r['name']}", "", "```", r["tail"].strip()[-1500:], "```"]
    lines += ["", "## Output of stages that did not pass", ""]
    for r in summary["stages"]:
        if r["status"] not in ("passed", "skipped") and r.get("tail"):
            lines += [f"### {r['name']} ({r['status']})", "", "```", r["tail"][-1500:], "```", ""]
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def validate(out_dir, stages, budget, facts, notes, dry_run=False, reserve=5):
    """Run ``stages`` within ``budget`` seconds, writing the summary after each; returns it."""
    os.makedirs(out_dir, exist_ok=True)
    start = time.monotonic()
    summary = {"started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "dry_run": dry_run, "budget_s": budget, "facts": facts, "notes": notes, "stages": []}
    for stage in stages:
        left = budget - reserve - (time.monotonic() - start)
        missing = [n for n in stage.needs if not facts.get(n)]
        if missing:
            record = {"name": stage.name, "status": "skipped", "detail": "needs " + ", ".join(missing)}
        elif left < 1:
            record = {"name": stage.name, "status": "skipped", "detail": "out of time"}
        else:
            record = parse_results(run_stage(stage, min(stage.timeout, left),
                                             os.path.join(out_dir, f"{stage.name}.log")), out_dir)
        summary["stages"].append(record)
        summary["elapsed_s"] = round(time.monotonic() - start, 1)
        write_summary(out_dir, summary)
    summary["ok"] = all(r["status"] in ("passed", "skipped", "missing") for r in summary["stages"])
    summary["elapsed_s"] = round(time.monotonic() - start, 1)
    write_summary(out_dir, summary)
    return summary


def dry_stages(stages):
    """Stand-ins for ``stages``: each prints its would-be command; the needs are kept."""
    return [Stage(s.name, [PY, "-c", f"print({s.name!r}, {' '.join(s.argv)!r})"], s.timeout, s.needs)
            for s in stages]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder for summary.md, summary.json and the stage logs")
    parser.add_argument("--data-dir", default=os.environ.get("MINIDL_DATA") or os.path.join(ROOT, "..", "shared", "data"),
                        help="MNIST/CIFAR-10 files (default: $MINIDL_DATA, else ../shared/data)")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for all stages (default 480)")
    parser.add_argument("--dry-run", action="store_true", help="stand-in commands; no GPU needed")
    args = parser.parse_args(argv)
    if not args.budget > 0:
        parser.error(f"--budget must be > 0 seconds, got {args.budget}")
    if os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
        parser.error(f"out_dir: expected a folder, got the file {args.out_dir!r}")
    data_dir = os.path.abspath(args.data_dir) if args.data_dir and os.path.isdir(args.data_dir) else None
    out_dir = os.path.abspath(args.out_dir)
    stages = default_stages(out_dir, data_dir)
    if args.dry_run:
        stages = dry_stages(stages)
        facts = {k: True for k in ("gpu", "torch_cuda", "cifar10")}
        notes = {k: "assumed present (dry run)" for k in facts}
    else:
        facts, notes = preflight(data_dir)
    summary = validate(out_dir, stages, args.budget, facts, notes, dry_run=args.dry_run)
    for r in summary["stages"]:
        print(f"{r['name']:<28}{r['status']:<9}{r.get('seconds', '')}")
    print(f"summary: {os.path.join(out_dir, 'summary.md')}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
