"""Helpers shared by the op families: namespace lookup, broadcasting reduction, axis handling."""

from __future__ import annotations

from array_api_compat import array_namespace

from ..tensor import Tensor

# array_namespace() costs microseconds per call; the namespace depends only on the array type.
_NAMESPACES: dict = {}


def namespace(a):
    """The Array-API namespace of raw array ``a`` (cached per array type)."""
    kind = type(a)
    xp = _NAMESPACES.get(kind)
    if xp is None:
        xp = array_namespace(a)
        _NAMESPACES[kind] = xp
    return xp


def namespace_of(*values):
    """The namespace of the first raw array among ``values`` (Python scalars are skipped)."""
    for v in values:
        if v is not None and not isinstance(v, (int, float, bool)):
            return namespace(v)
    raise TypeError("expected at least one array argument")


def unbroadcast(grad, shape, dtype=None):
    """Sum ``grad`` back to ``shape``: the gradient of an operand that broadcasting expanded.

    Leading axes that broadcasting added are summed away; axes where ``shape`` has 1 and ``grad``
    does not are summed with keepdims. A ``dtype`` differing from grad's (mixed-precision
    operands, promoted in forward) is cast back so each input gets a gradient of its own dtype.
    """
    if grad.shape != shape and tuple(grad.shape) != tuple(shape):
        shape = tuple(shape)
        xp = namespace(grad)
        extra = grad.ndim - len(shape)
        if extra > 0:
            grad = xp.sum(grad, axis=tuple(range(extra)))
        axes = tuple(i for i, s in enumerate(shape) if s == 1 and grad.shape[i] != 1)
        if axes:
            grad = xp.sum(grad, axis=axes, keepdims=True)
    if dtype is not None and grad.dtype is not dtype and grad.dtype != dtype:  # "is": the common case, cheaper
        grad = namespace(grad).astype(grad, dtype)
    return grad


def expand_to(t, shape):
    """Broadcast a tangent to the output ``shape`` (forward mode's counterpart of unbroadcast)."""
    if tuple(t.shape) == tuple(shape):
        return t
    return namespace(t).broadcast_to(t, tuple(shape))


def add_tangents(*terms):
    """Sum of the tangent terms that are not None (None: that input carried no tangent)."""
    total = None
    for term in terms:
        if term is not None:
            total = term if total is None else total + term
    return total


def raw(x):
    """The raw array of a Tensor, or ``x`` itself: ``xpnet.backends.unwrap`` for the arguments an
    op receives (Tensors, arrays, numbers), as one isinstance test.

    The ops and the functional layers call it once or twice per operation, so it stays this cheap:
    0.05-0.08 us for a Tensor where ``unwrap`` takes 0.7-1 us (it asks ``backend_name_of`` twice,
    reading a Tensor's ``shape`` on the way). Everything else uses ``unwrap``.
    """
    return x.data if isinstance(x, Tensor) else x


def shape_of(x):
    """Shape of an array or Tensor; () for a Python number."""
    if isinstance(x, (int, float, bool)):
        return ()
    return tuple(x.shape)


def dtype_of(x):
    return None if isinstance(x, (int, float, bool)) else x.dtype


def normalize_axis(axis, ndim: int, op: str):
    """``axis`` (None, an int or a sequence) as a sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (list, tuple)):
        axes = tuple(int(a) for a in axis)
    else:
        axes = (int(axis),)
    if ndim == 0:
        # PyTorch accepts dim 0 or -1 on a 0-d tensor and reduces over nothing
        if any(a not in (0, -1) for a in axes):
            raise ValueError(f"{op}: axis {axis} is out of range for a 0-dimensional input")
        return ()
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"{op}: axis {a} is out of range for an input of {ndim} dimensions")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: repeated axis in {axis}")
    return tuple(sorted(out))


def normalize_dim(axis, ndim: int, op: str) -> int:
    """One axis as a non-negative int."""
    axis = int(axis)
    if not -ndim <= axis < ndim:
        raise ValueError(f"{op}: axis {axis} is out of range for an input of {ndim} dimensions")
    return axis % ndim


def pick_axis(op, axis, dim, default=None):
    """Resolve the Array-API ``axis=`` and PyTorch's ``dim=`` spellings of one argument."""
    if dim is not None:
        if axis is not None and axis != dim:
            raise TypeError(f"{op}: got both axis={axis!r} and dim={dim!r}; pass one of them")
        return dim
    return default if axis is None else axis


def pick_keepdims(op, keepdims, keepdim):
    if keepdim is not None:
        if keepdims is not None and bool(keepdims) != bool(keepdim):
            raise TypeError(f"{op}: got both keepdims={keepdims!r} and keepdim={keepdim!r}")
        return bool(keepdim)
    return bool(keepdims)


def keepdims_shape(shape, axes):
    """``shape`` with each of ``axes`` set to 1 (the keepdims shape of a reduction)."""
    return tuple(1 if i in axes else s for i, s in enumerate(shape))


NUMBER = (int, float, bool)  # Python numbers: mixed with Tensors, they get no gradient


def save_operands(ctx, a, b):
    """Record the operands' shapes and dtypes (not the arrays) for unbroadcast in backward; a
    Python number (no ``.shape``) records shape () and dtype None."""
    try:  # arrays are the common case: one attribute read each, no type test
        ctx.a_shape = a.shape
        ctx.a_dtype = a.dtype
    except AttributeError:
        ctx.a_shape, ctx.a_dtype = (), None
    try:
        ctx.b_shape = b.shape
        ctx.b_dtype = b.dtype
    except AttributeError:
        ctx.b_shape, ctx.b_dtype = (), None


def out_shape(ctx):
    """The shape the operands recorded by ``save_operands`` broadcast to (the output's): computed
    when forward mode needs it instead of stored by every forward."""
    sa, sb = tuple(ctx.a_shape), tuple(ctx.b_shape)
    n = max(len(sa), len(sb))
    sa, sb = (1,) * (n - len(sa)) + sa, (1,) * (n - len(sb)) + sb
    return tuple(y if x == 1 else x for x, y in zip(sa, sb))


def check_operands(op, a, b):
    """A binary op needs at least one Tensor or array: two Python numbers are a TypeError."""
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        if isinstance(a, NUMBER) and isinstance(b, NUMBER):
            raise TypeError(f"{op}: expected at least one Tensor or array, got {type(a).__name__} "
                            f"and {type(b).__name__}")
