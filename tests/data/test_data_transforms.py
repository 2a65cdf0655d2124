"""Batch transforms: values, randomness from the given generator, errors. Host NumPy only."""

from __future__ import annotations

import numpy as np
import pytest

from xpnet.data.transforms import Compose, GaussianNoise, Normalize, RandomCrop, RandomHorizontalFlip, ToFloat


def position_batch(n=6, c=2, h=5, w=7):
    """Pixel value 1000 * c + 10 * row + col + 1 (so 0 only appears in padding)."""
    c_idx, h_idx, w_idx = np.meshgrid(np.arange(c), np.arange(h), np.arange(w), indexing="ij")
    one = (1000 * c_idx + 10 * h_idx + w_idx + 1).astype(np.float32)
    return np.repeat(one[None], n, axis=0) + 10000 * np.arange(n, dtype=np.float32)[:, None, None, None]


def test_to_float_scales():
    x = np.array([0, 51, 255], dtype=np.uint8).reshape(1, 1, 1, 3)
    out = ToFloat()(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.ravel(), [0.0, 0.2, 1.0], rtol=1e-7)
    assert ToFloat(scale=1.0, dtype="float64")(x).dtype == np.float64


def test_random_crop_with_padding_matches_a_per_image_reference():
    x = position_batch(n=8)
    crop = RandomCrop((5, 7), padding=2)
    out = crop(x, np.random.default_rng(3))
    # the same draws, applied image by image
    rng = np.random.default_rng(3)
    top, left = rng.integers(0, 5, size=8), rng.integers(0, 5, size=8)
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    expected = np.stack([padded[i, :, top[i]:top[i] + 5, left[i]:left[i] + 7] for i in range(8)])
    assert out.shape == (8, 2, 5, 7) and out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)


def test_random_crop_shifts_content_and_fills_zeros():
    x = position_batch(n=400, c=1, h=4, w=4)
    out = RandomCrop(4, padding=1)(x, np.random.default_rng(0))
    shifts = set()
    for i in range(len(x)):
        # find the shift: the output is the image moved by (dy, dx) in -1..1, zeros where it left
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                moved = np.zeros((4, 4), np.float32)
                src = x[i, 0, max(0, -dy):4 - max(0, dy), max(0, -dx):4 - max(0, dx)]
                moved[max(0, dy):4 - max(0, -dy), max(0, dx):4 - max(0, -dx)] = src
                if np.array_equal(out[i, 0], moved):
                    shifts.add((dy, dx))
    assert shifts == {(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)}


def test_random_crop_smaller_window_without_padding():
    x = position_batch(n=50, c=1, h=5, w=7)
    out = RandomCrop((2, 3))(x, np.random.default_rng(1))
    assert out.shape == (50, 1, 2, 3)
    for i in range(50):
        row, col = divmod(int(out[i, 0, 0, 0] - 10000 * i - 1), 10)
        np.testing.assert_array_equal(out[i, 0], x[i, 0, row:row + 2, col:col + 3])
    with pytest.raises(ValueError, match="does not fit"):
        RandomCrop(9)(x, np.random.default_rng(0))


def test_flip_mirrors_with_probability():
    x = position_batch(n=200, c=2, h=3, w=4)
    np.testing.assert_array_equal(RandomHorizontalFlip(p=1.0)(x, np.random.default_rng(0)), x[..., ::-1])
    np.testing.assert_array_equal(RandomHorizontalFlip(p=0.0)(x, np.random.default_rng(0)), x)
    out = RandomHorizontalFlip()(x, np.random.default_rng(5))
    flipped = np.array([np.array_equal(out[i], x[i, :, :, ::-1]) for i in range(200)])
    kept = np.array([np.array_equal(out[i], x[i]) for i in range(200)])
    assert np.all(flipped ^ kept)
    assert 70 < flipped.sum() < 130
    expected_mask = np.random.default_rng(5).random(200) < 0.5
    np.testing.assert_array_equal(flipped, expected_mask)


def test_normalize_per_channel():
    x = np.stack([np.full((2, 2), 0.5), np.full((2, 2), 1.0), np.full((2, 2), 0.0)]).astype(np.float32)[None]
    out = Normalize(mean=(0.5, 0.25, 0.1), std=(0.5, 0.25, 0.2))(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, :, 0, 0], [0.0, 3.0, -0.5], rtol=1e-6)
    with pytest.raises(ValueError, match="3 mean/std values for a batch with 2 channels"):
        Normalize((0.1, 0.2, 0.3), (1, 1, 1))(np.zeros((1, 2, 2, 2), np.float32))
    with pytest.raises(TypeError, match="put ToFloat"):
        Normalize((0.1,), (1,))(np.zeros((1, 1, 2, 2), np.uint8))


def test_gaussian_noise_statistics_and_dtype():
    x = np.zeros((50, 3, 20, 20), np.float32)
    out = GaussianNoise(std=0.3)(x, np.random.default_rng(0))
    assert out.dtype == np.float32
    assert abs(out.mean()) < 0.01 and abs(out.std() - 0.3) < 0.01
    np.testing.assert_array_equal(out, GaussianNoise(std=0.3)(x, np.random.default_rng(0)))


def test_compose_applies_in_order_with_one_generator():
    x = np.full((2, 1, 2, 2), 255, np.uint8)
    pipeline = Compose([ToFloat(), Normalize((0.5,), (0.5,)), RandomHorizontalFlip(1.0)])
    np.testing.assert_allclose(pipeline(x, np.random.default_rng(0)), np.ones((2, 1, 2, 2)))
    assert "ToFloat" in repr(pipeline) and "Normalize" in repr(pipeline)


def test_random_transforms_need_a_generator_and_a_batch():
    x = np.zeros((2, 1, 4, 4), np.float32)
    with pytest.raises(TypeError, match="explicit np.random.Generator"):
        RandomCrop(4)(x, None)
    with pytest.raises(TypeError, match="explicit np.random.Generator"):
        RandomHorizontalFlip()(x, 0)
    with pytest.raises(ValueError, match=r"shape \(N, C, H, W\), got shape \(4, 4\)"):
        GaussianNoise(0.1)(np.zeros((4, 4), np.float32), np.random.default_rng(0))
