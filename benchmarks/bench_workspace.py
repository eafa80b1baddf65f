"""Does the CPU buffer pool (``minidl/kernels/workspace.py``) pay? A training step of the
Madry MNIST network with the pool on and off, timed in alternating rounds in one process.

    python benchmarks/bench_workspace.py [--batch 128] [--threads N] [--repeat 8]

Prints the median and the best step time of each setting and their ratio (off / on).
"""
import os
import statistics
import sys
import time

if "--threads" in sys.argv:  # BLAS thread counts are read when NumPy loads
    _n = sys.argv[sys.argv.index("--threads") + 1]
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = _n

import numpy  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from minidl.kernels import parallel, workspace  # noqa: E402

from bench_engine import minidl_step  # noqa: E402
from common import benchmark_parser  # noqa: E402


def timed(step, calls):
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def main(argv=None):
    args = benchmark_parser(__doc__, repeat=8).parse_args(argv)
    if args.threads:
        parallel.set_num_threads(args.threads)
    step = minidl_step(args.batch, "cpu", numpy.random.default_rng(0))
    results = {True: [], False: []}
    for setting in (True, False):  # warm-up of both
        workspace.enabled = setting
        timed(step, 2)
    for _ in range(args.repeat):
        for setting in (True, False):
            workspace.enabled = setting
            results[setting] += timed(step, 3)
    workspace.enabled = True
    for setting, label in ((True, "pool on"), (False, "pool off")):
        t = results[setting]
        print(f"{label:9s} median {statistics.median(t) * 1e3:7.1f} ms   best {min(t) * 1e3:7.1f} ms")
    ratio = statistics.median(results[False]) / statistics.median(results[True])
    print(f"off / on (medians): {ratio:.2f}x")


if __name__ == "__main__":
    main()
