"""Engine benchmark: a training step of the Madry MNIST network and each layer's forward+backward,
in minidl and (when installed) PyTorch on the same machine, in one run.

    python benchmarks/bench_engine.py [--batch 128] [--device cpu|cuda] [--repeat 8]

Prints, per row, minidl's time, PyTorch's, the ratio (minidl / PyTorch; lower is better) and
minidl's achieved GFLOP/s, beside the machine's measured float32 matrix-product GFLOP/s.
"""
import os
import sys

# BLAS thread counts are read when NumPy loads, so --threads must act before the import.
if "--threads" in sys.argv:
    _n = sys.argv[sys.argv.index("--threads") + 1]
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = _n

import numpy  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import minidl as md  # noqa: E402
import minidl.functional as F  # noqa: E402
from minidl import backend  # noqa: E402
from minidl.models import madry_mnist  # noqa: E402

from common import benchmark_parser, fmt_row, matmul_gflops, paired_best_times, try_import_torch  # noqa: E402

# (name, input shape, op builder) for the layers of the Madry network at batch B.
def layer_specs(batch):
    return [
        ("conv1 5x5 1->32 pad 2", (batch, 1, 28, 28), ("conv", 32, 5, 2), 2 * batch * 28 * 28 * 32 * 25),
        ("relu1", (batch, 32, 28, 28), ("relu",), 0),
        ("maxpool1 2x2", (batch, 32, 28, 28), ("pool",), 0),
        ("conv2 5x5 32->64 pad 2", (batch, 32, 14, 14), ("conv", 64, 5, 2), 2 * batch * 14 * 14 * 64 * 32 * 25),
        ("maxpool2 2x2", (batch, 64, 14, 14), ("pool",), 0),
        ("dense 3136->1024", (batch, 3136), ("dense", 1024), 2 * batch * 3136 * 1024),
        ("dense 1024->10", (batch, 1024), ("dense", 10), 2 * batch * 1024 * 10),
        ("cross-entropy", (batch, 10), ("ce",), 0),
    ]


def step_flops(batch):
    """Multiply-adds x2 of forward + backward (x3: forward, input grad, weight grad) of the network."""
    fwd = sum(f for *_, f in layer_specs(batch))
    return 3 * fwd - 2 * batch * 28 * 28 * 32 * 25  # conv1 needs no input gradient


def minidl_layer(spec, device, rng):
    shape, kind = spec[1], spec[2]
    x = md.tensor(rng.standard_normal(shape).astype(numpy.float32), device=device, requires_grad=True)
    if kind[0] == "conv":
        w = md.tensor(rng.standard_normal((kind[1], shape[1], kind[2], kind[2])).astype(numpy.float32) * 0.1,
                      device=device, requires_grad=True)
        b = md.zeros(kind[1], device=device, requires_grad=True)
        f = lambda: F.conv2d(x, w, b, padding=kind[3])
    elif kind[0] == "dense":
        w = md.tensor(rng.standard_normal((kind[1], shape[1])).astype(numpy.float32) * 0.01, device=device,
                      requires_grad=True)
        b = md.zeros(kind[1], device=device, requires_grad=True)
        f = lambda: F.linear(x, w, b)
    elif kind[0] == "relu":
        f = lambda: F.relu(x)
    elif kind[0] == "pool":
        f = lambda: F.max_pool2d(x, 2)
    else:
        y = rng.integers(0, 10, shape[0])
        return lambda: F.cross_entropy(x, y).backward()
    def run():
        out = f()
        out.backward(backend.get_array_module(out.data).ones(out.shape, dtype=out.dtype))
    return run


def torch_layer(torch, spec, device, rng):
    shape, kind = spec[1], spec[2]
    x = torch.tensor(rng.standard_normal(shape).astype(numpy.float32), device=device, requires_grad=True)
    tf = torch.nn.functional
    if kind[0] == "conv":
        w = torch.randn(kind[1], shape[1], kind[2], kind[2], device=device, requires_grad=True)
        b = torch.zeros(kind[1], device=device, requires_grad=True)
        f = lambda: tf.conv2d(x, w, b, padding=kind[3])
    elif kind[0] == "dense":
        w = torch.randn(kind[1], shape[1], device=device, requires_grad=True)
        b = torch.zeros(kind[1], device=device, requires_grad=True)
        f = lambda: tf.linear(x, w, b)
    elif kind[0] == "relu":
        f = lambda: tf.relu(x)
    elif kind[0] == "pool":
        f = lambda: tf.max_pool2d(x, 2)
    else:
        y = torch.tensor(rng.integers(0, 10, shape[0]), device=device)
        return lambda: tf.cross_entropy(x, y).backward()
    def run():
        out = f()
        out.backward(torch.ones_like(out))
    return run


def minidl_step(batch, device, rng):
    model = madry_mnist().to(device)
    opt = md.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = md.tensor(rng.random((batch, 1, 28, 28)).astype(numpy.float32), device=device)
    y = md.tensor(rng.integers(0, 10, batch), device=device)
    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def torch_step(torch, batch, device, rng):
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(3136, 1024), nn.ReLU(), nn.Linear(1024, 10)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.tensor(rng.random((batch, 1, 28, 28)).astype(numpy.float32), device=device)
    y = torch.tensor(rng.integers(0, 10, batch), device=device)
    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def main(argv=None):
    parser = benchmark_parser(__doc__, repeat=8)
    args = parser.parse_args(argv)
    device = backend.normalize_device(args.device)
    torch = try_import_torch()
    tdev = "cuda" if device == "cuda" else "cpu"
    if torch is not None and device == "cpu":
        torch.set_num_threads(args.threads or os.cpu_count() or 1)
    xp = backend.xp_for(device)
    sync = (lambda: xp.cuda.Stream.null.synchronize()) if device == "cuda" else None
    tsync = (lambda: torch.cuda.synchronize()) if (torch is not None and device == "cuda") else None
    rng = numpy.random.default_rng(0)

    peak = matmul_gflops(xp=xp, sync=sync)
    print(f"device: {device}; threads: {args.threads or os.cpu_count()}; float32 matmul (1024^3) measured at {peak:.1f} GFLOP/s")
    print(f"reference: {'PyTorch ' + torch.__version__ if torch else 'PyTorch not installed (pip install torch)'}")
    print(f"batch {args.batch}, float32, best of {args.repeat} alternating rounds of 2 calls each (minidl, then "
          f"PyTorch) after warm-up; times in ms, forward+backward")
    print(f"{'':<34}{'minidl':>9}{'torch':>9}{'ratio':>7}{'GFLOP/s':>8}")
    for spec in layer_specs(args.batch):
        ours, ref = paired_best_times(minidl_layer(spec, device, rng),
                                      torch_layer(torch, spec, tdev, rng) if torch else None,
                                      rounds=args.repeat, sync=sync, ref_sync=tsync)
        print(fmt_row(spec[0], ours, ref, 3 * spec[3] if spec[3] else None))
    ours, ref = paired_best_times(minidl_step(args.batch, device, rng),
                                  torch_step(torch, args.batch, tdev, rng) if torch else None,
                                  rounds=args.repeat, sync=sync, ref_sync=tsync)
    flops = step_flops(args.batch)
    print(fmt_row("TRAINING STEP (fwd+bwd+SGD)", ours, ref, flops))
    print(f"minidl reaches {flops / ours / 1e9 / peak:.0%} of the measured matmul rate"
          + (f"; PyTorch {flops / ref / 1e9 / peak:.0%}; minidl/PyTorch = {ours / ref:.2f}x" if ref else ""))


if __name__ == "__main__":
    main()
