"""BatchNorm1d/2d and LocalResponseNorm: values, gradients and running statistics against PyTorch,
eval mode, momentum (including None), num_batches_tracked, gradcheck, forward mode and errors."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet
import xpnet.nn as nn
import xpnet.nn.functional as F
from xpnet.autodiff import gradcheck, jvp
from nn_cases import arr, assert_close, copy_module_params, tensor, to_np, torch_tensor

SHAPES = {"N,C": (6, 4), "N,C,L": (3, 4, 5), "N,C,H,W": (2, 4, 3, 5)}


def _bn_pair(torch, shape, **kw):
    if len(shape) == 4:
        return nn.BatchNorm2d(4, dtype="float64", **kw), torch.nn.BatchNorm2d(4, dtype=torch.float64, **kw)
    return nn.BatchNorm1d(4, dtype="float64", **kw), torch.nn.BatchNorm1d(4, dtype=torch.float64, **kw)


def _randomize_affine(layer, ref, torch, rng, backend):
    layer.weight.copy_(arr(backend, rng.standard_normal(4)))
    layer.bias.copy_(arr(backend, rng.standard_normal(4)))
    copy_module_params(layer, ref, torch)


@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_batch_norm_training_matches_torch(backend, rng, shape):
    torch = pytest.importorskip("torch")
    layer, ref = _bn_pair(torch, shape, momentum=0.3)
    _randomize_affine(layer, ref, torch, rng, backend)
    for step in range(3):
        x_host = rng.standard_normal(shape) * 2 + step
        x = tensor(backend, x_host)
        y = layer(x)
        xr = torch_tensor(torch, x_host)
        yr = ref(xr)
        assert_close(y, yr)
        g = rng.standard_normal(shape)
        y.backward(arr(backend, g))
        yr.backward(torch.from_numpy(g))
        assert_close(x.grad, xr.grad)
    assert_close(layer.weight.grad, ref.weight.grad)
    assert_close(layer.bias.grad, ref.bias.grad)
    assert_close(layer.running_mean, ref.running_mean)
    assert_close(layer.running_var, ref.running_var)
    assert int(to_np(layer.num_batches_tracked)) == 3 == int(ref.num_batches_tracked)


@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_batch_norm_eval_uses_running_stats(backend, rng, shape):
    torch = pytest.importorskip("torch")
    layer, ref = _bn_pair(torch, shape)
    _randomize_affine(layer, ref, torch, rng, backend)
    for _ in range(2):  # give the running statistics non-trivial values
        h = rng.standard_normal(shape) * 3 + 1
        layer(tensor(backend, h, requires_grad=False))
        ref(torch_tensor(torch, h, requires_grad=False))
    layer.eval()
    ref.eval()
    before = to_np(layer.running_mean).copy(), int(to_np(layer.num_batches_tracked))
    x_host = rng.standard_normal(shape)
    x = tensor(backend, x_host)
    y = layer(x)
    xr = torch_tensor(torch, x_host)
    yr = ref(xr)
    assert_close(y, yr)
    g = rng.standard_normal(shape)
    y.backward(arr(backend, g))
    yr.backward(torch.from_numpy(g))
    assert_close(x.grad, xr.grad)
    assert_close(layer.weight.grad, ref.weight.grad)
    assert_close(layer.bias.grad, ref.bias.grad)
    # eval mode neither updates nor counts
    assert np.array_equal(to_np(layer.running_mean), before[0])
    assert int(to_np(layer.num_batches_tracked)) == before[1] == 2
    # a single sample is fine in eval mode
    assert layer(tensor(backend, rng.standard_normal((1,) + shape[1:]))).shape == (1,) + shape[1:]


def test_running_statistics_formula(backend, rng):
    layer = nn.BatchNorm1d(3, momentum=0.25, dtype="float64")
    x_host = rng.standard_normal((10, 3)) * 4 + 2
    layer(tensor(backend, x_host, requires_grad=False))
    mean, var_unbiased = x_host.mean(0), x_host.var(0, ddof=1)
    np.testing.assert_allclose(to_np(layer.running_mean), 0.75 * 0 + 0.25 * mean, atol=1e-12)
    np.testing.assert_allclose(to_np(layer.running_var), 0.75 * 1 + 0.25 * var_unbiased, atol=1e-12)
    # the normalization itself uses the biased variance
    y = to_np(layer(tensor(backend, x_host, requires_grad=False)))
    np.testing.assert_allclose(y, (x_host - mean) / np.sqrt(x_host.var(0) + 1e-5), atol=1e-10)


def test_momentum_none_is_cumulative_average(backend, rng):
    torch = pytest.importorskip("torch")
    layer, ref = _bn_pair(torch, (5, 4), momentum=None)
    batches = [rng.standard_normal((5, 4)) + i for i in range(4)]
    for b in batches:
        layer(tensor(backend, b, requires_grad=False))
        ref(torch_tensor(torch, b, requires_grad=False))
    np.testing.assert_allclose(to_np(layer.running_mean), np.mean([b.mean(0) for b in batches], axis=0), atol=1e-12)
    assert_close(layer.running_mean, ref.running_mean)
    assert_close(layer.running_var, ref.running_var)
    assert int(to_np(layer.num_batches_tracked)) == 4


def test_no_grad_training_still_updates(backend, rng):
    layer = nn.BatchNorm2d(2)
    with xpnet.no_grad():
        layer(tensor(backend, rng.standard_normal((2, 2, 3, 3)) + 5, dtype="float32"))
    assert int(to_np(layer.num_batches_tracked)) == 1
    assert (to_np(layer.running_mean) > 0.3).all()


def test_without_running_stats_and_affine(backend, rng):
    torch = pytest.importorskip("torch")
    layer = nn.BatchNorm2d(4, affine=False, track_running_stats=False, dtype="float64")
    ref = torch.nn.BatchNorm2d(4, affine=False, track_running_stats=False, dtype=torch.float64)
    assert list(layer.state_dict()) == [] and list(layer.parameters()) == []
    assert layer.running_mean is None and layer.num_batches_tracked is None
    layer.eval()
    ref.eval()
    x_host = rng.standard_normal((3, 4, 2, 3))
    x = tensor(backend, x_host)
    y = layer(x)  # batch statistics even in eval mode
    xr = torch_tensor(torch, x_host)
    yr = ref(xr)
    assert_close(y, yr)
    g = rng.standard_normal(x_host.shape)
    y.backward(arr(backend, g))
    yr.backward(torch.from_numpy(g))
    assert_close(x.grad, xr.grad)


def test_batch_norm_state_dict_and_repr(backend):
    layer = nn.BatchNorm2d(8)
    assert list(layer.state_dict()) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert np.array_equal(to_np(layer.running_var), np.ones(8))
    assert np.array_equal(to_np(layer.running_mean), np.zeros(8))
    assert xpnet.int64 == layer.num_batches_tracked.dtype and layer.num_batches_tracked.shape == ()
    assert repr(layer) == "BatchNorm2d(8, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)"
    assert repr(nn.BatchNorm1d(3, momentum=None)) == \
        "BatchNorm1d(3, eps=1e-05, momentum=None, affine=True, track_running_stats=True)"


def test_batch_norm_functional_and_gradcheck(backend, rng):
    x = tensor(backend, rng.standard_normal((4, 3, 2, 2)))
    w = tensor(backend, rng.standard_normal(3))
    b = tensor(backend, rng.standard_normal(3))
    assert gradcheck(lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), (x, w, b))
    rm = tensor(backend, rng.standard_normal(3), requires_grad=False)
    rv = tensor(backend, rng.random(3) + 0.5, requires_grad=False)
    assert gradcheck(lambda x, w, b: F.batch_norm(x, rm, rv, w, b, training=False), (x, w, b))
    x2 = tensor(backend, rng.standard_normal((5, 3)))
    assert gradcheck(lambda x: F.batch_norm(x, None, None, training=True), (x2,))


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_jvp_matches_vjp(backend, rng, training):
    x, w, b = (tensor(backend, rng.standard_normal(s)) for s in ((4, 3, 2, 2), (3,), (3,)))
    rm = tensor(backend, rng.standard_normal(3), requires_grad=False)
    rv = tensor(backend, rng.random(3) + 0.5, requires_grad=False)
    tangents = tuple(tensor(backend, rng.standard_normal(s), requires_grad=False) for s in ((4, 3, 2, 2), (3,), (3,)))

    def f(x, w, b):
        return F.batch_norm(x, None if training else rm, None if training else rv, w, b, training=training)

    y, jt = jvp(f, (x, w, b), tangents)
    u = rng.standard_normal(y.shape)
    f(x, w, b).backward(arr(backend, u))
    lhs = float((u * to_np(jt)).sum())
    rhs = sum(float((to_np(p.grad) * to_np(t)).sum()) for p, t in zip((x, w, b), tangents))
    assert lhs == pytest.approx(rhs, rel=1e-10)


def test_batch_norm_errors(backend):
    with pytest.raises(ValueError, match=r"BatchNorm2d\(8\): expected input \(N, 8, H, W\), got \(2, 4, 3, 3\)"):
        nn.BatchNorm2d(8)(xpnet.zeros((2, 4, 3, 3)))
    with pytest.raises(ValueError,
                       match=r"BatchNorm1d\(4\): expected input \(N, 4\) or \(N, 4, L\), got \(2, 4, 3, 3\)"):
        nn.BatchNorm1d(4)(xpnet.zeros((2, 4, 3, 3)))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm1d(4)(xpnet.zeros((1, 4)))
    with pytest.raises(TypeError, match="float64.*float32"):
        nn.BatchNorm1d(4)(xpnet.zeros((3, 4), dtype=xpnet.float64))
    with pytest.raises(ValueError, match="needs running_mean"):
        F.batch_norm(xpnet.zeros((3, 4)), None, None, training=False)


def test_batch_norm_float32_stays_float32(backend, rng):
    layer = nn.BatchNorm2d(3)
    x = tensor(backend, rng.standard_normal((4, 3, 5, 5)), dtype="float32")
    y = layer(x)
    y.backward(arr(backend, rng.standard_normal(y.shape), dtype="float32"))
    for a in (y, x.grad, layer.weight.grad, layer.running_mean, layer.running_var):
        assert xpnet.float32 == a.dtype


@pytest.mark.parametrize("size", [1, 2, 3, 5])
@pytest.mark.parametrize("shape", [(2, 7, 3, 4), (3, 6, 5)], ids=["N,C,H,W", "N,C,L"])
def test_local_response_norm_matches_torch(backend, rng, size, shape):
    torch = pytest.importorskip("torch")
    x_host = rng.standard_normal(shape) * 3
    x = tensor(backend, x_host)
    y = nn.LocalResponseNorm(size, alpha=0.5, beta=0.75, k=1.5)(x)
    xr = torch_tensor(torch, x_host)
    yr = torch.nn.LocalResponseNorm(size, alpha=0.5, beta=0.75, k=1.5)(xr)
    assert_close(y, yr)
    g = rng.standard_normal(shape)
    y.backward(arr(backend, g))
    yr.backward(torch.from_numpy(g))
    assert_close(x.grad, xr.grad)


@pytest.mark.parametrize("beta", [0.5, 1.0, 0.6, 2.0])
def test_local_response_norm_betas_match_torch(backend, rng, beta):
    # 0.75, 0.5 and 1 take square-root shortcuts for D^(-beta); any other beta the power function
    torch = pytest.importorskip("torch")
    x_host = rng.standard_normal((2, 6, 3, 4)) * 3
    x = tensor(backend, x_host)
    y = F.local_response_norm(x, 3, alpha=0.3, beta=beta, k=1.2)
    xr = torch_tensor(torch, x_host)
    yr = torch.nn.functional.local_response_norm(xr, 3, alpha=0.3, beta=beta, k=1.2)
    assert_close(y, yr)
    g = rng.standard_normal(x_host.shape)
    y.backward(arr(backend, g))
    yr.backward(torch.from_numpy(g))
    assert_close(x.grad, xr.grad)


def test_local_response_norm_defaults_gradcheck_and_jvp(backend, rng):
    torch = pytest.importorskip("torch")
    x_host = rng.standard_normal((2, 6, 3, 3)) * 10
    layer = nn.LocalResponseNorm(5)
    assert repr(layer) == "LocalResponseNorm(5, alpha=0.0001, beta=0.75, k=1.0)"
    assert_close(layer(tensor(backend, x_host)), torch.nn.LocalResponseNorm(5)(torch_tensor(torch, x_host)))
    x = tensor(backend, rng.standard_normal((2, 5, 2, 3)))
    assert gradcheck(lambda t: F.local_response_norm(t, 3, alpha=0.7, beta=0.6, k=2.0), (x,))
    t = tensor(backend, rng.standard_normal(x.shape), requires_grad=False)
    fn = lambda v: F.local_response_norm(v, 4, alpha=0.7, beta=0.6, k=2.0)  # noqa: E731
    y, jt = jvp(fn, (x,), (t,))
    u = rng.standard_normal(y.shape)
    fn(x).backward(arr(backend, u))
    assert float((u * to_np(jt)).sum()) == pytest.approx(float((to_np(x.grad) * to_np(t)).sum()), rel=1e-10)
    with pytest.raises(ValueError, match="3 or more dimensions"):
        F.local_response_norm(xpnet.zeros((3, 4)), 2)
