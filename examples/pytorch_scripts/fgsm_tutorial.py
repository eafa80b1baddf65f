"""Adversarial examples with FGSM, in the style of PyTorch's FGSM tutorial: a LeNet-like
MNIST model (loaded from a checkpoint when PRETRAINED names one, else trained briefly and
saved there), then the test accuracy under FGSM for several epsilons, one image at a time.
Written for minidl's porting harness: DATA_ROOT names a folder with MNIST (else synthetic
digits are made with NumPy), N_TRAIN / N_TEST the number of images used."""
import json
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from torch.utils.data import DataLoader, Subset, TensorDataset

epsilons = [0, .05, .1, .15, .2, .25, .3]
pretrained_model = os.environ.get("PRETRAINED", "lenet_mnist_model.pth")
N_TRAIN = int(os.environ.get("N_TRAIN", "256"))
N_TEST = int(os.environ.get("N_TEST", "64"))
DATA_ROOT = os.environ.get("DATA_ROOT")
use_cuda = True
torch.manual_seed(42)


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
test_loader = DataLoader(test_set, batch_size=1, shuffle=False)


class Net(nn.Module):
    def __init__(self):
        super(Net, self).__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, 10)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = x.view(-1, 320)
        x = F.relu(self.fc1(x))
        x = F.dropout(x, training=self.training)
        x = self.fc2(x)
        return F.log_softmax(x, dim=1)


print("CUDA Available: ", torch.cuda.is_available())
device = torch.device("cuda" if use_cuda and torch.cuda.is_available() else "cpu")
model = Net().to(device)
if os.path.exists(pretrained_model):
    model.load_state_dict(torch.load(pretrained_model, map_location="cpu"))
else:  # a short training run stands in for the tutorial's downloaded checkpoint
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(3):
        for data, target in DataLoader(train_set, batch_size=32, shuffle=True):
            optimizer.zero_grad()
            loss = F.nll_loss(model(data), target)
            loss.backward()
            optimizer.step()
    torch.save(model.state_dict(), pretrained_model)
model.eval()


def fgsm_attack(image, epsilon, data_grad):
    sign_data_grad = data_grad.sign()
    perturbed_image = image + epsilon * sign_data_grad
    perturbed_image = torch.clamp(perturbed_image, 0, 1)
    return perturbed_image


def test(model, device, test_loader, epsilon):
    correct = 0
    adv_examples = []
    for data, target in test_loader:
        data, target = data.to(device), target.to(device)
        data.requires_grad = True
        output = model(data)
        init_pred = output.max(1, keepdim=True)[1]
        if init_pred.item() != target.item():
            continue
        loss = F.nll_loss(output, target)
        model.zero_grad()
        loss.backward()
        data_grad = data.grad.data
        perturbed_data = fgsm_attack(data, epsilon, data_grad)
        output = model(perturbed_data)
        final_pred = output.max(1, keepdim=True)[1]
        if final_pred.item() == target.item():
            correct += 1
            if epsilon == 0 and len(adv_examples) < 5:
                adv_ex = perturbed_data.squeeze().detach().cpu().numpy()
                adv_examples.append((init_pred.item(), final_pred.item(), adv_ex))
        else:
            if len(adv_examples) < 5:
                adv_ex = perturbed_data.squeeze().detach().cpu().numpy()
                adv_examples.append((init_pred.item(), final_pred.item(), adv_ex))
    final_acc = correct / float(len(test_loader))
    print(f"Epsilon: {epsilon}\tTest Accuracy = {correct} / {len(test_loader)} = {final_acc}")
    return final_acc, adv_examples


accuracies = []
examples = []
for eps in epsilons:
    acc, ex = test(model, device, test_loader, eps)
    accuracies.append(acc)
    examples.append(ex)
print("RESULTS " + json.dumps({"accuracies": accuracies, "examples": [len(e) for e in examples]}))
