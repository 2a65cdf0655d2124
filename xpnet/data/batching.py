"""Building host batches from a dataset: samples or a stream part in, stacked and cast fields out.

Host-side module: it imports NumPy. ``BatchRecipe`` holds the dataset, the batch transform and the
casting rules, and turns a batch's sample indices (``map_batch``), or a stream part
(``stream_batches``), into host batches: samples fetched (``dataset.sample(index, rng)`` where the
dataset has one, else a vectorised ``get_batch``, else ``dataset[index]``), stacked, transformed,
cast (``host_cast``). The same object builds batches in the loader's thread (``num_workers=0``)
and, pickled for ``spawn``, in the worker processes (``workers.py``, which holds the process
machinery: start and stop, shared-memory slots, pipes, error and death detection).

Randomness. The generators are derived from the loader's seed and the epoch, never from who builds
the batch, so order and randomness do not depend on the number of workers: batch ``b``'s transform
draws from ``batch_generator(seed, epoch, b)`` and sample ``i`` from ``sample_generator(seed,
epoch, i)``; the ``s``-th batch of stream part ``p`` from ``stream_batch_generator(seed, epoch, p,
s)``. ``worker_seed`` gives a worker process the seed of its global NumPy/Python generators.
Failures while loading are noted (``add_note``) with the batch and the sample.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from .dataset import Dataset, Subset, TensorDataset, stack_samples

_BATCH_KEY, _STREAM_KEY, _WORKER_KEY = 1, 2, 3  # spawn keys under SeedSequence([seed, epoch])


# -- randomness ------------------------------------------------------------------------------------
def _generator(entropy, spawn_key=()):
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy, spawn_key=spawn_key)))


def sample_generator(seed, epoch, index):
    """The generator ``DataLoader`` passes to ``dataset.sample(index, rng)``: ``[seed, epoch, index]``."""
    return _generator([int(seed), int(epoch), int(index)])


def batch_generator(seed, epoch, batch_index):
    """The generator of the batch transform for batch ``b``: child ``b`` of the epoch's transform
    stream, ``SeedSequence([seed, epoch], spawn_key=(1, b))`` (``epoch_generators`` gives that
    stream itself; a spawn key keeps it apart from every ``sample_generator``)."""
    return _generator([int(seed), int(epoch)], (_BATCH_KEY, int(batch_index)))


def stream_batch_generator(seed, epoch, part, batch_index):
    """The batch transform's generator for the ``b``-th batch of stream part ``part``."""
    return _generator([int(seed), int(epoch)], (_STREAM_KEY, int(part), int(batch_index)))


def worker_seed(seed, epoch, worker_id):
    """The seed of worker ``worker_id``'s global NumPy/Python generators (a pool started at ``epoch``)."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(worker_id)], spawn_key=(_WORKER_KEY,))
    return int(state.generate_state(1, np.uint64)[0] >> np.uint64(1))


# -- what a worker builds --------------------------------------------------------------------------
def sample_function(dataset):
    """``dataset.sample`` when it has one (for a ``Subset``: its dataset's, at the mapped index)."""
    own = getattr(dataset, "sample", None)
    if callable(own):
        return own
    if isinstance(dataset, Subset):
        inner = sample_function(dataset.dataset)
        if inner is not None:
            return functools.partial(_subset_sample, dataset.indices, inner)
    return None


def _subset_sample(indices, inner, index, rng):
    return inner(int(indices[index]), rng)


def batch_getter(dataset):
    """A vectorised ``get_batch`` (one call per batch), or None where ``get_batch`` would only loop
    over the samples (``Dataset``'s default; then the loader loops itself and can name the sample)."""
    getter = getattr(dataset, "get_batch", None)
    if getter is None or getattr(type(dataset), "get_batch", None) is Dataset.get_batch:
        return None
    if type(dataset).get_batch is Subset.get_batch and batch_getter(dataset.dataset) is None:
        return None
    return getter


def in_memory(dataset) -> bool:
    """Whether batches are slices of arrays already in memory (a ``TensorDataset``, or a ``Subset``
    of one): then a worker process would only add the cost of moving the batch between processes."""
    if sample_function(dataset) is not None:
        return False
    if isinstance(dataset, Subset) and type(dataset).get_batch is Subset.get_batch:
        return in_memory(dataset.dataset)
    return isinstance(dataset, TensorDataset) and type(dataset).get_batch is TensorDataset.get_batch


def add_note(exc, text):
    """``exc.add_note(text)`` (Python 3.11+), or the same ``__notes__`` list on 3.10."""
    if hasattr(exc, "add_note"):
        exc.add_note(text)
    else:
        exc.__notes__ = [*getattr(exc, "__notes__", []), text]


class EpochSpec(NamedTuple):
    """What changes from epoch to epoch: sent with every task (a few bytes)."""
    seed: int
    epoch: int
    float_dtype: str  # NumPy dtype string of floating fields (the main process's default dtype)


class BatchRecipe:
    """Dataset + transform + casting rules: turns indices, or a stream part, into host batches.
    The same object builds batches in the loader's thread and (pickled for ``spawn``) in workers."""

    def __init__(self, dataset, transform, batch_size, drop_last, keep_input_integers):
        self.dataset = dataset
        self.transform = transform
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.keep_input_integers = keep_input_integers
        self.sample = sample_function(dataset)
        self.getter = None if self.sample is not None else batch_getter(dataset)

    def map_batch(self, spec, b, indices):
        """Host batch ``b`` of the epoch: the samples at ``indices``."""
        if self.getter is not None:
            try:
                fields = tuple(self.getter(indices))
            except Exception as exc:
                shown = ", ".join(str(int(i)) for i in indices[:8]) + (", ..." if len(indices) > 8 else "")
                add_note(exc, f"DataLoader: while loading batch {b} (samples {shown})")
                raise
        else:
            samples = []
            for i in indices:
                i = int(i)
                try:
                    if self.sample is not None:
                        samples.append(self.sample(i, sample_generator(spec.seed, spec.epoch, i)))
                    else:
                        samples.append(self.dataset[i])
                except Exception as exc:
                    add_note(exc, f"DataLoader: while loading sample {i} (batch {b})")
                    raise
            fields = stack_samples(samples, self.dataset)
        rng = batch_generator(spec.seed, spec.epoch, b) if self.transform is not None else None
        return self.finish(fields, rng, spec)

    def stream_batches(self, spec, part, parts):
        """The host batches of stream part ``part`` of ``parts``, in order."""
        pending, count = [], 0
        for sample in self.dataset.stream(spec.seed, spec.epoch, part, parts):
            pending.append(sample)
            if len(pending) == self.batch_size:
                yield self.finish(stack_samples(pending, self.dataset), self._stream_rng(spec, part, count), spec)
                pending, count = [], count + 1
        if pending and not self.drop_last:
            yield self.finish(stack_samples(pending, self.dataset), self._stream_rng(spec, part, count), spec)

    def _stream_rng(self, spec, part, count):
        return stream_batch_generator(spec.seed, spec.epoch, part, count) if self.transform is not None else None

    def finish(self, fields, rng, spec):
        if self.transform is not None:
            fields = (np.asarray(self.transform(fields[0], rng)),) + tuple(fields[1:])
        return tuple(host_cast(f, p, spec.float_dtype, self.keep_input_integers) for p, f in enumerate(fields))


def host_cast(field, position, float_dtype, keep_input_integers=False):
    """Field ``position`` as the loader yields it: inputs (position 0) and floating fields in
    ``float_dtype``, other integers as int64, booleans as they are. With ``keep_input_integers``
    (a ``device_transform`` will convert on the device) integer inputs keep their dtype (uint8)."""
    field = np.asarray(field)
    kind = field.dtype.kind
    if position == 0 and kind in "iu" and keep_input_integers:
        return np.ascontiguousarray(field)
    if position == 0 or kind == "f":
        return np.ascontiguousarray(field, dtype=np.dtype(float_dtype))
    if kind in "iu":
        return np.ascontiguousarray(field, dtype=np.int64)
    if kind == "b":
        return np.ascontiguousarray(field)
    raise TypeError(f"DataLoader: field {position} of the batch has dtype {field.dtype}; "
                    f"expected numbers or booleans")
