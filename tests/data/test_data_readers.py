"""Readers on small files written here in the official formats, and their errors."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import sys

import numpy as np
import pytest

from xpnet.data import (
    ImageFolder,
    RestrictedUnpickler,
    Subset,
    TensorDataset,
    UnsafePickleError,
    accepted_forms,
    load_cifar10,
    load_cifar100,
    load_dataset,
    load_image_folder,
    load_mnist,
    read_cifar_binary,
    read_cifar_python,
    read_idx,
    register_dataset,
)
from xpnet.data.readers import DatasetSplits, _REGISTRY

# -- writers in the official formats --------------------------------------------------------------

IDX_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype("i2"): 0x0B, np.dtype("i4"): 0x0C,
             np.dtype("f4"): 0x0D, np.dtype("f8"): 0x0E}


def idx_bytes(array):
    array = np.asarray(array)
    header = bytes([0, 0, IDX_CODES[array.dtype.newbyteorder("=")], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path, array, compress=False):
    content = idx_bytes(array)
    path.write_bytes(gzip.compress(content) if compress else content)
    return path


def write_mnist(directory, rng, n_train=7, n_test=5, compress=False, dotted=False):
    directory.mkdir(parents=True, exist_ok=True)
    data = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        sep = "." if dotted else "-"
        suffix = ".gz" if compress else ""
        write_idx(directory / f"{split}-images{sep}idx3-ubyte{suffix}", images, compress)
        write_idx(directory / f"{split}-labels{sep}idx1-ubyte{suffix}", labels, compress)
        data[split] = (images, labels)
    return data


def cifar_records(images, *label_columns):
    """Binary-version records: the label byte(s), then 1,024 red, 1,024 green, 1,024 blue bytes."""
    labels = np.stack(label_columns, axis=1).astype(np.uint8)
    return np.concatenate([labels, images.reshape(len(images), -1)], axis=1).tobytes()


class Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 did (BINSTRING opcodes), as in the published CIFAR files."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        if isinstance(obj, str):
            obj = obj.encode("latin1")
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def py2_pickle(obj):
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    # the published files name NumPy 1's module
    return buffer.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


@pytest.fixture
def cifar10_arrays(rng):
    train = [(rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, n)) for n in (3, 2)]
    test = (rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, 4))
    return train, test


def write_cifar10_binary(root, train, test):
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for number, (images, labels) in enumerate(train, start=1):
        (folder / f"data_batch_{number}.bin").write_bytes(cifar_records(images, labels))
    (folder / "test_batch.bin").write_bytes(cifar_records(*test))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta.txt").write_text("\n".join(names) + "\n\n")
    return folder


def write_cifar10_python(root, train, test, pickler=py2_pickle):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for number, (images, labels) in enumerate(train, start=1):
        batch = {b"batch_label": b"training batch %d of 5" % number, b"labels": [int(v) for v in labels],
                 b"data": images.reshape(len(images), -1), b"filenames": [b"x.png"] * len(images)}
        (folder / f"data_batch_{number}").write_bytes(pickler(batch))
    batch = {b"batch_label": b"testing batch 1 of 1", b"labels": [int(v) for v in test[1]],
             b"data": test[0].reshape(len(test[0]), -1), b"filenames": [b"t.png"] * len(test[0])}
    (folder / "test_batch").write_bytes(pickler(batch))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    (folder / "batches.meta").write_bytes(pickler({b"label_names": names, b"num_cases_per_batch": 10000}))
    return folder


# -- IDX ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
def test_idx_round_trip_of_every_type(tmp_path, rng, compress):
    for dtype in IDX_CODES:
        array = (rng.normal(size=(3, 4, 5)) * 100).astype(dtype)
        path = write_idx(tmp_path / f"a-{dtype.name}{'.gz' if compress else ''}", array, compress)
        back = read_idx(path)
        assert back.dtype == dtype and back.dtype.isnative
        np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize("compress,dotted,sub", [(False, False, ""), (True, False, ""), (True, True, "raw"),
                                                 (False, False, "MNIST/raw")],
                         ids=["raw", "gz", "dotted-gz-in-raw", "torchvision-layout"])
def test_load_mnist_finds_standard_names(tmp_path, rng, compress, dotted, sub):
    data = write_mnist(tmp_path / sub if sub else tmp_path, rng, compress=compress, dotted=dotted)
    for train, key in ((True, "train"), (False, "t10k")):
        images, labels = load_mnist(tmp_path, train=train)
        assert images.shape == (len(data[key][0]), 1, 28, 28) and images.dtype == np.uint8
        assert labels.dtype == np.int64
        np.testing.assert_array_equal(images[:, 0], data[key][0])
        np.testing.assert_array_equal(labels, data[key][1])


def test_load_dataset_mnist_and_fashion(tmp_path, rng):
    data = write_mnist(tmp_path, rng, compress=True)
    for spec in (f"mnist:{tmp_path}", f"fashion-mnist:{tmp_path}"):
        splits = load_dataset(spec)
        assert isinstance(splits, DatasetSplits) and splits.num_classes == 10
        assert splits.input_shape == (1, 28, 28) and len(splits.train) == 7 and len(splits.test) == 5
        np.testing.assert_array_equal(splits.test.arrays[1], data["t10k"][1])
    assert load_dataset(f"fashion-mnist:{tmp_path}").classes[9] == "Ankle boot"


def test_idx_bad_magic_is_rejected(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"\x01\x02\x08\x03" + bytes(20))
    with pytest.raises(ValueError, match=r"bad magic number 0x01020803") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_idx_truncated_raw_names_file_and_sizes(tmp_path, rng):
    images = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    content = idx_bytes(images)  # 16-byte header + 3,136 bytes
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(content[:-100])
    with pytest.raises(ValueError) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message and "truncated" in message
    assert "3152 bytes" in message and f"found {len(content) - 100} bytes" in message


def test_idx_extra_bytes_are_corrupt(tmp_path, rng):
    path = tmp_path / "labels"
    path.write_bytes(idx_bytes(np.arange(5, dtype=np.uint8)) + b"xx")
    with pytest.raises(ValueError, match=r"needs 13 bytes, found 15 bytes"):
        read_idx(path)


def test_idx_truncated_gzip_names_file_and_sizes(tmp_path, rng):
    images = rng.integers(0, 256, (50, 28, 28), dtype=np.uint8)
    packed = gzip.compress(idx_bytes(images))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(ValueError) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message and "truncated" in message
    assert f"needs {16 + 50 * 784} bytes" in message and "found" in message


def test_idx_not_gzip_is_corrupt(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(b"this is not gzip at all")
    with pytest.raises(ValueError, match="corrupt gzip file"):
        read_idx(path)


def test_load_mnist_mismatched_counts(tmp_path, rng):
    write_idx(tmp_path / "train-images-idx3-ubyte", rng.integers(0, 256, (3, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="3 images but .* 4 labels"):
        load_mnist(tmp_path)


def test_load_mnist_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path)


# -- CIFAR binary ---------------------------------------------------------------------------------

def test_cifar10_binary_any_number_of_records(tmp_path, cifar10_arrays):
    train, test = cifar10_arrays
    write_cifar10_binary(tmp_path, train, test)
    images, labels = load_cifar10(tmp_path, train=True)
    assert images.shape == (5, 3, 32, 32) and images.dtype == np.uint8 and labels.dtype == np.int64
    np.testing.assert_array_equal(images, np.concatenate([train[0][0], train[1][0]]))
    np.testing.assert_array_equal(labels, np.concatenate([train[0][1], train[1][1]]))
    test_images, test_labels = load_cifar10(tmp_path, train=False)
    np.testing.assert_array_equal(test_images, test[0])
    np.testing.assert_array_equal(test_labels, test[1])


def test_cifar_binary_pixel_layout(tmp_path):
    # record: label, then the red plane row by row, then green, then blue
    record = bytearray(3073)
    record[0] = 7
    record[1 + 0 * 1024 + 2 * 32 + 5] = 11   # red, row 2, column 5
    record[1 + 1 * 1024 + 31 * 32 + 0] = 22  # green, row 31, column 0
    record[1 + 2 * 1024 + 0 * 32 + 31] = 33  # blue, row 0, column 31
    path = tmp_path / "one.bin"
    path.write_bytes(bytes(record))
    images, labels = read_cifar_binary(path)
    assert labels.tolist() == [7]
    assert images[0, 0, 2, 5] == 11 and images[0, 1, 31, 0] == 22 and images[0, 2, 0, 31] == 33
    assert int(images.sum()) == 66


def test_cifar100_binary_coarse_and_fine(tmp_path, rng):
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    parts = {}
    for name, n in (("train", 4), ("test", 3)):
        images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        coarse, fine = rng.integers(0, 20, n), rng.integers(0, 100, n)
        (folder / f"{name}.bin").write_bytes(cifar_records(images, coarse, fine))
        parts[name] = (images, coarse, fine)
    images, fine = load_cifar100(tmp_path, train=True)
    np.testing.assert_array_equal(images, parts["train"][0])
    np.testing.assert_array_equal(fine, parts["train"][2])
    _, coarse = load_cifar100(tmp_path, train=False, labels="coarse")
    np.testing.assert_array_equal(coarse, parts["test"][1])
    raw_images, both = read_cifar_binary(folder / "test.bin", label_bytes=2)
    assert both.shape == (3, 2)
    splits = load_dataset(f"cifar100:{tmp_path}")
    assert splits.num_classes == 100 and len(splits.train) == 4 and splits.input_shape == (3, 32, 32)


@pytest.mark.parametrize("label_bytes,record", [(1, 3073), (2, 3074)], ids=["cifar10", "cifar100"])
def test_cifar_binary_truncated_names_file_and_sizes(tmp_path, label_bytes, record):
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(bytes(2 * record + 100))
    with pytest.raises(ValueError) as info:
        read_cifar_binary(path, label_bytes=label_bytes)
    message = str(info.value)
    assert str(path) in message and f"{record}-byte records" in message
    assert f"{2 * record} or {3 * record} bytes" in message and f"found {2 * record + 100} bytes" in message


def test_cifar_binary_empty_file(tmp_path):
    path = tmp_path / "test_batch.bin"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"expected a whole number of 3073-byte records \(3073 bytes\), found 0"):
        read_cifar_binary(path)


# -- CIFAR python ---------------------------------------------------------------------------------

def test_cifar10_python_version_matches_binary(tmp_path, cifar10_arrays):
    train, test = cifar10_arrays
    write_cifar10_binary(tmp_path / "bin", train, test)
    write_cifar10_python(tmp_path / "py", train, test)
    from_binary = load_dataset(f"cifar10:{tmp_path / 'bin'}")
    from_python = load_dataset(f"cifar10:{tmp_path / 'py'}")
    for a, b in ((from_binary.train, from_python.train), (from_binary.test, from_python.test)):
        for x, y in zip(a.arrays, b.arrays):
            np.testing.assert_array_equal(x, y)
    assert from_binary.classes == from_python.classes
    assert from_python.classes[0] == "airplane" and from_python.classes[9] == "truck"


@pytest.mark.parametrize("protocol", [2, 4], ids=["py3-protocol2", "py3-protocol4"])
def test_cifar_python_pickled_by_python3(tmp_path, cifar10_arrays, protocol):
    train, test = cifar10_arrays
    write_cifar10_python(tmp_path, train, test, pickler=lambda obj: pickle.dumps(obj, protocol=protocol))
    images, labels = load_cifar10(tmp_path, train=False)
    np.testing.assert_array_equal(images, test[0])
    np.testing.assert_array_equal(labels, test[1])


def test_cifar100_python_version(tmp_path, rng):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    made = {}
    for name, n in (("train", 5), ("test", 2)):
        images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        fine, coarse = rng.integers(0, 100, n), rng.integers(0, 20, n)
        batch = {b"data": images.reshape(n, -1), b"fine_labels": [int(v) for v in fine],
                 b"coarse_labels": [int(v) for v in coarse], b"filenames": [b"f"] * n}
        (folder / name).write_bytes(py2_pickle(batch))
        made[name] = (images, fine, coarse)
    (folder / "meta").write_bytes(py2_pickle({b"fine_label_names": [b"c%d" % i for i in range(100)],
                                              b"coarse_label_names": [b"s%d" % i for i in range(20)]}))
    images, fine = load_cifar100(tmp_path, train=True)
    np.testing.assert_array_equal(images, made["train"][0])
    np.testing.assert_array_equal(fine, made["train"][1])
    _, coarse = load_cifar100(tmp_path, train=False, labels="coarse")
    np.testing.assert_array_equal(coarse, made["test"][2])
    splits = load_dataset(f"cifar100:{tmp_path}")
    assert splits.classes[:2] == ["c0", "c1"] and len(splits.test) == 2


class _RunsCode:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        import os

        return (os.mkdir, (self.target,))


def test_malicious_pickle_is_rejected_and_runs_nothing(tmp_path):
    target = tmp_path / "pwned"
    evil = {b"data": _RunsCode(str(target)), b"labels": [0]}
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(evil, protocol=2))
    assert pickle.loads(path.read_bytes()) is not None and target.exists()  # the plain unpickler obeys it
    target.rmdir()
    with pytest.raises(UnsafePickleError, match=r"refusing to load global (posix|os|nt)\.mkdir") as info:
        read_cifar_python(path)
    assert str(path) in str(info.value)
    assert not target.exists()


@pytest.mark.parametrize("payload", [
    b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1q\x00\x85q\x01Rq\x02.",
    b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x0b\x00\x00\x00rot13_codecq\x00\x86Rq\x01.",
    b"\x80\x02cnumpy\nload\nX\x01\x00\x00\x00x\x85R.",
], ids=["builtins.eval", "codecs-other-than-latin1", "numpy.load"])
def test_restricted_unpickler_refuses_other_globals(payload):
    with pytest.raises(UnsafePickleError):
        RestrictedUnpickler(io.BytesIO(payload), encoding="bytes").load()


def test_cifar_python_truncated_pickle(tmp_path, cifar10_arrays):
    train, test = cifar10_arrays
    folder = write_cifar10_python(tmp_path, train, test)
    path = folder / "test_batch"
    content = path.read_bytes()
    path.write_bytes(content[: len(content) - 500])
    with pytest.raises(ValueError) as info:
        load_cifar10(tmp_path, train=False)
    message = str(info.value)
    assert str(path) in message and "truncated or corrupt" in message and f"({len(content) - 500} bytes)" in message


def test_cifar_python_wrong_data_shape(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(py2_pickle({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(ValueError, match=r"expected data of uint8 shape \(N, 3072\), found uint8 \(2, 100\)"):
        read_cifar_python(path)


def test_cifar_missing_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="no CIFAR-10 files in"):
        load_cifar10(tmp_path)


# -- image folders --------------------------------------------------------------------------------

COLOURS = {"blue": (0, 0, 255), "green": (0, 200, 0), "red": (250, 10, 10)}


def write_image_folder(root, per_class=3, size=(7, 5)):
    Image = pytest.importorskip("PIL.Image")
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            fmt = "png" if i % 2 == 0 else "bmp"
            Image.new("RGB", size, colour).save(root / name / f"{i}.{fmt}")
    (root / "red" / "notes.txt").write_text("not an image")


def test_image_folder_reads_resizes_and_labels(tmp_path):
    write_image_folder(tmp_path, per_class=3)
    folder = ImageFolder(tmp_path, size=(4, 6))
    assert folder.classes == ["blue", "green", "red"] and len(folder) == 9
    image, label = folder[4]
    assert image.shape == (3, 4, 6) and image.dtype == np.uint8 and label == 1
    assert image[:, 0, 0].tolist() == [0, 200, 0] and (image == image[:, :1, :1]).all()
    images, labels, classes = load_image_folder(tmp_path, size=8, mode="L")
    assert images.shape == (9, 1, 8, 8) and labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_load_dataset_folder_split_and_train_val(tmp_path):
    write_image_folder(tmp_path / "flat", per_class=10)
    splits = load_dataset(f"folder:{tmp_path / 'flat'}", image_size=8)
    assert isinstance(splits.train, Subset) and len(splits.train) == 27 and len(splits.test) == 3
    test_labels = [splits.test[i][1] for i in range(3)]
    assert sorted(test_labels) == [0, 1, 2]  # stratified: one per class
    assert splits.input_shape == (3, 8, 8)

    write_image_folder(tmp_path / "tv" / "train", per_class=2)
    write_image_folder(tmp_path / "tv" / "val", per_class=1)
    splits = load_dataset(f"folder:{tmp_path / 'tv'}", image_size=(5, 9))
    assert len(splits.train) == 6 and len(splits.test) == 3 and splits.num_classes == 3
    xb, yb = splits.test.get_batch(np.arange(3))
    assert xb.shape == (3, 3, 5, 9) and yb.tolist() == [0, 1, 2]


def test_image_folder_corrupt_image_names_file(tmp_path):
    write_image_folder(tmp_path, per_class=1)
    bad = tmp_path / "green" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    folder = ImageFolder(tmp_path, size=4)
    index = [str(p) for p in folder.paths].index(str(bad))
    with pytest.raises(ValueError, match="cannot decode .*broken.png"):
        folder[index]


def test_image_folder_without_pillow_says_how_to_install(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    monkeypatch.setitem(sys.modules, "PIL", None)
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    with pytest.raises(ImportError, match=r'pip install "xpnet\[images\]"'):
        ImageFolder(tmp_path, size=8)
    with pytest.raises(ImportError, match=r'pip install "xpnet\[images\]"'):
        load_dataset(f"folder:{tmp_path}")


# -- load_dataset ---------------------------------------------------------------------------------

def test_missing_path_names_path_and_forms(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as info:
        load_dataset(f"cifar10:{missing}")
    message = str(info.value)
    assert str(missing) in message
    for form in ("mnist-sample", "mnist:DIR", "cifar10:DIR", "folder:DIR"):
        assert form in message


def test_unknown_and_malformed_specs():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet22k:/x'; accepted forms: mnist-sample"):
        load_dataset("imagenet22k:/x")
    with pytest.raises(ValueError, match="needs a directory: mnist:DIR"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="takes no path"):
        load_dataset("mnist-sample:/tmp")


def test_register_dataset_adds_a_form():
    def tiny(path, **options):
        x = np.zeros((4, 1, 2, 2), np.uint8)
        y = np.arange(4) % 2
        return DatasetSplits(TensorDataset(x, y), None, 2, ["a", "b"], "tiny", "generated")

    register_dataset("tiny-test", tiny, needs_path=False)
    try:
        assert "tiny-test" in accepted_forms()
        splits = load_dataset("tiny-test")
        assert splits.input_shape == (1, 2, 2) and splits.test is None
    finally:
        _REGISTRY.pop("tiny-test")


def test_mnist_sample_spec():
    splits = load_dataset("mnist-sample")
    assert len(splits.train) == 4000 and len(splits.test) == 1000 and splits.num_classes == 10
    assert splits.source == "embedded" and splits.input_shape == (1, 28, 28)


def test_cifar100_file_read_as_cifar10_is_caught(tmp_path, rng):
    # 3,073 records of CIFAR-100 (3,074 bytes each) are also a whole number of CIFAR-10 records,
    # but misaligned: the label check catches what the size check cannot
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    images = rng.integers(0, 256, (3073, 3, 32, 32), dtype=np.uint8)
    content = cifar_records(images, np.full(3073, 5), np.full(3073, 99))
    assert len(content) % 3073 == 0
    (folder / "data_batch_1.bin").write_bytes(content)
    with pytest.raises(ValueError, match=r"data_batch_1.bin: corrupt labels: expected values 0..9"):
        load_cifar10(tmp_path)


def test_mnist_labels_out_of_range(tmp_path, rng):
    write_idx(tmp_path / "t10k-images-idx3-ubyte", rng.integers(0, 256, (2, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([3, 12], np.uint8))
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte: corrupt labels: .* up to 12"):
        load_mnist(tmp_path, train=False)
