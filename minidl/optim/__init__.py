"""Optimizers and learning-rate schedules (``minidl.optim``)."""
from .optimizer import Optimizer
from .sgd import SGD
from .adam import Adam
from .schedules import StepLR, CosineLR, OneCycleLR, CyclicLR, LRSchedule

__all__ = ["Optimizer", "SGD", "Adam", "StepLR", "CosineLR", "OneCycleLR", "CyclicLR", "LRSchedule"]
