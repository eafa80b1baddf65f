"""Example 3: train the Madry MNIST network on MNIST, checkpoint every epoch, evaluate.

    python examples/03_train_mnist.py --data-dir ../shared/data [--epochs 3] [--device cpu|cuda]

The same as `python -m minidl train --dataset mnist --model madry_mnist ...`, written out so
the pieces are visible: data, loader, model, optimizer, the fit loop and evaluation.
"""
import argparse

import minidl as md
from minidl.data import MNIST, DataLoader
from minidl.models import madry_mnist
from minidl.train import evaluate, fit

parser = argparse.ArgumentParser()
parser.add_argument("--data-dir", default=None)
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--device", default="cpu")
parser.add_argument("--out", default="runs/example-mnist")
args = parser.parse_args()

md.manual_seed(0)
train, test = MNIST(root=args.data_dir, train=True), MNIST(root=args.data_dir, train=False)
print(f"MNIST: {len(train)} training and {len(test)} test images, shape {train.images.shape[1:]}")
train_loader = DataLoader(train, batch_size=128, shuffle=True, seed=0, device=args.device)
test_loader = DataLoader(test, batch_size=500, device=args.device)

model = madry_mnist().to(args.device)
print(model)
optimizer = md.optim.Adam(model.parameters(), lr=1e-3)
# fit() writes checkpoint.npz and metrics.json into --out after every epoch; resume=True continues.
fit(model, train_loader, optimizer, args.epochs, eval_loader=test_loader, out_dir=args.out)
print("test:", evaluate(model, test_loader))
