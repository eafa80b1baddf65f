"""Attack speed, minidl against PyTorch in one run.

PGD throughput: images x steps per second of an L-inf PGD attack on the Madry MNIST network,
in minidl and (when installed) in a PyTorch PGD of the same model and the same rule.

    python benchmarks/bench_attacks.py [--batch 128] [--steps 10] [--device cpu|cuda] [--repeat 5]
                                       [--threads N] [--blas-threads M]

Each PGD step is a forward pass and a backward pass to the input (no weight gradients),
then the sign step and the projection onto the eps-box and [0, 1]. Prints the median and the
best call of each library. ``--threads N`` sets NumPy's BLAS (through threadpoolctl), minidl's
kernel loops and PyTorch to N threads; ``--blas-threads M`` then gives minidl's BLAS M threads
instead (e.g. 1, so that no idle OpenBLAS worker spins on the core the kernel loops use).

AutoAttack: minidl's ``autoattack`` (standard, L-inf) against torchattacks' APGD-CE, APGD-T,
FAB-T and Square at the paper's settings (100 steps, 9 targets, 5,000 queries; torchattacks'
own ``AutoAttack`` class uses 10 steps) on the same model and images, alternating whole runs;
prints both robust accuracies, and the time ratio's median and best.

    python benchmarks/bench_attacks.py --attack autoattack --checkpoint runs/mnist_pgd/checkpoint.npz \
        --data-dir ../shared/data [--batch 100] [--eps 0.3] [--repeat 3]

Without --checkpoint, a randomly initialised ``wong_mnist`` attacks random images labelled
with its own predictions (eps 0.01, so that every stage has points left).
"""
import os
import sys

import numpy

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from minidl import backend  # noqa: E402
from minidl.adversarial import pgd  # noqa: E402
from minidl.kernels.runtime import blas, parallel  # noqa: E402
from minidl.models import madry_mnist  # noqa: E402

from common import (benchmark_parser, best_time, median, paired_best_times, paired_run_times, paired_times,  # noqa: E402
                    try_import_torch)


def torch_pgd(torch, model, x, y, eps, alpha, steps):
    """The same PGD rule in PyTorch (random start in the box, sign steps, projection)."""
    delta = (torch.rand_like(x) * 2 - 1) * eps
    x_adv = (x + delta).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(x_adv), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        with torch.no_grad():
            x_adv = x_adv + alpha * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


def torch_madry(torch):
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(3136, 1024), nn.ReLU(), nn.Linear(1024, 10))


def torch_copy(torch, model):
    """The same Sequential of Conv2d / Linear / ReLU / Flatten in PyTorch, same weights."""
    nn, layers = torch.nn, []
    for m in model:
        kind = type(m).__name__
        if kind == "Conv2d":
            t = nn.Conv2d(m.weight.shape[1], m.weight.shape[0], m.weight.shape[2], stride=m.stride, padding=m.padding)
        elif kind == "Linear":
            t = nn.Linear(m.weight.shape[1], m.weight.shape[0])
        else:
            layers.append({"ReLU": nn.ReLU, "Flatten": nn.Flatten}[kind]())
            continue
        t.weight.data = torch.tensor(backend.to_numpy(m.weight.array))
        t.bias.data = torch.tensor(backend.to_numpy(m.bias.array))
        layers.append(t)
    return nn.Sequential(*layers).eval()


def bench_autoattack(args):
    from minidl.adversarial import autoattack
    from minidl.adversarial.evaluate import predict
    from minidl.experiment import load_arrays, load_model
    from minidl.models import wong_mnist
    from minidl.tensor import Tensor
    torch = try_import_torch()
    try:
        import torchattacks as ta
    except ImportError:
        ta = None
    if args.checkpoint:
        model, state = load_model(args.checkpoint)
        x, y = load_arrays(state["config"]["dataset"], args.data_dir, train=False, limit=args.batch)
        eps = args.eps
    else:
        model = wong_mnist().eval()
        x = numpy.random.default_rng(0).random((args.batch, 1, 28, 28)).astype(numpy.float32)
        y = predict(model, Tensor(x))
        eps = 0.01
    print(f"AutoAttack standard, L-inf eps {eps:g}, {len(y)} images, "
          f"{'checkpoint ' + args.checkpoint if args.checkpoint else 'random wong_mnist on random images'}; "
          f"{args.repeat} alternating runs (minidl, then torchattacks)")
    ours_acc = []

    def ours():
        adv = autoattack(model, x, y, eps)
        ours_acc.append(float((predict(model, adv) == y).mean()))

    if torch is None or ta is None:
        times = [best_time(ours, 1, 0) for _ in range(args.repeat)]
        print(f"minidl: median {numpy.median(times):.1f} s, best {min(times):.1f} s, robust {ours_acc[-1]:.4f}; "
              "no torch/torchattacks: no reference")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    tm = torch_copy(torch, model)
    tx, ty = torch.tensor(x), torch.tensor(numpy.asarray(y, dtype=numpy.int64))
    ref_acc = []

    def ref():
        attack = ta.MultiAttack([ta.APGD(tm, norm="Linf", eps=eps, steps=100, loss="ce", seed=0),
                                 ta.APGDT(tm, norm="Linf", eps=eps, steps=100, n_classes=10, seed=0),
                                 ta.FAB(tm, norm="Linf", eps=eps, steps=100, multi_targeted=True, n_classes=10, seed=0),
                                 ta.Square(tm, norm="Linf", eps=eps, n_queries=5000, seed=0)])
        adv = attack(tx, ty)
        with torch.no_grad():
            ref_acc.append(float((tm(adv).argmax(1) == ty).float().mean()))

    a, b = paired_run_times(ours, ref, rounds=args.repeat)
    ratios = [p / q for p, q in zip(a, b)]
    print(f"minidl      : median {numpy.median(a):7.1f} s, best {min(a):7.1f} s, robust accuracy {ours_acc[-1]:.4f}")
    print(f"torchattacks: median {numpy.median(b):7.1f} s, best {min(b):7.1f} s, robust accuracy {ref_acc[-1]:.4f}")
    print(f"minidl / torchattacks time: median {numpy.median(ratios):.2f}x, best {min(a) / min(b):.2f}x")


def main(argv=None):
    parser = benchmark_parser(__doc__, repeat=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--attack", choices=["pgd", "autoattack"], default="pgd")
    parser.add_argument("--checkpoint", default=None, help="autoattack: a training checkpoint to attack")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--eps", type=float, default=0.3, help="autoattack with --checkpoint: L-inf eps")
    parser.add_argument("--blas-threads", type=int, default=None,
                        help="minidl's BLAS threads (default: --threads, else all cores)")
    args = parser.parse_args(argv)
    threads = args.threads or os.cpu_count() or 1
    blas.set_num_threads(args.blas_threads or threads)
    parallel.set_num_threads(threads)
    if args.attack == "autoattack":
        return bench_autoattack(args)
    device = backend.normalize_device(args.device)
    xp = backend.xp_for(device)
    sync = (lambda: xp.cuda.Stream.null.synchronize()) if device == "cuda" else None
    rng = numpy.random.default_rng(0)
    x = rng.random((args.batch, 1, 28, 28)).astype(numpy.float32)
    y = rng.integers(0, 10, args.batch)
    eps, alpha = 0.3, 0.01
    work = args.batch * args.steps

    model = madry_mnist().to(device).eval()
    xd, yd = backend.to_device(x, device), backend.to_device(y, device)
    ours_fn = lambda: pgd(model, xd, yd, eps, alpha, args.steps)  # noqa: E731
    print(f"device {device}; PGD-{args.steps} L-inf on madry_mnist, batch {args.batch}, float32; "
          f"{args.repeat} alternating rounds of 2 calls (minidl, then PyTorch)")
    print(f"NumPy BLAS: {blas.describe()}; minidl kernel threads {parallel.get_num_threads()}")
    torch = try_import_torch()
    ref_fn, tsync = None, None
    if torch is None:
        print("PyTorch not installed: no reference (pip install torch)")
    else:
        if device == "cpu":
            torch.set_num_threads(threads)
        tdev = "cuda" if device == "cuda" else "cpu"
        tmodel = torch_madry(torch).to(tdev).eval()
        for p in tmodel.parameters():
            p.requires_grad_(False)
        tx, ty = torch.tensor(x, device=tdev), torch.tensor(y, device=tdev)
        tsync = torch.cuda.synchronize if device == "cuda" else None
        ref_fn = lambda: torch_pgd(torch, tmodel, tx, ty, eps, alpha, args.steps)  # noqa: E731
    ours, ref = paired_times(ours_fn, ref_fn, rounds=args.repeat, per_round=2, warmup=1, sync=sync,
                             ref_sync=tsync)
    for name, times in (("minidl ", ours), ("PyTorch", ref)):
        if times:
            print(f"{name}: median {median(times) * 1e3:8.1f} ms ({work / median(times):6.0f} images x steps / s), "
                  f"best {min(times) * 1e3:8.1f} ms")
    if ref:
        print(f"minidl / PyTorch time: median {median(ours) / median(ref):.2f}x, best {min(ours) / min(ref):.2f}x")

if __name__ == "__main__":
    main()
