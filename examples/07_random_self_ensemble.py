"""Example 7: Random Self-Ensemble (Liu et al. 2018) and why its robustness must be measured with
expectation over the noise (Athalye, Carlini and Wagner 2018).

    python examples/07_random_self_ensemble.py --data-dir ../shared/data [--epochs 1]

Trains `rse_wong_mnist` (Gaussian noise before every convolution, on in training and at test time),
predicts with the mean softmax of 10 noisy passes, and attacks it twice: with the gradient of one
noisy pass (the original paper's evaluation) and with gradients averaged over 10 noise draws (EOT).
The difference is robustness that only existed because the attack was confused by the noise.
"""
import argparse

from minidl.adversarial.rse_eval import RSEConfig, evaluate_rse
from minidl.data import MNIST
from minidl.experiment import TrainConfig, train_on_arrays

parser = argparse.ArgumentParser()
parser.add_argument("--data-dir", default=None)
parser.add_argument("--epochs", type=int, default=1)
parser.add_argument("--n", type=int, default=200)
parser.add_argument("--out", default="runs/example-rse")
args = parser.parse_args()

train, test = MNIST(root=args.data_dir, train=True), MNIST(root=args.data_dir, train=False)
model, _ = train_on_arrays(TrainConfig(model="rse_wong_mnist", epochs=args.epochs), (train.images, train.labels),
                           (test.images[:2000], test.labels[:2000]), args.out, overwrite=True)  # a rerun replaces it
for eps in (0.1, 0.3):
    r = evaluate_rse(model, (test.images[:args.n], test.labels[:args.n]),
                     RSEConfig(eps=eps, alpha=eps / 8, steps=20, n_ensemble=10, eot_samples=10), progress=True)
    print(f"eps {eps}: clean {r['clean_accuracy']:.3f}, PGD single-pass gradient {r['pgd_single_pass_accuracy']:.3f}, "
          f"PGD with EOT {r['pgd_eot_accuracy']:.3f}")
    for w in r["warnings"]:
        print("  warning:", w)
