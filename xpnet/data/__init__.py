"""Data: datasets, the DataLoader, batch transforms, dataset readers and the embedded MNIST sample.

Host-side package: it imports NumPy. Everything here prepares NumPy arrays on the host; the
DataLoader uploads each finished batch to the backend (``backend.from_host``) and yields xpnet
Tensors on the current backend and device.

    from xpnet.data import DataLoader, TensorDataset, load_mnist_sample, transforms
    (x_train, y_train), (x_test, y_test) = load_mnist_sample()
    loader = DataLoader(TensorDataset(x_train, y_train), batch_size=128, shuffle=True, seed=0,
                        transform=transforms.ToFloat())
    for xb, yb in loader:   # xb float32 (128, 1, 28, 28), yb int64 (128,)
        ...
"""

from . import augment, transforms  # noqa: F401
from .decode import decoder_name  # noqa: F401
from .device_transforms import NormalizeOnDevice  # noqa: F401
from .shards import ShardDataset, expand_urls  # noqa: F401
from .dataset import Dataset, Subset, TensorDataset, input_shape_of, stack_samples, stratified_split  # noqa: F401
from .loader import DataLoader, epoch_generators  # noqa: F401
from .sampler import DistributedSampler, Sampler  # noqa: F401
from .workers import DataLoaderWorkerError, WorkerInfo, get_worker_info  # noqa: F401
from .mnist_sample import load_mnist_sample  # noqa: F401
from .synthetic import channel_stats, synthetic_splits  # noqa: F401
from .readers import (  # noqa: F401
    DatasetSplits,
    ImageFolder,
    RestrictedUnpickler,
    UnsafePickleError,
    accepted_forms,
    load_cifar10,
    load_cifar100,
    load_dataset,
    load_image_folder,
    load_mnist,
    load_shards,
    read_cifar_binary,
    read_cifar_python,
    read_idx,
    register_dataset,
)
from .transforms import (  # noqa: F401
    Compose,
    GaussianNoise,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    ToFloat,
)

__all__ = [
    "Dataset", "TensorDataset", "Subset", "DataLoader", "Sampler", "DistributedSampler", "stack_samples", "stratified_split", "epoch_generators",
    "get_worker_info", "WorkerInfo", "DataLoaderWorkerError",
    "transforms", "Compose", "GaussianNoise", "Normalize", "RandomCrop", "RandomHorizontalFlip", "ToFloat",
    "load_mnist_sample", "synthetic_splits", "channel_stats", "input_shape_of", "load_dataset", "register_dataset", "accepted_forms", "DatasetSplits",
    "load_mnist", "read_idx", "load_cifar10", "load_cifar100", "read_cifar_binary", "read_cifar_python",
    "RestrictedUnpickler", "UnsafePickleError", "ImageFolder", "load_image_folder",
    "augment", "decoder_name", "NormalizeOnDevice", "ShardDataset", "expand_urls", "load_shards",
]
