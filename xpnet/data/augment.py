"""Per-sample augmentation before batching, with torchvision's names and semantics.

Host-side module: it imports NumPy (and Pillow for resizing, when installed). Every transform is a
callable ``t(img, rng) -> img`` on one image: uint8 NumPy (H, W, C), C = 3 (RGB) or 1 (grey), and
an explicit ``np.random.Generator`` from which it draws all its randomness, so an image and a
generator in the same state always give the same result. Datasets call them per sample
(``ImageFolder(..., transform=...)``, ``ShardDataset(..., transform=...)``), each sample with its
own generator (see ``ImageFolder.sample``); batch transforms that run on whole (N, C, H, W)
batches live in ``xpnet.data.transforms``, and the normalisation that runs on the device after
upload is ``NormalizeOnDevice``.

ImageNet training and evaluation as in the course notes::

    train = Compose([RandomResizedCrop(224), RandomHorizontalFlip(),
                     ColorJitter(0.4, 0.4, 0.4), Lighting(0.1), ToUint8CHW()])
    val = Compose([Resize(256), CenterCrop(224), ToUint8CHW()])
    # then on the device, after the uint8 batch is uploaded:
    normalize = NormalizeOnDevice(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))

Images stay uint8 between transforms: a transform that computes in floating point (the colour
ones, Lighting) rounds to the nearest integer and clips to 0..255 before returning. Resizing is
bilinear with antialiasing (``decode.resize_hwc``). A dataset converts its transform's (H, W, C)
result to (C, H, W) itself; a pipeline ending in ``ToUint8CHW`` (its ``output_layout`` is
``'CHW'``) is taken as already converted.
"""

from __future__ import annotations

import math

import numpy as np

from . import transforms as _batch_transforms
from .decode import resize_hwc
from .device_transforms import NormalizeOnDevice  # noqa: F401  (the device-side step of a pipeline)

# AlexNet's PCA of ImageNet's RGB pixels (values 0..1), as published with fb.resnet.torch: the
# eigenvalues, and the eigenvectors as the columns of IMAGENET_EIGVEC
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                   (-0.5808, -0.0045, -0.8140),
                   (-0.5836, -0.6948, 0.4203))
# ITU-R 601-2 luma, as Pillow's convert('L'): the grey that contrast and saturation blend with
LUMA = (0.299, 0.587, 0.114)


def _check_image(img, name):
    if not isinstance(img, np.ndarray):
        raise TypeError(f"{name}: expected a NumPy image of shape (H, W, C), got {type(img).__name__}")
    if img.ndim != 3 or img.dtype != np.uint8:
        raise ValueError(f"{name}: expected a uint8 image of shape (H, W, C), got {img.dtype} of shape {img.shape}")


def _check_rng(rng, name):
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{name}: needs an explicit np.random.Generator as its second argument, got "
                        f"{type(rng).__name__} (datasets pass one per sample)")


def _size(value, name):
    """(height, width) from an int or a pair of positive ints."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else value
    try:
        height, width = pair
    except (TypeError, ValueError):
        height = width = None
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in (height, width)):
        raise ValueError(f"{name}: size must be a positive int or a pair of positive ints (height, width), "
                         f"got {value!r}")
    return int(height), int(width)


def _to_uint8(values):
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------- geometry
class RandomResizedCrop:
    """Crop a random box of the image and resize it to ``size`` (torchvision's sampling).

    Up to ten times: draw an area fraction uniform in ``scale`` and an aspect ratio (width /
    height) log-uniform in ``ratio``; the box of that area and ratio (sides rounded to integers) is
    taken at a uniform position if it fits. If none fits, the largest centred box whose ratio is
    clamped into ``ratio`` is used.
    """

    def __init__(self, size, scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0)):
        self.size = _size(size, "RandomResizedCrop")
        self.scale = tuple(float(v) for v in scale)
        self.ratio = tuple(float(v) for v in ratio)
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"RandomResizedCrop: scale must be (low, high) with 0 < low <= high, got {scale!r}")
        if len(self.ratio) != 2 or not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"RandomResizedCrop: ratio must be (low, high) with 0 < low <= high, got {ratio!r}")

    @staticmethod
    def get_params(img, scale, ratio, rng):
        """``(top, left, height, width)`` of the box for ``img`` (an image or its (H, W) shape)."""
        height, width = (img.shape[:2] if hasattr(img, "shape") else img)
        area = height * width
        log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
        for _ in range(10):
            target_area = area * rng.uniform(scale[0], scale[1])
            aspect = math.exp(rng.uniform(log_low, log_high))
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(rng.integers(0, height - h + 1))
                left = int(rng.integers(0, width - w + 1))
                return top, left, h, w
        in_ratio = width / height
        if in_ratio < ratio[0]:
            w, h = width, int(round(width / ratio[0]))
        elif in_ratio > ratio[1]:
            h, w = height, int(round(height * ratio[1]))
        else:
            h, w = height, width
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, img, rng):
        _check_image(img, "RandomResizedCrop")
        _check_rng(rng, "RandomResizedCrop")
        top, left, h, w = self.get_params(img, self.scale, self.ratio, rng)
        return resize_hwc(img[top:top + h, left:left + w], self.size)

    def __repr__(self):
        return f"RandomResizedCrop(size={self.size}, scale={self.scale}, ratio={self.ratio})"


class Resize:
    """Resize to ``size``: an int matches the shorter side to it, keeping the aspect ratio (the
    longer side becomes ``int(size * long / short)``, as torchvision; with ``max_size`` the longer
    side is capped there and the shorter one scaled down with it); a pair (height, width) is the
    exact output size."""

    def __init__(self, size, max_size=None):
        if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
            if size < 1:
                raise ValueError(f"Resize: size must be positive, got {size}")
            self.size = int(size)
        else:
            self.size = _size(size, "Resize")
            if max_size is not None:
                raise ValueError("Resize: max_size is only allowed when size is an int (the shorter side)")
        if max_size is not None and (not isinstance(max_size, (int, np.integer)) or max_size <= self.size):
            raise ValueError(f"Resize: max_size must be an int larger than size {self.size}, got {max_size!r}")
        self.max_size = None if max_size is None else int(max_size)

    def output_size(self, height, width):
        """(height, width) an image of ``height`` x ``width`` is resized to."""
        if isinstance(self.size, tuple):
            return self.size
        short, long = (height, width) if height <= width else (width, height)
        new_short, new_long = self.size, int(self.size * long / short)
        if self.max_size is not None and new_long > self.max_size:
            new_short, new_long = int(self.max_size * new_short / new_long), self.max_size
        return (new_short, new_long) if height <= width else (new_long, new_short)

    def decode_hint(self, height, width):
        """The least size a decoder must deliver: this transform's output (a JPEG may be decoded
        at a reduced scale that still covers it)."""
        return self.output_size(height, width)

    def __call__(self, img, rng=None):
        _check_image(img, "Resize")
        return resize_hwc(img, self.output_size(*img.shape[:2]))

    def __repr__(self):
        extra = f", max_size={self.max_size}" if self.max_size is not None else ""
        return f"Resize(size={self.size}{extra})"


class CenterCrop:
    """The centred ``size`` box (top ``round((H - h) / 2)``, left ``round((W - w) / 2)``); an image
    smaller than ``size`` is first padded with zeros on both sides (the extra pixel, if any, at
    the bottom / right), as torchvision."""

    def __init__(self, size):
        self.size = _size(size, "CenterCrop")

    def __call__(self, img, rng=None):
        _check_image(img, "CenterCrop")
        crop_h, crop_w = self.size
        height, width = img.shape[:2]
        if crop_h > height or crop_w > width:
            pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
            img = np.pad(img, ((pad_h // 2, (pad_h + 1) // 2), (pad_w // 2, (pad_w + 1) // 2), (0, 0)))
            height, width = img.shape[:2]
        top = int(round((height - crop_h) / 2.0))
        left = int(round((width - crop_w) / 2.0))
        return img[top:top + crop_h, left:left + crop_w]

    def __repr__(self):
        return f"CenterCrop(size={self.size})"


class RandomHorizontalFlip:
    """Mirror the image left-right with probability ``p`` (one ``rng.random()`` draw)."""

    def __init__(self, p=0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, img, rng):
        _check_image(img, "RandomHorizontalFlip")
        _check_rng(rng, "RandomHorizontalFlip")
        return img[:, ::-1] if rng.random() < self.p else img

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


# --------------------------------------------------------------------------------------- colour
def _grey(values):
    """Luma (H, W, 1) of float RGB values."""
    return values[:, :, :1] * LUMA[0] + values[:, :, 1:2] * LUMA[1] + values[:, :, 2:3] * LUMA[2]


def _blend(values, other, factor):
    return _to_uint8(factor * values + (1.0 - factor) * other)


def adjust_brightness(img, factor):
    """``img * factor`` (0 gives black, 1 the image)."""
    return _to_uint8(img.astype(np.float32) * np.float32(factor))


def adjust_contrast(img, factor):
    """``factor * img + (1 - factor) * m``, m the mean grey level (luma) of the whole image."""
    values = img.astype(np.float32)
    mean = float(np.mean(_grey(values) if img.shape[2] == 3 else values))
    return _blend(values, np.float32(mean), np.float32(factor))


def adjust_saturation(img, factor):
    """``factor * img + (1 - factor) * grey(img)`` per pixel (0 gives the grey image); a
    one-channel image is returned as it is."""
    if img.shape[2] != 3:
        return img
    values = img.astype(np.float32)
    return _blend(values, _grey(values), np.float32(factor))


def _hsv_planes(r, g, b):
    high = np.maximum(np.maximum(r, g), b)
    delta = high - np.minimum(np.minimum(r, g), b)
    # the sextant's numerator and offset: red highest -> (g - b) / delta, green -> 2 + (b - r) / delta,
    # blue -> 4 + (r - g) / delta; one division instead of three
    red, green = high == r, (high == g) & (high != r)
    numerator = np.where(red, g - b, np.where(green, b - r, r - g))
    numerator += np.where(red, 0.0, np.where(green, 2.0, 4.0)).astype(delta.dtype) * delta
    hue = numerator / (6 * np.where(delta > 0, delta, 1))  # in (-1/6, 1): wrap the negatives
    hue += hue < 0  # (NumPy's float % is far slower than this)
    saturation = delta / np.where(high > 0, high, 1)
    return hue, saturation, high


def _rgb_planes(h, s, v):
    """R, G, B planes of HSV planes; the hue may be any real (taken modulo one turn)."""
    chroma = v * s
    planes = []
    turn = 6 * (h - np.floor(h))  # in [0, 6)
    for n in (5.0, 3.0, 1.0):
        k = turn + n
        k = np.where(k >= 6, k - 6, k)
        planes.append(v - chroma * np.clip(np.minimum(k, 4 - k), 0, 1))
    return planes


def rgb_to_hsv(rgb):
    """float RGB in [0, 1], shape (..., 3) -> HSV in [0, 1] (hue as a fraction of a turn)."""
    return np.stack(_hsv_planes(rgb[..., 0], rgb[..., 1], rgb[..., 2]), axis=-1)


def hsv_to_rgb(hsv):
    """The inverse of ``rgb_to_hsv``: channel n of (R, G, B) is ``v - v s clip(min(k, 4 - k), 0, 1)``
    with ``k = (n' + 6 h) mod 6`` and n' = 5, 3, 1 (the sextant formula written without branches)."""
    return np.stack(_rgb_planes(hsv[..., 0], hsv[..., 1], hsv[..., 2]), axis=-1)


def adjust_hue(img, factor):
    """Rotate every pixel's hue by ``factor`` turns (in [-0.5, 0.5]) in HSV space; a one-channel
    image is returned as it is."""
    if not -0.5 <= factor <= 0.5:
        raise ValueError(f"adjust_hue: factor must be in [-0.5, 0.5], got {factor}")
    if img.shape[2] != 3:
        return img
    # contiguous (3, H, W) planes, kept on the 0..255 scale: hue and saturation do not depend on
    # it, and the value comes back on it
    planes = np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)
    hue, saturation, value = _hsv_planes(planes[0], planes[1], planes[2])
    hue += np.float32(factor)
    out = np.empty(img.shape, dtype=np.uint8)
    for channel, plane in enumerate(_rgb_planes(hue, saturation, value)):
        out[:, :, channel] = np.clip(np.rint(plane), 0, 255)
    return out


def _factor_range(value, name, center, bound, clip_low):
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"ColorJitter: {name} must be non-negative, got {value}")
        low, high = center - float(value), center + float(value)
        if clip_low is not None:
            low = max(low, clip_low)
    else:
        try:
            low, high = (float(v) for v in value)
        except (TypeError, ValueError):
            raise TypeError(f"ColorJitter: {name} must be a number or a pair (low, high), got {value!r}") from None
    if not bound[0] <= low <= high <= bound[1]:
        raise ValueError(f"ColorJitter: {name} range ({low}, {high}) must lie within {bound} with low <= high")
    return None if low == high == center else (low, high)


class ColorJitter:
    """Random brightness, contrast, saturation and hue changes, applied in a random order.

    A number v gives the factor range [max(0, 1 - v), 1 + v] for brightness, contrast and
    saturation and [-v, v] (v <= 0.5) for hue; a pair gives the range itself; 0 switches that
    change off. Per image: a random permutation of the four changes (``rng.permutation(4)``), then
    one factor uniform in each range that is on (brightness, contrast, saturation, hue in that
    order), then the changes in the permuted order, each rounded back to uint8.
    """

    def __init__(self, brightness=0, contrast=0, saturation=0, hue=0):
        inf = float("inf")
        self.brightness = _factor_range(brightness, "brightness", 1.0, (0.0, inf), 0.0)
        self.contrast = _factor_range(contrast, "contrast", 1.0, (0.0, inf), 0.0)
        self.saturation = _factor_range(saturation, "saturation", 1.0, (0.0, inf), 0.0)
        self.hue = _factor_range(hue, "hue", 0.0, (-0.5, 0.5), None)

    @staticmethod
    def get_params(brightness, contrast, saturation, hue, rng):
        """``(order, b, c, s, h)``: the permutation of the four changes and each factor (None for a
        change that is off)."""
        order = rng.permutation(4)
        factors = [None if r is None else float(rng.uniform(r[0], r[1]))
                   for r in (brightness, contrast, saturation, hue)]
        return (order, *factors)

    def __call__(self, img, rng):
        _check_image(img, "ColorJitter")
        _check_rng(rng, "ColorJitter")
        order, *factors = self.get_params(self.brightness, self.contrast, self.saturation, self.hue, rng)
        changes = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
        for which in order:
            if factors[which] is not None:
                img = changes[which](img, factors[which])
        return img

    def __repr__(self):
        return (f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, "
                f"saturation={self.saturation}, hue={self.hue})")


class Lighting:
    """AlexNet's PCA lighting noise: add ``V (alpha * eigval)`` to every RGB pixel, alpha drawn
    per image from N(0, alphastd^2) per component (``rng.normal(0, alphastd, 3)``), V the
    eigenvectors as columns.

    The eigenvalues are those of pixels scaled to 0..1 (ImageNet's published PCA by default), so on
    the uint8 image the offset is multiplied by 255: the image is taken as float, shifted, then
    rounded and clipped back to uint8 0..255 (the clipping is the one departure from the float
    formula). ``alphastd=0`` returns the image unchanged and draws nothing.
    """

    def __init__(self, alphastd=0.1, eigval=IMAGENET_EIGVAL, eigvec=IMAGENET_EIGVEC):
        if alphastd < 0:
            raise ValueError(f"Lighting: alphastd must be non-negative, got {alphastd}")
        self.alphastd = float(alphastd)
        self.eigval = np.asarray(eigval, dtype=np.float64)
        self.eigvec = np.asarray(eigvec, dtype=np.float64)
        if self.eigval.shape != (3,) or self.eigvec.shape != (3, 3):
            raise ValueError(f"Lighting: eigval must have shape (3,) and eigvec (3, 3), got {self.eigval.shape} "
                             f"and {self.eigvec.shape}")

    def offset(self, rng):
        """The RGB offset (3,) on the 0..255 scale for one image."""
        alpha = rng.normal(0.0, self.alphastd, size=3)
        return 255.0 * (self.eigvec @ (alpha * self.eigval))

    def __call__(self, img, rng):
        _check_image(img, "Lighting")
        _check_rng(rng, "Lighting")
        if img.shape[2] != 3:
            raise ValueError(f"Lighting: needs an RGB image (3 channels), got shape {img.shape}")
        if self.alphastd == 0:
            return img
        return _to_uint8(img.astype(np.float32) + self.offset(rng).astype(np.float32))

    def __repr__(self):
        return f"Lighting(alphastd={self.alphastd})"


# ------------------------------------------------------------------------------ composition, layout
class ToUint8CHW:
    """(H, W, C) -> contiguous uint8 (C, H, W), the layout batches have. Unlike torchvision's
    ToTensor it keeps uint8 0..255 (a quarter of the bytes of float32 until the device normalises
    it); a floating image is rounded and clipped to 0..255."""

    output_layout = "CHW"

    def __call__(self, img, rng=None):
        img = np.asarray(img)
        if img.ndim == 2:
            img = img[:, :, None]
        if img.ndim != 3:
            raise ValueError(f"ToUint8CHW: expected an image of shape (H, W, C), got shape {img.shape}")
        if img.dtype != np.uint8:
            img = _to_uint8(img)
        return np.ascontiguousarray(img.transpose(2, 0, 1))

    def __repr__(self):
        return "ToUint8CHW()"


class Compose(_batch_transforms.Compose):
    """Apply per-sample transforms in order, all drawing from the one generator."""

    @property
    def output_layout(self):
        """``'CHW'`` when a transform of the pipeline converts to it, else ``'HWC'``."""
        layouts = [getattr(t, "output_layout", None) for t in self.transforms]
        return next((layout for layout in reversed(layouts) if layout is not None), "HWC")

    def decode_hint(self, height, width):
        """The first transform's ``decode_hint`` (a decoder needs no more than what it keeps)."""
        hint = getattr(self.transforms[0], "decode_hint", None) if self.transforms else None
        return hint(height, width) if hint is not None else None


def to_chw(img, transform=None):
    """A transform's result as contiguous uint8 (C, H, W): converted from (H, W, C) unless the
    transform says (``output_layout``) it already produced (C, H, W)."""
    if getattr(transform, "output_layout", "HWC") == "CHW":
        out = np.asarray(img)
        if out.ndim != 3 or out.dtype != np.uint8:
            raise ValueError(f"{transform!r}: expected a uint8 (C, H, W) image, got {out.dtype} of shape {out.shape}")
        return np.ascontiguousarray(out)
    return ToUint8CHW()(img)


__all__ = [
    "RandomResizedCrop", "Resize", "CenterCrop", "RandomHorizontalFlip", "ColorJitter", "Lighting", "Compose",
    "ToUint8CHW", "NormalizeOnDevice", "adjust_brightness", "adjust_contrast", "adjust_saturation", "adjust_hue",
    "rgb_to_hsv", "hsv_to_rgb", "to_chw", "IMAGENET_EIGVAL", "IMAGENET_EIGVEC",
]
