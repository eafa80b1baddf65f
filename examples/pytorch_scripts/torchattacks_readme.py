"""FGSM and PGD with torchattacks, in the style of torchattacks' README: a small MNIST
classifier trained on normalised inputs, the attacks told that normalisation with
``set_normalization_used`` (so they take and return normalised images), then the accuracy on
the adversarial images of a few test images.
Written for minidl's porting harness: DATA_ROOT names a folder with MNIST (else synthetic
digits are made with NumPy), N_TRAIN / N_TEST the number of images, INIT_IN / INIT_OUT a
state dict to start from / to save, SHUFFLE=0 keeps the training order."""
import json
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchattacks
from torch.utils.data import DataLoader, Subset, TensorDataset

N_TRAIN = int(os.environ.get("N_TRAIN", "256"))
N_TEST = int(os.environ.get("N_TEST", "64"))
DATA_ROOT = os.environ.get("DATA_ROOT")
SHUFFLE = os.environ.get("SHUFFLE", "1") == "1"
MEAN, STD = 0.1307, 0.3081
EPS = 0.2
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

model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))  # takes (x - MEAN) / STD
if os.environ.get("INIT_IN"):
    model.load_state_dict(torch.load(os.environ["INIT_IN"], map_location="cpu"))
if os.environ.get("INIT_OUT"):
    torch.save(model.state_dict(), os.environ["INIT_OUT"])
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
for epoch in range(2):
    for x, y in DataLoader(train_set, batch_size=32, shuffle=SHUFFLE):
        loss = F.cross_entropy(model((x - MEAN) / STD), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
model.eval()

images, labels = next(iter(DataLoader(test_set, batch_size=N_TEST, shuffle=False)))
images = (images - MEAN) / STD


def predictions(x):
    with torch.no_grad():
        return model(x).argmax(1)


def accuracy(x):
    return (predictions(x) == labels).float().mean().item()


atk = torchattacks.FGSM(model, eps=EPS)
atk.set_normalization_used(mean=[MEAN], std=[STD])
fgsm_images = atk(images, labels)

atk = torchattacks.PGD(model, eps=EPS, alpha=0.01, steps=20, random_start=False)
atk.set_normalization_used(mean=[MEAN], std=[STD])
pgd_images = atk(images, labels)

atk = torchattacks.PGD(model, eps=EPS, alpha=0.01, steps=20, random_start=True)
atk.set_normalization_used(mean=[MEAN], std=[STD])
random_start_images = atk(images, labels)

results = {"clean": accuracy(images), "fgsm": accuracy(fgsm_images), "pgd": accuracy(pgd_images),
           "pgd_predictions": predictions(pgd_images).tolist(),
           "pgd_linf": ((pgd_images - images) * STD).abs().max().item(),
           "pgd_random_start": accuracy(random_start_images)}
for name in ("clean", "fgsm", "pgd", "pgd_random_start"):
    print(f"{name}: {results[name]:.2%}")
print("RESULTS " + json.dumps(results))
