"""JPEG files decoded and augmented on the GPU: ``DataLoader(ImageFolder(DIR, transform=T), ...,
decode_on_device=True)`` (or a ``ShardDataset``) with nvImageCodec (``pip install
"xpnet[images-gpu]"``: nvJPEG, and the hardware JPEG decoder of the A100/H100 class where there is one).

Host-side module: it imports NumPy. Reading the files, their headers, and drawing each sample's box
and flip are host work, done by the loader's background thread; the pixels are not, except those of
files that are not JPEGs, which are decoded on the host as usual and uploaded.

What runs where. The loader's thread reads each file of a batch (refused unread above
``MAX_IMAGE_FILE_BYTES``), parses its header (nvImageCodec's ``CodeStream``; the pixel count is
checked against ``MAX_IMAGE_PIXELS`` before anything is decoded) and draws the sample's augmentation
from the sample's own generator (``SeedSequence([seed, epoch, index])`` for a folder, the
shard reader's per-sample generator for shards), exactly as the host pipeline draws it: a seeded run crops the same boxes and flips the same images either way. The
consumer's thread then decodes the batch's JPEGs in one call on the device, and crops, resizes and
flips them in a few batched array operations (``resample_batch``), giving (N, 3, S, S) uint8 to the
loader's ``device_transform`` (``NormalizeOnDevice``). Nothing crosses the bus but the files'
bytes. Workers are not used (``num_workers`` must be 0): the host work per image is a file read and
a header parse.

Transforms the device path carries out (the dataset's ``transform``, with a ShardDataset's
``image_size`` in place of ImageFolder's ``size``; anything else is refused when the loader is made):
    ``Compose([RandomResizedCrop(S, scale, ratio), RandomHorizontalFlip(p), ToUint8CHW()])``
    (the flip and ``ToUint8CHW`` optional; training), ``Compose([Resize(R), CenterCrop(C),
    ToUint8CHW()])`` (testing), ``Resize((H, W))`` or no transform with ``ImageFolder(size=(H, W))``
    (a plain resize).

Resizing is the host path's filter (Pillow's bilinear with antialiasing): output pixel i along an
axis is the normalised sum of the input pixels x weighted by ``max(0, 1 - |x + 0.5 - c_i| / s)``,
with ``c_i = (i + 0.5) * scale`` and the support ``s = max(scale, 1)``; the horizontal pass first,
rounded to uint8, then the vertical one, as Pillow. In float32 rather than Pillow's fixed point,
it stays within a grey level of it. The decoders differ as well (nvJPEG's inverse DCT and chroma
upsampling against libjpeg-turbo's), so device-decoded batches are close to host-decoded ones,
not equal to them bit for bit.
"""

from __future__ import annotations

import numpy as np

from ..autodiff.tensor import Tensor
from ..backends import get_default_dtype
from ..safe_io import memory_guard, read_bounded
from .augment import CenterCrop, Compose, RandomHorizontalFlip, RandomResizedCrop, Resize, ToUint8CHW
from .batching import sample_generator
from .dataset import Subset
from .decode import JPEG_MAGIC, MAX_IMAGE_FILE_BYTES, check_pixels, decode_image

INSTALL_COMMAND = 'pip install "xpnet[images-gpu]"'
INSTALL_HINT = f"decode_on_device needs nvImageCodec: {INSTALL_COMMAND}"
# the padded crops of one resampling group hold at most this many values (float32: 128 MiB), so one
# large photograph in a batch does not make every image of the batch cost its size
GROUP_VALUES = 1 << 25
# per sample and axis: first source pixel, source length, full output length, first output kept
_AXIS_FIELDS = 4

_NVIMGCODEC = []  # [module or None], filled on first use


def nvimgcodec_module():
    """``nvidia.nvimgcodec``, or None when it is not installed (imported once)."""
    if not _NVIMGCODEC:
        try:
            from nvidia import nvimgcodec
        except ImportError:
            nvimgcodec = None
        _NVIMGCODEC.append(nvimgcodec)
    return _NVIMGCODEC[0]


def require_nvimgcodec():
    module = nvimgcodec_module()
    if module is None:
        raise ImportError(INSTALL_HINT)
    return module


# -- which transform, as box and output sizes --------------------------------------------------------
class DevicePlan:
    """The device path's form of an ImageFolder transform: per sample, ``params(height, width, rng)``
    gives the source box, the output it is resampled to and the flip, drawing from ``rng`` what the
    host transform would draw, in the same order."""

    def __init__(self, transform, size):
        steps = list(transform.transforms) if isinstance(transform, Compose) else (
            [] if transform is None else [transform])
        if steps and isinstance(steps[-1], ToUint8CHW):
            steps = steps[:-1]
        kinds = [type(t) for t in steps]
        self.crop = self.resize = self.center = None
        self.flip_p = 0.0
        if transform is not None and size is not None:
            raise ValueError("decode_on_device: ImageFolder(size=...) with a transform resizes twice; give the "
                             "size through the transform (RandomResizedCrop, Resize) instead")
        if transform is None:
            if size is None:
                raise ValueError("decode_on_device: batches need one image size; give ImageFolder(size=...) or a "
                                 "transform (RandomResizedCrop, or Resize + CenterCrop)")
            self.out = tuple(size)
        elif kinds in ([RandomResizedCrop], [RandomResizedCrop, RandomHorizontalFlip]):
            self.crop = steps[0]
            self.flip_p = steps[1].p if len(steps) == 2 else 0.0
            self.out = tuple(self.crop.size)
        elif kinds == [Resize, CenterCrop]:
            self.resize, self.center = steps
            self.out = tuple(self.center.size)
        elif kinds == [Resize] and isinstance(steps[0].size, tuple):
            self.resize = steps[0]  # to one (height, width): a plain resize
            self.out = tuple(self.resize.size)
        else:
            raise ValueError(f"decode_on_device: the device path carries out RandomResizedCrop [+ "
                             f"RandomHorizontalFlip], Resize + CenterCrop or Resize((height, width)) (each "
                             f"optionally followed by ToUint8CHW), or a plain ImageFolder(size=...); got {transform!r}")

    def params(self, height, width, rng):
        """(y axis: start, length, full, offset; x axis: the same; flip) for an image of ``height`` x
        ``width``: source pixels [start, start + length) are resampled to ``full`` pixels, of which
        [offset, offset + out) are kept (outside [0, full): zeros, CenterCrop's padding)."""
        out_h, out_w = self.out
        if self.crop is not None:
            top, left, h, w = RandomResizedCrop.get_params((height, width), self.crop.scale, self.crop.ratio, rng)
            flip = bool(self.flip_p) and rng.random() < self.flip_p  # RandomHorizontalFlip's one draw
            return (top, h, out_h, 0, left, w, out_w, 0, int(flip))
        if self.resize is not None:  # with or without CenterCrop (without: the output is the resize)
            full_h, full_w = self.resize.output_size(height, width)
            return (0, height, full_h, _centre_offset(full_h, out_h), 0, width, full_w, _centre_offset(full_w, out_w), 0)
        return (0, height, out_h, 0, 0, width, out_w, 0, 0)


def _centre_offset(full, out):
    """CenterCrop's first row (or column) of ``out`` within ``full``: negative when it pads."""
    if out > full:
        return -((out - full) // 2)
    return int(round((full - out) / 2.0))


# -- resampling on the device -------------------------------------------------------------------------
def axis_weights(xp, params, out, span, dtype, device):
    """(N, out, span) weights of one axis for the N samples' ``params`` (N, 4) int64 host rows
    (start, length, full, offset): row i of sample n weighs source pixel x (0 <= x < length) by the
    triangle filter centred on output pixel offset + i of ``full``; rows outside [0, full) are zero."""
    host = np.asarray(params, dtype=np.float64)
    length, full, offset = (xp.asarray(host[:, k].reshape(-1, 1, 1), dtype=dtype, device=device) for k in (1, 2, 3))
    scale = length / full
    support = xp.maximum(scale, xp.ones_like(scale))
    index = xp.reshape(xp.arange(out, dtype=dtype, device=device), (1, out, 1)) + offset
    centre = (index + 0.5) * scale
    x = xp.reshape(xp.arange(span, dtype=dtype, device=device), (1, 1, span))
    weights = xp.maximum(1.0 - xp.abs(x + 0.5 - centre) / support, xp.zeros_like(centre))
    weights = xp.where(x < length, weights, xp.zeros_like(weights))
    weights = xp.where((index >= 0) & (index < full), weights, xp.zeros_like(weights))
    total = xp.sum(weights, axis=2, keepdims=True)
    return weights / xp.where(total > 0, total, xp.ones_like(total))


def _round_uint8(xp, values):
    return xp.clip(xp.round(values), 0.0, 255.0)


def resample_batch(xp, images, params, out, device=None):
    """(N, 3, out_h, out_w) uint8 from N uint8 (H, W, 3) arrays of namespace ``xp``, each cropped,
    resampled and flipped as its row of ``params`` (N, 9) says (``DevicePlan.params``): the
    horizontal pass, rounded to uint8, then the vertical one (Pillow's order and rounding). The
    crops are padded to the largest of a group and resampled together, in groups of at most
    ``GROUP_VALUES`` values."""
    params = np.asarray(params, dtype=np.int64).reshape(len(images), 9)
    parts, start = [], 0
    while start < len(images):
        stop, tallest, widest = start, 1, 1
        while stop < len(images):
            h, w = int(params[stop, 1]), int(params[stop, 5])
            if stop > start and (stop - start + 1) * max(tallest, h) * max(widest, w) * 3 > GROUP_VALUES:
                break
            tallest, widest, stop = max(tallest, h), max(widest, w), stop + 1
        parts.append(_resample_group(xp, images[start:stop], params[start:stop], out, tallest, widest, device))
        start = stop
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)


def _resample_group(xp, images, params, out, tallest, widest, device):
    out_h, out_w = out
    count = len(images)
    crops = xp.zeros((count, tallest, widest, 3), dtype=xp.uint8, device=device)
    for n, (image, row) in enumerate(zip(images, params)):
        top, h, left, w = (int(v) for v in (row[0], row[1], row[4], row[5]))
        crops[n, :h, :w, :] = image[top:top + h, left:left + w, :]
    values = xp.astype(crops, xp.float32)
    across = axis_weights(xp, params[:, 4:8], out_w, widest, xp.float32, device)
    flipped = xp.asarray(params[:, 8].reshape(-1, 1, 1) != 0, device=device)
    across = xp.where(flipped, xp.flip(across, axis=1), across)
    # horizontal: (N, 1, out_w, W) @ (N, H, W, 3) -> (N, H, out_w, 3)
    rows = _round_uint8(xp, xp.matmul(across[:, None, :, :], values))
    down = axis_weights(xp, params[:, 0:4], out_h, tallest, xp.float32, device)
    # vertical: (N, out_h, H) @ (N, H, out_w * 3) -> (N, out_h, out_w * 3)
    cols = xp.matmul(down, xp.reshape(rows, (count, tallest, out_w * 3)))
    pixels = xp.astype(_round_uint8(xp, cols), xp.uint8)
    return xp.permute_dims(xp.reshape(pixels, (count, out_h, out_w, 3)), (0, 3, 1, 2))


# -- the loader's two halves --------------------------------------------------------------------------
def image_folder_of(dataset):
    """(ImageFolder, index map) behind ``dataset``: an ImageFolder or a Subset of one; else a TypeError."""
    from .readers.folder import ImageFolder

    if isinstance(dataset, ImageFolder):
        return dataset, None
    if isinstance(dataset, Subset) and isinstance(dataset.dataset, ImageFolder):
        return dataset.dataset, np.asarray(dataset.indices, dtype=np.int64)
    raise TypeError(f"decode_on_device: the dataset must be an ImageFolder (or a Subset of one) or a "
                    f"ShardDataset, got {type(dataset).__name__}")


class EncodedRecipe:
    """The host half, for the loader's thread: batches of (files' bytes and names, JPEG flags,
    params (N, 9), labels) with every header checked and every box drawn; ``map_batch(spec, b,
    indices)`` for an ImageFolder, ``stream_batches(spec, part, parts)`` for a ShardDataset."""

    def __init__(self, dataset, batch_size, drop_last):
        from .shards import ShardDataset

        self.batch_size, self.drop_last = batch_size, drop_last
        if isinstance(dataset, ShardDataset):
            if callable(dataset.decode):
                raise ValueError("decode_on_device: the device decodes the shards' images; got a ShardDataset "
                                 f"with its own decode function {dataset.decode!r}")
            self.shards, self.folder, self.index_map = dataset, None, None
            mode, transform, size, self.owner = dataset.mode, dataset.transform, dataset.image_size, "ShardDataset"
        else:
            self.shards = None
            self.folder, self.index_map = image_folder_of(dataset)
            mode, transform, size = self.folder.mode, self.folder.transform, self.folder.size
            self.owner = "ImageFolder"
        if mode != "RGB":
            raise ValueError(f"decode_on_device: decodes to RGB; got {self.owner}(mode={mode!r})")
        self.plan = DevicePlan(transform, size)
        self.codec = require_nvimgcodec()

    def map_batch(self, spec, b, indices):
        items = []
        for i in indices:
            index = int(i) if self.index_map is None else int(self.index_map[int(i)])
            path = self.folder.paths[index]
            data = read_bounded(path, "an image", MAX_IMAGE_FILE_BYTES, "MAX_IMAGE_FILE_BYTES")
            items.append((path, data, self.folder.labels[index], sample_generator(spec.seed, spec.epoch, int(i))))
        return self._batch(items)

    def stream_batches(self, spec, part, parts):
        pending = []
        for (name, data, label), rng in self.shards.encoded_stream(spec.seed, spec.epoch, part, parts):
            pending.append((name, data, label, rng))
            if len(pending) == self.batch_size:
                yield self._batch(pending)
                pending = []
        if pending and not self.drop_last:
            yield self._batch(pending)

    def _batch(self, items):
        """(payloads, JPEG flags, params, labels) of (name, bytes, label, rng) items."""
        payloads, jpeg, params, labels = [], [], [], []
        for name, data, label, rng in items:
            is_jpeg = data[:3] == JPEG_MAGIC
            if is_jpeg:
                stream = self._header(data, name)
                height, width = stream.height, stream.width
                payloads.append((stream, name, len(data)))
            else:  # decoded here as the host path would, uploaded as pixels
                with memory_guard(name, "decoding an image"):
                    pixels = decode_image(data, name, mode="RGB", owner=self.owner)
                height, width = pixels.shape[:2]
                payloads.append((pixels, name, len(data)))
            jpeg.append(is_jpeg)
            params.append(self.plan.params(height, width, rng))
            labels.append(label)
        return payloads, jpeg, np.asarray(params, dtype=np.int64), np.asarray(labels, dtype=np.int64)

    def _header(self, data, name):
        try:
            stream = self.codec.CodeStream(data)
        except Exception as exc:  # noqa: BLE001 -- the library's own exception types
            raise ValueError(f"{self.owner}: cannot decode {name} ({len(data)} bytes): {type(exc).__name__}: "
                             f"{exc}") from None
        check_pixels(name, len(data), stream.height, stream.width, self.owner)
        return stream


class DeviceDecoder:
    """The device half, for the consumer's thread (the loader's ``_LoaderIterator`` calls
    ``upload``): decodes a host batch of ``EncodedRecipe`` on ``backend`` and returns (inputs,
    labels) Tensors, the inputs through ``device_transform`` (uint8 (N, 3, S, S) without one: cast to
    the default float dtype, as the host path casts)."""

    pinned = None  # the uploads are the files' bytes: no staging

    def __init__(self, backend, plan, device_transform):
        self.backend, self.plan, self.device_transform = backend, plan, device_transform
        codec = require_nvimgcodec()
        self.codec = codec
        device_id = getattr(backend.device, "id", -1) if backend.name == "cupy" else -1
        try:
            self.decoder = codec.Decoder(device_id=int(device_id))
        except RuntimeError as exc:  # no CUDA driver or device, no nvJPEG
            raise RuntimeError(f"decode_on_device: nvImageCodec could not start a decoder for {backend} "
                               f"(it needs a CUDA device and driver, and nvJPEG): {exc}") from None
        self.params = codec.DecodeParams(apply_exif_orientation=False, color_spec=codec.ColorSpec.SRGB,
                                         allow_any_depth=False, sample_format=codec.SampleFormat.I_RGB)

    def upload(self, host, transient=False):
        payloads, jpeg, params, labels = host
        backend, xp = self.backend, self.backend.xp
        streams = [p[0] for p, is_jpeg in zip(payloads, jpeg) if is_jpeg]
        decoded = iter(self._decode(streams, [p for p, is_jpeg in zip(payloads, jpeg) if is_jpeg]))
        images = [self._to_backend(next(decoded)) if is_jpeg else backend.from_host(p[0])
                  for p, is_jpeg in zip(payloads, jpeg)]
        for image, (_, path, nbytes) in zip(images, payloads):
            if tuple(image.shape[2:]) != (3,):
                raise ValueError(f"decode_on_device: {path} ({nbytes} bytes) decoded to shape "
                                 f"{tuple(image.shape)}, expected (H, W, 3)")
        device = backend.device if backend.name != "numpy" else None
        x = Tensor(resample_batch(xp, images, params, self.plan.out, device=device))
        if self.device_transform is not None:
            out = self.device_transform(x)
            x = out if isinstance(out, Tensor) else Tensor(out)
        else:
            x = Tensor(xp.astype(x.data, backend.dtype(str(get_default_dtype()))))
        return x, Tensor(backend.from_host(labels))

    def _decode(self, streams, payloads):
        if not streams:
            return []
        stream = 0
        if self.backend.name == "cupy":
            import cupy

            stream = cupy.cuda.get_current_stream().ptr  # decoded on the consumer's stream
        images = self.decoder.decode(streams, params=self.params, cuda_stream=stream)
        for image, (_, path, nbytes) in zip(images, payloads):
            if image is None:
                raise ValueError(f"decode_on_device: cannot decode {path} ({nbytes} bytes) on the device "
                                 f"(nvImageCodec)")
        return images

    def _to_backend(self, image):
        if self.backend.name == "cupy":
            import cupy

            return cupy.asarray(image)  # the device buffer itself, through __cuda_array_interface__
        host = image.cpu() if hasattr(image, "cpu") else image
        return self.backend.from_host(np.asarray(host, dtype=np.uint8))
