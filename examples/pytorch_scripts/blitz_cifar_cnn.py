"""Training a classifier, in the style of the 60-minute blitz's CIFAR-10 tutorial: a small
CNN, CrossEntropyLoss, SGD with momentum, then the accuracy overall and per class.
Written for minidl's porting harness: DATA_ROOT names a folder with CIFAR-10 (else a small
synthetic set is made with NumPy), N_TRAIN / N_TEST the number of images used, INIT_IN /
INIT_OUT a state dict to start from / to save (so two frameworks can share weights)."""
import json
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from torch.utils.data import DataLoader, Subset, TensorDataset

N_TRAIN = int(os.environ.get("N_TRAIN", "256"))
N_TEST = int(os.environ.get("N_TEST", "128"))
DATA_ROOT = os.environ.get("DATA_ROOT")
SHUFFLE = os.environ.get("SHUFFLE", "1") == "1"
classes = ("plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def synthetic(n, seed):
    rng = np.random.default_rng(seed)
    images = rng.random((n, 3, 32, 32), dtype=np.float32) * 2 - 1
    labels = (images[:, 0, :4, :4].reshape(n, -1).sum(1) > 0).astype(np.int64) * 3
    return TensorDataset(torch.from_numpy(images), torch.from_numpy(labels))


if DATA_ROOT:
    import torchvision
    import torchvision.transforms as transforms
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    trainset = torchvision.datasets.CIFAR10(root=DATA_ROOT, train=True, download=False, transform=transform)
    testset = torchvision.datasets.CIFAR10(root=DATA_ROOT, train=False, download=False, transform=transform)
    trainset, testset = Subset(trainset, range(N_TRAIN)), Subset(testset, range(N_TEST))
else:
    trainset, testset = synthetic(N_TRAIN, 0), synthetic(N_TEST, 1)
trainloader = DataLoader(trainset, batch_size=4, shuffle=SHUFFLE, num_workers=2)
testloader = DataLoader(testset, batch_size=4, shuffle=False, num_workers=2)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


torch.manual_seed(0)
net = Net()
if os.environ.get("INIT_IN"):
    net.load_state_dict(torch.load(os.environ["INIT_IN"], map_location="cpu"))
if os.environ.get("INIT_OUT"):
    torch.save(net.state_dict(), os.environ["INIT_OUT"])
criterion = nn.CrossEntropyLoss()
optimizer = optim.SGD(net.parameters(), lr=0.001, momentum=0.9)

losses = []
for epoch in range(1):
    running_loss = 0.0
    for i, data in enumerate(trainloader, 0):
        inputs, labels = data
        optimizer.zero_grad()
        outputs = net(inputs)
        loss = criterion(outputs, labels)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
        if i % 16 == 15:
            print(f"[{epoch + 1}, {i + 1:5d}] loss: {running_loss / 16:.3f}")
            losses.append(running_loss / 16)
            running_loss = 0.0

PATH = os.environ.get("SAVE_PATH")
if PATH:
    torch.save(net.state_dict(), PATH)
dataiter = iter(testloader)
images, labels = next(dataiter)
print("GroundTruth: ", " ".join(f"{classes[labels[j]]:5s}" for j in range(4)))

correct = 0
total = 0
with torch.no_grad():
    for data in testloader:
        images, labels = data
        outputs = net(images)
        _, predicted = torch.max(outputs.data, 1)
        total += labels.size(0)
        correct += (predicted == labels).sum().item()
print(f"Accuracy of the network on the {total} test images: {100 * correct // total} %")

correct_pred = {classname: 0 for classname in classes}
total_pred = {classname: 0 for classname in classes}
with torch.no_grad():
    for data in testloader:
        images, labels = data
        outputs = net(images)
        _, predictions = torch.max(outputs, 1)
        for label, prediction in zip(labels, predictions):
            if label == prediction:
                correct_pred[classes[label]] += 1
            total_pred[classes[label]] += 1
print("RESULTS " + json.dumps({"losses": losses, "accuracy": correct / total, "correct_pred": correct_pred,
                               "total_pred": total_pred}))
