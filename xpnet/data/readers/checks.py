"""Checks every reader applies to what it read: labels, and the splits ``load_dataset`` returns.

Host-side module: it imports NumPy. Each rule is written here once; an invalid value is a
ValueError in one line naming where it came from, the value found and what is accepted.
"""

from __future__ import annotations

import numpy as np


def check_labels(values, source, num_classes=None) -> np.ndarray:
    """``values`` as int64 labels, refusing any that are not integers and, given ``num_classes``,
    any outside ``[0, num_classes)``. ``source`` (a file, usually) is named in the error."""
    try:
        labels = np.asarray(values)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValueError(f"{source}: corrupt labels: expected integers, found values NumPy cannot hold in "
                         f"one array ({exc})") from None
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{source}: corrupt labels: expected integers, found {labels.dtype} values")
    if num_classes is not None and labels.size:
        bad = np.flatnonzero((labels.reshape(-1) < 0) | (labels.reshape(-1) >= num_classes))
        if bad.size:
            first = int(bad[0])
            raise ValueError(f"{source}: corrupt labels: expected values 0..{num_classes - 1} (the range "
                             f"[0, {num_classes})), found {int(labels.reshape(-1)[first])} at index {first} "
                             f"(values from {int(labels.min())} up to {int(labels.max())})")
    return labels.astype(np.int64)


def check_splits(splits) -> None:
    """Refuse ``DatasetSplits`` that cannot train: an empty split, test inputs of another shape than
    the training inputs, or a class list that disagrees with ``num_classes``."""
    from ..dataset import input_shape_of

    label = f"dataset {splits.name!r} ({splits.source})"
    if len(splits.classes) != splits.num_classes:
        raise ValueError(f"{label}: {splits.num_classes} classes announced but {len(splits.classes)} class names "
                         f"given; the two must agree")
    if len(splits.train) == 0:
        raise ValueError(f"{label}: the training split has 0 samples; at least one is needed")
    if splits.test is None:
        return
    if len(splits.test) == 0:
        raise ValueError(f"{label}: the test split has 0 samples; at least one is needed")
    train_shape, test_shape = tuple(input_shape_of(splits.train)), tuple(input_shape_of(splits.test))
    if train_shape != test_shape:
        raise ValueError(f"{label}: test inputs have shape {test_shape} but training inputs have shape "
                         f"{train_shape}; both splits must have the same input shape")
