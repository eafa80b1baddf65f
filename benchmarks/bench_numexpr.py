"""Plain NumPy against numexpr (which runs an expression over cache-sized blocks on several
threads) for the elementwise loops of a training step.

    pip install numexpr   # only for this measurement; minidl does not depend on it
    python benchmarks/bench_numexpr.py [--rounds 15]

The loops: ReLU forward and backward on cifar_cnn's and madry_mnist's largest activations
(128x24x32x32, 128x32x28x28) and the SGD update with momentum 0.9 on madry_mnist's dense weight
(1024x3136), float32. Each variant is timed in interleaved rounds; median and best in ms. These
figures decided that minidl keeps these loops as plain NumPy (``benchmarks/README.md``).
"""
import argparse
import os
import sys
import time

import numpy

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from minidl.kernels.runtime import parallel  # noqa: E402

from common import median  # noqa: E402


def variants(ne):
    rng = numpy.random.default_rng(0)
    cases = {}
    for shape in ((128, 24, 32, 32), (128, 32, 28, 28)):
        x = rng.standard_normal(shape, dtype=numpy.float32)
        g = rng.standard_normal(shape, dtype=numpy.float32)
        y = numpy.maximum(x, 0)
        tag = "x".join(map(str, shape))
        cases[f"relu forward {tag}"] = {
            "numpy": lambda x=x: numpy.maximum(x, 0),
            "numexpr": lambda x=x: ne.evaluate("where(x > 0, x, 0)", local_dict={"x": x}),
        }
        cases[f"relu backward {tag}"] = {
            "numpy": lambda g=g, y=y: g * (y > 0),
            "numexpr": lambda g=g, y=y: ne.evaluate("where(y > 0, g, 0)", local_dict={"g": g, "y": y}),
        }
    p = rng.standard_normal((1024, 3136), dtype=numpy.float32)
    gr = rng.standard_normal(p.shape, dtype=numpy.float32)
    v = rng.standard_normal(p.shape, dtype=numpy.float32)
    lr, mu = numpy.float32(0.01), numpy.float32(0.9)

    def numpy_sgd():  # SGD.update's ufuncs: v *= mu; v += g; p -= lr * v
        numpy.multiply(v, mu, out=v)
        numpy.add(v, gr, out=v)
        numpy.subtract(p, lr * v, out=p)

    def ne_sgd():
        ne.evaluate("mu * v + g", local_dict={"mu": mu, "v": v, "g": gr}, out=v)
        ne.evaluate("p - lr * v", local_dict={"p": p, "lr": lr, "v": v}, out=p)
    cases["sgd momentum 1024x3136"] = {"numpy": numpy_sgd, "numexpr": ne_sgd}
    return cases


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    import numexpr as ne
    threads = parallel.get_num_threads()
    ne.set_num_threads(threads)
    print(f"numexpr {ne.__version__} ({threads} threads); {args.rounds} interleaved rounds; ms, median (best)")
    for name, fns in variants(ne).items():
        times = {k: [] for k in fns}
        for fn in fns.values():
            fn()
        for _ in range(args.rounds):
            for k, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
        print(f"{name:<32}" + "  ".join(f"{k} {median(t) * 1e3:6.2f} ({min(t) * 1e3:5.2f})" for k, t in times.items()),
              flush=True)


if __name__ == "__main__":
    main()
