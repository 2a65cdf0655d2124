"""The CuPy backend's generator: uniform, normal and Bernoulli draws made on the GPU by a
counter-based hash (device functions in ``random.cu``); ``host_units`` is its NumPy reference."""

from __future__ import annotations

from ..base import HostRNG
from .runtime import cuda_source

_GOLDEN = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1


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

        mix = cuda_source("random.cu")  # xpnet_unit(key, counter): the uniform (0, 1] of one counter
        _KERNELS = {
            "uniform": cupy.ElementwiseKernel(
                "uint64 key, uint64 offset, float64 low, float64 high", "T out",
                "out = (T)(low + (high - low) * (1.0 - xpnet_unit(key, offset + i + 1)));",
                "xpnet_rng_uniform", preamble=mix),
            "normal": cupy.ElementwiseKernel(
                "uint64 key, uint64 offset, float64 mean, float64 std", "T out",
                "const double u1 = xpnet_unit(key, offset + 2 * i + 1);"
                "const double u2 = xpnet_unit(key, offset + 2 * i + 2);"
                "out = (T)(mean + std * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));",
                "xpnet_rng_normal", preamble=mix),
            "bernoulli": cupy.ElementwiseKernel(
                "uint64 key, uint64 offset, float64 p", "T out",
                "out = (T)((1.0 - xpnet_unit(key, offset + i + 1)) < p ? 1 : 0);",
                "xpnet_rng_bernoulli", preamble=mix),
        }
    return _KERNELS


_KERNELS = None
