"""Shape operations: reshape/view, transpose/permute, flatten, squeeze/unsqueeze, expand,
concat/stack/split and constant padding.

None of them changes a value, so each backward moves G = dL/dy back to the input's layout.
"""

from __future__ import annotations

import builtins

from ..function import Function
from ..tensor import Tensor
from ._common import namespace, normalize_dim, pick_axis, raw, unbroadcast


def _sizes(op, args):
    """Accept ``f(x, 2, 3)`` and ``f(x, (2, 3))`` alike."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        args = tuple(args[0])
    try:
        return tuple(int(s) for s in args)
    except TypeError:
        raise TypeError(f"{op}: expected integer sizes, got {args!r}") from None


class Reshape(Function):
    """y = x with a new shape (same elements in row-major order).        dL/dx = reshape(G, x.shape)"""

    @staticmethod
    def forward(ctx, x, shape=()):
        ctx.in_shape = tuple(x.shape)
        y = namespace(x).reshape(x, shape)
        ctx.out_shape = tuple(y.shape)
        return y

    @staticmethod
    def backward(ctx, g):
        return namespace(g).reshape(g, ctx.in_shape)

    @staticmethod
    def jvp(ctx, t):
        return namespace(t).reshape(t, ctx.out_shape)


class Permute(Function):
    """y = x with its axes reordered: y.shape[i] = x.shape[p[i]].

    dL/dx = permute(G, p⁻¹)
    """

    @staticmethod
    def forward(ctx, x, axes=()):
        ctx.axes = axes
        return namespace(x).permute_dims(x, axes)

    @staticmethod
    def backward(ctx, g):
        inverse = [0] * len(ctx.axes)
        for i, a in enumerate(ctx.axes):
            inverse[a] = i
        return namespace(g).permute_dims(g, tuple(inverse))

    @staticmethod
    def jvp(ctx, t):
        return namespace(t).permute_dims(t, ctx.axes)


class BroadcastTo(Function):
    """y = x broadcast to a larger shape (no copy).        dL/dx = unbroadcast(G, x.shape)"""

    @staticmethod
    def forward(ctx, x, shape=()):
        ctx.in_shape = tuple(x.shape)
        ctx.out_shape = shape
        return namespace(x).broadcast_to(x, shape)

    @staticmethod
    def backward(ctx, g):
        return unbroadcast(g, ctx.in_shape)

    @staticmethod
    def jvp(ctx, t):
        return namespace(t).broadcast_to(t, ctx.out_shape)


def _zeros_for(ref_shape, like):
    xp = namespace(like)
    return xp.zeros(ref_shape, dtype=like.dtype, device=like.device)


class Concat(Function):
    """y = [x₁, x₂, ...] joined along ``axis``.

    dL/dxᵢ = G[..., oᵢ : oᵢ + nᵢ, ...]   (the slice of G that xᵢ filled)
    """

    @staticmethod
    def forward(ctx, *arrays, axis=0):
        ctx.axis = axis
        ctx.sizes = tuple(a.shape[axis] for a in arrays)
        ctx.shapes = tuple(tuple(a.shape) for a in arrays)
        ctx.dtypes = tuple(a.dtype for a in arrays)
        return namespace(arrays[0]).concat(list(arrays), axis=axis)

    @staticmethod
    def backward(ctx, g):
        xp = namespace(g)
        lead = (slice(None),) * ctx.axis
        grads = []
        start = 0
        for need, size, dtype in zip(ctx.needs_input_grad, ctx.sizes, ctx.dtypes):
            if need:
                piece = g[lead + (slice(start, start + size), Ellipsis)]
                grads.append(piece if piece.dtype == dtype else xp.astype(piece, dtype))
            else:
                grads.append(None)
            start += size
        return tuple(grads)

    @staticmethod
    def jvp(ctx, *tangents):
        ref = next(t for t in tangents if t is not None)
        parts = [t if t is not None else _zeros_for(shape, ref) for t, shape in zip(tangents, ctx.shapes)]
        return namespace(ref).concat(parts, axis=ctx.axis)


class Stack(Function):
    """y = [x₁, x₂, ...] stacked along a new ``axis``.        dL/dxᵢ = G[..., i, ...]"""

    @staticmethod
    def forward(ctx, *arrays, axis=0):
        ctx.axis = axis
        ctx.shape = tuple(arrays[0].shape)
        ctx.dtypes = tuple(a.dtype for a in arrays)
        return namespace(arrays[0]).stack(list(arrays), axis=axis)

    @staticmethod
    def backward(ctx, g):
        xp = namespace(g)
        lead = (slice(None),) * ctx.axis
        grads = []
        for i, (need, dtype) in enumerate(zip(ctx.needs_input_grad, ctx.dtypes)):
            if need:
                piece = g[lead + (i, Ellipsis)]
                grads.append(piece if piece.dtype == dtype else xp.astype(piece, dtype))
            else:
                grads.append(None)
        return tuple(grads)

    @staticmethod
    def jvp(ctx, *tangents):
        ref = next(t for t in tangents if t is not None)
        parts = [t if t is not None else _zeros_for(ctx.shape, ref) for t in tangents]
        return namespace(ref).stack(parts, axis=ctx.axis)


class Split(Function):
    """(y₁, y₂, ...) = consecutive pieces of x along ``axis`` (sizes n₁, n₂, ...).

    dL/dx = concat(dL/dy₁, dL/dy₂, ...) along ``axis``   (zeros for an unused piece)
    """

    @staticmethod
    def forward(ctx, x, sizes=(), axis=0):
        ctx.sizes = sizes
        ctx.axis = axis
        return _split_array(x, sizes, axis)

    @staticmethod
    def backward(ctx, *grads):
        return namespace(grads[0]).concat(list(grads), axis=ctx.axis)

    @staticmethod
    def jvp(ctx, t):
        return _split_array(t, ctx.sizes, ctx.axis)


def _split_array(x, sizes, axis):
    lead = (slice(None),) * axis
    pieces = []
    start = 0
    for size in sizes:
        pieces.append(x[lead + (slice(start, start + size), Ellipsis)])
        start += size
    return tuple(pieces)


class Pad(Function):
    """y = x surrounded by a constant: along each padded axis, ``lo`` values before and ``hi``
    after (a negative amount crops instead).

    dL/dx = G[the region where x landed]   (zero where cropping dropped x)
    """

    @staticmethod
    def forward(ctx, x, source=(), dest=(), out_shape=(), value=0.0):
        xp = namespace(x)
        ctx.source, ctx.dest, ctx.in_shape, ctx.out_shape = source, dest, tuple(x.shape), out_shape
        ctx.crops = source != tuple(slice(0, n) for n in x.shape)
        out = xp.full(out_shape, value, dtype=x.dtype, device=x.device)
        out[dest] = x[source]
        return out

    @staticmethod
    def backward(ctx, g):
        inner = g[ctx.dest]
        if not ctx.crops:
            return inner
        gx = _zeros_for(ctx.in_shape, g)
        gx[ctx.source] = inner
        return gx

    @staticmethod
    def jvp(ctx, t):
        out = _zeros_for(ctx.out_shape, t)
        out[ctx.dest] = t[ctx.source]
        return out


# -- public functions -----------------------------------------------------------------------------


def reshape(x, *shape):
    """x with a new shape; accepts ``reshape(x, 2, 3)`` or ``reshape(x, (2, 3))``, one -1.
    dL/dx = reshape(G, x.shape)."""
    return Reshape.apply(x, shape=_sizes("reshape", shape))


view = reshape


def permute(x, *dims):
    """x with axes reordered: ``permute(x, 2, 0, 1)`` or ``permute(x, (2, 0, 1))``.
    dL/dx = permute(G, inverse permutation)."""
    ndim = raw(x).ndim
    axes = tuple(normalize_dim(d, ndim, "permute") for d in _sizes("permute", dims))
    if sorted(axes) != list(range(ndim)):
        raise ValueError(f"permute: {dims} is not a permutation of the {ndim} axes of an input of "
                         f"shape {tuple(raw(x).shape)}")
    return Permute.apply(x, axes=axes)


permute_dims = permute


def transpose(x, dim0=None, dim1=None):
    """Swap axes ``dim0`` and ``dim1``; with neither given, reverse all axes (``Tensor.T``).
    dL/dx = transpose(G) back."""
    ndim = raw(x).ndim
    if dim0 is None and dim1 is None:
        axes = tuple(reversed(range(ndim)))
    elif dim0 is None or dim1 is None:
        raise TypeError("transpose: give both dim0 and dim1, or neither to reverse all axes")
    else:
        a, b = normalize_dim(dim0, ndim, "transpose"), normalize_dim(dim1, ndim, "transpose")
        order = list(range(ndim))
        order[a], order[b] = order[b], order[a]
        axes = tuple(order)
    return Permute.apply(x, axes=axes)


def flatten(x, start_dim=0, end_dim=-1):
    """Merge axes ``start_dim``..``end_dim`` (inclusive) into one, as ``torch.flatten``.
    dL/dx = reshape(G, x.shape)."""
    shape = tuple(raw(x).shape)
    if not shape:
        return Reshape.apply(x, shape=(1,))
    s = normalize_dim(start_dim, len(shape), "flatten")
    e = normalize_dim(end_dim, len(shape), "flatten")
    if s > e:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    merged = 1
    for n in shape[s:e + 1]:
        merged *= n
    return Reshape.apply(x, shape=shape[:s] + (merged,) + shape[e + 1:])


def squeeze(x, axis=None, *, dim=None):
    """Drop size-1 axes: all of them (axis None) or those listed; as in PyTorch, a listed axis
    whose size is not 1 is left in place.
    dL/dx = reshape(G, x.shape)."""
    axis = pick_axis("squeeze", axis, dim)
    shape = tuple(raw(x).shape)
    if axis is None:
        drop = {i for i, n in enumerate(shape) if n == 1}
    else:
        listed = axis if isinstance(axis, (tuple, list)) else (axis,)
        drop = {normalize_dim(a, len(shape), "squeeze") for a in listed}
        drop = {a for a in drop if shape[a] == 1}
    return Reshape.apply(x, shape=tuple(n for i, n in enumerate(shape) if i not in drop))


def unsqueeze(x, dim=None, *, axis=None):
    """Insert a size-1 axis at ``dim`` (negative counts from the end of the result).
    dL/dx = reshape(G, x.shape)."""
    dim = pick_axis("unsqueeze", axis, dim)
    if dim is None:
        raise TypeError("unsqueeze: missing the position dim")
    shape = tuple(raw(x).shape)
    pos = normalize_dim(dim, len(shape) + 1, "unsqueeze")
    return Reshape.apply(x, shape=shape[:pos] + (1,) + shape[pos:])


expand_dims = unsqueeze


def broadcast_to(x, *shape):
    """x broadcast to ``shape`` (Array-API rules).
    dL/dx = unbroadcast(G, x.shape) (summed over the broadcast axes)."""
    target = _sizes("broadcast_to", shape)
    return BroadcastTo.apply(x, shape=_broadcast_target("broadcast_to", tuple(raw(x).shape), target))


def expand(x, *sizes):
    """x broadcast to ``sizes``, where -1 keeps that axis's size (``torch.Tensor.expand``).
    dL/dx = unbroadcast(G, x.shape)."""
    target = _sizes("expand", sizes)
    shape = tuple(raw(x).shape)
    offset = len(target) - len(shape)
    if offset < 0:
        raise ValueError(f"expand: {len(target)} sizes given for an input of {len(shape)} dimensions")
    resolved = tuple(shape[i - offset] if s == -1 and i >= offset else s for i, s in enumerate(target))
    return BroadcastTo.apply(x, shape=_broadcast_target("expand", shape, resolved))


def _broadcast_target(op, shape, target):
    offset = len(target) - len(shape)
    ok = offset >= 0 and builtins.all(n == t or n == 1 for n, t in zip(shape, target[offset:]))
    if not ok or builtins.any(t < 0 for t in target):
        raise ValueError(f"{op}: cannot broadcast shape {shape} to {target}")
    return target


def _tensors_arg(op, tensors):
    if isinstance(tensors, (Tensor,)) or hasattr(tensors, "shape"):
        raise TypeError(f"{op}: expected a sequence of Tensors, got a single {type(tensors).__name__}")
    tensors = tuple(tensors)
    if not tensors:
        raise ValueError(f"{op}: expected at least one Tensor")
    return tensors


def concat(tensors, axis=None, *, dim=None):
    """Join Tensors along an existing ``axis`` (``dim`` in PyTorch spelling).
    dL/dxᵢ = the slice of G that xᵢ filled."""
    tensors = _tensors_arg("concat", tensors)
    axis = pick_axis("concat", axis, dim, 0)
    ndim = raw(tensors[0]).ndim
    axis = normalize_dim(axis, ndim, "concat")
    first = tuple(raw(tensors[0]).shape)
    for i, t in enumerate(tensors):
        shape = tuple(raw(t).shape)
        if len(shape) != ndim or builtins.any(a != b for k, (a, b) in enumerate(zip(shape, first)) if k != axis):
            raise ValueError(f"concat: tensor {i} has shape {shape}, expected {first} outside axis {axis}")
    return Concat.apply(*tensors, axis=axis)


cat = concat


def stack(tensors, axis=None, *, dim=None):
    """Stack equally shaped Tensors along a new ``axis``.
    dL/dxᵢ = G[..., i, ...]."""
    tensors = _tensors_arg("stack", tensors)
    axis = pick_axis("stack", axis, dim, 0)
    first = tuple(raw(tensors[0]).shape)
    axis = normalize_dim(axis, len(first) + 1, "stack")
    for i, t in enumerate(tensors):
        if tuple(raw(t).shape) != first:
            raise ValueError(f"stack: tensor {i} has shape {tuple(raw(t).shape)}, expected {first}")
    return Stack.apply(*tensors, axis=axis)


def split(x, split_size_or_sections, axis=None, *, dim=None):
    """Cut ``x`` along ``axis`` into a tuple of pieces, as ``torch.split``: an int gives pieces
    of that size (the last may be smaller), a list gives the size of each piece.
    dL/dx = concat of the pieces' gradients (zeros for unused pieces)."""
    axis = pick_axis("split", axis, dim, 0)
    shape = tuple(raw(x).shape)
    axis = normalize_dim(axis, len(shape), "split")
    length = shape[axis]
    if isinstance(split_size_or_sections, int):
        size = split_size_or_sections
        if size <= 0:
            raise ValueError(f"split: the piece size must be positive, got {size}")
        sizes = tuple(builtins.min(size, length - s) for s in range(0, length, size)) or (0,)
    else:
        sizes = tuple(int(s) for s in split_size_or_sections)
        if builtins.sum(sizes) != length:
            raise ValueError(f"split: sizes {list(sizes)} add up to {builtins.sum(sizes)}, but axis "
                             f"{axis} has length {length}")
    return Split.apply(x, sizes=sizes, axis=axis)


def pad(x, pad, mode="constant", value=None):  # noqa: A002 - PyTorch's argument name
    """Pad with a constant, PyTorch's convention: ``pad = (left, right)`` for the last axis, then
    ``(left, right, top, bottom)`` for the last two, and so on (last axis first). Negative
    amounts crop. Only ``mode='constant'`` exists; a number in place of ``mode`` is the value.
    dL/dx = G over the region where x landed (0 where cropped)."""
    if not isinstance(mode, str):
        mode, value = "constant", mode
    if mode != "constant":
        raise ValueError(f"pad: only mode='constant' is supported, got {mode!r}")
    value = 0.0 if value is None else value
    shape = tuple(raw(x).shape)
    amounts = tuple(int(p) for p in pad)
    if len(amounts) % 2 or len(amounts) // 2 > len(shape):
        raise ValueError(f"pad: expected an even number of pads, at most {2 * len(shape)} for an input "
                         f"of shape {shape}, got {amounts}")
    pairs = [(0, 0)] * len(shape)
    for k in range(len(amounts) // 2):
        pairs[len(shape) - 1 - k] = (amounts[2 * k], amounts[2 * k + 1])
    source, dest, out_shape = [], [], []
    for n, (lo, hi) in zip(shape, pairs):
        size = n + lo + hi
        if size < 0:
            raise ValueError(f"pad: padding {(lo, hi)} leaves a negative size for an axis of length {n}")
        start, stop = builtins.max(0, -lo), n - builtins.max(0, -hi)
        kept = builtins.max(0, stop - start)
        source.append(slice(start, start + kept))
        dest.append(slice(builtins.max(0, lo), builtins.max(0, lo) + kept))
        out_shape.append(size)
    return Pad.apply(x, source=tuple(source), dest=tuple(dest), out_shape=tuple(out_shape), value=value)


# the differentiable functions; the Function classes stay importable from this module
__all__ = [
    "reshape", "view", "permute", "permute_dims", "transpose", "flatten", "squeeze",
    "unsqueeze", "expand_dims", "broadcast_to", "expand", "concat", "cat", "stack", "split",
    "pad",
]
