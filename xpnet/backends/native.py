"""Compiled kernels for the NumPy backend, built on first use with the machine's C compiler.

The C sources in ``csrc/`` are compiled once per machine (``cc -O3 -march=native``, the result
cached under ``$XPNET_CACHE_DIR`` or ``~/.cache/xpnet``, named by a hash of the source, compiler,
flags and CPU) and loaded with ctypes, which releases the GIL during each call, so the NumPy
kernels' worker threads run them in parallel. Everything here is optional: with no compiler or a
failed build ``library()`` returns None, as with ``XPNET_NATIVE=0`` (read at every call), and the
NumPy kernels take their pure-NumPy paths, which the tests hold the compiled ones equal to; so do
dtypes a kernel does not cover (the few-channel convolutions are float32 only, the others take
float32 and float64).

``status()`` says which it is (``python -m xpnet info`` prints it).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading

# each source with its own floating-point contraction: the convolution loops want fused multiply-adds,
# the elementwise kernels must round each operation as the NumPy code they replace does
SOURCES = {"conv_wide.c": "-ffp-contract=fast", "elementwise.c": "-ffp-contract=off"}

_lock = threading.Lock()
_state: dict = {"loaded": False, "lib": None, "reason": "not built yet"}


def enabled() -> bool:
    return os.environ.get("XPNET_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def _cache_dir() -> str:
    base = os.environ.get("XPNET_CACHE_DIR")
    if not base:
        base = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
                            "xpnet")
    return base


def _compiler():
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_signature() -> str:
    """What -march=native depends on: the CPU's feature flags where the system lists them."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _source_text() -> bytes:
    here = os.path.join(os.path.dirname(__file__), "csrc")
    return b"".join(open(os.path.join(here, name), "rb").read() + flags.encode() for name, flags in SOURCES.items())


def _flag_sets():
    common = ["-O3", "-fPIC", "-std=c99"]
    return [common + ["-march=native"], common]


def _build(cc: str, flags, target: str) -> str | None:
    """Compile each source to an object, link them into ``target`` (written under a temporary name,
    then renamed: another process never sees a half-written library). Returns None or the
    compiler's complaint."""
    here = os.path.join(os.path.dirname(__file__), "csrc")
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        work_dir = tempfile.TemporaryDirectory(dir=os.path.dirname(target))
    except OSError as exc:  # a cache directory we may not write: say so, keep the NumPy paths
        return f"cannot write {os.path.dirname(target)}: {exc}"
    with work_dir as work:
        try:
            objects = []
            for name, contraction in SOURCES.items():
                obj = os.path.join(work, name + ".o")
                problem = _run([cc, *flags, contraction, "-c", os.path.join(here, name), "-o", obj])
                if problem:
                    return problem
                objects.append(obj)
            linked = os.path.join(work, "lib.so")
            problem = _run([cc, *flags, "-shared", "-o", linked, *objects])
            if problem:
                return problem
            os.replace(linked, target)
            return None
        except (OSError, subprocess.SubprocessError) as exc:
            return str(exc)


def _run(cmd) -> str | None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        return (done.stderr or done.stdout).strip()[-400:] or f"{cmd[0]} exited {done.returncode}"
    return None


def _declare(lib):
    ptr, ssz, cint = ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int
    lib.xp_conv_wide.argtypes = [ptr, ssz, ptr, cint, ptr, cint, ptr, ssz, cint, cint, cint, cint, ptr,
                                 ptr, ssz, ssz, cint]
    lib.xp_conv_wide_dw.argtypes = [ptr, ssz, ptr, cint, ptr, ssz, ssz, cint, ssz, cint, cint, ptr]
    lib.xp_frame.argtypes = [ptr, ssz, ssz, ssz, ssz, cint, cint, cint, cint, ptr, ssz, ssz, cint, ssz, cint,
                             cint, ptr]
    kernels = [lib.xp_conv_wide, lib.xp_conv_wide_dw, lib.xp_frame]
    for suffix in ("f32", "f64"):
        fwd, bwd = getattr(lib, f"xp_relu_fwd_{suffix}"), getattr(lib, f"xp_relu_bwd_{suffix}")
        fwd.argtypes = [ptr, ptr, ssz]
        bwd.argtypes = [ptr, ptr, ptr, ssz]
        pool_fwd, pool_bwd = getattr(lib, f"xp_max_pool_fwd_{suffix}"), getattr(lib, f"xp_max_pool_bwd_{suffix}")
        pool_fwd.argtypes = [ptr, ptr, cint, cint, cint, cint, ptr, ptr, ptr] + [cint] * 10
        pool_bwd.argtypes = [ptr, ptr, ptr, ptr, cint, cint, cint, cint, ptr, ptr] + [cint] * 9
        sgd = getattr(lib, f"xp_sgd_{suffix}")
        real = ctypes.c_float if suffix == "f32" else ctypes.c_double
        sgd.argtypes = [ptr, ptr, ptr, ssz, real, cint, real, cint, real, real, cint, cint]
        wino_in, wino_out = getattr(lib, f"xp_wino_in_{suffix}"), getattr(lib, f"xp_wino_out_{suffix}")
        wino_in.argtypes = [ptr, ssz, cint, cint, cint, cint, cint, ptr, ssz, ssz]
        wino_out.argtypes = [ptr, ssz, ssz, cint, cint, cint, cint, ptr, ptr, ssz, cint, cint]
        bn = [getattr(lib, f"xp_bn_{name}_{suffix}") for name in ("moments", "affine", "grad_sums", "grad")]
        bn[0].argtypes = [ptr, ssz, cint, ptr, ptr, ptr]
        bn[1].argtypes = [ptr, ssz, cint, ptr, ptr, ptr]
        bn[2].argtypes = [ptr, ptr, ssz, cint, ptr, ptr, ptr]
        bn[3].argtypes = [ptr, ptr, ssz, cint, ptr, ptr, ptr, ptr, ptr]
        wino_grad = getattr(lib, f"xp_wino_grad_{suffix}")
        wino_grad.argtypes = [ptr, ssz, cint, cint, cint, cint, cint, cint, ptr, ssz, ssz]
        kernels += [fwd, bwd, pool_fwd, pool_bwd, sgd, wino_in, wino_out, wino_grad, *bn]
    for fn in kernels:
        fn.restype = None


def _load():
    if sys.platform.startswith("win"):
        return None, "no compiled kernels on Windows"
    cc = _compiler()
    if cc is None:
        return None, "no C compiler found (set CC)"
    try:
        source = _source_text()
    except OSError as exc:
        return None, f"C sources missing: {exc}"
    reasons = []
    for flags in _flag_sets():
        key = hashlib.sha256(b"\0".join([source, cc.encode(), " ".join(flags).encode(),
                                         _cpu_signature().encode(), platform.machine().encode()])).hexdigest()[:16]
        target = os.path.join(_cache_dir(), f"xpnet_native_{key}.so")
        if not os.path.exists(target):
            problem = _build(cc, flags, target)
            if problem is not None:
                reasons.append(problem)
                continue
        try:
            lib = ctypes.CDLL(target)
            _declare(lib)
            arch = "-march=native" if "-march=native" in flags else "generic"
            return lib, f"compiled kernels loaded ({os.path.basename(cc)}, {arch}, {target})"
        except (OSError, AttributeError) as exc:
            reasons.append(str(exc))
    return None, "compiled kernels unavailable: " + "; ".join(reasons)[-300:]


def library():
    """The loaded kernel library, or None (see the module docstring)."""
    if not enabled():
        return None
    if not _state["loaded"]:
        with _lock:
            if not _state["loaded"]:
                _state["lib"], _state["reason"] = _load()
                _state["loaded"] = True
    return _state["lib"]


def status() -> str:
    if not enabled():
        return "disabled by XPNET_NATIVE=0"
    library()
    return _state["reason"]


def reset() -> None:
    """Forget the loaded library (tests; a changed XPNET_NATIVE or XPNET_CACHE_DIR is read again)."""
    with _lock:
        _state.update(loaded=False, lib=None, reason="not built yet")
