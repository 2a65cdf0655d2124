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
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from ..dataset import Dataset

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
PILLOW_HINT = 'reading image folders needs Pillow, an optional extra: pip install "xpnet[images]"'


def require_pillow():
    """The ``PIL.Image`` module, or an ImportError that says how to install it."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError(f"{PILLOW_HINT} ({exc})") from None
    return Image


def _size_pair(size):
    if size is None:
        return None
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    try:
        height, width = size
    except (TypeError, ValueError):
        raise TypeError(f"ImageFolder: size must be an int or a pair (height, width), got {size!r}") from None
    return int(height), int(width)


def find_classes(root):
    """Sorted class-folder names under ``root`` (hidden folders skipped)."""
    return sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))


def find_images(folder, extensions=IMAGE_EXTENSIONS):
    """Image files under ``folder``, recursively, in sorted order."""
    found = []
    for current, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and name.lower().endswith(extensions):
                found.append(pathlib.Path(current) / name)
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
        self.size = _size_pair(size)
        self.mode = mode
        present = find_classes(self.root)
        self.classes = list(classes) if classes is not None else present
        unknown = sorted(set(present) - set(self.classes))
        if unknown:
            raise ValueError(f"ImageFolder: {self.root} has class folders {unknown} that are not among the "
                             f"{len(self.classes)} given classes")
        paths, labels = [], []
        for label, name in enumerate(self.classes):
            if name not in present:
                continue
            images = find_images(self.root / name, tuple(extensions))
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
        """Image ``index`` decoded, converted and resized: uint8 (C, H, W)."""
        path = self.paths[index]
        try:
            with self._image.open(path) as picture:
                picture = picture.convert(self.mode)
                if self.size is not None and picture.size != (self.size[1], self.size[0]):
                    picture = picture.resize((self.size[1], self.size[0]), _bilinear(self._image))
                pixels = np.asarray(picture, dtype=np.uint8)
        except (OSError, ValueError, SyntaxError) as exc:  # Pillow's decoders raise all three
            raise ValueError(f"ImageFolder: cannot decode {path} ({path.stat().st_size} bytes): "
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


def _bilinear(image_module):
    # Pillow >= 9.1 names filters in Image.Resampling; older ones only as module constants
    return getattr(image_module, "Resampling", image_module).BILINEAR
