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

The cache is trusted only as far as it can be checked: the build records the library's SHA-256 in
``<library>.sha256`` beside it, and a library is loaded only from a directory this user owns that
nobody else may write (created 0o700), only when it and its record are regular files owned by this
user and writable by no one else, and only when its bytes hash to the record. The bytes read and
hashed are the bytes loaded (copied to a private temporary file in that directory, loaded, removed),
so the file cannot be swapped between the check and the load. A library that fails a check is
rebuilt in its place; a directory that fails one leaves the NumPy kernels. Either way one warning
says which path and why, and ``status()`` repeats it.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import warnings

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
    parts = []
    for name, flags in SOURCES.items():
        with open(os.path.join(here, name), "rb") as src:
            parts.append(src.read() + flags.encode())
    return b"".join(parts)


def _flag_sets():
    common = ["-O3", "-fPIC", "-std=c99"]
    return [common + ["-march=native"], common]


def _build(cc: str, flags, target: str) -> str | None:
    """Compile each source to an object, link them into ``target`` (written under a temporary name,
    then renamed: another process never sees a half-written library) and record its SHA-256 beside
    it (``_record_path``, also written under a temporary name, and before the library, so that a
    reader never finds a new library with no record). Returns None or the compiler's complaint."""
    here = os.path.join(os.path.dirname(__file__), "csrc")
    try:
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
            os.chmod(linked, 0o644)  # whatever the umask: a group-writable library would be refused
            with open(linked, "rb") as built:
                digest = hashlib.sha256(built.read()).hexdigest()
            _write_atomically(_record_path(target), (digest + "\n").encode())
            os.replace(linked, target)
            return None
        except (OSError, subprocess.SubprocessError) as exc:
            return str(exc)


def _record_path(target: str) -> str:
    return target + ".sha256"


def _write_atomically(path: str, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".xpnet_tmp_")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _prepare_cache_dir(path: str):
    """Create the cache directory (0o700) if need be. Returns (problem, refusal): ``problem`` when it
    cannot be created, ``refusal`` when it exists but may not be trusted; both None when it may."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.stat(path)
    except OSError as exc:  # a cache directory we may not write: say so, keep the NumPy paths
        return f"cannot write {path}: {exc}", None
    if not stat.S_ISDIR(st.st_mode):
        return None, "it is not a directory"
    if st.st_uid != os.getuid():
        return None, f"the directory is owned by another user (uid {st.st_uid})"
    if st.st_mode & 0o022:
        return None, (f"the directory is group- or world-writable (mode {stat.S_IMODE(st.st_mode):#o}; "
                      f"chmod go-w it)")
    return None, None


def _read_trusted(path: str, name: str, limit: int = -1):
    """The bytes of ``path`` if it is a regular file (not a symlink) owned by this user and writable by
    no one else, else (None, why not, ``name`` saying which file). The checks are made on the
    descriptor that is read."""
    try:
        if stat.S_ISLNK(os.lstat(path).st_mode):
            return None, f"{name} is a symlink"
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return None, f"{name} is missing"
    except OSError as exc:
        return None, f"{name} cannot be read ({exc})"
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, f"{name} is not a regular file"
        if st.st_uid != os.getuid():
            return None, f"{name} is owned by another user (uid {st.st_uid})"
        if st.st_mode & 0o022:
            return None, f"{name} is group- or world-writable (mode {stat.S_IMODE(st.st_mode):#o})"
        with os.fdopen(os.dup(fd), "rb") as handle:
            return handle.read(limit), None
    except OSError as exc:
        return None, f"{name} cannot be read ({exc})"
    finally:
        os.close(fd)


def _verified_bytes(target: str):
    """(the library's bytes, None) when ``target`` and its record pass every check, else (None, why)."""
    data, why = _read_trusted(target, "it")
    if data is None:
        return None, why
    record, why = _read_trusted(_record_path(target), "its SHA-256 record", limit=256)
    if record is None:
        return None, why
    if hashlib.sha256(data).hexdigest() != record.decode("ascii", "replace").strip():
        return None, "its SHA-256 does not match the one recorded at build time"
    return data, None


def _load_bytes(data: bytes, directory: str):
    """Load exactly ``data`` (already verified): written to a private temporary file in the checked
    directory, loaded from there, removed (the loaded mapping outlives the name)."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".xpnet_load_", suffix=".so")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        return ctypes.CDLL(tmp)
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


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
    """(library or None, status text, warning text or None)."""
    if sys.platform.startswith("win"):
        return None, "no compiled kernels on Windows", None
    cc = _compiler()
    if cc is None:
        return None, "no C compiler found (set CC)", None
    try:
        source = _source_text()
    except OSError as exc:
        return None, f"C sources missing: {exc}", None
    cache = _cache_dir()
    problem, refusal = _prepare_cache_dir(cache)
    if problem is not None:
        return None, "compiled kernels unavailable: " + problem[-300:], None
    if refusal is not None:
        why = f"not loading compiled kernels from {cache}: {refusal}"
        return None, why, f"xpnet: {why}; using the NumPy kernels"
    reasons, refused = [], []
    for flags in _flag_sets():
        built = False
        key = hashlib.sha256(b"\0".join([source, cc.encode(), " ".join(flags).encode(),
                                         _cpu_signature().encode(), platform.machine().encode()])).hexdigest()[:16]
        target = os.path.join(cache, f"xpnet_native_{key}.so")
        data, why = _verified_bytes(target)
        if data is None:
            if os.path.lexists(target):  # there, but not to be trusted: rebuilt in its place
                refused.append(f"not loading compiled kernels from {target}: {why}")
            problem = _build(cc, flags, target)
            if problem is not None:
                reasons.append(problem)
                continue
            built = True
            data, why = _verified_bytes(target)
            if data is None:
                reasons.append(f"{target}: {why} after rebuilding it")
                continue
        try:
            lib = _load_bytes(data, cache)
            _declare(lib)
        except (OSError, AttributeError) as exc:
            reasons.append(str(exc))
            continue
        arch = "-march=native" if "-march=native" in flags else "generic"
        text = f"compiled kernels loaded ({os.path.basename(cc)}, {arch}, {target})"
        if refused:
            instead = f"using {target}" + (", rebuilt from the C sources" if built else "")
            text += "; " + "; ".join(refused)
            return lib, text, "xpnet: " + "; ".join(refused) + "; " + instead
        return lib, text, None
    text = "compiled kernels unavailable: " + "; ".join(refused + ["; ".join(reasons)[-300:]])
    warning = ("xpnet: " + "; ".join(refused) + "; using the NumPy kernels") if refused else None
    return None, text, warning


def library():
    """The loaded kernel library, or None (see the module docstring)."""
    if not enabled():
        return None
    if not _state["loaded"]:
        warning = None
        with _lock:
            if not _state["loaded"]:
                _state["lib"], _state["reason"], warning = _load()
                _state["loaded"] = True
        if warning:  # once per load, outside the lock (an error filter must not leave it half done)
            warnings.warn(warning, RuntimeWarning, stacklevel=2)
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
