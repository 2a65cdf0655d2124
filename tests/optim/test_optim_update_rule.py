"""The one update rule (xpnet/optim/optimizer.py), held for every optimizer and every implementation:
an update writes the new parameter values into ``w`` in place and returns ``w``; it never writes into
``g``. After each step ``p.data`` is the same array object, that array holds the new values, the
gradient is unchanged, and the values equal PyTorch's formula written out here in NumPy float64 (and
torch.optim itself on CPU, where torch is installed).

Implementations: the generic ``update`` on every test backend (``backend`` fixture, ``fused=False``);
the NumPy backend's kernels where it registers one (SGD, with the compiled library); CuPy's kernels
(``gpu``). A kernel runs with ``fused=True``, so one that declines fails the test instead of letting
the generic rule stand in for it.
"""

from __future__ import annotations

import numpy as np
import pytest

import xpnet
import xpnet.optim as optim
from xpnet.backends.kernels import lookup_kernel
from optim_cases import DEFAULTS, reference_step

_rng = np.random.default_rng(5)
W0 = _rng.normal(size=(3, 2))
C0 = _rng.normal(size=(2,))
GRADS = [(_rng.normal(size=W0.shape), _rng.normal(size=C0.shape)) for _ in range(2)]  # steps 1 and 2

# (id, optimizer, options): each option of each rule is on in some case
CASES = [
    ("sgd", "SGD", dict(lr=0.1)),
    ("sgd-momentum-dampening-decay", "SGD", dict(lr=0.1, momentum=0.9, dampening=0.2, weight_decay=0.05)),
    ("sgd-nesterov-maximize", "SGD", dict(lr=0.1, momentum=0.9, nesterov=True, maximize=True)),
    ("adagrad-all", "Adagrad", dict(lr=0.1, lr_decay=0.05, weight_decay=0.05, initial_accumulator_value=0.2,
                                    eps=1e-3)),
    ("adagrad-maximize", "Adagrad", dict(lr=0.1, maximize=True)),
    ("rmsprop", "RMSprop", dict(lr=0.01)),
    ("rmsprop-all", "RMSprop", dict(lr=0.01, alpha=0.9, eps=1e-3, momentum=0.8, centered=True, weight_decay=0.05,
                                    maximize=True)),
    ("adam-decay", "Adam", dict(lr=0.05, weight_decay=0.1)),
    ("adam-amsgrad-maximize", "Adam", dict(lr=0.05, betas=(0.8, 0.99), eps=1e-3, amsgrad=True, maximize=True)),
    ("adam-no-bias-correction", "Adam", dict(lr=0.05, weight_decay=0.1, bias_correction=False)),
    ("adamw-amsgrad", "AdamW", dict(lr=0.05, weight_decay=0.3, amsgrad=True)),
    ("adamw-no-bias-correction", "AdamW", dict(lr=0.05, bias_correction=False)),
]
IDS = [case[0] for case in CASES]

def reference_trajectory(name, options):
    o = {**DEFAULTS[name], **options}
    w, c, sw, sc = W0.copy(), C0.copy(), {}, {}
    out = []
    for t, (gw, gc) in enumerate(GRADS, start=1):
        w, c = reference_step(name, o, w, gw, sw, t), reference_step(name, o, c, gc, sc, t)
        out.append((w, c))
    return out


def torch_trajectory(name, options):
    torch = pytest.importorskip("torch")
    params = [torch.tensor(W0.copy(), requires_grad=True), torch.tensor(C0.copy(), requires_grad=True)]
    opt = getattr(torch.optim, name)(params, **options)
    out = []
    for grads in GRADS:
        for p, g in zip(params, grads):
            p.grad = torch.tensor(g.copy())
        opt.step()
        out.append(tuple(p.detach().numpy().copy() for p in params))
    return out


def check_the_rule(name, options, fused):
    """Two steps on the current backend; after each, the rule and the reference values."""
    params = [xpnet.tensor(W0.copy(), requires_grad=True), xpnet.tensor(C0.copy(), requires_grad=True)]
    arrays = [p.data for p in params]
    opt = getattr(optim, name)(params, fused=fused, **options)
    reference = reference_trajectory(name, options)
    for step, grads in enumerate(GRADS):
        for p, g in zip(params, grads):
            p.grad = xpnet.tensor(g.copy())
        grad_arrays = [p.grad.data for p in params]
        opt.step()
        for k, (p, array, g_array, g, want) in enumerate(zip(params, arrays, grad_arrays, grads, reference[step])):
            where = f"{name} {options}, parameter {k}, step {step + 1}"
            assert p.data is array, f"{where}: p.data was replaced"
            np.testing.assert_allclose(xpnet.to_numpy(array), want, rtol=1e-12, atol=1e-14,
                                       err_msg=f"{where}: w does not hold the new values")
            assert p.grad.data is g_array
            np.testing.assert_array_equal(xpnet.to_numpy(g_array), g, err_msg=f"{where}: g was written")
    return [xpnet.to_numpy(a) for a in arrays]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_generic_update_writes_w_in_place_and_leaves_g(backend, case):
    _, name, options = case
    check_the_rule(name, options, fused=False)


@pytest.mark.parametrize("case", [c for c in CASES if "bias_correction" not in c[2]],
                         ids=[c[0] for c in CASES if "bias_correction" not in c[2]])
def test_generic_update_equals_torch_optim(case):
    _, name, options = case
    want = torch_trajectory(name, options)[-1]
    with xpnet.use_backend("numpy"):
        got = check_the_rule(name, options, fused=False)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def _with_kernel(backend_name):
    """The cases whose optimizer has a kernel registered for ``backend_name`` (registration happens
    when xpnet is imported, CuPy or not)."""
    cases = [c for c in CASES if lookup_kernel(backend_name, getattr(optim, c[1]).kernel_name) is not None]
    return dict(argvalues=cases, ids=[c[0] for c in cases])


@pytest.mark.parametrize("case", **_with_kernel("numpy"))
def test_numpy_kernel_writes_w_in_place_and_leaves_g(case):
    _, name, options = case
    from xpnet.backends.numpy import native

    if native.library() is None:
        pytest.skip(f"compiled kernels: {native.status()}")
    with xpnet.use_backend("numpy"):
        check_the_rule(name, options, fused=True)  # fused=True: a kernel that declines is an error here


@pytest.mark.gpu
@pytest.mark.parametrize("case", **_with_kernel("cupy"))
def test_cupy_kernel_writes_w_in_place_and_leaves_g(case):
    _, name, options = case
    with xpnet.use_backend("cupy"):
        check_the_rule(name, options, fused=True)


def test_state_dict_views_see_each_step(backend):
    model = xpnet.nn.Linear(3, 2)
    sd = model.state_dict()
    opt = optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    before = xpnet.to_numpy(sd["weight"]).copy()
    model.weight.grad = xpnet.ones_like(model.weight)
    opt.step()
    np.testing.assert_array_equal(xpnet.to_numpy(sd["weight"]), before - 0.5)
    np.testing.assert_array_equal(xpnet.to_numpy(sd["weight"]), xpnet.to_numpy(model.weight))


def test_step_scalars_hold_this_steps_numbers():
    """What every implementation receives: the group's options and the per-step numbers, computed
    once by the optimizer (after ``state['step']`` counts the step)."""
    p = xpnet.tensor(W0.copy(), requires_grad=True)
    adam = optim.Adam([p], lr=0.05, betas=(0.8, 0.99))
    s = adam.step_scalars({"step": 3}, adam.param_groups[0])
    assert (s.bias_correction1, s.bias_correction2) == (1 - 0.8 ** 3, 1 - 0.99 ** 3)
    assert (s.lr, s.beta1, s.beta2, s.decoupled, s.amsgrad, s.maximize) == (0.05, 0.8, 0.99, False, False, False)
    plain = optim.AdamW([p], bias_correction=False)
    s = plain.step_scalars({"step": 3}, plain.param_groups[0])
    assert (s.bias_correction1, s.bias_correction2, s.decoupled, s.weight_decay) == (1.0, 1.0, True, 0.01)
    adagrad = optim.Adagrad([p], lr=0.1, lr_decay=0.5)
    assert adagrad.step_scalars({"step": 3}, adagrad.param_groups[0]).clr == 0.1 / (1 + 2 * 0.5)
    sgd = optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True)
    assert sgd.step_scalars({}, sgd.param_groups[0])._asdict() == dict(
        lr=0.1, momentum=0.9, dampening=0, weight_decay=0, nesterov=True, maximize=False)
    rms = optim.RMSprop([p], centered=True)
    assert rms.step_scalars({"step": 1}, rms.param_groups[0])._asdict() == dict(
        lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=True, maximize=False)
