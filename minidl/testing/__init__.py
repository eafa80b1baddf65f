"""Tools to test differentiable code: :func:`gradcheck` and hypothesis strategies."""
from .gradcheck import gradcheck, numerical_gradient, GradcheckError

__all__ = ["gradcheck", "numerical_gradient", "GradcheckError"]
