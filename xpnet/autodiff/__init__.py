"""Reverse- and forward-mode automatic differentiation over raw backend arrays."""

from .function import (Context, Function, Node, enable_grad, forward_mode, is_grad_enabled, no_grad,
                       set_grad_enabled)
from .tensor import Tensor
from . import factories

__all__ = ["Context", "Function", "Node", "Tensor", "enable_grad", "forward_mode", "is_grad_enabled",
           "no_grad", "set_grad_enabled", "factories"]
