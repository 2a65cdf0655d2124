"""CIFAR-10 and CIFAR-100, binary and python versions.

Host-side module: it imports NumPy and returns host arrays: images uint8 (N, 3, 32, 32) (the
files' own channel-first layout), labels int64 (N,).

Binary version: fixed-size records, any whole number of them per file. CIFAR-10: 1 label byte +
3,072 pixel bytes (1,024 red, 1,024 green, 1,024 blue, each 32x32 row-major) = 3,073 bytes;
CIFAR-100: a coarse and a fine label byte + 3,072 = 3,074 bytes.

Python version: pickled dicts with bytes keys (``b'data'``: uint8 (N, 3072), ``b'labels'`` or
``b'fine_labels'``/``b'coarse_labels'``). They are read with ``RestrictedUnpickler``, which
resolves only the handful of NumPy names an array needs and refuses everything else, so a
doctored file cannot run code, and bounds what a pickle may build (``safe_pickle``).

Every file is read as hostile input: only regular files, sizes checked before reading (at most
``MAX_IMAGES_PER_FILE`` images a file), labels checked against the class count.
"""

from __future__ import annotations

import io
import os
import pathlib
import pickle

import numpy as np

from .checks import check_labels
from ...safe_io import check_size, memory_guard, open_regular, read_bounded
from .safe_pickle import (  # noqa: F401 -- RestrictedUnpickler and UnsafePickleError are re-exported
    MAX_IMAGES_PER_FILE,
    MAX_PICKLE_FILE_BYTES,
    RestrictedUnpickler,
    UnsafePickleError,
)

PIXELS = 3 * 32 * 32
# label-name files: at most 100 names of a few dozen bytes; anything near this bound is not one
MAX_NAMES_FILE_BYTES = 1 << 20

CIFAR10_BIN_DIRS = ("", "cifar-10-batches-bin")
CIFAR10_PY_DIRS = ("", "cifar-10-batches-py")
CIFAR100_BIN_DIRS = ("", "cifar-100-binary")
CIFAR100_PY_DIRS = ("", "cifar-100-python")


# -- binary version ---------------------------------------------------------------------------

def read_cifar_binary(path, label_bytes: int = 1):
    """``(images, labels)`` from one binary-version file of records ``label_bytes + 3072`` long.

    ``labels`` has shape (N,) for CIFAR-10 (``label_bytes=1``) and (N, 2) = (coarse, fine) for
    CIFAR-100 (``label_bytes=2``). A size that is not a positive whole number of records is a
    ValueError naming the file, the record size and the sizes expected and found.
    """
    path = pathlib.Path(path)
    if label_bytes not in (1, 2):
        raise ValueError(f"read_cifar_binary: label_bytes must be 1 (CIFAR-10) or 2 (CIFAR-100), got {label_bytes}")
    record = label_bytes + PIXELS
    with open_regular(path, "a CIFAR binary file") as (handle, size), memory_guard(path, "reading a CIFAR binary file"):
        count, extra = divmod(size, record)
        if extra or count == 0:
            lower, upper = count * record, (count + 1) * record
            expected = f"{upper} bytes" if count == 0 else f"{lower} or {upper} bytes"
            raise ValueError(f"{path}: truncated or corrupt CIFAR binary file: expected a whole number of "
                             f"{record}-byte records ({expected}), found {size} bytes")
        check_size(path, "a CIFAR binary file", size, MAX_IMAGES_PER_FILE * record,
                   f"{MAX_IMAGES_PER_FILE} records of {record} bytes, MAX_IMAGES_PER_FILE")
        content = handle.read(size + 1)
    if len(content) != size:
        raise ValueError(f"{path}: CIFAR binary file changed while read: {size} bytes on disk, read {len(content)}")
    table = np.frombuffer(content, dtype=np.uint8).reshape(count, record)
    labels = table[:, :label_bytes].astype(np.int64)
    images = table[:, label_bytes:].reshape(count, 3, 32, 32).copy()
    return images, (labels[:, 0] if label_bytes == 1 else labels)


# -- python version ---------------------------------------------------------------------------

def restricted_load(path):
    """Unpickle a dataset file with ``RestrictedUnpickler`` (bytes keys, as Python 2 wrote them).

    Only a regular file of at most ``MAX_PICKLE_FILE_BYTES`` is read. A refused pickle is an
    ``UnsafePickleError``, a damaged one a ValueError, each naming the file.
    """
    path = pathlib.Path(path)
    content = read_bounded(path, "a CIFAR python file", MAX_PICKLE_FILE_BYTES, "MAX_PICKLE_FILE_BYTES, sized "
                           f"for {MAX_IMAGES_PER_FILE} images")
    unpickler = RestrictedUnpickler(io.BytesIO(content), encoding="bytes")
    unpickler.source = str(path)
    try:
        with memory_guard(path, "unpickling a CIFAR python file"):
            return unpickler.load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
            AttributeError) as exc:
        raise ValueError(f"{path}: truncated or corrupt CIFAR python file ({len(content)} bytes): "
                         f"{type(exc).__name__}: {exc}") from None


def _get(batch, key, path):
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a pickled dict, found {type(batch).__name__}")
    for candidate in (key, key.decode()):
        if candidate in batch:
            return batch[candidate]
    raise ValueError(f"{path}: CIFAR python file lacks the {key!r} entry; found keys {sorted(map(str, batch))}")


def _describe(value):
    return f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__


def read_cifar_python(path, label_key=b"labels"):
    """``(images, labels)`` from one python-version batch file; ``label_key`` is ``b'labels'``
    (CIFAR-10), ``b'fine_labels'`` or ``b'coarse_labels'`` (CIFAR-100)."""
    path = pathlib.Path(path)
    batch = restricted_load(path)
    data = _get(batch, b"data", path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
        raise ValueError(f"{path}: expected data of uint8 shape (N, {PIXELS}), found {_describe(data)}")
    raw_labels = _get(batch, label_key, path)
    if not isinstance(raw_labels, (list, tuple, np.ndarray)):
        raise ValueError(f"{path}: expected {label_key!r} as a list of {len(data)} integers, found "
                         f"{_describe(raw_labels)}")
    labels = check_labels(raw_labels, path)
    if labels.shape != (len(data),):
        raise ValueError(f"{path}: {len(data)} images but labels of shape {labels.shape}")
    return data.reshape(-1, 3, 32, 32).copy(), labels


def read_label_names(path, key=b"label_names"):
    """Class names from a python-version ``batches.meta``/``meta`` file."""
    names = _get(restricted_load(path), key, path)
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, (bytes, str)) for n in names):
        found = type(names).__name__ if not isinstance(names, (list, tuple)) else \
            f"a {type(names).__name__} holding {sorted({type(n).__name__ for n in names})}"
        raise ValueError(f"{path}: expected {key!r} as a list of names (bytes or str), found {found}")
    try:
        return [n.decode() if isinstance(n, bytes) else n for n in names]
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: class names must be UTF-8 text: {exc}") from None


# -- whole datasets ---------------------------------------------------------------------------

def _first_dir_with(directory, subdirs, name):
    # an entry that is not a regular file is found too, so that reading it says what it is
    for sub in subdirs:
        if (directory / sub / name).exists():
            return directory / sub
    return None


def _numbered(folder, prefix, suffix):
    def number(p):
        tail = p.name[len(prefix):len(p.name) - len(suffix)] if suffix else p.name[len(prefix):]
        return int(tail) if tail.isdigit() else 0

    found = [p for p in folder.glob(prefix + "*" + suffix) if suffix or "." not in p.name]
    return sorted(found, key=number)


def detect_cifar(directory, classes: int = 10):
    """``('binary' | 'python', folder)`` for a CIFAR directory (or its standard subfolder), else None."""
    directory = pathlib.Path(directory)
    if classes == 10:
        folder = _first_dir_with(directory, CIFAR10_BIN_DIRS, "data_batch_1.bin")
        if folder is not None:
            return "binary", folder
        folder = _first_dir_with(directory, CIFAR10_PY_DIRS, "data_batch_1")
        if folder is not None:
            return "python", folder
        return None
    folder = _first_dir_with(directory, CIFAR100_BIN_DIRS, "train.bin")
    if folder is not None:
        return "binary", folder
    folder = _first_dir_with(directory, CIFAR100_PY_DIRS, "train")
    if folder is not None and (folder / "meta").exists():
        return "python", folder
    return None


def _missing(directory, classes):
    layout = ("cifar-10-batches-bin/data_batch_1.bin ... test_batch.bin (binary) or "
              "cifar-10-batches-py/data_batch_1 ... test_batch (python)") if classes == 10 else \
             ("cifar-100-binary/train.bin, test.bin (binary) or cifar-100-python/train, test, meta (python)")
    return FileNotFoundError(f"load_cifar{classes}: no CIFAR-{classes} files in {directory}; expected {layout}, "
                             f"directly in it or in that subfolder")


def _concat(parts):
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def load_cifar10(directory, train: bool = True):
    """``(images, labels)`` of CIFAR-10 from its binary or python version (detected).

    ``train=True`` concatenates every ``data_batch_N`` found in order; ``train=False`` reads
    ``test_batch``.
    """
    directory = pathlib.Path(os.path.expanduser(str(directory)))
    found = detect_cifar(directory, 10)
    if found is None:
        raise _missing(directory, 10)
    version, folder = found
    if version == "binary":
        paths = _numbered(folder, "data_batch_", ".bin") if train else [folder / "test_batch.bin"]
        reader = read_cifar_binary
    else:
        paths = _numbered(folder, "data_batch_", "") if train else [folder / "test_batch"]
        reader = read_cifar_python
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"load_cifar10: {path} is missing ({version} version found in {folder})")
    parts = [reader(p) for p in paths]
    return _concat([(images, check_labels(labels, path, 10)) for path, (images, labels) in zip(paths, parts)])


def load_cifar100(directory, train: bool = True, labels: str = "fine"):
    """``(images, labels)`` of CIFAR-100 (binary or python version); ``labels`` is ``'fine'``
    (100 classes) or ``'coarse'`` (20 superclasses)."""
    if labels not in ("fine", "coarse"):
        raise ValueError(f"load_cifar100: labels must be 'fine' or 'coarse', got {labels!r}")
    directory = pathlib.Path(os.path.expanduser(str(directory)))
    found = detect_cifar(directory, 100)
    if found is None:
        raise _missing(directory, 100)
    version, folder = found
    name = "train" if train else "test"
    if version == "binary":
        path = folder / f"{name}.bin"
        if not path.exists():
            raise FileNotFoundError(f"load_cifar100: {path} is missing (binary version found in {folder})")
        images, both = read_cifar_binary(path, label_bytes=2)
        chosen = both[:, 0 if labels == "coarse" else 1]
    else:
        path = folder / name
        if not path.exists():
            raise FileNotFoundError(f"load_cifar100: {path} is missing (python version found in {folder})")
        images, chosen = read_cifar_python(path, label_key=f"{labels}_labels".encode())
    return images, check_labels(chosen, path, 20 if labels == "coarse" else 100)


def _names_from_text(path):
    content = read_bounded(path, "a CIFAR label-names file", MAX_NAMES_FILE_BYTES, "MAX_NAMES_FILE_BYTES")
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: class names must be UTF-8 text: {exc}") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def cifar_class_names(directory, classes: int = 10, labels: str = "fine"):
    """Class names from the dataset's meta file when there is one, else ``['0', '1', ...]``.

    A meta file that is present but unreadable, or lists another number of names than the dataset
    has classes, is a ValueError naming it (never a silent fallback).
    """
    found = detect_cifar(pathlib.Path(os.path.expanduser(str(directory))), classes)
    count = 10 if classes == 10 else (100 if labels == "fine" else 20)
    if found is None:
        return [str(i) for i in range(count)]
    version, folder = found
    if version == "binary":
        path = folder / ("batches.meta.txt" if classes == 10 else f"{labels}_label_names.txt")
        read = _names_from_text
    else:
        path = folder / ("batches.meta" if classes == 10 else "meta")
        key = b"label_names" if classes == 10 else f"{labels}_label_names".encode()

        def read(meta):
            return read_label_names(meta, key)
    if not path.exists():
        return [str(i) for i in range(count)]
    names = read(path)
    if len(names) != count:
        raise ValueError(f"{path}: expected {count} class names for CIFAR-{classes} ({labels} labels), found "
                         f"{len(names)}")
    return names
