"""Random composite graphs against torch.autograd (float64, same inputs)."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet

torch = pytest.importorskip("torch")


def _both(host_arrays):
    ours = [xpnet.tensor(a, requires_grad=True) for a in host_arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in host_arrays]
    return ours, theirs


def _compare(fn_ours, fn_torch, host_arrays, rtol=1e-10, atol=1e-12):
    ours, theirs = _both(host_arrays)
    out = fn_ours(*ours)
    ref = fn_torch(*theirs)
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy(), rtol=rtol, atol=atol)
    seed = np.random.default_rng(99).standard_normal(tuple(ref.shape))
    out.backward(xpnet.tensor(seed))
    ref.backward(torch.tensor(seed))
    for k, (a, b) in enumerate(zip(ours, theirs)):
        assert (a.grad is None) == (b.grad is None), k
        if b.grad is not None:
            np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=rtol, atol=atol,
                                       err_msg=f"gradient of input {k}")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mlp_cross_entropy(backend, seed):
    rng = np.random.default_rng(seed)
    x, w1, b1, w2, b2 = (rng.standard_normal(s) for s in ((6, 5), (5, 7), (7,), (7, 4), (4,)))
    labels = rng.integers(0, 4, 6)

    def ours(x, w1, b1, w2, b2):
        logits = (x @ w1 + b1).relu() @ w2 + b2
        one_hot = xpnet.tensor(np.eye(4)[labels])
        return -(logits.log_softmax(axis=1) * one_hot).sum(axis=1).mean()

    def theirs(x, w1, b1, w2, b2):
        logits = torch.relu(x @ w1 + b1) @ w2 + b2
        return torch.nn.functional.cross_entropy(logits, torch.tensor(labels))

    _compare(ours, theirs, [x, w1, b1, w2, b2])


@pytest.mark.parametrize("seed", [3, 4])
def test_normalisation_and_pointwise(backend, seed):
    rng = np.random.default_rng(seed)
    x, gamma, beta = rng.standard_normal((4, 3, 5)), rng.standard_normal((3, 1)), rng.standard_normal((1, 5))

    def ours(x, gamma, beta):
        mean = x.mean(axis=(0, 2), keepdims=True)
        var = x.var(axis=(0, 2), keepdims=True, correction=0)
        y = (x - mean) / (var + 1e-5).sqrt() * gamma + beta
        return (y.tanh() ** 2 + y.sigmoid() * x.std(dim=0, keepdim=True)).clip(-0.7, 1.3) - xpnet.maximum(y, 0.2)

    def theirs(x, gamma, beta):
        mean = x.mean(dim=(0, 2), keepdim=True)
        var = x.var(dim=(0, 2), keepdim=True, correction=0)
        y = (x - mean) / (var + 1e-5).sqrt() * gamma + beta
        return ((y.tanh() ** 2 + y.sigmoid() * x.std(dim=0, keepdim=True)).clamp(-0.7, 1.3)
                - torch.maximum(y, torch.tensor(0.2, dtype=torch.float64)))

    _compare(ours, theirs, [x, gamma, beta])


@pytest.mark.parametrize("seed", [5, 6])
def test_attention_block(backend, seed):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((2, 4, 3)) for _ in range(3))

    def ours(q, k, v):
        scores = (q @ k.mT) / np.sqrt(3.0)  # a NumPy scalar acts as a Python float
        return xpnet.softmax(scores, dim=-1) @ v + xpnet.logsumexp(scores, axis=-1, keepdims=True)

    def theirs(q, k, v):
        scores = (q @ k.mT) / np.sqrt(3.0)
        return torch.softmax(scores, dim=-1) @ v + torch.logsumexp(scores, dim=-1, keepdim=True)

    _compare(ours, theirs, [q, k, v])


@pytest.mark.parametrize("seed", [7, 8])
def test_shapes_indexing_and_padding(backend, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((3, 4, 5)), rng.standard_normal((4, 2))
    idx = [2, 0, 2, 1, 2]

    def ours(a, b):
        p = xpnet.pad(a, (1, 2, 0, 1), value=0.5)[:, 1:, ::2]
        left, right = xpnet.split(p, [1, 3], dim=2)
        joined = xpnet.concat([left * 2.0, right.exp()], axis=2).permute(0, 2, 1)
        stacked = xpnet.stack([joined.flatten(1)[:, :8], b.reshape(-1).unsqueeze(0).expand(3, 8)], dim=1)
        picked = stacked[idx]
        return xpnet.where(picked > 0.1, picked, picked * picked).abs().log() + b.T.sum()

    def theirs(a, b):
        p = torch.nn.functional.pad(a, (1, 2, 0, 1), value=0.5)[:, 1:, ::2]
        left, right = torch.split(p, [1, 3], dim=2)
        joined = torch.cat([left * 2.0, right.exp()], dim=2).permute(0, 2, 1)
        stacked = torch.stack([joined.flatten(1)[:, :8], b.reshape(-1).unsqueeze(0).expand(3, 8)], dim=1)
        picked = stacked[torch.tensor(idx)]
        return torch.where(picked > 0.1, picked, picked * picked).abs().log() + b.T.sum()

    _compare(ours, theirs, [a, b])


def test_pow_div_and_minimum_with_broadcast(backend):
    rng = np.random.default_rng(9)
    a, b, c = rng.uniform(0.5, 2.0, (3, 1, 4)), rng.standard_normal((2, 4)), rng.uniform(0.5, 2.0, (4,))

    def ours(a, b, c):
        return (a ** b) / c - xpnet.minimum(b, a) + 2.0 ** b - (1.0 / a) @ c.unsqueeze(1)

    def theirs(a, b, c):
        return (a ** b) / c - torch.minimum(b, a) + 2.0 ** b - (1.0 / a) @ c.unsqueeze(1)

    _compare(ours, theirs, [a, b, c])
