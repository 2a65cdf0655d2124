"""The NumPy in-place SGD step equals the generic Array-API update bit for bit, and updates the
parameter's own array (NumPy-only by nature: it is the numpy backend's kernel)."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet
import xpnet.optim as optim
from xpnet.backends import kernels, native
from xpnet.backends import numpy_kernels as nk
from optim_cases import A, B, C0, CASES, W0, sign_of

SGD_CASES = [case for case in CASES if case[1] == "SGD"]


def trajectory(options, dtype, fused, steps=25):
    with xpnet.use_backend("numpy"):
        w = xpnet.Tensor(W0.astype(dtype), requires_grad=True)
        c = xpnet.Tensor(C0.astype(dtype), requires_grad=True)
        opt = optim.SGD([w, c], fused=fused, **options)
        scale = sign_of(options) / (A.shape[0] * B.shape[1])
        a, b = A.astype(dtype), B.astype(dtype)
        out, arrays = [], (w.data, c.data)
        for _ in range(steps):
            r = a @ w.data + c.data - b
            w.grad = xpnet.Tensor((a.T @ r) * dtype(scale))
            c.grad = xpnet.Tensor(r.sum(axis=0) * dtype(scale))
            opt.step()
            out.append(np.concatenate([w.data.ravel(), c.data.ravel()]))
        state = {k: np.array(v) for k, v in opt.state.get(w, {}).items() if k != "step"}
        return np.stack(out), state, (w.data, c.data), arrays


@pytest.mark.parametrize("impl", ["compiled", "numpy", "numpy-blocks", "compiled-split"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", SGD_CASES, ids=[case[0] for case in SGD_CASES])
def test_numpy_sgd_step_equals_generic_bit_for_bit(case, dtype, impl, monkeypatch):
    # compiled: xp_sgd (csrc/elementwise.c); numpy: NumPy operations on scratch blocks
    if impl.startswith("compiled"):
        if native.library() is None:
            pytest.skip(f"compiled kernels: {native.status()}")
        if impl == "compiled-split":  # split over the workers
            monkeypatch.setattr(nk, "SGD_PARALLEL_MIN", 2)
    else:
        monkeypatch.setenv("XPNET_NATIVE", "0")
        if impl == "numpy-blocks":  # parameters of 8 and 2 elements in blocks of 3: ragged last blocks
            monkeypatch.setattr(nk, "SGD_BLOCK", 3)
    assert xpnet.get_backend("numpy").kernel(kernels.SGD_STEP) is not None
    options = case[2]
    fast, fast_state, after, before = trajectory(options, dtype, fused=None)
    generic, generic_state, _, _ = trajectory(options, dtype, fused=False)
    assert fast.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(fast, generic)
    assert fast_state.keys() == generic_state.keys()
    for key in fast_state:
        np.testing.assert_array_equal(fast_state[key], generic_state[key], err_msg=key)
    # the fast path wrote into the parameters' own arrays; the parameters did move
    assert after[0] is before[0] and after[1] is before[1]
    assert np.abs(fast[-1] - fast[0]).max() > 1e-3


def test_numpy_sgd_step_read_only_parameter_gets_a_new_array():
    w0 = np.array([1.0, 2.0])
    w0.flags.writeable = False
    w = xpnet.Tensor(w0, requires_grad=True)
    w.grad = xpnet.Tensor(np.array([1.0, -1.0]))
    optim.SGD([w], lr=0.5, momentum=0.9).step()
    np.testing.assert_array_equal(w.data, [0.5, 2.5])
    np.testing.assert_array_equal(w0, [1.0, 2.0])


def test_numpy_sgd_step_strided_parameter_matches_generic():
    """A non-contiguous parameter (a transposed array) takes the unblocked path, same values."""
    out = []
    for fused in (None, False):
        w = xpnet.Tensor(np.asfortranarray(W0.copy()), requires_grad=True)
        opt = optim.SGD([w], lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01, fused=fused)
        for k in range(3):
            w.grad = xpnet.Tensor(np.asfortranarray(W0 * (k + 1)))
            opt.step()
        out.append(np.array(w.data))
    np.testing.assert_array_equal(out[0], out[1])
