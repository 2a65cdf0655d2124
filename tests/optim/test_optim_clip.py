"""Gradient clipping: clip_grad_norm_ against PyTorch and the closed form; clip_grad_value_."""

from __future__ import annotations

import math

import numpy as np
import pytest

import xpnet
from xpnet.optim import clip_grad_norm_, clip_grad_value_

_rng = np.random.default_rng(3)
GRADS = [_rng.normal(size=(3, 4)), _rng.normal(size=(5,)) * 3.0, _rng.normal(size=(2, 2, 2))]


def make_params(grads=GRADS, dtype=np.float64):
    params = []
    for g in grads:
        p = xpnet.tensor(np.zeros(g.shape, dtype=dtype), requires_grad=True)
        p.grad = xpnet.tensor(g.astype(dtype))
        params.append(p)
    return params


def closed_form_norm(grads, p):
    flat = np.concatenate([g.ravel() for g in grads])
    if math.isinf(p):
        return np.abs(flat).max()
    return (np.abs(flat) ** p).sum() ** (1.0 / p)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf, "inf"])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_closed_form(backend, norm_type, max_norm):
    params = make_params()
    total = clip_grad_norm_(params, max_norm, norm_type=norm_type)
    expected = closed_form_norm(GRADS, float(norm_type))
    assert isinstance(total, xpnet.Tensor) and total.shape == ()
    np.testing.assert_allclose(xpnet.to_numpy(total), expected, rtol=1e-12)
    coef = min(1.0, max_norm / (expected + 1e-6))
    for p, g in zip(params, GRADS):
        np.testing.assert_allclose(xpnet.to_numpy(p.grad), g * coef, rtol=1e-12)
    if max_norm < expected:
        np.testing.assert_allclose(closed_form_norm([xpnet.to_numpy(p.grad) for p in params], float(norm_type)),
                                   max_norm, rtol=1e-5)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf])
def test_clip_grad_norm_matches_torch(backend, norm_type):
    torch = pytest.importorskip("torch")
    params = make_params()
    tparams = []
    for g in GRADS:
        t = torch.zeros(g.shape, dtype=torch.float64, requires_grad=True)
        t.grad = torch.from_numpy(g.copy())
        tparams.append(t)
    total = clip_grad_norm_(params, 0.7, norm_type=norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(tparams, 0.7, norm_type=norm_type)
    np.testing.assert_allclose(xpnet.to_numpy(total), ttotal.numpy(), rtol=1e-12)
    for p, t in zip(params, tparams):
        np.testing.assert_allclose(xpnet.to_numpy(p.grad), t.grad.numpy(), rtol=1e-12)


def test_clip_grad_norm_skips_missing_grads_and_accepts_one_tensor(backend):
    params = make_params()
    params.append(xpnet.tensor(np.ones(3), requires_grad=True))  # no grad: ignored
    total = clip_grad_norm_(iter(params), 1e9)
    np.testing.assert_allclose(xpnet.to_numpy(total), closed_form_norm(GRADS, 2.0), rtol=1e-12)
    assert params[-1].grad is None
    single = make_params(GRADS[:1])[0]
    total = clip_grad_norm_(single, 1.0)
    np.testing.assert_allclose(xpnet.to_numpy(total), np.linalg.norm(GRADS[0]), rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(xpnet.to_numpy(single.grad)), 1.0, rtol=1e-5)


def test_clip_grad_norm_without_grads_returns_zero(backend):
    total = clip_grad_norm_([xpnet.tensor(np.ones(2), requires_grad=True)], 1.0)
    assert float(xpnet.to_numpy(total)) == 0.0


def test_clip_grad_norm_keeps_dtype_and_device(backend):
    params = make_params(dtype=np.float32)
    total = clip_grad_norm_(params, 0.5)
    assert xpnet.to_numpy(total).dtype == np.float32
    assert all(xpnet.to_numpy(p.grad).dtype == np.float32 for p in params)
    assert xpnet.backends.describe_device(total.data) == xpnet.backends.describe_device(params[0].grad.data)


def test_clip_grad_norm_replaces_the_gradient_array(backend):
    params = make_params()
    old = params[0].grad.data
    clip_grad_norm_(params, 0.1)
    np.testing.assert_array_equal(xpnet.to_numpy(old), GRADS[0])


@pytest.mark.filterwarnings("ignore:invalid value encountered")  # inf * 0 -> nan, as in torch
def test_clip_grad_norm_nonfinite(backend):
    grads = [GRADS[0].copy(), GRADS[1]]
    grads[0][0, 0] = np.inf
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm_(make_params(grads), 1.0, error_if_nonfinite=True)
    total = clip_grad_norm_(make_params(grads), 1.0)
    assert math.isinf(float(xpnet.to_numpy(total)))


def test_clip_grad_value(backend):
    params = make_params()
    assert clip_grad_value_(params, 0.5) is None
    for p, g in zip(params, GRADS):
        np.testing.assert_array_equal(xpnet.to_numpy(p.grad), np.clip(g, -0.5, 0.5))
    assert np.abs(GRADS[1]).max() > 0.5  # something was actually clipped


def test_clip_grad_value_matches_torch(backend):
    torch = pytest.importorskip("torch")
    params = make_params()
    t = torch.zeros(GRADS[1].shape, dtype=torch.float64, requires_grad=True)
    t.grad = torch.from_numpy(GRADS[1].copy())
    torch.nn.utils.clip_grad_value_([t], 1.5)
    clip_grad_value_(params[1], 1.5)
    np.testing.assert_array_equal(xpnet.to_numpy(params[1].grad), t.grad.numpy())
