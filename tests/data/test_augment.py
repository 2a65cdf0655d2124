"""Per-sample augmentations (xpnet.data.augment) against their definitions, and NormalizeOnDevice
on every backend against the NumPy closed form."""

from __future__ import annotations

import colorsys
import math

import numpy as np
import pytest

import xpnet
from xpnet.data import augment
from xpnet.data.augment import (
    IMAGENET_EIGVAL,
    IMAGENET_EIGVEC,
    CenterCrop,
    ColorJitter,
    Compose,
    Lighting,
    NormalizeOnDevice,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    ToUint8CHW,
)
from xpnet.data.decode import resize_hwc


def image(height=48, width=64, channels=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, channels), dtype=np.uint8)


def gen(seed):
    return np.random.default_rng(seed)


def rounded(values):
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


LUMA = np.array([0.299, 0.587, 0.114])


# -- RandomResizedCrop ----------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(48, 64), (64, 48), (30, 30), (17, 200)])
def test_random_resized_crop_box_within_scale_and_ratio(shape):
    height, width = shape
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    for seed in range(200):
        top, left, h, w = RandomResizedCrop.get_params(shape, scale, ratio, gen(seed))
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width and h > 0 and w > 0
        fraction = h * w / (height * width)
        # sides are rounded to integers: allow what half a pixel on each side can change
        slack_area = (h + w + 1) / (height * width)
        in_bounds = scale[0] - slack_area <= fraction <= scale[1] + slack_area
        ratio_ok = ratio[0] * (1 - 1 / h) - 1 / h <= w / h <= ratio[1] * (1 + 1 / h) + 1 / h
        fallback = (top, left) == ((height - h) // 2, (width - w) // 2) and (h == height or w == width)
        assert (in_bounds and ratio_ok) or fallback, (seed, top, left, h, w)


def test_random_resized_crop_follows_the_ten_attempt_sampling():
    shape, scale, ratio = (48, 64), (0.2, 0.7), (0.5, 2.0)
    for seed in range(20):
        rng = gen(seed)
        expected = None
        for _ in range(10):
            area = 48 * 64 * rng.uniform(*scale)
            aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
            w, h = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if 0 < w <= 64 and 0 < h <= 48:
                expected = (int(rng.integers(0, 48 - h + 1)), int(rng.integers(0, 64 - w + 1)), h, w)
                break
        assert RandomResizedCrop.get_params(shape, scale, ratio, gen(seed)) == expected


def test_random_resized_crop_falls_back_to_a_centred_clamped_box():
    # a 10 x 200 strip: no box of 90..100% of the area has a ratio within 3/4..4/3
    box = RandomResizedCrop.get_params((10, 200), (0.9, 1.0), (3 / 4, 4 / 3), gen(0))
    assert box == (0, (200 - 13) // 2, 10, 13)
    box = RandomResizedCrop.get_params((200, 10), (0.9, 1.0), (3 / 4, 4 / 3), gen(0))
    assert box == ((200 - 13) // 2, 0, 13, 10)


def test_random_resized_crop_is_the_resize_of_its_box():
    img = image()
    t = RandomResizedCrop((20, 24))
    for seed in range(5):
        top, left, h, w = t.get_params(img, t.scale, t.ratio, gen(seed))
        out = t(img, gen(seed))
        assert out.shape == (20, 24, 3) and out.dtype == np.uint8
        np.testing.assert_array_equal(out, resize_hwc(img[top:top + h, left:left + w], (20, 24)))
    assert RandomResizedCrop(16)(img, gen(0)).shape == (16, 16, 3)


# -- Resize, CenterCrop ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape,size,expected", [
    ((60, 90), 40, (40, 60)), ((90, 60), 40, (60, 40)), ((37, 101), 20, (20, 54)), ((101, 37), 20, (54, 20)),
    ((50, 50), 7, (7, 7)), ((480, 640), 256, (256, 341)), ((375, 500), 256, (256, 341)), ((10, 10), 30, (30, 30)),
])
def test_resize_int_matches_the_shorter_side(shape, size, expected):
    # torchvision's rule: the shorter side becomes size, the longer int(size * long / short)
    short, long = min(shape), max(shape)
    rule = (size, int(size * long / short)) if shape[0] <= shape[1] else (int(size * long / short), size)
    assert rule == expected == Resize(size).output_size(*shape)
    img = image(*shape)
    out = Resize(size)(img)
    assert out.shape[:2] == expected
    np.testing.assert_array_equal(out, resize_hwc(img, expected))


def test_resize_pair_is_exact_and_max_size_caps_the_long_side():
    assert Resize((30, 20))(image(48, 64)).shape == (30, 20, 3)
    assert Resize(100, max_size=150).output_size(100, 400) == (37, 150)
    img = image(20, 30)
    assert Resize(20)(img) is img  # already that size: untouched
    with pytest.raises(ValueError, match="Resize: max_size must be an int larger than size"):
        Resize(100, max_size=50)


@pytest.mark.parametrize("shape,size", [((48, 64), (20, 30)), ((47, 63), 20), ((10, 10), 10), ((21, 40), (20, 39))])
def test_center_crop_takes_the_middle(shape, size):
    img = image(*shape)
    h, w = (size, size) if isinstance(size, int) else size
    top, left = int(round((shape[0] - h) / 2)), int(round((shape[1] - w) / 2))
    np.testing.assert_array_equal(CenterCrop(size)(img), img[top:top + h, left:left + w])


def test_center_crop_pads_a_small_image_with_zeros():
    img = image(4, 5)
    out = CenterCrop((7, 8))(img)
    assert out.shape == (7, 8, 3)
    np.testing.assert_array_equal(out[1:5, 1:6], img)  # pad (1, 2) rows, (1, 2) columns
    assert out[0].sum() == 0 and out[5:].sum() == 0 and out[:, 0].sum() == 0 and out[:, 6:].sum() == 0


# -- flip -----------------------------------------------------------------------------------------

def test_horizontal_flip_mirrors_with_probability_p():
    img = image()
    np.testing.assert_array_equal(RandomHorizontalFlip(1.0)(img, gen(0)), img[:, ::-1])
    np.testing.assert_array_equal(RandomHorizontalFlip(0.0)(img, gen(0)), img)
    flips = 0
    for seed in range(200):
        out = RandomHorizontalFlip(0.5)(img, gen(seed))
        flipped = gen(seed).random() < 0.5
        np.testing.assert_array_equal(out, img[:, ::-1] if flipped else img)
        flips += flipped
    assert 70 < flips < 130


# -- colour -----------------------------------------------------------------------------------------

def test_brightness_contrast_saturation_against_their_closed_forms():
    img = image(20, 30)
    values = img.astype(np.float64)
    grey = values @ LUMA
    for factor in (0.0, 0.6, 1.0, 1.4):
        fixed = (factor, factor)
        np.testing.assert_array_equal(ColorJitter(brightness=fixed)(img, gen(1)), rounded(values * factor))
        contrast = factor * values + (1 - factor) * grey.mean()
        assert np.abs(ColorJitter(contrast=fixed)(img, gen(1)).astype(int) - rounded(contrast)).max() <= 1
        saturation = factor * values + (1 - factor) * grey[:, :, None]
        assert np.abs(ColorJitter(saturation=fixed)(img, gen(1)).astype(int) - rounded(saturation)).max() <= 1
    np.testing.assert_array_equal(augment.adjust_saturation(img, 0.0)[:, :, 0], rounded(grey))


def test_colour_changes_leave_a_grey_image_alone_where_they_should():
    grey = image(10, 12, channels=1)
    assert augment.adjust_saturation(grey, 0.3) is grey and augment.adjust_hue(grey, 0.2) is grey
    np.testing.assert_array_equal(augment.adjust_contrast(grey, 0.0), np.full_like(grey, np.rint(grey.mean())))


def test_hue_shift_is_a_rotation_in_hsv():
    primaries = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.uint8)
    # a third of a turn: red -> green -> blue -> red
    np.testing.assert_array_equal(augment.adjust_hue(primaries, 1 / 3), primaries[:, [1, 2, 0]])
    np.testing.assert_array_equal(augment.adjust_hue(primaries, -1 / 3), primaries[:, [2, 0, 1]])
    img = image(16, 16)
    for factor in (0.1, -0.25, 0.5):
        shifted = augment.adjust_hue(img, factor)
        for y, x in [(0, 0), (3, 7), (15, 2), (9, 9)]:
            h, s, v = colorsys.rgb_to_hsv(*(img[y, x] / 255.0))
            expected = np.array(colorsys.hsv_to_rgb((h + factor) % 1.0, s, v)) * 255
            assert np.abs(shifted[y, x] - expected).max() <= 0.5 + 1e-4
        back = augment.adjust_hue(shifted, -factor)
        assert np.abs(back.astype(int) - img).max() <= 2  # two roundings to uint8
    np.testing.assert_array_equal(augment.adjust_hue(img, 0.0), img)


def test_hsv_round_trip_in_floating_point():
    rgb = np.random.default_rng(3).random((50, 3))
    np.testing.assert_allclose(augment.hsv_to_rgb(augment.rgb_to_hsv(rgb)), rgb, atol=1e-12)


def test_color_jitter_ranges_and_random_order():
    jitter = ColorJitter(brightness=0.4, contrast=0.5, saturation=1.5, hue=0.1)
    assert jitter.brightness == (0.6, 1.4) and jitter.contrast == (0.5, 1.5) and jitter.saturation == (0.0, 2.5)
    assert jitter.hue == (-0.1, 0.1) and ColorJitter().brightness is None and ColorJitter(hue=0).hue is None
    img = image(12, 14)
    orders = set()
    for seed in range(30):
        order, b, c, s, h = ColorJitter.get_params(jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue,
                                                   gen(seed))
        orders.add(tuple(order))
        assert 0.6 <= b <= 1.4 and 0.5 <= c <= 1.5 and 0 <= s <= 2.5 and -0.1 <= h <= 0.1
        expected = img
        changes = (augment.adjust_brightness, augment.adjust_contrast, augment.adjust_saturation, augment.adjust_hue)
        for which in order:
            expected = changes[which](expected, (b, c, s, h)[which])
        np.testing.assert_array_equal(jitter(img, gen(seed)), expected)
    assert len(orders) > 5


@pytest.mark.parametrize("arguments,message", [
    ({"brightness": -0.1}, "brightness must be non-negative"),
    ({"hue": 0.6}, r"hue range \(-0.6, 0.6\) must lie within \(-0.5, 0.5\)"),
    ({"contrast": (1.5, 0.5)}, "contrast range"),
    ({"saturation": "lots"}, "saturation must be a number or a pair"),
])
def test_color_jitter_refuses_bad_ranges(arguments, message):
    with pytest.raises((ValueError, TypeError), match=message):
        ColorJitter(**arguments)


def test_lighting_adds_the_pca_offset():
    img = image(8, 9)
    for seed in range(5):
        alpha = gen(seed).normal(0.0, 0.1, size=3)
        offset = 255.0 * np.array(IMAGENET_EIGVEC) @ (alpha * np.array(IMAGENET_EIGVAL))
        expected = rounded(img.astype(np.float64) + offset)
        out = Lighting(0.1)(img, gen(seed))
        assert np.abs(out.astype(int) - expected).max() <= 1  # float32 vs float64 at a .5 boundary
    mid = np.full((4, 4, 3), 128, np.uint8)
    out = Lighting(0.5, eigval=(1.0, 0.0, 0.0), eigvec=np.eye(3))(mid, gen(7))
    alpha = gen(7).normal(0.0, 0.5, size=3)
    np.testing.assert_array_equal(out[0, 0], rounded(128 + 255 * np.array([alpha[0], 0, 0])))
    assert Lighting(0.0)(img, gen(0)) is img
    with pytest.raises(ValueError, match="Lighting: needs an RGB image"):
        Lighting()(image(4, 4, channels=1), gen(0))


# -- composition, determinism -------------------------------------------------------------------------

def pipeline():
    return Compose([RandomResizedCrop(24), RandomHorizontalFlip(), ColorJitter(0.4, 0.4, 0.4, 0.1), Lighting(0.1),
                    ToUint8CHW()])


def test_pipeline_is_deterministic_for_a_generator_state():
    img = image()
    first, again, other = pipeline()(img, gen(5)), pipeline()(img, gen(5)), pipeline()(img, gen(6))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.shape == (3, 24, 24) and first.dtype == np.uint8 and first.flags.c_contiguous
    assert pipeline().output_layout == "CHW" and Compose([CenterCrop(4)]).output_layout == "HWC"


def test_to_uint8_chw_and_the_dataset_conversion():
    img = image(5, 6)
    np.testing.assert_array_equal(ToUint8CHW()(img), img.transpose(2, 0, 1))
    np.testing.assert_array_equal(augment.to_chw(img), img.transpose(2, 0, 1))
    np.testing.assert_array_equal(augment.to_chw(ToUint8CHW()(img), ToUint8CHW()), img.transpose(2, 0, 1))
    assert ToUint8CHW()(np.full((2, 2), 300.7)).tolist() == [[[255, 255], [255, 255]]]


def test_transforms_refuse_what_they_cannot_take():
    with pytest.raises(TypeError, match="RandomHorizontalFlip: needs an explicit np.random.Generator"):
        RandomHorizontalFlip()(image(), None)
    with pytest.raises(ValueError, match=r"CenterCrop: expected a uint8 image of shape \(H, W, C\)"):
        CenterCrop(4)(np.zeros((3, 8, 8), np.float32))
    with pytest.raises(ValueError, match="RandomResizedCrop: size must be a positive int"):
        RandomResizedCrop(0)


def test_resize_gives_a_decode_hint_and_compose_forwards_it():
    assert Resize(64).decode_hint(480, 640) == (64, 85)
    assert Compose([Resize(64), CenterCrop(64)]).decode_hint(480, 640) == (64, 85)
    assert Compose([RandomResizedCrop(64)]).decode_hint(480, 640) is None


# -- NormalizeOnDevice ----------------------------------------------------------------------------------

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_normalize_on_device_matches_the_closed_form(backend):
    host = np.random.default_rng(0).integers(0, 256, size=(2, 3, 5, 4), dtype=np.uint8)
    expected = (host / 255.0 - np.array(MEAN)[:, None, None]) / np.array(STD)[:, None, None]
    normalize = NormalizeOnDevice(MEAN, STD)
    raw = backend.from_host(host)
    out = normalize(raw)
    assert not isinstance(out, xpnet.Tensor) and str(out.dtype).endswith("float32")
    np.testing.assert_allclose(xpnet.to_numpy(out), expected, rtol=1e-5, atol=1e-5)
    tensor_out = normalize(xpnet.Tensor(raw))
    assert isinstance(tensor_out, xpnet.Tensor)
    np.testing.assert_allclose(xpnet.to_numpy(tensor_out), expected, rtol=1e-5, atol=1e-5)
    previous = xpnet.get_default_dtype()
    xpnet.set_default_dtype("float64")
    try:
        wide = normalize(raw)
        assert str(wide.dtype).endswith("float64")
        np.testing.assert_allclose(xpnet.to_numpy(wide), expected, rtol=1e-12, atol=1e-12)
    finally:
        xpnet.set_default_dtype(previous)
    single = NormalizeOnDevice(0.5, 0.25, scale=1.0)(backend.from_host(host[:, :1]))
    np.testing.assert_allclose(xpnet.to_numpy(single), (host[:, :1] - 0.5) / 0.25, rtol=1e-6)


def test_normalize_on_device_refuses_mismatched_batches(backend):
    normalize = NormalizeOnDevice(MEAN, STD)
    with pytest.raises(ValueError, match="NormalizeOnDevice: 3 mean/std values for a batch with 2 channels"):
        normalize(backend.from_host(np.zeros((1, 2, 3, 3), np.uint8)))
    with pytest.raises(ValueError, match=r"expected a batch of shape \(N, C, H, W\)"):
        normalize(backend.from_host(np.zeros((3, 3, 3), np.uint8)))
    with pytest.raises(ValueError, match="std must be positive"):
        NormalizeOnDevice(MEAN, (0.2, 0.0, 0.2))


def test_normalize_on_device_module_imports_no_numpy():
    import ast
    import inspect

    from xpnet.data import device_transforms

    tree = ast.parse(inspect.getsource(device_transforms))
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    imported += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not any(name.split(".")[0] in ("numpy", "cupy") for name in imported), imported
