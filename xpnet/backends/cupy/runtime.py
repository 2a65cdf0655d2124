"""Compiling this package's CUDA sources and launching their kernels (used by conv, pool and norm).

Each ``.cu`` file beside these modules holds kernels templated on the element type ``T``. It is read
at first use and compiled once per device as a ``cupy.RawModule`` with every ``__global__`` kernel
instantiated for float and double; the compiled functions are cached, so a launch costs one dict
lookup. CuPy is imported only then, so importing this package needs no CuPy.

float32 and float64 run natively; other float dtypes compute in float32 and cast back.
"""

from __future__ import annotations

import functools
import re
import threading
from importlib import resources

_TYPES = {"float32": "float", "float64": "double"}
_modules: dict = {}  # (device, file) -> RawModule
_functions: dict = {}  # (device, file, kernel name, dtype) -> compiled function
_lock = threading.Lock()

THREADS = 256
INT_MAX = (1 << 31) - 1


def load_cupy():
    import cupy

    return cupy


def on_array_device(fn):
    """Run the kernel with its first argument's GPU as the current device: allocations and launches
    then land where the data is, whichever device the caller had current."""

    @functools.wraps(fn)
    def wrapper(array, *args, **kwargs):
        with array.device:
            return fn(array, *args, **kwargs)

    return wrapper


@functools.lru_cache(maxsize=None)
def cuda_source(filename: str) -> str:
    """The text of ``filename``, a ``.cu`` file shipped beside this module."""
    return resources.files(__package__).joinpath(filename).read_text(encoding="utf-8")


def kernel_names(code: str) -> list:
    """The ``__global__`` kernels of a source, in order."""
    return re.findall(r"__global__\s+void\s+(\w+)\s*\(", code)


def compute_dtype(dtype):
    """float32/float64 natively; other floats (float16, bfloat16) computed in float32."""
    return dtype if str(dtype) in _TYPES else load_cupy().dtype("float32")


def _c_args(args):
    import numpy as np

    return tuple(np.int32(a) if isinstance(a, (bool, int)) else a for a in args)


def batch_slices(n, per_image):
    """[(i0, i1)] covering range(n) with at most 2^31 - 1 elements (``per_image`` each) per slice."""
    step = max(1, INT_MAX // max(1, int(per_image)))
    return [(i0, min(n, i0 + step)) for i0 in range(0, n, step)]


class CudaSource:
    """The kernels of one ``.cu`` file of this package."""

    def __init__(self, filename: str):
        self.filename = filename

    def function(self, name: str, dtype):
        """The compiled kernel ``name<T>`` for ``dtype`` on the current device (the file is compiled
        once per device)."""
        cupy = load_cupy()
        device = cupy.cuda.Device().id
        key = (device, self.filename, name, str(dtype))
        fn = _functions.get(key)
        if fn is not None:
            return fn
        with _lock:
            module = _modules.get((device, self.filename))
            if module is None:
                code = cuda_source(self.filename)
                expressions = [f"{k}<{t}>" for k in kernel_names(code) for t in _TYPES.values()]
                module = cupy.RawModule(code=code, options=("--std=c++14",), name_expressions=expressions)
                _modules[(device, self.filename)] = module
            fn = _functions[key] = module.get_function(f"{name}<{_TYPES[str(dtype)]}>")
        return fn

    def launch(self, name, dtype, total, *args):
        """Run kernel ``name<T>(total, *args)`` over ``total`` elements (grid-stride loop). Python ints
        go as C ints; ``total`` (every such kernel's first parameter) must stay under 2^31, which the
        callers keep by splitting the batch (``batch_slices``)."""
        total = int(total)
        if total <= 0:
            return
        if total > INT_MAX:
            raise ValueError(f"cupy kernel {name}: {total} elements in one launch, more than 2^31 - 1")
        blocks = int(min((total + THREADS - 1) // THREADS, 1 << 20))
        self.function(name, dtype)((blocks,), (THREADS,), _c_args((total,) + args))

    def launch_tiles(self, name, dtype, rows, row_length, rows_per_thread, *args):
        """Run kernel ``name<T>(*args, rows_per_thread)`` on a 2-D grid: x threads walk the
        ``row_length`` columns, blockIdx.y blocks of ``rows_per_thread`` rows (both grid-stride)."""
        if rows <= 0 or row_length <= 0:
            return
        if row_length > INT_MAX:
            raise ValueError(f"cupy kernel {name}: rows of {row_length} elements, more than 2^31 - 1")
        bx = int(min((row_length + THREADS - 1) // THREADS, INT_MAX))
        by = int(min(-(-rows // rows_per_thread), 65535))
        self.function(name, dtype)((bx, by), (THREADS,), _c_args(args + (rows_per_thread,)))
