"""Small helpers the functional layers and losses share: raw arrays, namespaces, argument checks."""

from __future__ import annotations

from ...autodiff.ops._common import namespace, raw  # noqa: F401  -- the layers import them from here
from ...autodiff.tensor import Tensor
from ...backends import backend_name_of, backend_of, check_same_device, dtype_name, get_backend, is_float_dtype

INTEGER_DTYPES = ("int8", "int16", "int32", "int64", "uint8")


def shape_text(shape) -> str:
    """``(8, 5)``, ``(3,)``, ``()`` as Python writes tuples."""
    return str(tuple(int(s) for s in shape))


def as_input(x, where: str):
    """``x`` as a Tensor or backend array; lists and numbers become arrays of the current backend."""
    if isinstance(x, Tensor) or backend_name_of(x) is not None:
        return x
    if isinstance(x, (list, tuple, int, float)):
        return Tensor(get_backend().asarray(x))
    raise TypeError(f"{where}: expected a Tensor or an array, got {type(x).__name__}")


def require_float(x, where: str, what: str = "input") -> None:
    if not is_float_dtype(raw(x).dtype):
        raise TypeError(f"{where}: expected a floating-point {what}, got dtype {dtype_name(raw(x).dtype)}")


def same_dtype(a, b, where: str, a_name: str = "input", b_name: str = "target") -> None:
    """TypeError naming both dtypes when they differ: xpnet never upcasts silently."""
    da, db = raw(a).dtype, raw(b).dtype
    if dtype_name(da) != dtype_name(db):  # by name: arrays of two namespaces reach the device check later
        raise TypeError(
            f"{where}: {a_name} dtype {dtype_name(da)} does not match {b_name} dtype {dtype_name(db)}; "
            "cast one explicitly (.float() / .double())"
        )


def array_like(value, ref, where: str, what: str, dtype=None):
    """``value`` (Tensor, array, list or number) as a raw array on ``ref``'s backend and device.

    Arrays of another backend or device raise DeviceMismatchError (no silent transfer); ``dtype`` (a native
    dtype) casts explicitly, as a loss does with its class weights.
    """
    data = raw(value)
    ref_backend = backend_of(ref)
    if backend_name_of(data) is None:
        data = ref_backend.asarray(data)
    else:
        check_same_device(ref, data, op=f"{where} (input and {what})")
    if dtype is not None and data.dtype != dtype:
        data = namespace(data).astype(data, dtype)
    return data


def normalize_axis(axis: int, ndim: int, where: str) -> int:
    if not -max(ndim, 1) <= axis < max(ndim, 1):
        raise ValueError(f"{where}: dim {axis} is out of range for an input with {ndim} dimensions")
    return axis % max(ndim, 1)
