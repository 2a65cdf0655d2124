"""DistributedSampler without MPI (num_replicas and rank given), and DataLoader(sampler=...)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from xpnet.data import DataLoader, DistributedSampler, TensorDataset
from xpnet.utils.data import DistributedSampler as FromUtils


class Sized:
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n


def shards(n, world, **kwargs):
    return [list(DistributedSampler(Sized(n), num_replicas=world, rank=r, **kwargs)) for r in range(world)]


@pytest.mark.parametrize("n, world", [(10, 3), (9, 3), (1, 4), (7, 2), (5, 8), (0, 2)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_shards_are_disjoint_cover_and_pad_from_the_start(n, world, shuffle):
    parts = shards(n, world, shuffle=shuffle, seed=3)
    size = -(-n // world)
    assert [len(p) for p in parts] == [size] * world
    assert [len(DistributedSampler(Sized(n), world, r)) for r in range(world)] == [size] * world
    together = [i for p in parts for i in p]
    assert set(together) == set(range(n))
    counts = Counter(together)
    assert sum(c - 1 for c in counts.values()) == size * world - n  # the padding, no more
    if not shuffle and n:
        order = list(range(n))
        padded = (order * (size * world // n + 1))[:size * world]
        assert parts == [padded[r::world] for r in range(world)]


@pytest.mark.parametrize("n, world", [(10, 3), (9, 3), (7, 2), (5, 8)])
def test_drop_last_cuts_the_tail(n, world):
    parts = shards(n, world, shuffle=True, drop_last=True)
    size = n // world
    assert [len(p) for p in parts] == [size] * world
    together = [i for p in parts for i in p]
    assert len(set(together)) == len(together) == size * world


def test_counts_and_coverage_match_torch():
    torch = pytest.importorskip("torch")
    from torch.utils.data import DistributedSampler as TorchSampler

    for n in (0, 1, 5, 10, 11, 17):
        for world in (1, 2, 3, 4, 6):
            for drop_last in (False, True):
                for shuffle in (False, True):
                    ours = shards(n, world, shuffle=shuffle, drop_last=drop_last)
                    theirs = [list(TorchSampler(range(n), num_replicas=world, rank=r, shuffle=shuffle,
                                                drop_last=drop_last)) for r in range(world)]
                    case = (n, world, drop_last, shuffle)
                    assert [len(p) for p in ours] == [len(p) for p in theirs], case
                    assert [len(DistributedSampler(Sized(n), world, r, drop_last=drop_last)) for r in range(world)] \
                        == [len(TorchSampler(range(n), num_replicas=world, rank=r, drop_last=drop_last))
                            for r in range(world)], case
                    assert sorted(Counter(i for p in ours for i in p).values()) == \
                        sorted(Counter(i for p in theirs for i in p).values()), case
                    if not shuffle:
                        assert ours == [[int(i) for i in p] for p in theirs], case
    del torch


def test_set_epoch_changes_the_order_deterministically():
    first = DistributedSampler(Sized(50), num_replicas=2, rank=0, seed=7)
    again = DistributedSampler(Sized(50), num_replicas=2, rank=0, seed=7)
    epoch0 = list(first)
    assert list(first) == epoch0 == list(again)  # no set_epoch: the same order, as in torch
    first.set_epoch(1)
    again.set_epoch(1)
    assert list(first) == list(again) != epoch0
    first.set_epoch(0)
    assert list(first) == epoch0
    assert list(DistributedSampler(Sized(50), num_replicas=2, rank=0, seed=8)) != epoch0
    # every rank draws the same permutation: the shards of one epoch stay disjoint
    for epoch in range(3):
        parts = []
        for rank in range(2):
            s = DistributedSampler(Sized(50), num_replicas=2, rank=rank, seed=7)
            s.set_epoch(epoch)
            parts.append(set(s))
        assert not parts[0] & parts[1] and len(parts[0] | parts[1]) == 50


def test_bad_arguments_and_no_group():
    with pytest.raises(ValueError, match="invalid rank 2"):
        DistributedSampler(Sized(4), num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="num_replicas"):
        DistributedSampler(Sized(4), num_replicas=0, rank=0)
    with pytest.raises(RuntimeError, match="init_process_group"):
        DistributedSampler(Sized(4))
    assert FromUtils is DistributedSampler


def _dataset(n=11):
    x = np.arange(n, dtype=np.float32)[:, None]
    return TensorDataset(x, np.arange(n))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_takes_the_samplers_indices_in_order(num_workers):
    data = _dataset()
    sampler = DistributedSampler(data, num_replicas=3, rank=1, shuffle=True, seed=5)
    sampler.set_epoch(2)
    expected = list(sampler)
    loader = DataLoader(data, batch_size=2, sampler=sampler, num_workers=num_workers)
    assert len(loader) == 2  # ceil(4 / 2)
    batches = [(xb.numpy()[:, 0].tolist(), yb.numpy().tolist()) for xb, yb in loader]
    assert [y for _, ys in batches for y in ys] == expected
    assert [x for xs, _ in batches for x in xs] == [float(i) for i in expected]
    assert [len(ys) for _, ys in batches] == [2, 2]
    sampler.set_epoch(3)
    assert [int(v) for _, yb in loader for v in yb.numpy()] == list(sampler) != expected


def test_loader_with_a_plain_sampler_and_drop_last():
    class Backwards:
        """Anything with __iter__ and __len__ is a sampler."""

        def __iter__(self):
            return iter([4, 3, 2, 1, 0])

        def __len__(self):
            return 5

    loader = DataLoader(_dataset(), batch_size=2, sampler=Backwards(), drop_last=True)
    assert len(loader) == 2
    assert [yb.numpy().tolist() for _, yb in loader] == [[4, 3], [2, 1]]


def test_sampler_excludes_shuffle():
    data = _dataset()
    with pytest.raises(ValueError, match="mutually exclusive with shuffle"):
        DataLoader(data, sampler=DistributedSampler(data, num_replicas=2, rank=0), shuffle=True)
    with pytest.raises(TypeError, match="sampler must have"):
        DataLoader(data, sampler=3)
