"""Learning-rate schedulers: sequences equal torch's (1e-12 relative), and saving mid-run then
loading into fresh optimizer + scheduler continues exactly like an uninterrupted run."""

from __future__ import annotations

import math

import numpy as np
import pytest

import xpnet
import xpnet.optim as optim
from xpnet.optim import lr_scheduler as xsched

PLATEAU_METRICS = [1.0, 0.9, 0.95, 0.95, 0.96, 0.8, 0.85, 0.85, 0.85, 0.85, 0.7, 0.7, 0.7, 0.7, 0.7, 0.69,
                   0.72, 0.72, 0.72, 0.72]


def sgd(O, ps):
    return O.SGD([{"params": [ps[0]]}, {"params": [ps[1]], "lr": 0.05}], lr=0.1, momentum=0.9)


def adam(O, ps):
    return O.Adam([{"params": [ps[0]]}, {"params": [ps[1]], "lr": 0.003}], lr=0.01)


def adagrad(O, ps):
    return O.Adagrad(ps, lr=0.1)


def plain_step(sched, i):
    sched.step()


# (id, optimizer, scheduler builder (L = the lr_scheduler module), steps, stepper)
SCHEDULES = [
    ("StepLR", sgd, lambda L, o: L.StepLR(o, step_size=3, gamma=0.5), 12, plain_step),
    ("MultiStepLR", sgd, lambda L, o: L.MultiStepLR(o, milestones=[2, 5, 5, 9], gamma=0.3), 12, plain_step),
    ("ExponentialLR", adam, lambda L, o: L.ExponentialLR(o, gamma=0.9), 12, plain_step),
    ("CosineAnnealingLR", sgd, lambda L, o: L.CosineAnnealingLR(o, T_max=6, eta_min=0.001), 20, plain_step),
    ("CosineAnnealingLR-no-min", adam, lambda L, o: L.CosineAnnealingLR(o, T_max=5), 16, plain_step),
    ("CosineAnnealingWarmRestarts", sgd,
     lambda L, o: L.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2, eta_min=0.01), 25, plain_step),
    ("CosineAnnealingWarmRestarts-T_mult-1", adam, lambda L, o: L.CosineAnnealingWarmRestarts(o, T_0=4), 13,
     plain_step),
    ("CosineAnnealingWarmRestarts-fractional", sgd,
     lambda L, o: L.CosineAnnealingWarmRestarts(o, T_0=2, T_mult=2, eta_min=0.001), 30,
     lambda s, i: s.step((i + 1) * 0.3)),
    ("LinearLR", sgd, lambda L, o: L.LinearLR(o), 8, plain_step),
    ("LinearLR-decay", adam, lambda L, o: L.LinearLR(o, start_factor=1.0, end_factor=0.1, total_iters=4), 8,
     plain_step),
    ("SequentialLR", sgd, lambda L, o: L.SequentialLR(
        o, [L.LinearLR(o, start_factor=0.1, total_iters=3), L.CosineAnnealingLR(o, T_max=5, eta_min=0.002),
            L.StepLR(o, step_size=2, gamma=0.5)], milestones=[3, 8]), 14, plain_step),
    ("OneCycleLR-sgd", sgd, lambda L, o: L.OneCycleLR(o, max_lr=[0.5, 0.2], total_steps=20), 20, plain_step),
    ("OneCycleLR-adam-three-phase-linear", adam, lambda L, o: L.OneCycleLR(
        o, max_lr=0.02, epochs=4, steps_per_epoch=5, pct_start=0.25, anneal_strategy="linear", three_phase=True,
        base_momentum=0.8, max_momentum=[0.9, 0.95]), 20, plain_step),
    ("OneCycleLR-no-momentum", adagrad, lambda L, o: L.OneCycleLR(
        o, max_lr=0.3, total_steps=12, cycle_momentum=False, div_factor=10.0, final_div_factor=100.0), 12,
     plain_step),
    ("ReduceLROnPlateau", sgd, lambda L, o: L.ReduceLROnPlateau(
        o, factor=0.5, patience=2, cooldown=1, min_lr=[0.01, 0.0]), 20, lambda s, i: s.step(PLATEAU_METRICS[i])),
    ("ReduceLROnPlateau-max-abs", adam, lambda L, o: L.ReduceLROnPlateau(
        o, mode="max", threshold_mode="abs", threshold=0.01, patience=1, factor=0.3, min_lr=1e-3),
     20, lambda s, i: s.step(-PLATEAU_METRICS[i])),
    ("StepLR-closed-form", sgd, lambda L, o: L.StepLR(o, step_size=3, gamma=0.5), 10,
     lambda s, i: s.step(2 * i + 1)),
    ("CosineAnnealingLR-closed-form", adam, lambda L, o: L.CosineAnnealingLR(o, T_max=7, eta_min=0.001), 10,
     lambda s, i: s.step(i + 1)),
    ("LinearLR-closed-form", sgd, lambda L, o: L.LinearLR(o, total_iters=6), 9, lambda s, i: s.step(i + 1)),
    ("MultiStepLR-closed-form", adam, lambda L, o: L.MultiStepLR(o, milestones=[2, 4, 4]), 7,
     lambda s, i: s.step(i + 1)),
    ("ExponentialLR-closed-form", sgd, lambda L, o: L.ExponentialLR(o, gamma=0.7), 7, lambda s, i: s.step(i + 1)),
]
IDS = [s[0] for s in SCHEDULES]


def observe(opt):
    """What a schedule drives: each group's lr, and momentum or beta1 where the group has one."""
    out = []
    for g in opt.param_groups:
        out.append(g["lr"])
        if "momentum" in g:
            out.append(g["momentum"])
        if "betas" in g:
            out.append(g["betas"][0])
    return out


def run(O, L, params, case, steps=None, start=0, opt=None, sched=None):
    _, make_opt, make_sched, total, stepper = case
    opt = opt if opt is not None else make_opt(O, params)
    sched = sched if sched is not None else make_sched(L, opt)
    seen = [observe(opt) + list(sched.get_last_lr())] if start == 0 else []
    for i in range(start, start + (total if steps is None else steps)):
        opt.step()
        stepper(sched, i)
        seen.append(observe(opt) + list(sched.get_last_lr()))
    return seen, opt, sched


def xpnet_params():
    return [xpnet.tensor(np.ones(2), requires_grad=True), xpnet.tensor(np.ones(3), requires_grad=True)]


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch's deprecation notice for step(epoch)
@pytest.mark.parametrize("case", SCHEDULES, ids=IDS)
def test_sequence_matches_torch(backend, case):
    torch = pytest.importorskip("torch")
    ours, _, _ = run(optim, xsched, xpnet_params(), case)
    theirs, _, _ = run(torch.optim, torch.optim.lr_scheduler,
                       [torch.ones(2, requires_grad=True), torch.ones(3, requires_grad=True)], case)
    assert len(ours) == len(theirs)
    for t, (a, b) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=0, err_msg=f"after {t} scheduler steps")
    # the schedule must actually change the rate, or the comparison proves little
    assert len({tuple(row) for row in ours}) > 2


@pytest.mark.parametrize("case", SCHEDULES, ids=IDS)
def test_save_mid_run_and_resume_in_fresh_objects(backend, case):
    total = case[3]
    half = total // 2
    whole, _, _ = run(optim, xsched, xpnet_params(), case)
    first, opt, sched = run(optim, xsched, xpnet_params(), case, steps=half)
    opt_sd, sched_sd = opt.state_dict(), sched.state_dict()
    assert "optimizer" not in sched_sd
    # as in PyTorch: build the scheduler, then load the optimizer's and the scheduler's states
    fresh_opt = case[1](optim, xpnet_params())
    fresh_sched = case[2](xsched, fresh_opt)
    fresh_opt.load_state_dict(opt_sd)
    fresh_sched.load_state_dict(sched_sd)
    rest, _, _ = run(optim, xsched, None, case, steps=total - half, start=half, opt=fresh_opt, sched=fresh_sched)
    assert first + rest == whole


def test_state_dict_is_a_copy(backend):
    opt = sgd(optim, xpnet_params())
    sched = xsched.MultiStepLR(opt, milestones=[2, 4])
    sd = sched.state_dict()
    sched.step()
    sched.milestones[7] = 1
    assert sd["last_epoch"] == 0 and 7 not in sd["milestones"]


def test_scheduler_writes_the_live_lr_the_optimizer_uses(backend):
    w = xpnet.tensor(np.array([0.0]), requires_grad=True)
    opt = optim.SGD([w], lr=1.0)
    sched = xsched.StepLR(opt, step_size=1, gamma=0.5)
    for _ in range(3):
        w.grad = xpnet.tensor(np.array([1.0]))
        opt.step()
        sched.step()
    np.testing.assert_allclose(xpnet.to_numpy(w), [-(1.0 + 0.5 + 0.25)])
    assert sched.get_last_lr() == [0.125] and opt.param_groups[0]["initial_lr"] == 1.0


def test_warm_restarts_hit_eta_max_at_each_restart(backend):
    opt = sgd(optim, xpnet_params())
    sched = xsched.CosineAnnealingWarmRestarts(opt, T_0=2, T_mult=2, eta_min=0.0)
    lrs = [sched.get_last_lr()[0]]
    for _ in range(14):
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    restarts = [i for i, lr in enumerate(lrs) if math.isclose(lr, 0.1)]
    assert restarts == [0, 2, 6, 14]


def test_one_cycle_past_total_steps_raises(backend):
    opt = sgd(optim, xpnet_params())
    sched = xsched.OneCycleLR(opt, max_lr=0.1, total_steps=3)
    for _ in range(3):
        sched.step()
    with pytest.raises(ValueError, match="total_steps is 3"):
        sched.step()


@pytest.mark.parametrize("make, error, message", [
    (lambda o: xsched.StepLR(object(), 2), TypeError, "expected an xpnet.optim.Optimizer"),
    (lambda o: xsched.OneCycleLR(o, max_lr=0.1), ValueError, "total_steps"),
    (lambda o: xsched.OneCycleLR(o, max_lr=[0.1], total_steps=5), ValueError, "expected 2 values for max_lr"),
    (lambda o: xsched.OneCycleLR(o, max_lr=0.1, total_steps=5, anneal_strategy="exp"), ValueError,
     "anneal_strategy"),
    (lambda o: xsched.SequentialLR(o, [xsched.StepLR(o, 2), xsched.StepLR(o, 3)], milestones=[]), ValueError,
     "expected 1 milestones"),
    (lambda o: xsched.SequentialLR(o, [xsched.ReduceLROnPlateau(o)], milestones=[]), ValueError, "metric"),
    (lambda o: xsched.ReduceLROnPlateau(o, factor=1.5), ValueError, "factor"),
    (lambda o: xsched.ReduceLROnPlateau(o, mode="up"), ValueError, "mode"),
    (lambda o: xsched.CosineAnnealingWarmRestarts(o, T_0=0), ValueError, "T_0"),
    (lambda o: xsched.LinearLR(o, start_factor=0.0), ValueError, "start_factor"),
    (lambda o: xsched.StepLR(o, 2, last_epoch=4), KeyError, "initial_lr"),
])
def test_invalid_arguments(backend, make, error, message):
    opt = sgd(optim, xpnet_params())
    with pytest.raises(error, match=message):
        make(opt)
