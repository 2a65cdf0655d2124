"""The compiled kernels' own worker threads (csrc/parallel.c, driven from numpy/planar.py and
numpy/direct.py): a few-channel or direct convolution split into 2-5 parts over them gives the one-part results (the forward and
the input gradient bit for bit, the weight and bias gradients as in-order sums of per-part partials),
also with more parts than threads, from two Python threads at once, and in a forked child."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import kernel_cases

from xpnet.backends.numpy import conv as nconv
from xpnet.backends.numpy import native
from xpnet.backends.numpy import runtime as nruntime

pytestmark = pytest.mark.skipif(native.library() is None, reason=f"no compiled kernels: {native.status()}")

# (N, C, H, W, O, kernel, padding, dilation): the first three take the compiled few-channel path
# (planar.py), the last two the direct NHWC loops (direct.py; the forward and dx split over output
# positions, dW over images)
CASES = [
    (7, 3, 12, 11, 5, (3, 3), ((1, 1), (1, 1)), (1, 1)),
    (5, 1, 16, 16, 6, (5, 5), ((2, 2), (2, 2)), (1, 1)),
    (6, 2, 9, 13, 4, (3, 2), ((0, 1), (2, 0)), (2, 1)),
    (6, 20, 7, 6, 40, (3, 3), ((1, 1), (1, 1)), (1, 1)),
    (5, 17, 5, 9, 32, (3, 2), ((0, 2), (1, 0)), (1, 2)),
]


def _inputs(case, seed):
    n, c, h, w, o, k, pad, dil = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype("float32")
    wt = rng.standard_normal((o, c) + k).astype("float32")
    b = rng.standard_normal(o).astype("float32")
    out = (h + sum(pad[0]) - dil[0] * (k[0] - 1), w + sum(pad[1]) - dil[1] * (k[1] - 1))
    g = rng.standard_normal((n, o) + out).astype("float32")
    return x, wt, b, g, pad, dil, out


def _run(case, seed, parts):
    """(y, dx, dw, db) of the compiled convolution with the images cut into ``parts``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(nruntime, "NUM_WORKERS", parts)
        mp.setattr(nruntime, "CONV_PARALLEL_MIN_MACS", 1 if parts > 1 else 1 << 40)
        return _run_as_set(case, seed)


def _run_as_set(case, seed):
    x, wt, b, g, pad, dil, out = _inputs(case, seed)
    fwd = nconv.conv2d_forward(x, wt, b, (1, 1), pad, dil, 1, out)
    dx, dw, db = nconv.conv2d_backward(g, fwd.saved, (True, True, True))
    return fwd.y, dx, dw, db


def _partials(case, seed, parts):
    """Each part's own one-part dw (float32) and db (float64), in part order."""
    x, wt, _, g, pad, dil, out = _inputs(case, seed)
    n = case[0]
    dws, dbs = [], []
    for a, z in [(n * p // parts, n * (p + 1) // parts) for p in range(parts)]:
        fwd = nconv.conv2d_forward(x[a:z], wt, None, (1, 1), pad, dil, 1, out)
        dws.append(nconv.conv2d_backward(g[a:z], fwd.saved, (False, True, False))[1])
        dbs.append(g[a:z].astype(np.float64).sum(axis=(0, 2, 3)))
    return dws, dbs


@pytest.mark.parametrize("parts", [2, 3, 5])
@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}x{c[1]}x{c[2]}x{c[3]}-o{c[4]}-k{c[5]}" for c in CASES])
def test_parts_give_the_one_part_results(case, parts):
    whole = _run(case, 7, 1)
    dws, dbs = _partials(case, 7, parts)
    y, dx, dw, db = _run(case, 7, parts)
    np.testing.assert_array_equal(y, whole[0])  # each image's output is computed alone
    np.testing.assert_array_equal(dx, whole[1])
    expected_dw = dws[0]
    for part in dws[1:]:
        expected_dw = expected_dw + part
    np.testing.assert_array_equal(dw, expected_dw)  # the partials, added in order
    np.testing.assert_allclose(dw, whole[2], rtol=1e-4, atol=1e-4)
    expected_db = dbs[0]
    for part in dbs[1:]:
        expected_db = expected_db + part
    np.testing.assert_allclose(db, expected_db.astype(np.float32), rtol=1e-6, atol=1e-5)


def test_two_python_threads_share_the_pool(monkeypatch):
    """A caller that finds the pool busy runs its parts itself: both get their own exact results."""
    case = CASES[0]
    expected = _run(case, 3, 1)
    results, errors = [], []
    monkeypatch.setattr(nruntime, "NUM_WORKERS", 2)
    monkeypatch.setattr(nruntime, "CONV_PARALLEL_MIN_MACS", 1)

    def work():
        try:
            for _ in range(20):
                results.append(_run_as_set(case, 3))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(results) == 40
    for y, dx, _, _ in results:
        np.testing.assert_array_equal(y, expected[0])
        np.testing.assert_array_equal(dx, expected[1])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_makes_its_own_workers():
    expected = _run(CASES[0], 5, 2)  # the parent's workers exist now
    assert kernel_cases.passes_in_forked_child(
        lambda: np.array_equal(_run(CASES[0], 5, 2)[0], expected[0]))


def test_the_direct_cases_take_the_direct_loops():
    from xpnet.backends.numpy import direct as ndirect
    from xpnet.backends.numpy import planar as nplanar

    for n, c, h, w, o, k, pad, dil in CASES[3:]:
        wt = np.zeros((o, c) + k, dtype=np.float32)
        out = (h + sum(pad[0]) - dil[0] * (k[0] - 1), w + sum(pad[1]) - dil[1] * (k[1] - 1))
        assert not nplanar.on_planes(wt, (1, 1), 1)
        assert ndirect.direct_library(wt, (1, 1), dil, 1, wt.dtype, out) is not None


@pytest.mark.parametrize("c, o, side, expected", [(16, 32, 8, True), (512, 32, 8, True), (64, 64, 16, True),
                                                  (128, 32, 16, False), (16, 128, 8, False), (16, 32, 17, False)])
def test_which_convolutions_run_direct(c, o, side, expected):
    from xpnet.backends.numpy import direct as ndirect

    wt = np.zeros((o, c, 3, 3), dtype=np.float32)
    assert (ndirect.direct_library(wt, (1, 1), (1, 1), 1, wt.dtype, (side, side)) is not None) == expected
    assert ndirect.direct_library(wt.astype(np.float64), (1, 1), (1, 1), 1, np.dtype(np.float64), (8, 8)) is None
    assert ndirect.direct_library(wt[: o // 2 * 2], (1, 1), (1, 1), 2, wt.dtype, (8, 8)) is None
