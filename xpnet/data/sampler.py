"""Samplers: which sample indices a DataLoader reads, in which order.

Host-side module: it imports NumPy. ``DistributedSampler`` follows
``torch.utils.data.DistributedSampler``: every rank reads its own shard of the dataset, the shards
are disjoint, and together they cover it. Without ``drop_last`` the index list is padded with its
own first indices until its length divides by ``num_replicas`` (so a few samples are read twice);
with ``drop_last`` the tail is cut instead. With ``shuffle`` the list is a permutation drawn from
``np.random.default_rng(seed + epoch)`` (our own sequence, not torch's): the same on every rank,
new for every epoch that ``set_epoch(epoch)`` names before the loop, as in torch.

    sampler = DistributedSampler(dataset, shuffle=True, seed=0)   # rank and world from xpnet.distributed
    loader = DataLoader(dataset, batch_size=64, sampler=sampler)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for xb, yb in loader: ...
"""

from __future__ import annotations

import abc
import math
import sys

import numpy as np


class Sampler(abc.ABC):
    """What a DataLoader's ``sampler=`` needs: ``__iter__`` over sample indices, and ``__len__``."""

    @abc.abstractmethod
    def __iter__(self):
        """The sample indices of one epoch, in order."""

    @abc.abstractmethod
    def __len__(self):
        """How many indices ``__iter__`` gives."""


class DistributedSampler(Sampler):
    """This rank's shard of ``range(len(dataset))`` (see the module docstring).

    num_replicas, rank  the world size and this process's rank (default: ``xpnet.distributed``'s,
                        which must then be initialised)
    shuffle             a permutation seeded by ``seed + epoch`` instead of the dataset's order
    seed                the same on every rank
    drop_last           cut the tail so every rank gets ``len(dataset) // num_replicas`` indices,
                        instead of padding with repeated ones to ``ceil(len / num_replicas)``
    """

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0, drop_last=False):
        if num_replicas is None or rank is None:
            dist = _distributed()
            if num_replicas is None:
                num_replicas = dist.get_world_size()
            if rank is None:
                rank = dist.get_rank()
        if isinstance(num_replicas, bool) or not isinstance(num_replicas, (int, np.integer)) or num_replicas < 1:
            raise ValueError(f"DistributedSampler: num_replicas must be a positive integer, got {num_replicas!r}")
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 0 <= rank < num_replicas:
            raise ValueError(f"DistributedSampler: invalid rank {rank!r}, rank should be in the interval "
                             f"[0, {num_replicas - 1}]")
        self.dataset = dataset
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        n = len(dataset)
        if self.drop_last and n % self.num_replicas != 0:
            self.num_samples = math.ceil((n - self.num_replicas) / self.num_replicas)
        else:
            self.num_samples = math.ceil(n / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``__iter__`` use epoch ``epoch``'s permutation (call it on every rank)."""
        self.epoch = int(epoch)

    def indices(self) -> np.ndarray:
        """This rank's indices for the current epoch, as an int64 array."""
        n = len(self.dataset)
        if self.shuffle:
            order = np.random.default_rng(self.seed + self.epoch).permutation(n).astype(np.int64)
        else:
            order = np.arange(n, dtype=np.int64)
        if self.drop_last:
            order = order[:self.total_size]
        elif self.total_size > n and n > 0:
            order = np.resize(order, self.total_size)  # repeats from the start, as torch pads
        return order[self.rank:self.total_size:self.num_replicas]

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples

    def __repr__(self):
        return (f"DistributedSampler(num_replicas={self.num_replicas}, rank={self.rank}, shuffle={self.shuffle}, "
                f"seed={self.seed}, drop_last={self.drop_last}, epoch={self.epoch})")


def _distributed():
    dist = sys.modules.get("xpnet.distributed")
    if dist is None or not dist.is_initialized():
        raise RuntimeError("DistributedSampler: the default process group is not initialized; call "
                           "xpnet.distributed.init_process_group() first or pass num_replicas and rank")
    return dist
