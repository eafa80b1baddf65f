"""Example 6: fast adversarial training (FGSM with random start, Wong et al. 2020) on MNIST,
then an honest evaluation with PGD and restarts.

    python examples/06_adversarial_training.py --data-dir ../shared/data [--epochs 5] [--model wong_mnist]

Each training batch is replaced by FGSM-from-a-random-start adversarial examples (alpha = 1.25 eps);
the learning rate follows a cycle; after every epoch a guard measures PGD accuracy on a fixed training
batch and stops (restoring the best weights) if it collapses: "catastrophic overfitting", where the
model learns to defeat FGSM alone. Madry's PGD training is `--adv pgd` in `python -m minidl train`.
"""
import argparse

from minidl.adversarial import fgsm, pgd, robust_accuracy
from minidl.data import MNIST
from minidl.experiment import TrainConfig, train_on_arrays

parser = argparse.ArgumentParser()
parser.add_argument("--data-dir", default=None)
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--model", default="wong_mnist")
parser.add_argument("--eps", type=float, default=0.3)
parser.add_argument("--n", type=int, default=500, help="test images for the PGD evaluation")
parser.add_argument("--out", default="runs/example-adv")
args = parser.parse_args()

train, test = MNIST(root=args.data_dir, train=True), MNIST(root=args.data_dir, train=False)
config = TrainConfig(model=args.model, epochs=args.epochs, adv="fgsm", eps=args.eps, optimizer="adam", lr=5e-3)
model, history = train_on_arrays(config, (train.images, train.labels), (test.images[:2000], test.labels[:2000]),
                                 args.out, overwrite=True)  # a demo's folder: a rerun replaces it
for record in history:
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()})

data = (test.images[:args.n], test.labels[:args.n])
print("FGSM:", robust_accuracy(model, data, lambda m, x, y: fgsm(m, x, y, args.eps))["robust_accuracy"])
res = robust_accuracy(model, data, lambda m, x, y: pgd(m, x, y, args.eps, alpha=0.01, steps=50, restarts=3))
print(f"clean {res['clean_accuracy']:.3f}, PGD-50 x 3 restarts {res['robust_accuracy']:.3f} on {res['n']} images")
