"""Helpers for tests/classic: scikit-learn's bundled data sets, moved to a backend in float64."""

from __future__ import annotations

import functools

import numpy as np

import xpnet
from xpnet.backends import describe_device


def _sklearn():
    import pytest

    return pytest.importorskip("sklearn")


@functools.lru_cache(maxsize=None)
def dataset(name: str):
    """(X, y) on the host: 'iris', 'wine', 'breast_cancer', 'diabetes'."""
    _sklearn()
    from sklearn import datasets

    X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    return np.asarray(X, dtype=np.float64), np.asarray(y)


@functools.lru_cache(maxsize=None)
def split(name: str, standardise: bool = True, seed: int = 0):
    """A stratified 75/25 split by scikit-learn (host arrays), standardised on the training part."""
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X, y = dataset(name)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, random_state=seed, stratify=y)
    if standardise:
        scaler = StandardScaler().fit(X_tr)
        X_tr, X_te = scaler.transform(X_tr), scaler.transform(X_te)
    return X_tr, X_te, y_tr, y_te


def on(backend, *arrays, device=None):
    """Host arrays moved to ``backend`` (floats as float64, labels as int64)."""
    out = []
    for a in arrays:
        a = np.asarray(a)
        a = a.astype(np.float64) if a.dtype.kind == "f" else a.astype(np.int64)
        out.append(xpnet.to_device(a, backend.name, device))
    return out[0] if len(out) == 1 else out


def to_np(x):
    return xpnet.to_numpy(x)


def assert_on(array, backend, device=None):
    """``array`` is a raw array of ``backend``'s namespace on ``device`` (default: the backend's)."""
    expected = str(backend) if device is None else str(xpnet.get_backend(backend.name, device))
    assert describe_device(array) == expected, (describe_device(array), expected)


def ambiguous_k(distances, k):
    """Rows whose k-th and (k+1)-th nearest distances tie: the k nearest are not unique there."""
    d = np.asarray(distances)
    return d[:, k] - d[:, k - 1] <= 1e-6 * np.maximum(d[:, k], 1.0)
