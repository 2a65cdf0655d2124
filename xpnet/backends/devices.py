"""Devices as PyTorch spells them: ``xpnet.device("cpu" | "cuda" | "cuda:1")``.

A device names *where* arrays live; the backend that puts them there follows from it:

``"cpu"``      the current backend's host device where it has one (NumPy: cpu, array_api_strict:
               CPU_DEVICE, torch: cpu), else NumPy (the current backend is CuPy).
``"cuda[:i]"`` GPU ``i`` (the current CUDA device when ``i`` is left out, see ``xpnet.cuda``) on
               the CuPy backend, or on torch's when torch is the current backend. Where no CUDA
               backend is usable this raises ``BackendUnavailableError`` with the reason.

``Tensor.device`` answers with a device that remembers which backend its tensor is on, so that
``x.to(other.device)`` lands next to ``other`` whatever the current backend is (the remembered
backend takes no part in equality, hashing or printing). For array_api_strict's fake devices it
answers with a ``StrictDevice``: array_api_strict's own ``Device`` (usable in that namespace,
equal to and hashing like ``array_api_strict.Device``) that also compares equal to its name
(``"CPU_DEVICE"``, ``"device1"``) and, for CPU_DEVICE, to ``"cpu"`` / ``xpnet.device("cpu")``.

This module also reads the arguments of ``Tensor.to`` / ``Module.to`` (``parse_to_args``) and
translates a device or backend given in any accepted form into the (backend name, device) pair
that the backend modules understand (``resolve_target``).
"""

from __future__ import annotations

import os
import re
import sys
from typing import NamedTuple

# imported by the package's __init__ once everything below is defined there
from . import BACKEND_NAMES, _ALIASES, backend_name_of, backend_of, canonical_name, unavailable_reason, unwrap
from . import transfer as _transfer
from .base import Backend
from .dtypes import dtype_name
from .errors import BackendUnavailableError

_DEVICE_RE = re.compile(r"(cpu|cuda)(?::(0|[1-9][0-9]*))?\Z")
_ACCEPTED = "'cpu', 'cuda', 'cuda:N' or 'cpu:N' (N = 0, 1, ...)"
_HOST_BACKENDS = ("numpy", "array_api_strict", "torch")  # backends with a host (CPU) device

_cuda_index = 0  # the current CUDA device: what "cuda" without an index means (xpnet.cuda.set_device)


class device:  # noqa: N801 -- torch.device's name: isinstance(d, xpnet.device) ports unchanged
    """An immutable device: ``.type`` ('cpu' or 'cuda') and ``.index`` (None or an int).

    ``device("cuda:1")``, ``device("cuda", 1)``, ``device(other_device)``; ``str()`` gives
    ``'cuda:1'``, ``repr()`` gives ``device(type='cuda', index=1)``, as torch prints them. A device
    equals another device of the same type and index, and its own string (``device("cpu") ==
    "cpu"``); it hashes like that string.
    """

    __slots__ = ("_type", "_index", "_backend")

    def __new__(cls, type, index=None):  # noqa: A002 -- torch's parameter name
        if isinstance(type, device):
            if index is not None:
                raise ValueError(f"device({type!r}, {index!r}): a device object already has its index")
            return type
        if isinstance(type, int) and not isinstance(type, bool) and index is None:
            type, index = "cuda", type  # torch.device(1) is the accelerator's device 1
        if not isinstance(type, str):
            raise TypeError(f"device(): expected a string like 'cuda:1' or a device, got {type.__class__.__name__}")
        match = _DEVICE_RE.match(type)
        if match is None:
            raise ValueError(f"invalid device string {type!r}: expected {_ACCEPTED}")
        kind, text = match.groups()
        if text is not None:
            if index is not None:
                raise ValueError(f"device({type!r}, {index!r}): the string already has an index; pass it once")
            index = int(text)
        elif index is not None:
            if isinstance(index, bool) or not isinstance(index, int):
                raise TypeError(f"device index must be an int, got {index.__class__.__name__}")
            if index < 0:
                raise ValueError(f"device index must not be negative, got {index}")
        return _make(cls, kind, None if index is None else int(index), None)

    @property
    def type(self) -> str:
        return self._type

    @property
    def index(self):
        return self._index

    def __setattr__(self, name, value):
        raise AttributeError(f"xpnet.device is immutable (cannot set {name!r})")

    def __delattr__(self, name):
        raise AttributeError(f"xpnet.device is immutable (cannot delete {name!r})")

    def __str__(self):
        return self._type if self._index is None else f"{self._type}:{self._index}"

    def __repr__(self):
        if self._index is None:
            return f"device(type={self._type!r})"
        return f"device(type={self._type!r}, index={self._index})"

    def __eq__(self, other):
        if isinstance(other, device):
            return self._type == other._type and self._index == other._index
        if isinstance(other, str):
            return str(self) == other
        return NotImplemented

    def __ne__(self, other):
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __hash__(self):
        return hash(str(self))

    def __reduce__(self):
        return (device, (self._type, self._index))


def _make(cls, kind, index, backend):
    obj = object.__new__(cls)
    object.__setattr__(obj, "_type", kind)
    object.__setattr__(obj, "_index", index)
    object.__setattr__(obj, "_backend", backend)  # the backend a Tensor.device came from, or None
    return obj


_PARSED: dict = {}  # string -> its device or None: device strings are few, and parsed on every .to


def _parse(text: str):
    """The device a torch-style string names, or None when it is not one ('numpy', 'device1')."""
    try:
        return _PARSED[text]
    except KeyError:
        pass
    match = _DEVICE_RE.match(text)
    found = None
    if match is not None:
        kind, index = match.groups()
        found = _make(device, kind, None if index is None else int(index), None)
    if len(_PARSED) < 1024:
        _PARSED[text] = found
    return found


# -- the device of an array --------------------------------------------------------------------------

_NUMPY_CPU = _make(device, "cpu", None, "numpy")
_strict_class = None


def backend_device(backend):
    """``Backend.xpnet_device``: an ``xpnet.device`` for NumPy (cpu), CuPy (cuda:i) and torch (its
    own type and index), remembering the backend; a ``StrictDevice`` for array_api_strict."""
    name, native = backend.name, backend.device
    if name == "numpy":
        return _NUMPY_CPU
    if name == "cupy":
        return _make(device, "cuda", native.id, "cupy")
    if name == "torch":
        return _make(device, native.type, native.index, "torch")
    return strict_device(native)


def array_device(array):
    """What ``Tensor.device`` returns for a raw array (see ``backend_device``)."""
    return backend_of(array).xpnet_device


def strict_device(native):
    """array_api_strict's device ``native`` as a ``StrictDevice`` (see the module docstring)."""
    global _strict_class
    if _strict_class is None:
        _strict_class = _make_strict_class()
    from .strict_backend import _label

    return _strict_class(_label(native))


def _make_strict_class():
    import array_api_strict as strict

    class StrictDevice(strict.Device):
        """array_api_strict's Device that also equals its own name (and CPU_DEVICE equals 'cpu').

        Hashes as array_api_strict's Device does, so it is the same dict key as the plain Device;
        equality with strings is a convenience for tests like ``t.device == "device1"``."""

        __slots__ = ()

        @property
        def type(self) -> str:
            return "cpu" if self._device == "CPU_DEVICE" else self._device

        @property
        def index(self):
            return None

        def __str__(self):
            return self._device

        def __eq__(self, other):
            if isinstance(other, str):
                return other == self._device or (other == "cpu" and self._device == "CPU_DEVICE")
            if isinstance(other, device):
                return self._device == "CPU_DEVICE" and other == "cpu"
            return strict.Device.__eq__(self, other)

        def __ne__(self, other):
            return not self.__eq__(other)

        __hash__ = strict.Device.__hash__

        def __reduce__(self):
            return (strict.Device, (self._device,))

    StrictDevice.__module__ = __name__
    return StrictDevice


# -- from a device (any form) to a backend ------------------------------------------------------------

def _current_name() -> str:
    """The current backend's name, without resolving XPNET_BACKEND (which may itself name a device)."""
    package = sys.modules[__package__]
    current = package._context.get() or package._global
    if current is not None:
        return current.name
    try:
        name = canonical_name(os.environ.get("XPNET_BACKEND", "").strip() or "numpy")
    except ValueError:
        return "numpy"
    return "numpy" if name == "auto" else name


def current_cuda_index() -> int:
    return _cuda_index


def set_current_cuda_index(index: int) -> None:
    global _cuda_index
    _cuda_index = int(index)


def _check_cuda(dev, name) -> None:
    if name == "torch":
        import torch

        if not torch.cuda.is_available():
            raise BackendUnavailableError(f"device {str(dev)!r} is unavailable: torch sees no CUDA device")
        return
    reason = unavailable_reason("cupy")
    if reason is not None:
        raise BackendUnavailableError(f"device {str(dev)!r} needs backend 'cupy', which is unavailable: {reason}")


def _from_torch_style(dev):
    """(backend name, that backend's device) for an ``xpnet.device``."""
    name = dev._backend
    if name is None:
        current = _current_name()
        if dev._type == "cpu":
            name = current if current in _HOST_BACKENDS else "numpy"
        else:
            name = "torch" if current == "torch" else "cupy"
    if dev._type == "cuda":
        _check_cuda(dev, name)
    return name, _native(name, dev)


def _native(name, dev):
    """``dev`` (an xpnet.device) in the terms ``name``'s backend module parses."""
    if dev._type == "cpu":
        return "cpu"  # one host device per backend: torch's "cpu:0" is the same device as "cpu"
    if dev._type != "cuda":
        return str(dev)  # another torch device type (a Tensor.device of the torch backend)
    index = _cuda_index if dev._index is None else dev._index
    return index if name == "cupy" else f"cuda:{index}"


def as_device(value):
    """``value`` as an ``xpnet.device`` when it is one, a torch-style string or an int; else None."""
    if isinstance(value, device):
        return value
    if isinstance(value, str):
        return _parse(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return device(value)
    return None


def cuda_device(value=None):
    """The device ``Tensor.cuda(value)`` / ``Module.cuda(value)`` go to: ``"cuda"`` (the current
    CUDA device) for None, ``cuda:i`` for an int; a device or string must name a CUDA device."""
    if value is None:
        return _make(device, "cuda", None, None)
    dev = as_device(value)
    if dev is None or dev._type != "cuda":
        raise ValueError(f"cuda(): expected a CUDA device (an int, 'cuda' or 'cuda:N'), got {value!r}")
    return dev


def resolve_target(backend=None, device=None):
    """``(backend name or None, device or None)`` for a target given in any accepted form.

    ``backend``: None, a Backend, a backend name (``"cupy"``), ``"name:device"``
    (``"array_api_strict:device1"``) or a device (``"cuda:1"``, ``xpnet.device("cpu")``).
    ``device``: None, an ``xpnet.device``, a torch-style string or int (these choose the backend
    when ``backend`` is None), a namespace's device object (array_api_strict's, CuPy's, torch's:
    its namespace), a backend name or ``"name:device"`` when ``backend`` is None, or a string like
    ``"device1"``, which keeps an array in its own namespace. The device comes back in the terms
    of the backend module.
    """
    if backend is None:
        if device is None:
            return None, None
        dev = as_device(device)
        if dev is not None:
            return _from_torch_style(dev)
        if _names_backend(device):  # device="array_api_strict:device1", as layers' device= reads it
            return resolve_target(device, None)
        return _owner_of_device(device), device
    if isinstance(backend, Backend):
        return backend.name, (backend.device if device is None else _native_for(backend.name, device))
    if isinstance(backend, str):
        if backend in BACKEND_NAMES:  # the common case first
            return backend, _native_for(backend, device)
        dev = _parse(backend)
        if dev is None:
            head, sep, tail = backend.partition(":")
            name = canonical_name(head)
            if sep:
                _once(backend, device)
                device = tail
            return name, _native_for(name, device)
    else:
        dev = as_device(backend)
        if dev is None:
            raise TypeError(f"expected a backend name, a Backend or a device, got {type(backend).__name__}")
    _once(backend, device)
    return _from_torch_style(dev)


def _owner_of_device(native):
    """The backend whose device object ``native`` is (array_api_strict's Device, CuPy's Device,
    torch.device), or None for a string like "device1": an array then stays in its namespace."""
    module = type(native).__module__ or ""
    for prefix, name in (("array_api_strict", "array_api_strict"), ("cupy", "cupy"), ("torch", "torch")):
        if module.startswith(prefix):
            return name
    if isinstance(native, _strict_class or ()):
        return "array_api_strict"
    return None


def _once(backend, device) -> None:
    if device is not None:
        raise ValueError(f"{backend!r} already names the device; got device={device!r} as well")


def _native_for(name, value):
    """A device for backend ``name``: an xpnet.device or torch-style string translated; ints and
    a namespace's own devices as they are (the backend module parses them and names any error)."""
    dev = as_device(value) if isinstance(value, (str, device)) else None
    if dev is None:
        return value
    if dev._type == "cuda" and name in ("cupy", "torch"):
        _check_cuda(dev, name)
        return _native(name, dev)
    if dev._type == "cpu" and name in _HOST_BACKENDS:
        return _native(name, dev)
    return str(dev)


def to_device(obj, backend=None, device=None):
    """Move ``obj`` to ``backend`` (a name or Backend) on ``device``; a device may also be given as
    PyTorch spells it (``"cpu"``, ``"cuda:1"``, ``xpnet.device(...)``), which picks the backend.

    With neither given, the current backend is the target. With only a namespace's own device
    (``"device1"``), an array stays in its namespace and changes device. Lists, tuples and dicts
    are walked; registered types (Tensor, Module, Optimizer) move themselves.
    """
    if backend is None and device is None:
        return _transfer.to_device(obj)
    backend, device = resolve_target(backend, device)
    return _transfer.to_device(obj, backend=backend, device=device)


# -- the arguments of Tensor.to / Module.to ---------------------------------------------------------

class ToArgs(NamedTuple):
    backend: object  # a backend name or None (keep each array's own namespace)
    device: object  # a device for that backend, or None
    dtype: object  # an xpnet dtype name, a native dtype, or None
    non_blocking: bool
    copy: bool


def _is_array_like(value) -> bool:
    return backend_name_of(unwrap(value)) is not None


def _names_backend(value) -> bool:
    """Whether ``value`` is a Backend, a backend name or ``"name:device"`` (not a device)."""
    if isinstance(value, Backend):
        return True
    if not isinstance(value, str) or _parse(value) is not None:
        return False
    head = value.partition(":")[0].strip().lower()
    return head in BACKEND_NAMES or head in _ALIASES or head == "auto"


def _classify(value):
    """'like' (a Tensor or array), 'dtype', 'target' (a device or backend) for one argument."""
    if value is None or isinstance(value, (device, Backend)):
        return "target"
    if isinstance(value, bool):
        raise TypeError("to(): non_blocking and copy come after a device, a dtype or a tensor")
    if isinstance(value, int):
        return "target"
    if isinstance(value, str):
        if _parse(value) is not None or _names_backend(value):
            return "target"
    elif _is_array_like(value):
        return "like"
    try:
        dtype_name(value)
    except TypeError:
        return "target"  # a namespace's own device: "device1", a CuPy Device, torch.device
    return "dtype"


def parse_to_args(args, kwargs, where: str = "to") -> ToArgs:
    """Read ``to``'s arguments as torch does: ``to(device=None, dtype=None, non_blocking=False,
    copy=False)``, ``to(dtype, non_blocking=False, copy=False)``, ``to(tensor, non_blocking=False,
    copy=False)``; plus xpnet's ``backend=`` keyword and backend names (``"cupy"``,
    ``"array_api_strict:device1"``) wherever a device goes."""
    kwargs = dict(kwargs)
    target = kwargs.pop("device", None)
    dtype = kwargs.pop("dtype", None)
    backend = kwargs.pop("backend", None)
    flags = {"non_blocking": kwargs.pop("non_blocking", None), "copy": kwargs.pop("copy", None)}
    if kwargs:
        raise TypeError(f"{where}() got an unexpected keyword argument {next(iter(kwargs))!r}")
    rest = list(args)
    like = None
    if rest:
        first = rest.pop(0)
        kind = _classify(first)
        if kind == "like":
            like = first
        elif kind == "dtype":
            dtype = _set_once(where, "dtype", dtype, first)
        else:
            target = _set_once(where, "device", target, first)
            if rest and not isinstance(rest[0], bool):
                dtype = _set_once(where, "dtype", dtype, rest.pop(0))
    for name in ("non_blocking", "copy"):
        if rest:
            value = rest.pop(0)
            if not isinstance(value, bool):
                raise TypeError(f"{where}(): {name} must be a bool, got {value!r}")
            flags[name] = _set_once(where, name, flags[name], value)
    if rest:
        raise TypeError(f"{where}() takes at most a device, a dtype, non_blocking and copy; got {len(args)} "
                        "positional arguments")
    if like is not None:
        if target is not None or backend is not None or dtype is not None:
            raise TypeError(f"{where}(tensor): the tensor gives both the device and the dtype")
        array = unwrap(like)
        owner = backend_of(array)
        name, native, dtype = owner.name, owner.device, dtype_name(array.dtype)
    else:
        name, native = resolve_target(backend, target)
    return ToArgs(name, native, dtype, bool(flags["non_blocking"]), bool(flags["copy"]))


def _set_once(where, name, old, new):
    if old is not None:
        raise TypeError(f"{where}() got multiple values for argument {name!r}")
    return new


__all__ = ["device", "array_device", "backend_device", "strict_device", "cuda_device", "resolve_target",
           "to_device", "parse_to_args", "ToArgs", "current_cuda_index", "set_current_cuda_index"]
