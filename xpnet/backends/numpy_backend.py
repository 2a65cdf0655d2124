"""NumPy on the CPU: the default backend."""

from __future__ import annotations

import numpy as np
from array_api_compat import numpy as xp_numpy

from .base import Backend


class NumpyBackend(Backend):
    name = "numpy"

    def owns(self, array) -> bool:
        return isinstance(array, (np.ndarray, np.generic))


def probe():
    return None


def parse_device(device):
    if device in (None, "cpu", 0, "0") or str(device) == "cpu":
        return "cpu", "cpu"
    raise ValueError(f"numpy backend: unknown device {device!r}; NumPy arrays live on 'cpu' only")


def make(device) -> NumpyBackend:
    dev, label = parse_device(device)
    return NumpyBackend(xp_numpy, dev, label)


def owns(array) -> bool:
    return isinstance(array, (np.ndarray, np.generic))
