"""Training a ResNet on CIFAR-10, in the style of a typical pytorch-cifar main.py: BasicBlock
with a 1x1 shortcut, augmentation with RandomCrop(32, padding=4) and a flip, SGD with
momentum and weight decay, a cosine schedule, and train()/test() loops that report the loss
and accuracy. Written for minidl's porting harness (narrow and shallow, on a few hundred
images): DATA_ROOT names a folder with CIFAR-10 (else synthetic images are made with NumPy);
AUGMENT=0 turns the random augmentation off; INIT_IN / INIT_OUT share the initial weights."""
import json
import os

import numpy as np
import torch
import torch.backends.cudnn as cudnn
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from torch.utils.data import DataLoader, Subset, TensorDataset

N_TRAIN = int(os.environ.get("N_TRAIN", "256"))
N_TEST = int(os.environ.get("N_TEST", "128"))
DATA_ROOT = os.environ.get("DATA_ROOT")
SHUFFLE = os.environ.get("SHUFFLE", "1") == "1"
AUGMENT = os.environ.get("AUGMENT", "1") == "1"


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super(BasicBlock, self).__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != self.expansion * planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(self.expansion * planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        out = F.relu(out)
        return out


class ResNet(nn.Module):
    def __init__(self, block, num_blocks, num_classes=10, width=16):
        super(ResNet, self).__init__()
        self.in_planes = width
        self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = self._make_layer(block, width, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, 2 * width, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * width, num_blocks[2], stride=2)
        self.linear = nn.Linear(4 * width * block.expansion, num_classes)

    def _make_layer(self, block, planes, num_blocks, stride):
        strides = [stride] + [1] * (num_blocks - 1)
        layers = []
        for stride in strides:
            layers.append(block(self.in_planes, planes, stride))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer1(out)
        out = self.layer2(out)
        out = self.layer3(out)
        out = F.avg_pool2d(out, 8)
        out = out.view(out.size(0), -1)
        out = self.linear(out)
        return out


def synthetic(n, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = rng.normal(0, 0.5, (n, 3, 32, 32)).astype(np.float32)
    images[np.arange(n), labels % 3, :, :] += (labels[:, None, None] / 5.0).astype(np.float32)
    return TensorDataset(torch.from_numpy(images), torch.from_numpy(labels))


device = "cuda" if torch.cuda.is_available() else "cpu"
best_acc = 0
start_epoch = 0
if DATA_ROOT:
    import torchvision
    import torchvision.transforms as transforms
    steps = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] if AUGMENT else []
    transform_train = transforms.Compose(steps + [
        transforms.ToTensor(), transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))])
    transform_test = transforms.Compose([
        transforms.ToTensor(), transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))])
    trainset = torchvision.datasets.CIFAR10(root=DATA_ROOT, train=True, download=False, transform=transform_train)
    testset = torchvision.datasets.CIFAR10(root=DATA_ROOT, train=False, download=False, transform=transform_test)
    trainset, testset = Subset(trainset, range(N_TRAIN)), Subset(testset, range(N_TEST))
else:
    trainset, testset = synthetic(N_TRAIN, 0), synthetic(N_TEST, 1)
trainloader = DataLoader(trainset, batch_size=64, shuffle=SHUFFLE, num_workers=2)
testloader = DataLoader(testset, batch_size=100, shuffle=False, num_workers=2)

print("==> Building model..")
torch.manual_seed(0)
net = ResNet(BasicBlock, [1, 1, 1])
if os.environ.get("INIT_IN"):
    net.load_state_dict(torch.load(os.environ["INIT_IN"], map_location="cpu"))
if os.environ.get("INIT_OUT"):
    torch.save(net.state_dict(), os.environ["INIT_OUT"])
net = net.to(device)
if device == "cuda":
    cudnn.benchmark = True
criterion = nn.CrossEntropyLoss()
optimizer = optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=2)
history = []


def train(epoch):
    net.train()
    train_loss = 0
    correct = 0
    total = 0
    for batch_idx, (inputs, targets) in enumerate(trainloader):
        inputs, targets = inputs.to(device), targets.to(device)
        optimizer.zero_grad()
        outputs = net(inputs)
        loss = criterion(outputs, targets)
        loss.backward()
        optimizer.step()
        train_loss += loss.item()
        _, predicted = outputs.max(1)
        total += targets.size(0)
        correct += predicted.eq(targets).sum().item()
    print(f"Epoch {epoch}: Loss: {train_loss / (batch_idx + 1):.3f} | Acc: {100. * correct / total:.3f}%")
    return train_loss / (batch_idx + 1)


def test(epoch):
    global best_acc
    net.eval()
    test_loss = 0
    correct = 0
    total = 0
    with torch.no_grad():
        for batch_idx, (inputs, targets) in enumerate(testloader):
            inputs, targets = inputs.to(device), targets.to(device)
            outputs = net(inputs)
            loss = criterion(outputs, targets)
            test_loss += loss.item()
            _, predicted = outputs.max(1)
            total += targets.size(0)
            correct += predicted.eq(targets).sum().item()
    acc = 100. * correct / total
    if acc > best_acc:
        best_acc = acc
    return test_loss / (batch_idx + 1), acc


for epoch in range(start_epoch, start_epoch + 2):
    train_loss = train(epoch)
    test_loss, acc = test(epoch)
    scheduler.step()
    history.append([train_loss, test_loss, acc])
print("RESULTS " + json.dumps({"history": history, "best_acc": best_acc,
                               "running_mean": net.bn1.running_mean[:3].tolist()}))
