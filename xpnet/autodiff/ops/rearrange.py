"""Rearranging values without computing new ones: repeat/tile, flip, roll, narrow, chunk, unbind,
clone.

Each is linear in x, so its backward applies the transposed rearrangement to G = dL/dy (sum the
copies, flip back, roll back, put the slice back, stack the pieces) and its jvp is the forward
map applied to the tangent.
"""

from __future__ import annotations

import math

from ..function import Function
from ._common import namespace, normalize_dim, raw
from .indexing import getitem
from .shape import split


def _ints(op, args):
    """``f(x, 2, 3)``, ``f(x, (2, 3))`` and ``f(x, [2, 3])`` alike, as a tuple of ints."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        args = tuple(args[0])
    try:
        return tuple(int(a) for a in args)
    except TypeError:
        raise TypeError(f"{op}: expected integers, got {args!r}") from None


class Repeat(Function):
    """y = x tiled r_d times along each axis d (x first gets leading size-1 axes up to len(r)):
    y.shape[d] = r_d n_d, y[..., i_d, ...] = x[..., i_d mod n_d, ...].

    dL/dx = Σ over the copies: G reshaped to (r_0, n_0, r_1, n_1, ...) summed over the r axes.
    """

    @staticmethod
    def forward(ctx, x, reps=()):
        shape = (1,) * (len(reps) - x.ndim) + tuple(x.shape)
        ctx.in_shape = tuple(x.shape)
        ctx.pairs = tuple(v for r, n in zip(reps, shape) for v in (r, n))
        ctx.spread = tuple(v for n in shape for v in (1, n))
        ctx.out_shape = tuple(r * n for r, n in zip(reps, shape))
        return Repeat._tile(x, ctx)

    @staticmethod
    def _tile(x, ctx):
        xp = namespace(x)
        return xp.reshape(xp.broadcast_to(xp.reshape(x, ctx.spread), ctx.pairs), ctx.out_shape)

    @staticmethod
    def backward(ctx, g):
        xp = namespace(g)
        copies = tuple(range(0, len(ctx.pairs), 2))
        return xp.reshape(xp.sum(xp.reshape(g, ctx.pairs), axis=copies), ctx.in_shape)

    @staticmethod
    def jvp(ctx, t):
        return Repeat._tile(t, ctx)


class Flip(Function):
    """y = x with the order of entries reversed along the given axes.        dL/dx = flip(G)"""

    @staticmethod
    def forward(ctx, x, axes=()):
        ctx.axes = axes
        return namespace(x).flip(x, axis=axes)

    @staticmethod
    def backward(ctx, g):
        return namespace(g).flip(g, axis=ctx.axes)

    jvp = backward


class Roll(Function):
    """y = x shifted cyclically by s_d along each axis d (of the flattened x when no axis is given):
    y[(i + s) mod n] = x[i].

    dL/dx = roll(G, -s)
    """

    @staticmethod
    def forward(ctx, x, shifts=(), axes=None):
        ctx.shifts, ctx.axes = shifts, axes
        return Roll._roll(x, shifts, axes)

    @staticmethod
    def _roll(x, shifts, axes):
        xp = namespace(x)
        if axes is None:
            return xp.reshape(xp.roll(xp.reshape(x, (-1,)), shift=shifts[0]), tuple(x.shape))
        return xp.roll(x, shift=shifts, axis=axes)

    @staticmethod
    def backward(ctx, g):
        return Roll._roll(g, tuple(-s for s in ctx.shifts), ctx.axes)

    @staticmethod
    def jvp(ctx, t):
        return Roll._roll(t, ctx.shifts, ctx.axes)


class Unbind(Function):
    """(y_0, y_1, ...) = (x[..., 0, ...], x[..., 1, ...], ...): the slices along one axis, which
    disappears.

    dL/dx = stack(dL/dy_0, dL/dy_1, ...) along that axis   (zeros for an unused slice)
    """

    @staticmethod
    def forward(ctx, x, axis=0):
        ctx.axis = axis
        return Unbind._slices(x, axis)

    @staticmethod
    def _slices(x, axis):
        lead = (slice(None),) * axis
        rest = (slice(None),) * (x.ndim - axis - 1)
        return tuple(x[lead + (i,) + rest] for i in range(x.shape[axis]))

    @staticmethod
    def backward(ctx, *grads):
        return namespace(grads[0]).stack(list(grads), axis=ctx.axis)

    @staticmethod
    def jvp(ctx, t):
        return Unbind._slices(t, ctx.axis)


class Clone(Function):
    """y = a copy of x (no memory shared).        dL/dx = G"""

    @staticmethod
    def forward(ctx, x):
        return namespace(x).asarray(x, copy=True)

    @staticmethod
    def backward(ctx, g):
        return g

    @staticmethod
    def jvp(ctx, t):
        return t


# -- public functions -----------------------------------------------------------------------------


def repeat(input, *sizes):  # noqa: A002
    """``input`` repeated ``sizes[d]`` times along each axis, as ``torch.Tensor.repeat`` (NumPy's
    tile): at least ``input.ndim`` sizes, extra ones adding leading axes. dL/dinput sums the
    gradient over the copies."""
    reps = _ints("repeat", sizes)
    ndim = raw(input).ndim
    if len(reps) < ndim:
        raise ValueError(f"repeat: {len(reps)} repeat counts given for a Tensor of {ndim} dimensions; "
                         "give at least one per dimension")
    if any(r < 0 for r in reps):
        raise ValueError(f"repeat: repeat counts must be non-negative, got {reps}")
    return Repeat.apply(input, reps=reps)


def tile(input, dims):  # noqa: A002
    """``input`` repeated ``dims[d]`` times along each axis, as ``torch.tile``: fewer counts than
    axes are padded with leading 1s (unlike ``repeat``). dL/dinput sums over the copies."""
    reps = _ints("tile", (dims,))
    ndim = raw(input).ndim
    reps = (1,) * (ndim - len(reps)) + reps
    return repeat(input, reps)


def flip(input, *dims):  # noqa: A002
    """``input`` with its entries in reverse order along each of ``dims``, as ``torch.flip``
    (``flip(x, (0, 1))``; the method also takes ``x.flip(0, 1)``). dL/dinput = flip(G)."""
    ndim = raw(input).ndim
    axes = tuple(sorted({normalize_dim(d, ndim, "flip") for d in _ints("flip", dims)}))
    return Flip.apply(input, axes=axes)


def roll(input, shifts, dims=None):  # noqa: A002
    """``input`` shifted cyclically by ``shifts`` along ``dims``, as ``torch.roll``: with no dims,
    the flattened Tensor is rolled and the shape restored. dL/dinput = roll(G, -shifts)."""
    data = raw(input)
    shift_list = _ints("roll", (shifts,))
    if dims is None:
        if len(shift_list) != 1:
            raise ValueError(f"roll: without dims, shifts must be one integer, got {shifts!r}")
        return Roll.apply(input, shifts=shift_list, axes=None)
    axes = tuple(normalize_dim(d, data.ndim, "roll") for d in _ints("roll", (dims,)))
    if len(axes) != len(shift_list):
        raise ValueError(f"roll: {len(shift_list)} shifts for {len(axes)} dims; give one shift per dim")
    return Roll.apply(input, shifts=shift_list, axes=axes)


def narrow(input, dim, start, length):  # noqa: A002
    """The ``length`` entries of ``input`` from ``start`` along ``dim`` (a negative start counts
    from the end), as ``torch.narrow``. dL/dinput is G in the slice, 0 elsewhere."""
    data = raw(input)
    d = normalize_dim(dim, data.ndim, "narrow")
    n = data.shape[d]
    start, length = int(start), int(length)
    if not -n <= start <= n:
        raise IndexError(f"narrow: start {start} is out of range for dimension {d} of size {n}")
    start = start % n if start < 0 else start
    if length < 0 or start + length > n:
        raise ValueError(f"narrow: start ({start}) + length ({length}) exceeds dimension {d} of size {n}")
    index = tuple(slice(start, start + length) if a == d else slice(None) for a in range(data.ndim))
    return getitem(input, index)


def chunk(input, chunks, dim=0):  # noqa: A002
    """``input`` cut along ``dim`` into at most ``chunks`` pieces of ceil(n / chunks) entries (the
    last may be smaller, and fewer pieces come back when n is small), as ``torch.chunk``.
    dL/dinput joins the pieces' gradients (zeros for an unused piece)."""
    chunks = int(chunks)
    if chunks <= 0:
        raise ValueError(f"chunk: the number of chunks must be positive, got {chunks}")
    data = raw(input)
    d = normalize_dim(dim, data.ndim, "chunk")
    n = data.shape[d]
    return split(input, max(1, math.ceil(n / chunks)), dim=d)


def unbind(input, dim=0):  # noqa: A002
    """The slices of ``input`` along ``dim`` as a tuple (that axis removed), as ``torch.unbind``.
    dL/dinput stacks the slices' gradients."""
    data = raw(input)
    d = normalize_dim(dim, data.ndim, "unbind")
    if data.shape[d] == 0:
        return ()
    return Unbind.apply(input, axis=d)


def clone(input):  # noqa: A002
    """A copy of ``input`` that shares no memory with it, still in the graph. dL/dinput = G."""
    return Clone.apply(input)


# repeat is a method only, as in PyTorch: the Array API's repeat(x, repeats, axis) means
# repeat_interleave, so xpnet.repeat would be ambiguous
__all__ = ["tile", "flip", "roll", "narrow", "chunk", "unbind", "clone"]
