"""Fully connected layer (one fused Function) and flatten."""

from __future__ import annotations

from ...autodiff.function import Function, is_autocast_enabled
from ...autodiff.ops.shape import flatten as _flatten
from ...backends import backend_of, dtype_name, kernels
from ._arrays import as_input, namespace, raw, shape_text


def _matmul(a, b):
    """a @ b, through the backend's MATMUL kernel where it has one (NumPy: GEMMs on the kernels'
    worker threads, so that the BLAS's own threads are not left spinning next to them)."""
    fast = backend_of(a).kernel(Affine.matmul_kernel)
    return fast(a, b) if fast is not None else a @ b


class Affine(Function):
    """y = x W^T + b for x of shape (..., D_in), W (D_out, D_in), b (D_out,) or None.

    Backward, with G = dL/dy of shape (..., D_out) and X, G flattened to (M, D_in), (M, D_out):
        dL/dx = G W        dL/dW = G^T X        dL/db = sum_m G[m]
    Forward mode: dy = dx W^T + x dW^T + db.
    """

    owns_grads = True  # dx, dW and db are new arrays (matrix products and a sum)
    matmul_kernel = kernels.MATMUL

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        y = _matmul(x, w.mT)
        if b is None:
            return y
        if y.dtype == b.dtype:
            y += b  # y is the product's own fresh array: no second output array to allocate and fault in
            return y
        return y + b

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        xp = namespace(g)
        need_x, need_w, need_b = (tuple(ctx.needs_input_grad) + (False, False, False))[:3]
        dx = _matmul(g, w) if need_x else None
        dw = db = None
        if need_w or need_b:
            g2 = xp.reshape(g, (-1, g.shape[-1])) if g.ndim != 2 else g
            if need_w:
                x2 = xp.reshape(x, (-1, x.shape[-1])) if x.ndim != 2 else x
                dw = _matmul(g2.mT, x2)
            if need_b:
                db = xp.sum(g2, axis=0)
        return dx, dw, db

    @staticmethod
    def jvp(ctx, tx, tw, tb):
        x, w = ctx.saved_tensors
        out = None
        for term in (None if tx is None else tx @ w.mT, None if tw is None else x @ tw.mT, tb):
            if term is not None:
                out = term if out is None else out + term
        return out


def check_linear_input(x, w, b, where: str) -> None:
    """Shape and dtype checks shared by ``F.linear`` and ``nn.Linear`` (``where`` names the layer)."""
    xa, wa = raw(x), raw(w)
    if wa.ndim != 2:
        raise ValueError(f"{where}: weight must be 2-D (out_features, in_features), got {shape_text(wa.shape)}")
    in_features = wa.shape[1]
    if xa.ndim < 1 or xa.shape[-1] != in_features:
        raise ValueError(f"{where}: expected input (..., {in_features}), got {shape_text(xa.shape)}")
    if dtype_name(xa.dtype) != dtype_name(wa.dtype) and not is_autocast_enabled():
        raise TypeError(
            f"{where}: input dtype {dtype_name(xa.dtype)} does not match weight dtype {dtype_name(wa.dtype)}; "
            "cast the input (x.float() / x.double()) or the layer (.float() / .double()) explicitly"
        )
    if b is not None:
        ba = raw(b)
        if tuple(ba.shape) != (wa.shape[0],):
            raise ValueError(f"{where}: bias must have shape ({wa.shape[0]},), got {shape_text(ba.shape)}")
        if dtype_name(ba.dtype) != dtype_name(wa.dtype):
            raise TypeError(f"{where}: bias dtype {dtype_name(ba.dtype)} does not match weight dtype "
                            f"{dtype_name(wa.dtype)}")


def linear(input, weight, bias=None):
    """y = input @ weight^T + bias, for input (..., in_features) and weight (out_features, in_features)."""
    input = as_input(input, "linear")
    check_linear_input(input, weight, bias, f"linear (weight {shape_text(raw(weight).shape)})")
    return Affine.apply(input, weight, bias)


def flatten(input, start_dim: int = 0, end_dim: int = -1):
    """Merge dimensions ``start_dim`` .. ``end_dim`` (inclusive) into one, as ``torch.flatten``."""
    return _flatten(as_input(input, "flatten"), start_dim, end_dim)
