"""Optimizers and learning-rate schedulers (``minidl.optim``, ``minidl.optim.lr_scheduler``)."""
from .optimizer import Optimizer
from .sgd import SGD
from .adam import Adam, AdamW
from .adadelta import Adadelta, RMSprop
from . import lr_scheduler
from .lr_scheduler import (LRScheduler, LambdaLR, StepLR, MultiStepLR, ExponentialLR, CosineAnnealingLR,
                           CyclicLR, OneCycleLR)

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "Adadelta", "RMSprop", "lr_scheduler", "LRScheduler", "LambdaLR",
           "StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR", "CyclicLR", "OneCycleLR"]
