"""Function transforms: forward mode (``jvp``), reverse mode (``vjp``, ``grad``) and ``hessian``.

``jvp`` pushes tangents through each Function's own ``jvp`` rule (dual numbers): it never runs a
backward pass. ``vjp`` and ``grad`` run the reverse-mode engine. Inputs may be Tensors or raw
arrays; a single input (or tangent, or cotangent) may be given bare instead of in a tuple, and the
results then come back bare too.
"""

from __future__ import annotations

from ..backends import backend_name_of, is_float_dtype, unwrap
from . import function as _function
from .tensor import Tensor


def _as_tuple(values):
    if isinstance(values, (tuple, list)):
        return tuple(values), False
    return (values,), True


def _require_array(x):
    """The array behind ``x`` (a Tensor or an array); TypeError for anything else."""
    data = unwrap(x)
    if backend_name_of(data) is None:
        raise TypeError(f"expected a Tensor or an array, got {type(x).__name__}")
    return data


def _check_like(op, what, value, ref, index):
    if tuple(value.shape) != tuple(ref.shape):
        raise ValueError(f"{op}: {what} {index} has shape {tuple(value.shape)}, expected {tuple(ref.shape)} "
                         "(the shape of the matching primal)")


def _zeros_like(a):
    from array_api_compat import array_namespace

    xp = array_namespace(a)
    return xp.zeros(tuple(a.shape), dtype=a.dtype, device=a.device)


def jvp(f, inputs, tangents):
    """Forward mode: ``(f(*inputs), J_f(inputs) · tangents)``.

    Each input gets a copy that carries its tangent; ``f`` runs once inside
    ``function.forward_mode()`` and ``no_grad()``, and every Function on the way maps its input
    tangents to its output tangent with its ``jvp`` rule. A None tangent means zero. An output that
    does not depend on any input gets a zero tangent. Returns Tensors without history:
    ``(outputs, tangent_out)``, each a tuple when ``f`` returns a tuple.
    """
    inputs, _ = _as_tuple(inputs)
    tangents, _ = _as_tuple(tangents)
    if len(tangents) != len(inputs):
        raise ValueError(f"jvp: got {len(inputs)} inputs but {len(tangents)} tangents")
    primals = []
    for i, (x, t) in enumerate(zip(inputs, tangents)):
        p = Tensor._wrap(_require_array(x))
        if t is not None:
            t = _require_array(t)
            _check_like("jvp", "tangent", t, p.data, i)
            p._tangent = t
        primals.append(p)
    with _function.forward_mode(), _function.no_grad():
        out = f(*primals)
    outs, single = _as_tuple(out)
    values, tangent_out = [], []
    for o in outs:
        if not isinstance(o, Tensor):
            raise TypeError(f"jvp: f must return Tensors, got {type(o).__name__}")
        values.append(Tensor._wrap(o.data))
        tangent = o._tangent if o._tangent is not None else _zeros_like(o.data)
        tangent_out.append(Tensor._wrap(tangent))
    if single:
        return values[0], tangent_out[0]
    return tuple(values), tuple(tangent_out)


def _leaves(inputs):
    leaves = []
    for x in inputs:
        data = _require_array(x)
        leaf = Tensor._wrap(data)
        if is_float_dtype(data.dtype):
            leaf.requires_grad = True
        leaves.append(leaf)
    return leaves


def _grad_of(leaf):
    return leaf.grad if leaf.grad is not None else Tensor._wrap(_zeros_like(leaf.data))


def vjp(f, inputs, cotangents):
    """Reverse mode: ``(f(*inputs), cotangents · J_f(inputs))``.

    ``cotangents`` match ``f``'s outputs in number and shape (one bare array or Tensor for a
    single output). Returns ``(outputs, grads)``: outputs without history, and one gradient per
    input (zeros for an input ``f`` does not use; a bare gradient for a bare input).
    """
    inputs, single_in = _as_tuple(inputs)
    leaves = _leaves(inputs)
    with _function.enable_grad():
        out = f(*leaves)
    outs, single_out = _as_tuple(out)
    cots, _ = _as_tuple(cotangents)
    if len(cots) != len(outs):
        raise ValueError(f"vjp: f returned {len(outs)} outputs but {len(cots)} cotangents were given")
    live = [(o, c) for o, c in zip(outs, cots) if isinstance(o, Tensor) and o.requires_grad]
    for k, (o, c) in enumerate(live):
        c = _require_array(c)
        _check_like("vjp", "cotangent", c, o.data, k)
        o.backward(c, retain_graph=k < len(live) - 1)
    values = tuple(Tensor._wrap(o.data) for o in outs)
    grads = tuple(_grad_of(leaf) for leaf in leaves)
    return (values[0] if single_out else values), (grads[0] if single_in else grads)


def grad(f, argnums=None):
    """``grad(f)(*inputs)``: the gradient of the scalar ``f(*inputs)`` with respect to its inputs.

    ``argnums`` (an int or a tuple of ints) picks the inputs to differentiate; by default all.
    The result is bare for one input (or an int ``argnums``), a tuple otherwise.
    """

    def gradient(*inputs):
        leaves = _leaves(inputs)
        with _function.enable_grad():
            out = f(*leaves)
        if not isinstance(out, Tensor) or out.numel() != 1:
            shape = out.shape if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"grad: f must return a one-element Tensor, got {shape}")
        if out.requires_grad:
            out.backward()
        grads = tuple(_grad_of(leaf) for leaf in leaves)
        if argnums is None:
            return grads[0] if len(grads) == 1 else grads
        if isinstance(argnums, int):
            return grads[argnums]
        return tuple(grads[i] for i in argnums)

    gradient.__name__ = f"grad_{getattr(f, '__name__', 'f')}"
    gradient.__doc__ = f"Gradient of {getattr(f, '__name__', 'f')} (xpnet.autodiff.grad)."
    return gradient


def hessian(f, x, eps=None):
    """The Hessian ∂²f/∂x∂x of a scalar ``f`` at ``x``, shaped ``x.shape + x.shape``.

    Method: exact second-order modes are not available, because backward rules run on raw arrays
    and so cannot themselves be differentiated (no forward-over-reverse). Column j is therefore
    the central difference of the exact reverse-mode gradient,

        H[:, j] = (∇f(x + h_j e_j) - ∇f(x - h_j e_j)) / (2 h_j),   h_j = eps · max(1, |x_j|),

    with eps = eps_machine^(1/3) of x's dtype (about 6e-6 in float64) unless given, and the
    denominator taken as the difference actually represented. The truncation error is
    O(h²) · ∂⁴f and the rounding error O(eps_machine / h), both near 1e-10 relative in float64;
    a quadratic f has no truncation error at all. The result is symmetrised, (H + Hᵀ)/2. It costs
    2·x.numel() gradient evaluations, all on x's backend and device.
    """
    from array_api_compat import array_namespace

    data = _require_array(x)
    if not is_float_dtype(data.dtype):
        raise TypeError(f"hessian: x must be floating point, got dtype {data.dtype}")
    xp = array_namespace(data)
    shape = tuple(data.shape)
    n = 1
    for s in shape:
        n *= s
    flat = xp.reshape(data, (n,))
    if eps is None:
        eps = float(xp.finfo(data.dtype).eps) ** (1.0 / 3.0)
    steps = eps * xp.maximum(xp.abs(flat), xp.ones_like(flat))
    up, down = flat + steps, flat - steps
    spans = up - down
    positions = xp.arange(n, device=data.device)
    gradient = grad(f)
    columns = []
    for j in range(n):
        pick = positions == j
        plus = xp.reshape(xp.where(pick, up, flat), shape)
        minus = xp.reshape(xp.where(pick, down, flat), shape)
        difference = gradient(Tensor._wrap(plus)).data - gradient(Tensor._wrap(minus)).data
        columns.append(xp.reshape(difference, (n,)) / spans[j])
    h = xp.stack(columns, axis=1)
    h = (h + xp.matrix_transpose(h)) / 2
    return Tensor._wrap(xp.reshape(h, shape + shape))


__all__ = ["jvp", "vjp", "grad", "hessian"]
