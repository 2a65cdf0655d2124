"""Shared fixtures: ``backend`` runs a test once per usable array backend.

``XPNET_TEST_BACKENDS=numpy,array_api_strict`` narrows the list; cupy joins when a CUDA device
exists. Test ids name the backend: ``test_x[numpy]``, ``test_x[array_api_strict]``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import xpnet
from xpnet.backends import unavailable_reason

CPU_BACKENDS = ("numpy", "array_api_strict")


def _test_backends():
    names = list(CPU_BACKENDS)
    if unavailable_reason("cupy") is None:
        names.append("cupy")
    wanted = os.environ.get("XPNET_TEST_BACKENDS")
    if wanted:
        keep = [w.strip() for w in wanted.split(",") if w.strip()]
        names = [n for n in names if n in keep]
    return names


TEST_BACKENDS = _test_backends()


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device and CuPy")


def pytest_collection_modifyitems(config, items):
    reason = unavailable_reason("cupy")
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"gpu test: cupy {reason}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=TEST_BACKENDS)
def backend(request):
    """The backend under test, made current for the test's duration and seeded with 0."""
    with xpnet.use_backend(request.param) as b:
        xpnet.manual_seed(0)
        yield b


@pytest.fixture
def rng():
    """A host NumPy generator for building test inputs."""
    return np.random.default_rng(1234)


def to_np(x):
    """Host NumPy copy of an array or Tensor of any backend (for assertions)."""
    return xpnet.to_numpy(x)
