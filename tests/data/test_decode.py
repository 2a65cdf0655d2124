"""Image decoding (xpnet.data.decode): simplejpeg and Pillow agree, reduced-scale JPEG decoding,
hostile files, and ImageFolder's per-sample transforms."""

from __future__ import annotations

import io

import numpy as np
import pytest

Image = pytest.importorskip("PIL.Image")

from xpnet.data import ImageFolder, augment, decode, decoder_name  # noqa: E402
from xpnet.data.decode import DecompressionBombRefused, decode_file, decode_image, reduction_factor  # noqa: E402


def smooth(height=240, width=320, seed=0):
    """A photograph-like image: gradients plus mild noise (JPEG handles it as it handles photos)."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255.0 / width, y * 255.0 / height, 128 + 60 * np.sin(x / 17.0 + y / 23.0)], axis=-1)
    noise = np.random.default_rng(seed).normal(0, 4, size=base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def jpeg_bytes(pixels, quality=92, mode=None):
    buffer = io.BytesIO()
    picture = Image.fromarray(pixels)
    if mode:
        picture = picture.convert(mode)
    picture.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def simplejpeg_or_skip():
    return pytest.importorskip("simplejpeg")


class Spy:
    """Wraps a function, recording the keyword arguments of each call."""

    def __init__(self, function):
        self.function, self.calls = function, []

    def __call__(self, *args, **kwargs):
        self.calls.append(kwargs)
        return self.function(*args, **kwargs)


# -- the two decoders -----------------------------------------------------------------------------

def test_simplejpeg_and_pillow_decode_alike():
    simplejpeg_or_skip()
    pixels = smooth()
    data = jpeg_bytes(pixels)
    fast, slow = decode_image(data, "x.jpg"), decode_image(data, "x.jpg", decoder="pillow")
    assert fast.shape == slow.shape == (240, 320, 3) and fast.dtype == np.uint8
    assert np.abs(fast.astype(int) - slow).mean() < 1.0
    assert np.abs(fast.astype(int) - pixels).mean() < 4.0
    grey_fast = decode_image(data, "x.jpg", mode="L")
    grey_slow = decode_image(data, "x.jpg", mode="L", decoder="pillow")
    assert grey_fast.shape == grey_slow.shape == (240, 320, 1)
    assert np.abs(grey_fast.astype(int) - grey_slow).mean() < 1.5


def test_non_jpeg_formats_go_to_pillow():
    pixels = smooth(20, 30)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    np.testing.assert_array_equal(decode_image(buffer.getvalue(), "x.png"), pixels)
    np.testing.assert_array_equal(decode_image(buffer.getvalue(), "x.png", size=(10, 15)),
                                  np.asarray(Image.fromarray(pixels).resize((15, 10), Image.BILINEAR)))


def test_cmyk_jpeg_is_left_to_pillow():
    simplejpeg_or_skip()
    data = jpeg_bytes(smooth(32, 40), mode="CMYK")
    np.testing.assert_array_equal(decode_image(data, "c.jpg"), decode_image(data, "c.jpg", decoder="pillow"))


@pytest.mark.parametrize("stored,target,k", [
    ((480, 640), (240, 320), 2), ((480, 640), (241, 320), 1), ((480, 640), (100, 150), 4), ((480, 640), (60, 80), 8),
    ((480, 640), (10, 10), 8), ((481, 641), (241, 321), 2), ((480, 640), None, 1), ((100, 100), (200, 200), 1),
])
def test_reduction_factor_is_the_largest_power_of_two_that_covers(stored, target, k):
    assert reduction_factor(stored, target) == k


@pytest.mark.parametrize("size,options,decoded", [
    ((100, 150), {"min_height": 120, "min_width": 160}, (120, 160)),  # at most a quarter: 1/4 scale
    ((120, 160), {"min_height": 120, "min_width": 160}, (120, 160)),
    ((200, 100), {"min_height": 240, "min_width": 320}, (240, 320)),  # half the height: 1/2 scale
    ((300, 400), {}, (480, 640)),                                   # more than half: full decode
])
def test_reduced_scale_decode_is_used_when_the_target_is_at_most_half(monkeypatch, size, options, decoded):
    simplejpeg = simplejpeg_or_skip()
    spy = Spy(simplejpeg.decode_jpeg)
    monkeypatch.setattr(simplejpeg, "decode_jpeg", spy)
    seen = []
    original = decode.resize_hwc
    monkeypatch.setattr(decode, "resize_hwc", lambda img, size, **kw: seen.append(img.shape[:2]) or original(img, size))
    pixels = smooth(480, 640)
    out = decode_image(jpeg_bytes(pixels), "big.jpg", size=size)
    assert out.shape == (*size, 3)
    assert len(spy.calls) == 1 and {k: v for k, v in spy.calls[0].items() if k.startswith("min_")} == options
    assert seen == ([decoded] if decoded != size else [])  # then resized to size, unless already there
    reference = np.asarray(Image.fromarray(pixels).resize((size[1], size[0]), Image.BILINEAR))
    assert np.abs(out.astype(int) - reference).mean() < 4.0


def test_pillow_uses_the_same_reduced_scale(monkeypatch):
    from PIL import JpegImagePlugin

    calls = []
    original = JpegImagePlugin.JpegImageFile.draft

    def draft(self, mode, size, *args):
        calls.append((mode, size))
        return original(self, mode, size, *args)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", draft)
    data = jpeg_bytes(smooth(480, 640))
    out = decode_image(data, "big.jpg", size=(100, 150), decoder="pillow")
    assert out.shape == (100, 150, 3) and calls == [("RGB", (160, 120))]
    calls.clear()
    decode_image(data, "big.jpg", size=(300, 400), decoder="pillow")
    assert calls == []
    if decode.simplejpeg_module() is not None:
        assert np.abs(out.astype(int) - decode_image(data, "big.jpg", size=(100, 150))).mean() < 1.0


def test_min_size_callable_reduces_without_resizing():
    simplejpeg_or_skip()
    out = decode_image(jpeg_bytes(smooth(480, 640)), "big.jpg", min_size=lambda h, w: (h // 3, w // 3))
    assert out.shape == (240, 320, 3)


# -- hostile files ----------------------------------------------------------------------------------

@pytest.mark.parametrize("decoder", ["auto", "pillow"])
def test_corrupt_jpeg_error_names_the_file(tmp_path, decoder):
    good = jpeg_bytes(smooth(64, 64))
    for name, content in (("garbage.jpg", b"\xff\xd8\xff\xe0 not a jpeg at all" * 4),
                          ("truncated.jpg", good[:len(good) // 2]),
                          ("empty.jpg", b"")):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ValueError) as info:
            decode_file(path, decoder=decoder, owner="ImageFolder")
        message = str(info.value)
        assert message.startswith(f"ImageFolder: cannot decode {path} ({len(content)} bytes): "), message


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_is_refused_from_the_jpeg_header(tmp_path, monkeypatch):
    simplejpeg = simplejpeg_or_skip()
    spy = Spy(simplejpeg.decode_jpeg)
    monkeypatch.setattr(simplejpeg, "decode_jpeg", spy)
    path = tmp_path / "bomb.jpg"
    path.write_bytes(jpeg_bytes(smooth(30, 40)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1200 pixels: above, but below Pillow's 2x error
    for decoder in ("auto", "pillow"):
        with pytest.raises(DecompressionBombRefused) as info:
            decode_file(path, decoder=decoder, owner="ImageFolder")
        assert str(info.value).startswith(f"ImageFolder: {path} (") and "1200 pixels" in str(info.value)
    assert spy.calls == []  # refused before any pixel was decoded


def test_image_files_above_the_bound_are_refused_unread(tmp_path, monkeypatch):
    path = tmp_path / "huge.jpg"
    with open(path, "wb") as handle:
        handle.truncate(2048)
    monkeypatch.setattr(decode, "MAX_IMAGE_FILE_BYTES", 1024)
    with pytest.raises(ValueError, match=f"{path}: an image of 2048 bytes is larger than the 1024 bytes accepted"):
        decode_file(path)


def test_a_fifo_named_like_a_jpeg_is_refused(tmp_path):
    import os

    if not hasattr(os, "mkfifo"):
        pytest.skip("FIFOs are POSIX")
    os.mkfifo(tmp_path / "pipe.jpg")
    with pytest.raises(ValueError, match="pipe.jpg: expected an image as a regular file, found a FIFO"):
        decode_file(tmp_path / "pipe.jpg")


def test_decoder_name_says_which_decoder(monkeypatch):
    import PIL

    name = decoder_name()
    if decode.simplejpeg_module() is not None:
        assert name == f"simplejpeg {decode.simplejpeg_module().__version__}"
    monkeypatch.setattr(decode, "_SIMPLEJPEG", [None])
    assert decoder_name() == f"Pillow {PIL.__version__}"
    with pytest.raises(ImportError, match="simplejpeg is not installed"):
        decode_image(jpeg_bytes(smooth(8, 8)), "x.jpg", decoder="simplejpeg")


def test_info_names_the_decoder():
    from xpnet.info import info_text

    assert f"image decoder: {decoder_name()}" in info_text()


def test_numpy_resize_is_within_one_level_of_pillow():
    rng = np.random.default_rng(0)
    for shape, size in (((48, 64, 3), (20, 30)), ((17, 23, 3), (40, 31)), ((30, 30, 1), (7, 90)), ((9, 9, 3), (9, 4))):
        img = rng.integers(0, 256, size=shape, dtype=np.uint8)
        pillow, numpy = decode.resize_hwc(img, size), decode.resize_hwc(img, size, use_pillow=False)
        assert pillow.shape == numpy.shape == (*size, shape[2])
        assert np.abs(pillow.astype(int) - numpy).max() <= 1


# -- ImageFolder with transforms --------------------------------------------------------------------

def write_jpeg_folder(root, per_class=2, size=(48, 64)):
    for label, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            (root / name / f"{i}.jpg").write_bytes(jpeg_bytes(smooth(*size, seed=10 * label + i)))


def test_image_folder_sample_applies_the_transform_with_the_given_generator(tmp_path):
    write_jpeg_folder(tmp_path)
    transform = augment.Compose([augment.RandomResizedCrop(16), augment.RandomHorizontalFlip()])
    folder = ImageFolder(tmp_path, transform=transform)
    image, label = folder.sample(2, np.random.default_rng(7))
    assert image.shape == (3, 16, 16) and image.dtype == np.uint8 and image.flags.c_contiguous and label == 1
    expected = transform(folder.decode(2), np.random.default_rng(7)).transpose(2, 0, 1)
    np.testing.assert_array_equal(image, expected)
    np.testing.assert_array_equal(folder.sample(2, np.random.default_rng(7))[0], image)
    # indexing is deterministic: the transform driven by default_rng(index)
    np.testing.assert_array_equal(folder[2][0], folder.sample(2, np.random.default_rng(2))[0])
    np.testing.assert_array_equal(folder[-2][0], folder[2][0])
    xb, yb = folder.get_batch(np.arange(4))
    assert xb.shape == (4, 3, 16, 16) and yb.tolist() == [0, 0, 1, 1]


def test_image_folder_without_transform_is_unchanged(tmp_path):
    write_jpeg_folder(tmp_path)
    folder = ImageFolder(tmp_path, size=(12, 16))
    image, label = folder[1]
    assert image.shape == (3, 12, 16) and label == 0
    np.testing.assert_array_equal(folder.sample(1, np.random.default_rng(0))[0], image)
    np.testing.assert_array_equal(folder.load(1), image)


def test_image_folder_transform_ending_in_chw_and_a_resize_hint(tmp_path, monkeypatch):
    simplejpeg = simplejpeg_or_skip()
    write_jpeg_folder(tmp_path, size=(96, 128))
    spy = Spy(simplejpeg.decode_jpeg)
    monkeypatch.setattr(simplejpeg, "decode_jpeg", spy)
    transform = augment.Compose([augment.Resize(24), augment.CenterCrop(24), augment.ToUint8CHW()])
    folder = ImageFolder(tmp_path, transform=transform)
    image, _ = folder[0]
    assert image.shape == (3, 24, 24)
    assert spy.calls[-1] == {"colorspace": "RGB", "min_height": 24, "min_width": 32}  # decoded at 1/4 scale
    pillow = ImageFolder(tmp_path, transform=transform, decoder="pillow")[0][0]
    assert np.abs(pillow.astype(int) - image).mean() < 1.0


def test_image_folder_refuses_bad_arguments(tmp_path):
    write_jpeg_folder(tmp_path)
    with pytest.raises(TypeError, match="ImageFolder: transform must be callable"):
        ImageFolder(tmp_path, transform="flip")
    with pytest.raises(ValueError, match="ImageFolder: decoder must be one of"):
        ImageFolder(tmp_path, decoder="turbo")
    with pytest.raises(IndexError, match="index 4 out of range for 4 images"):
        ImageFolder(tmp_path, size=8).sample(4, np.random.default_rng(0))


def test_load_dataset_folder_passes_transforms_and_keeps_sample_on_its_split(tmp_path):
    from xpnet.data import load_dataset

    write_jpeg_folder(tmp_path / "flat", per_class=10)
    transform = augment.Compose([augment.RandomResizedCrop(12), augment.RandomHorizontalFlip()])
    evaluation = augment.Compose([augment.Resize(14), augment.CenterCrop(12)])
    splits = load_dataset(f"folder:{tmp_path / 'flat'}", transform=transform, test_transform=evaluation)
    assert splits.input_shape == (3, 12, 12) and len(splits.train) == 18 and len(splits.test) == 2
    assert splits.test[0][0].shape == (3, 12, 12)
    with pytest.raises(ValueError, match=r"test inputs have shape \(3, 224, 224\) but training inputs have shape "
                                         r"\(3, 12, 12\)"):  # no test transform: the default size
        load_dataset(f"folder:{tmp_path / 'flat'}", transform=transform)
    inner = int(splits.train.indices[3])
    image, label = splits.train.sample(3, np.random.default_rng(11))
    reference, reference_label = splits.train.dataset.sample(inner, np.random.default_rng(11))
    np.testing.assert_array_equal(image, reference)
    assert label == reference_label
    sized = load_dataset(f"folder:{tmp_path / 'flat'}", image_size=20, transform=augment.RandomHorizontalFlip(),
                         test_transform=augment.CenterCrop(20))
    assert sized.train[0][0].shape == (3, 20, 20) == sized.test[0][0].shape  # image_size applies to both


def test_image_folder_with_a_transform_survives_pickling(tmp_path):
    import pickle

    write_jpeg_folder(tmp_path)
    folder = ImageFolder(tmp_path, transform=augment.Compose([augment.RandomResizedCrop(8), augment.Lighting()]))
    copy = pickle.loads(pickle.dumps(folder))  # as DataLoader workers started with spawn receive it
    np.testing.assert_array_equal(copy.sample(1, np.random.default_rng(3))[0],
                                  folder.sample(1, np.random.default_rng(3))[0])
