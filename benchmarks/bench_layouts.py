"""im2col's three layouts (and FFT) on the convolution layers of madry_mnist and cifar_cnn:
the figures behind ``conv_im2col.choose_layout``, the fixed rule of the default tier.

    python benchmarks/bench_layouts.py [--batch 128] [--rounds 5]

For each layer, a forward and backward pass (the weight gradient always, the input gradient
except for a network's first layer, as in training) by ``im2col`` in each layout and by ``fft``
where it applies, timed in interleaved rounds; median and best ms, and what the rule picks.
"""
import argparse
import os
import sys
import time

import numpy

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from minidl.kernels import conv, conv_im2col  # noqa: E402

from common import median  # noqa: E402

# (name, C, F, kernel, padding, image side, input gradient needed)
LAYERS = [
    ("madry conv1 5x5 1->32 @28", 1, 32, 5, 2, 28, False),
    ("madry conv2 5x5 32->64 @14", 32, 64, 5, 2, 14, True),
    ("cifar 3x3 3->24 @32", 3, 24, 3, 1, 32, False),
    ("cifar 3x3 24->24 @32", 24, 24, 3, 1, 32, True),
    ("cifar 3x3 24->48 @16", 24, 48, 3, 1, 16, True),
    ("cifar 3x3 48->48 @16", 48, 48, 3, 1, 16, True),
    ("cifar 3x3 48->96 @8", 48, 96, 3, 1, 8, True),
    ("cifar 3x3 96->96 @8", 96, 96, 3, 1, 8, True),
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    rng = numpy.random.default_rng(0)
    print(f"batch {args.batch}, float32; {args.rounds} interleaved rounds; ms forward+backward, median (best)")
    for name, C, F, k, pad, side, need_x in LAYERS:
        x = rng.standard_normal((args.batch, C, side, side), dtype=numpy.float32)
        w = rng.standard_normal((F, C, k, k), dtype=numpy.float32) * 0.1
        runs = {}
        for layout in conv_im2col.LAYOUT_NAMES:
            runs[layout] = dict(algorithm="im2col", layout=layout)
        runs["fft"] = dict(algorithm="fft")
        times = {n: [] for n in runs}

        def once(opts):
            y, cache = conv.conv2d_forward(x, w, (1, 1), (pad, pad), **opts)
            conv.conv2d_backward(y, cache, need_x_grad=need_x)
        for opts in runs.values():
            once(opts)
        for _ in range(args.rounds):
            for n, opts in runs.items():
                t0 = time.perf_counter()
                once(opts)
                times[n].append(time.perf_counter() - t0)
        rule = conv.choose_algorithm(x, w, (1, 1), (pad, pad))
        if rule == "im2col":
            rule = conv_im2col.choose_layout(C, F, k, k, side + 2 * pad - k + 1, 1).name
        print(f"{name:<28}" + "  ".join(f"{n} {median(t) * 1e3:6.1f} ({min(t) * 1e3:6.1f})" for n, t in times.items())
              + f"   rule: {rule}", flush=True)


if __name__ == "__main__":
    main()
