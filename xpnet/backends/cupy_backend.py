"""CuPy on a CUDA GPU (``pip install 'xpnet[cuda12]'`` or ``'xpnet[cuda13]'``)."""

from __future__ import annotations

from .base import Backend, HostRNG


class CupyRNG(HostRNG):
    """Draws on the GPU with CuPy's seeded generator, so dropout masks never cross the bus."""

    def seed(self, seed: int) -> None:
        super().seed(seed)
        import cupy

        with self.backend.device:
            self._dev = cupy.random.default_rng(seed)

    def normal(self, shape, mean=0.0, std=1.0, dtype=None):
        with self.backend.device:
            out = self._dev.standard_normal(size=tuple(shape), dtype="float64") * std + mean
        return out.astype(self.backend.dtype(dtype))

    def uniform(self, shape, low=0.0, high=1.0, dtype=None):
        with self.backend.device:
            out = self._dev.random(size=tuple(shape), dtype="float64") * (high - low) + low
        return out.astype(self.backend.dtype(dtype))

    def bernoulli(self, shape, p, dtype=None):
        with self.backend.device:
            out = self._dev.random(size=tuple(shape), dtype="float32") < p
        return out.astype(self.backend.dtype(dtype))


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
