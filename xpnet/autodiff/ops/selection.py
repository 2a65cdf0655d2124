"""Selection by order and by mask: sort, argsort, topk, index_select and masked_fill.

The orderings are stable sorts (``xp.argsort(..., stable=True)``), so equal values keep their
order: ascending and descending ties come out as ``torch.sort(..., stable=True)`` gives them.
Sorted values are read with ``scatter.Gather`` at the sorting indices, so their gradient goes
back to the positions the values came from; the indices themselves carry no gradient.
"""

from __future__ import annotations

from ...backends import backend_name_of, dtype_name, is_float_dtype
from ..function import Function
from ..tensor import Tensor
from . import return_types
from ._common import namespace, normalize_dim, raw
from .compare import where
from .elementwise import astype
from .indexing import take
from .gather_scatter import Gather, as_index


class ArgSort(Function):
    """y = the positions that order x along one axis, smallest first (largest first when
    descending), equal values in their original order; the first k of them when k is given.
    Piecewise constant: no gradient."""

    differentiable = False

    @staticmethod
    def forward(ctx, x, axis=-1, descending=False, k=None):
        order = namespace(x).argsort(x, axis=axis, descending=descending, stable=True)
        if k is None:
            return order
        return order[tuple(slice(0, k) if a == axis else slice(None) for a in range(x.ndim))]


def _dim_or_axis(op, dim, axis):
    """PyTorch's ``dim`` (default -1) or the Array API's ``axis``."""
    if axis is None:
        return dim
    if dim != -1 and dim != axis:
        raise TypeError(f"{op}: got both axis={axis!r} and dim={dim!r}; pass one of them")
    return axis


def _one_dim(op, x, dim):
    data = raw(x)
    if not hasattr(data, "shape"):
        raise TypeError(f"{op}: expected a Tensor, got {type(x).__name__}")
    if data.ndim == 0:
        raise ValueError(f"{op}: expected a Tensor of at least one dimension, got a 0-dimensional one")
    return normalize_dim(dim, data.ndim, op)


def argsort(input, dim=-1, descending=False, stable=False, *, axis=None):  # noqa: A002
    """Positions that sort ``input`` along ``dim`` (int64, no gradient), as ``torch.argsort``.
    The sort is always stable: equal values keep their order (``stable`` is accepted)."""
    d = _one_dim("argsort", input, _dim_or_axis("argsort", dim, axis))
    return ArgSort.apply(input, axis=d, descending=bool(descending))


def sort(input, dim=-1, descending=False, stable=False, *, axis=None):  # noqa: A002
    """``(values, indices)`` of ``input`` sorted along ``dim``, as ``torch.sort`` (stable: ties keep
    their order). dL/dinput: G of each value goes back to the position it came from (a gather's
    gradient)."""
    d = _one_dim("sort", input, _dim_or_axis("sort", dim, axis))
    indices = ArgSort.apply(input, axis=d, descending=bool(descending))
    return return_types.sort(Gather.apply(input, indices.data, dim=d), indices)


def topk(input, k, dim=-1, largest=True, sorted=True):  # noqa: A002
    """``(values, indices)`` of the ``k`` largest (``largest=False``: smallest) entries along
    ``dim``, as ``torch.topk``; always in sorted order, ties by position (torch leaves the order
    of ties unspecified). dL/dinput: each value's G goes back to its position, 0 elsewhere."""
    dim = -1 if dim is None else dim
    d = _one_dim("topk", input, dim)
    n = raw(input).shape[d]
    k = int(k)
    if not 0 <= k <= n:
        raise RuntimeError(f"topk: k={k} is out of range for dimension {d} of size {n}")
    indices = ArgSort.apply(input, axis=d, descending=bool(largest), k=k)
    return return_types.topk(Gather.apply(input, indices.data, dim=d), indices)


def index_select(input, dim, index):  # noqa: A002
    """The entries of ``input`` at the 1-D integer ``index`` along ``dim``, as
    ``torch.index_select`` (negative entries count from the end). dL/dinput: G scatter-added back
    to the selected positions (an index repeated k times adds k gradients)."""
    data = raw(input)
    d = _one_dim("index_select", input, dim)
    idx = as_index(index, data, "index_select")
    if idx.ndim > 1:
        raise ValueError(f"index_select: index must be 0- or 1-dimensional, got shape {tuple(idx.shape)}")
    xp = namespace(data)
    n = data.shape[d]
    if idx.ndim == 0:
        idx = xp.reshape(idx, (1,))
    if idx.shape[0] and bool(xp.any(xp.logical_or(idx < -n, idx >= n))):
        raise RuntimeError(f"index_select: index out of range for dimension {d} with size {n}")
    return take(input, idx, axis=d)


def _broadcast_shape(a, b):
    a, b = tuple(a), tuple(b)
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    out = []
    for p, q in zip(a, b):
        if p != q and 1 not in (p, q):
            return None
        out.append(q if p == 1 else p)
    return tuple(out)


def masked_fill(input, mask, value):  # noqa: A002
    """``input`` with ``value`` (a number or a 0-d Tensor, cast to input's dtype) where the
    boolean ``mask`` (broadcast to input's shape) holds, as ``torch.masked_fill``.

    dL/dinput = G * [not mask]        dL/dvalue = Σ G * [mask]   (a where() underneath)
    """
    data = raw(input)
    m = raw(mask)
    xp = namespace(data)
    if backend_name_of(m) is None or m.dtype != xp.bool:
        got = type(mask).__name__ if backend_name_of(m) is None else dtype_name(m.dtype)
        raise TypeError(f"masked_fill: mask must be a boolean Tensor, got {got}")
    if _broadcast_shape(m.shape, data.shape) != tuple(data.shape):
        raise ValueError(f"masked_fill: a mask of shape {tuple(m.shape)} does not broadcast to the "
                         f"input's shape {tuple(data.shape)}")
    if isinstance(value, (Tensor,)) or backend_name_of(value) is not None:
        v = raw(value)
        if v.ndim != 0:
            raise ValueError(f"masked_fill: value must be a number or a 0-dimensional Tensor, got shape "
                             f"{tuple(v.shape)}")
        if v.dtype != data.dtype:
            value = astype(value, data.dtype)
    elif not isinstance(value, (int, float, bool)):
        raise TypeError(f"masked_fill: value must be a number or a 0-dimensional Tensor, got "
                        f"{type(value).__name__}")
    elif data.dtype == xp.bool:
        value = bool(value)
    elif not is_float_dtype(data.dtype):
        value = int(value)  # torch truncates a float fill of an integer Tensor
    return where(mask, value, input)


__all__ = ["argsort", "sort", "topk", "index_select", "masked_fill"]
