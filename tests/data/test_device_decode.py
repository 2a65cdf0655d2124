"""decode_on_device: JPEGs decoded and augmented on the device (xpnet.data.device_decode).

On the CPU backends the decoder is a stand-in with nvImageCodec's interface (CodeStream, Decoder,
DecodeParams) that decodes with simplejpeg: what is tested here is everything around it, the
headers, the boxes drawn per sample, the crop/resize/flip against the host pipeline (Pillow) and
the loader. With a CUDA device and nvImageCodec installed, the gpu test decodes for real.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

import xpnet
from xpnet import data
from xpnet.data import augment, device_decode

simplejpeg = pytest.importorskip("simplejpeg")
Image = pytest.importorskip("PIL.Image")


def _stand_in():
    """A module with the parts of nvidia.nvimgcodec the device path uses, decoding on the host."""

    class CodeStream:
        def __init__(self, data):
            self.data = bytes(data)
            self.height, self.width, _, _ = simplejpeg.decode_jpeg_header(self.data)
            self.codec_name = "jpeg"

    class Decoder:
        calls = []

        def __init__(self, device_id=-1):
            self.device_id = device_id

        def decode(self, streams, params=None, cuda_stream=0):
            Decoder.calls.append(len(streams))
            out = []
            for s in streams:
                try:
                    out.append(simplejpeg.decode_jpeg(s.data, colorspace="RGB"))
                except ValueError:
                    out.append(None)  # nvImageCodec's answer for an image it cannot decode
            return out

    return types.SimpleNamespace(CodeStream=CodeStream, Decoder=Decoder, DecodeParams=lambda **kw: kw,
                                 ColorSpec=types.SimpleNamespace(SRGB="srgb"),
                                 SampleFormat=types.SimpleNamespace(I_RGB="i_rgb"))


@pytest.fixture
def codec(monkeypatch):
    module = _stand_in()
    monkeypatch.setattr(device_decode, "nvimgcodec_module", lambda: module)
    return module


def _photo(rng, height, width):
    coarse = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.float32)
    return np.clip(smooth + rng.normal(0, 10, smooth.shape), 0, 255).astype(np.uint8)


def _folder(root, rng, count=12, png=()):
    sizes = [(150, 200), (200, 150), (97, 131), (240, 180)]
    for i in range(count):
        folder = root / f"c{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = _photo(rng, *sizes[i % len(sizes)])
        if i in png:
            Image.fromarray(pixels).save(folder / f"{i:03d}.png")
        else:
            (folder / f"{i:03d}.jpg").write_bytes(simplejpeg.encode_jpeg(pixels, quality=92))
    return root


def _host_reference(img, plan, rng):
    """The host pipeline's result for ``plan`` (Pillow's resize), uint8 (3, H, W)."""
    if plan == "rrc":
        t = augment.Compose([augment.RandomResizedCrop(48, scale=(0.2, 1.0)), augment.RandomHorizontalFlip()])
    elif plan == "resize_center":
        t = augment.Compose([augment.Resize(40), augment.CenterCrop(36)])
    elif plan == "resize_pair":
        t = augment.Compose([augment.Resize((30, 44))])
    else:  # a center crop larger than the resized image: CenterCrop pads with zeros
        t = augment.Compose([augment.Resize(30), augment.CenterCrop((34, 50))])
    return np.transpose(t(img, rng), (2, 0, 1)), t


@pytest.mark.parametrize("plan", ["rrc", "resize_center", "resize_pair", "pad"])
def test_resampling_matches_the_host_pipeline(backend, plan):
    rng = np.random.default_rng(4)
    images = [_photo(rng, h, w) for h, w in ((150, 200), (200, 150), (97, 131), (64, 64), (240, 180))]
    expected, params = [], []
    for k, img in enumerate(images):
        want, transform = _host_reference(img, plan, np.random.default_rng(k))
        expected.append(want)
        params.append(device_decode.DevicePlan(transform, None).params(*img.shape[:2], np.random.default_rng(k)))
    out_size = expected[0].shape[1:]
    got = device_decode.resample_batch(backend.xp, [backend.from_host(i) for i in images], np.array(params),
                                       out_size, device=backend.device if backend.name != "numpy" else None)
    got = xpnet.to_numpy(got)
    assert got.dtype == np.uint8 and got.shape == (len(images), 3) + tuple(out_size)
    diff = np.abs(got.astype(np.int16) - np.stack(expected).astype(np.int16))
    assert diff.max() <= 1  # float weights against Pillow's fixed point
    assert (diff == 0).mean() > 0.97
    if plan == "rrc":
        flips = [p[8] for p in params]
        assert 0 < sum(flips) < len(flips)  # both branches exercised


def test_groups_of_crops_give_what_one_group_gives(backend, monkeypatch):
    rng = np.random.default_rng(2)
    images = [backend.from_host(_photo(rng, h, w)) for h, w in ((150, 200), (60, 90), (120, 80))]
    plan = device_decode.DevicePlan(augment.RandomResizedCrop(24), None)
    params = np.array([plan.params(*i.shape[:2], np.random.default_rng(k)) for k, i in enumerate(images)])
    whole = xpnet.to_numpy(device_decode.resample_batch(backend.xp, images, params, (24, 24)))
    monkeypatch.setattr(device_decode, "GROUP_VALUES", 1)  # one image per group
    apart = xpnet.to_numpy(device_decode.resample_batch(backend.xp, images, params, (24, 24)))
    np.testing.assert_array_equal(apart, whole)


def test_loader_decoding_on_the_device_gives_the_host_batches(backend, codec, tmp_path):
    root = _folder(tmp_path / "imgs", np.random.default_rng(0), count=12, png=(5,))
    transform = augment.Compose([augment.RandomResizedCrop(32), augment.RandomHorizontalFlip(), augment.ToUint8CHW()])
    normalize = data.NormalizeOnDevice((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    kwargs = dict(batch_size=5, shuffle=True, seed=3, device_transform=normalize)
    host = data.DataLoader(data.ImageFolder(root, transform=transform), **kwargs)
    device = data.DataLoader(data.ImageFolder(root, transform=transform), decode_on_device=True, **kwargs)
    for epoch in range(2):
        pairs = list(zip(host, device))
        assert len(pairs) == 3  # 12 images in batches of 5
        for (hx, hy), (dx, dy) in pairs:
            np.testing.assert_array_equal(xpnet.to_numpy(dy.data), xpnet.to_numpy(hy.data))
            assert dx.shape == hx.shape and dx.dtype == hx.dtype
            # the same boxes and flips; pixels within a grey level (0.25 std: 1/255/0.25 per level)
            np.testing.assert_allclose(xpnet.to_numpy(dx.data), xpnet.to_numpy(hx.data), atol=1.01 / 255 / 0.25)
    assert codec.Decoder.calls and max(codec.Decoder.calls) <= 5  # one decode call per batch, JPEGs only
    assert sum(codec.Decoder.calls) == 2 * 11  # the PNG went through the host decoder


def test_loader_without_a_device_transform_casts_and_subsets_work(backend, codec, tmp_path):
    root = _folder(tmp_path / "imgs", np.random.default_rng(1), count=6)
    # (80, 110) is more than half of every stored size: the host decodes at full scale too, not
    # at a reduced DCT scale (which the device decoder does not do), so both resize the same pixels
    folder = data.ImageFolder(root, size=(80, 110))
    subset = data.Subset(folder, [4, 1, 2])
    host = next(iter(data.DataLoader(subset, batch_size=3)))
    device = next(iter(data.DataLoader(subset, batch_size=3, decode_on_device=True)))
    assert device[0].dtype == host[0].dtype and xpnet.get_default_dtype() == device[0].dtype
    assert device[0].shape == (3, 3, 80, 110)
    np.testing.assert_allclose(xpnet.to_numpy(device[0].data), xpnet.to_numpy(host[0].data), atol=1.0)
    np.testing.assert_array_equal(xpnet.to_numpy(device[1].data), folder.labels[[4, 1, 2]])


def _shards(folder, root, count):
    """The JPEGs of ``root`` as ``count`` webdataset shards (``key.jpg`` + ``key.cls``)."""
    import io
    import tarfile

    files = sorted(root.rglob("*.jpg"))
    folder.mkdir()
    for s in range(count):
        with tarfile.open(folder / f"train-{s:03d}.tar", "w") as archive:
            for k, path in enumerate(files[s::count]):
                for name, payload in ((f"{s:03d}{k:04d}.jpg", path.read_bytes()),
                                      (f"{s:03d}{k:04d}.cls", str(int(path.parent.name[1:])).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    archive.addfile(info, io.BytesIO(payload))
    return str(folder / f"train-{{000..{count - 1:03d}}}.tar")


def test_shard_streams_decode_on_the_device_as_on_the_host(backend, codec, tmp_path):
    pattern = _shards(tmp_path / "shards", _folder(tmp_path / "imgs", np.random.default_rng(5), count=12), 3)
    transform = augment.Compose([augment.RandomResizedCrop(24), augment.RandomHorizontalFlip()])
    make = lambda: data.ShardDataset(pattern, transform=transform, shuffle_buffer=4)  # noqa: E731
    host = list(data.DataLoader(make(), batch_size=5, seed=2))
    device = list(data.DataLoader(make(), batch_size=5, seed=2, decode_on_device=True))
    assert [x.shape[0] for x, _ in device] == [x.shape[0] for x, _ in host] == [5, 5, 2]
    for (hx, hy), (dx, dy) in zip(host, device):
        np.testing.assert_array_equal(xpnet.to_numpy(dy.data), xpnet.to_numpy(hy.data))
        np.testing.assert_allclose(xpnet.to_numpy(dx.data), xpnet.to_numpy(hx.data), atol=1.0)
    dropped = list(data.DataLoader(make(), batch_size=5, seed=2, drop_last=True, decode_on_device=True))
    assert len(dropped) == 2
    own = data.ShardDataset(pattern, transform=transform, decode=lambda b, name: np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="its own decode function"):
        data.DataLoader(own, decode_on_device=True)


def test_what_the_device_path_refuses_is_refused_when_the_loader_is_made(codec, tmp_path, monkeypatch):
    root = _folder(tmp_path / "imgs", np.random.default_rng(0), count=6)
    crop = augment.Compose([augment.RandomResizedCrop(16)])
    with pytest.raises(ValueError, match="no num_workers"):
        data.DataLoader(data.ImageFolder(root, transform=crop), num_workers=1, decode_on_device=True)
    jitter = augment.Compose([augment.RandomResizedCrop(16), augment.ColorJitter(0.4)])
    with pytest.raises(ValueError, match="RandomResizedCrop.*got Compose"):
        data.DataLoader(data.ImageFolder(root, transform=jitter), decode_on_device=True)
    with pytest.raises(ValueError, match="RandomResizedCrop.*got Compose"):  # an int Resize: sizes vary
        data.DataLoader(data.ImageFolder(root, transform=augment.Compose([augment.Resize(30)])), decode_on_device=True)
    with pytest.raises(ValueError, match="one image size"):
        data.DataLoader(data.ImageFolder(root), decode_on_device=True)
    with pytest.raises(ValueError, match="resizes twice"):
        data.DataLoader(data.ImageFolder(root, size=32, transform=crop), decode_on_device=True)
    with pytest.raises(ValueError, match="RGB"):
        data.DataLoader(data.ImageFolder(root, size=32, mode="L"), decode_on_device=True)
    with pytest.raises(TypeError, match="ImageFolder"):
        data.DataLoader(data.TensorDataset(np.zeros((4, 3, 8, 8), np.uint8), np.zeros(4)), decode_on_device=True)
    with pytest.raises(ValueError, match="decode_on_device must be True or False"):
        data.DataLoader(data.ImageFolder(root, size=32), decode_on_device="yes")
    monkeypatch.setattr(device_decode, "nvimgcodec_module", lambda: None)
    with pytest.raises(ImportError, match=r"xpnet\[images-gpu\]"):
        data.DataLoader(data.ImageFolder(root, size=32), decode_on_device=True)


def test_hostile_files_are_named(backend, codec, tmp_path, monkeypatch):
    root = _folder(tmp_path / "imgs", np.random.default_rng(0), count=6)
    victim = sorted(root.rglob("*.jpg"))[2]
    good = victim.read_bytes()
    victim.write_bytes(good[:600] + b"\x00" * 64)  # the header parses, the body does not decode
    loader = data.DataLoader(data.ImageFolder(root, size=16), batch_size=6, decode_on_device=True)
    with pytest.raises(ValueError, match=f"cannot decode {victim}"):
        next(iter(loader))
    victim.write_bytes(good)
    monkeypatch.setattr(data.decode, "pixel_limit", lambda: 100 * 100)  # every photo here is larger
    with pytest.raises(data.decode.DecompressionBombRefused, match="decompression bomb"):
        next(iter(data.DataLoader(data.ImageFolder(root, size=16), batch_size=6, decode_on_device=True)))


def test_real_code_stream_headers_when_nvimgcodec_is_installed():
    codec = device_decode.nvimgcodec_module()
    if codec is None:
        pytest.skip("nvImageCodec is not installed (pip install 'xpnet[images-gpu]')")
    pixels = _photo(np.random.default_rng(0), 75, 110)
    stream = codec.CodeStream(simplejpeg.encode_jpeg(pixels, quality=90))  # parsing needs no GPU
    assert (stream.height, stream.width) == (75, 110)


@pytest.mark.gpu
def test_nvimgcodec_decodes_on_the_gpu_close_to_the_host(tmp_path):
    if device_decode.nvimgcodec_module() is None:
        pytest.skip("nvImageCodec is not installed (pip install 'xpnet[images-gpu]')")
    root = _folder(tmp_path / "imgs", np.random.default_rng(0), count=8)
    transform = augment.Compose([augment.RandomResizedCrop(64), augment.RandomHorizontalFlip(), augment.ToUint8CHW()])
    with xpnet.use_backend("cupy"):
        host = next(iter(data.DataLoader(data.ImageFolder(root, transform=transform), batch_size=8, seed=1)))
        device = next(iter(data.DataLoader(data.ImageFolder(root, transform=transform), batch_size=8, seed=1,
                                           decode_on_device=True)))
    diff = np.abs(xpnet.to_numpy(device[0].data) - xpnet.to_numpy(host[0].data))
    assert diff.mean() < 1.5 and np.percentile(diff, 99) < 8  # two JPEG decoders, then one resize
    np.testing.assert_array_equal(xpnet.to_numpy(device[1].data), xpnet.to_numpy(host[1].data))


def test_info_says_whether_the_gpu_decoder_is_installed(codec, monkeypatch):
    from xpnet.info import info_text

    codec.__version__ = "0.9.0"
    assert "GPU image decoder: nvImageCodec 0.9.0 (DataLoader(..., decode_on_device=True))" in info_text()
    monkeypatch.setattr(device_decode, "nvimgcodec_module", lambda: None)
    assert 'GPU image decoder: not installed (pip install "xpnet[images-gpu]")' in info_text()


def test_xpnet_train_decodes_on_the_device(codec, tmp_path, capsys):
    from xpnet.cli import main

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        _folder(tmp_path / "images" / split, rng, count=12)
    out = tmp_path / "run"
    code = main(["train", "--model", "lenet5", "--dataset", f"folder:{tmp_path / 'images'}", "--image-size", "32",
                 "--epochs", "1", "--batch-size", "4", "--decode-on-device", "--out", str(out), "--seed", "1"])
    printed = capsys.readouterr()
    assert code == 0, printed
    assert "test accuracy" in printed.out and (out / "history.csv").exists()
    assert sum(codec.Decoder.calls) >= 12 + 12  # every training and test image went through it
    code = main(["train", "--model", "lenet5", "--dataset", "synthetic", "--decode-on-device", "--epochs", "1"])
    assert code != 0 and "--decode-on-device decodes image files" in capsys.readouterr().err
