"""The NumPy and BLAS facts behind the CPU kernels' arrangement, each timed on this machine.

    python benchmarks/bench_primitives.py [--repeat 30]

1. A binary ufunc with a per-channel operand on one cache-sized chunk of a batch (the batch
   norm passes): the operand broadcast with zero strides, (1, C, 1, 1), against the same values
   spread over one image, (1, C, H, W), against a full-size operand.
2. ReLU's forward on a chunk: ``maximum(x, 0)`` against ``maximum(x, zeros)``.
3. The im2col product of each ``cifar_cnn`` convolution in both orientations, one BLAS thread:
   ``W @ cols`` (F, K) x (K, M), channels first, against ``cols @ W^T`` (M, K) x (K, F),
   channels last (``conv_im2col``'s ``nhwc`` layout).
4. The input gradient of a convolution by im2col's ``nhwc`` layout, the two ways
   (``conv_im2col._input_grad_by_conv``): as a convolution of dy, or dcols folded by col2im.
5. A convolution's bias on a whole output (``ops/conv.py``): the add with the bias broadcast
   against spread over an image (``kernels.arrays.per_channel``), and its gradient by
   ``sum(axis=(0, 2, 3))`` against ``kernels.arrays.channel_sum`` (one einsum pass).
6. SGD's update of ``madry_mnist``'s 3.3 M parameters (``optim/sgd.py``): whole-array
   expressions, as the optimizer was written before, against ``SGD.step`` (in place, a
   cache-sized piece at a time over the kernel threads), with momentum, and with Nesterov
   momentum and weight decay.

Each row prints the median (and best) microseconds or milliseconds of ``--repeat`` calls, the
variants of a row timed in alternation.
"""
import argparse
import os
import sys
import time

import numpy
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import minidl as md  # noqa: E402
from minidl.kernels import conv_im2col  # noqa: E402
from minidl.kernels.runtime import blas  # noqa: E402
from minidl.models import get_model  # noqa: E402
from minidl.kernels.arrays import channel_sum, per_channel  # noqa: E402

CONVS = [(3, 24, 32), (24, 24, 32), (24, 48, 16), (48, 48, 16), (48, 96, 8), (96, 96, 8)]  # C, F, side


def alternate(fns, repeat):
    """Median and best seconds of each of ``fns`` (name -> callable), timed in alternation."""
    times = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: (float(numpy.median(t)), min(t)) for name, t in times.items()}


def row(label, results, scale, unit):
    cells = "  ".join(f"{name} {m * scale:8.2f} ({b * scale:.2f})" for name, (m, b) in results.items())
    print(f"{label:<22} {cells}   [{unit}, median (best)]")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args(argv)
    rng = numpy.random.default_rng(0)
    f32 = numpy.float32
    print(f"NumPy {numpy.__version__}; BLAS: {blas.describe()}")

    print("\n1. x - m on a batch-norm chunk, float32")
    for C, S, n in ((24, 32, 2), (48, 16, 8), (96, 8, 32)):
        x = rng.standard_normal((n, C, S, S), dtype=f32)
        out = numpy.empty_like(x)
        m = rng.standard_normal((1, C, 1, 1), dtype=f32)
        spread = numpy.ascontiguousarray(numpy.broadcast_to(m, (1, C, S, S)))
        full = numpy.ascontiguousarray(numpy.broadcast_to(m, x.shape))
        row(f"{n}x{C}x{S}x{S}", alternate({
            "broadcast": lambda: numpy.subtract(x, m, out=out),
            "over an image": lambda: numpy.subtract(x, spread, out=out),
            "full size": lambda: numpy.subtract(x, full, out=out)}, args.repeat), 1e6, "us")

    print("\n2. ReLU forward on a 2 MiB piece, float32")
    x = rng.standard_normal(1 << 19, dtype=f32)
    out, zeros = numpy.empty_like(x), numpy.zeros_like(x)
    row("maximum", alternate({"against 0": lambda: numpy.maximum(x, 0, out=out),
                              "against zeros": lambda: numpy.maximum(x, zeros, out=out)}, args.repeat),
        1e6, "us")

    print("\n3. im2col products of cifar_cnn, batch 128, one BLAS thread")
    with threadpool_limits(1):
        for C, F, S in CONVS:
            K, M = 9 * C, 128 * S * S
            w = rng.standard_normal((F, K), dtype=f32)
            cols = rng.standard_normal((K, M), dtype=f32)
            cols_t = numpy.ascontiguousarray(cols.T)
            y, y_t = numpy.empty((F, M), f32), numpy.empty((M, F), f32)
            res = alternate({"W @ cols": lambda: numpy.matmul(w, cols, out=y),
                             "cols @ W^T": lambda: numpy.matmul(cols_t, w.T, out=y_t)}, max(5, args.repeat // 3))
            gflops = {name: 2 * F * K * M / m / 1e9 for name, (m, _) in res.items()}
            row(f"{C}->{F} on {S}x{S}", res, 1e3, "ms")
            print(f"{'':<22} GFLOP/s at the median: " + ", ".join(f"{n} {g:.0f}" for n, g in gflops.items()))

    print("\n4. input gradient by im2col channels last (nhwc), float32, batch 128")
    orig = conv_im2col._input_grad_by_conv
    for C, F, S, k in ((1, 32, 28, 5), (32, 64, 14, 5), (24, 48, 16, 3), (48, 96, 8, 3)):
        x = rng.standard_normal((128, C, S, S), dtype=f32)
        w = rng.standard_normal((F, C, k, k), dtype=f32)
        g = rng.standard_normal((128, F, S, S), dtype=f32)
        _, cache = conv_im2col.forward(x, w, (1, 1), (k // 2, k // 2), (S, S), numpy.dtype(f32), layout="nhwc")

        def grad(by_conv):
            def run():
                conv_im2col._input_grad_by_conv = lambda *a, **kw: by_conv
                try:
                    conv_im2col.backward(g, cache, True, False)
                finally:
                    conv_im2col._input_grad_by_conv = orig
            return run
        row(f"{k}x{k} {C}->{F} on {S}x{S}", alternate({"as a convolution": grad(True), "col2im": grad(False)},
                                                    max(5, args.repeat // 3)), 1e3, "ms")


    print("\n5. a convolution's bias on its output, float32, batch 128")
    for C, S in ((32, 28), (64, 14), (24, 32)):
        g = rng.standard_normal((128, C, S, S), dtype=f32)
        b = rng.standard_normal(C, dtype=f32)
        row(f"add {C}x{S}x{S}", alternate({"broadcast": lambda: numpy.add(g, b.reshape(1, -1, 1, 1), out=g),
                                           "over an image": lambda: numpy.add(g, per_channel(b, g), out=g)},
                                          args.repeat), 1e3, "ms")
        row(f"gradient {C}x{S}x{S}", alternate({"sum(axis=(0, 2, 3))": lambda: g.sum(axis=(0, 2, 3)),
                                                "channel_sum": lambda: channel_sum(g)}, args.repeat), 1e3, "ms")

    print("\n6. SGD step on madry_mnist's parameters, float32")
    params = list(get_model("madry_mnist").parameters())
    for p in params:
        p.grad = md.tensor(rng.standard_normal(p.shape, dtype=f32))
    for label, kw in (("momentum 0.9", dict(momentum=0.9)),
                      ("Nesterov, decay 5e-4", dict(momentum=0.9, nesterov=True, weight_decay=5e-4))):
        opt = md.optim.SGD(params, lr=1e-6, **kw)
        opt.step()  # the velocities exist from here on
        velocities = [v.copy() for v in (st["velocity"] for st in opt.state)]

        def whole_arrays(mu=kw["momentum"], nesterov=kw.get("nesterov", False), wd=kw.get("weight_decay", 0.0)):
            for p, v in zip(params, velocities):
                g = p.grad.array + wd * p.array if wd else p.grad.array
                v *= mu
                v += g
                p.array -= 1e-6 * (g + mu * v if nesterov else v)
        row(label, alternate({"whole arrays": whole_arrays, "SGD.step": opt.step}, args.repeat), 1e3, "ms")


if __name__ == "__main__":
    main()
