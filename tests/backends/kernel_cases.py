"""The implementations that every kernel family's case table runs (imported by the
tests/backends/test_backends_*.py files), and what the tables share.

``impl`` (a fixture; a test narrows it with ``@pytest.mark.parametrize("impl", [...], indirect=True)``):

    generic          the generic Array-API code, as a Function runs it where the backend's kernel table
                     has no entry (array_api_strict's), on NumPy arrays (the reference every case
                     computes, its result types checked there) and on array_api_strict arrays
    numpy            the NumPy backend's registered kernel, compiled library switched off (XPNET_NATIVE=0)
    numpy-compiled   the same kernel with the compiled library (skipped where it cannot be built)
    cupy             the CuPy backend's registered kernel on CuPy arrays (marked gpu, skipped without
                     a CUDA device); a family CuPy registers no kernel for runs the generic code on CuPy
                     arrays, as the Function does there

Every case computes the generic code on NumPy arrays as the reference; ``impl.kernel(name)`` is the
implementation found through the kernel table (``lookup_kernel``) under the name the Function holds.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import NamedTuple

import os

import numpy as np
import pytest

import xpnet
from xpnet.autodiff.function import Context
from xpnet.autodiff.ops.elementwise import ReLU
from xpnet.backends import base, kernels, unavailable_reason
from xpnet.backends.kernels import ReLUForward, lookup_kernel
from xpnet.backends.numpy import native
from xpnet.nn.functional import conv as conv_mod
from xpnet.nn.functional import norm as norm_mod
from xpnet.nn.functional import pool as pool_mod

_linear = importlib.import_module("xpnet.nn.functional.linear")  # (the package exports a function of that name)

# the tolerances of the tables, against the generic code in the same dtype
TOL = {"float64": dict(rtol=1e-11, atol=1e-11), "float32": dict(rtol=2e-5, atol=2e-5),
       "float16": dict(rtol=0, atol=0)}
GPU_TOL = {"float64": dict(rtol=1e-10, atol=1e-10), "float32": dict(rtol=1e-4, atol=1e-4),
           "float16": dict(rtol=0, atol=0)}


@contextlib.contextmanager
def no_fast_paths():
    """Every backend's kernel table empty: the Functions run their generic code on any array."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(base, "lookup_kernel", lambda backend_name, kernel: None)
        patch.setattr(base, "_REGISTRY", {})  # Backend.kernel reads the table itself for a KernelName
        yield


def relu_forward_generic(x):
    """ReLU.forward's own generic code (it has no separate generic function)."""
    ctx = Context()
    with no_fast_paths():
        y = ReLU.forward(ctx, x)
    (saved,) = ctx.saved_tensors
    return ReLUForward(y, saved)


def relu_backward_generic(g, saved):
    ctx = Context()
    ctx.save_for_backward(saved)
    with no_fast_paths():
        return ReLU.backward(ctx, g)


def matmul_generic(a, b):
    """Affine's product with no MATMUL kernel: ``a @ b``."""
    with no_fast_paths():
        return _linear._matmul(a, b)


# what a Function runs for each kernel name where its backend registers none
GENERIC = {
    kernels.CONV2D_FORWARD: conv_mod.conv2d_forward_generic,
    kernels.CONV2D_BACKWARD: conv_mod.conv2d_backward_generic,
    kernels.MAX_POOL2D_FORWARD: pool_mod.max_pool2d_forward_generic,
    kernels.MAX_POOL2D_BACKWARD: pool_mod.max_pool2d_backward_generic,
    kernels.AVG_POOL2D_FORWARD: pool_mod.avg_pool2d_forward_generic,
    kernels.AVG_POOL2D_BACKWARD: pool_mod.avg_pool2d_backward_generic,
    kernels.BATCH_NORM_FORWARD: norm_mod.batch_norm_forward_generic,
    kernels.BATCH_NORM_BACKWARD: norm_mod.batch_norm_backward_generic,
    kernels.LOCAL_RESPONSE_NORM_FORWARD: norm_mod.lrn_forward_generic,
    kernels.LOCAL_RESPONSE_NORM_BACKWARD: norm_mod.lrn_backward_generic,
    kernels.RELU_FORWARD: relu_forward_generic,
    kernels.RELU_BACKWARD: relu_backward_generic,
    kernels.MATMUL: matmul_generic,
}


_REFERENCES: dict = {}


def _fingerprint(value):
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.strides, hash(value.tobytes()))
    if isinstance(value, tuple):
        return tuple(_fingerprint(v) for v in value)
    return (type(value).__name__, repr(value))


def _read_only(value):
    if isinstance(value, np.ndarray):
        value.flags.writeable = False
    elif isinstance(value, (tuple, dict)):
        for v in (value.values() if isinstance(value, dict) else value):
            _read_only(v)
    return value


def reference(fn, *args):
    """``fn(*args)``, the generic code on NumPy arrays, computed once per distinct input values (the
    implementations of a case share it); its arrays are read-only, so nothing can change it."""
    key = (fn.__qualname__,) + tuple(_fingerprint(a) for a in args)
    if key not in _REFERENCES:
        _REFERENCES[key] = _read_only(fn(*args))
    return _REFERENCES[key]


class Arrays(NamedTuple):
    """One kind of array an implementation runs on: ``put`` a host array there (keeping its memory
    layout), bring a result back with ``host``."""

    name: str
    put: object
    host: object


def _strict_put(a):
    import array_api_strict

    return None if a is None else array_api_strict.asarray(a)


def _cupy_put(a):
    """The host array on the GPU with the same memory order (an NCHW view of NHWC memory stays one)."""
    import cupy

    if a is None:
        return None
    order = tuple(int(i) for i in np.argsort([-s for s in a.strides], kind="stable"))
    inverse = tuple(int(i) for i in np.argsort(order))
    return cupy.asarray(np.ascontiguousarray(a.transpose(order))).transpose(inverse)


def _to_host(a):
    return None if a is None else xpnet.to_numpy(a)


NUMPY_ARRAYS = Arrays("numpy", lambda a: a, _to_host)
STRICT_ARRAYS = Arrays("array_api_strict", _strict_put, _to_host)
CUPY_ARRAYS = Arrays("cupy", _cupy_put, _to_host)


class Impl(NamedTuple):
    name: str  # generic, numpy, numpy-compiled or cupy
    backend: str  # whose kernel table is looked up
    arrays: tuple  # the Arrays it runs on
    tol: dict  # per dtype name

    @property
    def numpy(self) -> bool:
        return self.name in ("numpy", "numpy-compiled")

    def kernel(self, name):
        """What the Function holding ``name`` runs on this implementation's arrays."""
        fast = lookup_kernel(self.backend, name)
        if self.numpy:
            assert fast is not None, f"the NumPy backend registers no {name!r} kernel"
        return fast if fast is not None else GENERIC[name]

    def close(self, got, expected, dtype):
        """``got`` (any array kind) equals the generic NumPy result ``expected`` within this
        implementation's tolerance, with the same dtype and shape."""
        got = _to_host(got)
        assert got.dtype == expected.dtype == np.dtype(dtype), (got.dtype, expected.dtype, dtype)
        assert got.shape == expected.shape, (got.shape, expected.shape)
        tol = self.tol[str(dtype)]
        with np.errstate(invalid="ignore"):  # a quick look first: assert_allclose takes ten times as long
            near = np.abs(got - expected) <= tol["atol"] + tol["rtol"] * np.abs(expected)
            same = (got == expected) | (np.isnan(got) & np.isnan(expected))
        if not np.all(near | same):
            np.testing.assert_allclose(got, expected, **tol)


IMPLS = ("generic", "numpy", "numpy-compiled", pytest.param("cupy", marks=pytest.mark.gpu))
NUMPY_IMPLS = ("numpy", "numpy-compiled")
LOOKUP_IMPLS = ("generic", "numpy", pytest.param("cupy", marks=pytest.mark.gpu))  # numpy-compiled: numpy's table
CUPY_ONLY = (pytest.param("cupy", marks=pytest.mark.gpu),)
LAYOUT_IMPLS = NUMPY_IMPLS + CUPY_ONLY  # for memory layouts: array_api_strict arrays have none to speak of
DTYPES = ("float64", "float32")


def with_dtypes(impls=IMPLS, dtypes=DTYPES, layouts=False):
    """Parameters ``impl, ..., dtype`` (``indirect=["impl"]``), with ``layouts`` ``impl, ..., dtype,
    channels_last`` (NCHW memory, or an NCHW view of NHWC memory): every implementation in every
    dtype, except the generic code, which runs here on the array_api_strict arrays (slow, and the
    same code in any dtype) in float64 only; both layouts for the NumPy kernels, NCHW for the others
    (array_api_strict arrays have no layout to speak of; the CuPy kernels copy any input to
    C-contiguous first); ``layouts`` may name the implementations that get both instead. ``impls``:
    names, or ``pytest.param``s of (name, more values...)."""
    both_layouts = NUMPY_IMPLS if layouts is True else layouts or ()
    params = []
    for p in impls:
        values, marks, name = (p.values, p.marks, p.id or p.values[0]) if hasattr(p, "values") else ((p,), (), p)
        for dtype in dtypes:
            if values[0] == "generic" and dtype != "float64" and "float64" in dtypes:
                continue
            if not layouts:
                params.append(pytest.param(*values, dtype, marks=marks, id=f"{name}-{dtype}"))
                continue
            for channels_last in ((False, True) if values[0] in both_layouts else (False,)):
                params.append(pytest.param(*values, dtype, channels_last, marks=marks,
                                           id=f"{name}-{dtype}-{'nhwc' if channels_last else 'nchw'}"))
    return params


def make_impl(name: str, monkeypatch) -> Impl:
    """Switch to the implementation ``name`` for one test (monkeypatch undoes it), or skip."""
    if name == "generic":
        assert all(lookup_kernel("array_api_strict", k) is None for k in GENERIC)
        # on NumPy arrays the generic code is each case's reference; here it runs on the strict arrays
        return Impl(name, "array_api_strict", (STRICT_ARRAYS,), TOL)
    if name == "numpy":
        monkeypatch.setitem(native._state, "enabled", False)  # XPNET_NATIVE=0
        assert native.library() is None
        return Impl(name, "numpy", (NUMPY_ARRAYS,), TOL)
    if name == "numpy-compiled":
        if native.library() is None:
            pytest.skip(f"compiled kernels: {native.status()}")
        return Impl(name, "numpy", (NUMPY_ARRAYS,), TOL)
    if name == "cupy":
        reason = unavailable_reason("cupy")
        if reason is not None:
            pytest.skip(f"cupy: {reason}")
        xpnet.get_backend("cupy")  # imports xpnet.backends.cupy, which registers its kernels
        return Impl(name, "cupy", (CUPY_ARRAYS,), GPU_TOL)
    raise ValueError(f"unknown implementation {name!r}")


@pytest.fixture(params=IMPLS)
def impl(request, monkeypatch):
    """The implementation under test; see the module docstring."""
    return make_impl(request.param, monkeypatch)


def layout(a, channels_last):
    """The same host values, stored NCHW-contiguous or as an NCHW view of NHWC memory."""
    if not channels_last:
        return np.ascontiguousarray(a)
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def case_ids(cases, prefix="case"):
    return [f"{prefix}{i}" for i in range(len(cases))]


def passes_in_forked_child(check) -> bool:
    """Whether ``check()`` returns True in a forked child (which then exits): the kernels' worker
    pools must start afresh there, without the parent's threads."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.write(write, b"ok" if check() else b"mismatch")
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    answer = os.read(read, 16)
    os.close(read)
    return answer == b"ok" and status == 0
