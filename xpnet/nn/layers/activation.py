"""Activation layers: thin Modules over xpnet.nn.functional.activation."""

from __future__ import annotations

from ..functional import activation as A
from ..module import Module


def _inplace_text(inplace: bool) -> str:
    return "inplace=True" if inplace else ""


class ReLU(Module):
    """y = max(x, 0). ``inplace`` is accepted for PyTorch compatibility (computed out of place)."""

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = bool(inplace)

    def forward(self, input):
        return A.relu(input)

    def extra_repr(self) -> str:
        return _inplace_text(self.inplace)


class LeakyReLU(Module):
    """y = x for x > 0, negative_slope * x otherwise."""

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False):
        super().__init__()
        self.negative_slope = float(negative_slope)
        self.inplace = bool(inplace)

    def forward(self, input):
        return A.leaky_relu(input, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class ELU(Module):
    """y = x for x > 0, alpha (e^x - 1) otherwise."""

    def __init__(self, alpha: float = 1.0, inplace: bool = False):
        super().__init__()
        self.alpha = float(alpha)
        self.inplace = bool(inplace)

    def forward(self, input):
        return A.elu(input, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}" + (", inplace=True" if self.inplace else "")


class Sigmoid(Module):
    """y = 1 / (1 + e^-x)."""

    def forward(self, input):
        return A.sigmoid(input)


class Tanh(Module):
    """y = tanh(x)."""

    def forward(self, input):
        return A.tanh(input)


class Softmax(Module):
    """Softmax along ``dim`` (None: the last dimension)."""

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        return A.softmax(input, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(Module):
    """Log-softmax along ``dim`` (None: the last dimension)."""

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        return A.log_softmax(input, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
