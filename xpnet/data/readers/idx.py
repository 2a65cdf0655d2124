"""MNIST and Fashion-MNIST: the IDX file format, raw or gzip-compressed.

Host-side module: it imports NumPy and returns host arrays.

An IDX file is a 4-byte magic number ``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian
uint32 dimension sizes, then the values, big-endian, in C order. Type codes: 0x08 uint8,
0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64.

Files are read as hostile input: the header is parsed first, and the byte count it announces is
checked (against ``IDX_MAX_BODY_BYTES``, the file's size, and for ``.gz`` the most its compressed
size can expand to) before the body is read. A ``.gz`` file is decompressed as a stream, exactly
the announced bytes and one more to prove the stream ends there, so a gzip bomb costs no more
than the header says.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import pathlib
import zlib

import numpy as np

from .checks import check_labels
from ...safe_io import memory_guard, open_regular

IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# 1 GiB: about twice the largest public IDX file (EMNIST ByClass training images, 547 MB); a header
# announcing more is corrupt or hostile, and believing it would cost that much memory
IDX_MAX_BODY_BYTES = 1 << 30
# the format allows 255 dimensions; real files have 1 to 4, and NumPy takes at most 32 (NumPy 1)
IDX_MAX_NDIM = 16
# deflate expands at most 1,032-fold (a 258-byte match coded in 2 bits), so a .gz file of S bytes
# cannot decompress to more than 1032 * S bytes: a header announcing more is refused unread
DEFLATE_MAX_RATIO = 1032
_CHUNK = 1 << 20  # bytes decompressed or read per step

# standard names: LeCun's site and Fashion-MNIST (with '-'), some mirrors and unpacked archives
# (with '.'), each raw or gzipped
MNIST_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MNIST_CLASS_COUNT = 10
# torchvision keeps the files in <root>/MNIST/raw or <root>/FashionMNIST/raw
SEARCH_SUBDIRS = ("", "raw", "MNIST/raw", "FashionMNIST/raw", "mnist", "fashion-mnist", "fashion")


class _Source:
    """A byte stream and how errors name it (``label``, read when an error is raised: a gzip
    stream's label changes once it is found cut short); a short read means its end."""

    cut_short = False

    def __init__(self, stream, label):
        self.stream = stream
        self._label = label

    @property
    def label(self):
        return self._label

    def read(self, count):
        return self.stream.read(count)

    def readinto(self, view):
        return self.stream.readinto(view)


class _GzipSource(_Source):
    """The decompressed stream of a .gz file, read as far as asked and no further. A stream cut
    short reads as its end (``cut_short`` turns True); one that is not gzip is a ValueError."""

    def __init__(self, stream, path, size):
        super().__init__(stream, None)
        self.path, self.size = path, size

    @property
    def label(self):
        if self.cut_short:
            return f"{self.path} (gzip stream cut short; {self.size} bytes on disk)"
        return f"{self.path} (decompressed)"

    def _guarded(self, call, argument, at_end):
        try:
            return call(argument)
        except EOFError:
            self.cut_short = True
            return at_end
        except (gzip.BadGzipFile, zlib.error) as exc:
            raise ValueError(f"{self.path}: corrupt gzip file ({self.size} bytes on disk): {exc}") from None

    def read(self, count):
        return self._guarded(self.stream.read, count, b"")

    def readinto(self, view):
        return self._guarded(self.stream.readinto, view, 0)


def _read_header(source):
    """``(dtype, shape, header bytes)`` from the start of an IDX stream."""
    magic = source.read(4)
    if len(magic) < 4:
        raise ValueError(f"{source.label}: not an IDX file: expected at least a 4-byte header, found {len(magic)} bytes")
    zero_a, zero_b, type_code, ndim = magic
    if zero_a != 0 or zero_b != 0 or type_code not in IDX_TYPES or ndim == 0:
        raise ValueError(f"{source.label}: not an IDX file: bad magic number 0x{magic.hex()} (expected 0x0000TTDD with "
                         f"type TT in {{{', '.join(f'{t:02x}' for t in IDX_TYPES)}}} and DD dimensions)")
    if ndim > IDX_MAX_NDIM:
        raise ValueError(f"{source.label}: IDX header announces {ndim} dimensions; accepted 1..{IDX_MAX_NDIM}")
    header = 4 + 4 * ndim
    dims = source.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise ValueError(f"{source.label}: truncated IDX header: expected {header} bytes, found {4 + len(dims)} bytes")
    shape = tuple(int.from_bytes(dims[i:i + 4], "big") for i in range(0, 4 * ndim, 4))
    return IDX_TYPES[type_code], shape, header


def _read_idx_stream(source, total=None, limit=None, limit_reason=""):
    """The array an IDX stream holds. ``total``: the stream's known length (checked against the
    header before the body is read); ``limit``: the most bytes it can hold (with ``limit_reason``)."""
    dtype, shape, header = _read_header(source)
    body = math.prod(shape) * dtype.itemsize
    expected = header + body
    described = f"shape {shape} of {dtype.name}"
    span = math.prod(max(d, 1) for d in shape) * dtype.itemsize  # an empty array may not hide absurd dimensions
    if span > IDX_MAX_BODY_BYTES:
        size = f"{body} bytes" if body == span else f"{body} bytes, with dimensions spanning {span}"
        raise ValueError(f"{source.label}: IDX header announces {described} ({size}), more than the "
                         f"{IDX_MAX_BODY_BYTES} bytes accepted (IDX_MAX_BODY_BYTES)")
    if limit is not None and expected > limit:
        raise ValueError(f"{source.label}: corrupt IDX file: {described} needs {expected} bytes, but {limit_reason} "
                         f"holds at most {limit} bytes")
    if total is not None and total != expected:
        kind = "truncated" if total < expected else "corrupt (extra bytes)"
        raise ValueError(f"{source.label}: {kind} IDX file: {described} needs {expected} bytes, found {total} bytes")
    values = np.empty(shape, dtype=dtype)
    view = memoryview(values.reshape(-1).view(np.uint8))
    got = 0
    while got < body:
        count = source.readinto(view[got:got + _CHUNK])
        if not count:
            raise ValueError(f"{source.label}: truncated IDX file: {described} needs {expected} bytes, "
                             f"found {header + got} bytes")
        got += count
    if source.read(1):
        raise ValueError(f"{source.label}: corrupt (extra bytes) IDX file: {described} needs {expected} bytes, found "
                         f"more: data goes on after them")
    if source.cut_short:
        raise ValueError(f"{source.label}: truncated gzip file: the stream ends without its trailer")
    return values.astype(dtype.newbyteorder("="), copy=False)


def parse_idx(content: bytes, name="IDX data") -> np.ndarray:
    """An IDX byte string as a native-endian NumPy array; ValueError on a bad magic number or size."""
    return _read_idx_stream(_Source(io.BytesIO(content), str(name)), total=len(content))


def read_idx(path) -> np.ndarray:
    """Read one IDX file (``.gz`` is decompressed); the array keeps the file's shape and type.

    Only a regular file is read; the header is checked before the body (see the module docstring).
    """
    path = pathlib.Path(path)
    with open_regular(path, "an IDX file") as (handle, size), memory_guard(path, "reading an IDX file"):
        if path.suffix != ".gz":
            return _read_idx_stream(_Source(handle, str(path)), total=size)
        with gzip.GzipFile(fileobj=handle, mode="rb") as stream:
            return _read_idx_stream(_GzipSource(stream, path, size), limit=DEFLATE_MAX_RATIO * size,
                                    limit_reason=f"a gzip file of {size} bytes")


def find_mnist_file(directory, stem) -> pathlib.Path | None:
    """The first existing entry for ``stem`` under the usual layouts, raw preferred over ``.gz``
    (an entry that is not a regular file is found too, so that reading it says what it is)."""
    directory = pathlib.Path(directory)
    variants = (stem, stem.replace("-idx", ".idx"))
    for sub in SEARCH_SUBDIRS:
        for variant in variants:
            for suffix in ("", ".gz"):
                candidate = directory / sub / (variant + suffix)
                if candidate.exists():
                    return candidate
    return None


def load_mnist(directory, train: bool = True):
    """``(images, labels)`` of MNIST or Fashion-MNIST from a directory holding the standard files.

    images  uint8 (N, 1, rows, cols), labels int64 (N,) in 0..9. ``train=False`` reads the t10k
    (test) files. Looks in ``directory`` and in its ``raw``, ``MNIST/raw`` and
    ``FashionMNIST/raw`` folders for ``train-images-idx3-ubyte`` (also
    ``train-images.idx3-ubyte``), raw or ``.gz``, and the rest.
    """
    directory = pathlib.Path(os.path.expanduser(str(directory)))
    if not directory.is_dir():
        raise FileNotFoundError(f"load_mnist: {directory} is not a directory")
    found = []
    for stem in MNIST_FILES[bool(train)]:
        path = find_mnist_file(directory, stem)
        if path is None:
            raise FileNotFoundError(
                f"load_mnist: no {stem} (or {stem}.gz) in {directory} or its {', '.join(s for s in SEARCH_SUBDIRS if s)} "
                f"folders; download the four MNIST/Fashion-MNIST files into it")
        found.append(path)
    images_path, labels_path = found
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3:
        raise ValueError(f"{images_path}: expected images of shape (N, rows, cols), found shape {images.shape}")
    if labels.ndim != 1:
        raise ValueError(f"{labels_path}: expected labels of shape (N,), found shape {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(f"load_mnist: {images_path} has {len(images)} images but {labels_path} has "
                         f"{len(labels)} labels")
    if images.dtype != np.uint8:
        raise ValueError(f"{images_path}: expected uint8 pixels, found {images.dtype}")
    return images[:, None, :, :], check_labels(labels, labels_path, MNIST_CLASS_COUNT)
