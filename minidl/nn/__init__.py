"""Layers with parameters and state (``minidl.nn``)."""
from .module import Module, Parameter, Sequential, ModuleList, ModuleDict
from .layers import (Linear, Conv2d, MaxPool2d, AvgPool2d, ReLU, Sigmoid, Tanh, Flatten, Dropout,
                     BatchNorm2d, BatchNorm1d, Identity, LeakyReLU, GlobalAvgPool2d, Dropout2d,
                     AdaptiveAvgPool2d)
from .noise import GaussianNoise, set_noise
from .loss import CrossEntropyLoss, NLLLoss, MSELoss, BCELoss, BCEWithLogitsLoss
from . import init
from .. import functional  # torch.nn.functional is reachable as nn.functional

__all__ = ["Module", "Parameter", "Sequential", "ModuleList", "ModuleDict", "LeakyReLU", "Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "ReLU",
           "Sigmoid", "Tanh", "Flatten", "Dropout", "BatchNorm2d", "BatchNorm1d", "Identity",
           "GlobalAvgPool2d", "Dropout2d", "AdaptiveAvgPool2d", "GaussianNoise", "set_noise", "init",
           "CrossEntropyLoss", "NLLLoss", "MSELoss", "BCELoss", "BCEWithLogitsLoss"]
