"""Image folders: one subfolder per class (ImageNet style), decoded with Pillow.

Host-side module: it imports NumPy (and Pillow, an optional extra: ``pip install "xpnet[images]"``).

    root/
      cat/  001.jpg  002.png ...
      dog/  a.jpg ...

Classes are the subfolder names in sorted order (label 0 is the first); files are found
recursively inside each class folder. Every image is converted to RGB (or the given mode) and
resized to ``size`` (e.g. 224 or 227 for the ImageNet nets of the notes), then returned as uint8
(C, H, W). ``ImageFolder`` decodes lazily, one image per ``__getitem__``, so a large folder is never
held in memory at once; ``load_image_folder`` decodes everything into arrays.

The folder is read as hostile input: every class needs images and there must be two classes at
least; an entry with an image name that is not a regular file (a FIFO ``pipe.png``, a device) is
refused when the folder is scanned; only the formats of ``IMAGE_EXTENSIONS`` are decoded; an image
of more pixels than Pillow's ``MAX_IMAGE_PIXELS`` (its decompression-bomb bound, which Pillow only
warns about up to twice that) is refused; every error names the file.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from ..dataset import Dataset
from ...safe_io import memory_guard, open_regular, regular_size

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
# the Pillow decoders for those extensions: a file is decoded only by one of these, whatever its
# content claims (no PostScript through Ghostscript, no exotic decoder for a hostile file)
PILLOW_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "PPM", "TIFF", "WEBP")
# the most pixels a resized image may have: 4096 x 4096, 48 MiB as RGB uint8, far above the
# 224/227 inputs of the ImageNet nets; a larger ``size`` would make every small file cost that much
MAX_SIZE_PIXELS = 4096 * 4096
PILLOW_HINT = 'reading image folders needs Pillow, an optional extra: pip install "xpnet[images]"'


def require_pillow():
    """The ``PIL.Image`` module, or an ImportError that says how to install it."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError(f"{PILLOW_HINT} ({exc})") from None
    return Image


def size_pair(size, argument="ImageFolder: size"):
    """``(height, width)`` from an int or a pair of ints, each at least 1 and together at most
    ``MAX_SIZE_PIXELS``; None stays None. ``argument`` names the argument in the error."""
    if size is None:
        return None
    pair = (size, size) if isinstance(size, (int, np.integer)) else size
    try:
        height, width = pair
    except (TypeError, ValueError):
        height = width = None
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (height, width)):
        raise ValueError(f"{argument} must be a positive int or a pair of positive ints (height, width), "
                         f"got {size!r}")
    if height < 1 or width < 1 or height * width > MAX_SIZE_PIXELS:
        raise ValueError(f"invalid {argument} {size!r}: height and width must be at least 1 and height * width "
                         f"at most {MAX_SIZE_PIXELS} pixels (MAX_SIZE_PIXELS)")
    return int(height), int(width)


def find_classes(root):
    """Sorted class-folder names under ``root`` (hidden folders skipped)."""
    return sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))


def find_images(folder, extensions=IMAGE_EXTENSIONS):
    """Image files under ``folder``, recursively, in sorted order (each folder's files, then its
    subfolders; hidden entries skipped, symbolic links to folders not followed). An entry with an
    image name that is not a regular file is a ``NotARegularFileError`` naming it."""
    found = []
    pending = [pathlib.Path(folder)]
    while pending:
        current = pending.pop()
        with os.scandir(current) as listing:
            entries = sorted((e for e in listing if not e.name.startswith(".")), key=lambda e: e.name)
        subfolders = []
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                subfolders.append(current / entry.name)
            elif entry.name.lower().endswith(extensions):
                if not entry.is_file():
                    regular_size(current / entry.name, "an image")  # raises, saying what it is instead
                found.append(current / entry.name)
        pending.extend(reversed(subfolders))
    return found


class ImageFolder(Dataset):
    """Samples ``(image uint8 (C, H, W), label)`` from a folder with one subfolder per class.

    root        the folder
    size        int or (height, width) to resize every image to; None keeps the files' sizes
                (then they must all match to form batches)
    mode        Pillow mode: ``'RGB'`` (3 channels) or ``'L'`` (1 channel)
    classes     the class names to use, in label order (default: all subfolders, sorted); a
                validation folder passes the training folder's list so labels agree
    """

    def __init__(self, root, size=None, mode="RGB", classes=None, extensions=IMAGE_EXTENSIONS):
        self._image = require_pillow()
        self.root = pathlib.Path(os.path.expanduser(str(root)))
        if not self.root.is_dir():
            raise FileNotFoundError(f"ImageFolder: {self.root} is not a directory (expected one subfolder per class)")
        if mode not in ("RGB", "L"):
            raise ValueError(f"ImageFolder: mode must be 'RGB' or 'L', got {mode!r}")
        self.size = size_pair(size)
        self.mode = mode
        present = find_classes(self.root)
        self.classes = list(classes) if classes is not None else present
        if len(self.classes) < 2:
            raise ValueError(f"ImageFolder: {self.root} has {len(self.classes)} class folder(s) {self.classes}; a "
                             f"classifier needs at least two classes, one subfolder each")
        unknown = sorted(set(present) - set(self.classes))
        if unknown:
            raise ValueError(f"ImageFolder: {self.root} has class folders {unknown} that are not among the "
                             f"{len(self.classes)} given classes")
        paths, labels = [], []
        for label, name in enumerate(self.classes):
            if name not in present:
                continue
            images = find_images(self.root / name, tuple(extensions))
            if not images:
                raise ValueError(f"ImageFolder: class folder {self.root / name} holds no images "
                                 f"({', '.join(extensions)}); every class folder needs at least one")
            paths.extend(images)
            labels.extend([label] * len(images))
        if not paths:
            raise ValueError(f"ImageFolder: no images ({', '.join(extensions)}) in class subfolders of {self.root}; "
                             f"expected {self.root}/<class>/<image>")
        self.paths = paths
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index) -> np.ndarray:
        """Image ``index`` decoded, converted and resized: uint8 (C, H, W).

        A file that does not decode is a ValueError naming it; an ``OSError`` with an errno (disk,
        permissions) is not a data problem and passes through; a ``MemoryError`` names the file.
        """
        path = self.paths[index]
        image = self._image
        with open_regular(path, "an image") as (handle, size), memory_guard(path, "decoding an image"):
            try:
                with image.open(handle, formats=PILLOW_FORMATS) as picture:
                    _check_pixels(path, size, picture.size[0] * picture.size[1], image.MAX_IMAGE_PIXELS)
                    picture = picture.convert(self.mode)
                    if self.size is not None and picture.size != (self.size[1], self.size[0]):
                        picture = picture.resize((self.size[1], self.size[0]), _bilinear(image))
                    pixels = np.asarray(picture, dtype=np.uint8)
            except DecompressionBombRefused:
                raise
            except (image.DecompressionBombError, image.DecompressionBombWarning) as exc:
                raise DecompressionBombRefused(f"ImageFolder: {path} ({size} bytes) is refused as a decompression "
                                               f"bomb: {exc}") from None
            except (OSError, ValueError, SyntaxError) as exc:  # Pillow's decoders raise all three
                if isinstance(exc, OSError) and exc.errno is not None:
                    raise
                raise ValueError(f"ImageFolder: cannot decode {path} ({size} bytes): "
                                 f"{type(exc).__name__}: {exc}") from None
        if pixels.ndim == 2:
            return pixels[None, :, :]
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))

    def __getitem__(self, index):
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"ImageFolder: index {index} out of range for {len(self)} images")
        return self.load(index), self.labels[index]

    def __repr__(self):
        return f"ImageFolder({str(self.root)!r}, {len(self)} images, {len(self.classes)} classes, size={self.size})"


def load_image_folder(root, size, mode="RGB", classes=None):
    """Decode a whole class-per-folder tree: ``(images uint8 (N, C, H, W), labels int64 (N,), classes)``."""
    folder = ImageFolder(root, size=size, mode=mode, classes=classes)
    images, labels = folder.get_batch(np.arange(len(folder)))
    return images, labels, folder.classes


class DecompressionBombRefused(ValueError):
    """An image of more pixels than Pillow's ``MAX_IMAGE_PIXELS``."""


def _check_pixels(path, size, pixels, limit):
    """Pillow only warns between ``MAX_IMAGE_PIXELS`` and twice that; here the bound is an error."""
    if limit is not None and pixels > limit:
        raise DecompressionBombRefused(f"ImageFolder: {path} ({size} bytes) is refused as a decompression bomb: "
                                       f"{pixels} pixels, more than the {limit} accepted (PIL.Image.MAX_IMAGE_PIXELS)")


def _bilinear(image_module):
    # Pillow >= 9.1 names filters in Image.Resampling; older ones only as module constants
    return getattr(image_module, "Resampling", image_module).BILINEAR
