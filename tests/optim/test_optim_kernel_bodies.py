"""The CuPy kernels' C bodies, checked on the CPU: each ElementwiseKernel body is compiled with g++
as the per-element loop CuPy generates (T = double or float, inputs by value, outputs by
reference) and run on NumPy arrays through a stand-in ``cupy`` module; 30 steps of every optimizer
case must equal the generic Array-API update bit for bit (no FMA contraction, float64 and float32).

Both sides run through ``Optimizer.step`` on the numpy backend: the fused side with the CuPy kernel
installed as that backend instance's own fast path, so the kernel receives the ``scalars`` the
optimizer computes, and must update ``w`` in place and return it.

This is NumPy-only by nature (it emulates CuPy on the host), so it does not take the ``backend``
fixture; test_optim_cupy_kernels.py runs the real kernels on a GPU.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

import xpnet
import xpnet.optim as optim
from xpnet.backends.cupy import optim as cupy_optim
from optim_cases import A, B, C0, CASES, W0, sign_of

STEPS = 30
FAST = {"SGD": cupy_optim.sgd_step, "Adagrad": cupy_optim.adagrad_step, "RMSprop": cupy_optim.rmsprop_step,
        "Adam": cupy_optim.adam_step, "AdamW": cupy_optim.adam_step}


class DeviceArray(np.ndarray):
    """A NumPy array with CuPy's ``with a.device:``."""

    @property
    def device(self):
        return contextlib.nullcontext()


def _params(text):
    return [tuple(p.split()) for p in (s.strip() for s in text.split(","))]


class HostElementwiseKernel:
    """Records each call's signature on the first pass; runs the compiled loop on the second."""

    registry: list = []

    def __init__(self, in_params, out_params, body, name):
        self.ins, self.outs, self.body = _params(in_params), _params(out_params), body
        self.variants: dict = {}  # (ctype, which args are arrays) -> C function name, then function
        HostElementwiseKernel.registry.append(self)

    def _key(self, args):
        assert len(args) == len(self.ins) + len(self.outs)
        dtype = next(a.dtype for a in args if isinstance(a, np.ndarray))
        return {"float64": "double", "float32": "float"}[dtype.name], tuple(isinstance(a, np.ndarray) for a in args)

    def source(self, key, fname):
        ctype, arrays = key
        sig, loads = ["long n_"], []
        for index, ((kind, name), is_array) in enumerate(zip(self.ins + self.outs, arrays)):
            ct = "int" if kind == "int32" else "T"
            if is_array:
                sig.append(f"{ct}* p_{name}")
                ref = "const " + ct if index < len(self.ins) else ct + "&"
                loads.append(f"{ref} {name} = p_{name}[i_];")
            else:
                sig.append(f"{ct} {name}")
        return (f"namespace {fname}_ns {{ typedef {ctype} T;\n"
                f"extern \"C\" void {fname}({', '.join(sig)}) {{\n"
                f"  for (long i_ = 0; i_ < n_; ++i_) {{ {' '.join(loads)} {self.body} }}\n}} }}\n")

    def __call__(self, *args):
        key = self._key(args)
        fn = self.variants.setdefault(key, None)
        if fn is None:
            return  # recording pass
        ctype = key[0]
        n = next(a.size for a in args if isinstance(a, np.ndarray))
        cargs = [ctypes.c_long(n)]
        for (kind, name), a in zip(self.ins + self.outs, args):
            if isinstance(a, np.ndarray):
                assert a.flags.c_contiguous and a.size == n, name
                cargs.append(a.ctypes.data_as(ctypes.c_void_p))
            elif kind == "int32":
                cargs.append(ctypes.c_int(int(a)))
            else:
                # scalars must arrive in the parameter's dtype, as CuPy would compute in it
                assert np.asarray(a).dtype.name == {"double": "float64", "float": "float32"}[ctype], name
                cargs.append((ctypes.c_double if ctype == "double" else ctypes.c_float)(a))
        fn(*cargs)


def _in_place_on_host(fast):
    """The CuPy kernel ``fast`` as the numpy backend's fast path: ``w`` goes in as a view with CuPy's
    ``device`` (so the kernel's in-place writes land in the parameter), and must come back."""

    def step(w, g, state, group, scalars):
        view = w.view(DeviceArray)
        out = fast(view, g, state, group, scalars)
        assert out is view, "a fused step returns the parameter it updated in place"
        return w

    return step


def _run(name, options, dtype, fast, steps):
    """(trajectory of w, final state) of ``steps`` optimizer steps on the fixed problem; ``fast`` runs
    the CuPy kernel body, otherwise the generic rule (fused=False)."""
    with xpnet.use_backend("numpy") as backend, pytest.MonkeyPatch.context() as patch:
        cls = getattr(optim, name)
        if fast:
            patch.setitem(backend.kernels, cls.kernel_name, _in_place_on_host(FAST[name]))
            patch.setattr(cls, "group_kernel_name", None)  # the CuPy body, not the NumPy group kernel (SGD)
        w = xpnet.tensor(W0.astype(dtype), requires_grad=True)
        opt = cls([w], fused=fast, **options)
        a, b, c = A.astype(dtype), B.astype(dtype), C0.astype(dtype)
        trajectory = []
        for _ in range(steps):
            r = a @ np.asarray(w.data) + c - b
            g = (a.T @ r * (sign_of(options) / r.size)).astype(dtype)
            w.grad = xpnet.tensor(g)
            opt.step()
            trajectory.append(np.asarray(w.data).copy())
        state = opt.state.get(w, {})
    return np.array(trajectory), {k: np.asarray(v).copy() for k, v in state.items() if k != "step"}


@pytest.fixture
def host_cupy(monkeypatch, tmp_path):
    if shutil.which("g++") is None:
        pytest.skip("g++ not found: cannot compile the kernel bodies on the host")
    fake = types.ModuleType("cupy")
    fake.ElementwiseKernel = HostElementwiseKernel
    fake.empty_like = lambda a: np.empty_like(a).view(DeviceArray)
    fake.int32 = np.int32
    monkeypatch.setitem(sys.modules, "cupy", fake)
    cupy_optim._elementwise.cache_clear()
    HostElementwiseKernel.registry = []
    # pass 1: every case once, to learn which kernels and signatures exist; then one compile
    for _, name, options in CASES:
        for dtype in ("float64", "float32"):
            _run(name, options, dtype, fast=True, steps=2)
    units, names = [], []
    for k, kernel in enumerate(HostElementwiseKernel.registry):
        for v, key in enumerate(kernel.variants):
            fname = f"kernel_{k}_{v}"
            units.append(kernel.source(key, fname))
            names.append((kernel, key, fname))
    cpp, lib = tmp_path / "kernels.cpp", tmp_path / "kernels.so"
    cpp.write_text("#include <cmath>\nusing std::sqrt;\n" + "".join(units))
    # -ffp-contract=off: no fused multiply-add, so the loop rounds exactly as the NumPy code does
    subprocess.run(["g++", "-O1", "-ffp-contract=off", "-shared", "-fPIC", str(cpp), "-o", str(lib)], check=True)
    so = ctypes.CDLL(str(lib))
    for kernel, key, fname in names:
        kernel.variants[key] = getattr(so, fname)
    yield
    cupy_optim._elementwise.cache_clear()


def test_kernel_bodies_equal_the_generic_updates(host_cupy):
    checked = 0
    for cid, name, options in CASES:
        for dtype in ("float64", "float32"):
            fast, fast_state = _run(name, options, dtype, fast=True, steps=STEPS)
            generic, generic_state = _run(name, options, dtype, fast=False, steps=STEPS)
            assert fast.dtype == np.dtype(dtype)
            np.testing.assert_array_equal(fast, generic, err_msg=f"{cid} {dtype}")
            assert fast_state.keys() == generic_state.keys(), cid
            for key in fast_state:
                np.testing.assert_array_equal(fast_state[key], generic_state[key], err_msg=f"{cid} {dtype} {key}")
            assert np.abs(fast[-1] - W0).max() > 1e-2
            checked += 1
    assert checked == 2 * len(CASES)
