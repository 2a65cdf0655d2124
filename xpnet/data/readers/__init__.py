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

Other layers add their own forms with ``register_dataset`` (the training CLI adds ``synthetic``).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

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
from .folder import ImageFolder, load_image_folder, require_pillow, size_pair
from .idx import load_mnist, parse_idx, read_idx
from ...safe_io import NotARegularFileError

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


_REGISTRY: dict = {}  # name -> (function(argument or None, **options) -> DatasetSplits, form, needs_dir)


def register_dataset(name: str, loader, form: str | None = None, needs_path: bool = True) -> None:
    """Add a spec form: ``loader(path_or_None, **options) -> DatasetSplits``.

    ``form`` is how errors list it (e.g. ``'synthetic'`` or ``'mydata:DIR'``); ``needs_path`` says
    whether the spec must carry ``:PATH``.
    """
    key = name.strip().lower()
    _REGISTRY[key] = (loader, form or (f"{key}:DIR" if needs_path else key), needs_path)


def accepted_forms() -> list:
    """The spec forms ``load_dataset`` understands, as error messages list them."""
    return [entry[1] for entry in _REGISTRY.values()]


def _forms_text():
    return ", ".join(accepted_forms())


def load_dataset(spec: str, **options) -> DatasetSplits:
    """Parse ``spec`` (see the module docstring) and load that dataset.

    Options: ``image_size`` (int or (H, W); ``folder:`` only, default 224). An unknown form is a
    ValueError, a missing path a FileNotFoundError; both name the spec and list the accepted forms.
    """
    text = str(spec).strip()
    name, sep, argument = text.partition(":")
    key = name.strip().lower().replace("_", "-")
    entry = _REGISTRY.get(key) or _REGISTRY.get(key.replace("-", "_"))
    if entry is None:
        raise ValueError(f"unknown dataset {text!r}; accepted forms: {_forms_text()}")
    loader, form, needs_path = entry
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


def _folder(path, image_size=None, mode="RGB", **options):
    _unused(options, "folder")
    size = size_pair(DEFAULT_IMAGE_SIZE if image_size is None else image_size, "load_dataset(folder): image_size")
    if not path.is_dir():
        raise FileNotFoundError(f"dataset path {str(path)!r} is not a directory; folder:DIR expects one "
                                f"subfolder per class (or DIR/train and DIR/val)")
    held_out = next((path / n for n in ("val", "test") if (path / n).is_dir()), None)
    if (path / "train").is_dir() and held_out is not None:
        train = ImageFolder(path / "train", size=size, mode=mode)
        test = ImageFolder(held_out, size=size, mode=mode, classes=train.classes)
        return DatasetSplits(train, test, len(train.classes), train.classes, "folder", str(path))
    whole = ImageFolder(path, size=size, mode=mode)
    train_idx, test_idx = stratified_split(whole.labels, test_fraction=FOLDER_TEST_FRACTION, seed=FOLDER_SPLIT_SEED)
    return DatasetSplits(Subset(whole, train_idx), Subset(whole, test_idx), len(whole.classes), whole.classes,
                         "folder", str(path))


register_dataset("mnist-sample", _mnist_sample, needs_path=False)
register_dataset("mnist", _idx_loader("mnist", MNIST_CLASSES))
register_dataset("fashion-mnist", _idx_loader("fashion-mnist", FASHION_MNIST_CLASSES))
register_dataset("cifar10", _cifar10)
register_dataset("cifar100", _cifar100)
register_dataset("folder", _folder)

__all__ = [
    "DatasetSplits", "load_dataset", "register_dataset", "accepted_forms",
    "load_mnist", "read_idx", "parse_idx",
    "load_cifar10", "load_cifar100", "read_cifar_binary", "read_cifar_python", "detect_cifar",
    "cifar_class_names", "RestrictedUnpickler", "UnsafePickleError", "restricted_load",
    "ImageFolder", "load_image_folder", "require_pillow", "NotARegularFileError", "check_labels",
]
