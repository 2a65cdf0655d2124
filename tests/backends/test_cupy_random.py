"""The CuPy backend's counter-based generator: its device draws equal the host reference of the same
hash, its state round-trips, and the draws have the right distribution. Needs a GPU (``-m gpu``)."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet
from xpnet.backends.cupy import random as cupy_random

pytestmark = pytest.mark.gpu


@pytest.fixture
def rng():
    pytest.importorskip("cupy")
    generator = xpnet.get_backend("cupy").rng
    generator.seed(7)
    return generator


def test_uniform_and_normal_equal_the_host_reference(rng):
    state = rng.get_state()["device"]
    u = xpnet.to_numpy(rng.uniform((3, 500), low=-2.0, high=3.0, dtype="float64"))
    ref = -2.0 + 5.0 * (1.0 - cupy_random.host_units(state["key"], state["counter"], 1500))
    np.testing.assert_allclose(u.ravel(), ref, rtol=1e-14, atol=1e-14)
    counter = state["counter"] + 1500
    assert rng.get_state()["device"]["counter"] == counter
    z = xpnet.to_numpy(rng.normal((1000,), mean=1.0, std=2.0, dtype="float64"))
    units = cupy_random.host_units(state["key"], counter, 2000)
    ref = 1.0 + 2.0 * np.sqrt(-2.0 * np.log(units[0::2])) * np.cos(2 * np.pi * units[1::2])
    np.testing.assert_allclose(z, ref, rtol=1e-12, atol=1e-12)


def test_state_round_trip_repeats_the_draws(rng):
    state = rng.get_state()
    a = xpnet.to_numpy(rng.bernoulli((4096,), 0.3, dtype="float32"))
    b = xpnet.to_numpy(rng.normal((17, 3), dtype="float32"))
    rng.seed(99)
    rng.set_state(state)
    np.testing.assert_array_equal(xpnet.to_numpy(rng.bernoulli((4096,), 0.3, dtype="float32")), a)
    np.testing.assert_array_equal(xpnet.to_numpy(rng.normal((17, 3), dtype="float32")), b)


def test_distributions(rng):
    n = 1 << 20
    u = xpnet.to_numpy(rng.uniform((n,), dtype="float32"))
    assert u.dtype == np.float32 and u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 3e-3 and abs(u.var() - 1 / 12) < 2e-3
    z = xpnet.to_numpy(rng.normal((n,), dtype="float64"))
    assert abs(z.mean()) < 5e-3 and abs(z.std() - 1.0) < 5e-3
    m = xpnet.to_numpy(rng.bernoulli((n,), 0.25, dtype="float16"))
    assert m.dtype == np.float16 and set(np.unique(m)) <= {0.0, 1.0}
    assert abs(m.astype(np.float64).mean() - 0.25) < 3e-3
    # consecutive draws do not repeat each other
    assert not np.array_equal(xpnet.to_numpy(rng.uniform((64,))), xpnet.to_numpy(rng.uniform((64,))))
