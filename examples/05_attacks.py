"""Example 5: FGSM and PGD against a naturally trained MNIST model, and what the numbers mean.

    python examples/05_attacks.py --data-dir ../shared/data [--checkpoint runs/mnist/checkpoint.npz]

Without --checkpoint it trains a small `wong_mnist` for one epoch first (about a minute on a CPU).
Shows: accuracy under FGSM and PGD as eps grows (PGD is never weaker than FGSM), an L2 attack,
a targeted attack, and the sanity checks that tell a real defence from masked gradients.
"""
import argparse

import numpy as np

import minidl as md
from minidl.adversarial import accuracy_vs_eps, fgsm, pgd, robust_accuracy, sanity_checks
from minidl.data import MNIST
from minidl.experiment import TrainConfig, load_model, train_on_arrays

parser = argparse.ArgumentParser()
parser.add_argument("--data-dir", default=None)
parser.add_argument("--checkpoint", default=None)
parser.add_argument("--n", type=int, default=500, help="test images to attack")
parser.add_argument("--out", default="runs/example-attacks")
args = parser.parse_args()

test = MNIST(root=args.data_dir, train=False)
data = (test.images[:args.n], test.labels[:args.n])
if args.checkpoint:
    model, _ = load_model(args.checkpoint)
else:
    train = MNIST(root=args.data_dir, train=True)
    model, _ = train_on_arrays(TrainConfig(model="wong_mnist", epochs=1), (train.images, train.labels), data,
                               f"{args.out}/model", overwrite=True)  # a demo's folder: a rerun replaces it
model.eval()

# 1. One step (FGSM) versus many projected steps (PGD) at the classic MNIST budget eps = 0.3.
eps = 0.3
res_fgsm = robust_accuracy(model, data, lambda m, x, y: fgsm(m, x, y, eps))
res_pgd = robust_accuracy(model, data, lambda m, x, y: pgd(m, x, y, eps, alpha=0.01, steps=40))
print(f"clean {res_fgsm['clean_accuracy']:.3f} | FGSM eps {eps}: {res_fgsm['robust_accuracy']:.3f} | "
      f"PGD-40 eps {eps}: {res_pgd['robust_accuracy']:.3f}")

# 2. The same with an L2 budget: steps follow g / ||g|| and are projected onto the L2 ball.
res_l2 = robust_accuracy(model, data, lambda m, x, y: pgd(m, x, y, 2.0, alpha=0.25, steps=20, norm="2"))
print(f"PGD-20 L2 eps 2.0: {res_l2['robust_accuracy']:.3f}")

# 3. Targeted: push every image toward class 0 (y is then the target).
x, y = data[0][:100], data[1][:100]
target = np.zeros_like(y)
x_adv = pgd(model, x, target, eps, alpha=0.01, steps=40, targeted=True)
with md.no_grad():
    reached = (model(x_adv).numpy().argmax(1) == 0)[y != 0].mean()
print(f"targeted PGD toward class 0 succeeds on {reached:.1%} of the images of other classes")

# 4. Accuracy as a function of eps, saved as a plot.
curve = accuracy_vs_eps(model, data, lambda e: (lambda m, x, y: pgd(m, x, y, e, alpha=max(e / 10, 1e-3), steps=20)),
                        [0.0, 0.05, 0.1, 0.15, 0.2, 0.3], plot_path=f"{args.out}/accuracy_vs_eps.png")
print("PGD-20 accuracy vs eps:", [(e, round(a, 3)) for e, a in curve], f"-> {args.out}/accuracy_vs_eps.png")

# 5. Sanity checks: PGD at least as strong as FGSM on every point; chance accuracy at a huge eps.
warnings, numbers = sanity_checks(model, (x, y), lambda m, a, b: pgd(m, a, b, eps, 0.01, 40),
                                  fgsm_attack=lambda m, a, b: fgsm(m, a, b, eps),
                                  huge_eps_attack=lambda m, a, b: pgd(m, a, b, 1.0, 0.1, 20))
print("sanity checks:", numbers, "warnings:", warnings or "none")
