"""The CuPy kernels' CUDA sources, checked on the CPU: every ``.cu`` file of ``xpnet/backends/cupy``
is compiled by g++ as C++ (one thread, one block: each grid-stride loop then covers every element),
and the kernels' host code runs on NumPy arrays through a stand-in ``cupy`` module. The results must
equal the generic Array-API code, as the case tables of tests/backends/test_backends_{conv,pool,norm}.py
check on a real GPU (their ``cupy`` implementation).

NumPy-only by nature (it emulates CuPy on the host), so it does not take the ``backend`` fixture.
"""

from __future__ import annotations

import contextlib
import ctypes
import re
import shutil
import subprocess
import sys
import types
from importlib import resources

import numpy as np
import pytest

from xpnet.backends import kernels
from xpnet.backends.cupy import conv, norm, pool, runtime
from xpnet.backends.cupy import random as cupy_random
from xpnet.nn.functional import conv as conv_mod
from xpnet.nn.functional import pool as pool_mod

KERNEL_SOURCES = ("conv.cu", "pool.cu", "norm.cu")  # RawModule sources: templates on T
ALL_SOURCES = KERNEL_SOURCES + ("random.cu",)  # random.cu: the draw kernels' device functions

_PRELUDE = r"""
#include <algorithm>
#include <cmath>
struct xp_dim3 { unsigned x, y, z; };
static xp_dim3 blockIdx = {0, 0, 0}, threadIdx = {0, 0, 0}, blockDim = {1, 1, 1}, gridDim = {1, 1, 1};
#define __global__
#define __device__
#define __forceinline__ inline
template <typename T> T atomicAdd(T* p, T v) { T old = *p; *p += v; return old; }
using std::min; using std::max;
"""
_CTYPES = {"long long": ctypes.c_longlong, "int": ctypes.c_int, "float": ctypes.c_float, "double": ctypes.c_double}


def _signatures(source):
    """{kernel name: [C parameter types]} parsed from the template kernels of the source."""
    sigs = {}
    for name, params in re.findall(r"__global__ void (\w+)\((.*?)\)\s*\{", source, re.S):
        sigs[name] = [re.sub(r"\s*\b\w+$", "", p.strip()).replace("__restrict__", "").strip()
                      for p in params.split(",")]
    return sigs


def _compile(folder, name, code):
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("g++ is needed to compile the CUDA kernel source for the host")
    (folder / f"{name}.cpp").write_text(code)
    subprocess.run([compiler, "-O1", "-std=c++14", "-shared", "-fPIC", "-ffp-contract=off", "-o",
                    str(folder / f"{name}.so"), str(folder / f"{name}.cpp")], check=True, capture_output=True)
    return ctypes.CDLL(str(folder / f"{name}.so"))


def test_the_package_ships_exactly_these_sources():
    shipped = {p.name for p in resources.files("xpnet.backends.cupy").iterdir() if p.name.endswith(".cu")}
    assert shipped == set(ALL_SOURCES)
    assert {conv._CUDA.filename, pool._CUDA.filename, norm._CUDA.filename} == set(KERNEL_SOURCES)


@pytest.fixture(scope="module")
def host_library(tmp_path_factory):
    """{source text: (library, signatures)} for every kernel source, each compiled on its own (as
    each is one RawModule on the GPU)."""
    folder = tmp_path_factory.mktemp("cuda_host")
    compiled = {}
    for filename in KERNEL_SOURCES:
        code = runtime.cuda_source(filename)
        sigs = _signatures(code)
        assert sigs and list(sigs) == runtime.kernel_names(code), filename
        wrappers = []
        for name, types_ in sigs.items():
            for ctype in ("float", "double"):
                concrete = [t.replace("T", ctype) if "T" in t.split() or "T*" in t else t for t in types_]
                args = ", ".join(f"{t} a{i}" for i, t in enumerate(concrete))
                call = ", ".join(f"a{i}" for i in range(len(concrete)))
                wrappers.append(f'extern "C" void host_{name}_{ctype}({args}) {{ {name}<{ctype}>({call}); }}')
        library = _compile(folder, filename[:-3], _PRELUDE + code + "\n" + "\n".join(wrappers) + "\n")
        compiled[code] = (library, sigs)
    return compiled


class DeviceArray(np.ndarray):
    """A NumPy array with CuPy's ``with a.device:``."""

    @property
    def device(self):
        return contextlib.nullcontext()


def _fake_cupy(compiled):
    class Function:
        def __init__(self, library, sigs, expression):
            self.name, ctype = re.match(r"(\w+)<(\w+)>", expression).groups()
            self.fn = getattr(library, f"host_{self.name}_{ctype}")
            self.types = [ctype if t == "T" else t for t in sigs[self.name]]

        def __call__(self, grid, block, params):
            assert len(params) == len(self.types), self.name
            args = []
            for value, ctype in zip(params, self.types):
                if "*" in ctype:
                    assert isinstance(value, np.ndarray) and value.flags.c_contiguous, self.name
                    args.append(ctypes.c_void_p(value.ctypes.data))
                else:
                    if ctype in ("float", "double"):  # a T scalar: passed as the array dtype's scalar
                        assert isinstance(value, np.float32 if ctype == "float" else np.float64), (self.name, ctype)
                        args.append(_CTYPES[ctype](float(value)))
                    else:
                        assert isinstance(value, (np.int32, np.int64)), (self.name, type(value))
                        args.append(_CTYPES[ctype](int(value)))
            self.fn(*args)

    class RawModule:
        def __init__(self, code, options=(), name_expressions=()):
            assert code in compiled, "RawModule compiled something other than a shipped .cu file"
            self.library, self.sigs = compiled[code]
            self.expressions = set(name_expressions)
            assert self.expressions == {f"{k}<{t}>" for k in self.sigs for t in ("float", "double")}

        def get_function(self, expression):
            assert expression in self.expressions, expression
            return Function(self.library, self.sigs, expression)

    def wrap(fn):
        return lambda *a, **k: fn(*a, **k).view(DeviceArray)

    cupy = types.ModuleType("cupy")
    cupy.RawModule = RawModule
    cupy.cuda = types.SimpleNamespace(Device=lambda *a: types.SimpleNamespace(id=0))
    cupy.empty, cupy.zeros, cupy.empty_like = wrap(np.empty), wrap(np.zeros), wrap(np.empty_like)
    cupy.ascontiguousarray, cupy.matmul = wrap(np.ascontiguousarray), wrap(np.matmul)
    cupy.int32, cupy.dtype, cupy.add = np.int32, np.dtype, np.add
    return cupy


@pytest.fixture
def emulated(host_library, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(host_library))
    monkeypatch.setattr(runtime, "_modules", {})
    monkeypatch.setattr(runtime, "_functions", {})


def _dev(a):
    return np.ascontiguousarray(a).view(DeviceArray)


CONV_CASES = [
    (2, 3, 8, 8, 4, (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    (2, 4, 9, 8, 4, (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), 1),
    (2, 2, 10, 9, 3, (5, 5), (3, 2), ((2, 2), (1, 1)), (1, 1), 1),
    (2, 3, 9, 9, 2, (3, 3), (1, 1), ((2, 2), (2, 2)), (2, 2), 1),
    (2, 4, 7, 7, 4, (3, 3), (2, 1), ((1, 1), (0, 0)), (1, 2), 4),
    (2, 2, 6, 5, 3, (2, 2), (1, 1), ((0, 1), (0, 1)), (1, 1), 1),
    (2, 3, 23, 23, 4, (11, 11), (4, 4), ((2, 2), (2, 2)), (1, 1), 1),
    (2, 2, 9, 11, 3, (3, 3), (2, 3), ((1, 1), (2, 2)), (2, 2), 1),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("case", CONV_CASES, ids=[f"case{i}" for i in range(len(CONV_CASES))])
def test_cuda_conv_source_equals_generic(emulated, rng, case, chunked, dtype, monkeypatch):
    if chunked:  # one image per chunk, and blocks of 5 rows that start mid-kernel
        monkeypatch.setattr(conv, "CHUNK_BYTES", 1)
        monkeypatch.setattr(conv, "IM2COL_ROWS", 5)
    n, c, h, w, o, kernel, stride, padding, dilation, groups = case
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((o, c // groups) + kernel).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    out_hw = conv_mod.conv2d_output_size((h, w), kernel, stride, padding, dilation)
    tol = dict(rtol=1e-11, atol=1e-11) if dtype == "float64" else dict(rtol=2e-5, atol=2e-5)
    fast = conv.conv2d_forward(_dev(x), _dev(wt), _dev(b), stride, padding, dilation, groups, out_hw)
    assert isinstance(fast, kernels.ConvForward) and isinstance(fast.saved, conv.ConvSaved)
    yg, sg = conv_mod.conv2d_forward_generic(x, wt, b, stride, padding, dilation, groups, out_hw)
    np.testing.assert_allclose(np.asarray(fast.y), yg, **tol)
    g = rng.standard_normal(yg.shape).astype(dtype)
    grads = conv.conv2d_backward(_dev(g), fast.saved, (True, True, True))
    assert isinstance(grads, kernels.ConvGrads)
    for a, ref in zip(grads, conv_mod.conv2d_backward_generic(g, sg, (True, True, True))):
        assert a.dtype == ref.dtype
        np.testing.assert_allclose(np.asarray(a), ref, **tol)


POOL_CASES = [
    ((2, 2), (2, 2), 0, (1, 1), False, 8, 8),
    ((3, 3), (2, 2), 1, (1, 1), False, 9, 8),
    ((3, 2), (2, 1), 1, (1, 1), True, 7, 8),
    ((2, 2), (3, 3), 1, (1, 1), True, 8, 7),
    ((3, 3), (1, 1), 1, (2, 2), False, 7, 7),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("sliced", [False, True])
@pytest.mark.parametrize("case", POOL_CASES, ids=[f"case{i}" for i in range(len(POOL_CASES))])
def test_cuda_pool_source_equals_generic(emulated, rng, case, dtype, sliced, monkeypatch):
    if sliced:  # launches capped at one image each: the batch goes through batch_slices
        monkeypatch.setattr(runtime, "INT_MAX", 3 * 9 * 9)
    kernel, stride, p, dilation, ceil_mode, h, w = case
    pad = ((p, p), (p, p))
    out = conv_mod.conv2d_output_size((h, w), kernel, stride, pad, dilation, ceil_mode=ceil_mode)
    x = rng.integers(0, 4, (2, 3, h, w)).astype(dtype)  # ties: the first maximum wins
    x[0, 0, 1, 1] = np.nan  # a NaN takes its windows, as in PyTorch
    fast = pool.max_pool2d_forward(_dev(x), kernel, stride, pad, dilation, out)
    assert isinstance(fast, kernels.PoolForward) and isinstance(fast.saved, pool.MaxPoolSaved)
    yg, sg = pool_mod.max_pool2d_forward_generic(x, kernel, stride, pad, dilation, out)
    np.testing.assert_array_equal(np.asarray(fast.y), yg)
    g = rng.standard_normal(yg.shape).astype(dtype)
    np.testing.assert_allclose(np.asarray(pool.max_pool2d_backward(_dev(g), fast.saved)),
                               pool_mod.max_pool2d_backward_generic(g, sg), rtol=1e-6, atol=1e-6)
    if dilation != (1, 1):
        return
    x = rng.standard_normal((2, 3, h, w)).astype(dtype)
    for count_include_pad in (True, False):
        for override in (None, 3):
            fast = pool.avg_pool2d_forward(_dev(x), kernel, stride, pad, out, count_include_pad, override)
            assert isinstance(fast, kernels.PoolForward) and isinstance(fast.saved, pool.AvgPoolSaved)
            yg, sg = pool_mod.avg_pool2d_forward_generic(x, kernel, stride, pad, out, count_include_pad, override)
            np.testing.assert_allclose(np.asarray(fast.y), yg, rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(np.asarray(pool.avg_pool2d_backward(_dev(g), fast.saved)),
                                       pool_mod.avg_pool2d_backward_generic(g, sg), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("size", [1, 2, 5])
def test_cuda_lrn_source_equals_generic(emulated, rng, size, dtype):
    from xpnet.nn.functional import norm as norm_mod

    x = rng.standard_normal((2, 7, 5, 4)).astype(dtype)
    args = (size, 1e-2, 0.75, 2.0)
    fast = norm.local_response_norm_forward(_dev(x), *args)
    assert isinstance(fast, kernels.LocalResponseNormForward)
    assert isinstance(fast.saved, norm.LocalResponseNormSaved)
    yg, sg = norm_mod.lrn_forward_generic(x, *args)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == "float64" else dict(rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(fast.y), yg, **tol)
    g = rng.standard_normal(x.shape).astype(dtype)
    np.testing.assert_allclose(np.asarray(norm.local_response_norm_backward(_dev(g), fast.saved)),
                               norm_mod.lrn_backward_generic(g, sg), **tol)


def test_random_source_equals_the_host_reference(tmp_path):
    """random.cu's xpnet_unit(key, counter), compiled for the host, gives host_units bit for bit."""
    wrapper = ('extern "C" void host_units(unsigned long long key, unsigned long long offset, long long count, '
               'double* out) { for (long long i = 0; i < count; ++i) out[i] = xpnet_unit(key, offset + i + 1); }\n')
    library = _compile(tmp_path, "random", _PRELUDE + runtime.cuda_source("random.cu") + "\n" + wrapper)
    for seed, offset in ((0, 0), (7, 1500), (12345, 1 << 40)):
        key = cupy_random.mix64((seed * cupy_random._GOLDEN) & cupy_random._MASK64)
        out = np.empty(1000)
        library.host_units(ctypes.c_ulonglong(key), ctypes.c_ulonglong(offset), ctypes.c_longlong(out.size),
                           ctypes.c_void_p(out.ctypes.data))
        ref = cupy_random.host_units(key, offset, out.size)
        np.testing.assert_array_equal(out, ref)
        assert out.min() > 0.0 and out.max() <= 1.0
