"""Datasets: indexable collections of samples, kept on the host.

Host-side module: it imports NumPy. Samples stay NumPy arrays until ``DataLoader`` uploads a whole
batch to the backend, so readers, augmentation and shuffling never touch the compute device.

A dataset is anything with ``__len__`` and ``__getitem__(i) -> tuple of arrays``. It may also
offer ``get_batch(indices) -> tuple of stacked arrays``; ``DataLoader`` uses that to assemble a
batch with one fancy-indexing call per field instead of a Python loop over the samples.
"""

from __future__ import annotations

import abc

import numpy as np

from ..backends import to_numpy


class Dataset(abc.ABC):
    """Base class: subclasses give ``__len__`` and ``__getitem__(i) -> (x, y, ...)``.

    ``get_batch`` stacks single samples; array-backed subclasses override it with a vectorised
    version. Any object with ``__len__``/``__getitem__`` works with ``DataLoader`` too; deriving
    from this class only adds ``get_batch`` and the checks.
    """

    @abc.abstractmethod
    def __len__(self) -> int:
        """The number of samples."""

    @abc.abstractmethod
    def __getitem__(self, index):
        """Sample ``index`` as a tuple of host arrays (or numbers), e.g. ``(image, label)``."""

    def get_batch(self, indices):
        """The samples at ``indices`` stacked field by field: ``(x[indices], y[indices], ...)``."""
        return stack_samples([self[int(i)] for i in np.asarray(indices).reshape(-1)], self)


def stack_samples(samples, source=None):
    """Stack a list of samples (tuples of equal length) into a tuple of arrays, one per field."""
    name = type(source).__name__ if source is not None else "dataset"
    if not samples:
        raise ValueError(f"{name}: cannot assemble an empty batch")
    first = samples[0]
    if not isinstance(first, (tuple, list)):
        return (np.stack([np.asarray(s) for s in samples]),)
    width = len(first)
    for position, sample in enumerate(samples):
        if not isinstance(sample, (tuple, list)) or len(sample) != width:
            got = len(sample) if isinstance(sample, (tuple, list)) else type(sample).__name__
            raise ValueError(f"{name}: every sample must be a tuple of {width} fields like the first; "
                             f"sample {position} of the batch has {got}")
    fields = []
    for column in range(width):
        values = [np.asarray(s[column]) for s in samples]
        shapes = {v.shape for v in values}
        if len(shapes) != 1:
            raise ValueError(f"{name}: field {column} has different shapes within one batch: "
                             f"{sorted(shapes)}; resize the samples to one shape")
        fields.append(np.stack(values))
    return tuple(fields)


def _check_indices(indices, length, name):
    indices = np.asarray(indices)
    if indices.dtype.kind not in "iu":
        raise TypeError(f"{name}: batch indices must be integers, got dtype {indices.dtype}")
    if indices.size and (indices.min() < -length or indices.max() >= length):
        raise IndexError(f"{name}: index out of range for {length} samples "
                         f"(got {int(indices.min())}..{int(indices.max())})")
    return indices


class TensorDataset(Dataset):
    """Samples ``(a[i], b[i], ...)`` of equally long arrays, e.g. ``TensorDataset(images, labels)``.

    The arrays may be NumPy arrays, arrays of any backend or xpnet Tensors; they are copied to host
    NumPy once, here, so batches are assembled on the host and uploaded once per batch.
    """

    def __init__(self, *arrays):
        if not arrays:
            raise ValueError("TensorDataset: expected at least one array, got none")
        host = []
        for position, array in enumerate(arrays):
            value = to_numpy(array)
            if value.ndim == 0:
                raise ValueError(f"TensorDataset: array {position} is a scalar; expected a leading sample axis")
            host.append(value)
        lengths = [len(a) for a in host]
        if len(set(lengths)) != 1:
            raise ValueError(f"TensorDataset: all arrays need the same length (first axis); got lengths {lengths}")
        self.arrays = tuple(host)

    def __len__(self) -> int:
        return len(self.arrays[0])

    def __getitem__(self, index):
        return tuple(a[index] for a in self.arrays)

    def get_batch(self, indices):
        indices = _check_indices(indices, len(self), "TensorDataset")
        return tuple(a[indices] for a in self.arrays)

    def __repr__(self):
        fields = ", ".join(f"{a.dtype}{list(a.shape)}" for a in self.arrays)
        return f"TensorDataset({fields})"


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices`` (a view: nothing is copied)."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = _check_indices(np.asarray(indices, dtype=np.int64).reshape(-1), len(dataset), "Subset")

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index):
        return self.dataset[int(self.indices[index])]

    def get_batch(self, indices):
        inner = self.indices[_check_indices(indices, len(self), "Subset")]
        getter = getattr(self.dataset, "get_batch", None)
        if getter is not None:
            return getter(inner)
        return stack_samples([self.dataset[int(i)] for i in inner], self.dataset)

    def __repr__(self):
        return f"Subset({self.dataset!r}, {len(self)} samples)"


def stratified_split(labels, test_fraction=None, test_per_class=None, seed=0):
    """Indices ``(train, test)`` that keep every class's share: per class, ``test_per_class``
    samples (or ``round(test_fraction * class size)``) go to test, drawn with ``seed``.

    Both index arrays come back sorted, so the split does not reorder the data.
    """
    labels = np.asarray(labels).reshape(-1)
    if (test_fraction is None) == (test_per_class is None):
        raise ValueError("stratified_split: give exactly one of test_fraction and test_per_class")
    if test_fraction is not None and not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"stratified_split: test_fraction must be in [0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    test = []
    for value in np.unique(labels):
        members = np.flatnonzero(labels == value)
        count = test_per_class if test_per_class is not None else int(round(test_fraction * len(members)))
        if count > len(members):
            raise ValueError(f"stratified_split: class {value} has {len(members)} samples, "
                             f"fewer than the {count} asked for the test part")
        test.append(rng.permutation(members)[:count])
    test = np.sort(np.concatenate(test)) if test else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(labels), dtype=bool)
    mask[test] = False
    return np.flatnonzero(mask), test


def input_shape_of(dataset) -> tuple:
    """(C, H, W) of one input sample of ``dataset``."""
    arrays = getattr(dataset, "arrays", None)
    if arrays is not None:
        return tuple(arrays[0].shape[1:])
    return tuple(np.asarray(dataset[0][0]).shape)
