"""Backend registry and selection.

A backend is an Array-API namespace on one device with a seeded generator and a table of optional
fast kernels. The current backend is chosen by ``XPNET_BACKEND`` / ``XPNET_DEVICE`` at import,
``set_backend`` (process-wide) or ``use_backend`` (a context, local to the thread or task).
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
import threading

import numpy as _np

from .base import Backend, HostRNG
from .kernels import KernelName, register_kernel
from .dtypes import (
    DType,
    dtype_name,
    get_default_dtype,
    is_float_dtype,
    resolve_dtype,
    set_default_dtype,
)
from .errors import BackendUnavailableError, DeviceMismatchError

BACKEND_NAMES = ("numpy", "cupy", "array_api_strict", "torch")
_MODULES = {
    "numpy": "numpy",
    "cupy": "cupy",
    "array_api_strict": "strict_backend",
    "torch": "torch_backend",
}
_ALIASES = {"np": "numpy", "strict": "array_api_strict", "array-api-strict": "array_api_strict",
            "pytorch": "torch", "cuda": "cupy"}

_lock = threading.RLock()
_instances: dict = {}
_probe_cache: dict = {}
_seed = 0
_global: Backend | None = None
_context: contextvars.ContextVar = contextvars.ContextVar("xpnet_backend", default=None)


_loaded: dict = {}  # canonical name -> its backend module, imported once


def _module(name):
    module = _loaded.get(name)
    if module is None:
        module = _loaded[name] = importlib.import_module(f"{__name__}.{_MODULES[name]}")
    return module


def canonical_name(name: str) -> str:
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in BACKEND_NAMES and key != "auto":
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKEND_NAMES)} or auto")
    return key


def unavailable_reason(name: str) -> str | None:
    """None when the backend can be used here, else a one-line reason."""
    name = canonical_name(name)
    if name not in _probe_cache:
        _probe_cache[name] = _module(name).probe()
    return _probe_cache[name]


def available_backends() -> dict:
    """Every backend with ``None`` when usable or the reason it is not, e.g.
    ``{'numpy': None, 'cupy': "not installed (pip install 'xpnet[cuda12]' ...)", ...}``."""
    return {name: unavailable_reason(name) for name in BACKEND_NAMES}


def _resolve(name, device) -> Backend:
    if device is not None or name not in BACKEND_NAMES:  # a device as PyTorch spells it, an alias
        name, device = _device.resolve_target(name, device)
        if name is None:  # only a namespace's own device ("device1"): the current backend's namespace
            name = get_backend().name
    name = canonical_name(name)
    if name == "auto":
        name = "cupy" if unavailable_reason("cupy") is None else "numpy"
    reason = unavailable_reason(name)
    if reason is not None:
        raise BackendUnavailableError(f"backend {name!r} is unavailable: {reason}")
    module = _module(name)
    _, label = module.parse_device(device)
    key = (name, label)
    with _lock:
        backend = _instances.get(key)
        if backend is None:
            backend = module.make(device)
            backend.rng.seed(_derived_seed(key))
            _instances[key] = backend
    return backend


def _derived_seed(key) -> int:
    # one seed for the process; every backend instance draws the same stream from it
    return _seed


def get_backend(name=None, device=None) -> Backend:
    """The current backend, or the one named (created on first use); a device alone
    (``get_backend(device="cuda:1")``) picks the backend as ``xpnet.device`` says."""
    if name is not None or device is not None:
        return _resolve(name, device)
    current = _context.get()
    if current is not None:
        return current
    global _global
    if _global is None:
        with _lock:
            if _global is None:
                _global = _from_environment()
    return _global


def set_backend(name, device=None) -> Backend:
    """Make a backend current for the whole process (threads without a ``use_backend`` see it)."""
    global _global
    backend = _resolve(name, device)
    _global = backend
    return backend


@contextlib.contextmanager
def use_backend(name, device=None):
    """``with xpnet.use_backend('array_api_strict', 'device1'):`` — current inside the block only.

    The choice lives in a context variable: other threads and asyncio tasks are unaffected, and
    nested blocks restore the outer choice on exit.
    """
    backend = name if isinstance(name, Backend) else _resolve(name, device)
    token = _context.set(backend)
    try:
        yield backend
    finally:
        _context.reset(token)


def _from_environment() -> Backend:
    name = os.environ.get("XPNET_BACKEND", "").strip() or "numpy"
    device = os.environ.get("XPNET_DEVICE", "").strip() or None
    return _resolve(name, device)


def manual_seed(seed: int) -> None:
    """Seed every backend's generator (existing and future) so runs repeat on the same backend."""
    global _seed
    _seed = int(seed)
    with _lock:
        for key, backend in _instances.items():
            backend.rng.seed(_derived_seed(key))


_ARRAY_TYPES: dict = {}  # type -> backend name or None: one module-name test per array type, ever


def _name_of_type(kind) -> str | None:
    module = kind.__module__ or ""
    for prefix, name in (("numpy", "numpy"), ("array_api_strict", "array_api_strict"), ("cupy", "cupy"),
                         ("torch", "torch")):
        if module.startswith(prefix) and hasattr(kind, "shape"):
            return name
    return None


def backend_name_of(array) -> str | None:
    """'numpy', 'cupy', 'array_api_strict' or 'torch' for a raw array; None for anything else
    (a Tensor, a CuPy ``MemoryPointer``, a Python scalar). Decided once per type, then a dict lookup."""
    kind = type(array)
    try:
        return _ARRAY_TYPES[kind]
    except KeyError:
        name = _ARRAY_TYPES[kind] = _name_of_type(kind)
        return name


def unwrap(x):
    """The raw array behind ``x``: arrays pass unchanged, an xpnet Tensor gives its ``.data``.

    (``getattr(x, "data", x)`` is wrong for a raw array: a CuPy array's ``.data`` is its memory
    pointer.) Two dict lookups by type in the common cases."""
    if backend_name_of(x) is not None:
        return x
    data = getattr(x, "data", None)
    return data if data is not None and backend_name_of(data) is not None else x


# The Backend that owns an array, memoised: type(array) -> the Backend for host types (NumPy: one
# device), type(array) -> _PerDevice for namespaces with devices. _instances never replaces an entry
# (one Backend per (name, device label) for the life of the process; manual_seed reseeds it in
# place), so a memoised answer stays the one _resolve would give.
_OWNERS: dict = {}

# Array types whose arrays all live on one device (NumPy's): two arrays of one of these types need
# no device comparison. Seeded with ndarray; other NumPy types join when backend_of first sees them.
ONE_DEVICE_TYPES: set = {_np.ndarray}
# NumPy's array type, for the hot paths above backends/ that test for it without importing NumPy
NUMPY_ARRAY = _np.ndarray


class _PerDevice:
    """The Backends of one array type with several devices, by device key."""

    __slots__ = ("key", "backends")

    def __init__(self, key):
        self.key = key  # array -> a hashable device key (the device object, or CuPy's device id)
        self.backends: dict = {}


def _device_object(array):
    return array.device


def _cupy_device_id(array):
    return array.device.id  # cupy.cuda.Device: the integer id is the cheap, surely-hashable key


def backend_of(array) -> Backend:
    """The Backend instance (namespace and device) that a raw array lives on.

    Resolved once per array type (NumPy) or per (array type, device); then one or two dict lookups."""
    owner = _OWNERS.get(type(array))
    if owner is not None:
        if type(owner) is not _PerDevice:
            return owner
        try:
            return owner.backends[owner.key(array)]
        except (KeyError, TypeError, AttributeError):
            pass
    return _first_backend_of(array)


def _first_backend_of(array) -> Backend:
    name = backend_name_of(array)
    if name is None:
        raise TypeError(f"expected an array of a supported backend, got {type(array).__name__}")
    if name == "numpy":
        backend = _resolve(name, "cpu")
        ONE_DEVICE_TYPES.add(type(array))
        _OWNERS[type(array)] = backend
        return backend
    backend = _resolve(name, array.device)
    owner = _OWNERS.get(type(array))
    if owner is None:  # setdefault: two threads seeing the type at once keep one table
        owner = _OWNERS.setdefault(type(array), _PerDevice(_cupy_device_id if name == "cupy" else _device_object))
    try:
        owner.backends[owner.key(array)] = backend
    except (TypeError, AttributeError):  # an unhashable device: resolved each time, as before
        pass
    return backend


def fresh_copy(array):
    """A new array equal to ``array`` that shares no memory with it: ``array + 0``, except for a
    NumPy ndarray of one or more dimensions, whose ``copy(order="K")`` keeps the same memory order
    and skips the ufunc's handling of the Python scalar (a fifth of the cost). (A 0-d ndarray keeps
    ``+ 0``, which returns a NumPy scalar, as before.)"""
    if type(array) is _np.ndarray and array.ndim:
        return array.copy("K")  # order K, positionally: NumPy parses it faster
    return array + 0


def describe_device(array) -> str:
    """'numpy:cpu', 'cupy:0', 'array_api_strict:device1', 'torch:cuda:0'."""
    name = backend_name_of(array)
    if name is None:
        return type(array).__name__
    if name == "numpy":
        return "numpy:cpu"
    if name == "array_api_strict":
        return f"array_api_strict:{_module(name)._label(array.device)}"
    if name == "cupy":
        return f"cupy:{array.device.id}"
    return f"torch:{array.device}"


def _device_key(array):
    name = backend_name_of(array)
    if name is None:
        return None
    return describe_device(array)


def check_same_device(*arrays, op: str = "operation") -> None:
    """Raise DeviceMismatchError, naming ``op`` and both devices, if the arrays do not all live on
    one backend and device. Python scalars and None are ignored.

    Arrays of one type (and, for namespaces with devices, one device object) pass on identity and
    type tests alone; anything else goes through the full comparison, which builds the names."""
    first_kind = first_device = None
    host = True
    for array in arrays:
        kind = type(array)
        if kind in _SCALARS or array is None:
            continue
        owner = _OWNERS.get(kind)
        if owner is None:
            if backend_name_of(array) is not None:
                break  # an array type not resolved yet
            array = getattr(array, "data", None)  # a Tensor: compare the array it wraps
            kind = type(array)
            owner = _OWNERS.get(kind)
            if owner is None:
                break
        if first_kind is None:
            first_kind = kind
            host = type(owner) is not _PerDevice
            if not host:
                first_device = array.device
        elif kind is not first_kind:
            break
        elif not host:
            device = array.device
            if device is not first_device and device != first_device:
                break
    else:
        return
    _check_same_device(arrays, op)


_SCALARS = frozenset((int, float, complex, bool))


def _check_same_device(arrays, op) -> None:
    first = None
    first_index = None
    for index, array in enumerate(arrays):
        if array is None or isinstance(array, (int, float, complex, bool)):
            continue
        if backend_name_of(array) is None and hasattr(array, "data"):
            array = array.data  # a Tensor: compare the array it wraps
        key = _device_key(array)
        if key is None:
            continue
        if first is None:
            first, first_index = key, index
        elif key != first:
            raise DeviceMismatchError(
                f"{op}: inputs are on different devices: {first} (argument {first_index}) and "
                f"{key} (argument {index}); move them to one device with xpnet.to_device(x, backend=..., device=...)"
            )


from .transfer import device_of, register_transfer, to_numpy  # noqa: E402
from . import devices as _device  # noqa: E402
from .devices import device, to_device  # noqa: E402  -- to_device also reads devices as PyTorch spells them

__all__ = [
    "NUMPY_ARRAY",
    "Backend", "HostRNG", "KernelName", "register_kernel", "DType", "dtype_name", "get_default_dtype",
    "set_default_dtype", "is_float_dtype", "resolve_dtype", "BackendUnavailableError",
    "DeviceMismatchError", "BACKEND_NAMES", "available_backends", "unavailable_reason",
    "get_backend", "set_backend", "use_backend", "manual_seed", "backend_of", "backend_name_of", "unwrap",
    "describe_device", "check_same_device", "fresh_copy", "to_device", "to_numpy", "device_of",
    "register_transfer", "device",
]

from . import cudnn, mps  # noqa: E402,F401  -- torch.backends.cudnn / .mps, for programs that ask
from . import cupy, numpy  # noqa: E402,F401  -- register fast paths (CuPy is imported only when its kernels run)
