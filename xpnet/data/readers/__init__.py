"""Dataset readers and ``load_dataset(spec)``, the one entry point the CLI uses.

Host-side package: it imports NumPy; every reader returns host arrays or host-side Datasets.

Specs:

``mnist-sample``          the embedded 5,000-image MNIST sample (4,000 train / 1,000 test)
``mnist:DIR``             MNIST IDX files (raw or .gz) in DIR
``fashion-mnist:DIR``     Fashion-MNIST, same files and layout
``cifar10:DIR``           CIFAR-10, binary or python version (detected)
``cifar100:DIR``          CIFAR-100 (fine labels), binary or python version
``folder:DIR``            one subfolder per class; DIR/train and DIR/val (or DIR/test) when
                          present, else a fixed stratified 90/10 split of DIR
``shards:PATTERN``        webdataset tar shards (``xpnet.data.shards``), e.g.
                          ``shards:/data/imagenet-train-{000000..001281}.tar`` (braces and globs);
                          the test split is the option ``test_shards=PATTERN``, else the shards
                          found with the last ``train`` of PATTERN replaced by ``val``,
                          ``validation`` or ``test`` (brace ranges widened to ``*``)

Other layers add their own forms with ``register_dataset`` (the training CLI adds ``synthetic``).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re

from ..dataset import Dataset, Subset, TensorDataset, stratified_split
from .checks import check_labels, check_splits
from .cifar import (
    RestrictedUnpickler,
    UnsafePickleError,
    cifar_class_names,
    detect_cifar,
    load_cifar10,
    load_cifar100,
    read_cifar_binary,
    read_cifar_python,
    restricted_load,
)
from .folder import ImageFolder, ImageFolderSubset, load_image_folder, require_pillow, size_pair
from .idx import load_mnist, parse_idx, read_idx
from ...safe_io import NotARegularFileError, read_bounded

DEFAULT_IMAGE_SIZE = 224
FOLDER_TEST_FRACTION = 0.1
FOLDER_SPLIT_SEED = 0


@dataclasses.dataclass
class DatasetSplits:
    """What ``load_dataset`` returns.

    train, test     host-side Datasets of ``(image uint8 (C, H, W), label int64)`` samples (test
                    may be None for a registered form that has none)
    num_classes     the number of classes; labels are 0 .. num_classes - 1
    classes         class names in label order
    name            the dataset's short name ('mnist', 'cifar10', ...)
    source          the directory it came from, or 'embedded'

    Images are uint8 0..255: put ``transforms.ToFloat()`` first in the loader's transform.
    Creating one checks it (``checks.check_splits``): no empty split, one input shape for train
    and test, as many class names as classes; each is a ValueError naming the dataset.
    """

    train: Dataset
    test: Dataset | None
    num_classes: int
    classes: list
    name: str
    source: str

    def __post_init__(self):
        check_splits(self)

    @property
    def input_shape(self) -> tuple:
        """(C, H, W) of one input sample."""
        from ..dataset import input_shape_of

        return input_shape_of(self.train)


_REGISTRY: dict = {}  # name -> (function(argument or None, **options) -> DatasetSplits, form, needs_dir, pattern)


def register_dataset(name: str, loader, form: str | None = None, needs_path: bool = True,
                     pattern: bool = False) -> None:
    """Add a spec form: ``loader(path_or_None, **options) -> DatasetSplits``.

    ``form`` is how errors list it (e.g. ``'synthetic'`` or ``'mydata:DIR'``); ``needs_path`` says
    whether the spec must carry ``:PATH``; with ``pattern=True`` that argument is a file pattern
    passed on as a string (``~`` expanded), which the loader checks itself.
    """
    key = name.strip().lower()
    if pattern:
        form = form or f"{key}:PATTERN"
    _REGISTRY[key] = (loader, form or (f"{key}:DIR" if needs_path else key), needs_path or pattern, pattern)


def accepted_forms() -> list:
    """The spec forms ``load_dataset`` understands, as error messages list them."""
    return [entry[1] for entry in _REGISTRY.values()]


def _forms_text():
    return ", ".join(accepted_forms())


def load_dataset(spec: str, **options) -> DatasetSplits:
    """Parse ``spec`` (see the module docstring) and load that dataset.

    Options: ``image_size`` (int or (H, W); ``folder:`` and ``shards:``, default 224), and for those
    two ``transform`` / ``test_transform`` (per-sample augmentations, ``xpnet.data.augment``; a split
    with one is not resized unless ``image_size`` is given); ``shards:`` also takes those of
    ``load_shards``. An unknown form is a ValueError, a missing path a
    FileNotFoundError; both name the spec and list the accepted forms.
    """
    text = str(spec).strip()
    name, sep, argument = text.partition(":")
    key = name.strip().lower().replace("_", "-")
    entry = _REGISTRY.get(key) or _REGISTRY.get(key.replace("-", "_"))
    if entry is None:
        raise ValueError(f"unknown dataset {text!r}; accepted forms: {_forms_text()}")
    loader, form, needs_path, pattern = entry
    if pattern:
        if not argument.strip():
            raise ValueError(f"dataset {text!r} needs a file pattern: {form}; accepted forms: {_forms_text()}")
        return loader(os.path.expanduser(argument.strip()), **options)
    if needs_path:
        if not argument.strip():
            raise ValueError(f"dataset {text!r} needs a directory: {form}; accepted forms: {_forms_text()}")
        path = pathlib.Path(os.path.expanduser(argument.strip()))
        if not path.exists():
            raise FileNotFoundError(f"dataset path {str(path)!r} (from {text!r}) does not exist; "
                                    f"accepted forms: {_forms_text()}")
        return loader(path, **options)
    if sep and argument.strip():
        raise ValueError(f"dataset {key!r} takes no path (got {text!r}); accepted forms: {_forms_text()}")
    return loader(None, **options)


def _unused(options, name):
    if options:
        raise TypeError(f"load_dataset({name}): unexpected options {sorted(options)}")


def _mnist_sample(_, **options):
    from ..mnist_sample import MNIST_SAMPLE_CLASSES, load_mnist_sample

    _unused(options, "mnist-sample")
    (x_train, y_train), (x_test, y_test) = load_mnist_sample()
    return DatasetSplits(TensorDataset(x_train, y_train), TensorDataset(x_test, y_test), 10,
                         list(MNIST_SAMPLE_CLASSES), "mnist-sample", "embedded")


def _idx_loader(name, classes):
    def load(path, **options):
        _unused(options, name)
        train = load_mnist(path, train=True)
        test = load_mnist(path, train=False)
        return DatasetSplits(TensorDataset(*train), TensorDataset(*test), len(classes), list(classes), name, str(path))

    return load


MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]


def _cifar10(path, **options):
    _unused(options, "cifar10")
    train, test = load_cifar10(path, train=True), load_cifar10(path, train=False)
    return DatasetSplits(TensorDataset(*train), TensorDataset(*test), 10, cifar_class_names(path, 10), "cifar10",
                         str(path))


def _cifar100(path, **options):
    labels = options.pop("labels", "fine")
    _unused(options, "cifar100")
    train = load_cifar100(path, train=True, labels=labels)
    test = load_cifar100(path, train=False, labels=labels)
    names = cifar_class_names(path, 100, labels)
    return DatasetSplits(TensorDataset(*train), TensorDataset(*test), len(names), names, "cifar100", str(path))


def _split_sizes(image_size, transform, test_transform, argument):
    """(train size, test size): ``image_size`` for both when given; else DEFAULT_IMAGE_SIZE for a
    split without a transform, none for one with a transform (it fixes the sample size)."""
    if image_size is not None:
        size = size_pair(image_size, argument)
        return size, size
    default = size_pair(DEFAULT_IMAGE_SIZE, argument)
    return (None if transform is not None else default), (None if test_transform is not None else default)


def _folder(path, image_size=None, mode="RGB", transform=None, test_transform=None, **options):
    _unused(options, "folder")
    size, test_size = _split_sizes(image_size, transform, test_transform, "load_dataset(folder): image_size")
    if not path.is_dir():
        raise FileNotFoundError(f"dataset path {str(path)!r} is not a directory; folder:DIR expects one "
                                f"subfolder per class (or DIR/train and DIR/val)")
    held_out = next((path / n for n in ("val", "test") if (path / n).is_dir()), None)
    if (path / "train").is_dir() and held_out is not None:
        train = ImageFolder(path / "train", size=size, mode=mode, transform=transform)
        test = ImageFolder(held_out, size=test_size, mode=mode, classes=train.classes, transform=test_transform)
        return DatasetSplits(train, test, len(train.classes), train.classes, "folder", str(path))
    whole = ImageFolder(path, size=size, mode=mode, transform=transform)
    held = whole
    if (test_size, test_transform) != (size, transform):
        held = ImageFolder(path, size=test_size, mode=mode, transform=test_transform)
    train_idx, test_idx = stratified_split(whole.labels, test_fraction=FOLDER_TEST_FRACTION, seed=FOLDER_SPLIT_SEED)
    return DatasetSplits(ImageFolderSubset(whole, train_idx), ImageFolderSubset(held, test_idx), len(whole.classes),
                         whole.classes, "folder", str(path))


def _shard_test_candidates(pattern):
    """Test-split patterns for a training pattern: its last ``train`` replaced by ``val``,
    ``validation``, ``test``, first as it is, then with brace groups widened to ``*``."""
    cut = pattern.rfind("train")
    if cut < 0:
        return []
    widened = re.sub(r"\{[^{}]*\}", "*", pattern)
    wide_cut = widened.rfind("train")
    candidates = []
    for name in ("val", "validation", "test"):
        candidates.append(pattern[:cut] + name + pattern[cut + len("train"):])
        if wide_cut >= 0:
            candidates.append(widened[:wide_cut] + name + widened[wide_cut + len("train"):])
    return candidates


def _read_classes(path):
    """Class names, one per line, of a ``classes.txt``."""
    from ..shards import MAX_METADATA_BYTES

    content = read_bounded(path, "a class-name list", MAX_METADATA_BYTES, "MAX_METADATA_BYTES")
    try:
        names = [line.strip() for line in content.decode("utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: class names must be UTF-8 text, one per line ({exc})") from None
    if len(names) < 2:
        raise ValueError(f"{path}: expected at least two class names, one per line, found {len(names)}")
    return names


def load_shards(pattern, image_size=None, mode="RGB", test_shards=None, transform=None, test_transform=None,
                shuffle_buffer=1000, num_classes=None, length=None, test_length=None, decode="auto"):
    """``DatasetSplits`` of two ``ShardDataset`` (train shuffled with ``shuffle_buffer``, test in
    stored order).

    image_size      every image is resized to it before the transform; by default 224 for a split
                    without a transform, none for one with a transform (it fixes the size)
    transform, test_transform
                    per-sample augmentations of the two splits (``xpnet.data.augment``)
    test_shards     the test pattern (default: derived from ``pattern``, see the module docstring;
                    none found leaves ``test`` None)
    num_classes     the class count; else the names of ``classes.txt`` beside the first training
                    shard; else the largest label seen by a scan, plus one
    length, test_length
                    sample counts; else ``sizes.json`` beside the shards (``{"file name": count}``);
                    else a scan. A scan reads every shard once (labels only, images skipped), so
                    give the counts for large data sets.
    """
    from ..shards import ShardDataset  # here: shards imports this package's folder module

    size, test_size = _split_sizes(image_size, transform, test_transform, "load_dataset(shards): image_size")
    train = ShardDataset(pattern, transform=transform, shuffle_buffer=shuffle_buffer, image_size=size, mode=mode,
                         length=length, decode=decode)
    test = None
    candidates = [test_shards] if test_shards is not None else _shard_test_candidates(pattern)
    for candidate in candidates:
        try:
            test = ShardDataset(candidate, transform=test_transform, shuffle_buffer=0, image_size=test_size, mode=mode,
                                length=test_length, decode=decode)
            break
        except (FileNotFoundError, NotARegularFileError):
            if test_shards is not None:
                raise
    folder = os.path.dirname(train.urls[0])
    classes = None
    if num_classes is None and os.path.isfile(os.path.join(folder, "classes.txt")):
        classes = _read_classes(os.path.join(folder, "classes.txt"))
        num_classes = len(classes)
    sizes = os.path.join(folder, "sizes.json")
    for split in (train, test):
        if split is not None and split.length is None:
            if os.path.isfile(sizes) and split.read_sizes(sizes):
                continue
            split.scan()
    if num_classes is None:
        seen = [s.max_label for s in (train, test) if s is not None and s.max_label is not None]
        if not seen:
            train.scan()
            seen = [train.max_label]
        num_classes = max(max(seen) + 1, 2)
    for split in (train, test):
        if split is not None:
            split.num_classes = num_classes
    classes = classes or [str(c) for c in range(num_classes)]
    return DatasetSplits(train, test, num_classes, classes, "shards", pattern)


register_dataset("mnist-sample", _mnist_sample, needs_path=False)
register_dataset("mnist", _idx_loader("mnist", MNIST_CLASSES))
register_dataset("fashion-mnist", _idx_loader("fashion-mnist", FASHION_MNIST_CLASSES))
register_dataset("cifar10", _cifar10)
register_dataset("cifar100", _cifar100)
register_dataset("folder", _folder)
register_dataset("shards", load_shards, pattern=True)

__all__ = [
    "DatasetSplits", "load_dataset", "register_dataset", "accepted_forms",
    "load_mnist", "read_idx", "parse_idx",
    "load_cifar10", "load_cifar100", "read_cifar_binary", "read_cifar_python", "detect_cifar",
    "cifar_class_names", "RestrictedUnpickler", "UnsafePickleError", "restricted_load",
    "ImageFolder", "load_image_folder", "require_pillow", "NotARegularFileError", "check_labels",
    "load_shards",
]
