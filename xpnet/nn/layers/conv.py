"""Conv2d: the 2-D convolution layer (PyTorch's ``nn.Conv2d``), a thin wrapper over ``F.conv2d``."""

from __future__ import annotations

import math

from .. import init
from ..functional._arrays import as_input, raw
from ..functional.conv import Convolution2d, check_conv2d_input, conv2d_output_size, normalize_pair, normalize_padding
from ..module import Module, factory_backend
from ..parameter import Parameter


class Conv2d(Module):
    """y = conv2d(x, W) + b over NCHW input (N, in_channels, H, W); W (out_channels, in_channels/groups,
    kH, kW), b (out_channels,). Output size per axis: floor((H + 2P - D(K-1) - 1)/S) + 1.

    Default initialization is PyTorch's: W ~ kaiming_uniform_(a=sqrt(5)), i.e. U(-1/sqrt(fan_in),
    1/sqrt(fan_in)) with fan_in = in_channels/groups * kH * kW, and b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
    drawn from the backend's seeded generator. ``padding`` is an int, a pair, 'valid' or 'same';
    only ``padding_mode='zeros'`` exists.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device=None, dtype=None):
        super().__init__()
        where = f"Conv2d({in_channels}, {out_channels}, kernel_size={kernel_size!r})"
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "groups" else 0):
                raise ValueError(f"{where}: {name} must be a {'positive' if name == 'groups' else 'non-negative'} "
                                 f"int, got {value!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{where}: in_channels ({in_channels}) and out_channels ({out_channels}) must both be "
                             f"divisible by groups ({groups})")
        if padding_mode != "zeros":
            raise ValueError(f"{where}: padding_mode must be 'zeros' (the only mode xpnet implements), "
                             f"got {padding_mode!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = normalize_pair(kernel_size, "kernel_size", where)
        self.stride = normalize_pair(stride, "stride", where)
        self.dilation = normalize_pair(dilation, "dilation", where)
        self.padding = padding if isinstance(padding, str) else normalize_pair(padding, "padding", where, minimum=0)
        self._padding = normalize_padding(padding, self.kernel_size, self.stride, self.dilation, where)
        self.groups = groups
        self.padding_mode = padding_mode
        self._where = where
        backend = factory_backend(device)
        native = backend.dtype(dtype)
        xp = backend.xp
        shape = (out_channels, in_channels // groups) + self.kernel_size
        self.weight = Parameter(xp.zeros(shape, dtype=native, device=backend.device))
        if bias:
            self.bias = Parameter(xp.zeros((out_channels,), dtype=native, device=backend.device))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = (self.in_channels // self.groups) * self.kernel_size[0] * self.kernel_size[1]
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input):
        input = as_input(input, self._where)
        check_conv2d_input(input, self.weight, self.bias, self.groups, self._where, in_channels=self.in_channels)
        conv2d_output_size(tuple(raw(input).shape[-2:]), self.kernel_size, self.stride, self._padding, self.dilation,
                           self._where)
        return Convolution2d.apply(input, self.weight, self.bias, stride=self.stride, padding=self._padding,
                                   dilation=self.dilation, groups=self.groups)

    def extra_repr(self) -> str:
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        return text
