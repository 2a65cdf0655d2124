"""The compiled kernels' build and load (xpnet/backends/native.py): built once into the cache, reused,
and every way of not having them (disabled, no compiler, a failing build) leaves the NumPy paths."""

from __future__ import annotations

import os

import numpy as np
import pytest

from xpnet.backends import native
from xpnet.backends import numpy_kernels as nk
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
    args = ((1, 1), ((0, 0), (0, 0)), (1, 1), 1)
    yf, sf = nk.conv2d_forward(x, w, b, *args)
    yg, sg = conv_mod.conv2d_forward_generic(x, w, b, *args)
    np.testing.assert_allclose(yf, yg, rtol=2e-5, atol=2e-5)
    g = rng.standard_normal(yg.shape).astype("float32")
    for a, c in zip(nk.conv2d_backward(g, sf, (True, True, True)),
                    conv_mod.conv2d_backward_generic(g, sg, (True, True, True))):
        np.testing.assert_allclose(a, c, rtol=2e-5, atol=2e-5)


def test_built_once_into_the_cache_then_reused(fresh, monkeypatch, rng):
    if native._compiler() is None:
        pytest.skip("no C compiler on this machine")
    lib = native.library()
    assert lib is not None, native.status()
    built = [f for f in os.listdir(fresh) if f.endswith(".so")]
    assert len(built) == 1 and "loaded" in native.status()
    assert not [f for f in os.listdir(fresh) if not f.endswith(".so")]  # no temporary left behind
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


def test_enabled_again_after_a_disabled_call(fresh, monkeypatch):
    # turning it off for one call must not switch it off for the rest of the process
    if native._compiler() is None:
        pytest.skip("no C compiler on this machine")
    monkeypatch.setenv("XPNET_NATIVE", "0")
    assert native.library() is None
    monkeypatch.setenv("XPNET_NATIVE", "1")
    assert native.library() is not None


def test_an_unwritable_cache_directory_leaves_the_numpy_path(fresh, monkeypatch, rng, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("XPNET_CACHE_DIR", str(blocker / "cache"))
    native.reset()
    assert native.library() is None
    assert "cannot write" in native.status()
    _check_against_generic(rng)
