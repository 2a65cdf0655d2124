"""Reverse- and forward-mode automatic differentiation over raw backend arrays."""

from .function import (Context, Function, Node, enable_grad, forward_mode, is_grad_enabled, no_grad,
                       set_grad_enabled)
from .tensor import Tensor
from .tensor_methods import TorchMethods, from_numpy
from . import factories
from . import ops
from .ops import unbroadcast
from .forward import grad, hessian, jvp, vjp
from .gradcheck import GradcheckError, gradcheck, numerical_grad

__all__ = ["Context", "Function", "Node", "Tensor", "TorchMethods", "from_numpy", "enable_grad", "forward_mode", "is_grad_enabled",
           "no_grad", "set_grad_enabled", "factories", "ops", "unbroadcast", "jvp", "vjp", "grad",
           "hessian", "gradcheck", "numerical_grad", "GradcheckError"]
