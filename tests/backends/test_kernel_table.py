"""The kernel table: every declared kernel is used by a Function or optimizer, every registration
names a declared kernel, and a lookup by anything but a KernelName is an error."""

import pytest

import xpnet
import xpnet.nn  # noqa: F401  -- defines the Functions that hold kernel names
import xpnet.optim  # noqa: F401
from xpnet.autodiff.function import Function
from xpnet.backends import kernels
from xpnet.optim.optimizer import Optimizer


def _subclasses(cls):
    found = set()
    for sub in cls.__subclasses__():
        found.add(sub)
        found |= _subclasses(sub)
    return found


def _used_names():
    used = {}
    for cls in _subclasses(Function) | _subclasses(Optimizer):
        for attr, value in vars(cls).items():
            if isinstance(value, kernels.KernelName):
                used.setdefault(value, []).append(f"{cls.__qualname__}.{attr}")
    return used


def test_every_declared_kernel_is_held_by_a_function_or_optimizer():
    used = _used_names()
    unused = sorted(set(kernels.declared().values()) - set(used))
    assert not unused, f"declared but used by no Function or optimizer: {unused}"


def test_every_registered_kernel_is_looked_up_by_its_user():
    used = _used_names()
    registered = kernels.registered()
    assert registered, "no backend registered a kernel"
    for (backend_name, name), fn in registered.items():
        assert name in used, f"{backend_name} registers {name!r} ({fn.__qualname__}), which nothing looks up"


def test_the_numpy_backend_registers_its_kernels_on_import():
    numpy_names = {name for (backend_name, name) in kernels.registered() if backend_name == "numpy"}
    assert {kernels.CONV2D_FORWARD, kernels.BATCH_NORM_BACKWARD, kernels.SGD_STEP, kernels.MATMUL} <= numpy_names


def test_a_string_is_refused_at_both_ends():
    with pytest.raises(TypeError, match="expected a KernelName"):
        xpnet.get_backend("numpy").kernel("conv2d_fowrard")
    with pytest.raises(TypeError, match="expected a KernelName"):
        kernels.register_kernel("numpy", "conv2d_forward")
    with pytest.raises(ValueError, match="declared twice"):
        kernels.declare("conv2d_forward")


def test_a_second_registration_for_the_same_kernel_is_refused():
    existing = kernels.registered()[("numpy", kernels.CONV2D_FORWARD)]
    with pytest.raises(ValueError, match="already has a 'conv2d_forward' kernel"):
        kernels.register_kernel("numpy", kernels.CONV2D_FORWARD)(lambda *a: None)
    assert kernels.registered()[("numpy", kernels.CONV2D_FORWARD)] is existing
