"""Convolution algorithms on the CPU: im2col against FFT, forward + backward, per layer shape.

    python benchmarks/bench_conv_algorithms.py [--batch 128] [--threads N] [--repeat 5]

The figures behind the FFT rule (``use_fft`` in minidl/kernels/conv.py, the ``rule`` mode): for
each shape, the best time of a forward and backward pass by each algorithm (im2col and FFT timed
in alternating rounds), and which one the rule picks. Backward computes what training needs:
the weight gradient always, the input gradient except for a network's first layer.
"""
import os
import sys

import numpy

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from minidl.kernels import conv  # noqa: E402
from minidl.kernels.runtime import blas, parallel  # noqa: E402

from common import benchmark_parser, paired_best_times  # noqa: E402

# (name, C, F, kernel, padding, image side, input gradient needed)
SHAPES = [
    ("Madry conv1 5x5 1->32, 28x28", 1, 32, 5, 2, 28, False),
    ("Madry conv2 5x5 32->64, 14x14", 32, 64, 5, 2, 14, True),
    ("3x3 24->24, 32x32", 24, 24, 3, 1, 32, True),
    ("3x3 48->48, 16x16", 48, 48, 3, 1, 16, True),
    ("3x3 96->96, 8x8", 96, 96, 3, 1, 8, True),
]


def pass_by(algorithm, x, w, padding, need_x_grad):
    def run():
        y, cache = conv.conv2d_forward(x, w, (1, 1), (padding, padding), algorithm=algorithm)
        conv.conv2d_backward(numpy.ones_like(y), cache, need_x_grad=need_x_grad)
    return run


def main(argv=None):
    args = benchmark_parser(__doc__, repeat=5).parse_args(argv)
    if args.device != "cpu":
        raise SystemExit("bench_conv_algorithms: the FFT algorithm is CPU only (--device cpu)")
    if args.threads:
        blas.set_num_threads(args.threads)
        parallel.set_num_threads(args.threads)
    rng = numpy.random.default_rng(0)
    print(f"batch {args.batch}, float32, stride 1; best of {args.repeat} alternating rounds; ms, forward+backward")
    print(f"NumPy BLAS: {blas.describe()}")
    print(f"{'':<32}{'im2col':>9}{'fft':>9}{'fft/im2col':>12}  rule picks")
    for name, C, F, k, pad, side, need_x in SHAPES:
        x = rng.standard_normal((args.batch, C, side, side), dtype=numpy.float32)
        w = rng.standard_normal((F, C, k, k), dtype=numpy.float32) * 0.1
        im2col, fft = paired_best_times(pass_by("im2col", x, w, pad, need_x), pass_by("fft", x, w, pad, need_x),
                                        rounds=args.repeat)
        pick = "fft" if conv.use_fft(args.batch, C, F, (k, k), (1, 1), (side + 2 * pad - k + 1,) * 2) else "im2col"
        print(f"{name:<32}{im2col * 1e3:9.1f}{fft * 1e3:9.1f}{fft / im2col:11.2f}x  {pick}")


if __name__ == "__main__":
    main()
