"""Where the NumPy kernels run: the worker threads, the BLAS thread pinning, per-thread workspaces.

* Batch-parallel: each kernel splits the batch (or the rows) over ``NUM_WORKERS`` threads (the CPUs
  this process may use, or ``XPNET_NUM_THREADS``) through ``parallel``; NumPy releases the GIL in
  copies, ufuncs and GEMMs. While they run, OpenBLAS is pinned to one thread per call
  (``blas_threads``), so every core runs its own im2col + GEMM pipeline instead of waiting on the
  BLAS's spinning threads.
* Only where it pays: a job goes to the pool only when each part holds at least its family's
  threshold of work (``PARALLEL_MIN_ELEMENTS``, ``GEMM_PARALLEL_MIN_MACS``,
  ``ELEMENTWISE_PARALLEL_MIN``, measured below); a smaller one runs on the calling thread, and the
  kernels ask ``split_count`` first so that it costs no closures and no pointer building.
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
        self._pin = _Pinned(self)
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

    def single(self):
        """A context manager: OpenBLAS on one thread inside it (nested and from several threads: the
        count is restored when the last one leaves). One reusable object, not a generator per call:
        the small products enter it tens of thousands of times per training run."""
        return self._pin

    def _enter(self):
        with self._lock:
            if self._depth == 0:
                self._saved = self._get()
                if self._saved != 1:
                    self._set(1)
            self._depth += 1

    def _exit(self):
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._saved not in (None, 1):
                self._set(self._saved)


class _Pinned:
    __slots__ = ("_owner",)

    def __init__(self, owner):
        self._owner = owner

    def __enter__(self):
        self._owner._enter()
        return self

    def __exit__(self, *exc):
        self._owner._exit()
        return False


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


# -- when a hand-off pays -------------------------------------------------------------------------
# Each threshold is the least work of ONE part (in the family's unit) for which handing it to a pool
# thread pays: a job is split into at most work // threshold parts, so on 2 workers it stays on the
# calling thread below twice the threshold. A hand-off (submit, wake a worker, collect) costs 16-20 us
# on an idle 2-core VM and 90-100 us when the other core is busy (a no-op ``parallel`` measured).
# Measured by timing each size on the calling thread against a two-part ``parallel`` run (float32, min
# of 7, three sweeps) on a shared 2-core KVM guest of an Intel Xeon (Sapphire Rapids: AVX-512, OpenBLAS
# 0.3.31); the 2-core AMD EPYC (AVX2) VM of earlier comments was not measured. Timings moved up to 2x
# between sweeps (other work on the machine), hence the powers of two with a margin.
#
# default (stencils: pooling; batch and local-response norm; the im2col/planar/Winograd convolutions,
# whose callers pass their element counts): unchanged, 1 Mi elements per part (LeNet-5 step 20 ->
# 16 ms, VGG unchanged when it was introduced)
PARALLEL_MIN_ELEMENTS = 1 << 20
# matrix products (linalg.matmul), in multiply-adds. Two-part / one-thread time: 13-86x up to 1e5
# MACs, 8.5x at 1e6 (100^3), 1.35-2.7x at 64x128x128, 2.5x at 3e6, 1.6x at 4.2e6 (256x128x128),
# 1.23-1.63x at 8.4e6 (512x128x128), 0.61-4.2x at 1.7e7 (256^3, 1024x128x128: noise either way);
# from 3.4e7 tall products (>= 512 rows per part) 0.47-1.5x, short-wide ones (128-256 x 1024 x 1024)
# 1.04-2.3x. So no product below 2^24 MACs goes to the pool (linalg.MATMUL_WORKERS_MAX is 2^24)
GEMM_PARALLEL_MIN_MACS = 1 << 23
# compiled elementwise passes (ReLU forward/backward, the SGD update), in elements: bound by memory, a
# second thread adds little bandwidth. Two-part / one-thread time, ReLU: 16x at 1e4, 3.1x at 1e5,
# 1.4x at 3e5, 1.3-1.8x at 1e6, 1.06-1.7x at 3e6, 1.03-1.34x at 1e7, 0.99-1.0x at 3e7 and 1e8;
# SGD with momentum (3 arrays): 8.7x at 1e4, 2.7x at 1e5, 1.2x at 3e5-1e6, 1.03-1.5x at 3e6,
# 0.72-1.04x at 1e7, 0.68-1.0x at 3e7, 1.02x at 1e8. Those sweeps ran with the other core busy; in a
# training step the other core is idle while ReLU runs, and VGG's ReLUs (4 Mi elements each, batch 64)
# took 0.233 s on one thread against 0.102 s in two parts (6 steps of VGG-11-BN, cProfile), so the
# split starts at 4 Mi elements as it did before the sweeps: 2 Mi per part
ELEMENTWISE_PARALLEL_MIN = 1 << 21


# the compiled kernels' own threads (csrc/parallel.c: NUM_WORKERS in all, the caller's included) hand a
# part over in well under a microsecond while a worker spins on its mailbox, against 20-150 us through
# the ThreadPoolExecutor above; an idle worker spins this long after its last part, then sleeps. A
# training step's convolutions are a few hundred microseconds apart, and waking a sleeping worker
# costs about what the split saves: LeNet-5 at batch 16 (us/step, min / median of 9 rounds) ran
# 2612 / 2793 with no split, 2678 / 3025 with the split and no spin, 2266 / 2765 spinning 100 us,
# 2094 / 2397 spinning 1000 us, 2105 / 2418 spinning 5000 us (PyTorch 2078 / 2546 alongside)
NATIVE_SPIN_US = 1000
# the few-channel convolutions (planar.py's compiled path), in multiply-adds per part: forward and
# backward alone, one part / two parts (us): 231 / 152 at 1.9M MACs (LeNet-5's first layer, batch 16),
# 638 / 385 at 3.8M, 1076 / 721 at 7.1M; 2^17 per part measured the same as 2^19
CONV_PARALLEL_MIN_MACS = 1 << 19


def split_count(work: int, min_part: int | None = None) -> int:
    """How many parts ``parallel`` makes of a job of ``work`` units whose parts must each be at least
    ``min_part`` (the family's threshold above; None: PARALLEL_MIN_ELEMENTS). 1: the calling thread,
    no pool; callers test it first to skip building closures and pointers for a small job."""
    if min_part is None:
        min_part = PARALLEL_MIN_ELEMENTS
    min_part = max(1, min_part)
    if work < 2 * min_part or NUM_WORKERS < 2 or getattr(_local, "in_worker", False):
        return 1
    return min(NUM_WORKERS, work // min_part)


def parallel(fn, n: int, blas: bool = False, elements: int | None = None, min_elements: int | None = None):
    """[fn(start, stop) for contiguous parts of range(n)], the parts run on NUM_WORKERS threads (the
    caller runs the first). NumPy releases the GIL in copies, ufuncs and GEMMs, so the parts truly
    overlap. ``blas``: fn calls GEMMs, which then run single-threaded; without a way to pin the BLAS
    to one thread such work runs serially instead. ``elements``: the size of the whole job, in the
    unit of ``min_elements``, the least work per part that pays for a hand-off (the family's
    threshold above; PARALLEL_MIN_ELEMENTS when None): below twice that the job runs on the calling
    thread. Without ``elements`` every one of the n items is worth a part."""
    if elements is None:
        parts = min(NUM_WORKERS, n)
        if getattr(_local, "in_worker", False):
            parts = 1
    else:
        parts = min(n, split_count(elements, min_elements))
    if parts <= 1 or (blas and not blas_threads.available):
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
