"""The benchmark scripts still run against the current API (tiny batches, one round): a
script that calls a helper with an old signature fails here, not in front of a reader. Timings
are printed by the scripts and never checked."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("script, args", [
    ("bench_workspace.py", ["--batch", "4", "--repeat", "1"]),
    ("bench_engine.py", ["--model", "madry_mnist", "--batch", "4", "--repeat", "1", "--no-layers", "--no-memory"]),
    ("bench_gradalign.py", ["--batch", "4", "--repeat", "1", "--threads", "1"]),
    ("bench_tiers.py", ["--work", "fwd1", "--rounds", "1", "--per-round", "1"]),
    ("bench_layouts.py", ["--batch", "2", "--rounds", "1"]),
])
def test_benchmark_runs(script, args):
    env = dict(os.environ, MINIDL_CONV_ALGO="rule")
    res = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script)] + args,
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "median" in res.stdout


def test_bench_revisions_reads_revisions_with_their_environment():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import bench_revisions
    finally:
        sys.path.pop(0)
    assert bench_revisions.parse_spec("HEAD") == ("HEAD", {})
    assert bench_revisions.parse_spec("abc123:MINIDL_MALLOC=default,A=1=2") == (
        "abc123", {"MINIDL_MALLOC": "default", "A": "1=2"})
    with pytest.raises(SystemExit, match="expected REV:VAR=VALUE"):
        bench_revisions.parse_spec("HEAD:MINIDL_MALLOC")
