"""The CPU kernels' work-piece sizes, on the CIFAR-10 network's layers: im2col's chunk
(``conv_im2col.CHUNK_BYTES``) and batch norm's chunk (``batch_norm_cpu.CHUNK_BYTES``).

    python benchmarks/bench_chunks.py [--knob im2col bn] [--mib 0.25 1 2 4 8]
                                      [--batch 128] [--repeat 6]

For each knob, each ``cifar_cnn`` layer of that kind runs forward and backward once per size in
every round (rounds alternate the sizes, so a slow spell of a shared machine hits all of them):
the convolutions by im2col in the layout the fixed rule picks (the first layer without the
input gradient, as in training), batch norm in training mode. Prints the median ms per
layer and their sum. The pieces are handed out to the kernel threads, so the best size depends
on the thread count (``MINIDL_NUM_THREADS``) as well as on the caches.
"""
import argparse
import os
import sys
import time

import numpy

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from minidl.kernels import batch_norm_cpu, conv_im2col  # noqa: E402
from minidl.kernels.runtime import parallel  # noqa: E402
from minidl.ops import normalization  # noqa: E402

CONVS = [(3, 24, 32), (24, 24, 32), (24, 48, 16), (48, 48, 16), (48, 96, 8), (96, 96, 8)]  # C, F, side
MAPS = [(24, 32), (48, 16), (96, 8)]  # channels, side of the batch-norm inputs
KNOBS = {"im2col": (conv_im2col, "CHUNK_BYTES"), "bn": (batch_norm_cpu, "CHUNK_BYTES")}


def layers(knob, batch, rng):
    """(label, fn) for every cifar_cnn layer that ``knob`` sizes; fn runs forward and backward."""
    dt = numpy.dtype(numpy.float32)
    out = []
    if knob == "im2col":
        for C, F, S in CONVS:
            x = rng.standard_normal((batch, C, S, S), dtype=numpy.float32)
            w = rng.standard_normal((F, C, 3, 3), dtype=numpy.float32)
            g = rng.standard_normal((batch, F, S, S), dtype=numpy.float32)

            def conv(x=x, w=w, g=g, S=S, C=C):
                _, cache = conv_im2col.forward(x, w, (1, 1), (1, 1), (S, S), dt)
                conv_im2col.backward(g, cache, C != 3, True)
            out.append((f"{C}->{F}@{S}", conv))
        return out
    for C, S in MAPS:
        x = rng.standard_normal((batch, C, S, S), dtype=numpy.float32) * 2 + 1
        g = rng.standard_normal((batch, C, S, S), dtype=numpy.float32)
        gamma, beta = numpy.ones(C, numpy.float32), numpy.zeros(C, numpy.float32)

        def bn(x=x, g=g, gamma=gamma, beta=beta, C=C):
            f = normalization.BatchNorm(numpy.zeros(C, numpy.float32), numpy.ones(C, numpy.float32), True)
            f.needs_grad = (True, True, True)
            f.forward(x, gamma, beta)
            f.backward(g)
        out.append((f"{C}x{S}x{S}", bn))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--knob", nargs="+", choices=sorted(KNOBS), default=sorted(KNOBS))
    parser.add_argument("--mib", type=float, nargs="+", default=[0.25, 1, 2, 4, 8])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=6)
    args = parser.parse_args(argv)
    rng = numpy.random.default_rng(0)
    print(f"kernel threads: {parallel.get_num_threads()}; batch {args.batch}; median ms of "
          f"{args.repeat} rounds, forward+backward")
    for knob in args.knob:
        module, name = KNOBS[knob]
        work = layers(knob, args.batch, rng)
        old = getattr(module, name)
        times = {mib: [[] for _ in work] for mib in args.mib}
        try:
            for _ in range(args.repeat + 1):  # the first round warms up and is dropped
                for mib in args.mib:
                    setattr(module, name, int(mib * (1 << 20)))
                    for j, (_, fn) in enumerate(work):
                        t0 = time.perf_counter()
                        fn()
                        times[mib][j].append(time.perf_counter() - t0)
        finally:
            setattr(module, name, old)
        print(f"\n{knob} ({module.__name__}.{name}, now {old / (1 << 20):g} MiB)")
        print("   MiB " + " ".join(f"{label:>11}" for label, _ in work) + "         sum")
        for mib in args.mib:
            row = [float(numpy.median(t[1:])) * 1e3 for t in times[mib]]
            print(f"{mib:6g} " + " ".join(f"{v:11.2f}" for v in row) + f" {sum(row):11.2f}")


if __name__ == "__main__":
    main()
