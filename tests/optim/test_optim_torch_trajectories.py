"""Adadelta, Adamax, NAdam, RAdam and LBFGS against torch.optim: 50-step float64 trajectories (rtol 1e-7)
on every CPU backend, state_dict layout, save/load round trips that continue identically, argument
validation, and each rule against a closed form written out here (these need no torch).

The elementwise optimizers run the least-squares problem of optim_cases.py. LBFGS runs two problems,
gradients by each library's own autograd: three decoupled 2-D Rosenbrock functions (two parameters,
so the flat vector spans both) and the same least squares. L-BFGS on Rosenbrock magnifies rounding
differences (dot-product order, fused multiply-adds) step after step, and so does any L-BFGS that
reaches the noise floor of its gradients; the cases here stay clear of both within 50 steps, so
agreement to 1e-7 tests the logic, not luck.

torch keeps NAdam's momentum product ``mu_product`` as a tensor of its default dtype (float32
unless ``torch.set_default_dtype(torch.float64)``), xpnet as a Python float: the torch side runs
with float64 defaults, and test_nadam_against_torch_float32_defaults bounds the difference otherwise.
"""

from __future__ import annotations

import contextlib
import functools
import math

import numpy as np
import pytest

import xpnet
import xpnet.optim as optim
from optim_cases import A, B, C0, W0, continue_from_torch, run_torch, run_xpnet, set_grads, xpnet_params
from xpnet.optim.lbfgs import cubic_minimizer, strong_wolfe

STEPS = 50
RTOL, ATOL = 1e-7, 1e-12

# (id, optimizer, options): every option of every optimizer is on in some case
CASES = [
    ("adadelta", "Adadelta", {}),
    ("adadelta-rho-eps-decay", "Adadelta", dict(lr=0.5, rho=0.8, eps=1e-4, weight_decay=0.05)),
    ("adadelta-maximize", "Adadelta", dict(weight_decay=0.05, maximize=True)),
    ("adamax", "Adamax", dict(lr=0.05)),
    ("adamax-betas-eps-decay", "Adamax", dict(lr=0.05, betas=(0.8, 0.99), eps=1e-3, weight_decay=0.1)),
    ("adamax-maximize", "Adamax", dict(lr=0.05, weight_decay=0.1, maximize=True)),
    ("nadam", "NAdam", dict(lr=0.05)),
    ("nadam-momentum-decay", "NAdam", dict(lr=0.02, momentum_decay=0.02, weight_decay=0.1, betas=(0.8, 0.99))),
    ("nadam-decoupled", "NAdam", dict(lr=0.05, weight_decay=0.3, decoupled_weight_decay=True)),
    ("nadam-maximize", "NAdam", dict(lr=0.05, weight_decay=0.1, eps=1e-3, maximize=True)),
    ("radam", "RAdam", dict(lr=0.05)),
    ("radam-decay", "RAdam", dict(lr=0.05, weight_decay=0.1, betas=(0.8, 0.99), eps=1e-3)),
    ("radam-decoupled", "RAdam", dict(lr=0.05, weight_decay=0.3, decoupled_weight_decay=True)),
    ("radam-maximize", "RAdam", dict(lr=0.05, weight_decay=0.1, maximize=True)),
]
IDS = [c[0] for c in CASES]

# (id, problem, options)
LBFGS_CASES = [
    ("rosenbrock", "rosenbrock", dict(lr=0.2, max_iter=2)),
    ("rosenbrock-wolfe-zoom", "rosenbrock", dict(lr=2, max_iter=2, history_size=3, line_search_fn="strong_wolfe")),
    ("rosenbrock-wolfe-extrapolate", "rosenbrock", dict(lr=0.3, max_iter=2, line_search_fn="strong_wolfe")),
    ("lstsq-defaults", "lstsq", {}),
    ("lstsq-short-memory", "lstsq", dict(max_iter=2, history_size=3)),
    ("lstsq-tolerance-grad", "lstsq", dict(max_iter=2, tolerance_grad=1e-3, tolerance_change=1e-12)),
    ("lstsq-wolfe", "lstsq", dict(lr=3, max_iter=4, history_size=2, line_search_fn="strong_wolfe")),
    ("lstsq-wolfe-max-eval", "lstsq", dict(lr=3, max_iter=4, max_eval=3, line_search_fn="strong_wolfe")),
]
LBFGS_IDS = [c[0] for c in LBFGS_CASES]
ROSEN_A, ROSEN_B = np.array([-1.2, -0.5, 0.3]), np.array([1.0, 0.8, -0.4])


@contextlib.contextmanager
def torch_float64_defaults(torch):
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


@functools.lru_cache(maxsize=None)
def torch_trajectory(name, options_items):
    torch = pytest.importorskip("torch")
    with torch_float64_defaults(torch):
        return run_torch(name, dict(options_items), steps=STEPS)


def assert_close_to_torch(ours, theirs, label):
    assert len(ours) == len(theirs)
    for t, (a, b) in enumerate(zip(ours, theirs)):
        for k, (x, y) in enumerate(zip(a, b)):
            np.testing.assert_allclose(x, y, rtol=RTOL, atol=ATOL, err_msg=f"{label}: array {k} after step {t + 1}")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_trajectory_equals_torch(backend, case):
    _, name, options = case
    theirs = torch_trajectory(name, tuple(sorted(options.items())))
    ours = run_xpnet(name, options, steps=STEPS)
    assert_close_to_torch(ours, theirs, name)
    assert np.abs(ours[-1][0] - W0).max() > 0.1  # the comparison is about a trajectory that moved


def test_nadam_against_torch_float32_defaults():
    """With torch's float32 default dtype its mu_product rounds to float32 every step; the rest is
    the same float64 arithmetic, so the trajectories differ by that rounding only."""
    pytest.importorskip("torch")
    options = dict(lr=0.05, momentum_decay=0.02, weight_decay=0.1)
    with xpnet.use_backend("numpy"):
        ours = run_xpnet("NAdam", options, steps=STEPS)
    for a, b in zip(ours, run_torch("NAdam", options, steps=STEPS)):
        for x, y in zip(a, b):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-9)


# -- LBFGS problems, over each library's autograd -----------------------------------------------
def rosenbrock(a, b):
    """Σ_i 100 (b_i - a_i²)² + (1 - a_i)²: three 2-D Rosenbrock valleys, minimum at a = b = 1."""
    return (100 * (b - a * a) ** 2 + (1 - a) ** 2).sum()


def lbfgs_run(lib, problem, options, steps=STEPS, params=None, optimizer=None):
    """[(param arrays..., loss returned by step)] per step, in NumPy."""
    if lib == "torch":
        import torch

        const, opt_class = torch.from_numpy, torch.optim.LBFGS
        make = lambda x: torch.tensor(x.copy(), requires_grad=True)  # noqa: E731
        host = lambda t: t.detach().numpy().copy()  # noqa: E731
    else:
        const, opt_class = xpnet.tensor, optim.LBFGS
        make = lambda x: xpnet.tensor(x.copy(), requires_grad=True)  # noqa: E731
        host = lambda t: xpnet.to_numpy(t.data).copy()  # noqa: E731
    if params is None:
        params = [make(ROSEN_A), make(ROSEN_B)] if problem == "rosenbrock" else [make(W0), make(C0)]
    opt = optimizer if optimizer is not None else opt_class(params, **options)
    a, b = const(A), const(B)

    def closure():
        opt.zero_grad()
        if problem == "rosenbrock":
            loss = rosenbrock(*params)
        else:
            r = a @ params[0] + params[1] - b
            loss = 0.5 * (r * r).mean()
        loss.backward()
        return loss

    out = []
    for _ in range(steps):
        loss = opt.step(closure)
        out.append(tuple(host(p) for p in params) + (np.array([float(loss.detach().item())]),))
    return out, params, opt


@functools.lru_cache(maxsize=None)
def torch_lbfgs(problem, options_items):
    torch = pytest.importorskip("torch")
    with torch_float64_defaults(torch):
        out, _, opt = lbfgs_run("torch", problem, dict(options_items))
    return out, opt.state_dict()


@pytest.mark.parametrize("case", LBFGS_CASES, ids=LBFGS_IDS)
def test_lbfgs_trajectory_equals_torch(backend, case):
    _, problem, options = case
    theirs, _ = torch_lbfgs(problem, tuple(sorted(options.items())))
    ours, _, opt = lbfgs_run("xpnet", problem, options)
    assert_close_to_torch(ours, theirs, "LBFGS")
    start = np.concatenate([ROSEN_A, ROSEN_B] if problem == "rosenbrock" else [W0.ravel(), C0])
    assert np.abs(np.concatenate([x.ravel() for x in ours[-1][:-1]]) - start).max() > 1e-2
    assert ours[-1][-1][0] < ours[0][-1][0]  # the loss went down


def _state_dicts(name, options):
    """(ours, torch's) state dicts after three steps of the same problem."""
    torch = pytest.importorskip("torch")
    if name == "LBFGS":
        _, _, ours = lbfgs_run("xpnet", "lstsq", options, steps=3)
        with torch_float64_defaults(torch):
            _, _, theirs = lbfgs_run("torch", "lstsq", options, steps=3)
        return ours.state_dict(), theirs.state_dict()
    w, c = xpnet_params()
    tw, tc = torch.tensor(W0, requires_grad=True), torch.tensor(C0, requires_grad=True)
    ours, theirs = getattr(optim, name)([w, c], **options), getattr(torch.optim, name)([tw, tc], **options)
    for _ in range(3):
        set_grads(w, c, 1.0)
        tw.grad, tc.grad = torch.ones_like(tw), torch.ones_like(tc)
        ours.step()
        theirs.step()
    return ours.state_dict(), theirs.state_dict()


@pytest.mark.parametrize("name, options", [(n, o) for _, n, o in CASES] + [
    ("LBFGS", dict(max_iter=2, history_size=3)), ("LBFGS", dict(max_iter=3, line_search_fn="strong_wolfe"))],
    ids=IDS + ["lbfgs", "lbfgs-wolfe"])
def test_state_dict_layout_equals_torch(backend, name, options):
    sd, tsd = _state_dicts(name, options)
    assert sd["state"].keys() == tsd["state"].keys()
    for index in sd["state"]:
        assert set(sd["state"][index]) == set(tsd["state"][index])
    assert [set(g) for g in sd["param_groups"]] == [set(g) for g in tsd["param_groups"]]
    for key, value in tsd["param_groups"][0].items():
        assert sd["param_groups"][0][key] == value, key


def saved_and_loaded(state_dict, via, tmp_path):
    """The state dict itself, or what comes back from a file written by xpnet.save."""
    if via == "memory":
        return state_dict
    if not hasattr(xpnet, "save"):
        pytest.skip("xpnet.save is not available")
    path = tmp_path / "optimizer.safetensors"
    xpnet.save(state_dict, path)
    return xpnet.load(path)


@pytest.mark.parametrize("via", ["memory", "xpnet.save"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_state_dict_round_trip_continues_identically(backend, case, via, tmp_path):
    _, name, options = case
    whole = run_xpnet(name, options, steps=20)
    w, c = xpnet_params()
    opt = getattr(optim, name)([w, c], **options)
    run_xpnet(name, options, steps=10, params=(w, c), optimizer=opt)
    sd = saved_and_loaded(opt.state_dict(), via, tmp_path)
    w2 = xpnet.tensor(xpnet.to_numpy(w), requires_grad=True)
    c2 = xpnet.tensor(xpnet.to_numpy(c), requires_grad=True)
    fresh = getattr(optim, name)([w2, c2], lr=7.0)
    fresh.load_state_dict(sd)
    assert fresh.param_groups[0]["lr"] == opt.param_groups[0]["lr"]  # the saved groups come back
    rest = run_xpnet(name, options, steps=10, params=(w2, c2), optimizer=fresh)
    for a, b in zip(whole[10:], rest):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("name", ["Adadelta", "Adamax", "NAdam", "RAdam"])
def test_checkpoint_file_round_trip_continues_identically(backend, name, tmp_path):
    from xpnet.train.checkpoint import load_checkpoint, save_checkpoint

    nn = xpnet.nn
    x, y = xpnet.tensor(A), xpnet.tensor(B)

    def build():
        xpnet.manual_seed(0)
        model = nn.Linear(4, 2, dtype="float64")
        return model, getattr(optim, name)(model.parameters(), lr=0.05, weight_decay=0.01)

    def train(model, opt, steps):
        for _ in range(steps):
            opt.zero_grad()
            nn.MSELoss()(model(x), y).backward()
            opt.step()
        return [xpnet.to_numpy(p) for p in model.parameters()]

    model, opt = build()
    train(model, opt, 4)
    path = save_checkpoint(tmp_path / f"{name}.safetensors", model, opt)
    expected = train(model, opt, 4)
    model2, opt2 = build()
    load_checkpoint(path, model2, opt2)
    assert [set(s) for s in opt2.state.values()] == [set(s) for s in opt.state.values()]
    for a, b in zip(expected, train(model2, opt2, 4)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("via", ["memory", "xpnet.save"])
@pytest.mark.parametrize("case", LBFGS_CASES[1:2] + LBFGS_CASES[4:5], ids=LBFGS_IDS[1:2] + LBFGS_IDS[4:5])
def test_lbfgs_state_dict_round_trip_continues_identically(backend, case, via, tmp_path):
    _, problem, options = case
    whole, _, _ = lbfgs_run("xpnet", problem, options, steps=12)
    _, params, opt = lbfgs_run("xpnet", problem, options, steps=6)
    sd = saved_and_loaded(opt.state_dict(), via, tmp_path)
    copies = [xpnet.tensor(xpnet.to_numpy(p), requires_grad=True) for p in params]
    fresh = optim.LBFGS(copies, lr=123.0)
    fresh.load_state_dict(sd)
    assert fresh.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    rest, _, _ = lbfgs_run("xpnet", problem, options, steps=6, params=copies, optimizer=fresh)
    for a, b in zip(whole[6:], rest):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


def test_lbfgs_loads_torchs_state_dict_and_continues_like_torch(backend):
    torch = pytest.importorskip("torch")
    problem, options = "rosenbrock", dict(lr=2, max_iter=2, history_size=3, line_search_fn="strong_wolfe")
    with torch_float64_defaults(torch):
        whole, _, _ = lbfgs_run("torch", problem, options, steps=20)
        _, tparams, topt = lbfgs_run("torch", problem, options, steps=10)
    params = [xpnet.tensor(p.detach().numpy().copy(), requires_grad=True) for p in tparams]
    opt = optim.LBFGS(params)
    opt.load_state_dict(topt.state_dict())
    state = opt.state[params[0]]
    theirs = topt.state[tparams[0]]
    assert (state["n_iter"], state["func_evals"]) == (theirs["n_iter"], theirs["func_evals"])
    assert isinstance(state["ro"][0], float) and len(state["old_dirs"]) == 3
    rest, _, _ = lbfgs_run("xpnet", problem, options, steps=10, params=params, optimizer=opt)
    assert_close_to_torch(rest, whole[10:], "LBFGS")


def test_nadam_loads_torchs_state_dict_and_continues_like_torch(backend):
    torch = pytest.importorskip("torch")
    options = dict(lr=0.05, weight_decay=0.1)
    whole = torch_trajectory("NAdam", tuple(sorted(options.items())))
    with torch_float64_defaults(torch):
        opt, (w, c) = continue_from_torch("NAdam", options, steps=10)
    assert isinstance(opt.state[w]["mu_product"], float) and opt.state[w]["step"] == 10
    rest = run_xpnet("NAdam", options, steps=10, params=(w, c), optimizer=opt)
    assert_close_to_torch(rest, whole[10:20], "NAdam")


def test_lbfgs_state_moves_with_to_device_and_training_continues(backend):
    options = dict(lr=2, max_iter=2, history_size=3, line_search_fn="strong_wolfe")
    whole, _, _ = lbfgs_run("xpnet", "rosenbrock", options, steps=8)
    _, params, opt = lbfgs_run("xpnet", "rosenbrock", options, steps=4)
    for p in params:
        p.data = xpnet.to_device(p.data, "array_api_strict", "device1")
    xpnet.to_device(opt, "array_api_strict", "device1")
    state = opt.state[params[0]]
    for array in [state["d"], state["prev_flat_grad"], *state["old_dirs"], *state["old_stps"]]:
        assert xpnet.backends.describe_device(array) == "array_api_strict:device1"
    with xpnet.use_backend("array_api_strict", "device1"):
        rest, _, _ = lbfgs_run("xpnet", "rosenbrock", options, steps=4, params=params, optimizer=opt)
    for a, b in zip(whole[4:], rest):
        for x, y in zip(a, b):
            np.testing.assert_allclose(x, y, rtol=1e-12)


# -- validation ---------------------------------------------------------------------------------
def _p():
    return [xpnet.tensor(W0.copy(), requires_grad=True)]


@pytest.mark.parametrize("name, kwargs, message", [
    ("Adadelta", dict(lr=-1.0), r"Adadelta: invalid learning rate lr=-1.0 in group 0; expected lr >= 0"),
    ("Adadelta", dict(rho=1.5), r"Adadelta: invalid rho=1.5 in group 0; expected 0.0 <= rho <= 1.0"),
    ("Adadelta", dict(eps=-1e-6), r"Adadelta: invalid eps=-1e-06 in group 0; expected eps >= 0.0"),
    ("Adadelta", dict(weight_decay=-0.1),
     r"Adadelta: invalid weight_decay=-0.1 in group 0; expected weight_decay >= 0"),
    ("Adadelta", dict(differentiable=True), r"Adadelta: differentiable=True in group 0 is not supported"),
    ("Adadelta", dict(foreach="yes"), r"Adadelta: invalid foreach='yes' in group 0; expected None, True or False"),
    ("Adamax", dict(betas=(0.9, 1.0)),
     r"Adamax: invalid betas=\(0.9, 1.0\) in group 0; expected two values in \[0, 1\)"),
    ("Adamax", dict(betas=0.9), r"Adamax: invalid betas=0.9 in group 0; expected two values in \[0, 1\)"),
    ("Adamax", dict(eps="small"), r"Adamax: invalid eps='small' in group 0; expected eps >= 0.0"),
    ("NAdam", dict(momentum_decay=-4e-3),
     r"NAdam: invalid momentum_decay=-0.004 in group 0; expected momentum_decay >= 0.0"),
    ("NAdam", dict(betas=(-0.1, 0.999)), r"NAdam: invalid betas=\(-0.1, 0.999\) in group 0"),
    ("NAdam", dict(decoupled_weight_decay=1),
     r"NAdam: invalid decoupled_weight_decay=1 in group 0; expected True or False"),
    ("NAdam", dict(maximize="no"), r"NAdam: invalid maximize='no' in group 0; expected True or False"),
    ("RAdam", dict(lr=float("nan")), r"RAdam: invalid learning rate lr=nan in group 0; expected lr >= 0"),
    ("RAdam", dict(eps=float("nan")), r"RAdam: invalid eps=nan in group 0; expected eps >= 0.0"),
    ("RAdam", dict(decoupled_weight_decay=None), r"RAdam: invalid decoupled_weight_decay=None in group 0"),
    ("LBFGS", dict(max_iter=0), r"LBFGS: invalid max_iter=0 in group 0; expected an integer >= 1"),
    ("LBFGS", dict(max_iter=2.5), r"LBFGS: invalid max_iter=2.5 in group 0; expected an integer >= 1"),
    ("LBFGS", dict(max_eval=0), r"LBFGS: invalid max_eval=0 in group 0; expected an integer >= 1"),
    ("LBFGS", dict(history_size=0), r"LBFGS: invalid history_size=0 in group 0; expected an integer >= 1"),
    ("LBFGS", dict(tolerance_grad=-1.0),
     r"LBFGS: invalid tolerance_grad=-1.0 in group 0; expected tolerance_grad >= 0"),
    ("LBFGS", dict(tolerance_change=None), r"LBFGS: invalid tolerance_change=None in group 0"),
    ("LBFGS", dict(line_search_fn="armijo"),
     r"LBFGS: invalid line_search_fn='armijo' in group 0; expected None or 'strong_wolfe'"),
    ("LBFGS", dict(lr=-0.5), r"LBFGS: invalid learning rate lr=-0.5 in group 0"),
])
def test_invalid_arguments_raise_value_error(name, kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        getattr(optim, name)(_p(), **kwargs)
    assert "\n" not in str(info.value)


def test_lbfgs_needs_a_closure_and_a_single_group():
    w, c = xpnet_params()
    opt = optim.LBFGS([w, c])
    with pytest.raises(TypeError, match=r"LBFGS.step: a closure is required, step\(closure\)"):
        opt.step()
    with pytest.raises(TypeError, match=r"LBFGS.step: the closure must return the loss .*got NoneType"):
        opt.step(lambda: set_grads(w, c, 1.0))
    with pytest.raises(ValueError, match=r"LBFGS doesn't support per-parameter options \(parameter groups\)"):
        optim.LBFGS([{"params": [w]}, {"params": [c]}])
    with pytest.raises(ValueError, match=r"LBFGS doesn't support per-parameter options"):
        opt.add_param_group({"params": [xpnet.tensor(W0.copy(), requires_grad=True)]})
    assert optim.LBFGS([w], max_iter=8).param_groups[0]["max_eval"] == 10  # max_iter * 5 // 4, as torch


def test_defaults_and_signatures_match_torch():
    torch = pytest.importorskip("torch")
    import inspect

    for name in ("Adadelta", "Adamax", "NAdam", "RAdam", "LBFGS"):
        ours = inspect.signature(getattr(optim, name)).parameters
        theirs = inspect.signature(getattr(torch.optim, name)).parameters
        assert list(ours) == list(theirs), name
        for key, p in theirs.items():
            assert ours[key].kind == p.kind, (name, key)
            if p.default is not inspect.Parameter.empty:
                assert ours[key].default == p.default, (name, key)


# -- closed forms (no torch) --------------------------------------------------------------------
G = np.array([[0.5, -2.0], [1e-3, 3.0]])
W_START = np.array([[1.0, -1.0], [0.25, 2.0]])


def one_step(name, **options):
    w = xpnet.tensor(W_START.copy(), requires_grad=True)
    opt = getattr(optim, name)([w], **options)
    w.grad = xpnet.tensor(G.copy())
    array = w.data
    opt.step()
    assert w.data is array  # updated in place
    np.testing.assert_array_equal(xpnet.to_numpy(w.grad), G)  # the gradient is left alone
    return xpnet.to_numpy(w.data), opt


def test_first_step_closed_forms(backend):
    lr, eps = 0.1, 1e-6
    # Adadelta: v = (1-ρ) g², u = 0, Δ = √ε / √(v + ε) g
    got, _ = one_step("Adadelta", lr=lr, rho=0.9, eps=eps)
    np.testing.assert_allclose(got, W_START - lr * math.sqrt(eps) / np.sqrt(0.1 * G * G + eps) * G, rtol=1e-13)
    # Adamax: m = (1-β1) g, u = |g| + ε, corrected by 1-β1: w - η g / (|g| + ε)
    got, _ = one_step("Adamax", lr=lr, eps=eps)
    np.testing.assert_allclose(got, W_START - lr * G / (np.abs(G) + eps), rtol=1e-13)
    # NAdam: σ = |g| + ε; w - η g/σ (1 + μ2 (1-β1) / (1 - μ1 μ2)), μ_t = β1 (1 - ½ 0.96^(0.004 t))
    mu1, mu2 = 0.9 * (1 - 0.5 * 0.96 ** 0.004), 0.9 * (1 - 0.5 * 0.96 ** 0.008)
    got, opt = one_step("NAdam", lr=lr, eps=eps)
    want = W_START - lr * G / (np.abs(G) + eps) * (1 + mu2 * 0.1 / (1 - mu1 * mu2))
    np.testing.assert_allclose(got, want, rtol=1e-13)
    assert opt.state[opt.param_groups[0]["params"][0]]["mu_product"] == pytest.approx(mu1, rel=1e-15)
    # NAdam, decoupled decay: the same step from (1 - ηλ) w
    got, _ = one_step("NAdam", lr=lr, eps=eps, weight_decay=0.5, decoupled_weight_decay=True)
    np.testing.assert_allclose(got, want - W_START * lr * 0.5, rtol=1e-13)
    # RAdam: ρ_1 = 1 <= 5, an SGD-with-momentum step on m̂ = g
    got, _ = one_step("RAdam", lr=lr, eps=eps, weight_decay=0.5, maximize=True)
    np.testing.assert_allclose(got, W_START - lr * (-G + 0.5 * W_START), rtol=1e-13)


def test_radam_rectified_steps_with_a_constant_gradient(backend):
    """With g constant, m̂_t = g and v_t = (1-β2^t) g²; ρ_t passes 5 at step 6 for β2 = 0.999."""
    lr, b2, eps, steps = 0.01, 0.999, 1e-8, 9
    w = xpnet.tensor(W_START.copy(), requires_grad=True)
    opt = optim.RAdam([w], lr=lr, eps=eps)
    want, rho_inf, rectified = W_START.copy(), 2 / (1 - b2) - 1, []
    for t in range(1, steps + 1):
        w.grad = xpnet.tensor(G.copy())
        opt.step()
        rho = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
        if rho > 5:
            r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            want = want - lr * G * math.sqrt(1 - b2 ** t) / (np.sqrt((1 - b2 ** t) * G * G) + eps) * r
        else:
            want = want - lr * G
        rectified.append(rho > 5)
    assert rectified == [False] * 5 + [True] * 4
    np.testing.assert_allclose(xpnet.to_numpy(w.data), want, rtol=1e-12)


def test_lbfgs_first_iteration_is_a_scaled_gradient_step(backend):
    x = xpnet.tensor(np.array([3.0, -1.0]), requires_grad=True)
    opt = optim.LBFGS([x], lr=0.5, max_iter=1)

    def closure():
        opt.zero_grad()
        loss = (x * x).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert float(loss) == 10.0
    g = np.array([6.0, -2.0])  # t = min(1, 1/‖g‖₁) · lr = lr / 8
    np.testing.assert_allclose(xpnet.to_numpy(x.data), np.array([3.0, -1.0]) - 0.5 / 8 * g, rtol=1e-15)
    state = opt.state[x]
    assert (state["n_iter"], state["func_evals"], state["t"]) == (1, 1, 0.5 / 8)


def test_lbfgs_second_iteration_on_a_quadratic_is_newtons_step(backend):
    """f = ½ a ‖x‖²: the secant pair gives H_diag = 1/a exactly, the inverse Hessian, so the second
    iteration lands on the minimum."""
    a = 4.0
    x = xpnet.tensor(np.array([1.0, -2.0, 0.5]), requires_grad=True)
    opt = optim.LBFGS([x], max_iter=2, max_eval=3, tolerance_grad=0.0, tolerance_change=0.0)

    def closure():
        opt.zero_grad()
        loss = 0.5 * a * (x * x).sum()
        loss.backward()
        return loss

    opt.step(closure)
    np.testing.assert_allclose(xpnet.to_numpy(x.data), 0.0, atol=1e-15)
    assert opt.state[x]["H_diag"] == pytest.approx(1 / a, rel=1e-15)


def test_two_loop_recursion_equals_the_bfgs_matrix(backend):
    """d = -H g with H = V_kᵀ ... (V_1ᵀ γI V_1) ... V_k + Σ ρ s sᵀ terms: the BFGS inverse-Hessian
    update H ← (I - ρ s yᵀ) H (I - ρ y sᵀ) + ρ s sᵀ, applied to H_0 = γ I, pair after pair."""
    rng = np.random.default_rng(3)
    n, k = 5, 3
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    hessian = q @ np.diag([1.0, 2.0, 3.0, 5.0, 8.0]) @ q.T
    stps = [rng.normal(size=n) for _ in range(k)]
    dirs = [hessian @ s for s in stps]
    ro = [1.0 / float(y @ s) for y, s in zip(dirs, stps)]
    gamma = float(dirs[-1] @ stps[-1]) / float(dirs[-1] @ dirs[-1])
    g = rng.normal(size=n)
    H = gamma * np.eye(n)
    for s, y, r in zip(stps, dirs, ro):
        H = (np.eye(n) - r * np.outer(s, y)) @ H @ (np.eye(n) - r * np.outer(y, s)) + r * np.outer(s, s)
    backend_arrays = [xpnet.get_backend().asarray(v) for v in (g, *dirs, *stps)]
    al = [None] * k
    d = optim.LBFGS._direction(backend_arrays[0], backend_arrays[1:k + 1], backend_arrays[k + 1:], ro, gamma, al)
    np.testing.assert_allclose(xpnet.to_numpy(d), -H @ g, rtol=1e-12, atol=1e-14)
    assert all(isinstance(v, float) for v in al)


def test_cubic_minimizer_is_exact_on_a_cubic_and_safeguarded():
    f = lambda t: t ** 3 - 3 * t  # noqa: E731  -- minimum at t = 1
    df = lambda t: 3 * t ** 2 - 3  # noqa: E731
    assert cubic_minimizer(0.0, f(0.0), df(0.0), 2.0, f(2.0), df(2.0)) == pytest.approx(1.0, rel=1e-14)
    assert cubic_minimizer(2.0, f(2.0), df(2.0), 0.0, f(0.0), df(0.0)) == pytest.approx(1.0, rel=1e-14)
    assert cubic_minimizer(0.0, f(0.0), df(0.0), 2.0, f(2.0), df(2.0), bounds=(1.5, 3.0)) == 1.5  # clipped
    # no real critical point: the middle of the interval
    assert cubic_minimizer(0.0, 0.0, 3.0, 1.0, 2.0, 3.0) == 0.5  # f = 3t - 3t² + 2t³ only rises
    assert cubic_minimizer(1.0, 0.0, 1.0, 1.0, 0.0, 1.0) == 1.0  # coincident points: no division by zero


def test_strong_wolfe_returns_a_point_meeting_both_conditions():
    xp = xpnet.get_backend("numpy").xp
    scale = np.array([1.0, 10.0, 100.0])
    x0 = np.array([1.0, 1.0, 1.0])
    loss = lambda x: float(0.5 * np.sum(scale * x ** 4))  # noqa: E731
    grad = lambda x: scale * 2 * x ** 3  # noqa: E731
    g0 = grad(x0)
    d = -g0
    calls = []

    def evaluate(t):
        calls.append(t)
        x = x0 + t * d
        return loss(x), xp.asarray(grad(x))

    slope = float(g0 @ d)
    f, g, t, evals = strong_wolfe(evaluate, 1.0, xp.asarray(d), loss(x0), xp.asarray(g0), slope, max_evals=25)
    assert evals == len(calls) and t in calls
    assert f <= loss(x0) + 1e-4 * t * slope
    assert abs(float(np.asarray(g) @ d)) <= 0.9 * abs(slope)
    assert f == loss(x0 + t * d)
