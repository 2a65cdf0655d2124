"""Optimizer state: state_dict layout, save/load mid-run, mismatch errors that change nothing,
and moving the state with xpnet.to_device (array_api_strict's device1 stands in for a GPU)."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet
import xpnet.optim as optim
from optim_cases import CASES, C0, W0, run_xpnet, set_grads, xpnet_params

IDS = [case[0] for case in CASES]


def snapshot(opt):
    """Host copies of everything an optimizer holds, to prove a failed load changed nothing."""
    state = {id(p): {k: (xpnet.to_numpy(v) if k != "step" else v) for k, v in s.items()}
             for p, s in opt.state.items()}
    groups = [{k: (v if k != "params" else [id(p) for p in v]) for k, v in g.items()} for g in opt.param_groups]
    return state, groups


def assert_same_snapshot(a, b):
    assert a[1] == b[1]
    assert a[0].keys() == b[0].keys()
    for key in a[0]:
        assert a[0][key].keys() == b[0][key].keys()
        for name in a[0][key]:
            np.testing.assert_array_equal(a[0][key][name], b[0][key][name])


def test_state_dict_layout_is_torchs(backend):
    w, c = xpnet_params()
    opt = optim.Adam([{"params": [w]}, {"params": [c], "lr": 0.01}], lr=0.1, amsgrad=True)
    set_grads(w, c, 1.0)
    opt.step()
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups"}
    assert [g["params"] for g in sd["param_groups"]] == [[0], [1]]
    assert sd["param_groups"][1]["lr"] == 0.01 and sd["param_groups"][0]["betas"] == (0.9, 0.999)
    assert set(sd["state"]) == {0, 1}
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    assert sd["state"][0]["step"] == 1 and tuple(sd["state"][1]["exp_avg"].shape) == (2,)


def test_state_dict_layout_matches_torch_keys(backend):
    torch = pytest.importorskip("torch")
    w, c = xpnet_params()
    tw, tc = torch.tensor(W0, requires_grad=True), torch.tensor(C0, requires_grad=True)
    for name, kwargs in (("SGD", dict(lr=0.1, momentum=0.9)), ("Adagrad", {}),
                         ("RMSprop", dict(momentum=0.9, centered=True)), ("Adam", dict(amsgrad=True)),
                         ("AdamW", {})):
        ours = getattr(optim, name)([w, c], **kwargs)
        theirs = getattr(torch.optim, name)([tw, tc], **kwargs)
        set_grads(w, c, 1.0)
        tw.grad, tc.grad = torch.ones_like(tw), torch.ones_like(tc)
        ours.step()
        theirs.step()
        sd, tsd = ours.state_dict(), theirs.state_dict()
        assert sd["state"].keys() == tsd["state"].keys(), name
        for index in sd["state"]:
            assert set(sd["state"][index]) == set(tsd["state"][index]), name
        assert [g["params"] for g in sd["param_groups"]] == [g["params"] for g in tsd["param_groups"]]
        for key in ("lr", "weight_decay"):
            assert sd["param_groups"][0][key] == tsd["param_groups"][0][key], (name, key)


def test_state_dict_is_a_snapshot(backend):
    w, c = xpnet_params()
    opt = optim.Adam([w, c], lr=0.1)
    set_grads(w, c, 1.0)
    opt.step()
    sd = opt.state_dict()
    saved = xpnet.to_numpy(sd["state"][0]["exp_avg"])
    set_grads(w, c, 1.0)
    opt.step()
    np.testing.assert_array_equal(xpnet.to_numpy(sd["state"][0]["exp_avg"]), saved)
    assert sd["state"][0]["step"] == 1


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_save_mid_run_load_into_fresh_objects_continues_identically(backend, case):
    _, name, options = case
    whole = run_xpnet(name, options, steps=30)
    w, c = xpnet_params()
    opt = getattr(optim, name)([w, c], **options)
    run_xpnet(name, options, steps=15, params=(w, c), optimizer=opt)
    sd = opt.state_dict()
    w2 = xpnet.tensor(xpnet.to_numpy(w), requires_grad=True)
    c2 = xpnet.tensor(xpnet.to_numpy(c), requires_grad=True)
    # a fresh optimizer with other options: the loaded groups bring the saved ones back
    fresh = getattr(optim, name)([w2, c2], lr=123.0)
    fresh.load_state_dict(sd)
    assert fresh.param_groups[0]["lr"] == options["lr"]
    rest = run_xpnet(name, options, steps=15, params=(w2, c2), optimizer=fresh)
    for (a_w, a_c), (b_w, b_c) in zip(whole[15:], rest):
        np.testing.assert_array_equal(a_w, b_w)
        np.testing.assert_array_equal(a_c, b_c)


def test_loaded_state_does_not_alias_the_dict(backend):
    w, c = xpnet_params()
    opt = optim.SGD([w, c], lr=0.1, momentum=0.9)
    set_grads(w, c, 1.0)
    opt.step()
    sd = opt.state_dict()
    saved = xpnet.to_numpy(sd["state"][0]["momentum_buffer"])
    opt.load_state_dict(sd)
    set_grads(w, c, 1.0)
    opt.step()
    np.testing.assert_array_equal(xpnet.to_numpy(sd["state"][0]["momentum_buffer"]), saved)


def _trained_adam():
    w, c = xpnet_params()
    opt = optim.Adam([{"params": [w]}, {"params": [c], "lr": 0.01}], lr=0.1)
    run_xpnet("Adam", {}, steps=3, params=(w, c), optimizer=opt)
    return opt


@pytest.mark.parametrize("corrupt, message", [
    (lambda sd: sd["param_groups"].pop(), r"1 parameter groups.*this optimizer has 2"),
    (lambda sd: sd["param_groups"][1]["params"].append(7), r"parameter group 1 has 2 parameters"),
    (lambda sd: sd["state"][1].update(exp_avg_sq=np.zeros((3,))),
     r"state 'exp_avg_sq' of parameter 0 in group 1 has shape \(3,\), expected \(2,\)"),
    (lambda sd: sd["state"][0].update(exp_avg=np.zeros((2, 4))),
     r"state 'exp_avg' of parameter 0 in group 0 has shape \(2, 4\), expected \(4, 2\)"),
    (lambda sd: sd.pop("state"), r"'state' and 'param_groups'"),
])
def test_mismatched_state_dict_raises_and_changes_nothing(backend, corrupt, message):
    opt = _trained_adam()
    good = opt.state_dict()
    # a different but valid state, so a partial load would show
    other = _trained_adam()
    other.param_groups[0]["lr"] = 0.5
    run_xpnet("Adam", {}, steps=2, params=tuple(p for g in other.param_groups for p in g["params"]), optimizer=other)
    bad = other.state_dict()
    # the valid entries of bad must differ from the optimizer's, or "unchanged" is not tested
    assert not np.array_equal(xpnet.to_numpy(bad["state"][0]["exp_avg"]), xpnet.to_numpy(good["state"][0]["exp_avg"]))
    corrupt(bad)
    before = snapshot(opt)
    state_objects = {id(p): dict(s) for p, s in opt.state.items()}
    with pytest.raises(ValueError, match=message):
        opt.load_state_dict(bad)
    assert_same_snapshot(snapshot(opt), before)
    for p, s in opt.state.items():
        assert all(s[k] is state_objects[id(p)][k] for k in s)


def test_load_state_dict_moves_state_onto_the_parameters_device(backend):
    w, c = xpnet_params()
    opt = optim.Adam([w, c], lr=0.1)
    run_xpnet("Adam", {}, steps=2, params=(w, c), optimizer=opt)
    sd = opt.state_dict()
    # parameters living on strict's device1, state saved from this backend (as NumPy for numpy)
    dev = xpnet.get_backend("array_api_strict", "device1")
    w2 = xpnet.Tensor(xpnet.to_device(w.data, dev), requires_grad=True)
    c2 = xpnet.Tensor(xpnet.to_device(c.data, dev), requires_grad=True)
    fresh = optim.Adam([w2, c2])
    fresh.load_state_dict(sd)
    for s in fresh.state.values():
        for key in ("exp_avg", "exp_avg_sq"):
            assert xpnet.backends.describe_device(s[key]) == "array_api_strict:device1"
    np.testing.assert_array_equal(xpnet.to_numpy(fresh.state[w2]["exp_avg"]), xpnet.to_numpy(sd["state"][0]["exp_avg"]))


def test_load_state_dict_casts_state_to_the_parameters_dtype(backend):
    w, c = xpnet_params()
    opt = optim.RMSprop([w, c], momentum=0.5)
    run_xpnet("RMSprop", {}, steps=2, params=(w, c), optimizer=opt)
    sd = opt.state_dict()
    w32 = xpnet.tensor(W0.astype(np.float32), requires_grad=True)
    c32 = xpnet.tensor(C0.astype(np.float32), requires_grad=True)
    fresh = optim.RMSprop([w32, c32])
    fresh.load_state_dict(sd)
    assert xpnet.to_numpy(fresh.state[w32]["square_avg"]).dtype == np.float32
    assert fresh.state[w32]["step"] == 2


def test_load_torch_state_dict_and_continue_like_torch(backend):
    pytest.importorskip("torch")
    from optim_cases import continue_from_torch, run_torch

    options = dict(lr=0.05, amsgrad=True, weight_decay=0.1)
    reference = run_torch("Adam", options, steps=20)
    opt, (w, c) = continue_from_torch("Adam", options, steps=10)
    assert opt.state[w]["step"] == 10 and opt.param_groups[0]["amsgrad"] is True
    rest = run_xpnet("Adam", options, steps=10, params=(w, c), optimizer=opt)
    for (ow, oc), (rw, rc) in zip(rest, reference[10:]):
        np.testing.assert_allclose(ow, rw, rtol=1e-7)
        np.testing.assert_allclose(oc, rc, rtol=1e-7)


def test_to_device_moves_state_and_training_continues_on_device1(backend):
    options = dict(lr=0.05, amsgrad=True)
    whole = run_xpnet("Adam", options, steps=20)
    w, c = xpnet_params()
    opt = optim.Adam([w, c], **options)
    run_xpnet("Adam", options, steps=10, params=(w, c), optimizer=opt)
    # the model moves its parameters in place (as Module does); the optimizer moves its state
    for p in (w, c):
        p.data = xpnet.to_device(p.data, "array_api_strict", "device1")
    moved = xpnet.to_device(opt, "array_api_strict", "device1")
    assert moved is opt and opt.param_groups[0]["params"][0] is w
    for s in opt.state.values():
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            assert xpnet.backends.describe_device(s[key]) == "array_api_strict:device1", key
    with xpnet.use_backend("array_api_strict", "device1"):
        rest = run_xpnet("Adam", options, steps=10, params=(w, c), optimizer=opt)
    assert xpnet.backends.describe_device(w.data) == "array_api_strict:device1"
    for s in opt.state.values():
        assert xpnet.backends.describe_device(s["exp_avg"]) == "array_api_strict:device1"
    for (a_w, a_c), (b_w, b_c) in zip(whole[10:], rest):
        np.testing.assert_allclose(a_w, b_w, rtol=1e-12)
        np.testing.assert_allclose(a_c, b_c, rtol=1e-12)


def test_state_left_behind_is_a_device_error_that_changes_nothing(backend):
    # parameters moved without the optimizer: a clear error before any state is touched
    w, c = xpnet_params()
    opt = optim.SGD([w, c], lr=0.1, momentum=0.9)
    run_xpnet("SGD", {}, steps=1, params=(w, c), optimizer=opt)
    expected = run_xpnet("SGD", dict(lr=0.1, momentum=0.9), steps=3)[-1]
    buffer = xpnet.to_numpy(opt.state[w]["momentum_buffer"])
    for p in (w, c):
        p.data = xpnet.to_device(p.data, "array_api_strict", "device1")
    set_grads(w, c, 1.0)
    with pytest.raises(xpnet.DeviceMismatchError, match=r"SGD.step, parameter 0 of group 0.*state 'momentum_buffer'"
                                                        r".*array_api_strict:device1"):
        opt.step()
    np.testing.assert_array_equal(xpnet.to_numpy(opt.state[w]["momentum_buffer"]), buffer)
    xpnet.to_device(opt, "array_api_strict", "device1")
    with xpnet.use_backend("array_api_strict", "device1"):
        last = run_xpnet("SGD", {}, steps=2, params=(w, c), optimizer=opt)[-1]
    np.testing.assert_allclose(last[0], expected[0], rtol=1e-12)


def test_gradient_of_the_wrong_shape_is_an_error_that_changes_nothing(backend):
    w, c = xpnet_params()
    opt = optim.Adam([w, c], lr=0.1)
    run_xpnet("Adam", {}, steps=1, params=(w, c), optimizer=opt)
    before = snapshot(opt)
    data = xpnet.to_numpy(w)
    w.grad = xpnet.tensor(np.ones((1, 2)))  # would broadcast silently against (4, 2)
    with pytest.raises(ValueError, match=r"gradient of parameter 0 in group 0 has shape \(1, 2\), expected \(4, 2\)"):
        opt.step()
    assert_same_snapshot(snapshot(opt), before)
    np.testing.assert_array_equal(xpnet.to_numpy(w), data)


def test_module_and_optimizer_moved_together_keep_training_on_device1(backend):
    nn = pytest.importorskip("xpnet.nn")
    rng = np.random.default_rng(0)
    x_host, y_host = rng.normal(size=(16, 3)), rng.normal(size=(16, 2))

    def build():
        xpnet.manual_seed(0)
        model = nn.Linear(3, 2, dtype="float64")
        opt = optim.Adam(model.parameters(), lr=0.05, amsgrad=True)
        return model, opt

    def train(model, opt, steps):
        x, y = xpnet.tensor(x_host), xpnet.tensor(y_host)
        for _ in range(steps):
            opt.zero_grad()
            nn.MSELoss()(model(x), y).backward()
            opt.step()
        return [xpnet.to_numpy(p) for p in model.parameters()]

    model, opt = build()
    whole = train(model, opt, 10)
    model, opt = build()
    train(model, opt, 5)
    params = list(model.parameters())
    xpnet.to_device(model, "array_api_strict", "device1")
    xpnet.to_device(opt, "array_api_strict", "device1")
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]
    with xpnet.use_backend("array_api_strict", "device1"):
        rest = train(model, opt, 5)
    for p in model.parameters():
        assert xpnet.backends.describe_device(p.data) == "array_api_strict:device1"
        assert xpnet.backends.describe_device(opt.state[p]["max_exp_avg_sq"]) == "array_api_strict:device1"
    for a, b in zip(whole, rest):
        np.testing.assert_allclose(a, b, rtol=1e-12)
