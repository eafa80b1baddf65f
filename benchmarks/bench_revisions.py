"""minidl against itself at other commits: the same work timed at each revision, alternating.

    python benchmarks/bench_revisions.py dac65a9 HEAD [--work cifar_cnn madry_mnist pgd]
                                         [--rounds 2] [--calls 7]

Each revision is checked out into a temporary git worktree; every (round, revision, work) runs
in a fresh Python process started in that worktree, so it imports that revision's minidl, warms
up (the algorithm tuner's first calls) and times ``--calls`` calls. Rounds alternate the
revisions, so a slow spell of a shared machine lands on all of them. Prints the median and the
best of each revision's calls per work. The work uses only the public API that every revision
has: a training step (``bench_models``' step: cross-entropy, backward, SGD with momentum 0.9,
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
times = []
for _ in range(calls):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
print(json.dumps(times))
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revisions", nargs="+", help="git revisions (commits, tags, HEAD)")
    parser.add_argument("--work", nargs="+", default=["cifar_cnn", "madry_mnist", "pgd"],
                        choices=["cifar_cnn", "madry_mnist", "wong_mnist", "pgd"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--calls", type=int, default=7)
    args = parser.parse_args(argv)
    root = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                          check=True, cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    times = {(rev, w): [] for rev in args.revisions for w in args.work}
    with tempfile.TemporaryDirectory(prefix="minidl-revisions-") as tmp:
        trees = {}
        try:
            for i, rev in enumerate(args.revisions):
                trees[rev] = os.path.join(tmp, f"rev{i}")
                subprocess.run(["git", "worktree", "add", "--detach", trees[rev], rev], cwd=root, check=True,
                               capture_output=True)
            for r in range(args.rounds):
                for rev in args.revisions:
                    for w in args.work:
                        out = subprocess.run([sys.executable, "-c", CHILD, w, str(args.calls)], cwd=trees[rev],
                                             capture_output=True, text=True, check=True,
                                             env=dict(os.environ, PYTHONPATH=trees[rev]))
                        times[rev, w] += json.loads(out.stdout.strip().splitlines()[-1])
                print(f"round {r + 1} of {args.rounds} done", file=sys.stderr)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "worktree", "remove", "--force", tree], cwd=root, capture_output=True)
    print(f"{'work':<12} {'revision':<14} {'median ms':>10} {'best ms':>9}   ({args.rounds} rounds x {args.calls} calls)")
    for w in args.work:
        for rev in args.revisions:
            t = times[rev, w]
            print(f"{w:<12} {rev:<14} {statistics.median(t) * 1e3:10.1f} {min(t) * 1e3:9.1f}")


if __name__ == "__main__":
    main()
