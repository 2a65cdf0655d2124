"""Where the NumPy kernels run: the worker threads, the BLAS thread pinning, per-thread workspaces.

* Batch-parallel: each kernel splits the batch (or the rows) over ``NUM_WORKERS`` threads (the CPUs
  this process may use, or ``XPNET_NUM_THREADS``) through ``parallel``; NumPy releases the GIL in
  copies, ufuncs and GEMMs. While they run, OpenBLAS is pinned to one thread per call
  (``blas_threads``), so every core runs its own im2col + GEMM pipeline instead of waiting on the
  BLAS's spinning threads.
* Workspaces: scratch arrays reused across calls, one per thread and name (``workspace``), released
  by ``release_workspaces``.
* A forked child (a multiprocessing data worker) starts with a fresh pool and fresh locks.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

_local = threading.local()


class _BlasThreads:
    """OpenBLAS's thread count, pinned to 1 while the kernels run their own batch-parallel workers.

    Splitting the batch over worker threads, each with a single-threaded GEMM, also spreads im2col,
    col2im and the elementwise work over the cores, and avoids OpenBLAS's spinning threads competing
    with ours. Found through the OpenBLAS library NumPy loaded; where there is none (MKL, Accelerate),
    ``available`` is False and the GEMM kernels run serially with the BLAS's own threads.
    """

    def __init__(self):
        self._set = self._get = None
        self._lock = threading.Lock()
        self._depth = 0
        self._saved = None
        for path in self._candidates():
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for prefix in ("scipy_openblas", "openblas"):
                for suffix in ("64_", ""):
                    setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                    getter = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                    if setter is not None and getter is not None:
                        setter.argtypes, setter.restype, getter.restype = [ctypes.c_int], None, ctypes.c_int
                        self._set, self._get = setter, getter
                        return

    @staticmethod
    def _candidates():
        base = os.path.dirname(np.__file__)
        paths = (glob.glob(os.path.join(base + ".libs", "*openblas*"))
                 + glob.glob(os.path.join(base, ".dylibs", "*openblas*")))
        try:  # a NumPy linked against the system's OpenBLAS
            with open("/proc/self/maps") as maps:
                mapped = {line.split()[-1] for line in maps if "openblas" in line.lower()}
            paths += sorted(p for p in mapped if ".so" in os.path.basename(p))
        except OSError:
            pass
        return paths

    @property
    def available(self) -> bool:
        return self._set is not None

    @contextlib.contextmanager
    def single(self):
        with self._lock:
            if self._depth == 0:
                self._saved = self._get()
                if self._saved != 1:
                    self._set(1)
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0 and self._saved not in (None, 1):
                    self._set(self._saved)


blas_threads = _BlasThreads()


def _worker_count() -> int:
    wanted = os.environ.get("XPNET_NUM_THREADS", "").strip()
    if wanted.isdigit() and int(wanted) > 0:
        return int(wanted)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


NUM_WORKERS = _worker_count()
_pool = None
_pool_lock = threading.Lock()


def _executor():
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(max_workers=max(1, NUM_WORKERS - 1), thread_name_prefix="xpnet-kernel")
    return _pool


def _after_fork_in_child():
    # a forked child (a multiprocessing data worker) inherits the pool object but not its threads,
    # and possibly a lock held by another parent thread: start afresh
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()
    blas_threads._lock, blas_threads._depth = threading.Lock(), 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# a part smaller than this many array elements is not worth a thread hand-off: handing work to a
# pool thread and collecting it costs about 100 us on a 2-core VM (measured: a no-op parallel),
# so jobs under ~2 Mi elements run on the calling thread (LeNet-5 step 20 -> 16 ms, VGG unchanged)
PARALLEL_MIN_ELEMENTS = 1 << 20


def parallel(fn, n: int, blas: bool = False, elements: int | None = None):
    """[fn(start, stop) for contiguous parts of range(n)], the parts run on NUM_WORKERS threads (the
    caller runs the first). NumPy releases the GIL in copies, ufuncs and GEMMs, so the parts truly
    overlap. ``blas``: fn calls GEMMs, which then run single-threaded; without a way to pin the BLAS
    to one thread such work runs serially instead. ``elements``: the size of the whole job, which
    caps the number of parts so that small jobs stay on the calling thread."""
    parts = min(NUM_WORKERS, n)
    if elements is not None:
        parts = min(parts, max(1, elements // PARALLEL_MIN_ELEMENTS))
    if parts <= 1 or getattr(_local, "in_worker", False) or (blas and not blas_threads.available):
        return [fn(0, n)]
    bounds = [(n * i // parts, n * (i + 1) // parts) for i in range(parts)]

    def run(a, b):
        _local.in_worker = True
        try:
            return fn(a, b)
        finally:
            _local.in_worker = False

    with (blas_threads.single() if blas else contextlib.nullcontext()):
        futures = [_executor().submit(run, a, b) for a, b in bounds[1:]]
        try:
            first = run(*bounds[0])
        finally:
            results = [f.result() for f in futures] if futures else []
    return [first] + results


_stores: list = []  # every thread's workspace dict, for release_workspaces
_stores_lock = threading.Lock()


def workspace(name: str, shape, dtype):
    """A scratch array of ``shape`` reused across calls (one per thread and name); never returned
    to a caller, only filled and consumed inside one kernel call."""
    store = getattr(_local, "buffers", None)
    if store is None:
        store = _local.buffers = {}
        with _stores_lock:
            _stores.append(store)
    dtype = np.dtype(dtype)
    size = 1
    for s in shape:
        size *= int(s)
    key = (name, dtype)
    buf = store.get(key)
    if buf is None or buf.size < size:
        buf = np.empty(max(size, 1), dtype=dtype)
        store[key] = buf
    return buf[:size].reshape(shape)


def release_workspaces() -> None:
    """Drop the scratch buffers of every thread (they are rebuilt, at the sizes needed, on the next call)."""
    with _stores_lock:
        for store in _stores:
            store.clear()
