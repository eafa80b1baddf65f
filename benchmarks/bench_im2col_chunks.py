"""im2col's chunk size (``conv_im2col.CHUNK_BYTES``) on the CIFAR-10 network's six convolutions.

    python benchmarks/bench_im2col_chunks.py [--mib 1 2 4 8 16] [--batch 128] [--repeat 6]

For each chunk size, each layer of ``cifar_cnn`` (3x3, stride 1, padding 1) runs forward and
backward by im2col in the layout the fixed rule picks (the first layer without the input
gradient, as in training); prints the median ms per layer and their sum.
"""
import argparse
import os
import sys
import time

import numpy

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from minidl.kernels import conv_im2col  # noqa: E402

LAYERS = [(3, 24, 32), (24, 24, 32), (24, 48, 16), (48, 48, 16), (48, 96, 8), (96, 96, 8)]  # C, F, side


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=float, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=6)
    args = parser.parse_args(argv)
    rng = numpy.random.default_rng(0)
    dt = numpy.dtype(numpy.float32)
    data = [(rng.standard_normal((args.batch, C, S, S), dtype=numpy.float32),
             rng.standard_normal((F, C, 3, 3), dtype=numpy.float32),
             rng.standard_normal((args.batch, F, S, S), dtype=numpy.float32), S, C) for C, F, S in LAYERS]
    print("chunk    " + " ".join(f"{C:>3}->{F:<3}@{S:<2}" for C, F, S in LAYERS) + "     sum   (median ms, forward+backward)")
    old = conv_im2col.CHUNK_BYTES
    try:
        for mib in args.mib:
            conv_im2col.CHUNK_BYTES = int(mib * (1 << 20))
            row = []
            for x, w, g, S, C in data:
                def once():
                    _, cache = conv_im2col.forward(x, w, (1, 1), (1, 1), (S, S), dt)
                    conv_im2col.backward(g, cache, C != 3, True)
                once()
                times = []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    once()
                    times.append(time.perf_counter() - t0)
                row.append(float(numpy.median(times)) * 1e3)
            print(f"{mib:5g} MiB " + " ".join(f"{v:10.1f}" for v in row) + f" {sum(row):8.1f}")
    finally:
        conv_im2col.CHUNK_BYTES = old


if __name__ == "__main__":
    main()
