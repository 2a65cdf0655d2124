"""Batch augmentation on the host, before upload.

Host-side module: it imports NumPy. Every transform takes a whole batch ``x`` of shape
(N, C, H, W) and an explicit ``np.random.Generator``: ``t(x, rng) -> batch``. Randomness comes
only from that generator, so ``DataLoader`` (which owns one generator per epoch) makes the
augmentation repeat exactly for a seed, whatever the backend. The work is vectorised over the
batch: per-image crop offsets and flip decisions are drawn as arrays and applied with one
fancy-indexing or ``where`` call.

Typical CIFAR pipeline, as in the course notes::

    Compose([ToFloat(), RandomCrop(32, padding=4), RandomHorizontalFlip(),
             Normalize(mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))])
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _check_batch(x, name):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a host NumPy batch of shape (N, C, H, W), got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name}: expected a batch of shape (N, C, H, W), got shape {x.shape}")


def _check_rng(rng, name):
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{name}: needs an explicit np.random.Generator as its second argument, "
                        f"got {type(rng).__name__} (DataLoader passes one per epoch)")


def _pair(value, name, what):
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    try:
        first, second = value
        return int(first), int(second)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: {what} must be an int or a pair (height, width), got {value!r}") from None


class ToFloat:
    """``x * scale`` as floating point: uint8 pixels 0..255 become 0..1 with the default scale."""

    def __init__(self, scale: float = 1.0 / 255.0, dtype="float32"):
        self.scale = float(scale)
        self.dtype = np.dtype(str(dtype))
        if self.dtype.kind != "f":
            raise TypeError(f"ToFloat: dtype must be floating, got {self.dtype}")

    def __call__(self, x, rng=None):
        x = np.asarray(x)
        out = x.astype(self.dtype)
        if self.scale != 1.0:
            out *= self.dtype.type(self.scale)
        return out

    def __repr__(self):
        return f"ToFloat(scale={self.scale!r}, dtype={self.dtype.name})"


class RandomCrop:
    """Zero-pad each side by ``padding`` pixels, then cut a ``size`` window at an offset drawn per
    image (uniform over all windows that fit)."""

    def __init__(self, size, padding=0, fill=0):
        self.size = _pair(size, "RandomCrop", "size")
        self.padding = _pair(padding, "RandomCrop", "padding")
        if min(self.size) < 1 or min(self.padding) < 0:
            raise ValueError(f"RandomCrop: size must be positive and padding non-negative, "
                             f"got size={self.size}, padding={self.padding}")
        self.fill = fill

    def __call__(self, x, rng):
        _check_batch(x, "RandomCrop")
        _check_rng(rng, "RandomCrop")
        n, _, height, width = x.shape
        pad_h, pad_w = self.padding
        crop_h, crop_w = self.size
        if height + 2 * pad_h < crop_h or width + 2 * pad_w < crop_w:
            raise ValueError(f"RandomCrop: a {crop_h}x{crop_w} crop does not fit images of {height}x{width} "
                             f"padded by {self.padding} (batch shape {x.shape})")
        if pad_h or pad_w:
            x = np.pad(x, ((0, 0), (0, 0), (pad_h, pad_h), (pad_w, pad_w)), constant_values=self.fill)
        top = rng.integers(0, x.shape[2] - crop_h + 1, size=n)
        left = rng.integers(0, x.shape[3] - crop_w + 1, size=n)
        # windows[n, c, i, j] is the crop whose corner is (i, j); the three advanced indices pick
        # one window per image and come first in the result, giving (N, C, crop_h, crop_w)
        windows = sliding_window_view(x, (crop_h, crop_w), axis=(2, 3))
        return windows[np.arange(n), :, top, left]

    def __repr__(self):
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomHorizontalFlip:
    """Mirror each image left-right with probability ``p``."""

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, x, rng):
        _check_batch(x, "RandomHorizontalFlip")
        _check_rng(rng, "RandomHorizontalFlip")
        chosen = np.flatnonzero(rng.random(x.shape[0]) < self.p)
        out = x.copy()
        # copying only the chosen images' mirror costs half of a where() over the whole batch
        out[chosen] = x[chosen, :, :, ::-1]
        return out

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


class Normalize:
    """``(x - mean[c]) / std[c]`` per channel, in the batch's own floating dtype."""

    def __init__(self, mean, std):
        self.mean = np.atleast_1d(np.asarray(mean, dtype=np.float64))
        self.std = np.atleast_1d(np.asarray(std, dtype=np.float64))
        if self.mean.ndim != 1 or self.std.shape != self.mean.shape:
            raise ValueError(f"Normalize: mean and std must be equally long vectors (one value per channel), "
                             f"got shapes {self.mean.shape} and {self.std.shape}")
        if np.any(self.std <= 0):
            raise ValueError(f"Normalize: std must be positive, got {self.std.tolist()}")

    def __call__(self, x, rng=None):
        _check_batch(x, "Normalize")
        if x.dtype.kind != "f":
            raise TypeError(f"Normalize: expected a floating batch, got {x.dtype}; put ToFloat() before it")
        channels = x.shape[1]
        if len(self.mean) not in (1, channels):
            raise ValueError(f"Normalize: {len(self.mean)} mean/std values for a batch with {channels} channels "
                             f"(batch shape {x.shape})")
        mean = self.mean.astype(x.dtype).reshape(1, -1, 1, 1)
        scale = (1.0 / self.std).astype(x.dtype).reshape(1, -1, 1, 1)
        return (x - mean) * scale

    def __repr__(self):
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"


class GaussianNoise:
    """``x + std * z`` with z ~ N(0, 1) drawn per element, in the batch's floating dtype."""

    def __init__(self, std: float):
        if std < 0:
            raise ValueError(f"GaussianNoise: std must be non-negative, got {std}")
        self.std = float(std)

    def __call__(self, x, rng):
        _check_batch(x, "GaussianNoise")
        _check_rng(rng, "GaussianNoise")
        if x.dtype.kind != "f":
            raise TypeError(f"GaussianNoise: expected a floating batch, got {x.dtype}; put ToFloat() before it")
        noise_dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float32
        noise = rng.standard_normal(x.shape, dtype=noise_dtype)
        return x + (noise * self.std).astype(x.dtype)

    def __repr__(self):
        return f"GaussianNoise(std={self.std})"


class Compose:
    """Apply transforms in order, all drawing from the one generator."""

    def __init__(self, transforms):
        self.transforms = list(transforms)
        for position, t in enumerate(self.transforms):
            if not callable(t):
                raise TypeError(f"Compose: item {position} is not callable: {t!r}")

    def __call__(self, x, rng=None):
        for t in self.transforms:
            x = t(x, rng)
        return x

    def __repr__(self):
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"Compose([{inner}])"
