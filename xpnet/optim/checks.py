"""Checks of optimizer options shared by the optimizers: one-line ValueErrors naming the optimizer, the
option, the value and what is expected."""

from __future__ import annotations

import numbers


def check_torch_flags(name: str, group: dict, index: int) -> None:
    """torch.optim's implementation switches, accepted so that ported code runs unchanged.

    ``foreach`` (None/True/False) and ``capturable`` only choose how PyTorch schedules the same
    arithmetic, so xpnet stores and otherwise ignores them; ``differentiable=True`` asks for a step
    that autograd can differentiate through, which no xpnet optimizer records, so it is refused.
    """
    foreach = group.get("foreach")
    if foreach is not None and not isinstance(foreach, bool):
        raise ValueError(f"{name}: invalid foreach={foreach!r} in group {index}; expected None, True or False")
    for key in ("capturable", "differentiable", "maximize"):
        if key in group and not isinstance(group[key], bool):
            raise ValueError(f"{name}: invalid {key}={group[key]!r} in group {index}; expected True or False")
    if group.get("differentiable"):
        raise ValueError(f"{name}: differentiable=True in group {index} is not supported; xpnet optimizer steps "
                         "are not recorded by autograd (use differentiable=False)")


def check_real(name: str, key: str, value, index: int, low: float, high: float | None = None,
               high_open: bool = False) -> None:
    """A ValueError naming the option unless ``value`` is a real number in [low, high] (or [low, high))."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value
    if ok:
        ok = value >= low and (high is None or (value < high if high_open else value <= high))
    if not ok:
        if high is None:
            expected = f"{key} >= {low}"
        else:
            expected = f"{low} <= {key} {'<' if high_open else '<='} {high}"
        raise ValueError(f"{name}: invalid {key}={value!r} in group {index}; expected {expected}")


def check_betas(name: str, betas, index: int) -> None:
    """A ValueError unless ``betas`` is a pair of real numbers, each in [0, 1)."""
    ok = isinstance(betas, (tuple, list)) and len(betas) == 2 and all(
        isinstance(b, numbers.Real) and not isinstance(b, bool) and 0.0 <= b < 1.0 for b in betas)
    if not ok:
        raise ValueError(f"{name}: invalid betas={betas!r} in group {index}; expected two values in [0, 1)")


def check_bool(name: str, key: str, value, index: int) -> None:
    """A ValueError naming the option unless ``value`` is True or False."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}: invalid {key}={value!r} in group {index}; expected True or False")
