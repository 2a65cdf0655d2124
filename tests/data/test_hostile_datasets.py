"""Invalid dataset contents (issue #13): labels, image folders, splits, Pillow's refusals, loader
arguments. Each is a clear error naming the file or argument, the value found and what is accepted."""

from __future__ import annotations

import errno
import re
import struct
import warnings

import numpy as np
import pytest

from xpnet.data import (
    DataLoader,
    ImageFolder,
    TensorDataset,
    channel_stats,
    load_cifar10,
    load_dataset,
    load_mnist,
    read_cifar_python,
    register_dataset,
)
from xpnet.data.readers import _REGISTRY, DatasetSplits
from xpnet.data.readers.folder import MAX_SIZE_PIXELS

IDX_CODES = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}


def write_idx(path, array):
    array = np.asarray(array)
    header = bytes([0, 0, IDX_CODES[array.dtype.str[1:]], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(array.dtype.newbyteorder(">")).tobytes())


def write_mnist(directory, train=(7, 28, 28), test=(5, 28, 28), train_labels=None):
    rng = np.random.default_rng(0)
    for split, shape in (("train", train), ("t10k", test)):
        write_idx(directory / f"{split}-images-idx3-ubyte", rng.integers(0, 256, shape, dtype=np.uint8))
        labels = rng.integers(0, 10, shape[0]).astype(np.uint8)
        write_idx(directory / f"{split}-labels-idx1-ubyte", train_labels if split == "train" and
                  train_labels is not None else labels)


# -- labels ---------------------------------------------------------------------------------------

def test_negative_int8_mnist_labels_are_refused(tmp_path):
    write_mnist(tmp_path, train=(3, 28, 28), train_labels=np.array([4, -3, 1], np.int8))
    with pytest.raises(ValueError) as info:
        load_mnist(tmp_path)
    assert str(info.value) == (f"{tmp_path / 'train-labels-idx1-ubyte'}: corrupt labels: expected values 0..9 "
                               f"(the range [0, 10)), found -3 at index 1 (values from -3 up to 4)")


def test_float_mnist_labels_are_refused(tmp_path):
    write_mnist(tmp_path, train=(2, 28, 28), train_labels=np.array([1.0, 2.5], np.float32))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte: corrupt labels: expected integers, found float32"):
        load_mnist(tmp_path)


def py2_batch(tmp_path, labels, n=2):
    import pickle

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir(exist_ok=True)
    batch = {b"data": np.zeros((n, 3072), np.uint8), b"labels": labels}
    for name in ("data_batch_1", "test_batch"):
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return folder


@pytest.mark.parametrize("labels,message", [
    ([0.5, 1.7], "corrupt labels: expected integers, found float64 values"),
    ([3, -1], r"corrupt labels: expected values 0..9 \(the range \[0, 10\)\), found -1 at index 1"),
    ([3, 2**70], "corrupt labels: expected integers, found object values"),
    ([[1, 2], [3]], "corrupt labels: expected integers, found values NumPy cannot hold in one array"),
    ({b"a": 1}, r"expected b'labels' as a list of 2 integers, found dict"),
], ids=["floats", "negative", "huge-int", "ragged", "not-a-list"])
def test_cifar_python_labels_must_be_integers_in_range(tmp_path, labels, message):
    folder = py2_batch(tmp_path, labels)
    with pytest.raises(ValueError, match=f"{re.escape(str(folder / 'data_batch_1'))}: {message}"):
        load_cifar10(tmp_path)


def test_cifar_python_data_must_be_an_array(tmp_path):
    path = py2_batch(tmp_path, [0, 1]) / "test_batch"
    import pickle

    path.write_bytes(pickle.dumps({b"data": [[0] * 3072] * 2, b"labels": [0, 1]}, protocol=2))
    with pytest.raises(ValueError, match=r"expected data of uint8 shape \(N, 3072\), found list"):
        read_cifar_python(path)


def test_cifar_meta_file_with_the_wrong_number_of_names_is_an_error(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for name in ("data_batch_1.bin", "test_batch.bin"):
        (folder / name).write_bytes(bytes(3073))
    (folder / "batches.meta.txt").write_text("cat\ndog\n")
    with pytest.raises(ValueError, match=r"batches.meta.txt: expected 10 class names for CIFAR-10 \(fine labels\), "
                                         r"found 2"):
        load_dataset(f"cifar10:{tmp_path}")


# -- image folders --------------------------------------------------------------------------------

def write_folder(root, classes=("cat", "dog"), per_class=2, size=(6, 5)):
    image = pytest.importorskip("PIL.Image")
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image.new("RGB", size, (40 * i, 100, 200)).save(root / name / f"{i}.png")


def test_empty_class_folder_is_refused_naming_it(tmp_path):
    write_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError) as info:
        ImageFolder(tmp_path, size=4)
    assert str(info.value) == (f"ImageFolder: class folder {tmp_path / 'empty'} holds no images (.jpg, .jpeg, .png, "
                               f".bmp, .gif, .ppm, .pgm, .tif, .tiff, .webp); every class folder needs at least one")


def test_a_single_class_is_refused(tmp_path):
    write_folder(tmp_path, classes=("cat",))
    with pytest.raises(ValueError) as info:
        load_dataset(f"folder:{tmp_path}", image_size=4)
    assert str(info.value) == (f"ImageFolder: {tmp_path} has 1 class folder(s) ['cat']; a classifier needs at least "
                               f"two classes, one subfolder each")


def test_val_classes_unknown_to_train_are_still_refused(tmp_path):
    write_folder(tmp_path / "train")
    write_folder(tmp_path / "val", classes=("cat", "dog", "emu"))
    with pytest.raises(ValueError, match=r"val has class folders \['emu'\] that are not among the 2 given classes"):
        load_dataset(f"folder:{tmp_path}", image_size=4)


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="FIFOs are POSIX")
def test_fifo_named_like_an_image_is_refused_when_the_folder_is_scanned(tmp_path):
    import os

    write_folder(tmp_path)
    os.mkfifo(tmp_path / "dog" / "pipe.png")
    with pytest.raises(ValueError) as info:
        ImageFolder(tmp_path, size=4)
    assert str(info.value) == (f"{tmp_path / 'dog' / 'pipe.png'}: expected an image as a regular file, found a FIFO "
                               f"(named pipe); only regular files are read")


@pytest.mark.parametrize("size", [0, -3, (0, 5), (4, -1), True, 2.5, "8", (4, 4, 4), 100_000])
def test_invalid_image_size_blames_the_argument(tmp_path, size):
    write_folder(tmp_path)
    with pytest.raises(ValueError, match=r"load_dataset\(folder\): image_size") as info:
        load_dataset(f"folder:{tmp_path}", image_size=size)
    assert "cannot decode" not in str(info.value) and repr(size) in str(info.value)
    with pytest.raises(ValueError, match="ImageFolder: size"):
        ImageFolder(tmp_path, size=size)


def test_image_size_message_says_what_is_accepted(tmp_path):
    write_folder(tmp_path)
    with pytest.raises(ValueError) as info:
        load_dataset(f"folder:{tmp_path}", image_size=0)
    assert str(info.value) == ("invalid load_dataset(folder): image_size 0: height and width must be at least 1 and "
                               f"height * width at most {MAX_SIZE_PIXELS} pixels (MAX_SIZE_PIXELS)")


# -- Pillow's refusals, named -----------------------------------------------------------------------

def test_decompression_bomb_error_names_file_and_pixels(tmp_path, monkeypatch):
    write_folder(tmp_path, size=(7, 5))
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # 35 pixels > 2 * 10: Pillow raises
    folder = ImageFolder(tmp_path, size=4)
    with pytest.raises(ValueError) as info:
        folder[0]
    message = str(info.value)
    assert message.startswith(f"ImageFolder: {folder.paths[0]} (") and "decompression bomb" in message
    assert "35 pixels" in message


@pytest.mark.parametrize("warnings_as_errors", [False, True], ids=["warning-shown", "warnings-are-errors"])
def test_decompression_bomb_warning_is_an_error_naming_file_and_pixels(tmp_path, monkeypatch, warnings_as_errors):
    write_folder(tmp_path, size=(7, 5))
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 30)  # 30 < 35 <= 60: Pillow only warns
    folder = ImageFolder(tmp_path, size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error" if warnings_as_errors else "ignore", Image.DecompressionBombWarning)
        with pytest.raises(ValueError) as info:
            folder[0]
    message = str(info.value)
    assert message.startswith(f"ImageFolder: {folder.paths[0]} (") and "decompression bomb" in message
    assert "35 pixels" in message


def test_memory_error_while_decoding_names_the_file(tmp_path, monkeypatch):
    write_folder(tmp_path)
    from PIL import Image

    def exhausted(self, *args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(Image.Image, "convert", exhausted)
    folder = ImageFolder(tmp_path, size=4)
    with pytest.raises(MemoryError) as info:
        folder[0]
    size = folder.paths[0].stat().st_size
    assert str(info.value) == f"{folder.paths[0]}: out of memory while decoding an image ({size} bytes on disk)"


def test_an_io_error_is_not_blamed_on_the_image(tmp_path, monkeypatch):
    write_folder(tmp_path)
    from PIL import Image

    def failing(self, *args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(Image.Image, "convert", failing)
    with pytest.raises(OSError) as info:
        ImageFolder(tmp_path, size=4)[0]
    assert not isinstance(info.value, ValueError) and info.value.errno == errno.EIO


def test_a_file_in_a_format_outside_the_extensions_is_not_decoded(tmp_path):
    write_folder(tmp_path)
    (tmp_path / "cat" / "2.png").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n")
    folder = ImageFolder(tmp_path, size=4)
    with pytest.raises(ValueError, match=r"cannot decode .*2.png .*cannot identify image file"):
        folder[2]


# -- splits ---------------------------------------------------------------------------------------

def test_test_images_of_another_shape_are_refused_at_load(tmp_path):
    write_mnist(tmp_path, test=(5, 20, 20))
    with pytest.raises(ValueError) as info:
        load_dataset(f"mnist:{tmp_path}")
    assert str(info.value) == (f"dataset 'mnist' ({tmp_path}): test inputs have shape (1, 20, 20) but training inputs "
                               f"have shape (1, 28, 28); both splits must have the same input shape")


def test_registered_dataset_with_mismatched_splits_is_refused():
    def mismatched(path, **options):
        x, y = np.zeros((4, 3, 8, 8), np.uint8), np.arange(4) % 2
        return DatasetSplits(TensorDataset(x, y), TensorDataset(x[:, :, :4], y), 2, ["a", "b"], "odd", "generated")

    register_dataset("odd-test", mismatched, needs_path=False)
    try:
        with pytest.raises(ValueError, match=r"test inputs have shape \(3, 4, 8\) but training inputs have shape "
                                             r"\(3, 8, 8\)"):
            load_dataset("odd-test")
    finally:
        _REGISTRY.pop("odd-test")


def test_an_empty_training_split_is_an_error_naming_the_dataset(tmp_path):
    write_mnist(tmp_path, train=(0, 28, 28))
    with pytest.raises(ValueError) as info:
        load_dataset(f"fashion-mnist:{tmp_path}")
    assert str(info.value) == (f"dataset 'fashion-mnist' ({tmp_path}): the training split has 0 samples; at least "
                               f"one is needed")


def test_channel_stats_of_an_empty_dataset_is_an_error():
    empty = TensorDataset(np.zeros((0, 3, 4, 4), np.uint8), np.zeros(0, np.int64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NaN statistics with a RuntimeWarning
        with pytest.raises(ValueError, match="channel_stats: TensorDataset has 0 samples; channel statistics need at "
                                             "least one"):
            channel_stats(empty)
    with pytest.raises(ValueError, match="channel_stats: limit must be a positive integer, got 0"):
        channel_stats(TensorDataset(np.zeros((2, 1, 2, 2), np.uint8)), limit=0)


# -- DataLoader arguments ---------------------------------------------------------------------------

@pytest.mark.parametrize("options,message", [
    ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
    ({"batch_size": -4}, "batch_size must be a positive integer, got -4"),
    ({"batch_size": 2.5}, "batch_size must be a positive integer, got 2.5"),
    ({"shuffle": "False"}, "shuffle must be True or False, got 'False'"),
    ({"drop_last": 1}, "drop_last must be True or False, got 1"),
    ({"seed": -1}, "seed must be a non-negative integer, got -1"),
    ({"seed": 1.5}, "seed must be a non-negative integer, got 1.5"),
    ({"prefetch": True}, "prefetch must be a non-negative integer, got True"),
], ids=lambda v: str(v) if isinstance(v, dict) else "")
def test_loader_refuses_silent_coercions(options, message):
    data = TensorDataset(np.zeros((4, 1)), np.arange(4))
    with pytest.raises(ValueError, match=re.escape(f"DataLoader: {message}")):
        DataLoader(data, **options)


def test_loader_epoch_and_state_must_be_integers():
    loader = DataLoader(TensorDataset(np.zeros((4, 1)), np.arange(4)), batch_size=2)
    with pytest.raises(ValueError, match=re.escape("DataLoader: epoch must be a non-negative integer, got 1.5")):
        loader.set_epoch(1.5)
    with pytest.raises(ValueError, match=re.escape("DataLoader: seed must be a non-negative integer, got '3'")):
        loader.load_state_dict({"epoch": 1, "seed": "3"})
    assert loader.state_dict() == {"epoch": 0, "seed": 0}  # a refused state changes nothing
