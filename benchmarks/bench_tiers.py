"""minidl's two kernel tiers against PyTorch 2.x CPU, interleaved in one process.

    python benchmarks/bench_tiers.py [--work madry_mnist cifar_cnn pgd fwd1 fwd16 square]
                                     [--rounds 5] [--per-round 2] [--tiers fast reference]

Contenders per work: minidl on the fast tier (the default), minidl on the reference tier
(``minidl.kernels.use("reference")``: the plain array code of ``minidl/kernels/reference.py``
and ``ops``), and PyTorch. Every round times ``--per-round`` calls of each contender in turn,
so a slow spell of a shared machine lands on all of them; the table gives each contender's
median and best call and the ratios to PyTorch. Works:

* ``madry_mnist``, ``cifar_cnn``: a training step (forward, cross-entropy, backward, SGD with
  momentum 0.9), batch 128, float32, random data (``bench_models``' step);
* ``pgd``: PGD-10 (L-inf, eps 0.3, step 0.01) on madry_mnist in eval mode, batch 128;
* ``fwd1``, ``fwd16``: an evaluation forward pass of madry_mnist without gradients at batch 1
  and 16 (per-call overhead, what an attack's queries pay);
* ``square``: 100 queries of the Square attack's inner step on madry_mnist (batch 16):
  a forward pass and the margin loss per query.

A revision without ``minidl.kernels.use`` (before the tiers existed) runs the fast column only.
The header names the CPU, the BLAS and its OpenBLAS overrides.

``--ablation`` measures instead what each group of fast implementations buys on a training step:
the fast tier against the fast tier with that group pinned to its reference
(``minidl.kernels.force``), interleaved, one untimed call before each contender's timed ones;
"buys" is the share of the step without it that it saves.
On a loaded machine a step's spread hides a few percent, so ``--replay`` measures the function
kernels more finely: it records every call one training step makes to them, then replays the
calls of each group with the fast and with the reference implementation, interleaved, and gives
the saving as a share of the step (the fast step's time plus what the reference would add).
"""
import argparse
import os
import platform
import sys
import time

import numpy

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import minidl as md  # noqa: E402
import minidl.functional as F  # noqa: E402
from minidl import kernels  # noqa: E402
from minidl.models import get_model  # noqa: E402

from bench_attacks import torch_madry, torch_pgd  # noqa: E402
from bench_models import TORCH_MODELS  # noqa: E402
from common import median, try_import_torch  # noqa: E402

WORKS = ("madry_mnist", "cifar_cnn", "pgd", "fwd1", "fwd16", "square")
GROUPS = {"conv2d (im2col, fft)": ["conv2d"], "pool2d (cpu)": ["pool2d"],
          "batch norm (chunks)": ["batch_norm_stats", "channel_affine", "batch_norm_sums", "batch_norm_input_grad"],
          "matmul (blocks)": ["matmul"]}
SHAPES = {"madry_mnist": (1, 28, 28), "cifar_cnn": (3, 32, 32)}


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def minidl_work(work, rng):
    if work in SHAPES:
        c, s = SHAPES[work][:2]
        model = get_model(work, in_channels=c, image_size=s)
        opt = md.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x = md.tensor(rng.random((128, c, s, s)).astype(numpy.float32))
        y = md.tensor(rng.integers(0, 10, 128))

        def step():
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return step
    model = get_model("madry_mnist", in_channels=1, image_size=28).eval()
    if work == "pgd":
        from minidl.adversarial import pgd
        x = md.tensor(rng.random((128, 1, 28, 28)).astype(numpy.float32))
        y = md.tensor(rng.integers(0, 10, 128))
        return lambda: pgd(model, x, y, 0.3, 0.01, 10)
    batch = {"fwd1": 1, "fwd16": 16, "square": 16}[work]
    x = md.tensor(rng.random((batch, 1, 28, 28)).astype(numpy.float32))
    if work.startswith("fwd"):
        def forward():
            with md.no_grad():
                model(x)
        return forward
    y = rng.integers(0, 10, batch)

    def queries():  # the per-query work of Square: perturb, forward, margin
        with md.no_grad():
            for _ in range(100):
                xn = numpy.clip(x.array + rng.uniform(-0.3, 0.3, x.shape).astype(numpy.float32), 0, 1)
                logits = model(md.tensor(xn)).array
                true = logits[numpy.arange(batch), y]
                logits[numpy.arange(batch), y] = -numpy.inf
                _ = true - logits.max(axis=1)
    return queries


def torch_work(torch, work, rng):
    if work in SHAPES:
        c, s = SHAPES[work][:2]
        model = TORCH_MODELS[work](torch)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x = torch.tensor(rng.random((128, c, s, s)).astype(numpy.float32))
        y = torch.tensor(rng.integers(0, 10, 128))

        def step():
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return step
    model = torch_madry(torch).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if work == "pgd":
        x = torch.tensor(rng.random((128, 1, 28, 28)).astype(numpy.float32))
        y = torch.tensor(rng.integers(0, 10, 128))
        return lambda: torch_pgd(torch, model, x, y, 0.3, 0.01, 10)
    batch = {"fwd1": 1, "fwd16": 16, "square": 16}[work]
    x = torch.tensor(rng.random((batch, 1, 28, 28)).astype(numpy.float32))
    if work.startswith("fwd"):
        def forward():
            with torch.no_grad():
                model(x)
        return forward
    y = torch.tensor(rng.integers(0, 10, batch))
    ar = torch.arange(batch)

    def queries():
        with torch.no_grad():
            for _ in range(100):
                xn = torch.clamp(x + torch.empty_like(x).uniform_(-0.3, 0.3), 0, 1)
                logits = model(xn)
                true = logits[ar, y]
                logits[ar, y] = -float("inf")
                _ = true - logits.max(dim=1).values
    return queries


def interleaved(fns, rounds, per_round, before=None, settle=0):
    """Every call's time per contender ({name: fn}), rounds interleaved after 2 warm-up calls
    each; ``before(name)`` runs (untimed) before each contender's calls, and so do ``settle``
    untimed calls of it (after a contender that allocates a lot, such as a reference convolution,
    the allocator's first calls pay page faults that are not the next contender's own cost)."""
    times = {name: [] for name in fns}

    def run(name, calls, keep):
        if before is not None:
            before(name)
        for _ in range(calls):
            t0 = time.perf_counter()
            fns[name]()
            if keep:
                times[name].append(time.perf_counter() - t0)
    for name in fns:
        run(name, 2, False)
    for _ in range(rounds):
        for name in fns:
            if settle:
                run(name, settle, False)
            run(name, per_round, True)
    return times


def ablation(works, rounds, per_round, groups):
    rng = numpy.random.default_rng(0)
    for work in works:
        step = minidl_work(work, rng)
        contenders = ["all fast"] + groups
        pins = []

        def pin(name):
            while pins:
                pins.pop().__exit__(None, None, None)
            for kernel in GROUPS.get(name, []):
                pins.append(kernels.force(kernel, "reference"))
        times = interleaved({name: step for name in contenders}, rounds, per_round, before=pin, settle=1)
        pin("all fast")
        fast = times["all fast"]
        print(f"{work}: all fast {median(fast) * 1e3:.1f} ms median ({min(fast) * 1e3:.1f} best)")
        for name in groups:
            t = times[name]
            print(f"  without {name:<26} {median(t) * 1e3:8.1f} ms ({min(t) * 1e3:7.1f}): buys "
                  f"{100 * (1 - median(fast) / median(t)):5.1f}% of the step (best: {100 * (1 - min(fast) / min(t)):5.1f}%)",
                  flush=True)


def replay(works, rounds, groups):
    rng = numpy.random.default_rng(0)
    names = [k for g in groups for k in GROUPS[g] if k not in ("conv2d", "pool2d")]
    for work in works:
        step = minidl_work(work, rng)
        step()
        calls = []
        saved = {name: dict(kernels.KERNELS[name].implementations) for name in names}

        def recorder(name, fn):
            def record(*args, **kwargs):
                calls.append((name, args, kwargs))
                return fn(*args, **kwargs)
            return record
        for name in names:
            impls = kernels.KERNELS[name].implementations
            for impl in impls:
                impls[impl] = recorder(name, impls[impl])
        try:
            step()
        finally:
            for name in names:
                kernels.KERNELS[name].implementations.update(saved[name])
        steps = interleaved({"step": step}, rounds, 1)["step"]
        print(f"{work}: fast step {median(steps) * 1e3:.1f} ms median ({min(steps) * 1e3:.1f} best); "
              f"function-kernel calls in one step: {len(calls)}")
        for group in groups:
            mine = [(n, a, k) for n, a, k in calls if n in GROUPS[group]]
            if not mine:
                continue

            def run(tier, mine=mine):
                def go():
                    for n, a, k in mine:
                        impls = saved[n]
                        impls[kernels.KERNELS[n].rule(*a, **k) if tier == "fast" else "reference"](*a, **k)
                return go
            t = interleaved({"fast": run("fast"), "reference": run("reference")}, rounds, 1)
            f, r = t["fast"], t["reference"]
            share = lambda s_, f_, r_: 100 * (r_ - f_) / (s_ + r_ - f_)  # noqa: E731
            print(f"  {group:<24} {len(mine):3d} calls: fast {median(f) * 1e3:7.2f} ms ({min(f) * 1e3:6.2f}), "
                  f"reference {median(r) * 1e3:7.2f} ms ({min(r) * 1e3:6.2f}): buys "
                  f"{share(median(steps), median(f), median(r)):5.1f}% of the step "
                  f"(best: {share(min(steps), min(f), min(r)):5.1f}%)", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", nargs="+", default=list(WORKS), choices=WORKS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=2)
    parser.add_argument("--tiers", nargs="+", default=["fast", "reference"])
    parser.add_argument("--ablation", action="store_true", help="what each group of fast kernels buys")
    parser.add_argument("--replay", action="store_true", help="what each function-kernel group buys, "
                        "by replaying one step's calls")
    parser.add_argument("--groups", nargs="+", default=list(GROUPS), choices=list(GROUPS),
                        help="--ablation: the groups to pin to their references, one at a time")
    args = parser.parse_args(argv)
    torch = try_import_torch()
    has_tiers = hasattr(kernels, "use")
    tiers = args.tiers if has_tiers else ["fast"]
    threads = os.cpu_count() or 1
    if torch is not None:
        torch.set_num_threads(threads)
    overrides = ", ".join(f"{v}={os.environ[v]}" for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
                          if v in os.environ) or "none"
    blas = kernels.runtime.blas if hasattr(kernels, "runtime") else __import__("minidl.kernels.blas").kernels.blas
    print(f"CPU: {cpu_name()}, {threads} cores; NumPy BLAS: {blas.describe()}; OpenBLAS overrides: {overrides}")
    print(f"minidl at {os.path.dirname(md.__file__)}; PyTorch {torch.__version__ if torch else 'not installed'}")
    print(f"{args.rounds} interleaved rounds of {1 if args.replay else args.per_round} call(s) each, "
          f"after 2 warm-up calls; ms")
    if args.replay:
        return replay([w for w in args.work if w in SHAPES], args.rounds,
                      [g for g in args.groups if g not in ("conv2d (im2col, fft)", "pool2d (cpu)")])
    if args.ablation:
        return ablation([w for w in args.work if w in SHAPES], args.rounds, args.per_round, args.groups)
    header = f"{'work':<14}" + "".join(f"{'minidl ' + t:>22}" for t in tiers) + (f"{'PyTorch':>18}" if torch else "")
    print(header + "   ratios to PyTorch (median / best)")
    rng = numpy.random.default_rng(0)
    for work in args.work:
        fns = {}
        for tier in tiers:
            if has_tiers:
                kernels.use(tier)
            fns[tier] = minidl_work(work, rng)
        if torch is not None:
            fns["torch"] = torch_work(torch, work, rng)
        times = interleaved(fns, args.rounds, args.per_round,
                            before=lambda name: has_tiers and name != "torch" and kernels.use(name))
        if has_tiers:
            kernels.use("fast")
        cells = "".join(f"{median(times[t]) * 1e3:12.1f} ({min(times[t]) * 1e3:7.1f})" for t in tiers)
        if torch is not None:
            cells += f"{median(times['torch']) * 1e3:10.1f} ({min(times['torch']) * 1e3:5.1f})"
            cells += "   " + "  ".join(
                f"{t} {median(times[t]) / median(times['torch']):.2f}x/{min(times[t]) / min(times['torch']):.2f}x"
                for t in tiers)
        print(f"{work:<14}{cells}", flush=True)


if __name__ == "__main__":
    main()
