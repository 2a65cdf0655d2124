"""MNIST and Fashion-MNIST: the IDX file format, raw or gzip-compressed.

Host-side module: it imports NumPy and returns host arrays.

An IDX file is a 4-byte magic number ``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian
uint32 dimension sizes, then the values, big-endian, in C order. Type codes: 0x08 uint8,
0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64.
"""

from __future__ import annotations

import os
import pathlib
import zlib

import numpy as np

IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# standard names: LeCun's site and Fashion-MNIST (with '-'), some mirrors and unpacked archives
# (with '.'), each raw or gzipped
MNIST_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# torchvision keeps the files in <root>/MNIST/raw or <root>/FashionMNIST/raw
SEARCH_SUBDIRS = ("", "raw", "MNIST/raw", "FashionMNIST/raw", "mnist", "fashion-mnist", "fashion")


def read_bytes(path):
    """``(content, complete)``: the file's bytes, decompressed for ``.gz``; ``complete`` is False
    when a gzip stream stops before its end (the bytes decoded so far are returned, so the caller
    can say how much is missing). A gzip stream that is not gzip at all is a ValueError."""
    path = pathlib.Path(path)
    raw = path.read_bytes()
    if path.suffix != ".gz":
        return raw, True
    pieces = []
    rest = raw
    while rest:
        stream = zlib.decompressobj(wbits=31)  # 31: expect a gzip header and trailer
        try:
            pieces.append(stream.decompress(rest))
        except zlib.error as exc:
            raise ValueError(f"{path}: corrupt gzip file ({len(raw)} bytes on disk): {exc}") from None
        if not stream.eof:
            return b"".join(pieces), False
        rest = stream.unused_data
        if not rest.strip(b"\0"):  # some writers pad the file with zeros after the last stream
            break
    return b"".join(pieces), True


def parse_idx(content: bytes, name="IDX data") -> np.ndarray:
    """An IDX byte string as a native-endian NumPy array; ValueError on a bad magic number or size."""
    if len(content) < 4:
        raise ValueError(f"{name}: not an IDX file: expected at least a 4-byte header, found {len(content)} bytes")
    zero_a, zero_b, type_code, ndim = content[:4]
    if zero_a != 0 or zero_b != 0 or type_code not in IDX_TYPES or ndim == 0:
        raise ValueError(f"{name}: not an IDX file: bad magic number 0x{content[:4].hex()} (expected "
                         f"0x0000TTDD with type TT in {{{', '.join(f'{t:02x}' for t in IDX_TYPES)}}} and DD dimensions)")
    header = 4 + 4 * ndim
    if len(content) < header:
        raise ValueError(f"{name}: truncated IDX header: expected {header} bytes, found {len(content)} bytes")
    shape = tuple(int(d) for d in np.frombuffer(content, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[type_code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(content) != expected:
        kind = "truncated" if len(content) < expected else "corrupt (extra bytes)"
        raise ValueError(f"{name}: {kind} IDX file: shape {shape} of {dtype.name} needs {expected} bytes, "
                         f"found {len(content)} bytes")
    values = np.frombuffer(content, dtype=dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path) -> np.ndarray:
    """Read one IDX file (``.gz`` is decompressed); the array keeps the file's shape and type."""
    path = pathlib.Path(path)
    content, complete = read_bytes(path)
    label = str(path)
    if path.suffix == ".gz":
        label += " (decompressed)" if complete else f" (gzip stream cut short; {path.stat().st_size} bytes on disk)"
    array = parse_idx(content, label)
    if not complete:
        raise ValueError(f"{label}: truncated gzip file: the stream ends without its trailer")
    return array


def find_mnist_file(directory, stem) -> pathlib.Path | None:
    """The first existing file for ``stem`` under the usual layouts, raw preferred over ``.gz``."""
    directory = pathlib.Path(directory)
    variants = (stem, stem.replace("-idx", ".idx"))
    for sub in SEARCH_SUBDIRS:
        for variant in variants:
            for suffix in ("", ".gz"):
                candidate = directory / sub / (variant + suffix)
                if candidate.is_file():
                    return candidate
    return None


def load_mnist(directory, train: bool = True):
    """``(images, labels)`` of MNIST or Fashion-MNIST from a directory holding the standard files.

    images  uint8 (N, 1, 28, 28), labels int64 (N,). ``train=False`` reads the t10k (test) files.
    Looks in ``directory`` and in its ``raw``, ``MNIST/raw`` and ``FashionMNIST/raw`` folders for
    ``train-images-idx3-ubyte`` (also ``train-images.idx3-ubyte``), raw or ``.gz``, and the rest.
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
    if len(labels) and labels.max() > 9:
        raise ValueError(f"{labels_path}: corrupt labels: expected digits/classes 0..9, found values up to "
                         f"{int(labels.max())}")
    return images[:, None, :, :], labels.astype(np.int64)
