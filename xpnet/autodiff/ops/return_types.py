"""The named pairs that selections return, as ``torch.return_types``: ``values`` and ``indices``.

``values, indices = xpnet.max(x, 1)`` unpacks like a tuple; ``xpnet.max(x, 1).indices`` reads by
name; ``xpnet.max(x, 1)[0]`` indexes. The values are differentiable, the indices (int64) are not.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class max(NamedTuple):  # noqa: A001 - torch.return_types.max
    """``max(x, dim)``: the largest values along ``dim`` and where they are (first occurrence)."""

    values: Any
    indices: Any


class min(NamedTuple):  # noqa: A001 - torch.return_types.min
    """``min(x, dim)``: the smallest values along ``dim`` and where they are (first occurrence)."""

    values: Any
    indices: Any


class sort(NamedTuple):
    """``sort(x, dim)``: the values in order along ``dim`` and the positions they came from."""

    values: Any
    indices: Any


class topk(NamedTuple):
    """``topk(x, k, dim)``: the k largest (or smallest) values along ``dim`` and their positions."""

    values: Any
    indices: Any


__all__ = ["max", "min", "sort", "topk"]
