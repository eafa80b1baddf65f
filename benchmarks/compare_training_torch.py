"""Fast-FGSM (or PGD) adversarial training of ``wong_mnist`` in minidl and in PyTorch, step by step.

Both sides start from the same weights (minidl's, copied into a PyTorch twin of the network),
see the same batches in the same order and the same random start on every step (the uniform
noise is drawn once, in NumPy, from a copy of minidl's generator, so minidl's attack draws
exactly the same values). minidl trains through its own TrainConfig path (make_optimizer,
make_perturb, train_epoch); PyTorch runs Wong, Rice and Kolter's (2020) recipe as their MNIST
script describes it:

* FGSM: delta ~ U(-eps, eps); the gradient is taken at x + delta (not clipped);
  delta <- clip(delta + alpha sign(g), -eps, eps), then clipped so that x + delta is in [0, 1].
* PGD: the start x + delta is clipped into [0, 1]; on each step only the examples still
  classified correctly move, so each example stops at its first misclassified iterate, and the
  last iterate is used (no best-over-iterates bookkeeping).
* Adam (PyTorch defaults: eps 1e-8, no weight decay), mean cross-entropy, learning rate set
  before batch i of epoch e to interp(e + (i + 1) / n_batches, [0, epochs * 2 // 5, epochs],
  [0, lr_max, 0]).

Per step it prints the learning rates, the losses, the share of adversarial pixels that differ
and the relative weight difference ||w_minidl - w_torch|| / ||w_torch||, and names the first
step where that difference exceeds the tolerance (``--tol``; in float64 rounding stays near
1e-12, in float32 near 1e-6 until a sign(gradient) tie flips a pixel).

    python benchmarks/compare_training_torch.py --steps 30 --dtype float64
    python benchmarks/compare_training_torch.py --adv pgd --alpha 0.01 --attack-steps 40 --steps 20
"""
import argparse
import dataclasses
import os
import sys

if __name__ == "__main__":
    _threads = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--threads=")), None)
    if "--threads" in sys.argv[:-1]:
        _threads = sys.argv[sys.argv.index("--threads") + 1]
    if _threads:
        os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = _threads

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from minidl import backend  # noqa: E402
from minidl.data import DataLoader
from minidl.experiment import TrainConfig, make_optimizer, make_perturb
from minidl.models import get_model
from minidl.nn.init import init_model
from minidl.train import train_epoch


def torch_twin(model, torch):
    """The PyTorch network of Wong et al.'s mnist_net, carrying ``model``'s (minidl wong_mnist) weights."""
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(1, 16, 4, stride=2, padding=1), nn.ReLU(),
                        nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(),
                        nn.Flatten(), nn.Linear(32 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10))
    ours = model.state_dict()
    theirs = net.state_dict()
    if sorted(ours) != sorted(theirs):
        raise ValueError(f"torch_twin: parameter names differ: {sorted(ours)} vs {sorted(theirs)}")
    dtype = torch.float64 if next(iter(ours.values())).dtype == np.float64 else torch.float32
    net.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in ours.items()})
    return net.to(dtype)


def wong_lr(t, epochs, lr_max):
    """Wong et al.'s triangular schedule at fractional epoch t (the peak at epoch epochs * 2 // 5)."""
    return float(np.interp([t], [0, epochs * 2 // 5, epochs], [0, lr_max, 0])[0])


def wong_fgsm(net, X, y, eps, alpha, noise, torch):
    delta = torch.tensor(noise, dtype=X.dtype, requires_grad=True)
    torch.nn.functional.cross_entropy(net(X + delta), y).backward()
    d = torch.clamp(delta.detach() + alpha * torch.sign(delta.grad), -eps, eps)
    return torch.max(torch.min(1 - X, d), -X)


def wong_pgd(net, X, y, eps, alpha, steps, noise, torch):
    delta = torch.max(torch.min(1 - X, torch.tensor(noise, dtype=X.dtype)), -X)
    for _ in range(steps):
        delta.requires_grad_(True)
        out = net(X + delta)
        torch.nn.functional.cross_entropy(out, y).backward()
        still = out.max(1)[1] == y
        d = torch.clamp(delta.detach() + alpha * torch.sign(delta.grad), -eps, eps)
        d = torch.max(torch.min(1 - X, d), -X)
        delta = torch.where(still.view(-1, 1, 1, 1), d, delta.detach())
    return delta.detach()


def best_iterate_pgd(net, X, y, eps, alpha, steps, noise, torch):
    """minidl's pgd (one restart) written in PyTorch: every example moves on every step, and the
    worst iterate is kept (a misclassified one first, then the highest loss)."""
    F = torch.nn.functional
    delta = torch.max(torch.min(1 - X, torch.tensor(noise, dtype=X.dtype)), -X)
    best, best_succ = torch.zeros_like(X), torch.zeros(len(y), dtype=torch.bool)
    best_score = torch.full((len(y),), -float("inf"), dtype=torch.float64)

    def keep(delta, out, losses):
        succ = out.argmax(1) != y
        score = losses.detach().double()
        better = (succ & ~best_succ) | ((succ == best_succ) & (score > best_score))
        best[better], best_succ[better], best_score[better] = delta[better], succ[better], score[better]
    for _ in range(steps):
        delta.requires_grad_(True)
        out = net(X + delta)
        losses = F.cross_entropy(out, y, reduction="none")
        losses.sum().backward()
        keep(delta.detach(), out.detach(), losses)
        d = torch.clamp(delta.detach() + alpha * torch.sign(delta.grad), -eps, eps)
        delta = torch.max(torch.min(1 - X, d), -X)
    with torch.no_grad():
        out = net(X + delta)
        keep(delta, out, F.cross_entropy(out, y, reduction="none"))
    return best


class SideBySide:
    """minidl and PyTorch trained in lock-step on the same batches and random starts."""

    def __init__(self, config, steps_per_epoch, dtype="float32", seed=0, torch=None, torch_lr="wong",
                 pgd_variant="wong"):
        import torch as _torch
        self.torch = torch or _torch
        self.config = config.resolved()
        self.steps_per_epoch = steps_per_epoch
        backend.manual_seed(seed)
        model = get_model(self.config.model)
        if self.config.init != "default":
            init_model(model, self.config.init)
        for p in model.parameters():
            p.array = p.array.astype(dtype)
        self.model, self.dtype = model, np.dtype(dtype)
        self.net = torch_twin(model, self.torch)
        self.optimizer, self.schedule = make_optimizer(self.config, model, steps_per_epoch)
        self.perturb = make_perturb(self.config, self.optimizer, steps_per_epoch)
        self.opt = self.torch.optim.Adam(self.net.parameters(), lr=self.config.lr)
        self.t, self.torch_lr, self.pgd_variant = 0, torch_lr, pgd_variant

    def noise_for(self, shape):
        """The uniform start minidl's attack is about to draw, read from a copy of its generator."""
        copy = np.random.default_rng()
        copy.bit_generator.state = backend.get_rng_state()
        return copy.uniform(-self.config.eps, self.config.eps, shape).astype(self.dtype)

    def step(self, x, y):
        """One training step on both sides; returns a dict of the step's measurements."""
        torch, c = self.torch, self.config
        x = x.astype(self.dtype)
        noise = self.noise_for(x.shape)
        epoch, i = divmod(self.t, self.steps_per_epoch)
        lr_ours = self.optimizer.lr
        lr_theirs = wong_lr(epoch + (i + 1) / self.steps_per_epoch, c.epochs, c.lr)

        seen = {}
        perturb = self.perturb

        def recording(model, xb, yb):
            out = perturb(model, xb, yb)
            seen["x_adv"] = out.numpy().copy()
            return out
        loader = DataLoader((x, y), len(y), seed=0)  # seed=None would draw from the generator
        ours = train_epoch(self.model, loader, self.optimizer, self.schedule, recording, progress=False)

        X, Y = torch.tensor(x), torch.tensor(y.astype(np.int64))
        if self.torch_lr == "minidl":  # isolates the schedule from the rest of the recipe
            lr_theirs = lr_ours
        for g in self.opt.param_groups:
            g["lr"] = lr_theirs
        if c.adv == "fgsm":
            delta = wong_fgsm(self.net, X, Y, c.eps, c.alpha, noise, torch)
        else:
            pgd = wong_pgd if self.pgd_variant == "wong" else best_iterate_pgd
            delta = pgd(self.net, X, Y, c.eps, c.alpha, c.steps, noise, torch)
        x_adv = torch.clamp(X + delta, 0, 1)
        loss = torch.nn.functional.cross_entropy(self.net(x_adv), Y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.t += 1
        return {"step": self.t, "lr_minidl": lr_ours, "lr_torch": lr_theirs,
                "loss_minidl": ours["loss"], "loss_torch": float(loss.detach()),
                "x_adv_differs": float((np.abs(seen["x_adv"] - x_adv.numpy()) > 1e-5).mean()),
                "weight_rel_diff": self.weight_difference()}

    def weight_difference(self):
        ours = self.model.state_dict()
        num = den = 0.0
        for k, v in self.net.state_dict().items():
            t = v.detach().numpy().astype(np.float64)
            num += float(((np.asarray(ours[k], dtype=np.float64) - t) ** 2).sum())
            den += float((t ** 2).sum())
        return (num / den) ** 0.5


def batches(images, labels, batch_size, seed):
    """Shuffled batches, one epoch after another, from a NumPy generator of its own."""
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(images))
        for s in range(0, len(images) - batch_size + 1, batch_size):
            yield images[order[s:s + batch_size]], labels[order[s:s + batch_size]]


def train_torch_recipe(config, images, labels, out_dir, seed, torch):
    """Wong et al.'s recipe in PyTorch alone for ``config.epochs`` full epochs, from minidl's
    initial weights (seed ``seed``); the weights are saved as a minidl checkpoint, so that
    ``python -m minidl attack --checkpoint <out>/checkpoint.npz`` evaluates them."""
    import time
    from minidl.io import write_json
    from minidl.serialization import save
    c = config.resolved()
    backend.manual_seed(seed)
    torch.manual_seed(seed)
    model = get_model(c.model)
    if c.init != "default":
        init_model(model, c.init)
    net = torch_twin(model, torch)
    opt = torch.optim.Adam(net.parameters(), lr=c.lr)
    n = len(images) // c.batch_size
    gen = batches(images, labels, c.batch_size, seed)
    history, start = [], time.perf_counter()
    for epoch in range(c.epochs):
        loss_sum = correct = 0.0
        for i in range(n):
            x, y = next(gen)
            X, Y = torch.tensor(x), torch.tensor(y.astype(np.int64))
            for g in opt.param_groups:
                g["lr"] = wong_lr(epoch + (i + 1) / n, c.epochs, c.lr)
            noise = np.random.default_rng([seed, epoch, i]).uniform(-c.eps, c.eps, x.shape).astype(np.float32)
            if c.adv == "fgsm":
                delta = wong_fgsm(net, X, Y, c.eps, c.alpha, noise, torch)
            else:
                delta = wong_pgd(net, X, Y, c.eps, c.alpha, c.steps, noise, torch)
            out = net(torch.clamp(X + delta, 0, 1))
            loss = torch.nn.functional.cross_entropy(out, Y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(y)
            correct += float((out.argmax(1) == Y).sum())
        record = {"epoch": epoch + 1, "train_loss": loss_sum / (n * c.batch_size),
                  "train_accuracy": correct / (n * c.batch_size), "seconds": time.perf_counter() - start}
        history.append(record)
        print(record, flush=True)
    model.load_state_dict({k: v.detach().numpy() for k, v in net.state_dict().items()})
    record = dict(dataclasses.asdict(c), trained_by="torch (Wong et al.'s recipe)", in_channels=1, image_size=28)
    os.makedirs(out_dir, exist_ok=True)
    save({"model": dict(model.state_dict()), "epoch": c.epochs, "history": history, "config": record},
         os.path.join(out_dir, "checkpoint.npz"))
    write_json(os.path.join(out_dir, "metrics.json"), {"config": record, "history": history})


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--adv", choices=["fgsm", "pgd"], default="fgsm")
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--alpha", type=float, default=0.375)
    p.add_argument("--attack-steps", type=int, default=40, help="PGD steps per training batch")
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--schedule", default="cyclic")
    p.add_argument("--epochs", type=int, default=10, help="of the schedule (the run stops after --steps)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--steps", type=int, default=30, help="training steps to compare")
    p.add_argument("--init", default="fan_in_uniform")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--tol", type=float, default=None, help="default 1e-4 (float32) or 1e-9 (float64)")
    p.add_argument("--data-dir", default=None, help="MNIST files; synthetic data when absent")
    p.add_argument("--train-images", type=int, default=60000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--torch-lr", choices=["wong", "minidl"], default="wong",
                   help="PyTorch's learning rate: Wong et al.'s schedule, or minidl's value on each step")
    p.add_argument("--pgd-variant", choices=["wong", "best"], default="wong",
                   help="PyTorch's training PGD: Wong et al.'s (each example stops when misclassified, last "
                        "iterate) or minidl's (worst iterate kept)")
    p.add_argument("--torch-only", metavar="OUT", default=None,
                   help="train Wong et al.'s recipe in PyTorch alone for --epochs full epochs; save to OUT")
    args = p.parse_args()
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.data_dir:
        from minidl.experiment import load_arrays
        images, labels = load_arrays("mnist", args.data_dir, train=True, limit=args.train_images)
    else:
        r = np.random.default_rng(1)
        images = r.random((2000, 1, 28, 28)).astype(np.float32) ** 3
        labels = r.integers(0, 10, 2000)
    steps_per_epoch = len(images) // args.batch_size
    config = TrainConfig(dataset="mnist", model="wong_mnist", epochs=args.epochs, batch_size=args.batch_size,
                         lr=args.lr, optimizer="adam", schedule=args.schedule, adv=args.adv, eps=args.eps,
                         alpha=args.alpha, steps=args.attack_steps, init=args.init, seed=args.seed)
    if args.torch_only:
        return train_torch_recipe(config, images, labels, args.torch_only, args.seed, torch)
    run = SideBySide(config, steps_per_epoch, args.dtype, args.seed, torch, args.torch_lr, args.pgd_variant)
    tol = args.tol or (1e-4 if args.dtype == "float32" else 1e-9)
    print(f"{args.adv} training, {args.dtype}, {steps_per_epoch} batches per epoch, tolerance {tol:g}")
    print("step   lr_minidl   lr_torch   loss_minidl  loss_torch  x_adv_differs  weight_rel_diff")
    parted = None
    for _, (x, y) in zip(range(args.steps), batches(images, labels, args.batch_size, args.seed)):
        r = run.step(x, y)
        print(f"{r['step']:4d}  {r['lr_minidl']:.6f}  {r['lr_torch']:.6f}  {r['loss_minidl']:.6f}   "
              f"{r['loss_torch']:.6f}    {r['x_adv_differs']:.2e}       {r['weight_rel_diff']:.2e}", flush=True)
        if parted is None and r["weight_rel_diff"] > tol:
            parted = r["step"]
    print(f"first step past the tolerance: {parted}" if parted else f"no step past the tolerance {tol:g}")


if __name__ == "__main__":
    main()
