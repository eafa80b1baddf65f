"""Layers with parameters and state (``minidl.nn``)."""
from .module import Module, Parameter, Sequential
from .layers import (Linear, Conv2d, MaxPool2d, AvgPool2d, ReLU, Sigmoid, Tanh, Flatten, Dropout,
                     BatchNorm2d, BatchNorm1d, Identity, GlobalAvgPool2d)
from .noise import GaussianNoise, set_noise
from . import init

__all__ = ["Module", "Parameter", "Sequential", "Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "ReLU",
           "Sigmoid", "Tanh", "Flatten", "Dropout", "BatchNorm2d", "BatchNorm1d", "Identity",
           "GlobalAvgPool2d", "GaussianNoise", "set_noise", "init"]
