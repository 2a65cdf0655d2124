"""Moving arrays between backends and devices.

``to_device`` walks lists, tuples and dicts; higher layers register their own types (Tensor,
Module, Optimizer) with ``register_transfer`` so that one call moves a model and its optimizer.
"""

from __future__ import annotations

import array_api_compat
import numpy as np

from . import backend_name_of, describe_device, get_backend, _module

_TRANSFERS: list = []  # (type, function(obj, backend_name, device) -> moved obj)


def register_transfer(cls, fn) -> None:
    """Teach ``to_device`` to move instances of ``cls``: ``fn(obj, backend, device)``.

    ``fn`` receives the target backend name (or None: keep the object's own) and device (or None).
    """
    _TRANSFERS.insert(0, (cls, fn))


def to_numpy(x) -> np.ndarray:
    """A host NumPy copy of any supported array (Tensors too, once registered)."""
    name = backend_name_of(x)
    if name == "numpy":
        return np.asarray(x)
    if name is not None:
        return _module(name).to_host(x)
    if hasattr(x, "data") and backend_name_of(x.data) is not None:
        return to_numpy(x.data)
    if isinstance(x, (int, float, bool, list, tuple)):
        return np.asarray(x)
    raise TypeError(f"to_numpy: expected an array or Tensor, got {type(x).__name__}")


def device_of(x):
    """The device object of an array or Tensor, in its own namespace's terms."""
    name = backend_name_of(x)
    if name is None and hasattr(x, "data"):
        return device_of(x.data)
    if name is None:
        raise TypeError(f"device_of: expected an array or Tensor, got {type(x).__name__}")
    return "cpu" if name == "numpy" else x.device


def to_device(obj, backend=None, device=None):
    """Move ``obj`` to ``backend`` (a name or Backend) on ``device``.

    With neither given, the current backend is the target. With only ``device``, an array stays in
    its namespace and changes device. Lists, tuples and dicts are walked; registered types
    (Tensor, Module, Optimizer) move themselves. Other objects come back unchanged.
    """
    if backend is not None and not isinstance(backend, str):
        backend, device = backend.name, (backend.device if device is None else device)
    return _move(obj, backend, device)


def _move(obj, backend, device):
    if backend_name_of(obj) is not None and not isinstance(obj, np.generic):
        return _move_array(obj, backend, device)
    if isinstance(obj, np.generic):
        return _move_array(np.asarray(obj), backend, device)
    for cls, fn in _TRANSFERS:
        if isinstance(obj, cls):
            return fn(obj, backend, device)
    if isinstance(obj, dict):
        return type(obj)((k, _move(v, backend, device)) for k, v in obj.items())
    if isinstance(obj, list):
        return [_move(v, backend, device) for v in obj]
    if isinstance(obj, tuple):
        moved = [_move(v, backend, device) for v in obj]
        return type(obj)(*moved) if hasattr(obj, "_fields") else tuple(moved)
    return obj


def target_backend(array, backend, device):
    """The Backend an array should go to under to_device's rules."""
    if backend is None and device is None:
        return get_backend()
    if backend is None:
        backend = backend_name_of(array)
    return get_backend(backend, device)


def _move_array(array, backend, device):
    target = target_backend(array, backend, device)
    source_name = backend_name_of(array)
    if describe_device(array) == str(target):
        return array
    if source_name == target.name:
        return array_api_compat.to_device(array, target.device)
    moved = _via_dlpack(array, source_name, target)
    if moved is not None:
        return moved
    return target.from_host(to_numpy(array))


def _via_dlpack(array, source_name, target):
    """Device-to-device exchange between CuPy and torch CUDA tensors on the same GPU (no trip
    through host memory); None where it does not apply. The result is a copy, never an alias."""
    try:
        if (source_name, target.name) == ("cupy", "torch"):
            import torch

            out = torch.from_dlpack(array)
            return out.clone() if out.device == target.device else None
        if (source_name, target.name) == ("torch", "cupy"):
            import cupy

            if array.device.type != "cuda" or array.device.index != target.device.id:
                return None
            with target.device:
                return cupy.from_dlpack(array.detach().contiguous()).copy()
    except (BufferError, RuntimeError, TypeError, ValueError):
        return None
    return None
