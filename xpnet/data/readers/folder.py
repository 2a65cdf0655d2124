"""Image folders: one subfolder per class (ImageNet style), decoded by ``xpnet.data.decode``
(JPEGs through simplejpeg when installed, everything else through Pillow).

Host-side module: it imports NumPy (and Pillow, an optional extra: ``pip install "xpnet[images]"``,
which also installs simplejpeg).

    root/
      cat/  001.jpg  002.png ...
      dog/  a.jpg ...

Classes are the subfolder names in sorted order (label 0 is the first); files are found
recursively inside each class folder. Every image is converted to RGB (or the given mode) and
resized to ``size`` (e.g. 224 or 227 for the ImageNet nets of the notes), passed through the
per-sample ``transform`` if one is given (``xpnet.data.augment``), then returned as uint8
(C, H, W). ``ImageFolder`` decodes lazily, one image per ``__getitem__``/``sample``, so a large
folder is never held in memory at once; ``load_image_folder`` decodes everything into arrays. A
JPEG whose target size is at most half its stored size is decoded at a reduced scale (see
``xpnet.data.decode``).

The folder is read as hostile input: every class needs images and there must be two classes at
least; an entry with an image name that is not a regular file (a FIFO ``pipe.png``, a device) is
refused when the folder is scanned; only the formats of ``IMAGE_EXTENSIONS`` are decoded (and only
by simplejpeg or Pillow's ``PILLOW_FORMATS`` decoders, whatever the content claims); an image of
more pixels than Pillow's ``MAX_IMAGE_PIXELS`` (its decompression-bomb bound, which Pillow only
warns about up to twice that) is refused from its header, before decoding, by either decoder; a
file above ``MAX_IMAGE_FILE_BYTES`` is refused unread; every error names the file.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from ..augment import to_chw
from ..dataset import Dataset, Subset
from ..decode import (  # noqa: F401  (DecompressionBombRefused, PILLOW_FORMATS: importable here as before)
    DECODERS,
    MAX_IMAGE_FILE_BYTES,
    PILLOW_FORMATS,
    DecompressionBombRefused,
    decode_file,
)
from ...safe_io import regular_size

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
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
    transform   a per-sample augmentation ``t(img, rng)`` on the uint8 (H, W, C) image (after the
                resize to ``size``, if any), e.g. ``augment.Compose([augment.RandomResizedCrop(224),
                augment.RandomHorizontalFlip()])``; its result is converted to (C, H, W)
    decoder     ``'auto'`` (simplejpeg for JPEGs when installed), ``'simplejpeg'`` or ``'pillow'``

    Randomness: ``sample(index, rng)`` draws the transform's randomness from ``rng`` (the
    DataLoader passes one generator per sample, from ``SeedSequence([seed, epoch, index])``);
    ``dataset[index]`` is deterministic: without a transform the decoded image, with one the
    transform driven by a fixed generator seeded by the index, ``np.random.default_rng(index)``
    (the same augmented image at every call).
    """

    def __init__(self, root, size=None, mode="RGB", classes=None, extensions=IMAGE_EXTENSIONS, transform=None,
                 decoder="auto"):
        require_pillow()  # a clear ImportError now rather than at the first image
        if transform is not None and not callable(transform):
            raise TypeError(f"ImageFolder: transform must be callable as transform(img, rng), got {transform!r}")
        if decoder not in DECODERS:
            raise ValueError(f"ImageFolder: decoder must be one of {DECODERS}, got {decoder!r}")
        self.transform = transform
        self.decoder = decoder
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

    def decode(self, index) -> np.ndarray:
        """Image ``index`` decoded, converted and resized to ``size``: uint8 (H, W, C), before any
        transform. With no ``size``, a JPEG may be decoded at a reduced scale that still covers
        what the transform's ``decode_hint`` asks for (``augment.Resize`` first gives one)."""
        hint = getattr(self.transform, "decode_hint", None) if self.size is None else None
        return decode_file(self.paths[index], mode=self.mode, size=self.size, min_size=hint, decoder=self.decoder,
                           owner="ImageFolder")

    def load(self, index) -> np.ndarray:
        """Image ``index`` decoded, converted and resized, without the transform: uint8 (C, H, W).

        A file that does not decode is a ValueError naming it; an ``OSError`` with an errno (disk,
        permissions) is not a data problem and passes through; a ``MemoryError`` names the file.
        """
        return to_chw(self.decode(index))

    def sample(self, index, rng):
        """``(image uint8 (C, H, W), label)`` of sample ``index``, the transform drawing from the
        ``np.random.Generator`` ``rng`` (the DataLoader calls this when a dataset has it)."""
        index = self._index(index)
        if self.transform is None:
            return self.load(index), self.labels[index]
        return to_chw(self.transform(self.decode(index), rng), self.transform), self.labels[index]

    def _index(self, index):
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"ImageFolder: index {index} out of range for {len(self)} images")
        return index % len(self)

    def __getitem__(self, index):
        index = self._index(index)
        if self.transform is None:
            return self.load(index), self.labels[index]
        return self.sample(index, np.random.default_rng(index))

    def __repr__(self):
        return f"ImageFolder({str(self.root)!r}, {len(self)} images, {len(self.classes)} classes, size={self.size})"


class ImageFolderSubset(Subset):
    """A ``Subset`` of an ``ImageFolder`` that keeps its ``sample(index, rng)``, so a DataLoader
    still augments each sample with its own generator (``load_dataset('folder:DIR')``'s split)."""

    def sample(self, index, rng):
        return self.dataset.sample(int(self.indices[index]), rng)


def load_image_folder(root, size, mode="RGB", classes=None):
    """Decode a whole class-per-folder tree: ``(images uint8 (N, C, H, W), labels int64 (N,), classes)``."""
    folder = ImageFolder(root, size=size, mode=mode, classes=classes)
    images, labels = folder.get_batch(np.arange(len(folder)))
    return images, labels, folder.classes
