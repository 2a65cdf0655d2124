"""CIFAR-10 and CIFAR-100, binary and python versions.

Host-side module: it imports NumPy and returns host arrays: images uint8 (N, 3, 32, 32) (the
files' own channel-first layout), labels int64 (N,).

Binary version: fixed-size records, any whole number of them per file. CIFAR-10: 1 label byte +
3,072 pixel bytes (1,024 red, 1,024 green, 1,024 blue, each 32x32 row-major) = 3,073 bytes;
CIFAR-100: a coarse and a fine label byte + 3,072 = 3,074 bytes.

Python version: pickled dicts with bytes keys (``b'data'``: uint8 (N, 3072), ``b'labels'`` or
``b'fine_labels'``/``b'coarse_labels'``). They are read with ``RestrictedUnpickler``, which
resolves only the handful of NumPy names an array needs and refuses everything else, so a
doctored file cannot run code.
"""

from __future__ import annotations

import os
import pathlib
import pickle

import numpy as np

PIXELS = 3 * 32 * 32

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
    content = path.read_bytes()
    count, extra = divmod(len(content), record)
    if extra or count == 0:
        lower, upper = count * record, (count + 1) * record
        expected = f"{upper} bytes" if count == 0 else f"{lower} or {upper} bytes"
        raise ValueError(f"{path}: truncated or corrupt CIFAR binary file: expected a whole number of "
                         f"{record}-byte records ({expected}), found {len(content)} bytes")
    table = np.frombuffer(content, dtype=np.uint8).reshape(count, record)
    labels = table[:, :label_bytes].astype(np.int64)
    images = table[:, label_bytes:].reshape(count, 3, 32, 32).copy()
    return images, (labels[:, 0] if label_bytes == 1 else labels)


# -- python version ---------------------------------------------------------------------------

class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global that ``RestrictedUnpickler`` does not admit."""


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # NumPy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _numpy_scalar():
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # NumPy < 2
        from numpy.core.multiarray import scalar
    return scalar


_LATIN1_NAMES = ("latin1", "latin-1", "iso8859-1", "iso-8859-1", "l1")


def _latin1_encode(text, encoding="latin1", errors="strict"):
    """Python 3 writes bytes under pickle protocol 2 as ``_codecs.encode(text, 'latin1')``; only
    that codec is admitted."""
    if not isinstance(text, str) or str(encoding).lower().replace("_", "-") not in _LATIN1_NAMES or errors != "strict":
        raise UnsafePickleError(f"_codecs.encode is admitted only as encode(str, 'latin1'), got encoding {encoding!r}")
    return text.encode("latin1", errors)


# (module, name) -> a factory for the object; modules as NumPy 1 and 2 name them in pickles
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: _latin1_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only NumPy arrays, dtypes, scalars and plain Python containers.

    ``find_class`` admits the reconstruction names listed in ``_ALLOWED`` and raises
    ``UnsafePickleError`` (a ``pickle.UnpicklingError``) for any other global, so no function of
    the file's choosing runs.
    """

    source = "pickle"

    def find_class(self, module, name):
        factory = _ALLOWED.get((module, name))
        if factory is None:
            raise UnsafePickleError(
                f"{self.source}: refusing to load global {module}.{name}: only NumPy array data is allowed "
                f"in a dataset pickle (admitted: {', '.join(sorted(f'{m}.{n}' for m, n in _ALLOWED))})")
        return factory()


def restricted_load(path):
    """Unpickle a dataset file with ``RestrictedUnpickler`` (bytes keys, as Python 2 wrote them)."""
    path = pathlib.Path(path)
    with open(path, "rb") as handle:
        unpickler = RestrictedUnpickler(handle, encoding="bytes")
        unpickler.source = str(path)
        try:
            return unpickler.load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
                AttributeError, MemoryError) as exc:
            size = path.stat().st_size
            raise ValueError(f"{path}: truncated or corrupt CIFAR python file ({size} bytes): "
                             f"{type(exc).__name__}: {exc}") from None


def _get(batch, key, path):
    for candidate in (key, key.decode()):
        if candidate in batch:
            return batch[candidate]
    raise ValueError(f"{path}: CIFAR python file lacks the {key!r} entry; found keys {sorted(map(str, batch))}")


def read_cifar_python(path, label_key=b"labels"):
    """``(images, labels)`` from one python-version batch file; ``label_key`` is ``b'labels'``
    (CIFAR-10), ``b'fine_labels'`` or ``b'coarse_labels'`` (CIFAR-100)."""
    path = pathlib.Path(path)
    batch = restricted_load(path)
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a pickled dict, found {type(batch).__name__}")
    data = np.asarray(_get(batch, b"data", path))
    labels = np.asarray(_get(batch, label_key, path))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
        raise ValueError(f"{path}: expected data of uint8 shape (N, {PIXELS}), found {data.dtype} {data.shape}")
    if labels.shape != (len(data),):
        raise ValueError(f"{path}: {len(data)} images but labels of shape {labels.shape}")
    return data.reshape(-1, 3, 32, 32).copy(), labels.astype(np.int64)


def read_label_names(path, key=b"label_names"):
    """Class names from a python-version ``batches.meta``/``meta`` file."""
    names = _get(restricted_load(path), key, path)
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


# -- whole datasets ---------------------------------------------------------------------------

def check_label_range(labels, count, path):
    """Labels outside 0..count-1 mean a misread or corrupt file (e.g. CIFAR-100 read as CIFAR-10)."""
    if len(labels) and (labels.min() < 0 or labels.max() >= count):
        raise ValueError(f"{path}: corrupt labels: expected values 0..{count - 1}, found "
                         f"{int(labels.min())}..{int(labels.max())}")


def _first_dir_with(directory, subdirs, name):
    for sub in subdirs:
        if (directory / sub / name).is_file():
            return directory / sub
    return None


def _numbered(folder, prefix, suffix):
    def number(p):
        tail = p.name[len(prefix):len(p.name) - len(suffix)] if suffix else p.name[len(prefix):]
        return int(tail) if tail.isdigit() else 0

    found = [p for p in folder.glob(prefix + "*" + suffix) if p.is_file() and (suffix or "." not in p.name)]
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
    if folder is not None and (folder / "meta").is_file():
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
        if not path.is_file():
            raise FileNotFoundError(f"load_cifar10: {path} is missing ({version} version found in {folder})")
    parts = [reader(p) for p in paths]
    for path, (_, labels) in zip(paths, parts):
        check_label_range(labels, 10, path)
    return _concat(parts)


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
        if not path.is_file():
            raise FileNotFoundError(f"load_cifar100: {path} is missing (binary version found in {folder})")
        images, both = read_cifar_binary(path, label_bytes=2)
        chosen = both[:, 0 if labels == "coarse" else 1]
    else:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"load_cifar100: {path} is missing (python version found in {folder})")
        images, chosen = read_cifar_python(path, label_key=f"{labels}_labels".encode())
    check_label_range(chosen, 20 if labels == "coarse" else 100, path)
    return images, chosen


def cifar_class_names(directory, classes: int = 10, labels: str = "fine"):
    """Class names from the dataset's meta file when present, else ``['0', '1', ...]``."""
    found = detect_cifar(pathlib.Path(os.path.expanduser(str(directory))), classes)
    count = 10 if classes == 10 else (100 if labels == "fine" else 20)
    fallback = [str(i) for i in range(count)]
    if found is None:
        return fallback
    version, folder = found
    if version == "binary":
        text = folder / ("batches.meta.txt" if classes == 10 else f"{labels}_label_names.txt")
        if text.is_file():
            names = [line.strip() for line in text.read_text().splitlines() if line.strip()]
            return names if len(names) == count else fallback
        return fallback
    meta = folder / ("batches.meta" if classes == 10 else "meta")
    if meta.is_file():
        key = b"label_names" if classes == 10 else f"{labels}_label_names".encode()
        try:
            names = read_label_names(meta, key)
        except (ValueError, pickle.UnpicklingError):
            return fallback
        return names if len(names) == count else fallback
    return fallback
