"""Gather and scatter along one axis, as ``torch.gather``, ``scatter_add`` and ``scatter``.

An index Tensor has the input's number of dimensions; along ``dim`` it holds positions, along
every other axis d it may be shorter than the input (it then covers the first ``index.shape[d]``
entries). Every element of the index is turned into a row-major offset into the flattened input
(``linear_index``), so one ``xp.take`` gathers and one scatter-add (``indexing.index_add``: a
one-hot product for small sizes, a sort and segment sums otherwise) scatters, in any namespace.

Notation: G = dL/dy; for dim = 1, gather reads y[i][j][k] = x[i][index[i][j][k]][k].
"""

from __future__ import annotations

import math

from ...backends import backend_name_of, check_same_device, dtype_name, is_float_dtype
from ..function import Function
from ._common import namespace, normalize_dim, raw
from .indexing import index_add


def linear_index(index, shape, dim):
    """Row-major offsets into an array of ``shape`` of the elements ``index`` picks along ``dim``
    (index[i][j][k] at dim = 1 names element (i, index[i][j][k], k)), flattened to 1-D int64."""
    xp = namespace(index)
    ndim = len(shape)
    strides = [1] * ndim
    for d in range(ndim - 2, -1, -1):
        strides[d] = strides[d + 1] * shape[d + 1]
    linear = xp.astype(index, xp.int64) * strides[dim]
    for d in range(ndim):
        n = index.shape[d]
        if d == dim or n == 1:
            continue
        position = xp.arange(n, dtype=xp.int64, device=index.device) * strides[d]
        linear = linear + xp.reshape(position, (1,) * d + (n,) + (1,) * (ndim - d - 1))
    return xp.reshape(linear, (-1,))


def _extent(shape):
    """The subscript that keeps the first ``shape[d]`` entries of every axis d."""
    return tuple(slice(0, n) for n in shape)


class Gather(Function):
    """y[i][j][k] = x[i][index[i][j][k]][k] (dim = 1; likewise for any dim): y has index's shape.

    dL/dx = scatter_add(zeros like x, dim, index, G): each element of x receives the sum of the
    G entries that read it (an element read twice gets both).
    """

    @staticmethod
    def forward(ctx, x, index, dim=0):
        xp = namespace(x)
        ctx.linear = linear_index(index, tuple(x.shape), dim)
        ctx.in_shape, ctx.out_shape = tuple(x.shape), tuple(index.shape)
        return xp.reshape(xp.take(xp.reshape(x, (-1,)), ctx.linear), ctx.out_shape)

    @staticmethod
    def backward(ctx, g):
        xp = namespace(g)
        flat = index_add(xp.reshape(g, (-1,)), ctx.linear, math.prod(ctx.in_shape), 0)
        return xp.reshape(flat, ctx.in_shape), None

    @staticmethod
    def jvp(ctx, t, t_index):
        xp = namespace(t)
        return xp.reshape(xp.take(xp.reshape(t, (-1,)), ctx.linear), ctx.out_shape)


class ScatterAdd(Function):
    """y = x, then y[i][index[i][j][k]][k] += src[i][j][k] (dim = 1) over the index's extent of src.

    dL/dx = G        dL/dsrc = gather(G, dim, index) on the index's extent, 0 elsewhere
    """

    @staticmethod
    def forward(ctx, x, index, src, dim=0):
        xp = namespace(x)
        ctx.linear = linear_index(index, tuple(x.shape), dim)
        ctx.shape, ctx.src_shape, ctx.index_shape = tuple(x.shape), tuple(src.shape), tuple(index.shape)
        part = src if ctx.src_shape == ctx.index_shape else src[_extent(ctx.index_shape)]
        added = index_add(xp.reshape(part, (-1,)), ctx.linear, math.prod(ctx.shape), 0)
        return x + xp.reshape(added, ctx.shape)

    @staticmethod
    def backward(ctx, g):
        need_x, _, need_src = ctx.needs_input_grad
        return g if need_x else None, None, _src_grad(ctx, g) if need_src else None

    @staticmethod
    def jvp(ctx, tx, t_index, tsrc):
        xp = namespace(tx if tx is not None else tsrc)
        out = tx
        if tsrc is not None:
            part = tsrc if ctx.src_shape == ctx.index_shape else tsrc[_extent(ctx.index_shape)]
            added = xp.reshape(index_add(xp.reshape(part, (-1,)), ctx.linear, math.prod(ctx.shape), 0), ctx.shape)
            out = added if out is None else out + added
        return out


def _src_grad(ctx, g):
    """gather(G, dim, index), placed in a zero array of src's shape when the index is smaller."""
    xp = namespace(g)
    picked = xp.reshape(xp.take(xp.reshape(g, (-1,)), ctx.linear), ctx.index_shape)
    if ctx.src_shape == ctx.index_shape:
        return picked
    out = xp.zeros(ctx.src_shape, dtype=g.dtype, device=g.device)
    out[_extent(ctx.index_shape)] = picked
    return out


class Scatter(Function):
    """y = x, then y[i][index[i][j][k]][k] = src[i][j][k] (dim = 1), or = value for a number src.

    Where the index names one element several times, the last entry in row-major index order is
    written (PyTorch leaves that choice unspecified).

    dL/dx = G * [element not written]        dL/dsrc = gather(G, dim, index) (as PyTorch: exact
    when no element is written twice)
    """

    @staticmethod
    def forward(ctx, x, index, src, dim=0):
        xp = namespace(x)
        shape = tuple(x.shape)
        linear = linear_index(index, shape, dim)
        ctx.linear, ctx.shape, ctx.index_shape = linear, shape, tuple(index.shape)
        ctx.src_shape = None if isinstance(src, (int, float, bool)) else tuple(src.shape)
        size = math.prod(shape)
        order = xp.argsort(linear, stable=True)
        ordered = xp.take(linear, order)
        targets = xp.arange(size, dtype=xp.int64, device=x.device)
        upper = xp.searchsorted(ordered, targets, side="right")
        written = upper > xp.searchsorted(ordered, targets, side="left")
        ctx.written = xp.reshape(written, shape)
        ctx.last = None
        if ctx.src_shape is None:
            values = xp.full(shape, src, dtype=x.dtype, device=x.device)
        elif linear.shape[0] == 0:
            return x + 0  # nothing is written: a fresh array
        else:
            part = src if ctx.src_shape == ctx.index_shape else src[_extent(ctx.index_shape)]
            ctx.last = xp.take(order, xp.clip(upper - 1, 0, linear.shape[0] - 1))  # the last writer
            values = xp.reshape(xp.take(xp.reshape(part, (-1,)), ctx.last), shape)
            if values.dtype != x.dtype:
                values = xp.astype(values, x.dtype)
        return xp.where(ctx.written, values, x)

    @staticmethod
    def backward(ctx, g):
        xp = namespace(g)
        need_x, _, need_src = ctx.needs_input_grad
        gx = xp.where(ctx.written, xp.zeros_like(g), g) if need_x else None
        gsrc = _src_grad(ctx, g) if need_src and ctx.src_shape is not None else None
        return gx, None, gsrc

    @staticmethod
    def jvp(ctx, tx, t_index, tsrc):
        ref = tx if tx is not None else tsrc
        xp = namespace(ref)
        zeros = xp.zeros(ctx.shape, dtype=ref.dtype, device=ref.device)
        written = zeros
        if tsrc is not None and ctx.last is not None:
            part = tsrc if ctx.src_shape == ctx.index_shape else tsrc[_extent(ctx.index_shape)]
            written = xp.reshape(xp.take(xp.reshape(part, (-1,)), ctx.last), ctx.shape)
        return xp.where(ctx.written, written, zeros if tx is None else tx)


# -- public functions -----------------------------------------------------------------------------


def as_index(index, like, op):
    """``index`` (an integer Tensor, raw array or nested list of ints) as a raw integer array on
    ``like``'s backend and device."""
    xp = namespace(like)
    data = raw(index)
    if backend_name_of(data) is None:
        data = xp.asarray(data, dtype=xp.int64, device=like.device)
    else:
        check_same_device(like, data, op=op)
    if data.dtype == xp.bool or not xp.isdtype(data.dtype, "integral"):
        raise TypeError(f"{op}: expected an integer index, got dtype {dtype_name(data.dtype)}")
    return data


def check_range(index, n, op, dim):
    """RuntimeError unless 0 <= index < n everywhere (one device-to-host read)."""
    xp = namespace(index)
    if math.prod(index.shape) and bool(xp.any(xp.logical_or(index < 0, index >= n))):
        low, high = int(xp.min(index)), int(xp.max(index))
        raise RuntimeError(f"{op}: index out of range (values {low}..{high}) for dimension {dim} "
                           f"with size {n}")


def _index_args(op, x, dim, index):
    """(dim as a non-negative int, the index array), checked as torch checks them."""
    data = raw(x)
    if not hasattr(data, "shape"):
        raise TypeError(f"{op}: expected a Tensor, got {type(x).__name__}")
    idx = as_index(index, data, op)
    if idx.ndim != data.ndim:
        raise ValueError(f"{op}: index has {idx.ndim} dimensions, the input {data.ndim}; they must match")
    d = normalize_dim(dim, data.ndim, op)
    for k, (m, n) in enumerate(zip(idx.shape, data.shape)):
        if k != d and m > n:
            raise ValueError(f"{op}: index has shape {tuple(idx.shape)}, larger than the input's "
                             f"{tuple(data.shape)} at dimension {k}")
    check_range(idx, data.shape[d], op, d)
    return d, idx


def gather(input, dim, index):  # noqa: A002 - torch's argument names
    """Values of ``input`` along ``dim`` at ``index``: out[i][j][k] = input[i][index[i][j][k]][k]
    for dim = 1, as ``torch.gather``. The gradient scatter-adds G back (an element read twice
    receives both gradients)."""
    d, idx = _index_args("gather", input, dim, index)
    return Gather.apply(input, idx, dim=d)


def _src_args(op, input, d, idx, src):
    data = raw(src)
    if not hasattr(data, "shape") or data.ndim != idx.ndim:
        raise ValueError(f"{op}: src must be a Tensor with as many dimensions as the index "
                         f"({idx.ndim}), got {getattr(data, 'shape', type(src).__name__)}")
    if any(m > n for m, n in zip(idx.shape, data.shape)):
        raise ValueError(f"{op}: index has shape {tuple(idx.shape)}, larger than src's {tuple(data.shape)}")
    if data.dtype != raw(input).dtype:
        raise TypeError(f"{op}: src has dtype {dtype_name(data.dtype)}, the input "
                        f"{dtype_name(raw(input).dtype)}; they must match")


def scatter_add(input, dim, index, src):  # noqa: A002
    """A copy of ``input`` with ``src`` added at ``index`` along ``dim``: out[i][index[i][j][k]][k]
    += src[i][j][k] for dim = 1, repeated positions accumulating, as ``torch.scatter_add``.
    dL/dinput = G; dL/dsrc = gather(G, dim, index)."""
    d, idx = _index_args("scatter_add", input, dim, index)
    _src_args("scatter_add", input, d, idx, src)
    return ScatterAdd.apply(input, idx, src, dim=d)


def scatter(input, dim, index, src=None, *, value=None, reduce=None):  # noqa: A002
    """A copy of ``input`` with ``src`` (a Tensor) or ``value`` (a number) written at ``index``
    along ``dim``, as ``torch.scatter``: out[i][index[i][j][k]][k] = src[i][j][k] for dim = 1.
    dL/dinput = G where nothing was written, else 0; dL/dsrc = gather(G, dim, index)."""
    if reduce is not None:
        raise ValueError("scatter: reduce= is not supported; use scatter_add for sums")
    if (src is None) == (value is None):
        raise TypeError("scatter: give exactly one of src (a Tensor) and value (a number)")
    d, idx = _index_args("scatter", input, dim, index)
    if src is None or isinstance(src, (int, float, bool)):
        number = value if src is None else src
        kind = dtype_name(raw(input).dtype)
        if kind == "bool":
            number = bool(number)
        elif not is_float_dtype(kind):
            number = int(number)  # torch truncates a float written into an integer Tensor
        return Scatter.apply(input, idx, number, dim=d)
    _src_args("scatter", input, d, idx, src)
    return Scatter.apply(input, idx, src, dim=d)


__all__ = ["gather", "scatter_add", "scatter"]
