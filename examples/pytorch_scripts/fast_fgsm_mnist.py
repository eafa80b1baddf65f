"""Fast adversarial training with FGSM and a random start, then evaluation under PGD, in
the style of Wong et al.'s MNIST train and evaluate scripts (eps 0.3, alpha 1.25 eps,
clamped deltas, a PGD attack with restarts keeping the worst delta per example).
Written for minidl's porting harness: DATA_ROOT names a folder with MNIST (else synthetic
digits are made with NumPy), N_TRAIN / N_TEST the number of images, INIT_IN / INIT_OUT a
state dict to start from / to save."""
import json
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset, TensorDataset

N_TRAIN = int(os.environ.get("N_TRAIN", "256"))
N_TEST = int(os.environ.get("N_TEST", "128"))
DATA_ROOT = os.environ.get("DATA_ROOT")
SHUFFLE = os.environ.get("SHUFFLE", "1") == "1"


class Flatten(nn.Module):
    def forward(self, x):
        return x.view(x.size(0), -1)


def mnist_net():
    return nn.Sequential(
        nn.Conv2d(1, 16, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(),
        Flatten(), nn.Linear(32 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10))


def synthetic(n, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = rng.random((n, 1, 28, 28), dtype=np.float32) * 0.3
    for i, y in enumerate(labels):
        images[i, 0, 2 + 2 * y:4 + 2 * y, 4:24] = 1.0
    return TensorDataset(torch.from_numpy(images), torch.from_numpy(labels))


def attack_pgd(model, X, y, epsilon, alpha, attack_iters, restarts):
    max_loss = torch.zeros(y.shape[0])
    max_delta = torch.zeros_like(X)
    for _ in range(restarts):
        delta = torch.zeros_like(X).uniform_(-epsilon, epsilon)
        delta.data = torch.max(torch.min(1 - X, delta.data), 0 - X)
        delta.requires_grad = True
        for _ in range(attack_iters):
            output = model(X + delta)
            index = torch.where(output.max(1)[1] == y)
            if len(index[0]) == 0:
                break
            loss = F.cross_entropy(output, y)
            loss.backward()
            grad = delta.grad.detach()
            d = delta[index[0], :, :, :]
            g = grad[index[0], :, :, :]
            d = torch.clamp(d + alpha * torch.sign(g), -epsilon, epsilon)
            d = torch.max(torch.min(1 - X[index[0], :, :, :], d), 0 - X[index[0], :, :, :])
            delta.data[index[0], :, :, :] = d
            delta.grad.zero_()
        all_loss = F.cross_entropy(model(X + delta), y, reduction="none").detach()
        max_delta[all_loss >= max_loss] = delta.detach()[all_loss >= max_loss]
        max_loss = torch.max(max_loss, all_loss)
    return max_delta


if DATA_ROOT:
    import torchvision.datasets as datasets
    import torchvision.transforms as transforms
    train_set = Subset(datasets.MNIST(DATA_ROOT, train=True, download=False, transform=transforms.ToTensor()),
                       range(N_TRAIN))
    test_set = Subset(datasets.MNIST(DATA_ROOT, train=False, download=False, transform=transforms.ToTensor()),
                      range(N_TEST))
else:
    train_set, test_set = synthetic(N_TRAIN, 0), synthetic(N_TEST, 1)
train_loader = DataLoader(train_set, batch_size=32, shuffle=SHUFFLE)
test_loader = DataLoader(test_set, batch_size=64, shuffle=False)

torch.manual_seed(0)
np.random.seed(0)
epsilon = float(os.environ.get("EPS", "0.1"))  # Wong et al. train MNIST at 0.3 for many more steps
alpha = 1.25 * epsilon
model = mnist_net()
if os.environ.get("INIT_IN"):
    model.load_state_dict(torch.load(os.environ["INIT_IN"], map_location="cpu"))
if os.environ.get("INIT_OUT"):
    torch.save(model.state_dict(), os.environ["INIT_OUT"])
model.train()
opt = torch.optim.Adam(model.parameters(), lr=5e-3)
criterion = nn.CrossEntropyLoss()
epochs = 3
lr_schedule = lambda t: np.interp([t], [0, epochs * 2 // 5, epochs], [0, 5e-3, 0])[0]
train_losses = []
for epoch in range(epochs):
    train_loss = train_acc = train_n = 0
    for i, (X, y) in enumerate(train_loader):
        lr = lr_schedule(epoch + (i + 1) / len(train_loader))
        opt.param_groups[0].update(lr=lr)
        delta = torch.zeros_like(X).uniform_(-epsilon, epsilon)
        delta.requires_grad = True
        output = model(X + delta)
        loss = F.cross_entropy(output, y)
        loss.backward()
        grad = delta.grad.detach()
        delta.data = torch.clamp(delta + alpha * torch.sign(grad), -epsilon, epsilon)
        delta.data = torch.max(torch.min(1 - X, delta.data), 0 - X)
        delta = delta.detach()
        output = model(torch.clamp(X + delta, 0, 1))
        loss = criterion(output, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        train_loss += loss.item() * y.size(0)
        train_acc += (output.max(1)[1] == y).sum().item()
        train_n += y.size(0)
    print(f"epoch {epoch} loss {train_loss / train_n:.4f} acc {train_acc / train_n:.4f}")
    train_losses.append(train_loss / train_n)

model.eval()
total_acc = total_adv_acc = total_n = 0
for X, y in test_loader:
    with torch.no_grad():
        total_acc += (model(X).max(1)[1] == y).sum().item()
    delta = attack_pgd(model, X, y, epsilon, 0.01, 20, 1)
    with torch.no_grad():
        total_adv_acc += (model(X + delta).max(1)[1] == y).sum().item()
    total_n += y.size(0)
print(f"clean {total_acc / total_n:.4f} pgd {total_adv_acc / total_n:.4f}")
print("RESULTS " + json.dumps({"train_losses": train_losses, "clean": total_acc / total_n,
                               "pgd": total_adv_acc / total_n}))
