"""Optimizers: 50-step trajectories against torch.optim and against the update rules written out
here in NumPy float64; options, groups, closures, zero_grad, validation and the fast-path hook."""

from __future__ import annotations

import math

import numpy as np
import pytest

import xpnet
import xpnet.optim as optim
from xpnet.backends import kernels as backend_kernels
from optim_cases import (A, B, C0, CASES, DEFAULTS, STEPS, TORCH_CASES, W0, reference_step, run_torch, run_xpnet,
                         set_grads, sign_of, xpnet_params)

IDS = [case[0] for case in CASES]
TORCH_IDS = [case[0] for case in TORCH_CASES]

# defaults as torch.optim (plus our bias_correction) documents them, independent of xpnet's code
def run_reference(name, options, steps=STEPS):
    o = {**DEFAULTS[name], **options}
    sign = sign_of(options)
    w, c = W0.copy(), C0.copy()
    sw, sc = {}, {}
    out = []
    for t in range(1, steps + 1):
        r = A @ w + c - B
        gw, gc = sign * A.T @ r / r.size, sign * r.sum(axis=0) / r.size
        w, c = reference_step(name, o, w, gw, sw, t), reference_step(name, o, c, gc, sc, t)
        out.append((w, c))
    return out


def assert_trajectories_close(ours, theirs, rtol, atol):
    assert len(ours) == len(theirs)
    for t, ((w1, c1), (w2, c2)) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(w1, w2, rtol=rtol, atol=atol, err_msg=f"W after step {t + 1}")
        np.testing.assert_allclose(c1, c2, rtol=rtol, atol=atol, err_msg=f"c after step {t + 1}")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_trajectory_matches_numpy_rule(backend, case):
    _, name, options = case
    ours = run_xpnet(name, options)
    assert_trajectories_close(ours, run_reference(name, options), rtol=1e-10, atol=1e-13)
    # the problem must actually move the parameters, or the comparison proves nothing
    assert np.abs(ours[-1][0] - W0).max() > 1e-2


@pytest.mark.parametrize("case", TORCH_CASES, ids=TORCH_IDS)
def test_trajectory_matches_torch(backend, case):
    pytest.importorskip("torch")
    _, name, options = case
    assert_trajectories_close(run_xpnet(name, options), run_torch(name, options), rtol=1e-7, atol=1e-12)


def test_bias_correction_changes_early_steps(backend):
    # without correction the first Adam steps are ~(1-β1)/√(1-β2) ≈ 3x smaller than lr
    with_bc = run_xpnet("Adam", dict(lr=0.05), steps=1)[0][0]
    without = run_xpnet("Adam", dict(lr=0.05, bias_correction=False), steps=1)[0][0]
    moved_with, moved_without = np.abs(with_bc - W0), np.abs(without - W0)
    np.testing.assert_allclose(moved_with, 0.05, rtol=1e-5)
    np.testing.assert_allclose(moved_without, 0.05 * 0.1 / math.sqrt(0.001), rtol=1e-4)


def test_defaults_match_torch(backend):
    w = xpnet.tensor(W0.copy(), requires_grad=True)
    for name, expected in DEFAULTS.items():
        opt = getattr(optim, name)([w])
        for key, value in expected.items():
            assert opt.param_groups[0][key] == value, (name, key)
    assert optim.AdamW([w]).param_groups[0]["decoupled_weight_decay"] is True
    assert optim.Adam([w]).param_groups[0]["decoupled_weight_decay"] is False


def test_param_groups_with_own_options_match_torch(backend):
    torch = pytest.importorskip("torch")
    w, c = xpnet_params()
    opt = optim.SGD([{"params": [w]}, {"params": c, "lr": 0.02, "momentum": 0.0}], lr=0.1, momentum=0.9)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.02]
    assert opt.param_groups[1]["momentum"] == 0.0 and opt.param_groups[0]["momentum"] == 0.9
    tw, tc = torch.tensor(W0, requires_grad=True), torch.tensor(C0, requires_grad=True)
    topt = torch.optim.SGD([{"params": [tw]}, {"params": tc, "lr": 0.02, "momentum": 0.0}], lr=0.1, momentum=0.9)
    for _ in range(20):
        set_grads(w, c, 1.0)
        opt.step()
        topt.zero_grad()
        (0.5 * ((torch.from_numpy(A) @ tw + tc - torch.from_numpy(B)) ** 2).mean()).backward()
        topt.step()
    np.testing.assert_allclose(xpnet.to_numpy(w), tw.detach().numpy(), rtol=1e-7)
    np.testing.assert_allclose(xpnet.to_numpy(c), tc.detach().numpy(), rtol=1e-7)
    assert c not in opt.state  # no momentum in group 1: SGD keeps no state for it


def test_live_lr_is_read_each_step(backend):
    w = xpnet.tensor(np.array([1.0, -2.0]), requires_grad=True)
    opt = optim.SGD([w], lr=0.5)
    w.grad = xpnet.tensor(np.array([1.0, 1.0]))
    opt.step()
    opt.param_groups[0]["lr"] = 0.25
    opt.step()
    np.testing.assert_allclose(xpnet.to_numpy(w), [1.0 - 0.75, -2.0 - 0.75])


def test_parameter_without_grad_is_skipped_and_gets_no_state(backend):
    w, c = xpnet_params()
    opt = optim.Adam([w, c], lr=0.1)
    w.grad = xpnet.tensor(np.ones((4, 2)))
    before = xpnet.to_numpy(c)
    opt.step()
    np.testing.assert_array_equal(xpnet.to_numpy(c), before)
    assert c not in opt.state and opt.state[w]["step"] == 1
    assert not np.array_equal(xpnet.to_numpy(w), W0)


def test_step_writes_into_data_and_leaves_grad_alone(backend):
    w, c = xpnet_params()
    opt = optim.Adam([w, c], lr=0.1, weight_decay=0.1, maximize=True)
    set_grads(w, c, 1.0)
    old_data, grad = w.data, w.grad.data
    grad_before = xpnet.to_numpy(grad)
    opt.step()
    assert w.data is old_data  # written in place, as PyTorch's parameters
    assert np.abs(xpnet.to_numpy(old_data) - W0).max() > 1e-3
    np.testing.assert_array_equal(xpnet.to_numpy(w.grad.data), grad_before)


def test_step_closure_returns_its_loss_with_grad_enabled(backend):
    w = xpnet.tensor(np.array([3.0]), requires_grad=True)
    opt = optim.SGD([w], lr=0.1)
    seen = []

    def closure():
        seen.append(xpnet.is_grad_enabled())
        w.grad = xpnet.Tensor(w.data * 2.0)
        return float(xpnet.to_numpy(w.data)[0]) ** 2

    with xpnet.no_grad():
        loss = opt.step(closure)
    assert loss == 9.0 and seen == [True]
    np.testing.assert_allclose(xpnet.to_numpy(w), [3.0 - 0.1 * 6.0])


def test_zero_grad(backend):
    w, c = xpnet_params()
    opt = optim.SGD([w, c], lr=0.1)
    set_grads(w, c, 1.0)
    grad_tensor = w.grad
    opt.zero_grad(set_to_none=False)
    assert w.grad is grad_tensor
    np.testing.assert_array_equal(xpnet.to_numpy(w.grad), np.zeros((4, 2)))
    opt.zero_grad()
    assert w.grad is None and c.grad is None


def test_add_param_group(backend):
    w, c = xpnet_params()
    opt = optim.Adam([w], lr=0.1)
    opt.add_param_group({"params": c, "lr": 0.01})
    assert len(opt.param_groups) == 2 and opt.param_groups[1]["betas"] == (0.9, 0.999)
    assert len(opt.param_groups[1]["params"]) == 1 and opt.param_groups[1]["params"][0] is c
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [w]})


@pytest.mark.parametrize("make, message", [
    (lambda p: optim.SGD(p, lr=-1.0), "invalid learning rate"),
    (lambda p: optim.SGD(p, lr=0.1, nesterov=True), "Nesterov"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "Nesterov"),
    (lambda p: optim.Adam(p, betas=(0.9, 1.0)), "betas"),
    (lambda p: optim.Adam(p, eps=-1.0), "eps"),
    (lambda p: optim.AdamW(p, weight_decay=-0.1), "weight_decay"),
    (lambda p: optim.RMSprop(p, alpha=-0.5), "alpha"),
    (lambda p: optim.Adagrad(p, lr_decay=-0.5), "lr_decay"),
    (lambda p: optim.SGD([], lr=0.1), "empty parameter list"),
])
def test_invalid_options_raise(backend, make, message):
    w = xpnet.tensor(W0.copy(), requires_grad=True)
    with pytest.raises(ValueError, match=message):
        make([w])


def test_params_must_be_an_iterable_of_parameters(backend):
    w = xpnet.tensor(W0.copy(), requires_grad=True)
    with pytest.raises(TypeError, match="iterable"):
        optim.SGD(w, lr=0.1)
    with pytest.raises(TypeError, match="ordered"):
        optim.SGD({w}, lr=0.1)
    with pytest.raises(TypeError, match="parameter 1 of group 0"):
        optim.SGD([w, 3.0], lr=0.1)


def test_non_leaf_tensor_is_rejected(backend):
    class Double(xpnet.Function):
        """y = 2 x; dL/dx = 2 dL/dy."""

        @staticmethod
        def forward(ctx, x):
            return x * 2.0

        @staticmethod
        def backward(ctx, g):
            return g * 2.0

    w = xpnet.tensor(W0.copy(), requires_grad=True)
    with pytest.raises(ValueError, match="not a leaf"):
        optim.SGD([Double.apply(w)], lr=0.1)


def _without_the_group_kernel(backend, monkeypatch):
    """The per-parameter hook alone: the backend's SGD group kernel (numpy's) would take the step first."""
    monkeypatch.delitem(backend_kernels._REGISTRY, (backend.name, backend_kernels.SGD_STEP_GROUP), raising=False)


def test_a_group_kernel_takes_the_whole_group_unless_fused_false(backend, monkeypatch):
    calls = []

    def fake_group_step(ws, gs, states, group, scalars):
        calls.append((len(ws), scalars.lr))
        for w, g in zip(ws, gs):
            w -= 2 * scalars.lr * g
        return ws

    def no_step(*args):
        raise AssertionError("the per-parameter kernel ran beside the group kernel")

    monkeypatch.setitem(backend_kernels._REGISTRY, (backend.name, backend_kernels.SGD_STEP_GROUP), fake_group_step)
    monkeypatch.setitem(backend_kernels._REGISTRY, (backend.name, backend_kernels.SGD_STEP), no_step)
    w, c, idle = (xpnet.tensor(np.array([1.0]), requires_grad=True) for _ in range(3))
    w.grad, c.grad = xpnet.tensor(np.array([1.0])), xpnet.tensor(np.array([2.0]))
    optim.SGD([w, idle, c], lr=0.25).step()  # idle has no gradient: not passed
    assert calls == [(2, 0.25)]
    np.testing.assert_allclose(xpnet.to_numpy(w), [0.5])
    np.testing.assert_allclose(xpnet.to_numpy(c), [0.0])
    monkeypatch.delitem(backend_kernels._REGISTRY, (backend.name, backend_kernels.SGD_STEP))
    optim.SGD([w], lr=0.25, fused=False).step()
    assert calls == [(2, 0.25)]
    np.testing.assert_allclose(xpnet.to_numpy(w), [0.25])


def test_a_group_kernel_that_declines_leaves_the_group_to_the_per_parameter_path(backend, monkeypatch):
    calls = []

    def declining_group_step(ws, gs, states, group, scalars):
        calls.append(len(ws))
        return None

    def copying_group_step(ws, gs, states, group, scalars):
        return [w - scalars.lr * g for w, g in zip(ws, gs)]

    monkeypatch.setitem(backend_kernels._REGISTRY, (backend.name, backend_kernels.SGD_STEP_GROUP),
                        declining_group_step)
    w = xpnet.tensor(np.array([1.0]), requires_grad=True)
    w.grad = xpnet.tensor(np.array([1.0]))
    data = w.data
    opt = optim.SGD([w], lr=0.25, momentum=0.5)
    opt.step()
    assert calls == [1] and w.data is data
    np.testing.assert_allclose(xpnet.to_numpy(w), [0.75])
    np.testing.assert_allclose(xpnet.to_numpy(opt.state[w]["momentum_buffer"]), [1.0])
    monkeypatch.setitem(backend_kernels._REGISTRY, (backend.name, backend_kernels.SGD_STEP_GROUP), copying_group_step)
    with pytest.raises(RuntimeError, match="sgd_step_group"):
        opt.step()


def test_backend_fast_path_replaces_the_update_unless_fused_false(backend, monkeypatch):
    calls = []

    def fake_sgd_step(w, g, state, group, scalars):
        calls.append(scalars.lr)
        w -= 2 * scalars.lr * g
        return w

    monkeypatch.setitem(backend_kernels._REGISTRY, (backend.name, backend_kernels.SGD_STEP), fake_sgd_step)
    _without_the_group_kernel(backend, monkeypatch)
    w = xpnet.tensor(np.array([1.0]), requires_grad=True)
    w.grad = xpnet.tensor(np.array([1.0]))
    optim.SGD([w], lr=0.25).step()
    assert calls == [0.25]
    np.testing.assert_allclose(xpnet.to_numpy(w), [0.5])
    optim.SGD([w], lr=0.25, fused=False).step()
    assert calls == [0.25]
    np.testing.assert_allclose(xpnet.to_numpy(w), [0.25])


def test_a_kernel_that_declines_leaves_the_step_to_the_generic_update(backend, monkeypatch):
    calls = []

    def declining_sgd_step(w, g, state, group, scalars):
        calls.append(scalars)
        return None

    monkeypatch.setitem(backend_kernels._REGISTRY, (backend.name, backend_kernels.SGD_STEP), declining_sgd_step)
    _without_the_group_kernel(backend, monkeypatch)
    w = xpnet.tensor(np.array([1.0]), requires_grad=True)
    w.grad = xpnet.tensor(np.array([1.0]))
    data = w.data
    optim.SGD([w], lr=0.25).step()
    assert len(calls) == 1 and calls[0].lr == 0.25
    assert w.data is data
    np.testing.assert_allclose(xpnet.to_numpy(w), [0.75])
    with pytest.raises(RuntimeError, match="declined"):
        optim.SGD([w], lr=0.25, fused=True).step()
    np.testing.assert_allclose(xpnet.to_numpy(w), [0.75])


def test_a_kernel_that_returns_a_new_array_breaks_the_rule(backend, monkeypatch):
    def copying_sgd_step(w, g, state, group, scalars):
        return w - scalars.lr * g

    monkeypatch.setitem(backend_kernels._REGISTRY, (backend.name, backend_kernels.SGD_STEP), copying_sgd_step)
    _without_the_group_kernel(backend, monkeypatch)
    w = xpnet.tensor(np.array([1.0]), requires_grad=True)
    w.grad = xpnet.tensor(np.array([1.0]))
    with pytest.raises(RuntimeError, match="returned a new array"):
        optim.SGD([w], lr=0.25).step()


def test_fused_true_without_a_kernel_raises(backend):
    w = xpnet.tensor(np.array([1.0]), requires_grad=True)
    w.grad = xpnet.tensor(np.array([1.0]))
    opt = optim.Adam([w], fused=True)
    if backend.kernel(backend_kernels.ADAM_STEP) is not None:  # CuPy has the kernel: fused=True uses it
        opt.step()
        # Adam's first step: m̂ = g, v̂ = g², so w - lr g / (|g| + eps)
        np.testing.assert_allclose(xpnet.to_numpy(w), [1.0 - 0.001 / (1.0 + 1e-8)], rtol=1e-14)
        return
    with pytest.raises(RuntimeError, match="adam_step"):
        opt.step()


def test_float32_parameters_stay_float32(backend):
    w = xpnet.tensor(np.array([1.0, 2.0], dtype=np.float32), requires_grad=True)
    for cls, kwargs in ((optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1)),
                        (optim.Adagrad, dict(weight_decay=0.1)),
                        (optim.RMSprop, dict(momentum=0.9, centered=True, weight_decay=0.1)),
                        (optim.Adam, dict(amsgrad=True, weight_decay=0.1)),
                        (optim.AdamW, dict(amsgrad=True))):
        opt = cls([w], **kwargs)
        for _ in range(2):
            w.grad = xpnet.tensor(np.array([0.5, -0.5], dtype=np.float32))
            opt.step()
        assert xpnet.to_numpy(w).dtype == np.float32, cls.__name__
        for key, value in opt.state[w].items():
            if key != "step":
                assert xpnet.to_numpy(value).dtype == np.float32, (cls.__name__, key)


def test_repr_lists_groups(backend):
    w = xpnet.tensor(W0.copy(), requires_grad=True)
    text = repr(optim.SGD([w], lr=0.1, momentum=0.9))
    assert text.startswith("SGD (") and "Parameter Group 0" in text and "momentum: 0.9" in text
