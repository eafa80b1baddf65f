"""Example 4: train the small VGG-style `cifar_cnn` on CIFAR-10 with crop/flip augmentation,
SGD with Nesterov momentum and a one-cycle learning rate.

    python examples/04_train_cifar10.py --data-dir ../shared/data [--epochs 10] [--device cpu|cuda]

The last 5,000 training images are held out for validation (the local data copy has only the
first 1,000 official test images, which are reported too).
"""
import argparse

import minidl as md
from minidl.data import CIFAR10, DataLoader, random_crop_flip
from minidl.models import cifar_cnn
from minidl.train import evaluate, fit

parser = argparse.ArgumentParser()
parser.add_argument("--data-dir", default=None)
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--device", default="cpu")
parser.add_argument("--out", default="runs/example-cifar10")
args = parser.parse_args()

md.manual_seed(0)
train, test = CIFAR10(root=args.data_dir, train=True), CIFAR10(root=args.data_dir, train=False)
holdout = 5000
train_loader = DataLoader((train.images[:-holdout], train.labels[:-holdout]), batch_size=128, shuffle=True,
                          seed=0, device=args.device, transform=random_crop_flip)
val_loader = DataLoader((train.images[-holdout:], train.labels[-holdout:]), batch_size=500, device=args.device)

model = cifar_cnn().to(args.device)
optimizer = md.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
schedule = md.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, total_steps=args.epochs * len(train_loader),
                                            anneal_strategy="linear", cycle_momentum=False)
fit(model, train_loader, optimizer, args.epochs, schedule=schedule, eval_loader=val_loader, out_dir=args.out)
print("held-out training slice:", evaluate(model, val_loader))
print(f"official test images 0-{len(test) - 1}:", evaluate(model, DataLoader(test, 500, device=args.device)))
