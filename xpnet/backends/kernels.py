"""The kernel table: which fast paths exist, under which names, for which backend.

A fast path is an optional faster way to compute what a Function (or an optimizer) already
computes generically. Its name is a ``KernelName`` declared here, once; the Function or optimizer
that uses it holds that object as a class attribute (``Convolution2d.forward_kernel``), and the
backend package that implements it registers under the same object
(``@register_kernel("numpy", CONV2D_FORWARD)``). A plain string is refused at both ends, so a
misspelled name is an error at import instead of a silent fall back to the slower generic path;
``tests/backends/test_kernel_table.py`` checks that every declared name is used by some Function or
optimizer and that every registration names a declared kernel.

Registration happens when a backend package is imported (``xpnet/backends/numpy/__init__.py``,
``xpnet/backends/cupy/__init__.py``), once.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class KernelName(str):
    """The name of a kernel family member; only ``declare`` makes one."""

    __slots__ = ()


_DECLARED: dict = {}


def declare(name: str) -> KernelName:
    """Declare a kernel name (once)."""
    if name in _DECLARED:
        raise ValueError(f"kernel {name!r} is declared twice")
    kernel = KernelName(name)
    _DECLARED[name] = kernel
    return kernel


def declared() -> dict:
    """{name: KernelName} of every declared kernel."""
    return dict(_DECLARED)


def _check(kernel, where: str) -> KernelName:
    if not isinstance(kernel, KernelName):
        known = ", ".join(sorted(_DECLARED))
        raise TypeError(f"{where}: expected a KernelName from xpnet.backends.kernels, got {kernel!r} "
                        f"({type(kernel).__name__}); declared kernels: {known}")
    return kernel


# ---------------------------------------------------------------------------------- the names
CONV2D_FORWARD = declare("conv2d_forward")
CONV2D_BACKWARD = declare("conv2d_backward")
MAX_POOL2D_FORWARD = declare("max_pool2d_forward")
MAX_POOL2D_BACKWARD = declare("max_pool2d_backward")
AVG_POOL2D_FORWARD = declare("avg_pool2d_forward")
AVG_POOL2D_BACKWARD = declare("avg_pool2d_backward")
BATCH_NORM_FORWARD = declare("batch_norm_forward")
BATCH_NORM_BACKWARD = declare("batch_norm_backward")
LOCAL_RESPONSE_NORM_FORWARD = declare("local_response_norm_forward")
LOCAL_RESPONSE_NORM_BACKWARD = declare("local_response_norm_backward")
RELU_FORWARD = declare("relu_forward")
RELU_BACKWARD = declare("relu_backward")
# Softmax cross-entropy with class-index targets, no class weights, no label smoothing (the
# CrossEntropyLoss Function's common case), on logits x (M, C) with the classes last and targets t (M,):
#   cross_entropy_forward(x, t, ignore_index) -> CrossEntropyForward (below)
#   cross_entropy_backward(s, saved, t, ignore_index) -> dx (M, C) = s_i (p_ic - [c = t_i]) on the rows
#       whose target is a class, s_i 0 p_ic (0, or NaN where p is) on the others; s one value or one per row
CROSS_ENTROPY_FORWARD = declare("cross_entropy_forward")
CROSS_ENTROPY_BACKWARD = declare("cross_entropy_backward")
MATMUL = declare("matmul")
SGD_STEP = declare("sgd_step")
SGD_STEP_GROUP = declare("sgd_step_group")  # one call for a whole parameter group (Optimizer.group_kernel_name)
ADAM_STEP = declare("adam_step")
ADAGRAD_STEP = declare("adagrad_step")
RMSPROP_STEP = declare("rmsprop_step")


# ------------------------------------------------------------------ what the kernels return
# One NamedTuple per kernel family, the same on every implementation, the generic one included.
# ``saved`` is what an implementation's forward keeps for its own backward (a NamedTuple of that
# implementation); a backward that returns one array returns it bare.
class ConvForward(NamedTuple):
    y: Any
    saved: Any


class ConvGrads(NamedTuple):
    dx: Any
    dw: Any
    db: Any


class PoolForward(NamedTuple):
    y: Any
    saved: Any


class BatchNormForward(NamedTuple):
    y: Any
    saved: Any
    batch_mean: Any  # per channel; None in eval mode
    batch_var: Any  # biased, per channel; None in eval mode


class BatchNormGrads(NamedTuple):
    dx: Any
    dgamma: Any
    dbeta: Any


class LocalResponseNormForward(NamedTuple):
    y: Any
    saved: Any


class ReLUForward(NamedTuple):
    y: Any
    saved: Any


class CrossEntropyForward(NamedTuple):
    rows: Any  # (M,): -log p_{i, t_i}, or 0 where t_i = ignore_index (NaN where the generic sum is)
    count: int  # the rows whose target is a class (0 <= t_i < C, not ignore_index)
    bad: int  # the first row whose target is out of range and not ignore_index, or -1
    saved: Any  # for the backward: log p (M, C), on the NumPy backend


# ------------------------------------------------------------------------------- the registry
_REGISTRY: dict = {}  # (backend name, KernelName) -> callable


def register_kernel(backend_name: str, kernel: KernelName):
    """Decorator: register ``fn`` as ``backend_name``'s fast path for ``kernel``. It must give the
    generic code's results (a test case table holds every implementation to it)."""
    _check(kernel, f"register_kernel({backend_name!r}, ...)")

    def deco(fn):
        previous = _REGISTRY.get((backend_name, kernel))
        if previous is not None and previous is not fn:
            raise ValueError(f"register_kernel: {backend_name} already has a {kernel!r} kernel "
                             f"({previous.__module__}.{previous.__qualname__})")
        _REGISTRY[(backend_name, kernel)] = fn
        return fn

    return deco


def lookup_kernel(backend_name: str, kernel: KernelName):
    """The fast path of ``backend_name`` for ``kernel``, or None (the generic code runs)."""
    _check(kernel, "Backend.kernel")
    return _REGISTRY.get((backend_name, kernel))


def registered() -> dict:
    """{(backend name, KernelName): callable} of every registration so far."""
    return dict(_REGISTRY)
