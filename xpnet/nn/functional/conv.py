"""2-D convolution: one Function, NCHW at the interface, im2col + matmul in the generic code.

The generic path below uses only Array-API functions (it runs on array_api_strict); a backend may
register faster ``conv2d_forward`` / ``conv2d_backward`` kernels in ``xpnet/backends/`` with the
same contract, which the tests prove equal to the generic one:

    conv2d_forward(x, w, b, stride, padding, dilation, groups, out_hw) -> ConvForward(y, saved)
    conv2d_backward(g, saved, needs) -> ConvGrads(dx, dw, db)      needs = (need_x, need_w, need_b)

with ``stride``/``dilation`` as (sh, sw), ``padding`` as ((top, bottom), (left, right)), ``x`` 4-D
and ``out_hw`` the output size (OH, OW), computed once by ``Convolution2d.forward`` with
``conv2d_output_size``: no implementation repeats that rule. ``saved`` is what one implementation's
forward keeps for its own backward (``GenericConvSaved`` here). The shared geometry helpers
(argument pairs, padding forms, output size with its error message) live here too and are used by
the pooling functions.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ...autodiff.function import Function, forward_mode_active, is_autocast_enabled
from ...backends import backend_of, dtype_name, kernels
from ...backends.kernels import ConvForward, ConvGrads
from ._arrays import as_input, namespace, raw, shape_text

__all__ = ["conv2d", "Convolution2d", "conv2d_forward_generic", "conv2d_backward_generic", "GenericConvSaved",
           "conv2d_output_size", "normalize_pair", "normalize_padding"]


# -- geometry -------------------------------------------------------------------------------------
def normalize_pair(value, name: str, where: str, minimum: int = 1) -> tuple:
    """``3`` -> (3, 3); ``(3, 2)`` -> (3, 2); anything else, or a value below ``minimum``, is an error."""
    if isinstance(value, bool):
        raise TypeError(f"{where}: {name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        pair = (value, value)
    else:
        try:
            pair = tuple(value)
        except TypeError:
            raise TypeError(f"{where}: {name} must be an int or a pair of ints, got {value!r}") from None
        if len(pair) == 1:
            pair = (pair[0], pair[0])
        if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
            raise TypeError(f"{where}: {name} must be an int or a pair of ints, got {value!r}")
    if pair[0] < minimum or pair[1] < minimum:
        raise ValueError(f"{where}: {name} must be >= {minimum}, got {value!r}")
    return (int(pair[0]), int(pair[1]))


def normalize_padding(padding, kernel, stride, dilation, where: str) -> tuple:
    """Padding as ((top, bottom), (left, right)).

    Accepts an int, a pair, ``'valid'`` (no padding) or ``'same'`` (stride 1 only; for an even
    effective kernel the extra row/column goes at the bottom/right, as in PyTorch).
    """
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return ((0, 0), (0, 0))
        if mode == "same":
            if stride != (1, 1):
                raise ValueError(f"{where}: padding='same' needs stride 1, got stride={stride}")
            total = (dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1))
            return ((total[0] // 2, total[0] - total[0] // 2), (total[1] // 2, total[1] - total[1] // 2))
        raise ValueError(f"{where}: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    ph, pw = normalize_pair(padding, "padding", where, minimum=0)
    return ((ph, ph), (pw, pw))


def _padding_text(pad) -> str:
    return f"2*{pad[0]}" if pad[0] == pad[1] else f"{pad[0]}+{pad[1]}"


def conv2d_output_size(size, kernel, stride, padding, dilation, where: str = "conv2d", ceil_mode: bool = False):
    """(OH, OW) = floor((H + 2P - D(K-1) - 1)/S) + 1 per axis; ValueError naming the formula and the
    numbers when either is below 1. ``padding`` is ((top, bottom), (left, right))."""
    out = []
    for axis, name in ((0, "height"), (1, "width")):
        h, k, s, d = size[axis], kernel[axis], stride[axis], dilation[axis]
        p = padding[axis]
        span = h + p[0] + p[1] - d * (k - 1) - 1
        o = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and o > 1 and (o - 1) * s >= h + p[0]:
            o -= 1  # the last window must start inside the input or its leading padding (PyTorch's rule)
        if o < 1:
            sym = "2P" if p[0] == p[1] else "P_begin + P_end"
            raise ValueError(
                f"{where}: output {name} (H + {sym} - D(K-1) - 1)/S + 1 = "
                f"({h} + {_padding_text(p)} - {d}*({k}-1) - 1)/{s} + 1 = {o} "
                f"(rounded {'up' if ceil_mode else 'down'}) is below 1: input {name} {h} is too small for "
                f"kernel {k}, dilation {d}, padding {p[0] if p[0] == p[1] else p}"
            )
        out.append(o)
    return tuple(out)


# -- generic Array-API kernels -----------------------------------------------------------------
def _pad2d(xp, x, padding, value=0.0):
    """x (N, C, H, W) framed with ``value`` by ((top, bottom), (left, right))."""
    (pt, pb), (pl, pr) = padding
    if pt == pb == pl == pr == 0:
        return x
    n, c, h, w = x.shape
    out = xp.full((n, c, h + pt + pb, w + pl + pr), value, dtype=x.dtype, device=x.device)
    out[:, :, pt:pt + h, pl:pl + w] = x
    return out


def _window(xpad, i, j, out_hw, stride, dilation):
    """The (N, C, OH, OW) slice of padded input that kernel offset (i, j) meets."""
    (oh, ow), (sh, sw), (dh, dw) = out_hw, stride, dilation
    return xpad[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw]


class GenericConvSaved(NamedTuple):
    """What the generic forward keeps for the generic backward."""

    cols: Any  # (N, G, C/G*kH*kW, OH*OW): the im2col columns
    w: Any
    input_shape: tuple  # (N, C, H, W)
    out_hw: tuple  # (OH, OW)
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int


def conv2d_forward_generic(x, w, b, stride, padding, dilation, groups, out_hw):
    """Generic forward: im2col by one strided slice per kernel offset, then one batched matmul."""
    xp = namespace(x)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    oh, ow = out_hw
    xpad = _pad2d(xp, x, padding)
    cols = xp.stack([_window(xpad, i, j, (oh, ow), stride, dilation) for i in range(kh) for j in range(kw)],
                    axis=2)  # (N, C, K, OH, OW), K = kh*kw in (i, j) order
    cols = xp.reshape(cols, (n, groups, cg * kh * kw, oh * ow))
    wmat = xp.reshape(w, (groups, o // groups, cg * kh * kw))
    y = xp.reshape(xp.matmul(wmat, cols), (n, o, oh, ow))
    if b is not None:
        y = y + xp.reshape(b, (1, o, 1, 1))
    saved = GenericConvSaved(cols, w, (n, c, h, wd), (oh, ow), stride, padding, dilation, groups)
    return ConvForward(y, saved)


def conv2d_backward_generic(g, saved, needs):
    """Generic backward: dW and dX from the saved columns; dX by col2im, one padded slice-add per
    kernel offset (no loop over output pixels)."""
    cols, w, (n, c, h, wd), (oh, ow) = saved.cols, saved.w, saved.input_shape, saved.out_hw
    stride, padding, dilation, groups = saved.stride, saved.padding, saved.dilation, saved.groups
    need_x, need_w, need_b = needs
    xp = namespace(g)
    o, cg, kh, kw = w.shape
    og, ck = o // groups, cg * kh * kw
    g4 = xp.reshape(g, (n, groups, og, oh * ow))
    dx = dw = db = None
    if need_b:
        db = xp.sum(g, axis=(0, 2, 3))
    if need_w:
        # contract over the batch and the output pixels at once: (G, Og, N*L) @ (G, N*L, CgK)
        gg = xp.reshape(xp.permute_dims(g4, (1, 2, 0, 3)), (groups, og, n * oh * ow))
        cc = xp.reshape(xp.permute_dims(cols, (1, 2, 0, 3)), (groups, ck, n * oh * ow))
        dw = xp.reshape(xp.matmul(gg, xp.matrix_transpose(cc)), (o, cg, kh, kw))
    if need_x:
        wmat = xp.reshape(w, (groups, og, ck))
        dcols = xp.reshape(xp.matmul(xp.matrix_transpose(wmat), g4), (n, c, kh * kw, oh, ow))
        (pt, pb), (pl, pr) = padding
        dxpad = xp.zeros((n, c, h + pt + pb, wd + pl + pr), dtype=g.dtype, device=g.device)
        (sh, sw), (dh, dwl) = stride, dilation
        for i in range(kh):
            for j in range(kw):
                rows = slice(i * dh, i * dh + sh * (oh - 1) + 1, sh)
                columns = slice(j * dwl, j * dwl + sw * (ow - 1) + 1, sw)
                dxpad[:, :, rows, columns] = dxpad[:, :, rows, columns] + dcols[:, :, i * kw + j, :, :]
        dx = dxpad[:, :, pt:pt + h, pl:pl + wd] if (pt or pb or pl or pr) else dxpad
    return ConvGrads(dx, dw, db)


class Convolution2d(Function):
    """y = conv2d(x, W) + b, NCHW: x (N, C, H, W), W (O, C/G, kH, kW), b (O,) or None, G groups.

    With padded input x_p, stride S, dilation D and output (OH, OW) = floor((H + 2P - D(K-1) - 1)/S) + 1:
        y[n, o, p, q] = b[o] + sum_{c in group(o), i, j} W[o, c, i, j] x_p[n, c, pS_h + iD_h, qS_w + jD_w]
    As a matrix product per group: X_col (C/G*kH*kW, OH*OW) holds one strided slice of x_p per kernel
    offset (i, j) and Y = W_mat X_col with W_mat (O/G, C/G*kH*kW).

    Backward, with G_y = dL/dy reshaped to (O/G, OH*OW) per image and group:
        dL/dW_mat = sum_n G_y X_col^T        dL/db[o] = sum_{n,p,q} G_y[n, o, p, q]
        dL/dX_col = W_mat^T G_y, folded back (col2im) by adding each offset's slice into dL/dx_p,
        whose interior is dL/dx (equivalently, for stride 1, dL/dx is the convolution of the padded
        G_y with the flipped, transposed kernel).
    """

    owns_grads = True  # every kernel returns new dx, dW and db arrays (no workspace views)
    forward_kernel = kernels.CONV2D_FORWARD
    backward_kernel = kernels.CONV2D_BACKWARD

    @staticmethod
    def forward(ctx, x, w, b, stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1), groups=1):
        unbatched = x.ndim == 3
        if unbatched:
            x = namespace(x).expand_dims(x, axis=0)
        # the output size, computed here once: every implementation (and the jvp rule) receives it
        out_hw = conv2d_output_size(tuple(x.shape[-2:]), tuple(w.shape[2:]), stride, padding, dilation)
        ctx.config = (stride, padding, dilation, groups, out_hw)
        fast = backend_of(x).kernel(Convolution2d.forward_kernel)
        run = fast if fast is not None else conv2d_forward_generic
        y, ctx.saved = run(x, w, b, *ctx.config)
        ctx.unbatched = unbatched
        ctx.has_bias = b is not None
        if forward_mode_active():  # the jvp rule needs the inputs; otherwise do not keep them alive
            ctx.inputs = (x, w)
        return y[0, ...] if unbatched else y

    @staticmethod
    def backward(ctx, g):
        needs = tuple(ctx.needs_input_grad) + (False,) * 3
        needs = (needs[0], needs[1], needs[2] and ctx.has_bias)
        if ctx.unbatched:
            g = namespace(g).expand_dims(g, axis=0)
        fast = backend_of(g).kernel(Convolution2d.backward_kernel)
        saved, ctx.saved = ctx.saved, None  # free the saved arrays as soon as they are used
        if fast is not None:
            dx, dw, db = fast(g, saved, needs)
        else:
            dx, dw, db = conv2d_backward_generic(g, saved, needs)
        if dx is not None and ctx.unbatched:
            dx = dx[0, ...]
        return dx, dw, db

    @staticmethod
    def jvp(ctx, tx, tw, tb):
        # bilinear in (x, W), affine in b: dy = conv(dx, W) + conv(x, dW) + db
        x, w = ctx.inputs
        fast = backend_of(x).kernel(Convolution2d.forward_kernel)
        run = fast if fast is not None else conv2d_forward_generic
        out = None
        if tx is not None:
            tx = namespace(tx).expand_dims(tx, axis=0) if ctx.unbatched else tx
            out = run(tx, w, tb, *ctx.config).y
            tb = None
        if tw is not None:
            term = run(x, tw, tb, *ctx.config).y
            out = term if out is None else out + term
            tb = None
        if tb is not None:
            out_hw = ctx.config[-1]
            xp = namespace(tb)
            out = xp.broadcast_to(xp.reshape(tb, (1, -1, 1, 1)), (x.shape[0], w.shape[0]) + tuple(out_hw))
        return out[0, ...] if ctx.unbatched else out


def check_conv2d_input(x, w, b, groups, where: str, in_channels=None):
    """Shape and dtype checks shared by ``F.conv2d`` and ``nn.Conv2d`` (``where`` names the layer)."""
    xa, wa = raw(x), raw(w)
    if wa.ndim != 4:
        raise ValueError(f"{where}: weight must be 4-D (out_channels, in_channels/groups, kH, kW), "
                         f"got {shape_text(wa.shape)}")
    c_in = wa.shape[1] * groups if in_channels is None else in_channels
    if xa.ndim not in (3, 4) or xa.shape[-3] != c_in:
        expected = f"(N, {c_in}, H, W)"
        raise ValueError(f"{where}: expected input {expected}, got {shape_text(xa.shape)}")
    if wa.shape[0] % groups != 0:
        raise ValueError(f"{where}: out_channels {wa.shape[0]} is not divisible by groups={groups}")
    if xa.dtype != wa.dtype and not is_autocast_enabled():  # autocast casts both to one dtype
        raise TypeError(f"{where}: input dtype {dtype_name(xa.dtype)} does not match weight dtype "
                        f"{dtype_name(wa.dtype)}; cast one explicitly (x.float() / model.double()) - "
                        "xpnet never upcasts silently")
    if b is not None:
        ba = raw(b)
        if tuple(ba.shape) != (wa.shape[0],):
            raise ValueError(f"{where}: bias must have shape ({wa.shape[0]},), got {shape_text(ba.shape)}")
        if ba.dtype != wa.dtype and not is_autocast_enabled():
            raise TypeError(f"{where}: bias dtype {dtype_name(ba.dtype)} does not match weight dtype "
                            f"{dtype_name(wa.dtype)}")


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution over NCHW input (PyTorch's ``F.conv2d``): input (N, C, H, W) or (C, H, W),
    weight (O, C/groups, kH, kW), bias (O,) or None; ``padding`` an int, a pair, 'valid' or 'same'."""
    where = "conv2d"
    input = as_input(input, where)
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{where}: groups must be a positive int, got {groups!r}")
    check_conv2d_input(input, weight, bias, groups, where)
    return _apply(input, weight, bias, stride, padding, dilation, groups, where)


def _apply(input, weight, bias, stride, padding, dilation, groups, where):
    kernel = tuple(raw(weight).shape[2:])
    stride = normalize_pair(stride, "stride", where)
    dilation = normalize_pair(dilation, "dilation", where)
    padding = normalize_padding(padding, kernel, stride, dilation, where)
    # Convolution2d.forward computes the output size (and raises "conv2d: output height ... is below 1")
    return Convolution2d.apply(input, weight, bias, stride=stride, padding=padding, dilation=dilation,
                               groups=groups)
