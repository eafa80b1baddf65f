"""Helpers shared by the benchmarks: the common command-line options and best-of-N wall times."""
import argparse
import time

import numpy


def benchmark_parser(doc, repeat):
    """An argument parser with the options every benchmark takes: --batch, --device, --threads
    (acted on before NumPy loads, at the top of each script) and --repeat."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for both NumPy's BLAS and PyTorch (default: all cores)")
    parser.add_argument("--repeat", type=int, default=repeat)
    return parser


def best_time(fn, repeat=5, warmup=2, sync=None):
    """Seconds of the fastest of ``repeat`` calls of ``fn`` after ``warmup`` calls.
    ``sync`` (e.g. a CUDA synchronise) runs after each call so the clock sees finished work."""
    call_times(fn, warmup, sync)
    return min([float("inf")] + call_times(fn, repeat, sync))


def call_times(fn, repeat, sync=None):
    """Wall times (seconds) of ``repeat`` calls of ``fn``."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return times


def paired_times(ours, ref, rounds=5, per_round=2, warmup=2, sync=None, ref_sync=None):
    """Every call's wall time (seconds) of ``ours`` and ``ref``, measured in alternation:
    ``rounds`` rounds, each timing ``per_round`` calls of one and then of the other. On a shared
    or noisy machine, timing all of one and then all of the other lets a slow spell (another
    process, one library's threads still spinning) land on one side only; alternating exposes
    both to the same conditions. ``ref`` may be None (returns None for its times)."""
    best_time(ours, 0, warmup, sync)
    if ref is not None:
        best_time(ref, 0, warmup, ref_sync)
    a, b = [], []
    for _ in range(rounds):
        a += call_times(ours, per_round, sync)
        if ref is not None:
            b += call_times(ref, per_round, ref_sync)
    return a, (b if ref is not None else None)


def paired_best_times(ours, ref, rounds=5, per_round=2, warmup=2, sync=None, ref_sync=None):
    """The best of :func:`paired_times` for each side (None for a missing ``ref``)."""
    a, b = paired_times(ours, ref, rounds, per_round, warmup, sync, ref_sync)
    return min(a), (min(b) if b else None)


def paired_run_times(ours, ref, rounds=3, sync=None, ref_sync=None):
    """Wall times (seconds) of ``rounds`` calls each of ``ours`` and ``ref``, alternating one
    call of each (for calls long enough that one is a measurement). Returns two lists."""
    a, b = [], []
    for _ in range(rounds):
        a.append(best_time(ours, 1, 0, sync))
        b.append(best_time(ref, 1, 0, ref_sync))
    return a, b


def median(times):
    return float(numpy.median(times))


def matmul_gflops(n=1024, repeat=5, xp=numpy, sync=None):
    """Measured float32 matrix-product rate of this machine (GFLOP/s): the ceiling for dense and conv."""
    a = xp.ones((n, n), dtype=numpy.float32)
    b = xp.ones((n, n), dtype=numpy.float32)
    t = best_time(lambda: a @ b, repeat=repeat, sync=sync)
    return 2 * n ** 3 / t / 1e9


def try_import_torch():
    try:
        import torch
        return torch
    except ImportError:
        return None


def fmt_times_row(name, ours, ref=None, width=34):
    """One table row from two lists of times: minidl median and best, PyTorch median and best (ms),
    and the ratios of the medians and of the bests."""
    cells = f"{median(ours) * 1e3:9.2f}{min(ours) * 1e3:9.2f}"
    if ref:
        cells += (f"{median(ref) * 1e3:9.2f}{min(ref) * 1e3:9.2f}"
                  f"{median(ours) / median(ref):8.2f}x{min(ours) / min(ref):7.2f}x")
    return f"{name:<{width}}{cells}"


TIMES_HEADER = (f"{'':<34}{'minidl':>9}{'(best)':>9}{'torch':>9}{'(best)':>9}{'ratio':>9}{'(best)':>7}\n"
                f"{'':<34}{'median':>9}{'':>9}{'median':>9}{'':>9}{'median':>9}")


def fmt_row(name, ours, ref=None, flops=None):
    """One table row: minidl ms, reference ms, ratio, minidl GFLOP/s."""
    ref_s = f"{ref * 1e3:9.2f}" if ref else "        -"
    ratio = f"{ours / ref:6.2f}x" if ref else "      -"
    gf = f"{flops / ours / 1e9:8.1f}" if flops else "       -"
    return f"{name:<34}{ours * 1e3:9.2f}{ref_s}{ratio}{gf}"
