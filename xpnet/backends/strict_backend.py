"""array_api_strict: a minimal, standard-only namespace that proves xpnet uses nothing else.

Its fake devices ``CPU_DEVICE``, ``device1`` and ``device2`` let CPU tests catch device bugs:
combining arrays from two of them is an error, as on real hardware.
"""

from __future__ import annotations

import numpy as np

from .base import Backend


class StrictBackend(Backend):
    name = "array_api_strict"

    def owns(self, array) -> bool:
        return owns(array)

    def from_host(self, host):
        return self.xp.asarray(host, device=self.device)


def probe():
    try:
        import array_api_strict  # noqa: F401
    except ImportError:
        return "not installed (pip install array-api-strict)"
    return None


def parse_device(device):
    import array_api_strict as strict

    if device is None:
        return strict.Device("CPU_DEVICE"), "CPU_DEVICE"
    if isinstance(device, strict.Device):
        return device, _label(device)
    name = str(device)
    if name.lower() == "cpu":
        name = "CPU_DEVICE"
    known = [_label(d) for d in strict.__array_namespace_info__().devices()]
    if name not in known:
        raise ValueError(f"array_api_strict backend: unknown device {device!r}; expected one of {known}")
    return strict.Device(name), name


def _label(dev) -> str:
    text = repr(dev)
    return text.split("'")[1] if "'" in text else text


def make(device) -> StrictBackend:
    import array_api_strict as strict

    dev, label = parse_device(device)
    return StrictBackend(strict, dev, _label(dev))


def owns(array) -> bool:
    return type(array).__module__.startswith("array_api_strict")


def to_host(array) -> np.ndarray:
    import array_api_strict as strict

    cpu = strict.Device("CPU_DEVICE")
    if array.device != cpu:
        array = array.to_device(cpu)
    return np.from_dlpack(array).copy()
