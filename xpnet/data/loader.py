"""DataLoader: host batches, prepared ahead in a background thread or in worker processes, uploaded per step.

Host-side module: it imports NumPy. Index shuffling, batch assembly and augmentation run on the
host: with ``num_workers=0`` in one background thread that keeps up to ``prefetch`` batches ready
while the consumer computes; with ``num_workers=N`` in N processes (``workers.py``) that return
whole batches through shared memory. The consumer uploads each batch (``backend.from_host``) and
gets xpnet Tensors on the loader's backend and device.

Randomness. Every epoch has its own generators, derived from the loader's base seed and the epoch
number through ``np.random.SeedSequence([seed, epoch])`` (``epoch_generators``): the first stream
orders the samples; the second is the transforms' stream, of which batch ``b`` gets its own child,
``SeedSequence([seed, epoch], spawn_key=(1, b))`` (``batching.batch_generator``), and a dataset with
a ``sample(index, rng)`` method gets ``Generator(PCG64(SeedSequence([seed, epoch, index])))`` for
sample ``index``. Nothing depends on which thread or process builds a batch, or on how many there
are: for a seed, every ``num_workers`` gives the same batches, bit for bit. (Before workers existed
the batch transform drew from one generator per epoch, batch after batch; a seeded run augments
differently from then, still repeatably.) So epoch ``e`` of a loader seeded ``s`` always has the
same order and the same augmentation, and a resumed run that restores ``state_dict()`` (the epoch
counter and the seed) replays the same epochs. With ``seed=None`` the base seed is drawn once, at
construction, from the current backend's seeded host generator, so ``xpnet.manual_seed`` makes
that repeatable as well (a loader with nothing random draws nothing).
"""

from __future__ import annotations

import contextvars
import math
import queue
import sys
import threading

import numpy as np

from ..backends import Backend, get_backend, get_default_dtype
from .batching import BatchRecipe, EpochSpec, in_memory, sample_function
from .upload import Uploader
from .workers import WorkerPool, _context



def epoch_generators(seed: int, epoch: int):
    """``(order_rng, transform_rng)`` for one epoch: independent streams from ``[seed, epoch]``
    (the batch transform of batch ``b`` draws from child ``b`` of the second's SeedSequence)."""
    order_seq, transform_seq = np.random.SeedSequence([int(seed), int(epoch)]).spawn(2)
    return np.random.Generator(np.random.PCG64(order_seq)), np.random.Generator(np.random.PCG64(transform_seq))


class DataLoader:
    """Iterate over ``dataset`` in batches of xpnet Tensors on the current (or given) backend.

    ``for xb, yb in DataLoader(TensorDataset(x, y), batch_size=128, shuffle=True, seed=0): ...``

    dataset     any object with ``__len__`` and ``__getitem__`` returning a tuple of fields; with a
                ``get_batch(indices)`` method (``TensorDataset`` has one) a batch is assembled by
                fancy indexing, without a Python loop over its samples; with ``sample(index, rng)``
                that is called instead of ``dataset[index]``, with the sample's own generator. A
                dataset with ``stream(seed, epoch, part, parts)`` (an iterable of sample tuples) is
                read as a stream instead: its own order, ``shuffle`` has no effect, ``len()`` is an
                estimate from ``len(dataset)`` (as PyTorch's for an IterableDataset)
    batch_size  samples per batch; the last batch is smaller unless ``drop_last``
    shuffle     a new order each epoch (see the module docstring for how it is derived)
    sampler     the sample indices, in order, from ``iter(sampler)`` (``len(sampler)`` of them)
                instead of the loader's own order, e.g. ``DistributedSampler``; excludes
                ``shuffle=True``; its ``set_epoch`` is the caller's to call, as in PyTorch
    seed        base seed of the order and the transforms (None: drawn from the backend's generator)
    transform   ``transform(x, rng) -> x`` applied to the first field (the inputs) of each host
                batch, e.g. ``transforms.Compose([...])``
    device_transform
                ``device_transform(x) -> x`` applied to the inputs' Tensor after the upload, e.g.
                ``NormalizeOnDevice(mean, std)``; with it, integer inputs (uint8 images) stay in
                their dtype through the upload, a quarter of the bytes of float32
    decode_on_device
                JPEG decoding and the dataset's crop, resize and flip on the GPU (nvImageCodec,
                ``pip install "xpnet[images-gpu]"``) for an ``ImageFolder`` (or a Subset of one) or a
                ``ShardDataset``:
                the loader's thread only reads files, checks headers and draws each sample's box
                from its own generator; see ``xpnet.data.device_decode`` for the transforms it takes
    backend, device
                where batches go: a Backend, or a backend name (with ``device``); by default the
                backend current when iteration starts (``use_backend`` blocks are honoured)
    prefetch    ``num_workers=0``: batches prepared ahead by the background thread; 0 prepares each
                batch in the consumer's thread (no thread at all)

    Worker processes, with PyTorch's meaning (``workers.py`` tells how):
    num_workers         processes preparing batches (0: the thread above). A dataset of arrays in
                        memory (``TensorDataset`` or a ``Subset`` of one, no ``sample``) keeps the
                        thread whatever this says: slicing a batch costs less than moving it between
                        processes (``uses_workers`` tells)
    prefetch_factor     batches each worker prepares ahead (default 2; None when num_workers=0)
    persistent_workers  keep the workers from one epoch to the next instead of starting new ones
    pin_memory          with the CuPy backend: stage batches in page-locked memory and upload them
                        on a separate stream, so the copy of a batch overlaps the step before it
                        (no effect on CPU backends)
    worker_init_fn      called as ``worker_init_fn(worker_id)`` in each worker before its first batch
    timeout             seconds to wait for one batch from the workers (0: no limit)
    multiprocessing_context
                        ``'fork'``, ``'spawn'``, ``'forkserver'`` or a context (default: the
                        platform's); spawn needs a picklable dataset, transform and worker_init_fn

    Fields come out as Tensors: the first (inputs) and any other floating field in the default
    float dtype (float32 unless ``xpnet.set_default_dtype`` says otherwise; integer inputs keep
    their dtype when a ``device_transform`` is given), integer fields (labels) as int64, boolean
    fields as bool.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, seed=None, transform=None,
                 backend=None, device=None, prefetch=2, num_workers=0, persistent_workers=False,
                 prefetch_factor=None, pin_memory=False, worker_init_fn=None, timeout=0,
                 multiprocessing_context=None, device_transform=None, sampler=None, decode_on_device=False):
        self._stream = callable(getattr(dataset, "stream", None))
        readable = hasattr(dataset, "__getitem__") or sample_function(dataset) is not None
        if not self._stream and not (hasattr(dataset, "__len__") and readable):
            raise TypeError(f"DataLoader: dataset must have __len__ and __getitem__ (or stream()), "
                            f"got {type(dataset).__name__}")
        for name, value in (("transform", transform), ("device_transform", device_transform),
                            ("worker_init_fn", worker_init_fn)):
            if value is not None and not callable(value):
                raise TypeError(f"DataLoader: {name} must be callable, got {value!r}")
        if sampler is not None:
            if shuffle:
                raise ValueError("DataLoader: sampler option is mutually exclusive with shuffle")
            if self._stream:
                raise ValueError(f"DataLoader: {type(dataset).__name__} is a stream; it takes no sampler")
            if not (hasattr(sampler, "__iter__") and hasattr(sampler, "__len__")):
                raise TypeError(f"DataLoader: sampler must have __iter__ and __len__, got {type(sampler).__name__}")
        self.sampler = sampler
        self.dataset = dataset
        self.batch_size = _integer("batch_size", batch_size, 1)
        self.shuffle = _flag("shuffle", shuffle)
        self.drop_last = _flag("drop_last", drop_last)
        self.transform = transform
        self.device_transform = device_transform
        self.prefetch = _integer("prefetch", prefetch, 0)
        self.num_workers = _integer("num_workers", num_workers, 0)
        self.persistent_workers = _flag("persistent_workers", persistent_workers)
        self.pin_memory = _flag("pin_memory", pin_memory)
        self.worker_init_fn = worker_init_fn
        self.timeout = _timeout(timeout)
        if self.num_workers == 0:
            for name, value, default in (("prefetch_factor", prefetch_factor, None),
                                         ("persistent_workers", self.persistent_workers, False),
                                         ("multiprocessing_context", multiprocessing_context, None)):
                if value != default:
                    raise ValueError(f"DataLoader: {name}={value!r} needs worker processes (num_workers > 0); "
                                     f"got num_workers=0")
        else:
            prefetch_factor = 2 if prefetch_factor is None else _integer("prefetch_factor", prefetch_factor, 1)
            _context(multiprocessing_context)  # an unknown start method is refused now, not at iteration
        self.prefetch_factor = prefetch_factor
        self.multiprocessing_context = multiprocessing_context
        self._backend = _resolve_backend(backend, device)
        random_parts = self.shuffle or transform is not None or self._stream or sample_function(dataset) is not None
        if seed is None and random_parts:
            source = self._backend if self._backend is not None else get_backend()
            seed = int(source.rng.host().integers(0, 2**63 - 1))
        elif seed is None:
            seed = 0  # nothing random to seed: leave the backend's stream untouched
        self.seed = _integer("seed", seed, 0)
        self.epoch = 0
        self._pool = None  # the persistent workers
        self.decode_on_device = _flag("decode_on_device", decode_on_device)
        self._encoded = self._device_decoder = None
        if self.decode_on_device:
            if self.num_workers or transform is not None:
                raise ValueError("DataLoader: decode_on_device reads files in the loader's thread and decodes and "
                                 "augments on the device: it takes no num_workers and no batch transform (the "
                                 f"dataset's transform is carried out on the device); got "
                                 f"num_workers={self.num_workers}, transform={transform!r}")
            from .device_decode import EncodedRecipe

            # the transform, the codec and the dataset are checked now
            self._encoded = EncodedRecipe(dataset, self.batch_size, self.drop_last)

    # -- sizes and order ----------------------------------------------------------------------
    def __len__(self) -> int:
        if self._stream:
            return self._stream_length()
        n = len(self.dataset) if self.sampler is None else len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _stream_length(self):
        if not hasattr(self.dataset, "__len__"):
            raise TypeError(f"DataLoader: the stream of {type(self.dataset).__name__} has no len()")
        rank, world = rank_and_world()
        mine = len(self.dataset) // world + (1 if rank < len(self.dataset) % world else 0)
        parts = max(1, self.num_workers) if self.uses_workers else 1
        sizes = [mine // parts + (1 if p < mine % parts else 0) for p in range(parts)]
        rounding = math.floor if self.drop_last else math.ceil
        return sum(rounding(s / self.batch_size) for s in sizes)

    @property
    def backend(self) -> Backend:
        """Where the batches of the next iteration go."""
        return self._backend if self._backend is not None else get_backend()

    @property
    def uses_workers(self) -> bool:
        """Whether iterating starts worker processes (see ``num_workers``)."""
        return self.num_workers > 0 and (self._stream or not in_memory(self.dataset))

    def order(self, epoch=None) -> np.ndarray:
        """The sample order of ``epoch`` (default: the epoch the next iteration will produce)."""
        if self._stream:
            raise TypeError(f"DataLoader: {type(self.dataset).__name__} is a stream; it has no index order")
        epoch = self.epoch if epoch is None else int(epoch)
        if self.sampler is not None:  # the sampler's indices, in its order (its own epoch: set_epoch)
            return np.fromiter((int(i) for i in iter(self.sampler)), dtype=np.int64)
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n, dtype=np.int64)
        order_rng, _ = epoch_generators(self.seed, epoch)
        return order_rng.permutation(n).astype(np.int64)

    def _batches(self, order):
        count = len(order) // self.batch_size if self.drop_last else math.ceil(len(order) / self.batch_size)
        return [order[i * self.batch_size:(i + 1) * self.batch_size] for i in range(count)]

    # -- resumption ---------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration produce epoch ``epoch``."""
        self.epoch = _integer("epoch", epoch, 0)

    def state_dict(self) -> dict:
        """``{'epoch': next epoch, 'seed': base seed}``: enough to replay the same epochs."""
        return {"epoch": self.epoch, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        missing = {"epoch", "seed"} - set(state)
        if missing:
            raise KeyError(f"DataLoader.load_state_dict: missing keys {sorted(missing)}; got {sorted(state)}")
        seed = _integer("seed", state["seed"], 0)
        self.set_epoch(state["epoch"])
        self.seed = seed

    # -- iteration ----------------------------------------------------------------------------
    def __iter__(self):
        """Start the next epoch (the counter advances now, even if the loop stops early)."""
        epoch = self.epoch
        self.epoch += 1
        backend = self.backend
        spec = EpochSpec(self.seed, epoch, _host_float_dtype().str)
        batches = None if self._stream else self._batches(self.order(epoch))
        count = len(batches) if batches is not None else _known_length(self._stream_length)
        if self._encoded is not None:  # a stream is split over the ranks, as below
            part, parts = rank_and_world() if self._stream else (0, 1)
            source = _ThreadSource(self._encoded, spec, batches, part, parts, self.prefetch, epoch)
            return _LoaderIterator(source, self._decoder_for(backend), count, epoch)
        recipe = BatchRecipe(self.dataset, self.transform, self.batch_size, self.drop_last,
                             self.device_transform is not None)
        if self.uses_workers:
            pool = self._pool if self._pool is not None and self._pool.alive else None
            if pool is None:
                rank, world = rank_and_world()
                pool = WorkerPool(recipe, self.num_workers, self.prefetch_factor, self.multiprocessing_context,
                                  self.worker_init_fn, self.timeout, self.seed, epoch, rank, world)
                self._pool = pool if self.persistent_workers else None
            source = _WorkerSource(pool, spec, batches, owns_pool=not self.persistent_workers)
        else:
            part, parts = rank_and_world() if self._stream else (0, 1)
            source = _ThreadSource(recipe, spec, batches, part, parts, self.prefetch, epoch)
        uploader = Uploader(backend, self.pin_memory, self.device_transform)
        return _LoaderIterator(source, uploader, count, epoch)

    def _decoder_for(self, backend):
        """The device decoder of ``decode_on_device`` for ``backend`` (made once, kept while it is the same)."""
        decoder = self._device_decoder
        if decoder is None or decoder.backend is not backend:
            from .device_decode import DeviceDecoder

            decoder = self._device_decoder = DeviceDecoder(backend, self._encoded.plan, self.device_transform)
        return decoder

    def close(self):
        """Stop the persistent workers, if any (a later iteration starts new ones)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 -- never raise from a finaliser
            pass

    def __repr__(self):
        size = f"{len(self.dataset)}" if hasattr(self.dataset, "__len__") else "a stream"
        workers = f", num_workers={self.num_workers}" if self.num_workers else ""
        return (f"DataLoader({type(self.dataset).__name__} of {size}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last}, seed={self.seed}, epoch={self.epoch}{workers})")


def rank_and_world():
    """``(rank, world_size)`` of ``xpnet.distributed`` when it is imported and initialised, else (0, 1)."""
    dist = sys.modules.get("xpnet.distributed")
    initialised = getattr(dist, "is_initialized", None)
    if dist is None or initialised is None or not initialised():
        return 0, 1
    return int(dist.get_rank()), int(dist.get_world_size())


def _known_length(length):
    """``length()``, or None where a stream does not know its size (then ``len(iterator)`` raises)."""
    try:
        return length()
    except TypeError:
        return None


def _integer(name, value, minimum):
    """``value`` as an int, refusing a non-integer (a bool, a float, a string) or one below ``minimum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        kind = "a positive" if minimum == 1 else "a non-negative"
        raise ValueError(f"DataLoader: {name} must be {kind} integer, got {value!r}")
    return int(value)


def _flag(name, value):
    """``value`` as a bool, refusing anything but True or False (a string 'False' is truthy)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"DataLoader: {name} must be True or False, got {value!r}")
    return bool(value)


def _timeout(value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f"DataLoader: timeout must be a non-negative number of seconds, got {value!r}")
    return float(value)


def _resolve_backend(backend, device):
    if backend is None and device is None:
        return None
    if isinstance(backend, Backend):
        return backend if device is None else get_backend(backend.name, device)
    if backend is None:
        return get_backend(get_backend().name, device)
    return get_backend(backend, device)


def _host_float_dtype():
    """The NumPy dtype floating fields take on the host: the default dtype, or float32 for
    bfloat16 (which NumPy lacks; the consumer casts after upload)."""
    name = str(get_default_dtype())
    return np.dtype("float32" if name == "bfloat16" else name)


# -- where host batches come from -----------------------------------------------------------------
def _host_batches(recipe, spec, batches, part, parts):
    if batches is None:
        yield from recipe.stream_batches(spec, part, parts)
    else:
        for b, indices in enumerate(batches):
            yield recipe.map_batch(spec, b, indices)


def _produce(batches, out, stop):
    """The background thread: put ('batch', fields) for each batch, then ('done',) or ('error', exc)."""
    try:
        for fields in batches:
            if stop.is_set():
                return
            item = ("batch", fields)
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.05)
                    break
                except queue.Full:
                    continue
        final = ("done",)
    except BaseException as exc:  # noqa: BLE001 -- handed to the consumer, which re-raises it
        final = ("error", exc)
    while not stop.is_set():
        try:
            out.put(final, timeout=0.05)
            return
        except queue.Full:
            continue


class _ThreadSource:
    """Host batches from the consumer's thread (``prefetch=0``) or from one background thread. Holds
    nothing that refers back to the iterator, so dropping the iterator frees it."""

    transient = False  # each batch is a fresh array the upload may keep

    def __init__(self, recipe, spec, batches, part, parts, prefetch, epoch):
        self._batches = _host_batches(recipe, spec, batches, part, parts)
        self._thread = None
        self._pending = None
        if prefetch > 0 and (batches is None or len(batches) > 0):
            self._queue = queue.Queue(maxsize=prefetch)
            self._stop = threading.Event()
            # the producer runs in a copy of the consumer's context, so a dataset or transform that
            # asks for the current backend sees the same ``use_backend`` choice
            context = contextvars.copy_context()
            self._thread = threading.Thread(target=context.run, args=(_produce, self._batches, self._queue, self._stop),
                                            name=f"xpnet-DataLoader-epoch{epoch}", daemon=True)
            self._thread.start()

    def next_host(self):
        if self._thread is None:
            return next(self._batches, None)
        item, self._pending = self._pending or self._take(), None
        if item[0] == "error":
            raise item[1]
        return item[1] if item[0] == "batch" else None

    def poll(self):
        """The next batch if it is ready now, else None (an error or the end wait for ``next_host``)."""
        if self._thread is None or self._pending is not None:
            return None
        try:
            item = self._queue.get_nowait()
        except queue.Empty:
            return None
        if item[0] == "batch":
            return item[1]
        self._pending = item
        return None

    def release(self):
        pass

    def _take(self):
        while True:
            try:
                return self._queue.get(timeout=0.1)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    return ("error", RuntimeError("DataLoader: the background batch thread ended without a result"))

    def close(self):
        """Stop the producer thread and wait for it (it finishes at most the batch in hand)."""
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        while True:  # free a producer blocked on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if thread is not threading.current_thread():
            thread.join()


class _WorkerSource:
    """Host batches from a ``WorkerPool``: views into shared memory, valid until ``release``."""

    transient = True  # the slot is reused: the upload must copy

    def __init__(self, pool, spec, batches, owns_pool):
        self._pool, self._owns = pool, owns_pool
        self._token = pool.begin(spec, batches)

    def next_host(self):
        return self._pool.next_host(self._token)

    def poll(self):
        return self._pool.next_host(self._token) if self._pool.ready(self._token) else None

    def release(self):
        self._pool.release(self._token)

    def close(self, failed=False):
        current = self._pool._epoch is not None and self._pool._epoch.token == self._token
        if self._owns or (failed and current):
            self._pool.close()  # a failed pool (a dead worker, say) is replaced at the next epoch


class _LoaderIterator:
    """One epoch. Closing it (``close()``, leaving a ``with`` block, breaking out of a ``for``
    loop and dropping it, or reaching the end) stops the producer thread or the workers."""

    def __init__(self, source, uploader, count, epoch):
        self.epoch = epoch
        self._source = source
        self._uploader = uploader
        self._count = count
        self._next = 0
        self._ahead = None
        self._closed = False

    def __iter__(self):
        return self

    def __len__(self):
        if self._count is None:
            raise TypeError("DataLoader: this stream's length is unknown")
        return max(0, self._count - self._next)

    def __next__(self):
        if self._closed:
            raise StopIteration
        try:
            batch, self._ahead = self._ahead, None
            if batch is None:
                batch = self._take(self._source.next_host())
            if self._uploader.pinned is not None:  # start the next upload now, to overlap this step
                self._ahead = self._take(self._source.poll())
        except BaseException:
            self._close(failed=True)
            raise
        if batch is None:
            self.close()
            raise StopIteration
        self._next += 1
        return batch

    def _take(self, host):
        if host is None:
            return None
        try:
            return self._uploader.upload(host, self._source.transient)
        finally:
            del host
            self._source.release()

    def close(self):
        """Stop the producer thread, or the workers this epoch started (idempotent)."""
        self._close(failed=False)

    def _close(self, failed):
        if self._closed:
            return
        self._closed = True
        self._ahead = None
        if isinstance(self._source, _WorkerSource):
            self._source.close(failed=failed)
        else:
            self._source.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 -- never raise from a finaliser during interpreter shutdown
            pass
