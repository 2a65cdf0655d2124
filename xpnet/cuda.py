"""CUDA helpers for the CuPy backend: devices, memory-pool statistics, TF32 opt-in.

Each function raises BackendUnavailableError, with the reason, where CuPy or a device is missing.
"""

from __future__ import annotations

from .backends import BackendUnavailableError, unavailable_reason


def _cupy_backend():
    reason = unavailable_reason("cupy")
    if reason is not None:
        raise BackendUnavailableError(f"backend 'cupy' is unavailable: {reason}")
    from .backends import cupy as cupy_backend

    return cupy_backend


def is_available() -> bool:
    return unavailable_reason("cupy") is None


def device_count() -> int:
    return len(_cupy_backend().device_properties()) if is_available() else 0


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
