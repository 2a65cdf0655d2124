"""Image decoding and resizing on the host: JPEGs through simplejpeg (libjpeg-turbo) when it is
installed, everything else (and JPEGs without simplejpeg) through Pillow.

Host-side module: it imports NumPy; simplejpeg and Pillow are optional (``pip install
"xpnet[images]"`` installs both). Decoded images are uint8 NumPy arrays (H, W, C), C = 3 for
``mode='RGB'`` and 1 for ``mode='L'``.

Reduced-scale decoding. A JPEG is stored as 8x8 DCT blocks, and libjpeg-turbo can decode it
directly at 1/2, 1/4 or 1/8 of its size, skipping most of the work. When the caller needs at most
half the stored size in both dimensions (``size`` or ``min_size`` below), the image is decoded at
the smallest of those power-of-two scales that still covers the target (``reduction_factor``), then
resized exactly. Both decoders do it: simplejpeg through ``min_height``/``min_width``, Pillow
through ``Image.draft``; the scales 3/8, 5/8, ... that libjpeg-turbo also offers are not used,
since only the power-of-two ones have SIMD code.

Hostile input. The bytes are decoded only by simplejpeg (after its header says the file is a
JPEG of a colour space it converts) or by Pillow restricted to ``PILLOW_FORMATS``; the pixel count
in the header is checked against Pillow's decompression-bomb bound ``MAX_IMAGE_PIXELS`` before any
pixel is decoded, by either decoder (Pillow alone only warns up to twice that bound); an image that
does not decode is a ValueError naming the file (or the shard member) and its size in bytes.

Resizing (``resize_hwc``) is Pillow's bilinear filter, which widens its support when shrinking
(antialiasing, as torchvision's default ``antialias=True``); without Pillow a NumPy version of the
same separable triangle filter gives results within one grey level of it.
"""

from __future__ import annotations

import io
import math
import sys

import numpy as np

from ..safe_io import memory_guard, read_bounded

JPEG_MAGIC = b"\xff\xd8\xff"
# the Pillow decoders a file may reach, whatever its content claims (no PostScript through
# Ghostscript, no exotic decoder for a hostile file)
PILLOW_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "PPM", "TIFF", "WEBP")
# Pillow's own default for MAX_IMAGE_PIXELS, used when Pillow is not installed
DEFAULT_MAX_IMAGE_PIXELS = int(1024 * 1024 * 1024 // 4 // 3)
# an image file larger than this is refused unread: 256 MiB is far above any photograph, and the
# whole file is held in memory while it decodes
MAX_IMAGE_FILE_BYTES = 256 << 20
DECODERS = ("auto", "simplejpeg", "pillow")
PILLOW_HINT = 'reading images needs Pillow, an optional extra: pip install "xpnet[images]"'

_SIMPLEJPEG = []  # [module or None], filled on first use
_PILLOW_MISSING = []  # [True] once importing Pillow failed
_SIMPLEJPEG_COLOURS = ("YCbCr", "Gray")  # header colour spaces libjpeg-turbo converts to RGB / gray


class DecompressionBombRefused(ValueError):
    """An image of more pixels than Pillow's ``MAX_IMAGE_PIXELS``."""


def simplejpeg_module():
    """The ``simplejpeg`` module, or None when it is not installed (imported once)."""
    if not _SIMPLEJPEG:
        try:
            import simplejpeg
        except ImportError:
            simplejpeg = None
        _SIMPLEJPEG.append(simplejpeg)
    return _SIMPLEJPEG[0]


def pillow_module():
    """``PIL.Image``, or None when Pillow is not installed (a failed import is not retried: it
    would search the path again for every image)."""
    image = sys.modules.get("PIL.Image")
    if image is not None:
        return image
    if _PILLOW_MISSING:
        return None
    try:
        from PIL import Image
    except ImportError:
        _PILLOW_MISSING.append(True)
        return None
    return Image


def require_pillow():
    """``PIL.Image``, or an ImportError that says how to install it."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError(f"{PILLOW_HINT} ({exc})") from None
    return Image


def decoder_name() -> str:
    """The decoder JPEGs go through: ``'simplejpeg 1.9.0'``, ``'Pillow 11.0.0'``, or a line saying
    neither is installed (for ``xpnet info``)."""
    simplejpeg = simplejpeg_module()
    if simplejpeg is not None:
        return f"simplejpeg {getattr(simplejpeg, '__version__', 'unknown')}"
    try:
        import PIL
    except ImportError:
        return 'none (pip install "xpnet[images]" installs simplejpeg and Pillow)'
    return f"Pillow {getattr(PIL, '__version__', 'unknown')}"


def pixel_limit():
    """The most pixels an image may have: Pillow's ``MAX_IMAGE_PIXELS`` as set now (None: no bound,
    if a user switched Pillow's bound off), or Pillow's default without Pillow."""
    image = pillow_module()
    return DEFAULT_MAX_IMAGE_PIXELS if image is None else image.MAX_IMAGE_PIXELS


def check_pixels(name, nbytes, height, width, owner="image"):
    """Refuse an image whose header announces more pixels than ``pixel_limit()``."""
    limit = pixel_limit()
    pixels = int(height) * int(width)
    if limit is not None and pixels > limit:
        raise DecompressionBombRefused(f"{owner}: {name} ({nbytes} bytes) is refused as a decompression bomb: "
                                       f"{pixels} pixels, more than the {limit} accepted "
                                       f"(PIL.Image.MAX_IMAGE_PIXELS)")


def reduction_factor(stored, target) -> int:
    """The largest k of 8, 4, 2, 1 such that the stored (height, width) divided by k (rounded up,
    as libjpeg does) still covers ``target`` in both dimensions; 1 when ``target`` is None."""
    if target is None:
        return 1
    height, width = stored
    for k in (8, 4, 2):
        if -(-height // k) >= target[0] and -(-width // k) >= target[1]:
            return k
    return 1


def _target(stored, size, min_size):
    if size is not None:
        return size
    if callable(min_size):
        return min_size(*stored)
    return min_size


def decode_image(data, name, mode="RGB", size=None, min_size=None, decoder="auto", owner="image"):
    """Decode the encoded image ``data`` (bytes) to uint8 (H, W, C).

    name        how errors name the image (a path, or ``shard.tar:member``)
    mode        ``'RGB'`` (C = 3) or ``'L'`` (C = 1)
    size        (height, width) to resize to exactly; None keeps the stored size
    min_size    without ``size``: the least (height, width) the caller needs, or a function
                ``(stored_height, stored_width) -> (height, width) | None`` (a transform's
                ``decode_hint``); a JPEG may then be decoded at a reduced scale covering it
    decoder     ``'auto'`` (simplejpeg for JPEGs when installed, else Pillow), ``'simplejpeg'``
                (an ImportError without it; non-JPEGs still go to Pillow) or ``'pillow'``
    owner       the prefix of error messages (``'ImageFolder'``, ``'ShardDataset'``)

    A JPEG that simplejpeg refuses (a colour space it does not convert, or a damaged file) goes to
    Pillow, whose error is the one reported when it refuses it too.
    """
    if decoder not in DECODERS:
        raise ValueError(f"{owner}: decoder must be one of {DECODERS}, got {decoder!r}")
    if mode not in ("RGB", "L"):
        raise ValueError(f"{owner}: mode must be 'RGB' or 'L', got {mode!r}")
    data = bytes(data) if not isinstance(data, (bytes, bytearray, memoryview)) else data
    if data[:3] == JPEG_MAGIC and decoder != "pillow":
        simplejpeg = simplejpeg_module()
        if simplejpeg is None and decoder == "simplejpeg":
            raise ImportError(f"{owner}: decoder='simplejpeg' but simplejpeg is not installed: "
                              f'pip install "xpnet[images]"')
        if simplejpeg is not None:
            pixels = _decode_simplejpeg(simplejpeg, data, name, mode, size, min_size, owner)
            if pixels is not None:
                return pixels
    return _decode_pillow(data, name, mode, size, min_size, owner)


def _decode_simplejpeg(simplejpeg, data, name, mode, size, min_size, owner):
    """The decoded image, or None to let Pillow try (a header or colour space simplejpeg does not
    handle, or a file it cannot decode)."""
    try:
        height, width, colour, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if colour not in _SIMPLEJPEG_COLOURS:
        return None  # CMYK / YCCK: Pillow converts them properly
    check_pixels(name, len(data), height, width, owner)
    k = reduction_factor((height, width), _target((height, width), size, min_size))
    options = {"min_height": -(-height // k), "min_width": -(-width // k)} if k > 1 else {}
    try:
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB" if mode == "RGB" else "GRAY", **options)
    except ValueError:
        return None
    if size is not None and pixels.shape[:2] != tuple(size):
        pixels = resize_hwc(pixels, size)
    return pixels


def _decode_pillow(data, name, mode, size, min_size, owner):
    image = require_pillow()
    nbytes = len(data)
    try:
        with image.open(io.BytesIO(data), formats=PILLOW_FORMATS) as picture:
            width, height = picture.size
            check_pixels(name, nbytes, height, width, owner)
            if picture.format == "JPEG":
                k = reduction_factor((height, width), _target((height, width), size, min_size))
                if k > 1:  # Pillow picks the same power-of-two scale from this request
                    picture.draft(mode, (width // k, height // k))
            picture = picture.convert(mode)
            if size is not None and picture.size != (size[1], size[0]):
                picture = picture.resize((size[1], size[0]), _bilinear(image))
            pixels = np.asarray(picture, dtype=np.uint8)
    except DecompressionBombRefused:
        raise
    except (image.DecompressionBombError, image.DecompressionBombWarning) as exc:
        raise DecompressionBombRefused(f"{owner}: {name} ({nbytes} bytes) is refused as a decompression "
                                       f"bomb: {exc}") from None
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow's decoders raise all three
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        raise ValueError(f"{owner}: cannot decode {name} ({nbytes} bytes): {type(exc).__name__}: {exc}") from None
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def decode_file(path, mode="RGB", size=None, min_size=None, decoder="auto", owner="image"):
    """``decode_image`` of the regular file ``path`` (read whole, refused unread above
    ``MAX_IMAGE_FILE_BYTES``); a ``MemoryError`` names the file."""
    with memory_guard(path, "decoding an image"):
        data = read_bounded(path, "an image", MAX_IMAGE_FILE_BYTES, "MAX_IMAGE_FILE_BYTES")
        return decode_image(data, path, mode=mode, size=size, min_size=min_size, decoder=decoder, owner=owner)


# ----------------------------------------------------------------------------------- resizing
def _bilinear(image_module):
    # Pillow >= 9.1 names filters in Image.Resampling; older ones only as module constants
    return getattr(image_module, "Resampling", image_module).BILINEAR


def resize_hwc(img, size, use_pillow=None):
    """uint8 (H, W, C) resized to ``size`` = (height, width), bilinear with antialiasing.

    Pillow's resampling when installed (``use_pillow=None``), else (or with ``use_pillow=False``)
    the NumPy version of the same filter."""
    height, width = int(size[0]), int(size[1])
    if img.shape[0] == height and img.shape[1] == width:
        return img
    image = pillow_module() if use_pillow is not False else None
    if image is None:
        if use_pillow:
            require_pillow()
        return _resize_numpy(img, height, width)
    channels = img.shape[2]
    if channels in (1, 3, 4):
        source = img[:, :, 0] if channels == 1 else img
        picture = image.fromarray(np.ascontiguousarray(source))
        out = np.asarray(picture.resize((width, height), _bilinear(image)), dtype=np.uint8)
        return out[:, :, None] if out.ndim == 2 else out
    planes = [np.asarray(image.fromarray(np.ascontiguousarray(img[:, :, c])).resize((width, height),
                                                                                    _bilinear(image)))
              for c in range(channels)]
    return np.stack(planes, axis=2)


def _triangle_taps(in_size, out_size):
    """(indices, weights), each (out_size, taps): output pixel i is the sum over t of
    ``weights[i, t] * input[indices[i, t]]``. The triangle (bilinear) filter is centred on the
    output pixel's centre mapped into the input, and widened by the scale when shrinking."""
    scale = in_size / out_size
    support = max(scale, 1.0)
    taps = int(math.ceil(support)) * 2 + 1
    centres = (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    first = np.floor(centres - support + 0.5).astype(np.int64)
    indices = first[:, None] + np.arange(taps)[None, :]
    weights = np.maximum(0.0, 1.0 - np.abs((indices + 0.5 - centres[:, None]) / support))
    weights[(indices < 0) | (indices >= in_size)] = 0.0
    weights /= weights.sum(axis=1, keepdims=True)
    return np.clip(indices, 0, in_size - 1), weights.astype(np.float32)


def _resample_axis(values, out_size, axis):
    indices, weights = _triangle_taps(values.shape[axis], out_size)
    shape = [1] * values.ndim
    shape[axis] = out_size
    out = None
    for t in range(indices.shape[1]):  # one tap at a time: memory stays at one output's size
        term = np.take(values, indices[:, t], axis=axis) * weights[:, t].reshape(shape)
        out = term if out is None else out + term
    return out


def _resize_numpy(img, height, width):
    # as Pillow: the horizontal pass first, rounded to uint8, then the vertical one
    values = img
    if img.shape[1] != width:
        values = _to_uint8(_resample_axis(values.astype(np.float32), width, 1))
    if img.shape[0] != height:
        values = _to_uint8(_resample_axis(values.astype(np.float32), height, 0))
    return values


def _to_uint8(values):
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)
