"""The Backend object: an array namespace, a device, a seeded generator and a kernel table.

This module and its siblings are the only place in xpnet that imports NumPy or CuPy for
compute; everything above asks an array for its namespace (``array_namespace(x)``).
"""

from __future__ import annotations

import numpy as np

from .dtypes import get_default_dtype, resolve_dtype
from .kernels import _REGISTRY, KernelName, lookup_kernel


class HostRNG:
    """A seeded NumPy PCG64 generator whose draws are uploaded to the backend's device.

    Drawing on the host makes numpy and array_api_strict give identical numbers for the same seed,
    which the tests rely on to compare backends. GPU backends override the hot draws.
    """

    def __init__(self, backend, seed: int = 0):
        self.backend = backend
        self.seed(seed)

    def seed(self, seed: int) -> None:
        self._gen = np.random.Generator(np.random.PCG64(seed))

    def get_state(self) -> dict:
        return self._gen.bit_generator.state

    def set_state(self, state: dict) -> None:
        self._gen.bit_generator.state = state

    def _up(self, host, dtype):
        return self.backend.asarray(host, dtype=get_default_dtype() if dtype is None else dtype)

    def normal(self, shape, mean=0.0, std=1.0, dtype=None):
        return self._up(self._gen.normal(mean, std, size=tuple(shape)), dtype)

    def uniform(self, shape, low=0.0, high=1.0, dtype=None):
        return self._up(self._gen.uniform(low, high, size=tuple(shape)), dtype)

    def bernoulli(self, shape, p, dtype=None):
        """Ones with probability ``p``, zeros otherwise."""
        return self._up((self._gen.random(size=tuple(shape)) < p).astype(np.float64), dtype)

    def integers(self, low, high, shape):
        return self.backend.asarray(self._gen.integers(low, high, size=tuple(shape)), dtype="int64")

    def permutation(self, n: int):
        return self.backend.asarray(self._gen.permutation(n), dtype="int64")

    def host(self) -> np.random.Generator:
        """The host generator itself, for host-side work (data shuffling, augmentation)."""
        return self._gen


class Backend:
    """One array namespace on one device.

    ``name``      'numpy', 'cupy', 'array_api_strict' or 'torch'
    ``xp``        the Array-API namespace (through array-api-compat)
    ``device``    the namespace's device object
    ``rng``       a seeded generator (see ``manual_seed``)
    ``kernels``   optional per-instance fast paths by KernelName (the registered ones are found too)
    """

    name = "?"
    rng_class = HostRNG

    def __init__(self, xp, device, device_label: str):
        self.xp = xp
        self.device = device
        self.device_label = device_label
        self.kernels: dict = {}
        self.rng = self.rng_class(self, 0)

    # -- identity -------------------------------------------------------------------------------
    def __str__(self):
        return f"{self.name}:{self.device_label}"

    def __repr__(self):
        return f"Backend({self.name!r}, device={self.device_label!r})"

    _xpnet_device = None

    @property
    def xpnet_device(self):
        """What ``Tensor.device`` answers for this backend's arrays: an ``xpnet.device`` (cpu,
        cuda:i), or for array_api_strict its Device that also equals its name (see devices.py)."""
        found = self._xpnet_device
        if found is None:
            from .devices import backend_device

            found = self._xpnet_device = backend_device(self)
        return found

    @property
    def default_dtype(self):
        return resolve_dtype(self.xp, get_default_dtype())

    def dtype(self, dtype=None):
        """The namespace's dtype object for an xpnet dtype name (default float when None)."""
        return resolve_dtype(self.xp, dtype)

    # -- arrays ---------------------------------------------------------------------------------
    def asarray(self, obj, dtype=None, copy=None):
        """An array of this backend on this device. Python floats take the default dtype."""
        native = None if dtype is None else resolve_dtype(self.xp, dtype)
        if native is None and _is_python_floaty(obj):
            native = self.default_dtype
        return self.xp.asarray(obj, dtype=native, device=self.device, copy=copy)

    def from_host(self, host: np.ndarray):
        """Upload a NumPy array, keeping its dtype."""
        return self.xp.asarray(host, device=self.device)

    def owns(self, array) -> bool:
        """Whether ``array`` belongs to this backend's namespace (any device)."""
        return False  # each backend class answers for its own array type

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on CPU backends)."""

    # -- kernels --------------------------------------------------------------------------------
    def kernel(self, kernel):
        """The fast path for ``kernel`` (a ``KernelName`` from ``xpnet.backends.kernels``) on this
        backend, or None: the caller runs the generic code."""
        own = self.kernels.get(kernel)
        if own is not None:
            return own
        if type(kernel) is KernelName:  # what lookup_kernel checks, without the call
            return _REGISTRY.get((self.name, kernel))
        return lookup_kernel(self.name, kernel)  # raises the TypeError naming the declared kernels


def _is_python_floaty(obj) -> bool:
    if isinstance(obj, float):
        return True
    if isinstance(obj, (list, tuple)) and obj:
        flat = obj
        while isinstance(flat, (list, tuple)) and flat:
            if any(isinstance(v, float) for v in flat):
                return True
            flat = flat[0]
    return False
