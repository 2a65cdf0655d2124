"""CuPy on a CUDA GPU (``pip install 'xpnet[cuda12]'`` or ``'xpnet[cuda13]'``)."""

from __future__ import annotations

from .base import Backend, HostRNG


_GOLDEN = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1

# SplitMix64's output function of (key + counter * golden ratio): a counter-based generator, so the
# whole state is (key, counter) and any draw can be reproduced from it (checkpoints, resume)
_MIX = """
__device__ __forceinline__ unsigned long long xpnet_mix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
__device__ __forceinline__ double xpnet_unit(unsigned long long key, unsigned long long counter) {
    // (0, 1]: 53 random bits, plus one ulp so that log() never sees 0
    return ((double)(xpnet_mix64(key + counter * 0x9E3779B97F4A7C15ULL) >> 11) + 1.0) * 1.1102230246251565e-16;
}
"""


def mix64(z: int) -> int:
    """The generator's mixing function on the host (tests, seeding)."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def host_units(key: int, offset: int, count: int):
    """The uniforms (0, 1] that the device draws for counters offset+1 .. offset+count (a reference)."""
    import numpy as np

    z = np.arange(offset + 1, offset + count + 1, dtype=np.uint64) * np.uint64(_GOLDEN) + np.uint64(key)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return ((z >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0 ** -53


class CupyRNG(HostRNG):
    """Uniform, normal and Bernoulli draws made on the GPU (dropout masks never cross the bus) by a
    counter-based generator: element i of a draw is a hash of (key, counter + i + 1), so the state
    is the pair (key, counter), saved and restored by get_state/set_state with the host generator's
    state (checkpoints resume bit for bit). Normal draws use Box-Muller on two counters per element.
    Other draws (integers, permutations) come from the host generator, as on every backend."""

    def seed(self, seed: int) -> None:
        super().seed(seed)
        self._key = mix64((int(seed) * _GOLDEN) & _MASK64)
        self._counter = 0

    def get_state(self) -> dict:
        return {"host": super().get_state(), "device": {"key": self._key, "counter": self._counter}}

    def set_state(self, state: dict) -> None:
        if "host" in state and "device" in state:
            super().set_state(state["host"])
            self._key, self._counter = int(state["device"]["key"]), int(state["device"]["counter"])
        else:  # a host-generator state alone (written by a CPU backend)
            super().set_state(state)

    def _draw(self, kernel, shape, dtype, per_element, *params):
        """Run draw kernel ``kernel`` into a new array; float16 is drawn in float32 and cast."""
        import math

        import cupy
        import numpy as np

        shape = tuple(shape)
        offset = self._counter
        self._counter += math.prod(shape) * per_element
        target = np.dtype(self.backend.dtype(dtype))  # CuPy names dtypes by NumPy's scalar types
        native = target if target.name in ("float32", "float64") else np.dtype("float32")
        with self.backend.device:
            out = cupy.empty(shape, dtype=native)
            _kernels()[kernel](np.uint64(self._key), np.uint64(offset), *params, out)
        return out if out.dtype == target else out.astype(target)

    def uniform(self, shape, low=0.0, high=1.0, dtype=None):
        return self._draw("uniform", shape, dtype, 1, float(low), float(high))

    def normal(self, shape, mean=0.0, std=1.0, dtype=None):
        return self._draw("normal", shape, dtype, 2, float(mean), float(std))

    def bernoulli(self, shape, p, dtype=None):
        return self._draw("bernoulli", shape, dtype, 1, float(p))


def _kernels():
    global _KERNELS
    if _KERNELS is None:
        import cupy

        _KERNELS = {
            "uniform": cupy.ElementwiseKernel(
                "uint64 key, uint64 offset, float64 low, float64 high", "T out",
                "out = (T)(low + (high - low) * (1.0 - xpnet_unit(key, offset + i + 1)));",
                "xpnet_rng_uniform", preamble=_MIX),
            "normal": cupy.ElementwiseKernel(
                "uint64 key, uint64 offset, float64 mean, float64 std", "T out",
                "const double u1 = xpnet_unit(key, offset + 2 * i + 1);"
                "const double u2 = xpnet_unit(key, offset + 2 * i + 2);"
                "out = (T)(mean + std * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));",
                "xpnet_rng_normal", preamble=_MIX),
            "bernoulli": cupy.ElementwiseKernel(
                "uint64 key, uint64 offset, float64 p", "T out",
                "out = (T)((1.0 - xpnet_unit(key, offset + i + 1)) < p ? 1 : 0);",
                "xpnet_rng_bernoulli", preamble=_MIX),
        }
    return _KERNELS


_KERNELS = None


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

    runtime = cupy.cuda.runtime
    out = []
    for index in range(runtime.getDeviceCount()):
        props = runtime.getDeviceProperties(index)
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

    pool = cupy.get_default_memory_pool()
    pinned = cupy.get_default_pinned_memory_pool()
    return {"used_bytes": pool.used_bytes(), "total_bytes": pool.total_bytes(),
            "limit_bytes": pool.get_limit(), "pinned_free_blocks": pinned.n_free_blocks()}


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
