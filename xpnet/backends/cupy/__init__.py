"""CuPy on a CUDA GPU (``pip install 'xpnet[cuda12]'`` or ``'xpnet[cuda13]'``): the Backend, device
queries, and (imported below, so registered once with this package) the fast paths.

Modules: runtime (compiling the ``.cu`` sources, launching), conv, pool, norm (LRN), activation
(ReLU), optim (fused optimizer steps), random (the counter-based generator). CuPy itself is imported
only when the backend is created or a kernel first runs: importing this package needs no CuPy.
"""

from __future__ import annotations

from ..base import Backend
from . import activation, conv, norm, optim, pool  # noqa: F401  -- register the fast paths
from .random import CupyRNG


class CupyBackend(Backend):
    name = "cupy"
    rng_class = CupyRNG

    def owns(self, array) -> bool:
        return owns(array)

    def asarray(self, obj, dtype=None, copy=None):
        with self.device:
            return super().asarray(obj, dtype=dtype, copy=copy)

    def from_host(self, host):
        import cupy

        with self.device:
            return cupy.asarray(host)

    def synchronize(self) -> None:
        self.device.synchronize()


def probe():
    try:
        import cupy
    except ImportError:
        return "not installed (pip install 'xpnet[cuda12]' or 'xpnet[cuda13]')"
    except Exception as exc:  # a broken CUDA install raises all sorts of things at import
        return f"import failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"no CUDA device found ({first})"
    if count < 1:
        return "no CUDA device found"
    return None


def parse_device(device):
    import cupy

    if device is None:
        index = 0
    elif isinstance(device, cupy.cuda.Device):
        index = device.id
    else:
        text = str(device)
        if text.startswith("cuda:"):
            text = text[5:]
        elif text == "cuda":
            text = "0"
        try:
            index = int(text)
        except ValueError:
            raise ValueError(f"cupy backend: unknown device {device!r}; expected 0, 1, ... or 'cuda:N'")
    count = cupy.cuda.runtime.getDeviceCount()
    if not 0 <= index < count:
        raise ValueError(f"cupy backend: device {index} does not exist ({count} CUDA device(s))")
    return cupy.cuda.Device(index), str(index)


def make(device) -> CupyBackend:
    from array_api_compat import cupy as xp_cupy

    dev, label = parse_device(device)
    return CupyBackend(xp_cupy, dev, label)


def owns(array) -> bool:
    return type(array).__module__.startswith("cupy")


def to_host(array):
    return array.get()


def device_properties() -> list:
    """[(index, name, total memory in bytes, (major, minor))] for every CUDA device CuPy sees."""
    import cupy

    cuda_runtime = cupy.cuda.runtime
    out = []
    for index in range(cuda_runtime.getDeviceCount()):
        props = cuda_runtime.getDeviceProperties(index)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        out.append((index, name, props["totalGlobalMem"], (props["major"], props["minor"])))
    return out


def versions() -> tuple:
    """(CUDA runtime version, driver version) as integers, e.g. (12040, 12040)."""
    import cupy

    return cupy.cuda.runtime.runtimeGetVersion(), cupy.cuda.runtime.driverGetVersion()


def memory_stats() -> dict:
    """CuPy memory-pool figures in bytes: in use, held by the pool, and the pool's limit."""
    import cupy

    memory_pool = cupy.get_default_memory_pool()
    pinned = cupy.get_default_pinned_memory_pool()
    return {"used_bytes": memory_pool.used_bytes(), "total_bytes": memory_pool.total_bytes(),
            "limit_bytes": memory_pool.get_limit(), "pinned_free_blocks": pinned.n_free_blocks()}


def set_tf32(enabled: bool) -> None:
    """Opt in to TF32 tensor-core GEMMs for float32 matmuls (about 10 bits of mantissa)."""
    import os

    import numpy

    os.environ["CUPY_TF32"] = "1" if enabled else "0"  # read by CuPy for dtypes not yet planned
    try:
        from cupy._core import _routines_linalg as linalg
    except ImportError:
        return
    mode = linalg.COMPUTE_TYPE_TF32 if enabled else linalg.COMPUTE_TYPE_DEFAULT
    for dtype in (numpy.float32, numpy.complex64):
        linalg.set_compute_type(dtype, mode)
