"""The CuPy kernels' C bodies, checked on the CPU: each ElementwiseKernel body is compiled with g++
as the per-element loop CuPy generates (T = double or float, inputs by value, outputs by
reference) and run on NumPy arrays through a stand-in ``cupy`` module; 30 steps of every optimizer
case must equal the generic Array-API update bit for bit (no FMA contraction, float64 and float32).

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
from xpnet.backends import cupy_optim_kernels as kernels
from optim_cases import A, B, C0, CASES, W0, sign_of

STEPS = 30
FAST = {"SGD": kernels.sgd_step, "Adagrad": kernels.adagrad_step, "RMSprop": kernels.rmsprop_step,
        "Adam": kernels.adam_step, "AdamW": kernels.adam_step}


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


def _run(name, options, dtype, fast, steps):
    w = xpnet.tensor(W0.astype(dtype), requires_grad=True)
    opt = getattr(optim, name)([w], **options)
    group = opt.param_groups[0]
    wd = W0.astype(dtype)
    state = {k: (v.view(DeviceArray) if isinstance(v, np.ndarray) else v)
             for k, v in opt.init_state(wd, group).items()}
    wd = wd.view(DeviceArray)
    a, b, c = A.astype(dtype), B.astype(dtype), C0.astype(dtype)
    update = FAST[name] if fast else type(opt).update
    trajectory = []
    for _ in range(steps):
        r = a @ wd + c - b
        g = (a.T @ r * (sign_of(options) / r.size)).astype(dtype).view(DeviceArray)
        if "step" in state:
            state["step"] += 1
        wd = np.ascontiguousarray(update(wd, g, state, group)).view(DeviceArray)
        trajectory.append(np.asarray(wd).copy())
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
    kernels._elementwise.cache_clear()
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
    kernels._elementwise.cache_clear()


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
