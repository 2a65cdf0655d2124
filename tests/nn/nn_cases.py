"""Helpers shared by the tests/nn/test_nn_*.py files: host <-> backend arrays and torch comparisons."""

from __future__ import annotations

import numpy as np

import xpnet


def to_np(x):
    return xpnet.to_numpy(x)


def arr(backend, host, dtype="float64"):
    """A raw array of ``backend`` from host data."""
    return backend.from_host(np.asarray(host, dtype=dtype))


def tensor(backend, host, requires_grad=True, dtype="float64"):
    return xpnet.Tensor(arr(backend, host, dtype), requires_grad=requires_grad)


def torch_tensor(torch, host, requires_grad=True, dtype="float64"):
    return torch.tensor(np.asarray(host, dtype=dtype), requires_grad=requires_grad)


def assert_close(actual, expected, atol=1e-6, rtol=0.0):
    """Compare an xpnet Tensor/array with a torch tensor or NumPy array."""
    if hasattr(expected, "detach"):
        expected = expected.detach().numpy()
    a = to_np(actual)
    assert a.shape == np.shape(expected), (a.shape, np.shape(expected))
    np.testing.assert_allclose(a, expected, atol=atol, rtol=rtol)


def copy_module_params(xp_module, torch_module, torch):
    """Load xpnet module's parameters into the torch module (float64)."""
    with torch.no_grad():
        for (name, p), (tname, tp) in zip(xp_module.named_parameters(), torch_module.named_parameters()):
            assert name == tname, (name, tname)
            tp.copy_(torch.from_numpy(to_np(p).astype(np.float64)))
