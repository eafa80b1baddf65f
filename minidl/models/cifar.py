"""Models for 32x32 colour images (CIFAR-10)."""
from .. import nn


def _conv_bn_relu(cin, cout):
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False, init="he"), nn.BatchNorm2d(cout), nn.ReLU()]


def cifar_cnn(in_channels=3, image_size=32, num_classes=10, width=24):
    """A small VGG-style network that trains on a CPU: three stages of two 3x3 conv-BN-ReLU
    layers (width, 2 width, 4 width channels) each followed by 2x2 max-pooling, then a
    global average pool and a dense layer."""
    w1, w2, w3 = width, 2 * width, 4 * width
    return nn.Sequential(
        *_conv_bn_relu(in_channels, w1), *_conv_bn_relu(w1, w1), nn.MaxPool2d(2),
        *_conv_bn_relu(w1, w2), *_conv_bn_relu(w2, w2), nn.MaxPool2d(2),
        *_conv_bn_relu(w2, w3), *_conv_bn_relu(w3, w3), nn.MaxPool2d(2),
        nn.GlobalAvgPool2d(), nn.Linear(w3, num_classes, init="he"))


class PreActBlock(nn.Module):
    """Pre-activation residual block (He et al. 2016):
    out = conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut, where the shortcut is x, or a
    1x1 strided conv of relu(bn1(x)) when the shape changes. Attribute names follow the
    PyTorch code of Wong et al. (2020) (``shortcut.0`` is the 1x1 conv), so that their
    released state dicts load with ``load_state_dict``."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False, init="he")
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False, init="he")
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False, init="he"))

    def forward(self, x):
        out = self.bn1(x).relu()
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(self.bn2(out).relu())
        return out + shortcut


class PreActResNet(nn.Module):
    """conv1, then stages ``layer1``..``layer4`` of PreActBlocks (the first block of each later
    stage halves the resolution and doubles the width), bn, ReLU, global average pool, ``linear``.
    Parameter names and order are those of Wong et al.'s PyTorch PreActResNet."""

    def __init__(self, blocks_per_stage=(2, 2, 2, 2), in_channels=3, num_classes=10, width=64):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False, init="he")
        cin = width
        for stage, n in enumerate(blocks_per_stage):
            cout = width * 2 ** stage
            blocks = []
            for i in range(n):
                blocks.append(PreActBlock(cin, cout, stride=2 if (i == 0 and stage > 0) else 1))
                cin = cout
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        self.stages = len(blocks_per_stage)
        self.bn = nn.BatchNorm2d(cin)
        self.pool = nn.GlobalAvgPool2d()  # = avg_pool2d(4) of the reference on 32x32 inputs
        self.linear = nn.Linear(cin, num_classes, init="he")

    def forward(self, x):
        out = self.conv1(x)
        for stage in range(self.stages):
            out = getattr(self, f"layer{stage + 1}")(out)
        return self.linear(self.pool(self.bn(out).relu()))


def preact_resnet18(in_channels=3, image_size=32, num_classes=10, width=64):
    """PreAct ResNet-18 for CIFAR-10 (the model of Wong et al. 2020); use on a GPU."""
    return PreActResNet((2, 2, 2, 2), in_channels=in_channels, num_classes=num_classes, width=width)
