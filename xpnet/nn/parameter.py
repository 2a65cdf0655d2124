"""Parameter: a Tensor that a Module registers as trainable state."""

from __future__ import annotations

from ..autodiff.tensor import Tensor
from ..backends import get_backend, is_float_dtype


class Parameter(Tensor):
    """A leaf Tensor that ``Module`` collects in ``parameters()`` (``requires_grad=True`` by default).

    ``Parameter(data)`` wraps a raw array, a Tensor (its array, not its history) or anything
    ``Backend.asarray`` accepts; ``Parameter()`` is an empty float array of the default dtype.
    Integer data can be a Parameter only with ``requires_grad=False``.
    """

    def __init__(self, data=None, requires_grad: bool = True):
        if data is None:
            backend = get_backend()
            data = backend.xp.zeros((0,), dtype=backend.default_dtype, device=backend.device)
        elif isinstance(data, Tensor):
            data = data.data
        super().__init__(data, requires_grad=False)
        if requires_grad:
            if not is_float_dtype(self.data.dtype):
                raise TypeError(
                    f"Parameter: only floating-point data can require gradients, got dtype {self.data.dtype}; "
                    "pass requires_grad=False for integer state"
                )
            self.requires_grad_(True)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()
