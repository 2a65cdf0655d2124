"""Compiled kernels for the NumPy backend, built on first use with the machine's C compiler.

The C sources in ``csrc/`` (one per subject, beside the Python module that calls it) are compiled
once per machine (``cc -O3 -march=native``, the result cached under ``$XPNET_CACHE_DIR`` or
``~/.cache/xpnet``, named by a hash of the sources, headers, compiler, flags and CPU) and loaded with
ctypes, which releases the GIL during each call, so the NumPy kernels' worker threads run them in
parallel; some kernels also split their own loops over the library's pthread pool (csrc/parallel.c,
configured at load with runtime.NUM_WORKERS threads). Everything here is optional: with no compiler or a failed build ``library()`` returns
None, as with ``XPNET_NATIVE=0`` (read once, at the first use; ``reset()`` reads it again), and the NumPy kernels take their pure-NumPy
paths, which the tests hold the compiled ones equal to (the SGD step has none: the optimizer's
generic rule runs instead); so do dtypes a kernel does not cover (the few-channel convolutions are
float32 only, the others take float32 and float64).

``status()`` says which it is (``python -m xpnet info`` prints it).

Signatures: every exported function is declared once, in ``csrc/xpnet_kernels.h``. Each source includes
it and is compiled with ``-Werror=missing-prototypes``, so a definition that differs from its
declaration, or an exported function declared nowhere, fails the build; the loader sets each
function's ctypes argument types from the same header (header.py) and hands out only the declared
functions (``Library``). A header the parser cannot read, a declared function missing from the
library, or a build that fails on the declarations leaves the NumPy kernels with one warning.

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

import numpy as np

from . import header, runtime

# each source with its own floating-point contraction: the convolution loops want fused multiply-adds;
# the others must round each operation as the NumPy code they replace (or the generic rule) does
SOURCES = {
    "conv.c": "-ffp-contract=fast",
    "direct.c": "-ffp-contract=fast",
    "winograd.c": "-ffp-contract=off",
    "pool.c": "-ffp-contract=off",
    "norm.c": "-ffp-contract=off",
    "activation.c": "-ffp-contract=off",
    "loss.c": "-ffp-contract=off",
    "optim.c": "-ffp-contract=off",
    "parallel.c": "-ffp-contract=off",
}
# headers the sources include besides the exported one (part of the build's hash)
INTERNAL_HEADERS = ("xpnet_parallel.h",)
CSRC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc")

# the dtypes the compiled kernels come in (``kernel`` picks the _f32 or _f64 function)
FLOATS = (np.dtype(np.float32), np.dtype(np.float64))

# what a compiler says when a definition differs from its declaration in the header, or when an
# exported function has none: the C sources and the header disagree (worth a warning, unlike a
# machine without a working compiler)
_MISMATCH_MARKERS = ("conflicting types", "missing-prototypes", header.HEADER_NAME)

_lock = threading.Lock()
_state: dict = {"loaded": False, "lib": None, "reason": "not built yet", "enabled": None}


def enabled() -> bool:
    """``XPNET_NATIVE`` (0/false/no/off: the NumPy paths), read once: at the first call after import
    or ``reset()``. The kernels ask at every call, so no environment read stays on their path."""
    flag = _state["enabled"]
    if flag is None:
        flag = _state["enabled"] = os.environ.get("XPNET_NATIVE", "1").strip().lower() not in ("0", "false", "no",
                                                                                             "off")
    return flag


def set_enabled(flag) -> None:
    """Switch the compiled kernels on (True) or off (False) for this process without reloading them;
    None: back to ``XPNET_NATIVE``, read at the next call."""
    _state["enabled"] = None if flag is None else bool(flag)


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
    parts = []
    for name, flags in list(SOURCES.items()) + [(h, "") for h in (header.HEADER_NAME, *INTERNAL_HEADERS)]:
        with open(os.path.join(CSRC_DIR, name), "rb") as src:
            parts.append(name.encode() + b"\0" + src.read() + flags.encode())
    return b"".join(parts)


def _flag_sets():
    # -Werror=missing-prototypes: every exported function must be declared in the header
    common = ["-O3", "-fPIC", "-std=c99", "-pthread", "-Werror=missing-prototypes"]
    return [common + ["-march=native"], common]


def _build(cc: str, flags, target: str) -> str | None:
    """Compile each source to an object, link them into ``target`` (written under a temporary name,
    then renamed: another process never sees a half-written library) and record its SHA-256 beside
    it (``_record_path``, also written under a temporary name, and before the library, so that a
    reader never finds a new library with no record). Returns None or the compiler's complaint."""
    here = CSRC_DIR
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
    """None, or the compiler's complaint: its first error lines (the cause; notes follow them)."""
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip()
        errors = [line.strip() for line in said.splitlines() if "error" in line]
        return ("; ".join(errors[:3]) or said)[-400:] or f"{cmd[0]} exited {done.returncode}"
    return None


def _mismatch(problem: str) -> bool:
    return any(marker in problem for marker in _MISMATCH_MARKERS)


class DeclarationError(LookupError):
    """A function declared in the header is not in the library built from the sources."""


class Library:
    """The loaded kernels: each function declared in ``csrc/xpnet_kernels.h`` with the ctypes
    signature read from there (``lib.xp_frame(...)``), and nothing else: a name the header does not
    declare is an AttributeError, never a call with unchecked arguments."""

    def __init__(self, cdll, prototypes: dict):
        self._cdll = cdll  # the functions below live as long as it does
        functions = {}
        for proto in prototypes.values():
            try:
                fn = getattr(cdll, proto.name)
            except AttributeError:
                raise DeclarationError(f"{proto.name} is declared in {header.HEADER_NAME} but the library "
                                       f"built from the C sources does not define it") from None
            fn.argtypes = list(proto.argtypes)
            fn.restype = proto.restype
            functions[proto.name] = fn
        self._functions = functions
        self._variants = {}  # (name, dtype) -> function, filled by kernel()

    def __getattr__(self, name):
        functions = self.__dict__.get("_functions", {})
        if name in functions:
            return functions[name]
        raise AttributeError(f"compiled kernels: {name} is not declared in {header.HEADER_NAME}")

    def names(self):
        return list(self._functions)


def kernel(lib, name: str, dtype):
    """The float32 (``name``_f32) or float64 (``name``_f64) version of a compiled kernel (a Library
    finds it once per name and dtype: the small kernels ask for it at every call)."""
    variants = lib.__dict__.get("_variants")
    if variants is not None:
        found = variants.get((name, dtype))
        if found is None:
            found = variants[(name, dtype)] = getattr(lib, f"{name}_{'f32' if dtype == np.float32 else 'f64'}")
        return found
    return getattr(lib, f"{name}_{'f32' if dtype == np.float32 else 'f64'}")


def vector_floats(lib) -> int:
    """How many floats one vector of the compiled loops holds: 16 where the library was built for
    AVX-512, else 8 (``xp_direct_lanes``; asked once per library)."""
    found = lib.__dict__.get("_vector_floats")
    if found is None:
        found = lib.__dict__["_vector_floats"] = int(lib.xp_direct_lanes())
    return found


_char_at = ctypes.c_char.from_buffer
_address_of = ctypes.addressof


def ptr(a) -> int:
    """The address of an array's first element, as the compiled kernels take it.

    Through the buffer protocol (a ctypes char over the array's memory: ~0.5 us) rather than
    ``a.ctypes.data`` (~1.5-2 us: it builds a helper object each time), which an MLP step asks for
    dozens of times; an array that cannot lend a writable C-contiguous buffer (read-only, strided,
    empty) takes ``a.ctypes.data``, which gives the same address."""
    try:
        return _address_of(_char_at(a))
    except (TypeError, ValueError, BufferError):
        return a.ctypes.data


def _load():
    """(library or None, status text, warning text or None)."""
    if sys.platform.startswith("win"):
        return None, "no compiled kernels on Windows", None
    cc = _compiler()
    if cc is None:
        return None, "no C compiler found (set CC)", None
    try:
        source = _source_text()
        prototypes = header.read(CSRC_DIR)
    except OSError as exc:
        return None, f"C sources missing: {exc}", None
    except header.HeaderError as exc:
        why = f"the compiled kernels' header cannot be read: {exc}"
        return None, "compiled kernels unavailable: " + why, f"xpnet: {why}; using the NumPy kernels"
    cache = _cache_dir()
    problem, refusal = _prepare_cache_dir(cache)
    if problem is not None:
        return None, "compiled kernels unavailable: " + problem[-300:], None
    if refusal is not None:
        why = f"not loading compiled kernels from {cache}: {refusal}"
        return None, why, f"xpnet: {why}; using the NumPy kernels"
    reasons, refused, mismatched = [], [], []
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
                if _mismatch(problem):
                    mismatched.append(problem)
                continue
            built = True
            data, why = _verified_bytes(target)
            if data is None:
                reasons.append(f"{target}: {why} after rebuilding it")
                continue
        try:
            lib = Library(_load_bytes(data, cache), prototypes)
        except OSError as exc:
            reasons.append(str(exc))
            continue
        except DeclarationError as exc:
            reasons.append(str(exc))
            mismatched.append(str(exc))
            continue
        arch = "-march=native" if "-march=native" in flags else "generic"
        text = f"compiled kernels loaded ({os.path.basename(cc)}, {arch}, {target})"
        if refused:
            instead = f"using {target}" + (", rebuilt from the C sources" if built else "")
            text += "; " + "; ".join(refused)
            return lib, text, "xpnet: " + "; ".join(refused) + "; " + instead
        return lib, text, None
    text = "compiled kernels unavailable: " + "; ".join(refused + ["; ".join(reasons)[-300:]])
    notes = list(refused)
    if mismatched:  # the sources and the header disagree: a mistake to report, not a machine to live with
        notes.append(f"the C sources do not match their declarations in {header.HEADER_NAME} ({mismatched[0][-300:]})")
    warning = ("xpnet: " + "; ".join(notes) + "; using the NumPy kernels") if notes else None
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
                if _state["lib"] is not None:  # the kernels' own threads: as many as the NumPy kernels use
                    _state["lib"].xp_threads_configure(runtime.NUM_WORKERS, runtime.NATIVE_SPIN_US)
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
    """Forget the loaded library and the XPNET_NATIVE setting (tests, scripts: a changed XPNET_NATIVE or
    XPNET_CACHE_DIR is read again at the next call)."""
    with _lock:
        _state.update(loaded=False, lib=None, reason="not built yet", enabled=None)
