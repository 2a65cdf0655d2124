"""The compiled kernels' build and load (xpnet/backends/numpy/native.py): built once into the cache,
reused, and every way of not having them (disabled, no compiler, a failing build) leaves the NumPy
paths; a cached library is loaded only when its cache directory, the file and its SHA-256 record pass
the checks, else it is rebuilt (or the NumPy paths taken) with one warning. The ctypes signatures come
from the one header (numpy/header.py): it declares every exported function, and a header that
disagrees with the sources (or the library) leaves the NumPy paths with one warning."""

from __future__ import annotations

import hashlib
import re
import os
import shutil
import subprocess
import warnings

import numpy as np
import pytest

from xpnet.backends.numpy import conv as nconv
from xpnet.backends.numpy import header, native
from xpnet.nn.functional import conv as conv_mod


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """A private cache directory and a forgotten library; the shared state is restored afterwards."""
    monkeypatch.setenv("XPNET_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("XPNET_NATIVE", raising=False)
    native.reset()
    yield tmp_path
    native.reset()


def _lenet_conv2(rng):
    x = rng.standard_normal((3, 6, 14, 14)).astype("float32")
    w = rng.standard_normal((16, 6, 5, 5)).astype("float32")
    b = rng.standard_normal(16).astype("float32")
    return x, w, b


def _check_against_generic(rng):
    x, w, b = _lenet_conv2(rng)
    args = ((1, 1), ((0, 0), (0, 0)), (1, 1), 1, (10, 10))
    yf, sf = nconv.conv2d_forward(x, w, b, *args)
    yg, sg = conv_mod.conv2d_forward_generic(x, w, b, *args)
    np.testing.assert_allclose(yf, yg, rtol=2e-5, atol=2e-5)
    g = rng.standard_normal(yg.shape).astype("float32")
    for a, c in zip(nconv.conv2d_backward(g, sf, (True, True, True)),
                    conv_mod.conv2d_backward_generic(g, sg, (True, True, True))):
        np.testing.assert_allclose(a, c, rtol=2e-5, atol=2e-5)


def test_built_once_into_the_cache_then_reused(fresh, monkeypatch, rng):
    if native._compiler() is None:
        pytest.skip("no C compiler on this machine")
    lib = native.library()
    assert lib is not None, native.status()
    built = [f for f in os.listdir(fresh) if f.endswith(".so")]
    assert len(built) == 1 and "loaded" in native.status()
    # beside it only its SHA-256 record, no temporary left behind
    assert sorted(os.listdir(fresh)) == [built[0], built[0] + ".sha256"]
    library_bytes = (fresh / built[0]).read_bytes()
    assert (fresh / (built[0] + ".sha256")).read_text().strip() == hashlib.sha256(library_bytes).hexdigest()
    native.reset()
    monkeypatch.setattr(native, "_build", lambda *a: pytest.fail("rebuilt although cached"))
    assert native.library() is not None
    _check_against_generic(rng)


def test_disabled_by_environment(fresh, monkeypatch, rng):
    monkeypatch.setenv("XPNET_NATIVE", "0")
    assert native.library() is None
    assert "XPNET_NATIVE=0" in native.status()
    assert not os.listdir(fresh)  # nothing was built
    _check_against_generic(rng)


def test_a_failing_compiler_leaves_the_numpy_path(fresh, monkeypatch, rng):
    monkeypatch.setattr(native, "_compiler", lambda: "/bin/false")
    assert native.library() is None
    assert "unavailable" in native.status()
    assert not [f for f in os.listdir(fresh) if f.endswith(".so")]
    _check_against_generic(rng)


def test_no_compiler(fresh, monkeypatch, rng):
    monkeypatch.setattr(native, "_compiler", lambda: None)
    assert native.library() is None
    assert "no C compiler" in native.status()
    _check_against_generic(rng)


def test_the_setting_is_read_once_and_again_after_reset(fresh, monkeypatch):
    # no environment read on the kernels' path: a change takes effect at reset(), which reads it again
    if native._compiler() is None:
        pytest.skip("no C compiler on this machine")
    monkeypatch.setenv("XPNET_NATIVE", "0")
    assert native.library() is None
    monkeypatch.setenv("XPNET_NATIVE", "1")
    assert native.library() is None
    native.reset()
    assert native.library() is not None
    monkeypatch.setenv("XPNET_NATIVE", "0")
    assert native.library() is not None
    native.reset()
    assert native.library() is None and "XPNET_NATIVE=0" in native.status()


def test_an_unwritable_cache_directory_leaves_the_numpy_path(fresh, monkeypatch, rng, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("XPNET_CACHE_DIR", str(blocker / "cache"))
    native.reset()
    assert native.library() is None
    assert "cannot write" in native.status()
    _check_against_generic(rng)


# --- the cache is not trusted blindly -------------------------------------------------------------

needs_cc = pytest.mark.skipif(native._compiler() is None, reason="no C compiler on this machine")

MARKER_SOURCE = r"""
#include <stdio.h>
__attribute__((constructor)) static void planted(void) {
    FILE *f = fopen(MARKER, "w");
    if (f) { fputs("planted code ran", f); fclose(f); }
}
"""


@pytest.fixture(scope="module")
def prebuilt(tmp_path_factory):
    """One real build (library and record), copied into each test's cache instead of building again."""
    if native._compiler() is None:
        pytest.skip("no C compiler on this machine")
    where = tmp_path_factory.mktemp("prebuilt")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XPNET_CACHE_DIR", str(where))
        mp.delenv("XPNET_NATIVE", raising=False)
        native.reset()
        try:
            assert native.library() is not None, native.status()
        finally:
            native.reset()
    names = [f for f in os.listdir(where) if f.endswith(".so")]
    assert len(names) == 1
    return where / names[0]


@pytest.fixture
def planted(fresh, prebuilt, tmp_path_factory):
    """A library whose constructor writes a marker file, compiled under the name the real one has in
    ``fresh``; returns (its path, the marker's path, the cached library's path)."""
    work = tmp_path_factory.mktemp("planted")
    marker = work / "marker"
    source = work / "planted.c"
    source.write_text(MARKER_SOURCE)
    lib = work / "planted.so"
    subprocess.run([native._compiler(), "-shared", "-fPIC", f'-DMARKER="{marker}"', str(source), "-o", str(lib)],
                   check=True, capture_output=True)
    return lib, marker, fresh / prebuilt.name


def _install(prebuilt, cache):
    for path in (prebuilt, prebuilt.with_name(prebuilt.name + ".sha256")):
        if path.exists():  # (the record: always, but a missing one should fail the test's own assertions)
            shutil.copy2(path, cache / path.name)


def _record(target, data):
    target.with_name(target.name + ".sha256").write_text(hashlib.sha256(data).hexdigest() + "\n")


def _load_catching():
    """library() called twice and status() read, with the warnings they raise."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lib = native.library()
        assert native.library() is lib
        text = native.status()
    return lib, text, [str(w.message) for w in caught if str(w.message).startswith("xpnet:")]


@needs_cc
def test_a_verified_library_is_loaded_without_rebuilding_or_warning(fresh, prebuilt, monkeypatch, rng):
    _install(prebuilt, fresh)
    monkeypatch.setattr(native, "_build", lambda *a: pytest.fail("rebuilt although cached and verified"))
    lib, text, caught = _load_catching()
    assert lib is not None and "loaded" in text and caught == []
    assert sorted(os.listdir(fresh)) == sorted([prebuilt.name, prebuilt.name + ".sha256"])  # the copy loaded is gone
    _check_against_generic(rng)


@needs_cc
def test_a_planted_library_is_not_loaded_but_rebuilt(fresh, prebuilt, planted, rng):
    lib_path, marker, target = planted
    _install(prebuilt, fresh)
    shutil.copyfile(lib_path, target)  # the record still holds the real library's SHA-256
    lib, text, caught = _load_catching()
    assert not marker.exists(), "the planted library was loaded"
    assert len(caught) == 1, caught
    assert str(target) in caught[0] and "SHA-256 does not match the one recorded at build time" in caught[0]
    assert caught[0].startswith("xpnet: not loading compiled kernels from ")
    assert "rebuilt" in caught[0]
    # rebuilt in its place, with a record that matches
    assert lib is not None and "loaded" in text and "does not match" in text
    assert target.read_bytes() != lib_path.read_bytes()
    assert target.with_name(target.name + ".sha256").read_text().strip() == \
        hashlib.sha256(target.read_bytes()).hexdigest()
    _check_against_generic(rng)


@needs_cc
def test_a_planted_library_without_a_rebuild_leaves_the_numpy_path(fresh, prebuilt, planted, monkeypatch, rng):
    lib_path, marker, target = planted
    _install(prebuilt, fresh)
    shutil.copyfile(lib_path, target)
    monkeypatch.setattr(native, "_build", lambda *a: "the compiler is gone")
    lib, text, caught = _load_catching()
    assert lib is None and not marker.exists()
    assert len(caught) == 1, caught
    assert caught[0] == (f"xpnet: not loading compiled kernels from {target}: its SHA-256 does not match the one "
                         f"recorded at build time; using the NumPy kernels")
    assert "does not match" in text and "the compiler is gone" in text
    _check_against_generic(rng)


def _fake_build(prebuilt):
    """A stand-in for the compiler: the prebuilt library and record, put in place atomically."""
    def build(cc, flags, target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            for source, dest in ((prebuilt.with_name(prebuilt.name + ".sha256"), target + ".sha256"),
                                 (prebuilt, target)):
                if not source.exists():
                    continue
                tmp = dest + ".tmp"
                shutil.copyfile(source, tmp)
                os.replace(tmp, dest)
        except OSError as exc:  # as _build: the complaint, not an exception
            if os.path.exists(tmp):
                os.unlink(tmp)
            return str(exc)
        return None
    return build


@needs_cc
@pytest.mark.parametrize("how, reason", [
    ("no record", "its SHA-256 record is missing"),
    ("library is a symlink", "it is a symlink"),
    ("record is a symlink", "its SHA-256 record is a symlink"),
    ("library is group-writable", "it is group- or world-writable"),
    ("record is world-writable", "its SHA-256 record is group- or world-writable"),
    ("record is a directory", "its SHA-256 record is not a regular file"),
])
def test_a_cached_library_failing_a_check_is_not_loaded(fresh, prebuilt, planted, monkeypatch, how, reason):
    lib_path, marker, target = planted
    record = target.with_name(target.name + ".sha256")
    data = lib_path.read_bytes()
    elsewhere = lib_path.with_name("elsewhere")
    if how == "no record":
        target.write_bytes(data)
    elif how == "library is a symlink":  # to a file whose SHA-256 the record holds: only the link is wrong
        target.symlink_to(lib_path)
        _record(target, data)
    elif how == "record is a symlink":
        target.write_bytes(data)
        _record(elsewhere, data)
        record.symlink_to(elsewhere.with_name(elsewhere.name + ".sha256"))
    elif how == "library is group-writable":
        target.write_bytes(data)
        os.chmod(target, 0o664)
        _record(target, data)
    elif how == "record is world-writable":
        target.write_bytes(data)
        _record(target, data)
        os.chmod(record, 0o646)
    elif how == "record is a directory":
        target.write_bytes(data)
        record.mkdir()
    monkeypatch.setattr(native, "_build", _fake_build(prebuilt))
    lib, text, caught = _load_catching()
    assert not marker.exists(), "the planted library was loaded"
    assert len(caught) == 1, caught
    assert caught[0].startswith(f"xpnet: not loading compiled kernels from {target}: {reason}"), caught[0]
    assert reason in text
    assert lib is not None and "loaded" in text
    if how == "record is a directory":  # the rebuild cannot replace it: the generic build is loaded instead
        assert record.is_dir() and "generic" in text and "; using " in caught[0]
    else:  # replaced by the rebuild, which is loaded
        assert not target.is_symlink() and not record.is_symlink()
        assert target.read_bytes() == prebuilt.read_bytes()
        assert caught[0].endswith(f"; using {target}, rebuilt from the C sources")


@needs_cc
@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
def test_a_group_or_world_writable_cache_directory_is_refused(fresh, prebuilt, monkeypatch, rng, mode):
    cache = fresh / "cache"
    cache.mkdir()
    _install(prebuilt, cache)  # even a library that would verify is not loaded from there
    os.chmod(cache, mode)
    monkeypatch.setenv("XPNET_CACHE_DIR", str(cache))
    native.reset()
    monkeypatch.setattr(native, "_build", lambda *a: pytest.fail("built into an unsafe directory"))
    lib, text, caught = _load_catching()
    assert lib is None
    assert len(caught) == 1, caught
    assert caught[0].startswith(f"xpnet: not loading compiled kernels from {cache}: the directory is group- or "
                                f"world-writable (mode {mode:#o}")
    assert caught[0].endswith("; using the NumPy kernels")
    assert "group- or world-writable" in text and str(cache) in text
    _check_against_generic(rng)


def test_a_cache_directory_owned_by_someone_else_is_refused(fresh, monkeypatch, rng):
    if native._compiler() is None:
        pytest.skip("no C compiler on this machine")
    monkeypatch.setattr(native.os, "getuid", lambda: os.stat(fresh).st_uid + 1)
    monkeypatch.setattr(native, "_build", lambda *a: pytest.fail("built into an unsafe directory"))
    lib, text, caught = _load_catching()
    assert lib is None and len(caught) == 1
    assert f"from {fresh}: the directory is owned by another user" in caught[0]
    _check_against_generic(rng)


@needs_cc
def test_the_cache_directory_is_created_private(fresh, prebuilt, monkeypatch):
    cache = fresh / "new" / "cache"
    monkeypatch.setenv("XPNET_CACHE_DIR", str(cache))
    native.reset()
    monkeypatch.setattr(native, "_build", _fake_build(prebuilt))
    lib, _, caught = _load_catching()
    assert lib is not None and caught == []
    assert os.stat(cache).st_mode & 0o777 == 0o700


# --- the signatures come from the one header --------------------------------------------------------

def _header_names():
    return set(header.read(native.CSRC_DIR))


def test_the_parser_maps_each_c_type_and_refuses_what_it_cannot_read():
    ctypes = pytest.importorskip("ctypes")
    parsed = header.parse("""
        /* a comment; with a semicolon */
        #include <stddef.h>
        void f(const float *restrict x, ptrdiff_t n, int k, double s, float *out, const unsigned char *arg,
               long m, int64_t big, size_t count);
        void g(void);
    """)
    assert list(parsed) == ["f", "g"]
    assert parsed["f"].argtypes == (ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int, ctypes.c_double, ctypes.c_void_p,
                                    ctypes.c_void_p, ctypes.c_long, ctypes.c_int64, ctypes.c_size_t)
    assert parsed["f"].params[0] == ("const float *restrict", "x") and parsed["f"].restype is None
    assert parsed["g"].argtypes == ()
    for text, complaint in [("void f(struct s x);", "is not one the loader maps"),
                            ("void f(float **x);", "is not one the loader maps"),
                            ("void f(int);", "needs a type and a name"),
                            ("typedef int index;", "not a plain function prototype"),
                            ("void f(int a); void f(int b);", "declared twice"),
                            ("/* nothing */", "declares no function")]:
        with pytest.raises(header.HeaderError, match=complaint):
            header.parse(text)


def test_every_kernel_the_python_code_calls_is_declared_in_the_header():
    names = _header_names()
    package = os.path.dirname(native.__file__)
    called = set()
    for module in os.listdir(package):
        if module.endswith(".py"):
            with open(os.path.join(package, module)) as src:
                text = src.read()
            for base in re.findall(r'native\.kernel\([^,]+, "(xp_\w+)"', text):
                called |= {base + "_f32", base + "_f64"}
            called |= set(re.findall(r"\blib\.(xp_\w+)\(", text))
    assert len(called) > 20, called
    assert called <= names, f"called but not declared in {header.HEADER_NAME}: {sorted(called - names)}"


@needs_cc
def test_the_header_declares_every_exported_function(fresh):
    lib = native.library()
    assert lib is not None, native.status()
    names = _header_names()
    assert set(lib.names()) == names  # every declaration resolved, with its signature set
    for name in names:
        assert getattr(lib, name).argtypes == list(header.read(native.CSRC_DIR)[name].argtypes)
    with pytest.raises(AttributeError, match="not declared in xpnet_kernels.h"):
        lib.xp_not_declared
    with pytest.raises(TypeError):  # a wrong call is an exception, not a crash
        lib.xp_relu_fwd_f32(0, 0)
    built = [f for f in os.listdir(fresh) if f.endswith(".so")]
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("no nm here to list the library's exported symbols")
    listed = subprocess.run([nm, "-D", "--defined-only", str(fresh / built[0])], capture_output=True, text=True)
    exported = {line.split()[-1] for line in listed.stdout.splitlines() if line.split()[1:2] == ["T"]}
    assert {e for e in exported if e.startswith("xp_")} == names


@pytest.fixture
def sources(fresh, monkeypatch, tmp_path_factory):
    """A copy of the C sources that a test may edit, built (quickly: -O0) instead of the real ones."""
    if native._compiler() is None:
        pytest.skip("no C compiler on this machine")
    copy = tmp_path_factory.mktemp("csrc") / "csrc"
    shutil.copytree(native.CSRC_DIR, copy)
    monkeypatch.setattr(native, "CSRC_DIR", str(copy))
    real = native._flag_sets
    monkeypatch.setattr(native, "_flag_sets", lambda: [["-O0" if f == "-O3" else f for f in real()[-1]]])
    return copy


def _edit(path, old, new):
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


@pytest.mark.parametrize("how, said", [
    ("a prototype differs from its definition", "conflicting types"),
    ("an exported function is declared nowhere", "missing-prototypes"),
    ("a declared function is defined nowhere", "is declared in xpnet_kernels.h but the library built"),
])
def test_a_header_that_disagrees_with_the_sources_leaves_the_numpy_path(sources, rng, how, said):
    if how == "a prototype differs from its definition":
        _edit(sources / header.HEADER_NAME, "void xp_relu_fwd_f32(const float *x, float *y, ptrdiff_t n);",
              "void xp_relu_fwd_f32(const float *x, float *y, int n);")
    elif how == "an exported function is declared nowhere":
        (sources / "optim.c").write_text((sources / "optim.c").read_text() + "\nvoid xp_extra(int n) { (void)n; }\n")
    else:
        _edit(sources / header.HEADER_NAME, "#endif", "void xp_missing_f32(float *x);\n#endif")
    lib, text, caught = _load_catching()
    assert lib is None and "unavailable" in text and said in text
    assert len(caught) == 1, caught
    assert caught[0].startswith("xpnet: the C sources do not match their declarations in xpnet_kernels.h (")
    assert said in caught[0] and caught[0].endswith("; using the NumPy kernels")
    _check_against_generic(rng)


def test_a_header_the_loader_cannot_read_leaves_the_numpy_path(sources, monkeypatch, rng):
    monkeypatch.setattr(native, "_build", lambda *a: pytest.fail("built from a header it cannot read"))
    _edit(sources / header.HEADER_NAME, "void xp_relu_fwd_f32(const float *x, float *y, ptrdiff_t n);",
          "void xp_relu_fwd_f32(const float *x, float *y, struct count n);")
    lib, text, caught = _load_catching()
    assert lib is None and len(caught) == 1
    assert caught[0].startswith("xpnet: the compiled kernels' header cannot be read: ")
    assert "struct count" in caught[0] and "struct count" in text
    _check_against_generic(rng)


def test_the_cache_key_covers_the_header(sources):
    before = native._source_text()
    _edit(sources / header.HEADER_NAME, "#endif", "/* a change */\n#endif")
    assert native._source_text() != before
