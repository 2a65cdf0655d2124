"""How Tensor and Function are put together: every method and operator is a ``def`` in the Tensor
class body or in the one mixin it inherits, TorchMethods (nothing installed with setattr),
Function carries no patched-in Tensor, and the Tensor-or-array unwrapping has one definition."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import numpy as np
import pytest

import xpnet
from xpnet.autodiff import Function, Tensor, TorchMethods

OPERATORS = [f"__{name}__" for name in ("add sub mul truediv pow matmul").split()]
OPERATORS += [f"__r{name[2:]}" for name in OPERATORS]
OPERATORS += [f"__{name}__" for name in "eq ne lt le gt ge neg abs getitem".split()]
METHODS = ("exp log sqrt abs tanh sigmoid relu clip clamp sum mean max min var std reshape transpose "
           "permute flatten squeeze unsqueeze logsumexp softmax log_softmax maximum minimum argmax argmin "
           "view expand square split astype float double size numel dim").split()
PROPERTIES = "shape dtype ndim device backend is_leaf grad_fn T mT".split()


@pytest.mark.parametrize("name", OPERATORS + METHODS)
def test_method_is_a_def_in_the_class_body(name):
    assert name in Tensor.__dict__, f"Tensor.{name} is not defined in the class body"
    method = Tensor.__dict__[name]
    assert inspect.isfunction(method), f"Tensor.{name} is {type(method).__name__}, not a function"
    assert method.__qualname__ == f"Tensor.{name}", method.__qualname__


@pytest.mark.parametrize("name", PROPERTIES)
def test_property_is_defined_in_the_class_body(name):
    prop = Tensor.__dict__[name]
    assert isinstance(prop, property)
    assert prop.fget.__qualname__ == f"Tensor.{name}"


def test_every_member_is_defined_in_the_class_body():
    # one mixin (the torch surface, tensor_methods.py) and no other base supplies methods: what
    # object does not have, Tensor's body or TorchMethods' body defines
    assert Tensor.__mro__ == (Tensor, TorchMethods, object)
    assert set(dir(Tensor)) - set(dir(object)) <= set(Tensor.__dict__) | set(TorchMethods.__dict__)
    # and whatever sits in either __dict__ was written there: a function installed by setattr has
    # the qualname of the factory or lambda that made it ("_binary.<locals>.method", "<lambda>")
    for cls in (Tensor, TorchMethods):
        for name, value in cls.__dict__.items():
            if name == "__hash__":
                continue  # object.__hash__ itself, named in the class body (see the next test)
            fn = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
            if callable(fn) and not isinstance(fn, type):
                assert inspect.isfunction(fn), f"{cls.__name__}.{name} is {type(value).__name__}"
                assert fn.__qualname__ == f"{cls.__name__}.{name}", f"{cls.__name__}.{name} is {fn.__qualname__}"


def test_hash_is_identity_in_the_class_body():
    # defining __eq__ would make Tensor unhashable; the class body restores object's identity hash
    assert Tensor.__dict__["__hash__"] is object.__hash__
    a, b = xpnet.tensor(np.ones(2)), xpnet.tensor(np.ones(2))
    assert len({a, b, a}) == 2 and {a: 1}[a] == 1


def test_operators_and_reflected_forms(backend):
    x = xpnet.tensor(np.array([1.0, 2.0, 4.0]))
    h = np.array([1.0, 2.0, 4.0])
    cases = {
        "x + 3": (x + 3, h + 3), "3 + x": (3 + x, 3 + h),
        "x - 3": (x - 3, h - 3), "3 - x": (3 - x, 3 - h),
        "x * 3": (x * 3, h * 3), "3 * x": (3 * x, 3 * h),
        "x / 4": (x / 4, h / 4), "4 / x": (4 / x, 4 / h),
        "x ** 2": (x ** 2, h ** 2), "2 ** x": (2 ** x, 2 ** h),
        "-x": (-x, -h), "abs(-x)": (abs(-x), h), "x[1:]": (x[1:], h[1:]),
        "x @ x": (x @ x, h @ h),
        "x < 2": (x < 2, h < 2), "x <= 2": (x <= 2, h <= 2), "x > 2": (x > 2, h > 2),
        "x >= 2": (x >= 2, h >= 2), "x == 2": (x == 2, h == 2), "x != 2": (x != 2, h != 2),
    }
    for text, (got, want) in cases.items():
        assert isinstance(got, Tensor), text
        np.testing.assert_allclose(xpnet.to_numpy(got), want, err_msg=text)
    m = xpnet.tensor(np.arange(6.0).reshape(2, 3))
    a = backend.asarray(np.ones((2, 2)))
    # only NumPy hands ``array @ Tensor`` over to Tensor.__rmatmul__ (__array_priority__)
    got = a @ m if backend.name == "numpy" else m.__rmatmul__(a)
    np.testing.assert_allclose(xpnet.to_numpy(got), np.ones((2, 2)) @ np.arange(6.0).reshape(2, 3))


def test_in_place_operators_rebind_to_a_new_tensor():
    x = xpnet.tensor(np.ones(2), requires_grad=True)
    y = x * 1.0
    before = y
    y += 1.0
    y *= 2.0
    assert y is not before
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0])


def test_function_has_no_tensor_attribute():
    assert not hasattr(Function, "Tensor")
    function = importlib.import_module("xpnet.autodiff.function")
    assert function.Tensor is Tensor  # function.py imports it; nothing sets it from outside


def _import_time_patches(path):
    """``obj.attr = ...`` and ``setattr(...)`` that run at import: in the module body, in a loop or
    condition there, or in a class body (not inside a function, which runs only when called)."""
    found = []
    blocks = ("body", "orelse", "finalbody", "handlers")

    def visit(statements):
        for node in statements:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if any(getattr(node, field, None) for field in blocks):  # class, loop, if, with, try
                for field in blocks:
                    visit(getattr(node, field, None) or [])
                continue
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                found.extend(f"{path.name}:{node.lineno}" for t in targets if isinstance(t, ast.Attribute))
            found.extend(f"{path.name}:{call.lineno}" for call in ast.walk(node)
                         if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "setattr")

    visit(ast.parse(path.read_text()).body)
    return found


def test_autodiff_patches_nothing_at_import():
    root = Path(xpnet.autodiff.__file__).parent
    patches = [p for path in sorted(root.rglob("*.py")) for p in _import_time_patches(path)]
    assert patches == [], f"attributes set on other objects at import: {patches}"


UNWRAP_NAMES = {"raw", "_raw", "unwrap", "_unwrap", "_data", "_array", "as_array", "_as_array", "_arr"}


@pytest.mark.parametrize("module_name", [
    "xpnet.autodiff.tensor", "xpnet.autodiff.function", "xpnet.autodiff.forward",
    "xpnet.autodiff.ops._common", "xpnet.autodiff.ops.reduction", "xpnet.autodiff.ops.shape",
    "xpnet.autodiff.ops.indexing", "xpnet.autodiff.ops.linalg", "xpnet.nn.functional._arrays",
    "xpnet.nn.functional.activation", "xpnet.nn.functional.loss", "xpnet.train.metrics", "xpnet.amp",
])
def test_one_unwrap_helper(module_name):
    """Each module uses xpnet.backends.unwrap, or the ops' isinstance fast path ``raw`` (defined
    once, in autodiff.ops._common, for the per-operation paths)."""
    from xpnet.autodiff.ops._common import raw
    from xpnet.backends import unwrap

    module = importlib.import_module(module_name)
    for name in UNWRAP_NAMES & set(vars(module)):
        assert getattr(module, name) in (unwrap, raw), f"{module_name}.{name} is its own unwrap helper"


def test_raw_and_unwrap_agree(backend):
    from xpnet.autodiff.ops._common import raw
    from xpnet.backends import unwrap

    a = backend.asarray(np.ones(3))
    t = xpnet.tensor(a)
    for value in (t, a, 2.0, None, [1, 2]):
        assert raw(value) is unwrap(value)


def test_forward_mode_state_is_read_through_forward_mode_active():
    package = Path(xpnet.__file__).parent
    function_py = package / "autodiff" / "function.py"
    readers = [str(path.relative_to(package)) for path in sorted(package.rglob("*.py"))
               if path != function_py and "_forward_mode" in path.read_text()]
    assert readers == [], f"use autodiff.function.forward_mode_active() instead of _forward_mode: {readers}"
