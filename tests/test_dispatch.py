"""Per-operation dispatch: backend_of, device checks and dtype names cost lookups, not imports.

backend_of resolves an array's Backend once per array type (NumPy) or per (type, device); later
calls must not import modules, read the environment or parse backend names. dtype_name keeps
each dtype object's name; it must give the right name for every backend's dtypes, raise as
before for unknown ones, and never compare dtypes of two libraries with each other.
"""

from __future__ import annotations

import importlib
import os
import warnings

import numpy as np
import pytest

import xpnet
from xpnet import backends as B
from xpnet.backends import (
    DeviceMismatchError,
    backend_of,
    check_same_device,
    dtype_name,
    fresh_copy,
    is_float_dtype,
)
from xpnet.autodiff.tensor import Tensor
from xpnet.backends.dtypes import DType

FLOATS = ("float16", "float32", "float64")
INTS = ("int8", "int16", "int32", "int64", "uint8")


def _arrays():
    """(label, array, expected Backend) for each CPU namespace and device this machine has."""
    cases = [("numpy", np.ones(3), B.get_backend("numpy")),
             ("numpy-scalar", np.float64(2.0), B.get_backend("numpy"))]
    if B.unavailable_reason("array_api_strict") is None:
        for device in ("CPU_DEVICE", "device1", "device2"):
            backend = B.get_backend("array_api_strict", device)
            cases.append((f"strict-{device}", backend.asarray([1.0, 2.0]), backend))
    if B.unavailable_reason("torch") is None:
        backend = B.get_backend("torch", "cpu")
        cases.append(("torch-cpu", backend.asarray([1.0, 2.0]), backend))
    if B.unavailable_reason("cupy") is None:
        backend = B.get_backend("cupy", 0)
        cases.append(("cupy-0", backend.asarray([1.0, 2.0]), backend))
    return cases


class _Forbidden(dict):
    """Stands in for os.environ: any read fails the test."""

    def _fail(self, *args, **kwargs):
        raise AssertionError("os.environ read on the backend_of hot path")

    __getitem__ = get = __contains__ = __iter__ = keys = items = _fail


def _forbid_slow_paths(monkeypatch):
    def no_import(*args, **kwargs):
        raise AssertionError(f"importlib.import_module{args} on the backend_of hot path")

    def no_canonical(*args, **kwargs):
        raise AssertionError("canonical_name on the backend_of hot path")

    monkeypatch.setattr(importlib, "import_module", no_import)
    monkeypatch.setattr(os, "environ", _Forbidden())
    monkeypatch.setattr(B, "canonical_name", no_canonical)
    monkeypatch.setattr(B, "_resolve", lambda *a: pytest.fail("_resolve on the backend_of hot path"))


@pytest.mark.parametrize("label,array,expected", _arrays(), ids=[c[0] for c in _arrays()])
def test_backend_of_resolves_once_per_type_and_device(monkeypatch, label, array, expected):
    assert backend_of(array) is expected  # the first call may resolve
    _forbid_slow_paths(monkeypatch)
    for _ in range(3):
        assert backend_of(array) is expected
    # another array of the same type and device: still no import, no environment, no parsing
    same = array + 1
    assert backend_of(same) is expected


def test_backend_of_follows_the_array_not_the_current_backend():
    x = np.ones(2)
    owner = backend_of(x)
    assert owner is B.get_backend("numpy")
    if B.unavailable_reason("array_api_strict") is None:
        with xpnet.use_backend("array_api_strict", "device1") as strict:
            assert backend_of(x) is owner
            y = strict.asarray([1.0])
            assert backend_of(y) is strict
        assert backend_of(y) is strict
    xpnet.manual_seed(3)  # reseeds the owner in place: the memoised instance stays the one in use
    assert backend_of(x) is owner is B.get_backend("numpy")
    first = xpnet.to_numpy(owner.rng.uniform((4,)))
    xpnet.manual_seed(3)
    np.testing.assert_array_equal(xpnet.to_numpy(backend_of(x).rng.uniform((4,))), first)


def test_backend_of_errors_are_unchanged():
    for value in ([1.0], 2.0, None, object()):
        with pytest.raises(TypeError, match="expected an array of a supported backend, got "
                                            f"{type(value).__name__}"):
            backend_of(value)
    t = xpnet.tensor(np.ones(2))
    with pytest.raises(TypeError, match="got Tensor"):
        backend_of(t)  # a Tensor is not an array: unwrap it first (t.backend)
    assert t.backend is backend_of(t.data)


@pytest.mark.skipif(B.unavailable_reason("array_api_strict") is not None, reason="array_api_strict missing")
def test_check_same_device_builds_no_names_when_devices_agree(monkeypatch):
    d1 = B.get_backend("array_api_strict", "device1")
    d2 = B.get_backend("array_api_strict", "device2")
    a, b = d1.asarray([1.0]), d1.asarray([2.0])
    n1, n2 = np.ones(1), np.zeros(1)
    backend_of(a), backend_of(n1)  # types seen once
    monkeypatch.setattr(B, "describe_device", lambda x: pytest.fail("device names built for a match"))
    check_same_device(a, b, 1.0, None, Tensor(b), op="x")
    check_same_device(n1, n2, 3, Tensor(n2), op="x")
    monkeypatch.undo()
    c = d2.asarray([1.0])
    with pytest.raises(DeviceMismatchError) as info:
        check_same_device(a, 2.0, c, op="add")
    assert str(info.value) == (
        "add: inputs are on different devices: array_api_strict:device1 (argument 0) and "
        "array_api_strict:device2 (argument 2); move them to one device with "
        "xpnet.to_device(x, backend=..., device=...)")
    with pytest.raises(DeviceMismatchError, match=r"numpy:cpu \(argument 0\) and array_api_strict:device1 "
                                                  r"\(argument 1\)"):
        check_same_device(n1, a, op="mul")
    with pytest.raises(DeviceMismatchError, match="Add: inputs are on different devices"):
        Tensor(a) + Tensor(c)


def _namespaces():
    spaces = [("numpy", np)]
    if B.unavailable_reason("array_api_strict") is None:
        spaces.append(("array_api_strict", B.get_backend("array_api_strict").xp))
    if B.unavailable_reason("torch") is None:
        spaces.append(("torch", B.get_backend("torch").xp))
    if B.unavailable_reason("cupy") is None:
        spaces.append(("cupy", B.get_backend("cupy").xp))
    return spaces


@pytest.mark.parametrize("name,xp", _namespaces(), ids=[s[0] for s in _namespaces()])
def test_dtype_names_of_every_backend(name, xp):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # array_api_strict warns if its dtypes meet NumPy's in ==
        for _ in range(2):  # first sight and the remembered answer
            for dt in FLOATS + INTS + ("bool",):
                if not hasattr(xp, dt):
                    continue  # array_api_strict has no float16
                native = getattr(xp, dt)
                assert dtype_name(native) == dt
                assert is_float_dtype(native) is (dt in FLOATS)
                assert getattr(xpnet, dt if dt != "bool" else "bool_") == native
                array = xp.zeros((2,), dtype=native)
                assert dtype_name(array.dtype) == dt
                assert is_float_dtype(array.dtype) is (dt in FLOATS)
                # NumPy's own dtypes next to this namespace's: never compared with each other
                assert dtype_name(np.dtype(dt)) == dt
            if hasattr(xp, "bfloat16"):
                assert dtype_name(xp.bfloat16) == "bfloat16" and is_float_dtype(xp.bfloat16)


def test_dtype_name_of_names_and_numpy_types():
    for _ in range(2):
        for dt in FLOATS + INTS:
            assert dtype_name(dt) == dt
            assert dtype_name(DType(dt)) == dt
            assert DType(dt) == getattr(xpnet, dt) == dt
            assert dtype_name(getattr(np, dt)) == dt  # scalar types
        assert dtype_name(np.bool_) == "bool" and dtype_name(bool) == "bool"
        assert dtype_name(np.dtype(">f4")) == "float32"


def test_dtype_name_errors_repeat():
    for bad in (np.dtype("complex64"), "complex64", np.complex128, [1], object()):
        for _ in range(2):
            with pytest.raises(TypeError, match="unknown dtype"):
                dtype_name(bad)
            assert is_float_dtype(bad) is False


def test_fresh_copy_shares_nothing():
    for a in (np.arange(6.0).reshape(2, 3), np.asfortranarray(np.arange(6.0).reshape(2, 3)),
              np.arange(12.0)[::2], np.float32(1.5) * np.ones((3,), np.float32)):
        c = fresh_copy(a)
        np.testing.assert_array_equal(c, a)
        assert c.dtype == a.dtype and not np.shares_memory(c, a)
        plus = a + 0  # what it stands for: the same memory order
        assert (c.flags.c_contiguous, c.flags.f_contiguous) == (plus.flags.c_contiguous, plus.flags.f_contiguous)
    zero_d = np.array(2.0)
    assert fresh_copy(zero_d) == zero_d + 0 and type(fresh_copy(zero_d)) is type(zero_d + 0)
