"""Does the CPU buffer pool (``minidl/kernels/runtime/workspace.py``) pay? A training step with the pool
on and off, timed in alternating rounds in one process, and (``--memory``) the peak memory of a
step with the pool as it is, with reuse only of buffers of exactly the requested size (the pool
before commit 630ed28: ``FIT_FACTOR = 1``), and off.

    python benchmarks/bench_workspace.py [--model madry_mnist|cifar_cnn] [--batch 128] [--threads N]
                                         [--repeat 8] [--memory]

Prints the median and the best step time of each setting and their ratio (off / on); with
``--memory``, each setting's peak RSS growth over steps 2-4 and of the first step, each measured
in a fresh process (``bench_engine.memory_child``).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

if "--threads" in sys.argv:  # BLAS thread counts are read when NumPy loads
    _n = sys.argv[sys.argv.index("--threads") + 1]
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = _n

import numpy  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from minidl.kernels.runtime import parallel, workspace  # noqa: E402

from bench_engine import memory_child, minidl_step  # noqa: E402
from common import benchmark_parser  # noqa: E402

MODELS = ("madry_mnist", "cifar_cnn")
# setting -> (pool enabled, FIT_FACTOR)
SETTINGS = {"pool as is": (True, workspace.FIT_FACTOR), "exact size only": (True, 1), "pool off": (False, 1)}


def timed(step, calls):
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def main(argv=None):
    parser = benchmark_parser(__doc__, repeat=8)
    parser.add_argument("--model", default="madry_mnist", choices=MODELS)
    parser.add_argument("--memory", action="store_true", help="also the peak memory of a step per setting")
    parser.add_argument("--memory-child", choices=tuple(SETTINGS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        workspace.enabled, workspace.FIT_FACTOR = SETTINGS[args.memory_child]
        return memory_child("minidl", args.model, args.batch, args.threads)
    if args.threads:
        parallel.set_num_threads(args.threads)
    step = minidl_step(args.model, args.batch, "cpu", numpy.random.default_rng(0))
    results = {True: [], False: []}
    for setting in (True, False):  # warm-up of both
        workspace.enabled = setting
        timed(step, 2)
    for _ in range(args.repeat):
        for setting in (True, False):
            workspace.enabled = setting
            results[setting] += timed(step, 3)
    workspace.enabled = True
    print(f"{args.model}, batch {args.batch}, training step (bench_engine's), {args.repeat} alternating rounds of 3 steps")
    for setting, label in ((True, "pool on"), (False, "pool off")):
        t = results[setting]
        print(f"{label:9s} median {statistics.median(t) * 1e3:7.1f} ms   best {min(t) * 1e3:7.1f} ms")
    ratio = statistics.median(results[False]) / statistics.median(results[True])
    print(f"off / on (medians): {ratio:.2f}x")
    if args.memory:
        print("peak RSS growth over the RSS before the first step (fresh process per setting):")
        for setting in SETTINGS:
            cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", setting, "--model", args.model,
                   "--batch", str(args.batch)] + (["--threads", str(args.threads)] if args.threads else [])
            res = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
                             .splitlines()[-1])
            first = "hidden by set-up" if res["first"] is None else f"{res['first'] / 2**20:.0f} MiB"
            print(f"  {setting:16s} steps 2-4 {res['steady'] / 2**20:5.0f} MiB   first step {first}")


if __name__ == "__main__":
    main()
