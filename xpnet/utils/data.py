"""``torch.utils.data``'s names for xpnet's data pipeline, so ``torch.utils.data.DataLoader(...)``
ports with ``import xpnet as torch``: the objects are those of ``xpnet.data``."""

from ..data import DataLoader, Dataset, DistributedSampler, Sampler, Subset, TensorDataset  # noqa: F401

__all__ = ["DataLoader", "Dataset", "DistributedSampler", "Sampler", "Subset", "TensorDataset"]
