"""Indexing: ``x[index]`` with ints, slices, None, Ellipsis and one integer array (or 1-D mask).

Basic indices (ints, slices, None, Ellipsis) are applied with the namespace's own ``__getitem__``;
one integer array (an int Tensor, a raw integer array or a list of ints) then selects along its
axis through ``xp.take``. Placement of the selected axes follows NumPy and PyTorch: where the
array stood when the array and any integer indices are adjacent, at the front otherwise.

The backward of the integer-array part is a scatter-add (repeated indices accumulate), built
from standard functions only: a one-hot matrix product for small index sets, and otherwise a
stable sort, a cumulative sum and two ``searchsorted`` look-ups (segment sums).
"""

from __future__ import annotations

import operator

from ...backends import backend_name_of, check_same_device
from ..function import Function
from ..tensor import Tensor
from ._common import namespace, normalize_dim, pick_axis, raw

# Above this many one-hot entries (index count × axis length) the sort-based scatter-add is used.
ONE_HOT_LIMIT = 1 << 22


class _Plan:
    """A parsed subscript: the basic part, and where and how the integer array selects."""

    __slots__ = ("basic", "basic_trivial", "setter", "array", "axis", "index_shape", "to_front",
                 "selected_shape", "in_shape", "out_shape")


def _is_int(v):
    """A Python int or a NumPy integer scalar (not a bool); arrays, even 0-d, take the array path."""
    if isinstance(v, int):
        return not isinstance(v, bool)
    if type(v).__module__ == "numpy" and getattr(v, "shape", None) == () and not hasattr(v, "__len__"):
        try:
            operator.index(v)
        except TypeError:
            return False
        return type(v).__name__ != "bool"
    return False


def _plan(x, index) -> _Plan:
    if not isinstance(index, tuple):
        index = (index,)
    ndim = x.ndim
    items = []
    array_at = None
    for k, item in enumerate(index):
        if item is None or item is Ellipsis or isinstance(item, slice):
            items.append(item)
        elif isinstance(item, bool):
            raise TypeError("getitem: a bool is not an index; use a boolean Tensor mask or where()")
        elif _is_int(item):
            items.append(operator.index(item))
        else:
            if array_at is not None:
                raise TypeError("getitem: only one integer-array index per subscript is supported "
                                "(index the axes one after another)")
            array_at = len(items)
            items.append(_index_array(item, x))
    if sum(1 for i in items if i is Ellipsis) > 1:
        raise IndexError("getitem: an index can only have a single ellipsis")
    consumed = sum(1 for i in items if i is not None and i is not Ellipsis)
    if consumed > ndim:
        raise IndexError(f"getitem: too many indices for a Tensor of {ndim} dimensions: {consumed}")
    # every axis gets an explicit index: array_api_strict rejects NumPy's implicit trailing ':'
    fill = [slice(None)] * (ndim - consumed)
    at = next((k for k, i in enumerate(items) if i is Ellipsis), None)
    if at is None:
        items = items + fill
    else:
        if array_at is not None and array_at > at:
            array_at += len(fill) - 1
        items = items[:at] + fill + items[at + 1:]

    plan = _Plan()
    plan.in_shape = tuple(x.shape)
    basic = list(items)
    plan.array = None
    plan.to_front = False
    if array_at is not None:
        idx = items[array_at]
        basic[array_at] = slice(None)
        plan.axis = sum(1 for i in items[:array_at] if i is None or isinstance(i, slice))
        plan.index_shape = tuple(idx.shape)
        # NumPy rule: ints count as advanced indices; if they and the array are not adjacent, the
        # selected axes go first
        advanced = [k for k, i in enumerate(items) if k == array_at or isinstance(i, int)]
        plan.to_front = advanced[-1] - advanced[0] + 1 != len(advanced) and plan.axis != 0
        plan.array = idx
    plan.basic = tuple(basic)
    plan.basic_trivial = all(isinstance(i, slice) and i == slice(None) for i in basic)
    plan.setter = tuple(i for i in basic if i is not None)
    return plan


def _index_array(item, x):
    xp = namespace(x)
    if isinstance(item, Tensor):
        item = item.data
    if backend_name_of(item) is None:
        if isinstance(item, (list, tuple)) and any(isinstance(v, bool) for v in item):
            raise TypeError("getitem: a list of bools is not supported; use a boolean Tensor mask")
        item = xp.asarray(item, dtype=xp.int64, device=x.device)
    else:
        check_same_device(x, item, op="getitem")
    if item.dtype == xp.bool:
        if item.ndim != 1:
            raise TypeError(f"getitem: a boolean mask must be 1-D (it selects along one axis), got "
                            f"shape {tuple(item.shape)}; use where() for elementwise masks")
        (item,) = xp.nonzero(item)
    elif not xp.isdtype(item.dtype, "integral"):
        raise TypeError(f"getitem: an index array must hold integers, got dtype {item.dtype}")
    return item


def _forward_index(plan: _Plan, x):
    xp = namespace(x)
    y = x if plan.basic_trivial else x[plan.basic]
    if plan.array is None:
        return y
    idx = plan.array
    n = y.shape[plan.axis]
    flat = xp.reshape(idx, (-1,)) if idx.ndim != 1 else idx
    flat = xp.where(flat < 0, flat + n, flat)
    plan.selected_shape = tuple(y.shape)
    y = xp.take(y, flat, axis=plan.axis)
    if idx.ndim != 1:
        y = xp.reshape(y, tuple(y.shape[:plan.axis]) + plan.index_shape + tuple(y.shape[plan.axis + 1:]))
    if plan.to_front:
        k = len(plan.index_shape)
        order = list(range(plan.axis, plan.axis + k)) + [a for a in range(y.ndim)
                                                          if not plan.axis <= a < plan.axis + k]
        y = xp.permute_dims(y, tuple(order))
    return y, flat


def index_add(g, index, length, axis):
    """Scatter-add: ``out[..., j, ...] = Σ_{k: index[k] = j} g[..., k, ...]`` along ``axis``.

    ``g`` has ``len(index)`` entries along ``axis``; ``out`` has ``length``. Repeated indices
    accumulate. Uses only standard functions and no Python loop over elements.
    """
    xp = namespace(g)
    count = index.shape[0]
    if count * length <= ONE_HOT_LIMIT:
        positions = xp.arange(length, dtype=index.dtype, device=index.device)
        one_hot = xp.astype(xp.reshape(index, (count, 1)) == positions, g.dtype)  # (K, length)
        moved = xp.moveaxis(g, axis, -1)
        out = xp.matmul(moved, one_hot)
        return xp.moveaxis(out, -1, axis) if out.ndim > 1 else out
    order = xp.argsort(index, stable=True)
    sorted_index = xp.take(index, order)
    running = xp.cumulative_sum(xp.take(g, order, axis=axis), axis=axis, include_initial=True)
    targets = xp.arange(length, dtype=index.dtype, device=index.device)
    upper = xp.searchsorted(sorted_index, targets, side="right")
    lower = xp.searchsorted(sorted_index, targets, side="left")
    return xp.take(running, upper, axis=axis) - xp.take(running, lower, axis=axis)


class GetItem(Function):
    """y = x[index]: a view or a gather, no value changes.

    dL/dx = zeros of x's shape with G added where y's elements came from; an element selected
    k times by an integer array receives the sum of its k gradients (scatter-add).
    """

    @staticmethod
    def forward(ctx, x, plan=None):
        out = _forward_index(plan, x)
        if plan.array is not None:
            out, ctx.flat = out
        ctx.plan = plan
        ctx.dtype = x.dtype
        return out

    @staticmethod
    def backward(ctx, g):
        plan = ctx.plan
        xp = namespace(g)
        if plan.array is not None:
            k = len(plan.index_shape)
            if plan.to_front:
                # the selected axes sit in front; put them back at plan.axis
                order = list(range(k, k + plan.axis)) + list(range(k)) + list(range(k + plan.axis, g.ndim))
                g = xp.permute_dims(g, tuple(order))
            shape = tuple(g.shape)
            g = xp.reshape(g, shape[:plan.axis] + (ctx.flat.shape[0],) + shape[plan.axis + k:])
            g = index_add(g, ctx.flat, plan.selected_shape[plan.axis], plan.axis)
        if plan.basic_trivial:
            return g
        gx = xp.zeros(plan.in_shape, dtype=ctx.dtype, device=g.device)
        target_shape = tuple(gx[plan.setter].shape)
        gx[plan.setter] = xp.reshape(g, target_shape) if tuple(g.shape) != target_shape else g
        return gx

    @staticmethod
    def jvp(ctx, t):
        out = _forward_index(ctx.plan, t)
        return out[0] if ctx.plan.array is not None else out


def getitem(x, index):
    """``x[index]`` for ints, slices, None, Ellipsis and one integer array (Tensor, raw array or
    list of ints; negative entries count from the end) or a 1-D boolean mask.
    dL/dx = G scattered back to where each element came from (repeats accumulate)."""
    data = raw(x)
    if not hasattr(data, "shape"):
        raise TypeError(f"getitem: expected a Tensor or array, got {type(x).__name__}")
    return GetItem.apply(x, plan=_plan(data, index))


def take(x, indices, axis=None, *, dim=None):
    """Select entries along ``axis`` by integer ``indices`` (like ``xp.take``/``index_select``).
    dL/dx = G scatter-added back along ``axis`` (repeated indices accumulate)."""
    axis = pick_axis("take", axis, dim, 0)
    ndim = raw(x).ndim
    axis = normalize_dim(axis, ndim, "take")
    return getitem(x, (slice(None),) * axis + (indices,))


# the differentiable functions; the Function classes stay importable from this module
__all__ = [
    "getitem", "take",
]
