"""Engine benchmark: a training step of a model and each of its layers' forward+backward, in minidl
and (when installed) PyTorch on the same machine, in one run, plus the peak memory of a step.

    python benchmarks/bench_engine.py [--model madry_mnist|cifar_cnn|preact_resnet18] [--batch 128]
                                      [--device cpu|cuda] [--threads N] [--repeat 8] [--no-layers]
                                      [--no-memory]

Both libraries are timed in alternating rounds (``--repeat`` rounds of 2 calls each, after 2
warm-up calls, which is also when minidl's ``auto`` mode measures its convolution algorithms);
each row prints the median and the best call of each, and the ratios minidl / PyTorch (lower is
better). The header names the BLAS library, its version, the CPU kernel OpenBLAS picked
(``OPENBLAS_CORETYPE`` overrides it) and the thread counts, as threadpoolctl reports them.
``--threads N`` sets NumPy's BLAS (through threadpoolctl), minidl's kernel loops and PyTorch
to N threads. Memory: see ``peak_step_memory``.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time

import numpy

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import minidl as md  # noqa: E402
import minidl.functional as F  # noqa: E402
from minidl import backend  # noqa: E402
from minidl.kernels.runtime import autotune, blas, parallel  # noqa: E402
from minidl.models import get_model  # noqa: E402

import bench_models  # noqa: E402
from common import (TIMES_HEADER, benchmark_parser, fmt_times_row, matmul_gflops, median,  # noqa: E402
                    paired_times, try_import_torch)

MODELS = ("madry_mnist", "cifar_cnn", "preact_resnet18")
INPUT = {"madry_mnist": (1, 28, 28), "cifar_cnn": (3, 32, 32), "preact_resnet18": (3, 32, 32)}


# ---------------------------------------------------------------------------------------------
# layers: (name, input shape, kind); kinds: ("conv", F, k, pad, stride, input_grad), ("bn",),
# ("relu",), ("pool",), ("gap",), ("dense", F), ("ce",)
# ---------------------------------------------------------------------------------------------
def layer_specs(model, batch):
    B = batch
    if model == "madry_mnist":
        return [("conv1 5x5 1->32 pad 2", (B, 1, 28, 28), ("conv", 32, 5, 2, 1, False)),
                ("relu1 32x28x28", (B, 32, 28, 28), ("relu",)),
                ("maxpool1 2x2 32x28x28", (B, 32, 28, 28), ("pool",)),
                ("conv2 5x5 32->64 pad 2", (B, 32, 14, 14), ("conv", 64, 5, 2, 1, True)),
                ("maxpool2 2x2 64x14x14", (B, 64, 14, 14), ("pool",)),
                ("dense 3136->1024", (B, 3136), ("dense", 1024)),
                ("dense 1024->10", (B, 1024), ("dense", 10)),
                ("cross-entropy", (B, 10), ("ce",))]
    if model == "cifar_cnn":
        specs = [("conv 3x3 3->24 on 32x32", (B, 3, 32, 32), ("conv", 24, 3, 1, 1, False))]
        for c_in, c, side in ((24, 24, 32), (24, 48, 16), (48, 48, 16), (48, 96, 8), (96, 96, 8)):
            specs.append((f"conv 3x3 {c_in}->{c} on {side}x{side}", (B, c_in, side, side),
                          ("conv", c, 3, 1, 1, True)))
        for c, side in ((24, 32), (48, 16), (96, 8)):
            specs += [(f"batchnorm {c}x{side}x{side}", (B, c, side, side), ("bn",)),
                      (f"relu {c}x{side}x{side}", (B, c, side, side), ("relu",)),
                      (f"maxpool 2x2 {c}x{side}x{side}", (B, c, side, side), ("pool",))]
        return specs + [("global avg pool 96x4x4", (B, 96, 4, 4), ("gap",)),
                        ("dense 96->10", (B, 96), ("dense", 10)), ("cross-entropy", (B, 10), ("ce",))]
    if model == "preact_resnet18":
        specs = [("conv 3x3 3->64 on 32x32", (B, 3, 32, 32), ("conv", 64, 3, 1, 1, False))]
        for c_in, c, side, stride in ((64, 64, 32, 1), (64, 128, 32, 2), (128, 128, 16, 1), (128, 256, 16, 2),
                                      (256, 256, 8, 1), (256, 512, 8, 2), (512, 512, 4, 1)):
            specs.append((f"conv 3x3 {c_in}->{c} s{stride} on {side}x{side}", (B, c_in, side, side),
                          ("conv", c, 3, 1, stride, True)))
        specs.append(("conv 1x1 64->128 s2 on 32x32", (B, 64, 32, 32), ("conv", 128, 1, 0, 2, True)))
        for c, side in ((64, 32), (128, 16), (256, 8), (512, 4)):
            specs += [(f"batchnorm {c}x{side}x{side}", (B, c, side, side), ("bn",)),
                      (f"relu {c}x{side}x{side}", (B, c, side, side), ("relu",))]
        return specs + [("dense 512->10", (B, 512), ("dense", 10)), ("cross-entropy", (B, 10), ("ce",))]
    raise ValueError(f"--model: expected one of {', '.join(MODELS)}, got {model!r}")


def minidl_layer(spec, device, rng):
    _, shape, kind = spec
    input_grad = kind[0] != "conv" or kind[5]
    x = md.tensor(rng.standard_normal(shape).astype(numpy.float32), device=device, requires_grad=input_grad)
    if kind[0] == "conv":
        w = md.tensor(rng.standard_normal((kind[1], shape[1], kind[2], kind[2])).astype(numpy.float32) * 0.1,
                      device=device, requires_grad=True)
        f = lambda: F.conv2d(x, w, padding=kind[3], stride=kind[4])  # noqa: E731
    elif kind[0] == "dense":
        w = md.tensor(rng.standard_normal((kind[1], shape[1])).astype(numpy.float32) * 0.01, device=device,
                      requires_grad=True)
        b = md.zeros(kind[1], device=device, requires_grad=True)
        f = lambda: F.linear(x, w, b)  # noqa: E731
    elif kind[0] == "bn":
        layer = md.nn.BatchNorm2d(shape[1]).to(device)
        f = lambda: layer(x)  # noqa: E731
    elif kind[0] == "relu":
        f = lambda: F.relu(x)  # noqa: E731
    elif kind[0] == "pool":
        f = lambda: F.max_pool2d(x, 2)  # noqa: E731
    elif kind[0] == "gap":
        layer = md.nn.GlobalAvgPool2d()
        f = lambda: layer(x)  # noqa: E731
    else:
        y = md.tensor(rng.integers(0, 10, shape[0]), device=device)
        return lambda: F.cross_entropy(x, y).backward()

    def run():
        out = f()
        out.backward(backend.get_array_module(out.array).ones(out.shape, dtype=out.dtype))
    return run


def torch_layer(torch, spec, device, rng):
    _, shape, kind = spec
    input_grad = kind[0] != "conv" or kind[5]
    x = torch.tensor(rng.standard_normal(shape).astype(numpy.float32), device=device, requires_grad=input_grad)
    tf = torch.nn.functional
    if kind[0] == "conv":
        w = torch.randn(kind[1], shape[1], kind[2], kind[2], device=device, requires_grad=True)
        f = lambda: tf.conv2d(x, w, padding=kind[3], stride=kind[4])  # noqa: E731
    elif kind[0] == "dense":
        w = torch.randn(kind[1], shape[1], device=device, requires_grad=True)
        b = torch.zeros(kind[1], device=device, requires_grad=True)
        f = lambda: tf.linear(x, w, b)  # noqa: E731
    elif kind[0] == "bn":
        layer = torch.nn.BatchNorm2d(shape[1]).to(device)
        f = lambda: layer(x)  # noqa: E731
    elif kind[0] == "relu":
        f = lambda: tf.relu(x)  # noqa: E731
    elif kind[0] == "pool":
        f = lambda: tf.max_pool2d(x, 2)  # noqa: E731
    elif kind[0] == "gap":
        f = lambda: x.mean(dim=(2, 3))  # noqa: E731
    else:
        y = torch.tensor(rng.integers(0, 10, shape[0]), device=device)
        return lambda: tf.cross_entropy(x, y).backward()

    def run():
        out = f()
        out.backward(torch.ones_like(out))
    return run


# ---------------------------------------------------------------------------------------------
# whole models and training steps
# ---------------------------------------------------------------------------------------------
def _batch(name, batch, rng):
    return rng.random((batch,) + INPUT[name]).astype(numpy.float32), rng.integers(0, 10, batch)


def minidl_step(name, batch, device, rng):
    """A training step of minidl's ``name`` on a random batch (bench_models.py's step)."""
    return bench_models.minidl_step(name, *_batch(name, batch, rng), device)


def torch_step(torch, name, batch, device, rng):
    """The same step of the PyTorch twin (bench_models.TORCH_MODELS: same layers, same order)."""
    return bench_models.torch_step(torch, name, *_batch(name, batch, rng), device)


# ---------------------------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------------------------
def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_child(library, name, batch, threads):
    """Run in a fresh process: build the model and a batch, note the resident set size (RSS),
    run one training step (minidl's tuning happens here), then 3 more while a thread samples the
    RSS every millisecond. Prints the growth over the RSS before the first step: the peak of the
    first step (``ru_maxrss``) and the sampled peak of the later ones."""
    rng = numpy.random.default_rng(0)
    torch = try_import_torch() if library == "torch" else None
    if threads:
        _set_threads(threads, torch)
    step = minidl_step(name, batch, "cpu", rng) if library == "minidl" else torch_step(torch, name, batch, "cpu", rng)
    before = _rss_bytes()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    step()
    first = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    sampled, done = [_rss_bytes()], threading.Event()

    def sample():
        while not done.is_set():
            sampled.append(_rss_bytes())
            time.sleep(0.001)
    sampler = threading.Thread(target=sample)
    sampler.start()
    for _ in range(3):
        step()
    done.set()
    sampler.join()
    # ru_maxrss is a high-water mark: if setting up went higher than the first step, that step's
    # own peak is hidden (reported as None rather than as a figure that looks exact).
    print(json.dumps({"first": first - before if first > peak_before else None,
                      "steady": max(sampled) - before}))


def peak_step_memory(name, batch, threads, torch_available):
    """Peak memory of training steps beyond the model and data, per library: each library runs in
    its own fresh process (so neither sees the other's allocations or allocator caches); see
    ``memory_child``. The growth counts everything a step allocates and keeps (activations,
    gradients, workspaces, pooled or cached buffers). Returns {library: {"first", "steady"}} in bytes."""
    out = {}
    for library in ("minidl", "torch") if torch_available else ("minidl",):
        cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", library, "--model", name,
               "--batch", str(batch)] + (["--threads", str(threads)] if threads else [])
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[library] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


# ---------------------------------------------------------------------------------------------
def _set_threads(n, torch):
    """n threads for NumPy's BLAS (threadpoolctl), minidl's kernel loops and PyTorch."""
    blas.set_num_threads(n)
    parallel.set_num_threads(n)
    if torch is not None:
        torch.set_num_threads(n)


def main(argv=None):
    parser = benchmark_parser(__doc__, repeat=8)
    parser.add_argument("--model", default="madry_mnist", choices=MODELS)
    parser.add_argument("--no-layers", action="store_true", help="time the training step only")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--memory-child", choices=("minidl", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        return memory_child(args.memory_child, args.model, args.batch, args.threads)
    device = backend.normalize_device(args.device)
    torch = try_import_torch()
    tdev = "cuda" if device == "cuda" else "cpu"
    if device == "cpu":
        _set_threads(args.threads or os.cpu_count() or 1, torch)
    xp = backend.xp_for(device)
    sync = (lambda: xp.cuda.Stream.null.synchronize()) if device == "cuda" else None
    tsync = (lambda: torch.cuda.synchronize()) if (torch is not None and device == "cuda") else None
    rng = numpy.random.default_rng(0)

    peak = matmul_gflops(xp=xp, sync=sync)
    overrides = ", ".join(f"{v}={os.environ[v]}" for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
                          if v in os.environ) or "none"
    print(f"model {args.model}, batch {args.batch}, float32, device {device}")
    print(f"NumPy BLAS: {blas.describe()}; OpenBLAS overrides: {overrides}; "
          f"float32 matmul 1024^3: {peak:.1f} GFLOP/s")
    print(f"minidl kernel threads: {parallel.get_num_threads()}; conv algorithm mode: "
          f"{autotune.get_conv_algorithm()}")
    print(f"reference: {'PyTorch ' + torch.__version__ + f', {torch.get_num_threads()} threads' if torch else 'PyTorch not installed (pip install torch)'}")
    print(f"{args.repeat} alternating rounds of 2 calls each (minidl, then PyTorch) after 2 warm-up calls; "
          f"ms, forward+backward")
    print(TIMES_HEADER)
    if not args.no_layers:
        for spec in layer_specs(args.model, args.batch):
            ours, ref = paired_times(minidl_layer(spec, device, rng),
                                     torch_layer(torch, spec, tdev, rng) if torch else None,
                                     rounds=args.repeat, sync=sync, ref_sync=tsync)
            print(fmt_times_row(spec[0], ours, ref))
    ours, ref = paired_times(minidl_step(args.model, args.batch, device, rng),
                             torch_step(torch, args.model, args.batch, tdev, rng) if torch else None,
                             rounds=args.repeat, sync=sync, ref_sync=tsync)
    print(fmt_times_row("TRAINING STEP (fwd+bwd+SGD)", ours, ref))
    if ref:
        print(f"training step minidl / PyTorch: median {median(ours) / median(ref):.2f}x, "
              f"best {min(ours) / min(ref):.2f}x")
    if device == "cpu" and not args.no_memory:
        mem = peak_step_memory(args.model, args.batch, args.threads, torch is not None)
        mib = lambda b: "hidden by set-up" if b is None else f"{b / 2**20:.0f} MiB"  # noqa: E731
        print("peak memory beyond model and data (fresh process per library; RSS growth over the RSS "
              "before the first step):")
        for what, label in (("steady", "steps 2-4, RSS sampled every 1 ms"), ("first", "first step, ru_maxrss")):
            line = f"  {label:<36} minidl {mib(mem['minidl'][what])}"
            if "torch" in mem:
                line += f", PyTorch {mib(mem['torch'][what])}"
                if mem["minidl"][what] and mem["torch"][what]:
                    line += f", ratio {mem['minidl'][what] / mem['torch'][what]:.2f}x"
            print(line)
    if device == "cpu" and autotune.get_conv_algorithm() == "auto":
        print("\n".join(autotune.describe()[1:]))


if __name__ == "__main__":
    main()
