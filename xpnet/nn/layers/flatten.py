"""Flatten: merge a range of dimensions into one (by default all but the batch dimension)."""

from __future__ import annotations

from ..functional.linear import flatten
from ..module import Module


class Flatten(Module):
    """(N, d1, ..., dk) -> (N, d1 * ... * dk) with the defaults ``start_dim=1, end_dim=-1``."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim = int(start_dim)
        self.end_dim = int(end_dim)

    def forward(self, input):
        return flatten(input, self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
