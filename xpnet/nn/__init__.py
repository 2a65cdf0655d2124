"""xpnet.nn: Module, Parameter, layers, losses, initializers (PyTorch's names and defaults)."""

from . import functional, init, utils
from . import parallel
from .layers import *  # noqa: F401,F403
from .layers import __all__ as _layer_names
from .module import IncompatibleKeys, Module, RemovableHandle, StateDictError
from .parameter import Parameter

__all__ = ["Module", "Parameter", "StateDictError", "IncompatibleKeys", "RemovableHandle", "functional",
           "init", "utils", "parallel"] + list(_layer_names)
