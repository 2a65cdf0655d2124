"""DataLoader worker processes: whole batches built in N processes, returned through shared memory.

Host-side module: it imports NumPy. It holds the process machinery: starting and stopping the
workers, their shared-memory slots, the pipes, the worker loop, error and death detection
(``WorkerPool``, ``get_worker_info``, ``DataLoaderWorkerError``). What a worker builds, and how its
randomness is derived, is ``batching.py`` (``BatchRecipe``; its names are importable from here too).
``DataLoader(num_workers=N)`` (loader.py) starts a ``WorkerPool``; each worker builds whole host
batches (samples fetched and stacked, batch transform, cast: ``BatchRecipe``, which the loader's
thread uses as well) into one of its own ``prefetch_factor`` shared-memory slots
(``multiprocessing.shared_memory``, reused from batch to batch, regrown when a batch needs more
room). Only a few bytes of metadata (slot name, dtypes, shapes, offsets) travel through a pipe,
never pickled arrays; the main process copies or uploads the batch out of the slot, then hands the
slot back.

Order and randomness do not depend on the number of workers: batch ``b`` goes to worker ``b % N``
and comes out as batch ``b``, with the indices ``num_workers=0`` gives it; its transform draws from
``batch_generator(seed, epoch, b)`` and sample ``i`` from ``sample_generator(seed, epoch, i)``,
whichever process builds it. A stream (``dataset.stream(seed, epoch, part, parts)``) is read by
worker ``w`` as part ``rank * N + w`` of ``world_size * N``; each worker batches its part, and the
batches come out round-robin (worker ``s % N`` gives the ``s``-th; those of longer parts last).

Failures. A worker's exception is raised in the main process when its batch is due: the same
exception (type, arguments, message, which names the file for the readers), noted with the worker,
the batch and the sample, with the worker's traceback as ``__cause__``. A worker that dies (killed
by the OS) is seen at once through its process sentinel: ``DataLoaderWorkerError`` names it and the
signal; ``timeout`` bounds the wait for a batch. Closing the pool stops and joins every worker and
unlinks every slot. In a worker SIGINT is ignored (Ctrl-C is the main process's), SIGTERM exits
cleanly, the NumPy kernels and OpenBLAS use one thread (``XPNET_NUM_THREADS=1``), NumPy's and
Python's global generators are seeded per worker, and the worker exits if the main process is gone.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import pickle
import random
import secrets
import signal
import sys
import time
import traceback
import weakref
from multiprocessing import shared_memory
from typing import NamedTuple

import numpy as np

from .batching import (  # noqa: F401 -- the recipe's names stay importable from here as well
    BatchRecipe,
    EpochSpec,
    add_note,
    batch_generator,
    batch_getter,
    host_cast,
    in_memory,
    sample_function,
    sample_generator,
    stream_batch_generator,
    worker_seed,
)

ALIGN = 64  # byte alignment of every field inside a shared-memory slot


# -- inside a worker -------------------------------------------------------------------------------
class WorkerInfo(NamedTuple):
    """``get_worker_info()`` inside a worker (PyTorch's fields): id, num_workers, seed, dataset."""
    id: int
    num_workers: int
    seed: int
    dataset: object


_WORKER_INFO = None


def get_worker_info():
    """The ``WorkerInfo`` of the current DataLoader worker process; None in the main process."""
    return _WORKER_INFO


class _WorkerSetup(NamedTuple):
    worker_id: int
    num_workers: int
    recipe: BatchRecipe
    seed: int
    init_fn: object
    part: int
    parts: int
    parent_pid: int
    prefix: str


def _single_threaded():
    """``XPNET_NUM_THREADS=1`` semantics: N workers each spawning a pool of threads would oversubscribe."""
    for name in ("XPNET_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"
    runtime = sys.modules.get("xpnet.backends.numpy.runtime")
    if runtime is not None:
        runtime.NUM_WORKERS = 1
        if runtime.blas_threads.available:
            runtime.blas_threads._set(1)
    native = sys.modules.get("xpnet.backends.numpy.native")
    if runtime is not None and native is not None and native._state.get("lib") is not None:
        native._state["lib"].xp_threads_configure(1, runtime.NATIVE_SPIN_US)


_START_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _signals_blocked():
    """SIGINT and SIGTERM blocked while a worker starts: the child inherits the mask (through fork,
    and exec for spawn) and unblocks them once its handlers are in place, so a Ctrl-C meanwhile is
    neither a traceback in the worker nor lost in the parent."""
    saved = signal.pthread_sigmask(signal.SIG_BLOCK, _START_SIGNALS) if hasattr(signal, "pthread_sigmask") else None
    try:
        yield
    finally:
        if saved is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, saved)


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


class _Slots:
    """A worker's shared-memory slots: created on first use, regrown when a batch needs more room."""

    def __init__(self, prefix):
        self.prefix, self.segments, self.made = prefix, {}, 0

    def write(self, slot, fields):
        layout, offset = [], 0
        for f in fields:
            layout.append((f.dtype.str, f.shape, offset))
            offset += -(-f.nbytes // ALIGN) * ALIGN
        shm = self.segments.get(slot)
        if shm is None or shm.size < offset:
            if shm is not None:
                _unlink(shm)
            self.made += 1
            shm = shared_memory.SharedMemory(name=f"{self.prefix}s{slot}g{self.made}", create=True,
                                             size=max(offset, 1))
            self.segments[slot] = shm
        for f, (_, shape, start) in zip(fields, layout):
            np.ndarray(shape, f.dtype, buffer=shm.buf, offset=start)[...] = f
        return shm.name, tuple(layout)

    def close(self):
        for shm in self.segments.values():
            _unlink(shm)
        self.segments.clear()


def _error_payload(exc, worker_id):
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        blob = pickle.dumps(exc)
        pickle.loads(blob)
    except Exception:  # noqa: BLE001 -- an exception that does not survive pickling is described instead
        blob = None
    return {"blob": blob, "type": type(exc).__name__, "message": str(exc), "traceback": text,
            "worker": worker_id, "pid": os.getpid()}


def _worker_main(setup, tasks, results, token):
    """The worker loop: (kind, token, seq, slot, spec, indices) in, one message per task out."""
    global _WORKER_INFO
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if hasattr(signal, "pthread_sigmask"):  # blocked by the parent around start(): see _signals_blocked
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _START_SIGNALS)
    _single_threaded()
    np.random.seed(setup.seed % 2**32)
    random.seed(setup.seed)
    _WORKER_INFO = WorkerInfo(setup.worker_id, setup.num_workers, setup.seed, setup.recipe.dataset)
    slots = _Slots(setup.prefix)
    recipe, stream = setup.recipe, None
    try:
        if setup.init_fn is not None:
            try:
                setup.init_fn(setup.worker_id)
            except Exception as exc:  # noqa: BLE001 -- reported, then this worker ends
                add_note(exc, f"DataLoader: in worker_init_fn({setup.worker_id})")
                results.send(("fatal", None, None, None, _error_payload(exc, setup.worker_id)))
                return
        while True:
            if not tasks.poll(0.5):
                if os.getppid() != setup.parent_pid:
                    return  # the main process is gone
                continue
            try:
                task = tasks.recv()
            except EOFError:
                return
            if task is None:
                return
            kind, task_token, seq, slot, spec, indices = task
            if task_token != token.value:  # an abandoned epoch (persistent workers): skip the work
                results.send(("stale", task_token, seq, slot, None))
                continue
            try:
                if kind == "map":
                    fields = recipe.map_batch(spec, seq, indices)
                else:
                    if stream is None or stream[0] != task_token:
                        stream = (task_token, recipe.stream_batches(spec, setup.part, setup.parts))
                    fields = next(stream[1], None)
                    if fields is None:
                        results.send(("end", task_token, seq, slot, None))
                        continue
                results.send(("batch", task_token, seq, slot, slots.write(slot, fields)))
            except Exception as exc:  # noqa: BLE001 -- raised in the main process when the batch is due
                results.send(("error", task_token, seq, slot, _error_payload(exc, setup.worker_id)))
    except (BrokenPipeError, EOFError, KeyboardInterrupt):
        pass
    finally:
        slots.close()


# -- in the main process ---------------------------------------------------------------------------
class DataLoaderWorkerError(RuntimeError):
    """A DataLoader worker died, timed out, or raised an exception that could not be sent back."""


class _RemoteTraceback(Exception):
    def __str__(self):
        return "\n\nDataLoader worker traceback:\n" + self.args[0]


def worker_failure(payload, what):
    """The exception a worker's error payload stands for, with notes naming the worker and ``what``."""
    exc = pickle.loads(payload["blob"]) if payload["blob"] is not None else None
    where = f"DataLoader worker {payload['worker']} (pid {payload['pid']}) raised this while {what}"
    if exc is None:
        exc = DataLoaderWorkerError(f"{payload['type']}: {payload['message']} ({where})")
    add_note(exc, where)
    exc.__cause__ = _RemoteTraceback(payload["traceback"])
    return exc


def _exit_description(exitcode):
    if exitcode is None or exitcode >= 0:
        return f"exited unexpectedly with exit code {exitcode}"
    known = {s.value: s.name for s in signal.Signals}
    return f"was killed by signal {known.get(-exitcode, -exitcode)}"


def _context(spec):
    if spec is None:
        return multiprocessing.get_context()
    if isinstance(spec, str):
        try:
            return multiprocessing.get_context(spec)
        except ValueError:
            raise ValueError(f"DataLoader: multiprocessing_context must be one of "
                             f"{multiprocessing.get_all_start_methods()} or a context, got {spec!r}") from None
    if hasattr(spec, "Process") and hasattr(spec, "Pipe"):
        return spec
    raise TypeError(f"DataLoader: multiprocessing_context must be a start method name or a multiprocessing "
                    f"context, got {spec!r}")


class _PoolState:
    """Everything the shutdown needs, and nothing that refers back to the pool (for its finaliser)."""

    def __init__(self):
        self.processes, self.tasks, self.results = [], [], []
        self.attached = {}  # segment name -> SharedMemory mapped in this process
        self.prefix = ""
        self.closed = False


def _shutdown(state):
    if state.closed:
        return
    state.closed = True
    for conn in state.tasks:
        try:
            conn.send(None)
        except (OSError, ValueError):
            pass
    deadline = time.monotonic() + 0.5
    for process in state.processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in state.processes:
        if process.is_alive():
            process.terminate()  # SIGTERM: the worker unlinks its slots on the way out
    for process in state.processes:
        process.join(2.0)
        if process.is_alive():
            process.kill()
            process.join(2.0)
    for conn in state.tasks + state.results:
        conn.close()
    for shm in state.attached.values():
        _unlink(shm)
    state.attached.clear()
    _unlink_leftovers(state.prefix)


def _unlink(shm):
    try:
        shm.close()
    except BufferError:  # a view is still alive somewhere: the mapping goes with it, the name goes now
        pass
    try:
        shm.unlink()
    except FileNotFoundError:
        pass


def _unlink_leftovers(prefix):
    """Slots a killed worker made but never reported (Linux lists them in /dev/shm)."""
    try:
        names = [n for n in os.listdir("/dev/shm") if n.startswith(prefix)]
    except OSError:
        return
    for name in names:
        try:
            _unlink(shared_memory.SharedMemory(name=name))
        except (FileNotFoundError, OSError):
            pass


class WorkerPool:
    """``num_workers`` processes building batches of ``recipe``; one epoch at a time (``begin``)."""

    def __init__(self, recipe, num_workers, prefetch_factor, context=None, worker_init_fn=None, timeout=0,
                 seed=0, epoch=0, rank=0, world_size=1):
        ctx = _context(context)
        self.num_workers, self.prefetch_factor, self.timeout = num_workers, prefetch_factor, float(timeout)
        self.state = state = _PoolState()
        self._finalizer = weakref.finalize(self, _shutdown, state)
        state.prefix = f"xpn{os.getpid()}_{secrets.token_hex(3)}_"
        if os.name == "posix":  # one resource tracker for this process and every worker
            from multiprocessing import resource_tracker
            resource_tracker.ensure_running()
        self._token = ctx.Value("q", 0, lock=False)
        try:
            for w in range(num_workers):
                setup = _WorkerSetup(w, num_workers, recipe, worker_seed(seed, epoch, w), worker_init_fn,
                                     rank * num_workers + w, world_size * num_workers, os.getpid(),
                                     f"{state.prefix}w{w}")
                task_in, task_out = ctx.Pipe(duplex=False)
                result_in, result_out = ctx.Pipe(duplex=False)
                process = ctx.Process(target=_worker_main, args=(setup, task_in, result_out, self._token),
                                      name=f"xpnet-DataLoader-worker-{w}", daemon=True)
                state.tasks.append(task_out)
                state.results.append(result_in)
                try:
                    with _signals_blocked():
                        process.start()
                except (pickle.PicklingError, AttributeError, TypeError) as exc:
                    raise TypeError(f"DataLoader: cannot start worker processes with the "
                                    f"{ctx.get_start_method()!r} start method, which pickles the dataset, "
                                    f"transform and worker_init_fn: {type(exc).__name__}: {exc}") from exc
                state.processes.append(process)
                task_in.close()
                result_out.close()
        except BaseException:
            self.close()
            raise
        self._free = [list(range(prefetch_factor)) for _ in range(num_workers)]
        self._epoch = None

    # -- one epoch ------------------------------------------------------------------------------
    def begin(self, spec, batches=None):
        """Start an epoch (abandoning any earlier one): ``batches`` lists the sample indices of each
        batch; None reads the dataset's stream. Returns the epoch's token."""
        old = self._epoch
        if old is not None:  # slots the abandoned epoch still holds go back to their workers
            held = [(seq % self.num_workers, r[1]) for seq, r in old.received.items() if r[0] == "batch"]
            for worker, slot in held + ([old.holding] if old.holding is not None else []):
                self._free[worker].append(slot)
        self._token.value += 1
        self._epoch = _Epoch(self._token.value, spec, batches, self.num_workers)
        self._dispatch()
        return self._token.value

    @property
    def alive(self) -> bool:
        return not self.state.closed

    def next_host(self, token):
        """The next batch of epoch ``token`` in order, as views into its slot (valid until
        ``release``), or None after the last one."""
        epoch = self._current(token)
        start = time.monotonic()
        while True:
            seq, worker = epoch.seq, epoch.seq % self.num_workers
            if epoch.batches is not None and seq >= len(epoch.batches):
                return None
            result = epoch.received.pop(seq, None)
            if result is None and epoch.batches is None and worker in epoch.ended:
                if len(epoch.ended) == self.num_workers and seq > max(epoch.ended.values()):
                    return None
                if seq > epoch.ended[worker]:  # this worker's part is over: nothing comes for ``seq``
                    epoch.seq += 1
                    continue
            if result is None:
                waited = time.monotonic() - start
                if self.timeout > 0 and waited > self.timeout:
                    raise DataLoaderWorkerError(f"DataLoader timed out after {self.timeout:g} s waiting for "
                                                f"batch {seq} from worker {worker}")
                limit = 1.0 if self.timeout <= 0 else max(0.0, min(1.0, self.timeout - waited))
                self._receive(limit)
                epoch = self._current(token)
                continue
            kind, slot, payload = result
            epoch.seq += 1
            if kind == "end":
                continue
            if kind == "error":
                raise worker_failure(payload, f"preparing batch {seq}" if epoch.batches is not None
                                     else f"reading stream part {worker} (batch {seq} of the epoch)")
            epoch.holding = (worker, slot)
            return self._views(payload)

    def release(self, token):
        """Give the slot of the batch last returned back to its worker."""
        epoch = self._epoch
        if epoch is None or epoch.token != token or epoch.holding is None:
            return
        worker, slot = epoch.holding
        epoch.holding = None
        self._free[worker].append(slot)
        self._dispatch()

    def ready(self, token) -> bool:
        """Whether the next batch is already here (a non-blocking look, for uploading ahead)."""
        epoch = self._current(token)
        if epoch.seq not in epoch.received:
            self._receive(0.0)
        return self._epoch is epoch and epoch.received.get(epoch.seq, ("",))[0] == "batch"

    def _current(self, token):
        if self._epoch is None or self._epoch.token != token:
            raise RuntimeError("DataLoader: this iterator was superseded by a newer iteration over the same "
                               "loader (persistent_workers keeps one epoch running at a time)")
        return self._epoch

    def _views(self, payload):
        name, layout = payload
        shm = self.state.attached.get(name)
        if shm is None:
            shm = self.state.attached[name] = shared_memory.SharedMemory(name=name)
            prefix = name.rsplit("g", 1)[0] + "g"
            for old in [n for n in self.state.attached if n.startswith(prefix) and n != name]:
                _unlink(self.state.attached.pop(old))  # a slot the worker regrew
        return tuple(np.ndarray(shape, np.dtype(dtype), buffer=shm.buf, offset=offset)
                     for dtype, shape, offset in layout)

    def _dispatch(self):
        epoch = self._epoch
        if epoch is None:
            return
        for worker in range(self.num_workers):
            free = self._free[worker]
            while free:
                seq = epoch.next_seq[worker]
                if epoch.batches is not None and seq >= len(epoch.batches):
                    break
                if epoch.batches is None and worker in epoch.ended:
                    break
                slot = free.pop()
                kind, indices = ("map", epoch.batches[seq]) if epoch.batches is not None else ("stream", None)
                try:
                    self.state.tasks[worker].send((kind, epoch.token, seq, slot, epoch.spec, indices))
                except (BrokenPipeError, OSError):
                    free.append(slot)
                    self._check_alive()
                    raise
                epoch.next_seq[worker] = seq + self.num_workers

    def _receive(self, timeout):
        """Handle every message that arrives within ``timeout`` seconds; raise if a worker died."""
        state = self.state
        ready = multiprocessing.connection.wait(state.results + [p.sentinel for p in state.processes], timeout)
        died = False
        for item in ready:
            if item in state.results:
                self._drain(state.results.index(item))
            else:
                died = True
        if died:
            self._check_alive()
        self._dispatch()

    def _drain(self, worker):
        conn = self.state.results[worker]
        while conn.poll(0):
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return
            self._handle(worker, message)

    def _handle(self, worker, message):
        kind, token, seq, slot, payload = message
        if kind == "fatal":
            raise worker_failure(payload, "running worker_init_fn")
        epoch = self._epoch
        current = kind != "stale" and epoch is not None and token == epoch.token and seq >= epoch.seq
        if kind == "batch" and current:
            epoch.received[seq] = (kind, slot, payload)  # the slot stays taken until ``release``
            return
        self._free[worker].append(slot)
        if not current:
            return
        if kind == "end":
            epoch.ended[worker] = min(epoch.ended.get(worker, seq), seq)
        epoch.received[seq] = (kind, None, payload)

    def _check_alive(self):
        for worker, process in enumerate(self.state.processes):
            if process.exitcode is not None:
                self._drain(worker)
                raise DataLoaderWorkerError(f"DataLoader worker {worker} (pid {process.pid}) "
                                            f"{_exit_description(process.exitcode)}")

    def close(self):
        """Stop and join every worker, unlink every slot (idempotent)."""
        self._epoch = None
        self._finalizer()


class _Epoch:
    def __init__(self, token, spec, batches, num_workers):
        self.token, self.spec, self.batches = token, spec, batches
        self.seq = 0  # the next batch to hand out
        self.next_seq = list(range(num_workers))  # the next batch to ask each worker for
        self.received = {}  # seq -> (kind, slot, payload)
        self.ended = {}  # streams: worker -> the first seq it answered "end" to
        self.holding = None  # (worker, slot) of the batch handed out and not yet released
