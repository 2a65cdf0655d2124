"""Batch transforms that run on the device, after the upload, on any backend.

Written against the Array API (the namespace comes from the batch, ``array_namespace(x)``): this
module imports no NumPy, so the same code runs on NumPy, CuPy and array_api_strict arrays.

Why on the device: a uint8 image batch is a quarter of the bytes of the same batch in float32, so
keeping batches uint8 on the host and through the upload, and converting to float only there,
moves four times fewer bytes over the bus (and through the loader's queues and workers).
"""

from __future__ import annotations

from array_api_compat import array_namespace, device as device_of

from ..autodiff.tensor import Tensor
from ..backends import backend_of, get_default_dtype, unwrap


class NormalizeOnDevice:
    """``(x * scale - mean[c]) / std[c]`` per channel of a batch (N, C, H, W) on its own device.

    x           a Tensor or raw array of any backend, uint8 as the loader uploads it (any integer
                or floating dtype is accepted); the result is a Tensor for a Tensor, an array for
                an array, in the default float dtype (``xpnet.get_default_dtype()``)
    mean, std   one value per channel (or one for all), on the scale of ``x * scale``: ImageNet's
                ``mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)`` with the default
                ``scale=1/255``

    Computed as ``x * (scale / std) - mean / std`` with the two constants folded on the host, in
    the default float dtype (with a bfloat16 default: in float32, then cast, as the DataLoader).
    """

    def __init__(self, mean, std, scale=1.0 / 255.0):
        self.mean = tuple(float(v) for v in _sequence(mean, "mean"))
        self.std = tuple(float(v) for v in _sequence(std, "std"))
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError(f"NormalizeOnDevice: mean and std must be equally long (one value per channel), got "
                             f"{len(self.mean)} and {len(self.std)} values")
        if any(not s > 0 for s in self.std):
            raise ValueError(f"NormalizeOnDevice: std must be positive, got {list(self.std)}")
        self.scale = float(scale)
        self._constants = {}  # (namespace, device, dtype, channels) -> (multiplier, offset) arrays

    def _folded(self, xp, device, dtype, channels):
        key = (xp.__name__, str(device), str(dtype), channels)
        found = self._constants.get(key)
        if found is None:
            count = len(self.mean)
            mean = self.mean * channels if count == 1 else self.mean
            std = self.std * channels if count == 1 else self.std
            multiplier = [self.scale / s for s in std]
            offset = [m / s for m, s in zip(mean, std)]
            found = tuple(xp.reshape(xp.asarray(values, dtype=dtype, device=device), (1, channels, 1, 1))
                          for values in (multiplier, offset))
            self._constants[key] = found
        return found

    def __call__(self, x, rng=None):
        data = unwrap(x)
        xp = array_namespace(data)
        if data.ndim != 4:
            raise ValueError(f"NormalizeOnDevice: expected a batch of shape (N, C, H, W), got shape {data.shape}")
        channels = data.shape[1]
        if len(self.mean) not in (1, channels):
            raise ValueError(f"NormalizeOnDevice: {len(self.mean)} mean/std values for a batch with {channels} "
                             f"channels (batch shape {data.shape})")
        if not (xp.isdtype(data.dtype, "integral") or xp.isdtype(data.dtype, "real floating")):
            raise TypeError(f"NormalizeOnDevice: expected an integer (uint8) or floating batch, got {data.dtype}")
        backend = backend_of(data)
        wanted = str(get_default_dtype())
        compute = backend.dtype("float32" if wanted == "bfloat16" else wanted)
        multiplier, offset = self._folded(xp, device_of(data), compute, channels)
        out = xp.astype(data, compute) * multiplier - offset
        if wanted == "bfloat16":  # as the DataLoader: computed in float32, then cast
            out = xp.astype(out, backend.dtype("bfloat16"))
        return Tensor(out) if isinstance(x, Tensor) else out

    def __repr__(self):
        return f"NormalizeOnDevice(mean={list(self.mean)}, std={list(self.std)}, scale={self.scale!r})"


def _sequence(values, name):
    if isinstance(values, (int, float)):
        return (values,)
    try:
        return tuple(values)
    except TypeError:
        raise TypeError(f"NormalizeOnDevice: {name} must be a number or a sequence of numbers, got {values!r}") \
            from None
