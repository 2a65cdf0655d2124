"""The NumPy backend's SGD step (xp_sgd, compiled) equals the generic Array-API update bit for bit and
writes into the parameter's own array; where it cannot run (no compiled library, a dtype or layout
the C code does not cover) it declines, changing nothing, and the optimizer's generic rule runs.
NumPy-only by nature: it is the numpy backend's kernel."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet
import xpnet.optim as optim
from xpnet.backends import kernels
from xpnet.backends.numpy import native
from xpnet.backends.numpy import optim as nopt
from optim_cases import A, B, C0, CASES, W0, sign_of

SGD_CASES = [case for case in CASES if case[1] == "SGD"]


def _scalars(group):
    """The scalars SGD computes for one step (SGD.step_scalars), as the kernel receives them."""
    return optim.SGD.step_scalars({}, group)


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


def _compiled_or_skip():
    if native.library() is None:
        pytest.skip(f"compiled kernels: {native.status()}")


@pytest.mark.parametrize("impl", ["compiled", "compiled-split", "no-library"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", SGD_CASES, ids=[case[0] for case in SGD_CASES])
def test_numpy_sgd_step_equals_generic_bit_for_bit(case, dtype, impl, monkeypatch):
    # compiled: xp_sgd (csrc/optim.c); no-library: the kernel declines and the generic rule runs
    if impl.startswith("compiled"):
        _compiled_or_skip()
        if impl == "compiled-split":  # split over the workers
            monkeypatch.setattr(nopt, "SGD_PARALLEL_MIN", 2)
    else:
        monkeypatch.setenv("XPNET_NATIVE", "0")
    assert xpnet.get_backend("numpy").kernel(kernels.SGD_STEP) is nopt.sgd_step
    options = case[2]
    fast, fast_state, after, before = trajectory(options, dtype, fused=None)
    generic, generic_state, _, _ = trajectory(options, dtype, fused=False)
    assert fast.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(fast, generic)
    assert fast_state.keys() == generic_state.keys()
    for key in fast_state:
        np.testing.assert_array_equal(fast_state[key], generic_state[key], err_msg=key)
    # the update wrote into the parameters' own arrays; the parameters did move
    assert after[0] is before[0] and after[1] is before[1]
    assert np.abs(fast[-1] - fast[0]).max() > 1e-3


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", SGD_CASES, ids=[case[0] for case in SGD_CASES])
def test_the_kernel_itself_updates_w_in_place_as_the_generic_rule_does(case, dtype):
    """sgd_step(w, g, state, group, scalars) against SGD.update with the same scalars, step by step:
    the same values in w and the state, w returned, g untouched."""
    _compiled_or_skip()
    group = optim.SGD([xpnet.Tensor(W0.astype(dtype), requires_grad=True)], **case[2]).param_groups[0]
    scalars = _scalars(group)
    gen = np.random.default_rng(11)
    w_fast, w_generic = W0.astype(dtype), W0.astype(dtype)
    state_fast, state_generic = {}, {}
    for _ in range(5):
        g = gen.standard_normal(W0.shape).astype(dtype)
        g_before = g.copy()
        out = nopt.sgd_step(w_fast, g, state_fast, group, scalars)
        assert out is w_fast
        assert optim.SGD.update(w_generic, g.copy(), state_generic, group, scalars) is w_generic
        np.testing.assert_array_equal(g, g_before)
        np.testing.assert_array_equal(w_fast, w_generic)
        assert state_fast.keys() == state_generic.keys()
        for key in state_fast:
            np.testing.assert_array_equal(state_fast[key], state_generic[key], err_msg=key)


@pytest.mark.parametrize("why", ["no library", "float16", "read-only", "strided", "gradient dtype",
                                 "buffer dtype"])
def test_the_kernel_declines_what_it_cannot_run_and_changes_nothing(why, monkeypatch):
    group = dict(lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False)
    w, g, state = W0.copy(), np.ones_like(W0), {}
    if why == "no library":
        monkeypatch.setenv("XPNET_NATIVE", "0")
    elif why == "float16":
        w, g = w.astype(np.float16), g.astype(np.float16)
    elif why == "read-only":
        w.flags.writeable = False
    elif why == "strided":
        w, g = np.asfortranarray(w), np.asfortranarray(g)
    elif why == "gradient dtype":
        g = g.astype(np.float32)
    else:
        _compiled_or_skip()
        state["momentum_buffer"] = np.zeros(W0.shape, dtype=np.float32)
    before = (w.copy(), {k: v.copy() for k, v in state.items()})
    assert nopt.sgd_step(w, g, state, group, _scalars(group)) is None
    np.testing.assert_array_equal(w, before[0])
    assert state.keys() == before[1].keys()  # in particular no momentum buffer was made


def test_numpy_sgd_step_strided_parameter_matches_generic():
    """A non-contiguous parameter (a transposed array): the kernel declines, the generic rule runs."""
    out = []
    for fused in (None, False):
        w = xpnet.Tensor(np.asfortranarray(W0.copy()), requires_grad=True)
        opt = optim.SGD([w], lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01, fused=fused)
        for k in range(3):
            w.grad = xpnet.Tensor(np.asfortranarray(W0 * (k + 1)))
            opt.step()
        out.append(np.array(w.data))
    np.testing.assert_array_equal(out[0], out[1])
