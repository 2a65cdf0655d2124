"""Dropout layer (inverted: scaled at train time, identity in eval)."""

from __future__ import annotations

from ..functional.dropout import dropout
from ..module import Module


class Dropout(Module):
    """Zero each element with probability ``p`` in training mode and scale the rest by 1/(1-p);
    return the input unchanged in eval mode."""

    def __init__(self, p: float = 0.5, inplace: bool = False):
        super().__init__()
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: probability p must be a number between 0 and 1, got {p!r}")
        self.p = float(p)
        self.inplace = bool(inplace)

    def forward(self, input):
        return dropout(input, self.p, self.training, self.inplace)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"
