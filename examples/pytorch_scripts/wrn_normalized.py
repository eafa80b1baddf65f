"""A WideResNet with the input normalisation inside the model, in the style of RobustBench's
model definitions: register_buffer for the mean and std, BasicBlock with ReLU(inplace=True),
the He initialisation loop over self.modules() through .data, nn.Sequential(OrderedDict),
AdaptiveAvgPool2d; a short training run and an evaluation under a PGD attack at 8/255.
Written for minidl's porting harness: DATA_ROOT names a folder with CIFAR-10 (else
synthetic images are made with NumPy); INIT_IN / INIT_OUT share the initial weights."""
import json
import math
import os
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset, TensorDataset

N_TRAIN = int(os.environ.get("N_TRAIN", "128"))
N_TEST = int(os.environ.get("N_TEST", "64"))
DATA_ROOT = os.environ.get("DATA_ROOT")
SHUFFLE = os.environ.get("SHUFFLE", "1") == "1"
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)


class BasicBlock(nn.Module):
    def __init__(self, in_planes, out_planes, stride, dropRate=0.0):
        super(BasicBlock, self).__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.droprate = dropRate
        self.equalInOut = (in_planes == out_planes)
        self.convShortcut = (not self.equalInOut) and nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride,
                                                                padding=0, bias=False) or None

    def forward(self, x):
        if not self.equalInOut:
            x = self.relu1(self.bn1(x))
        else:
            out = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(out if self.equalInOut else x)))
        if self.droprate > 0:
            out = F.dropout(out, p=self.droprate, training=self.training)
        out = self.conv2(out)
        return torch.add(x if self.equalInOut else self.convShortcut(x), out)


class WideResNet(nn.Module):
    def __init__(self, depth=10, num_classes=10, widen_factor=1, dropRate=0.0):
        super(WideResNet, self).__init__()
        nChannels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        assert ((depth - 4) % 6 == 0)
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(3, nChannels[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = self._group(n, nChannels[0], nChannels[1], 1, dropRate)
        self.block2 = self._group(n, nChannels[1], nChannels[2], 2, dropRate)
        self.block3 = self._group(n, nChannels[2], nChannels[3], 2, dropRate)
        self.bn1 = nn.BatchNorm2d(nChannels[3])
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(nChannels[3], num_classes)
        self.nChannels = nChannels[3]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2. / n))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                m.bias.data.zero_()

    @staticmethod
    def _group(nb_layers, in_planes, out_planes, stride, dropRate):
        return nn.Sequential(OrderedDict(
            (f"layer{i}", BasicBlock(i == 0 and in_planes or out_planes, out_planes, i == 0 and stride or 1, dropRate))
            for i in range(int(nb_layers))))

    def forward(self, x):
        out = self.conv1(x)
        out = self.block1(out)
        out = self.block2(out)
        out = self.block3(out)
        out = self.relu(self.bn1(out))
        out = self.pool(out)
        out = out.view(-1, self.nChannels)
        return self.fc(out)


class Normalized(nn.Module):
    def __init__(self, model, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x):
        return self.model((x - self.mean) / self.std)


def pgd(model, x, y, eps=8 / 255, alpha=2 / 255, steps=5):
    delta = torch.zeros_like(x, requires_grad=True)
    for _ in range(steps):
        loss = nn.CrossEntropyLoss()(model(x + delta), y)
        loss.backward()
        grad = delta.grad.detach()
        delta.grad.zero_()
        delta.data = (delta + alpha * grad.sign()).clamp(-eps, eps)
        delta.data = (x + delta.data).clamp(0, 1) - x
    return (x + delta).detach()


def synthetic(n, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = rng.random((n, 3, 32, 32), dtype=np.float32) * 0.5
    images[np.arange(n), labels % 3] += (labels[:, None, None] / 20.0).astype(np.float32)
    return TensorDataset(torch.from_numpy(images), torch.from_numpy(labels))


if DATA_ROOT:
    import torchvision.transforms as transforms
    from torchvision.datasets import CIFAR10
    trainset = Subset(CIFAR10(DATA_ROOT, train=True, transform=transforms.ToTensor()), range(N_TRAIN))
    testset = Subset(CIFAR10(DATA_ROOT, train=False, transform=transforms.ToTensor()), range(N_TEST))
else:
    trainset, testset = synthetic(N_TRAIN, 0), synthetic(N_TEST, 1)

torch.manual_seed(0)
model = Normalized(WideResNet(depth=10, widen_factor=1), CIFAR10_MEAN, CIFAR10_STD)
if os.environ.get("INIT_IN"):
    model.load_state_dict(torch.load(os.environ["INIT_IN"], map_location="cpu"))
if os.environ.get("INIT_OUT"):
    torch.save(model.state_dict(), os.environ["INIT_OUT"])
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
model.train()
losses = []
for x, y in DataLoader(trainset, batch_size=32, shuffle=SHUFFLE):
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    losses.append(loss.item())
model.eval()
clean = robust = 0
for x, y in DataLoader(testset, batch_size=32):
    with torch.no_grad():
        clean += (model(x).argmax(1) == y).sum().item()
    robust += (model(pgd(model, x, y)).argmax(1) == y).sum().item()
bn = model.model.bn1
print(f"clean {clean / len(testset):.4f} robust {robust / len(testset):.4f}")
print("RESULTS " + json.dumps({"losses": losses, "clean": clean / len(testset), "robust": robust / len(testset),
                               "running_mean": bn.running_mean[:3].tolist(), "mean": model.mean.flatten().tolist()}))
