"""PyTorch tensors as plain arrays (CPU or CUDA): a bonus backend through array-api-compat."""

from __future__ import annotations

import numpy as np

from .base import Backend


class TorchBackend(Backend):
    name = "torch"

    def owns(self, array) -> bool:
        return owns(array)

    def from_host(self, host):
        import torch

        # ascontiguousarray turns a 0-d array into shape (1,); reshape keeps the 0-d shape
        return torch.tensor(np.ascontiguousarray(host).reshape(host.shape), device=self.device)

    def synchronize(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def probe():
    try:
        import torch  # noqa: F401
    except ImportError:
        return "not installed (pip install torch)"
    return None


def parse_device(device):
    import torch

    if device is None:
        dev = torch.device("cpu")
    elif isinstance(device, torch.device):
        dev = device
    elif isinstance(device, int) or str(device).isdigit():
        dev = torch.device(f"cuda:{int(device)}")
    else:
        dev = torch.device(str(device))
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"torch backend: device {device!r} asked for CUDA, but torch sees no CUDA device")
        if dev.index is None:
            dev = torch.device("cuda:0")
    return dev, str(dev)


def make(device) -> TorchBackend:
    from array_api_compat import torch as xp_torch

    dev, label = parse_device(device)
    return TorchBackend(xp_torch, dev, label)


def owns(array) -> bool:
    return type(array).__module__.startswith("torch")


def to_host(array) -> np.ndarray:
    return array.detach().cpu().numpy()
