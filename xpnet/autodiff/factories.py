"""Tensor factories on the current backend or the one ``device=`` names (``"cpu"``, ``"cuda:1"``,
an ``xpnet.device``), with PyTorch's names; and ``Tensor.to``'s differentiable move and cast."""

from __future__ import annotations

from ..backends import (backend_name_of, backend_of, fresh_copy, get_backend, get_default_dtype,
                        resolve_dtype, unwrap)
from ..backends import transfer as _transfer
from ..backends.devices import parse_to_args, resolve_target
from . import ops as _ops
from .function import Function
from .tensor import Tensor


def _shape(size):
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        return tuple(size[0])
    return tuple(int(s) for s in size)


def _target(device=None, backend=None):
    """The Backend that ``device=`` / ``backend=`` name: ``"cpu"``, ``"cuda:1"``, an
    ``xpnet.device``, a backend name, or a device of the current namespace (``"device1"``)."""
    if backend is None and device is None:
        return get_backend()
    name, native = resolve_target(backend, device)
    return get_backend(get_backend().name if name is None else name, native)


def tensor(data, requires_grad: bool = False, dtype=None, device=None, backend=None) -> Tensor:
    """A new Tensor holding a copy of ``data`` on the current backend.

    An array keeps its dtype (a float64 array stays float64); Python floats take the default
    dtype, Python ints int64.
    """
    b = _target(device, backend)
    if isinstance(data, Tensor):
        data = data.data
    if backend_name_of(data) is not None:
        arr = _transfer.to_device(data, backend=b.name, device=b.device)
        arr = b.xp.asarray(arr, dtype=None if dtype is None else b.dtype(dtype), copy=True)
    else:
        arr = b.asarray(data, dtype=dtype)
    return Tensor(arr, requires_grad=requires_grad)


as_tensor = tensor


def _filled(fill, size, dtype, requires_grad, device, backend):
    b = _target(device, backend)
    arr = b.xp.full(_shape(size), fill, dtype=b.dtype(dtype), device=b.device)
    return Tensor(arr, requires_grad=requires_grad)


def zeros(*size, dtype=None, requires_grad=False, device=None, backend=None) -> Tensor:
    return _filled(0, size, dtype, requires_grad, device, backend)


def ones(*size, dtype=None, requires_grad=False, device=None, backend=None) -> Tensor:
    return _filled(1, size, dtype, requires_grad, device, backend)


def empty(*size, dtype=None, requires_grad=False, device=None, backend=None) -> Tensor:
    return _filled(0, size, dtype, requires_grad, device, backend)


def full(size, fill_value, dtype=None, requires_grad=False, device=None, backend=None) -> Tensor:
    if dtype is None and isinstance(fill_value, bool):
        dtype = "bool"
    elif dtype is None and isinstance(fill_value, int):
        dtype = "int64"
    return _filled(fill_value, (tuple(size) if isinstance(size, (tuple, list)) else (size,)),
                   dtype, requires_grad, device, backend)


def arange(start, end=None, step=1, dtype=None, requires_grad=False, device=None, backend=None) -> Tensor:
    if end is None:
        start, end = 0, start
    if dtype is None:
        floaty = any(isinstance(v, float) for v in (start, end, step))
        dtype = get_default_dtype() if floaty else "int64"
    b = _target(device, backend)
    return Tensor(b.xp.arange(start, end, step, dtype=b.dtype(dtype), device=b.device),
                  requires_grad=requires_grad)


def randn(*size, dtype=None, requires_grad=False, device=None, backend=None) -> Tensor:
    b = _target(device, backend)
    return Tensor(b.rng.normal(_shape(size), dtype=dtype), requires_grad=requires_grad)


def rand(*size, dtype=None, requires_grad=False, device=None, backend=None) -> Tensor:
    b = _target(device, backend)
    return Tensor(b.rng.uniform(_shape(size), dtype=dtype), requires_grad=requires_grad)


def randint(low, high, size, device=None, backend=None) -> Tensor:
    b = _target(device, backend)
    return Tensor(b.rng.integers(low, high, tuple(size)))


def _like(fill, t, dtype, requires_grad):
    data = unwrap(t)
    b = get_backend(backend_name_of(data), data.device if backend_name_of(data) != "numpy" else None)
    native = data.dtype if dtype is None else resolve_dtype(b.xp, dtype)
    return Tensor(b.xp.full(tuple(data.shape), fill, dtype=native, device=b.device), requires_grad=requires_grad)


def zeros_like(t, dtype=None, requires_grad=False) -> Tensor:
    return _like(0, t, dtype, requires_grad)


def ones_like(t, dtype=None, requires_grad=False) -> Tensor:
    return _like(1, t, dtype, requires_grad)


def full_like(t, fill_value, dtype=None, requires_grad=False) -> Tensor:
    return _like(fill_value, t, dtype, requires_grad)



# -- moving and casting Tensors (Tensor.to) -------------------------------------------------------


class ToDevice(Function):
    """y = x on another backend or device (the same values; a fresh copy when it stays put).

    dL/dx = G moved back to x's backend and device; the tangent moves forward like x.
    """

    @staticmethod
    def forward(ctx, x, backend=None, device=None):
        ctx.source = backend_of(x)
        out = _transfer.to_device(x, backend=backend, device=device)
        if out is x:
            out = fresh_copy(x)
        ctx.target = backend_of(out)
        return out

    @staticmethod
    def backward(ctx, g):
        return _transfer.to_device(g, backend=ctx.source.name, device=ctx.source.device)

    @staticmethod
    def jvp(ctx, t):
        return _transfer.to_device(t, backend=ctx.target.name, device=ctx.target.device)


def _is_backend(source, name, native) -> bool:
    """A quick yes for the common no-op (``t.to("cpu")`` on the host); False means "resolve"."""
    if name is not None and name != source.name:
        return False
    return native is None or native is source.device or (type(native) is str and native == source.device_label)


def tensor_to(t, *args, **kwargs) -> Tensor:
    """``Tensor.to``: see its docstring. Returns ``t`` itself when neither device nor dtype
    changes and ``copy`` is False."""
    name, native, dtype, _non_blocking, copy = parse_to_args(args, kwargs, "Tensor.to")
    out = t
    if name is not None or native is not None:
        source = backend_of(t.data)
        if not _is_backend(source, name, native):
            target = get_backend(source.name if name is None else name, native)
            if target is not source:  # one Backend per (name, device): identity says "same device"
                out = ToDevice.apply(t, backend=target.name, device=target.device)
                copy = False
    if dtype is not None:
        data = out.data
        if data.dtype != resolve_dtype(backend_of(data).xp, dtype):
            out = _ops.astype(out, dtype)
            copy = False
    if copy:
        out = ToDevice.apply(out)
    return out
