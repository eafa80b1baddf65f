"""minidl against itself at other commits: the same work timed at each revision, alternating.

    python benchmarks/bench_revisions.py dac65a9 HEAD [--work cifar_cnn madry_mnist pgd]
                                         [--rounds 2] [--calls 7]
    python benchmarks/bench_revisions.py HEAD HEAD:MINIDL_MALLOC=default   # one revision, two settings

A revision may carry environment variables for its processes, ``REV:VAR=VALUE[,VAR=VALUE...]``,
so the same code can be timed with and without a setting in the same alternating rounds.

Each revision is checked out into a temporary git worktree; every (round, revision, work) runs
in a fresh Python process started in that worktree, so it imports that revision's minidl, warms
up (the algorithm tuner's first calls) and times ``--calls`` calls. Rounds alternate the
revisions, so a slow spell of a shared machine lands on all of them. Prints the median and the
best of each revision's calls per work, the minor page faults per timed call (median over the
processes) and the largest peak RSS of its processes. The work uses only the public API that
every revision has: a training step (``bench_models``' step: cross-entropy, backward, SGD with momentum 0.9,
batch 128, float32, random data) of ``cifar_cnn`` or ``madry_mnist`` (``wong_mnist``: batch
100, the README recipes' batch), and PGD-10 (L-inf,
eps 0.3, step 0.01) on ``madry_mnist`` in eval mode.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time
import numpy as np
import minidl as md
import minidl.functional as F
from minidl.models import get_model
work, calls = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
if work == "pgd":
    from minidl.adversarial import pgd
    model = get_model("madry_mnist", in_channels=1, image_size=28).eval()
    x = md.tensor(rng.random((128, 1, 28, 28)).astype(np.float32))
    y = md.tensor(rng.integers(0, 10, 128))
    fn = lambda: pgd(model, x, y, 0.3, 0.01, 10)
else:
    c, s = (3, 32) if work == "cifar_cnn" else (1, 28)
    batch = 100 if work == "wong_mnist" else 128
    model = get_model(work, in_channels=c, image_size=s)
    opt = md.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = md.tensor(rng.random((batch, c, s, s)).astype(np.float32))
    y = md.tensor(rng.integers(0, 10, batch))
    def fn():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
for _ in range(2):
    fn()
import resource
faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
times = []
for _ in range(calls):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"times": times, "faults_per_call": (usage.ru_minflt - faults0) / calls,
                  "peak_rss_mib": usage.ru_maxrss / 1024}))
"""


def parse_spec(spec):
    """``REV`` or ``REV:VAR=VALUE[,VAR=VALUE...]`` -> (REV, {VAR: VALUE})."""
    rev, _, pairs = spec.partition(":")
    extra = {}
    for pair in filter(None, pairs.split(",")):
        name, eq, value = pair.partition("=")
        if not eq or not name:
            raise SystemExit(f"bench_revisions: {spec!r}: expected REV:VAR=VALUE[,VAR=VALUE...], got {pair!r}")
        extra[name] = value
    return rev, extra


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revisions", nargs="+",
                        help="git revisions (commits, tags, HEAD), each optionally REV:VAR=VALUE[,VAR=VALUE...]")
    parser.add_argument("--work", nargs="+", default=["cifar_cnn", "madry_mnist", "pgd"],
                        choices=["cifar_cnn", "madry_mnist", "wong_mnist", "pgd"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--calls", type=int, default=7)
    args = parser.parse_args(argv)
    root = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                          check=True, cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    specs = {spec: parse_spec(spec) for spec in args.revisions}
    times = {(spec, w): [] for spec in args.revisions for w in args.work}
    faults = {key: [] for key in times}
    rss = {key: [] for key in times}
    with tempfile.TemporaryDirectory(prefix="minidl-revisions-") as tmp:
        trees = {}
        try:
            for rev, _ in specs.values():
                if rev not in trees:
                    trees[rev] = os.path.join(tmp, f"rev{len(trees)}")
                    subprocess.run(["git", "worktree", "add", "--detach", trees[rev], rev], cwd=root, check=True,
                                   capture_output=True)
            for r in range(args.rounds):
                for spec, (rev, extra) in specs.items():
                    for w in args.work:
                        out = subprocess.run([sys.executable, "-c", CHILD, w, str(args.calls)], cwd=trees[rev],
                                             capture_output=True, text=True, check=True,
                                             env=dict(os.environ, PYTHONPATH=trees[rev], **extra))
                        result = json.loads(out.stdout.strip().splitlines()[-1])
                        times[spec, w] += result["times"]
                        faults[spec, w].append(result["faults_per_call"])
                        rss[spec, w].append(result["peak_rss_mib"])
                print(f"round {r + 1} of {args.rounds} done", file=sys.stderr)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "worktree", "remove", "--force", tree], cwd=root, capture_output=True)
    width = max(14, *(len(spec) for spec in args.revisions))
    print(f"{'work':<12} {'revision':<{width}} {'median ms':>10} {'best ms':>9} {'faults/call':>12} "
          f"{'peak RSS MiB':>13}   ({args.rounds} rounds x {args.calls} calls)")
    for w in args.work:
        for spec in args.revisions:
            t = times[spec, w]
            print(f"{w:<12} {spec:<{width}} {statistics.median(t) * 1e3:10.1f} {min(t) * 1e3:9.1f} "
                  f"{statistics.median(faults[spec, w]):12.0f} {max(rss[spec, w]):13.0f}")


if __name__ == "__main__":
    main()
