"""DataLoader: host batches, prepared one step ahead in a background thread, uploaded per step.

Host-side module: it imports NumPy. Index shuffling, batch assembly and augmentation run on the
host, in one background thread that keeps up to ``prefetch`` batches ready in a bounded queue
while the consumer computes; the consumer uploads each batch with ``backend.from_host`` and gets
xpnet Tensors on the loader's backend and device.

Randomness. Every epoch has its own generators, derived from the loader's base seed and the epoch
number through ``np.random.SeedSequence([seed, epoch])``, spawned into two streams: one for the
order, one for the transforms. So epoch ``e`` of a loader seeded ``s`` always has the same order
(whatever the backend, whether or not a transform is used) and the same augmentation; and a
resumed run that restores ``state_dict()`` (the epoch counter and the seed) replays the same
epochs. With ``seed=None`` the base seed is drawn once, at construction, from the current
backend's seeded host generator, so ``xpnet.manual_seed`` makes that repeatable as well (a loader
with neither shuffling nor a transform draws nothing).
"""

from __future__ import annotations

import contextvars
import math
import queue
import threading

import numpy as np

from ..autodiff.tensor import Tensor
from ..backends import Backend, get_backend, get_default_dtype
from .dataset import stack_samples

_DONE = object()


def epoch_generators(seed: int, epoch: int):
    """``(order_rng, transform_rng)`` for one epoch: independent streams from ``[seed, epoch]``."""
    order_seq, transform_seq = np.random.SeedSequence([int(seed), int(epoch)]).spawn(2)
    return np.random.Generator(np.random.PCG64(order_seq)), np.random.Generator(np.random.PCG64(transform_seq))


class DataLoader:
    """Iterate over ``dataset`` in batches of xpnet Tensors on the current (or given) backend.

    ``for xb, yb in DataLoader(TensorDataset(x, y), batch_size=128, shuffle=True, seed=0): ...``

    dataset     any object with ``__len__`` and ``__getitem__`` returning a tuple of fields; with a
                ``get_batch(indices)`` method (``TensorDataset`` has one) a batch is assembled by
                fancy indexing, without a Python loop over its samples
    batch_size  samples per batch; the last batch is smaller unless ``drop_last``
    shuffle     a new order each epoch (see the module docstring for how it is derived)
    seed        base seed of the order and the transforms (None: drawn from the backend's generator)
    transform   ``transform(x, rng) -> x`` applied to the first field (the inputs) of each host
                batch, e.g. ``transforms.Compose([...])``
    backend, device
                where batches go: a Backend, or a backend name (with ``device``); by default the
                backend current when iteration starts (``use_backend`` blocks are honoured)
    prefetch    batches prepared ahead by the background thread; 0 prepares each batch in the
                consumer's thread (no thread at all)

    Fields come out as Tensors: the first (inputs) and any other floating field in the default
    float dtype (float32 unless ``xpnet.set_default_dtype`` says otherwise), integer fields
    (labels) as int64, boolean fields as bool.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, seed=None, transform=None,
                 backend=None, device=None, prefetch=2):
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(f"DataLoader: dataset must have __len__ and __getitem__, got {type(dataset).__name__}")
        if transform is not None and not callable(transform):
            raise TypeError(f"DataLoader: transform must be callable as transform(x, rng), got {transform!r}")
        self.dataset = dataset
        self.batch_size = _integer("batch_size", batch_size, 1)
        self.shuffle = _flag("shuffle", shuffle)
        self.drop_last = _flag("drop_last", drop_last)
        self.transform = transform
        self.prefetch = _integer("prefetch", prefetch, 0)
        self._backend = _resolve_backend(backend, device)
        if seed is None and (self.shuffle or transform is not None):
            source = self._backend if self._backend is not None else get_backend()
            seed = int(source.rng.host().integers(0, 2**63 - 1))
        elif seed is None:
            seed = 0  # nothing random to seed: leave the backend's stream untouched
        self.seed = _integer("seed", seed, 0)
        self.epoch = 0

    # -- sizes and order ----------------------------------------------------------------------
    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    @property
    def backend(self) -> Backend:
        """Where the batches of the next iteration go."""
        return self._backend if self._backend is not None else get_backend()

    def order(self, epoch=None) -> np.ndarray:
        """The sample order of ``epoch`` (default: the epoch the next iteration will produce)."""
        epoch = self.epoch if epoch is None else int(epoch)
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n, dtype=np.int64)
        order_rng, _ = epoch_generators(self.seed, epoch)
        return order_rng.permutation(n).astype(np.int64)

    def _batches(self, order):
        count = len(self)
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
        _, transform_rng = epoch_generators(self.seed, epoch)
        plan = _BatchPlan(self.dataset, self._batches(self.order(epoch)), self.transform, transform_rng)
        return _LoaderIterator(plan, self.backend, self.prefetch, epoch)

    def __repr__(self):
        return (f"DataLoader({type(self.dataset).__name__} of {len(self.dataset)}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last}, seed={self.seed}, epoch={self.epoch})")


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


def _resolve_backend(backend, device):
    if backend is None and device is None:
        return None
    if isinstance(backend, Backend):
        return backend if device is None else get_backend(backend.name, device)
    if backend is None:
        return get_backend(get_backend().name, device)
    return get_backend(backend, device)


class _BatchPlan:
    """Everything the producer needs, and nothing that refers back to the iterator (so dropping
    the iterator frees it and its finaliser can stop the thread)."""

    def __init__(self, dataset, batches, transform, rng):
        self.dataset = dataset
        self.batches = batches
        self.transform = transform
        self.rng = rng
        self.getter = getattr(dataset, "get_batch", None)

    def host_batch(self, index):
        indices = self.batches[index]
        if self.getter is not None:
            fields = tuple(self.getter(indices))
        else:
            fields = stack_samples([self.dataset[int(i)] for i in indices], self.dataset)
        if self.transform is not None:
            fields = (np.asarray(self.transform(fields[0], self.rng)),) + fields[1:]
        return tuple(_host_cast(f, position) for position, f in enumerate(fields))


def _host_float_dtype():
    """The NumPy dtype floating fields take on the host: the default dtype, or float32 for
    bfloat16 (which NumPy lacks; the consumer casts after upload)."""
    name = str(get_default_dtype())
    return np.dtype("float32" if name == "bfloat16" else name)


def _host_cast(field, position):
    field = np.asarray(field)
    kind = field.dtype.kind
    if position == 0 or kind == "f":
        return np.ascontiguousarray(field, dtype=_host_float_dtype())
    if kind in "iu":
        return np.ascontiguousarray(field, dtype=np.int64)
    if kind == "b":
        return np.ascontiguousarray(field)
    raise TypeError(f"DataLoader: field {position} of the batch has dtype {field.dtype}; "
                    f"expected numbers or booleans")


def _produce(plan, out, stop):
    """The background thread: put ('batch', fields) for each batch, then ('done',) or ('error', exc)."""
    try:
        for index in range(len(plan.batches)):
            if stop.is_set():
                return
            item = ("batch", plan.host_batch(index))
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


class _LoaderIterator:
    """One epoch. Closing it (``close()``, leaving a ``with`` block, breaking out of a ``for``
    loop and dropping it, or reaching the end) stops and joins the producer thread."""

    def __init__(self, plan, backend, prefetch, epoch):
        self.epoch = epoch
        self._plan = plan
        self._backend = backend
        self._count = len(plan.batches)
        self._next = 0
        self._closed = False
        self._thread = None
        if prefetch > 0 and self._count > 0:
            self._queue = queue.Queue(maxsize=prefetch)
            self._stop = threading.Event()
            # the producer runs in a copy of the consumer's context, so a dataset or transform that
            # asks for the current backend sees the same ``use_backend`` choice
            context = contextvars.copy_context()
            self._thread = threading.Thread(target=context.run, args=(_produce, plan, self._queue, self._stop),
                                            name=f"xpnet-DataLoader-epoch{epoch}", daemon=True)
            self._thread.start()

    def __iter__(self):
        return self

    def __len__(self):
        return self._count - self._next

    def __next__(self):
        if self._closed or self._next >= self._count:
            self.close()
            raise StopIteration
        if self._thread is None:
            try:
                fields = self._plan.host_batch(self._next)
            except BaseException:
                self.close()
                raise
        else:
            item = self._take()
            if item[0] == "error":
                self.close()
                raise item[1]
            if item[0] == "done":
                self.close()
                raise StopIteration
            fields = item[1]
        self._next += 1
        return tuple(self._upload(f) for f in fields)

    def _take(self):
        while True:
            try:
                return self._queue.get(timeout=0.1)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    return ("error", RuntimeError("DataLoader: the background batch thread ended without a result"))

    def _upload(self, host):
        array = self._backend.from_host(host)
        if host.dtype.kind == "f" and str(get_default_dtype()) == "bfloat16":
            array = self._backend.xp.astype(array, self._backend.dtype("bfloat16"))
        return Tensor(array)

    def close(self):
        """Stop the producer thread and wait for it (it finishes at most the batch in hand)."""
        if self._closed:
            return
        self._closed = True
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

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 -- never raise from a finaliser during interpreter shutdown
            pass
