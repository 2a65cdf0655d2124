"""The embedded MNIST sample: shapes, class balance, the fixed split, provenance."""

from __future__ import annotations

import hashlib
import importlib.resources
import re

import numpy as np

from xpnet.data import load_mnist_sample


def test_shapes_and_dtypes():
    (x_train, y_train), (x_test, y_test) = load_mnist_sample()
    assert x_train.shape == (4000, 1, 28, 28) and x_test.shape == (1000, 1, 28, 28)
    assert x_train.dtype == np.uint8 and x_test.dtype == np.uint8
    assert y_train.shape == (4000,) and y_test.shape == (1000,)
    assert y_train.dtype == np.int64 and y_test.dtype == np.int64
    assert x_train.max() == 255 and x_train.min() == 0
    # MNIST's mean grey level is about 0.13 * 255
    assert 25 < x_train.mean() < 45


def test_class_balance_and_stratified_split():
    (_, y_train), (_, y_test) = load_mnist_sample()
    assert np.bincount(y_train, minlength=10).tolist() == [400] * 10
    assert np.bincount(y_test, minlength=10).tolist() == [100] * 10


def test_split_is_fixed_and_disjoint():
    (x_train, y_train), (x_test, y_test) = load_mnist_sample()
    (x_train2, _), (x_test2, y_test2) = load_mnist_sample()
    np.testing.assert_array_equal(x_test, x_test2)
    np.testing.assert_array_equal(y_test, y_test2)
    np.testing.assert_array_equal(x_train, x_train2)
    train_keys = {hashlib.sha1(im.tobytes()).digest() for im in x_train}
    test_keys = {hashlib.sha1(im.tobytes()).digest() for im in x_test}
    assert len(train_keys) == 4000 and len(test_keys) == 1000 and not train_keys & test_keys


def test_file_matches_provenance_and_ships_with_license():
    folder = importlib.resources.files("xpnet.data.embedded")
    data = folder.joinpath("mnist_sample.npz").read_bytes()
    provenance = folder.joinpath("PROVENANCE.md").read_text()
    recorded = re.search(r"sha256 of `mnist_sample.npz`:\s*`([0-9a-f]{64})`", provenance).group(1)
    assert hashlib.sha256(data).hexdigest() == recorded
    assert "CC BY-SA 3.0" in provenance and "LeCun" in provenance and "make_mnist_sample.py" in provenance
    assert "CC BY-SA 3.0" in folder.joinpath("LICENSE.txt").read_text()
    with np.load(folder.joinpath("mnist_sample.npz").open("rb"), allow_pickle=False) as archive:
        assert sorted(archive.files) == ["images", "labels", "split"]
