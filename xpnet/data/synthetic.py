"""Synthetic data of a model's input shape, and channel statistics of a dataset (host-side, NumPy)."""

from __future__ import annotations

import numpy as np

from .dataset import TensorDataset


def synthetic_splits(input_shape=(1, 28, 28), size=512, seed=0, num_classes=10):
    """``DatasetSplits`` of random uint8 images and random labels, for throughput runs without data.

    The test split has ``max(64, size // 4)`` images.
    """
    from .readers import DatasetSplits

    gen = np.random.default_rng(seed)
    n_test = max(64, size // 4)
    x_train = gen.integers(0, 256, (size, *input_shape), dtype=np.uint8)
    x_test = gen.integers(0, 256, (n_test, *input_shape), dtype=np.uint8)
    return DatasetSplits(TensorDataset(x_train, gen.integers(0, num_classes, size)),
                         TensorDataset(x_test, gen.integers(0, num_classes, n_test)),
                         num_classes, [str(i) for i in range(num_classes)], "synthetic", "generated")


def channel_stats(dataset, limit=2000):
    """(scale, mean per channel, std per channel) of the first ``limit`` inputs of ``dataset``,
    after scaling uint8 images by 1/255 (scale is that factor, 1.0 for float data).

    An empty dataset (no statistics to take) or a ``limit`` below 1 is a ValueError.
    """
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise ValueError(f"channel_stats: limit must be a positive integer, got {limit!r}")
    if len(dataset) == 0:
        raise ValueError(f"channel_stats: {type(dataset).__name__} has 0 samples; channel statistics need at "
                         f"least one")
    arrays = getattr(dataset, "arrays", None)
    if arrays is not None:
        images = arrays[0][:limit]
    else:
        images = np.stack([np.asarray(dataset[i][0]) for i in range(min(len(dataset), limit))])
    scale = 1 / 255 if images.dtype == np.uint8 else 1.0
    sample = images.astype(np.float32) * scale
    axes = (0,) + tuple(range(2, sample.ndim))
    return scale, sample.mean(axis=axes).tolist(), (sample.std(axis=axes) + 1e-6).tolist()
