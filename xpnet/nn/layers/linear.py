"""Identity and the fully connected layer."""

from __future__ import annotations

import math

from .. import init
from ..functional._arrays import as_input
from ..functional.linear import Affine, check_linear_input
from ..module import Module, factory_backend
from ..parameter import Parameter


class Identity(Module):
    """Returns its input unchanged (constructor arguments are accepted and ignored, as in PyTorch)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):
        return input


class Linear(Module):
    """y = x W^T + b for x of shape (..., in_features); W is (out_features, in_features).

    Default initialization is PyTorch's: W ~ kaiming_uniform_(a=sqrt(5)), i.e. U(-1/sqrt(in), 1/sqrt(in)),
    and b ~ U(-1/sqrt(in), 1/sqrt(in)), drawn from the backend's seeded generator. ``device`` is a
    device of the current backend, a backend name or ``"backend:device"``; ``dtype`` defaults to
    ``xpnet.get_default_dtype()``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        if self.in_features < 0 or self.out_features < 0:
            raise ValueError(f"Linear: in_features and out_features must be >= 0, got {in_features}, {out_features}")
        backend = factory_backend(device)
        native = backend.dtype(dtype)
        xp = backend.xp
        self.weight = Parameter(xp.zeros((self.out_features, self.in_features), dtype=native, device=backend.device))
        if bias:
            self.bias = Parameter(xp.zeros((self.out_features,), dtype=native, device=backend.device))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
            init.uniform_(self.bias, -bound, bound)

    def _where(self) -> str:
        return f"Linear(in_features={self.in_features}, out_features={self.out_features})"

    def forward(self, input):
        where = self._where()
        input = as_input(input, where)
        check_linear_input(input, self.weight, self.bias, where)
        return Affine.apply(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
