"""xpnet.nn.parallel: DistributedDataParallel (torch.nn.parallel's name and semantics)."""

from .distributed import DistributedDataParallel

__all__ = ["DistributedDataParallel"]
