"""Host buffers for MPI: what a collective sends, and how its result goes back into the tensor.

Host-side module: it imports NumPy, because MPI reads and writes contiguous host memory (or CUDA
memory when the MPI is CUDA-aware). A collective is given an xpnet Tensor or a raw array
(NumPy, CuPy, array_api_strict, ...). ``Target`` names the array and the Tensor holding it:

- a writable, C-contiguous NumPy array of a type MPI reduces natively (float32/64, integers,
  bool) is itself the buffer, so the collective works in place with no copy;
- a CuPy array is the buffer itself on a CUDA-aware MPI (``cuda_aware()``), else a host copy;
- anything else is copied to a contiguous host array; float16 and bfloat16 are copied as float32
  and reduced in float32. When the collective is done, ``write_back`` puts the result into the
  same array (``np.copyto`` for NumPy, ``array[...] = ...`` for the others). An array that cannot
  be written (a read-only NumPy array) is replaced: the Tensor's ``.data`` is rebound to a new
  array with the result; a raw read-only array is refused up front.
"""

from __future__ import annotations

import numpy as np

from ..autodiff.tensor import Tensor
from ..backends import backend_of, to_numpy

# NumPy type characters that MPI reduces directly (mpi4py maps them to MPI datatypes)
_NATIVE = set("?bBhHiIlLqQfdFD")


class Target:
    """The array a collective reads and writes, and the Tensor it came from (or None)."""

    __slots__ = ("tensor", "array", "name")

    def __init__(self, value, name, what="tensor"):
        if isinstance(value, Tensor):
            self.tensor, self.array = value, value.data
        elif hasattr(value, "shape") and hasattr(value, "dtype"):
            self.tensor, self.array = None, value
        else:
            raise TypeError(f"xpnet.distributed.{name}: {what} must be an xpnet Tensor or an array, "
                            f"got {type(value).__name__}")
        self.name = name
        if self.tensor is None and isinstance(self.array, np.ndarray) and not self.array.flags.writeable:
            raise ValueError(f"xpnet.distributed.{name}: {what} is a read-only NumPy array; the "
                             f"collective writes its result in place (pass a writable array or a Tensor)")

    @property
    def dtype(self):
        return self.array.dtype

    @property
    def shape(self):
        return tuple(self.array.shape)

    def is_numpy(self):
        return isinstance(self.array, np.ndarray)

    def is_cupy(self):
        return type(self.array).__module__.startswith("cupy")


def reduce_dtype(dtype) -> np.dtype:
    """The NumPy dtype a host buffer of ``dtype`` is reduced in: itself, or float32 for the
    16-bit floats (float16, bfloat16) that MPI has no reduction for."""
    name = str(dtype).rsplit(".", 1)[-1]
    if name in ("float16", "bfloat16"):
        return np.dtype(np.float32)
    host = np.dtype(name) if name != "bool" else np.dtype(bool)
    if host.char not in _NATIVE:
        raise TypeError(f"xpnet.distributed: no MPI datatype for dtype {dtype}")
    return host


def is_floating(dtype) -> bool:
    return reduce_dtype(dtype).kind in "fc"


def direct_buffer(target, device_ok=False):
    """The array itself when MPI can use its memory as is (NumPy, or CuPy on a CUDA-aware MPI), else None."""
    array = target.array
    if target.is_numpy():
        ok = array.flags.c_contiguous and array.flags.writeable and array.dtype.char in _NATIVE
        return array if ok and array.dtype.isnative else None
    if device_ok and target.is_cupy() and array.flags.c_contiguous and np.dtype(array.dtype).char in _NATIVE:
        import cupy

        cupy.cuda.get_current_stream().synchronize()  # MPI reads the memory now, outside any stream
        return array
    return None


def host_copy(target) -> np.ndarray:
    """A fresh C-contiguous host copy of the target's array, in its reduction dtype."""
    host = to_numpy(target.array)
    return np.array(host, dtype=reduce_dtype(target.dtype), order="C", copy=True)


def write_back(target, host) -> None:
    """Put ``host`` (a NumPy array of the target's shape) into the target's array, in its dtype."""
    array = target.array
    if host is array:
        return
    if target.is_numpy():
        if array.flags.writeable:
            np.copyto(array, host.reshape(array.shape), casting="unsafe")
            return
        target.tensor.data = host.astype(array.dtype).reshape(array.shape)  # read-only: rebind (see module doc)
        return
    backend = backend_of(array)
    value = backend.xp.astype(backend.from_host(np.ascontiguousarray(host).reshape(array.shape)), array.dtype)
    try:
        array[...] = value
    except (TypeError, ValueError):
        if target.tensor is None:
            raise
        target.tensor.data = value
