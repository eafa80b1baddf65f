"""GradAlign training step of wong_mnist: minidl against PyTorch (double backward), same machine.

    python benchmarks/bench_gradalign.py [--batch 128] [--lam 0.2] [--eps 0.3] [--threads N]
                                         [--repeat 10]

One step of fast adversarial training with GradAlign (Andriushchenko and Flammarion 2020): FGSM
from a uniform random start (alpha = 1.25 eps), the cross-entropy on the adversarial batch plus
lambda (1 - cos(grad_x L(x), grad_x L(x + eta))) with eta uniform in the eps-ball, the clean
gradient held constant and the noisy one differentiated through (the authors' code; in minidl
``adversarial.gradalign.grad_align_penalty``), backward, an SGD step. The same step without the
penalty is timed too, so each library's cost of the double backward can be read off. Both
libraries run the same weights on the same random batch, in alternating rounds
(``--repeat`` rounds of 2 calls each after 2 warm-up calls); each row prints the median and best
call of each and the ratios minidl / PyTorch (lower is better). Before timing, the two
penalties are computed at one fixed eta and must agree (float32).
"""
import os
import sys

import numpy

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import minidl as md  # noqa: E402
import minidl.functional as F  # noqa: E402
from minidl.adversarial import fgsm_random_start  # noqa: E402
from minidl.adversarial.gradalign import grad_align_penalty  # noqa: E402
from minidl.kernels.runtime import blas, parallel  # noqa: E402
from minidl.models import wong_mnist  # noqa: E402

from common import TIMES_HEADER, benchmark_parser, fmt_times_row, paired_times, try_import_torch  # noqa: E402


def minidl_step(model, opt, x, y, eps, lam):
    def step():
        adv = fgsm_random_start(model, x, y, eps)
        loss = F.cross_entropy(model(adv), y)
        if lam:
            loss = loss + grad_align_penalty(model, x, y, eps, lam)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def torch_model(torch, model):
    nn = torch.nn
    tm = nn.Sequential(nn.Conv2d(1, 16, 4, stride=2, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 4, stride=2, padding=1),
                       nn.ReLU(), nn.Flatten(), nn.Linear(32 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10))
    with torch.no_grad():
        for (_, p), (_, q) in zip(sorted(model.state_dict().items()), sorted(tm.state_dict().items())):
            q.copy_(torch.tensor(numpy.asarray(p)))
    return tm


def torch_penalty(torch, tm, x, y, eps, lam, eta=None):
    TF = torch.nn.functional
    n = x.shape[0]
    clean = x.clone().requires_grad_(True)
    g1, = torch.autograd.grad(TF.cross_entropy(tm(clean), y, reduction="sum"), clean)
    eta = torch.empty_like(x).uniform_(-eps, eps) if eta is None else eta
    noisy = (x + eta).requires_grad_(True)
    g2, = torch.autograd.grad(TF.cross_entropy(tm(noisy), y, reduction="sum"), noisy, create_graph=True)
    g1, g2 = g1.reshape(n, -1), g2.reshape(n, -1)
    cos = (g1 * g2).sum(1) / (g1.norm(dim=1) * g2.norm(dim=1)).clamp(min=1e-8)
    return lam * (1 - cos.mean())


def torch_step(torch, tm, opt, x, y, eps, lam):
    TF = torch.nn.functional

    def step():
        delta = torch.empty_like(x).uniform_(-eps, eps).requires_grad_(True)
        g, = torch.autograd.grad(TF.cross_entropy(tm(x + delta), y), delta)
        delta = (delta.detach() + 1.25 * eps * g.sign()).clamp(-eps, eps)
        loss = TF.cross_entropy(tm((x + delta).clamp(0, 1)), y)
        if lam:
            loss = loss + torch_penalty(torch, tm, x, y, eps, lam)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def main(argv=None):
    parser = benchmark_parser(__doc__, repeat=10)
    parser.add_argument("--lam", type=float, default=0.2, help="GradAlign's lambda")
    parser.add_argument("--eps", type=float, default=0.3)
    args = parser.parse_args(argv)
    threads = args.threads or os.cpu_count() or 1
    blas.set_num_threads(threads)
    parallel.set_num_threads(threads)
    torch = try_import_torch()
    md.manual_seed(0)
    model = wong_mnist()
    rng = numpy.random.default_rng(0)
    xa = rng.random((args.batch, 1, 28, 28)).astype(numpy.float32)
    ya = rng.integers(0, 10, args.batch)
    x, y = md.tensor(xa), md.tensor(ya)
    print(f"GradAlign step, wong_mnist, batch {args.batch}, eps {args.eps}, lambda {args.lam}, {threads} threads")
    tm = None
    if torch is not None:
        torch.set_num_threads(threads)
        tm = torch_model(torch, model)
        tx, ty = torch.tensor(xa), torch.tensor(ya)
        eta = rng.uniform(-args.eps, args.eps, xa.shape).astype(numpy.float32)
        ours = grad_align_penalty(model, x, y, args.eps, args.lam, eta=eta).item()
        theirs = torch_penalty(torch, tm, tx, ty, args.eps, args.lam, eta=torch.tensor(eta)).item()
        print(f"penalty at a fixed eta: minidl {ours:.6f}, PyTorch {theirs:.6f}")
        assert abs(ours - theirs) <= 1e-4 * max(1.0, abs(theirs)), (ours, theirs)
    print(TIMES_HEADER)
    for name, lam in (("fgsm step", 0.0), ("fgsm + GradAlign step", args.lam)):
        opt = md.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        ours = minidl_step(model, opt, x, y, args.eps, lam)
        ref = None
        if tm is not None:
            ref = torch_step(torch, tm, torch.optim.SGD(tm.parameters(), lr=1e-3, momentum=0.9), tx, ty, args.eps, lam)
        a, b = paired_times(ours, ref, rounds=args.repeat)
        print(fmt_times_row(name, a, b))


if __name__ == "__main__":
    main()
