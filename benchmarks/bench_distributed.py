"""Data-parallel training throughput: 1 against N MPI ranks, one thread each.

    python benchmarks/bench_distributed.py [--model wong_mnist] [--batch 128] [--ranks 2] [--steps 20]

The script starts itself under ``mpirun -n 1`` and ``mpirun -n N`` (each rank with one BLAS
thread and one kernel thread), alternately, ``--rounds`` times. Each run times ``--steps``
training steps (forward, backward, gradient allreduce, SGD step) of one global batch of
``--batch`` synthetic images, split over the ranks, after two warm-up steps, and reports
images per second. Printed: median and best images/s for each rank count, and the scaling
efficiency ``(images/s with N ranks) / (N x images/s with 1 rank)``.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker(args):
    sys.path.insert(0, ROOT)
    import numpy as np

    import minidl as md
    from minidl import distributed
    from minidl.data import DataLoader
    from minidl.functional import cross_entropy
    from minidl.models import get_model

    comm = distributed.init()
    size = 28 if "mnist" in args.model else 32
    channels = 1 if "mnist" in args.model else 3
    rng = np.random.default_rng(0)
    n = args.batch * (args.steps + 2)
    x = rng.random((n, channels, size, size)).astype(np.float32)
    y = rng.integers(0, 10, n)
    md.manual_seed(0)
    model = get_model(args.model, in_channels=channels, image_size=size)
    distributed.broadcast_parameters(model, comm)
    loader = DataLoader((x, y), args.batch, shuffle=True, seed=0, shard=comm if comm.size > 1 else None)
    opt = distributed.DistributedOptimizer(md.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
                                           share=loader.batch_share, comm=comm)
    start = None
    for i, (xb, yb) in enumerate(loader):
        if i == 2:
            comm.barrier()
            start = time.perf_counter()
        loss = cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    comm.barrier()
    seconds = time.perf_counter() - start
    if comm.is_root:
        print(json.dumps({"ranks": comm.size, "images_per_s": args.steps * args.batch / seconds}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="wong_mnist")
    parser.add_argument("--batch", type=int, default=128, help="global batch")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    mpirun = shutil.which("mpirun") or shutil.which("mpiexec")
    if mpirun is None:
        sys.exit("bench_distributed: needs mpirun (pip install 'minidl[distributed]')")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", MINIDL_NUM_THREADS="1", OMP_NUM_THREADS="1")
    results = {1: [], args.ranks: []}
    for _ in range(args.rounds):
        for n in (1, args.ranks):
            cmd = [mpirun, "-n", str(n), sys.executable, os.path.abspath(__file__), "--worker",
                   "--model", args.model, "--batch", str(args.batch), "--steps", str(args.steps)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            results[n].append(json.loads(out.strip().splitlines()[-1])["images_per_s"])
    print(f"{args.model}, global batch {args.batch}, {args.steps} steps, {args.rounds} alternating rounds, "
          f"1 BLAS thread per rank")
    print(f"{'ranks':>5} {'median img/s':>13} {'best img/s':>11}")
    for n, values in results.items():
        print(f"{n:>5} {statistics.median(values):>13.1f} {max(values):>11.1f}")
    one, many = statistics.median(results[1]), statistics.median(results[args.ranks])
    print(f"scaling efficiency (median): {many / (args.ranks * one):.2f}")


if __name__ == "__main__":
    main()
