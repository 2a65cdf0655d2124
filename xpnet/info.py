"""``xpnet info``: versions, backends, CUDA devices and BLAS, for bug reports."""

from __future__ import annotations

import platform
import sys


def _version(module_name):
    try:
        module = __import__(module_name)
    except Exception:
        return None
    return getattr(module, "__version__", "unknown")


def _gpu_decoder():
    """nvImageCodec's version when it is installed (``DataLoader(..., decode_on_device=True)``)."""
    from .data.device_decode import INSTALL_COMMAND, nvimgcodec_module

    module = nvimgcodec_module()
    if module is None:
        return f"not installed ({INSTALL_COMMAND})"
    return f"nvImageCodec {getattr(module, '__version__', 'unknown')} (DataLoader(..., decode_on_device=True))"


def _cuda_lines():
    from .backends import unavailable_reason

    reason = unavailable_reason("cupy")
    if reason is not None:
        return [f"CUDA: {reason}"]
    from .backends import cupy as cupy_backend

    try:
        runtime, driver = cupy_backend.versions()
        lines = [f"CUDA runtime: {runtime}  driver: {driver}"]
        for index, name, memory, (major, minor) in cupy_backend.device_properties():
            lines.append(f"  cuda:{index}  {name}  {memory / 2**30:.1f} GiB  compute capability {major}.{minor}")
    except Exception as exc:
        lines = [f"CUDA: unavailable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"]
    return lines


def _blas_lines():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return ["BLAS: threadpoolctl not installed (pip install threadpoolctl to show it)"]
    lines = []
    for pool in threadpool_info():
        if pool.get("user_api") == "blas":
            lines.append(f"BLAS: {pool.get('internal_api')} {pool.get('version')} "
                         f"({pool.get('architecture') or '?'}, {pool.get('num_threads')} threads) "
                         f"from {pool.get('prefix')}")
    return lines or ["BLAS: none found by threadpoolctl"]


def info_text() -> str:
    import xpnet
    from .backends import available_backends, get_backend

    lines = [
        f"xpnet: {xpnet.__version__}",
        f"Python: {platform.python_version()} ({sys.executable})",
        f"platform: {platform.platform()}",
        f"NumPy: {_version('numpy')}",
        f"array-api-compat: {_version('array_api_compat')}",
        f"array-api-strict: {_version('array_api_strict') or 'not installed'}",
        f"CuPy: {_version('cupy') or 'not installed'}",
        f"PyTorch: {_version('torch') or 'not installed'}",
        f"image decoder: {__import__('xpnet.data.decode', fromlist=['decoder_name']).decoder_name()}",
        f"GPU image decoder: {_gpu_decoder()}",
    ]
    lines += _cuda_lines()
    lines += _blas_lines()
    from .backends.numpy import allocator, native

    lines.append(f"NumPy compiled kernels: {native.status()}")
    lines.append(f"C allocator: {allocator.status()}")
    lines.append(f"distributed: {__import__('xpnet.distributed', fromlist=['transport']).transport()}")
    lines.append("backends:")
    for name, reason in available_backends().items():
        lines.append(f"  {name}: {'available' if reason is None else 'unavailable: ' + reason}")
    try:
        lines.append(f"selected: {get_backend()}")
    except Exception as exc:
        lines.append(f"selected: none ({exc})")
    return "\n".join(lines)
