"""Layer Modules (thin wrappers over xpnet.nn.functional)."""

from .activation import ELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from .container import ModuleList, Sequential
from .dropout import Dropout
from .flatten import Flatten
from .linear import Identity, Linear
from .loss import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, L1Loss, MSELoss, MultiMarginLoss, NLLLoss

__all__ = [
    "Sequential", "ModuleList", "Identity", "Linear", "Flatten", "Dropout", "ReLU", "LeakyReLU", "ELU",
    "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "MSELoss", "L1Loss", "BCELoss", "BCEWithLogitsLoss",
    "CrossEntropyLoss", "NLLLoss", "MultiMarginLoss",
]

# convolution, pooling and normalization layers live in sibling files written alongside these
try:
    from .conv import Conv2d
    __all__.append("Conv2d")
except ImportError:
    pass
try:
    from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
    __all__ += ["MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"]
except ImportError:
    pass
try:
    from .normalization import BatchNorm1d, BatchNorm2d, LocalResponseNorm
    __all__ += ["BatchNorm1d", "BatchNorm2d", "LocalResponseNorm"]
except ImportError:
    pass
