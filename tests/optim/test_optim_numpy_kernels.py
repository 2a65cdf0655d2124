"""The NumPy backend's SGD steps (compiled: xp_sgd per parameter, xp_sgd_group for a whole parameter
group in one call) equal the generic Array-API update bit for bit and write into the parameters' own
arrays; where they cannot run (no compiled library, a dtype or layout the C code does not cover, a
group mixing dtypes) they decline, changing nothing, and the next path runs (group -> per parameter
-> the optimizer's generic rule). NumPy-only by nature: these are the numpy backend's kernels."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet
import xpnet.optim as optim
from xpnet.backends import kernels
from xpnet.backends.numpy import native
from xpnet.backends.numpy import optim as nopt
from xpnet.backends.numpy import runtime as nruntime
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


@pytest.mark.parametrize("impl", ["group", "group-split", "per-parameter", "per-parameter-split", "no-library"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", SGD_CASES, ids=[case[0] for case in SGD_CASES])
def test_numpy_sgd_step_equals_generic_bit_for_bit(case, dtype, impl, monkeypatch):
    # group: xp_sgd_group, one call per group and step (SGD.group_kernel_name); per-parameter: xp_sgd
    # (csrc/optim.c) once per parameter; no-library: both decline and the generic rule runs
    if impl == "no-library":
        monkeypatch.setitem(native._state, "enabled", False)  # XPNET_NATIVE=0
    else:
        _compiled_or_skip()
        if impl.endswith("-split"):  # a parameter of 8 elements split over the workers
            monkeypatch.setattr(nruntime, "ELEMENTWISE_PARALLEL_MIN", 2)
        if impl.startswith("per-parameter"):
            monkeypatch.setattr(optim.SGD, "group_kernel_name", None)
    assert xpnet.get_backend("numpy").kernel(kernels.SGD_STEP) is nopt.sgd_step
    assert xpnet.get_backend("numpy").kernel(kernels.SGD_STEP_GROUP) is nopt.sgd_step_group
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


def _counting(monkeypatch, name):
    """Wrap the numpy backend's kernel ``name`` so that its calls are counted."""
    calls = []
    inner = kernels.lookup_kernel("numpy", name)

    def counted(*args):
        calls.append(args)
        return inner(*args)

    monkeypatch.setitem(kernels._REGISTRY, ("numpy", name), counted)
    return calls


def _mlp_params(dtype, seed=3):
    gen = np.random.default_rng(seed)
    shapes = [(16, 8), (16,), (16, 16), (16,), (4, 16), (4,)]
    return [xpnet.Tensor(gen.standard_normal(s).astype(dtype), requires_grad=True) for s in shapes]


def _grads(params, step, dtype):
    gen = np.random.default_rng(100 + step)
    return [gen.standard_normal(p.data.shape).astype(dtype) for p in params]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_group_kernel_runs_once_per_group_and_step(dtype, monkeypatch):
    """Two groups with their own options over six parameters (an MLP's): one xp_sgd_group call per
    group and step, no per-parameter call, and the generic rule's values bit for bit."""
    _compiled_or_skip()
    group_calls = _counting(monkeypatch, kernels.SGD_STEP_GROUP)
    param_calls = _counting(monkeypatch, kernels.SGD_STEP)
    out = {}
    for fused in (None, False):
        params = _mlp_params(dtype)
        opt = optim.SGD([{"params": params[:4], "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
                         {"params": params[4:], "momentum": 0.5, "dampening": 0.25, "maximize": True}], lr=0.05,
                        fused=fused)
        arrays = [p.data for p in params]
        for step in range(4):
            for p, g in zip(params, _grads(params, step, dtype)):
                p.grad = xpnet.Tensor(g)
            opt.step()
        assert all(p.data is a for p, a in zip(params, arrays))
        out[fused] = [np.array(p.data) for p in params] + [np.array(opt.state[p]["momentum_buffer"]) for p in params]
    assert len(group_calls) == 2 * 4 and not param_calls
    for fast, generic in zip(out[None], out[False]):
        assert fast.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(fast, generic)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", SGD_CASES, ids=[case[0] for case in SGD_CASES])
def test_the_group_kernel_itself_equals_the_per_parameter_kernel_and_the_generic_rule(case, dtype, monkeypatch):
    """sgd_step_group(ws, gs, states, group, scalars) against sgd_step and SGD.update, step by step, on
    tensors of several shapes (an empty one too); a parameter that joins at step 3 gets a fresh buffer
    (its first step undamped) beside older ones; one tensor long enough to be split over the workers."""
    _compiled_or_skip()
    monkeypatch.setattr(nruntime, "ELEMENTWISE_PARALLEL_MIN", 32)  # the (10, 7) tensor is split in two
    group = optim.SGD([xpnet.Tensor(W0.astype(dtype), requires_grad=True)], **case[2]).param_groups[0]
    scalars = _scalars(group)
    gen = np.random.default_rng(11)
    shapes = [(4, 2), (3,), (0, 5), (10, 7), (1,)]
    start = [gen.standard_normal(s).astype(dtype) for s in shapes]
    group_ws, one_ws, generic_ws = ([w.copy() for w in start] for _ in range(3))
    group_states, one_states, generic_states = ([{} for _ in shapes] for _ in range(3))
    for step in range(5):
        live = range(len(shapes)) if step >= 2 else range(len(shapes) - 1)  # the last one joins later
        gs = [gen.standard_normal(shapes[i]).astype(dtype) for i in live]
        before = [g.copy() for g in gs]
        ws = [group_ws[i] for i in live]
        assert nopt.sgd_step_group(ws, gs, [group_states[i] for i in live], group, scalars) is ws
        for g, i in zip(gs, live):
            assert nopt.sgd_step(one_ws[i], g, one_states[i], group, scalars) is one_ws[i]
            assert optim.SGD.update(generic_ws[i], g.copy(), generic_states[i], group, scalars) is generic_ws[i]
        for g, g0 in zip(gs, before):
            np.testing.assert_array_equal(g, g0)
        for i in live:
            for other, states in ((one_ws, one_states), (generic_ws, generic_states)):
                np.testing.assert_array_equal(group_ws[i], other[i], err_msg=f"tensor {i}, step {step}")
                assert group_states[i].keys() == states[i].keys()
                for key in states[i]:
                    assert group_states[i][key].dtype == np.dtype(dtype)
                    np.testing.assert_array_equal(group_states[i][key], states[i][key], err_msg=key)
    assert np.abs(group_ws[3] - start[3]).max() > 1e-3


@pytest.mark.parametrize("why", ["no library", "mixed dtypes", "float16", "read-only", "strided", "gradient dtype",
                                 "gradient shape", "buffer dtype", "listed twice"])
def test_the_group_kernel_declines_what_it_cannot_run_and_changes_nothing(why, monkeypatch):
    group = dict(lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False)
    ws = [W0.copy(), C0.copy(), W0[:, 0].copy()]
    gs = [np.ones_like(w) for w in ws]
    states = [{}, {}, {}]
    if why == "no library":
        monkeypatch.setitem(native._state, "enabled", False)  # XPNET_NATIVE=0
    else:
        _compiled_or_skip()
    if why == "mixed dtypes":
        ws[1], gs[1] = ws[1].astype(np.float32), gs[1].astype(np.float32)
    elif why == "float16":
        ws, gs = [w.astype(np.float16) for w in ws], [g.astype(np.float16) for g in gs]
    elif why == "read-only":
        ws[2].flags.writeable = False
    elif why == "strided":
        ws[0], gs[0] = np.asfortranarray(ws[0]), np.asfortranarray(gs[0])
    elif why == "gradient dtype":
        gs[1] = gs[1].astype(np.float32)
    elif why == "gradient shape":
        gs[0] = np.ones((2, 4))
    elif why == "buffer dtype":
        states[2]["momentum_buffer"] = np.zeros(ws[2].shape, dtype=np.float32)
    elif why == "listed twice":
        ws[2], gs[2] = ws[0], gs[0]
    before = [w.copy() for w in ws], [{k: v.copy() for k, v in st.items()} for st in states]
    assert nopt.sgd_step_group(ws, gs, states, group, _scalars(group)) is None
    for w, w0 in zip(ws, before[0]):
        np.testing.assert_array_equal(w, w0)
    assert [st.keys() for st in states] == [st.keys() for st in before[1]]  # no momentum buffer was made


def test_a_group_the_group_kernel_declines_goes_through_the_per_parameter_path():
    """Mixed dtypes and a parameter listed twice: the per-parameter path runs (kernel, or the generic
    rule), with the generic rule's values, the duplicate updated twice, and the errors of its checks."""
    _compiled_or_skip()
    out = {}
    for fused in (None, False):
        params = _mlp_params(np.float64)
        params[1].data = params[1].data.astype(np.float32)
        with pytest.warns(UserWarning, match="appears twice"):
            opt = optim.SGD(params + [params[0]], lr=0.05, momentum=0.9, dampening=0.1, fused=fused)
        for step in range(3):
            for p, g in zip(params, _grads(params, step, np.float64)):
                p.grad = xpnet.Tensor(g.astype(p.data.dtype))
            opt.step()
        out[fused] = [np.array(p.data) for p in params]
    for fast, generic in zip(out[None], out[False]):
        np.testing.assert_array_equal(fast, generic)
    params = _mlp_params(np.float64)
    opt = optim.SGD(params, lr=0.05)
    for p in params:
        p.grad = xpnet.Tensor(np.ones(p.data.shape))
    params[2].grad = xpnet.Tensor(np.ones((3, 3)))
    with pytest.raises(ValueError, match="parameter 2 in group 0 has shape"):
        opt.step()


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
        monkeypatch.setitem(native._state, "enabled", False)  # XPNET_NATIVE=0
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
