"""Robust accuracy with AutoAttack, in the style of AutoAttack's README: a small MNIST
classifier (its normalisation inside the model) trained briefly, then the standard L-inf
evaluation, a custom list of attacks and an L2 evaluation on a few test images.
Written for minidl's porting harness: DATA_ROOT names a folder with MNIST (else synthetic
digits are made with NumPy), N_TRAIN / N_TEST the number of images, INIT_IN / INIT_OUT a
state dict to start from / to save, SHUFFLE=0 keeps the training order."""
import json
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from autoattack import AutoAttack
from torch.utils.data import DataLoader, Subset, TensorDataset

N_TRAIN = int(os.environ.get("N_TRAIN", "256"))
N_TEST = int(os.environ.get("N_TEST", "32"))
DATA_ROOT = os.environ.get("DATA_ROOT")
SHUFFLE = os.environ.get("SHUFFLE", "1") == "1"
torch.manual_seed(0)


def synthetic(n, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = rng.random((n, 1, 28, 28), dtype=np.float32) * 0.3
    for i, y in enumerate(labels):  # a bright bar whose position is the class
        images[i, 0, 2 + 2 * y:4 + 2 * y, 4:24] = 1.0
    return TensorDataset(torch.from_numpy(images), torch.from_numpy(labels))


if DATA_ROOT:
    from torchvision import datasets, transforms
    train_set = Subset(datasets.MNIST(DATA_ROOT, train=True, download=False, transform=transforms.ToTensor()),
                       range(N_TRAIN))
    test_set = Subset(datasets.MNIST(DATA_ROOT, train=False, download=False, transform=transforms.ToTensor()),
                      range(N_TEST))
else:
    train_set, test_set = synthetic(N_TRAIN, 0), synthetic(N_TEST, 1)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = (x - 0.1307) / 0.3081
        return self.fc2(F.relu(self.fc1(x.view(x.size(0), -1))))


model = Net()
if os.environ.get("INIT_IN"):
    model.load_state_dict(torch.load(os.environ["INIT_IN"], map_location="cpu"))
if os.environ.get("INIT_OUT"):
    torch.save(model.state_dict(), os.environ["INIT_OUT"])
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
for epoch in range(2):
    for x, y in DataLoader(train_set, batch_size=32, shuffle=SHUFFLE):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
model.eval()

x_test, y_test = next(iter(DataLoader(test_set, batch_size=N_TEST, shuffle=False)))


def accuracy(x):
    with torch.no_grad():
        return (model(x).argmax(1) == y_test).float().mean().item()


adversary = AutoAttack(model, norm='Linf', eps=0.15, version='standard')
x_adv = adversary.run_standard_evaluation(x_test, y_test, bs=16)
linf = accuracy(x_adv)
linf_size = (x_adv - x_test).abs().max().item()

adversary.attacks_to_run = ['apgd-ce']
apgd_ce = accuracy(adversary.run_standard_evaluation(x_test, y_test, bs=16))

adversary = AutoAttack(model, norm='L2', eps=3.0, version='custom', attacks_to_run=['apgd-ce', 'apgd-t'])
x_adv = adversary.run_standard_evaluation(x_test, y_test, bs=16)
l2 = accuracy(x_adv)
l2_size = (x_adv - x_test).view(len(x_test), -1).norm(dim=1).max().item()

results = {"clean": accuracy(x_test), "linf_standard": linf, "linf_apgd_ce": apgd_ce, "l2_custom": l2,
           "linf_within_eps": linf_size <= 0.15 + 1e-6, "l2_within_eps": l2_size <= 3.0 + 1e-4}
print("RESULTS " + json.dumps(results))
