"""Tools to test differentiable code: :func:`gradcheck`, :func:`check_jvp_vjp`,
:func:`check_backward` for new Functions, second derivatives (:func:`gradgradcheck`,
:func:`hvp`, :func:`hessian`), and the hypothesis strategies of
:mod:`minidl.testing.strategies` (imported from there, so that minidl itself runs without
hypothesis)."""
from .check_backward import check_backward
from .gradcheck import GradcheckError, check_jvp_vjp, gradcheck, numerical_gradient, relative_error
from .higher_order import gradgradcheck, hessian, hvp

__all__ = ["gradcheck", "check_jvp_vjp", "check_backward", "numerical_gradient", "relative_error", "GradcheckError",
           "gradgradcheck", "hvp", "hessian"]
