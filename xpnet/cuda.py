"""CUDA helpers for the CuPy backend: devices, memory-pool statistics, TF32 opt-in.

Each function raises BackendUnavailableError, with the reason, where CuPy or a device is missing.
"""

from __future__ import annotations

from .backends import BackendUnavailableError, unavailable_reason
from .backends import devices as _devices


def _cupy_backend():
    reason = unavailable_reason("cupy")
    if reason is not None:
        raise BackendUnavailableError(f"backend 'cupy' is unavailable: {reason}")
    from .backends import cupy as cupy_backend

    return cupy_backend


def is_available() -> bool:
    return unavailable_reason("cupy") is None


def device_count() -> int:
    """The number of CUDA devices CuPy sees: 0 where CuPy or a device is missing (no error)."""
    return len(_cupy_backend().device_properties()) if is_available() else 0


def current_device() -> int:
    """The index of the current CUDA device: where ``"cuda"`` without an index (``Tensor.cuda()``,
    ``xpnet.device("cuda")``) puts arrays. 0 unless ``set_device`` chose another."""
    _cupy_backend()
    return _devices.current_cuda_index()


def set_device(device) -> None:
    """Make GPU ``device`` (an int, ``"cuda:1"`` or an ``xpnet.device``) the current CUDA device:
    what ``"cuda"`` without an index means from now on (``torch.cuda.set_device``). CuPy's own
    current device is left alone: xpnet's backends name their device on every allocation."""
    index = _devices.cuda_device(device).index
    if index is None:
        return  # "cuda": the current device already
    backend = _cupy_backend()
    count = len(backend.device_properties())
    if not 0 <= index < count:
        raise ValueError(f"set_device: CUDA device {index} does not exist ({count} CUDA device(s))")
    _devices.set_current_cuda_index(index)


def devices() -> list:
    """[(index, name, total memory bytes, (major, minor) compute capability)]."""
    return _cupy_backend().device_properties()


def memory_stats() -> dict:
    """The CuPy memory pool's ``used_bytes``, ``total_bytes`` (held) and ``limit_bytes``."""
    return _cupy_backend().memory_stats()


def set_tf32(enabled: bool = True) -> None:
    """Allow TF32 tensor cores for float32 GEMMs (faster, about 1e-3 relative error); off by default.
    Takes effect for kernels CuPy plans after the call."""
    _cupy_backend().set_tf32(enabled)
