"""2-D pooling over NCHW input: max, average and adaptive average, each one Function.

Generic Array-API code (one strided slice per kernel offset, never a loop over output pixels);
a backend may register faster kernels with the same contract, tested equal to these:

    max_pool2d_forward(x, kernel, stride, padding, dilation, out_hw) -> PoolForward(y, saved)
    max_pool2d_backward(g, saved) -> dx
    avg_pool2d_forward(x, kernel, stride, padding, out_hw, count_include_pad, divisor_override)
        -> PoolForward(y, saved)
    avg_pool2d_backward(g, saved) -> dx

``out_hw`` is computed once (``pool_geometry``) and passed on; ``saved`` is what one implementation's
forward keeps for its own backward (``GenericMaxPoolSaved`` / ``GenericAvgPoolSaved`` here).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ...autodiff.function import Function, forward_mode_active
from ...backends import backend_of, kernels
from ...backends.kernels import PoolForward
from ._arrays import as_input, namespace, raw, require_float, shape_text
from .conv import conv2d_output_size, normalize_pair

__all__ = ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "MaxPool2dFunction", "AvgPool2dFunction",
           "AdaptiveAvgPool2dFunction", "max_pool2d_forward_generic", "max_pool2d_backward_generic",
           "avg_pool2d_forward_generic", "avg_pool2d_backward_generic", "adaptive_pool_matrix", "GenericMaxPoolSaved",
           "GenericAvgPoolSaved"]


def _pool_padded_shape(h, w, out_hw, kernel, stride, padding, dilation):
    """Padded extent every window fits in (ceil_mode may reach past the padding)."""
    need_h = (out_hw[0] - 1) * stride[0] + dilation[0] * (kernel[0] - 1) + 1
    need_w = (out_hw[1] - 1) * stride[1] + dilation[1] * (kernel[1] - 1) + 1
    return (max(h + padding[0][0] + padding[0][1], need_h), max(w + padding[1][0] + padding[1][1], need_w))


def _framed(xp, x, shape_hw, top, left, value):
    n, c, h, w = x.shape
    if tuple(shape_hw) == (h, w):
        return x
    out = xp.full((n, c) + tuple(shape_hw), value, dtype=x.dtype, device=x.device)
    out[:, :, top:top + h, left:left + w] = x
    return out


def _offsets(kernel, stride, dilation, out_hw):
    """(row slice, column slice) of the padded input that each kernel offset (i, j) meets."""
    (oh, ow), (sh, sw), (dh, dw) = out_hw, stride, dilation
    return [(slice(i * dh, i * dh + sh * (oh - 1) + 1, sh), slice(j * dw, j * dw + sw * (ow - 1) + 1, sw))
            for i in range(kernel[0]) for j in range(kernel[1])]


class GenericMaxPoolSaved(NamedTuple):
    """What the generic max-pooling forward keeps for its backward."""

    arg: Any  # (N, C, OH, OW) int32: the kernel offset k = i*kW + j of each window's maximum
    input_shape: tuple  # (N, C, H, W)
    kernel: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    out_hw: tuple
    padded_hw: tuple  # the framed extent every window fits in


class GenericAvgPoolSaved(NamedTuple):
    """What the generic average-pooling forward keeps for its backward."""

    scale: Any  # 1/divisor per window, (OH, OW), or a 0-d array with divisor_override
    input_shape: tuple  # (N, C, H, W)
    kernel: tuple
    stride: tuple
    padding: tuple
    out_hw: tuple
    padded_hw: tuple


def max_pool2d_forward_generic(x, kernel, stride, padding, dilation, out_hw):
    xp = namespace(x)
    n, c, h, w = x.shape
    shape_hw = _pool_padded_shape(h, w, out_hw, kernel, stride, padding, dilation)
    xpad = _framed(xp, x, shape_hw, padding[0][0], padding[1][0], -float("inf"))
    offsets = _offsets(kernel, stride, dilation, out_hw)
    (pt, pl), dev = (padding[0][0], padding[1][0]), x.device
    inside_rows = xp.arange(shape_hw[0], device=dev)
    inside_rows = (inside_rows >= pt) & (inside_rows < pt + h)
    inside_cols = xp.arange(shape_hw[1], device=dev)
    inside_cols = (inside_cols >= pl) & (inside_cols < pl + w)
    y = xpad[:, :, offsets[0][0], offsets[0][1]]
    arg = xp.zeros(y.shape, dtype=xp.int32, device=dev)
    # whether y holds an input element yet: padding never wins, so a window of -inf still routes its
    # gradient to its first input element, as PyTorch does
    real = inside_rows[offsets[0][0]][:, None] & inside_cols[offsets[0][1]][None, :]
    for k, (rows, cols) in enumerate(offsets[1:], start=1):
        v = xpad[:, :, rows, cols]
        inside = inside_rows[rows][:, None] & inside_cols[cols][None, :]
        better = (v > y) | xp.isnan(v) | (inside & ~real)  # first max wins; a NaN wins as in PyTorch
        y = xp.where(better, v, y)
        arg = xp.where(better, xp.asarray(k, dtype=xp.int32, device=dev), arg)
        real = real | inside
    return PoolForward(y, GenericMaxPoolSaved(arg, x.shape, kernel, stride, padding, dilation, out_hw, shape_hw))


def max_pool2d_backward_generic(g, saved):
    arg, (n, c, h, w) = saved.arg, saved.input_shape
    xp = namespace(g)
    dx = xp.zeros((n, c) + tuple(saved.padded_hw), dtype=g.dtype, device=g.device)
    for k, (rows, cols) in enumerate(_offsets(saved.kernel, saved.stride, saved.dilation, saved.out_hw)):
        dx[:, :, rows, cols] = dx[:, :, rows, cols] + xp.where(arg == k, g, 0.0)
    pt, pl = saved.padding[0][0], saved.padding[1][0]
    return dx[:, :, pt:pt + h, pl:pl + w]


def _avg_scale(xp, ref, h, w, kernel, stride, padding, out_hw, count_include_pad, divisor_override):
    """1/divisor per window, (OH, OW): PyTorch's rule - the window clipped to input+padding (or to the
    input without count_include_pad), unless divisor_override is given."""
    if divisor_override:
        return xp.asarray(1.0 / divisor_override, dtype=ref.dtype, device=ref.device)
    shape_hw = _pool_padded_shape(h, w, out_hw, kernel, stride, padding, (1, 1))
    (pt, pb), (pl, pr) = padding
    rows = xp.arange(shape_hw[0], device=ref.device)
    cols = xp.arange(shape_hw[1], device=ref.device)
    if count_include_pad:
        inside = (rows < h + pt + pb)[:, None] & (cols < w + pl + pr)[None, :]
    else:
        inside = ((rows >= pt) & (rows < pt + h))[:, None] & ((cols >= pl) & (cols < pl + w))[None, :]
    mask = xp.astype(inside, ref.dtype)
    total = None
    for rs, cs in _offsets(kernel, stride, (1, 1), out_hw):
        total = mask[rs, cs] if total is None else total + mask[rs, cs]
    return 1.0 / xp.maximum(total, xp.asarray(1.0, dtype=ref.dtype, device=ref.device))


def avg_pool2d_forward_generic(x, kernel, stride, padding, out_hw, count_include_pad, divisor_override=None):
    xp = namespace(x)
    n, c, h, w = x.shape
    shape_hw = _pool_padded_shape(h, w, out_hw, kernel, stride, padding, (1, 1))
    xpad = _framed(xp, x, shape_hw, padding[0][0], padding[1][0], 0.0)
    total = None
    for rows, cols in _offsets(kernel, stride, (1, 1), out_hw):
        v = xpad[:, :, rows, cols]
        total = v if total is None else total + v
    scale = _avg_scale(xp, x, h, w, kernel, stride, padding, out_hw, count_include_pad, divisor_override)
    return PoolForward(total * scale, GenericAvgPoolSaved(scale, x.shape, kernel, stride, padding, out_hw, shape_hw))


def avg_pool2d_backward_generic(g, saved):
    n, c, h, w = saved.input_shape
    xp = namespace(g)
    gs = g * saved.scale
    dx = xp.zeros((n, c) + tuple(saved.padded_hw), dtype=g.dtype, device=g.device)
    for rows, cols in _offsets(saved.kernel, saved.stride, (1, 1), saved.out_hw):
        dx[:, :, rows, cols] = dx[:, :, rows, cols] + gs
    pt, pl = saved.padding[0][0], saved.padding[1][0]
    return dx[:, :, pt:pt + h, pl:pl + w]


def _unbatch_in(x):
    return (namespace(x).expand_dims(x, axis=0), True) if x.ndim == 3 else (x, False)


class MaxPool2dFunction(Function):
    """y[n, c, p, q] = max_{i, j} x_p[n, c, pS_h + iD_h, qS_w + jD_w], x_p framed with -inf.

    Backward: dL/dx routes each dL/dy[n, c, p, q] to the argmax of its window (the first maximum
    in (i, j) order, as PyTorch), summing where windows overlap; everything else gets 0.
    """

    forward_kernel = kernels.MAX_POOL2D_FORWARD
    backward_kernel = kernels.MAX_POOL2D_BACKWARD

    @staticmethod
    def forward(ctx, x, kernel=(2, 2), stride=(2, 2), padding=((0, 0), (0, 0)), dilation=(1, 1), out_hw=(1, 1)):
        x, ctx.unbatched = _unbatch_in(x)
        fast = backend_of(x).kernel(MaxPool2dFunction.forward_kernel)
        run = fast if fast is not None else max_pool2d_forward_generic
        y, ctx.saved = run(x, kernel, stride, padding, dilation, out_hw)
        if forward_mode_active():  # the jvp rule needs the input; otherwise do not keep it alive
            ctx.x = x
        ctx.config = (kernel, stride, padding, dilation, out_hw)
        return y[0, ...] if ctx.unbatched else y

    @staticmethod
    def backward(ctx, g):
        if ctx.unbatched:
            g = namespace(g).expand_dims(g, axis=0)
        fast = backend_of(g).kernel(MaxPool2dFunction.backward_kernel)
        saved, ctx.saved = ctx.saved, None
        dx = (fast or max_pool2d_backward_generic)(g, saved)
        return dx[0, ...] if ctx.unbatched else dx

    @staticmethod
    def jvp(ctx, tx):
        # the tangent of the window's argmax element: dy = dx_p at the saved argmax
        xp = namespace(tx)
        tx, _ = _unbatch_in(tx)
        kernel, stride, padding, dilation, out_hw = ctx.config
        saved = max_pool2d_forward_generic(ctx.x, *ctx.config).saved
        tpad = _framed(xp, tx, saved.padded_hw, padding[0][0], padding[1][0], 0.0)
        out = xp.zeros(saved.arg.shape, dtype=tx.dtype, device=tx.device)
        for k, (rows, cols) in enumerate(_offsets(kernel, stride, dilation, out_hw)):
            out = xp.where(saved.arg == k, tpad[:, :, rows, cols], out)
        return out[0, ...] if ctx.unbatched else out


class AvgPool2dFunction(Function):
    """y[n, c, p, q] = (1/d_pq) sum_{i, j} x_p[n, c, pS_h + i, qS_w + j], x_p framed with zeros, d_pq the
    window size (kH*kW, or the part inside the input without count_include_pad, or the override).

    Backward: dL/dx_p[n, c, pS_h + i, qS_w + j] += dL/dy[n, c, p, q] / d_pq for every (i, j); dL/dx is
    the interior of dL/dx_p.
    """

    forward_kernel = kernels.AVG_POOL2D_FORWARD
    backward_kernel = kernels.AVG_POOL2D_BACKWARD

    @staticmethod
    def forward(ctx, x, kernel=(2, 2), stride=(2, 2), padding=((0, 0), (0, 0)), out_hw=(1, 1),
                count_include_pad=True, divisor_override=None):
        x, ctx.unbatched = _unbatch_in(x)
        fast = backend_of(x).kernel(AvgPool2dFunction.forward_kernel)
        run = fast if fast is not None else avg_pool2d_forward_generic
        ctx.config = (kernel, stride, padding, out_hw, count_include_pad, divisor_override)
        y, ctx.saved = run(x, *ctx.config)
        return y[0, ...] if ctx.unbatched else y

    @staticmethod
    def backward(ctx, g):
        if ctx.unbatched:
            g = namespace(g).expand_dims(g, axis=0)
        fast = backend_of(g).kernel(AvgPool2dFunction.backward_kernel)
        saved, ctx.saved = ctx.saved, None
        dx = (fast or avg_pool2d_backward_generic)(g, saved)
        return dx[0, ...] if ctx.unbatched else dx

    @staticmethod
    def jvp(ctx, tx):
        # average pooling is linear: the tangent goes through the same pooling
        x, _ = _unbatch_in(tx)
        fast = backend_of(x).kernel(AvgPool2dFunction.forward_kernel)
        y = (fast or avg_pool2d_forward_generic)(x, *ctx.config).y
        return y[0, ...] if ctx.unbatched else y


def adaptive_pool_matrix(xp, size_in: int, size_out: int, dtype, device):
    """P (size_out, size_in): row i averages x[start_i:end_i] with PyTorch's bounds
    start_i = floor(i*H/OH), end_i = ceil((i+1)*H/OH)."""
    i = xp.arange(size_out, device=device)
    start = (i * size_in) // size_out
    end = ((i + 1) * size_in + size_out - 1) // size_out
    h = xp.arange(size_in, device=device)
    inside = (h[None, :] >= start[:, None]) & (h[None, :] < end[:, None])
    return xp.astype(inside, dtype) / xp.astype(end - start, dtype)[:, None]


class AdaptiveAvgPool2dFunction(Function):
    """y = P_h x P_w^T per image and channel, P_h (OH, H) and P_w (OW, W) the averaging matrices with
    PyTorch's window bounds start = floor(iH/OH), end = ceil((i+1)H/OH).

    Backward: dL/dx = P_h^T (dL/dy) P_w.
    """

    @staticmethod
    def forward(ctx, x, output_size=(1, 1)):
        xp = namespace(x)
        ph = adaptive_pool_matrix(xp, x.shape[-2], output_size[0], x.dtype, x.device)
        pw = adaptive_pool_matrix(xp, x.shape[-1], output_size[1], x.dtype, x.device)
        ctx.save_for_backward(ph, pw)
        return xp.matmul(xp.matmul(ph, x), xp.matrix_transpose(pw))

    @staticmethod
    def backward(ctx, g):
        ph, pw = ctx.saved_tensors
        xp = namespace(g)
        return xp.matmul(xp.matmul(xp.matrix_transpose(ph), g), pw)

    @staticmethod
    def jvp(ctx, tx):
        ph, pw = ctx.saved_tensors
        xp = namespace(tx)
        return xp.matmul(xp.matmul(ph, tx), xp.matrix_transpose(pw))


# -- functional API ---------------------------------------------------------------------------
def _check_pool_input(x, where):
    xa = raw(x)
    if xa.ndim not in (3, 4):
        raise ValueError(f"{where}: expected input (N, C, H, W) or (C, H, W), got {shape_text(xa.shape)}")
    require_float(x, where)


def pool_geometry(x, kernel_size, stride, padding, dilation, ceil_mode, where):
    """kernel, stride, padding ((t, b), (l, r)), dilation and (OH, OW) for a pooling layer."""
    kernel = normalize_pair(kernel_size, "kernel_size", where)
    stride = kernel if stride is None or (not isinstance(stride, int) and len(tuple(stride)) == 0) \
        else normalize_pair(stride, "stride", where)
    dilation = normalize_pair(dilation, "dilation", where)
    ph, pw = normalize_pair(padding, "padding", where, minimum=0)
    if ph > kernel[0] // 2 or pw > kernel[1] // 2:
        raise ValueError(f"{where}: padding should be at most half of the kernel size, got padding=({ph}, {pw}) "
                         f"for kernel_size={kernel}")
    pad = ((ph, ph), (pw, pw))
    out_hw = conv2d_output_size(tuple(raw(x).shape[-2:]), kernel, stride, pad, dilation, where, ceil_mode=ceil_mode)
    return kernel, stride, pad, dilation, out_hw


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Max pooling over (N, C, H, W) or (C, H, W) input, PyTorch's ``F.max_pool2d`` (stride defaults to
    kernel_size; padding is -inf and at most half the kernel)."""
    where = "max_pool2d"
    input = as_input(input, where)
    _check_pool_input(input, where)
    kernel, stride, pad, dilation, out_hw = pool_geometry(input, kernel_size, stride, padding, dilation,
                                                          ceil_mode, where)
    return MaxPool2dFunction.apply(input, kernel=kernel, stride=stride, padding=pad, dilation=dilation,
                                   out_hw=out_hw)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """Average pooling over (N, C, H, W) or (C, H, W) input, PyTorch's ``F.avg_pool2d``."""
    where = "avg_pool2d"
    input = as_input(input, where)
    _check_pool_input(input, where)
    if divisor_override is not None and (isinstance(divisor_override, bool) or not isinstance(divisor_override, int)
                                         or divisor_override < 1):
        raise ValueError(f"{where}: divisor_override must be a positive int, got {divisor_override!r}")
    kernel, stride, pad, _, out_hw = pool_geometry(input, kernel_size, stride, padding, 1, ceil_mode, where)
    return AvgPool2dFunction.apply(input, kernel=kernel, stride=stride, padding=pad, out_hw=out_hw,
                                   count_include_pad=bool(count_include_pad), divisor_override=divisor_override)


def adaptive_output_size(x, output_size, where):
    h, w = raw(x).shape[-2:]
    if isinstance(output_size, int) and not isinstance(output_size, bool):
        size = (output_size, output_size)
    else:
        try:
            size = tuple(output_size)
        except TypeError:
            raise TypeError(f"{where}: output_size must be an int or a pair, got {output_size!r}") from None
        if len(size) == 1:
            size = (size[0], size[0])
        if len(size) != 2:
            raise TypeError(f"{where}: output_size must be an int or a pair, got {output_size!r}")
        size = (h if size[0] is None else size[0], w if size[1] is None else size[1])
    if size[0] < 1 or size[1] < 1:
        raise ValueError(f"{where}: output_size must be >= 1, got {output_size!r}")
    return (int(size[0]), int(size[1]))


def adaptive_avg_pool2d(input, output_size):
    """Adaptive average pooling to ``output_size`` (int, pair, None keeps that axis), PyTorch's window
    bounds."""
    where = "adaptive_avg_pool2d"
    input = as_input(input, where)
    _check_pool_input(input, where)
    return AdaptiveAvgPool2dFunction.apply(input, output_size=adaptive_output_size(input, output_size, where))
