"""Batch normalization and local response normalization, each one Function with a closed-form backward.

Generic Array-API code; a backend may register faster kernels with these contracts, tested equal
to the generic ones:

    batch_norm_forward(x, gamma, beta, mean, var, training, eps)
        -> BatchNormForward(y, saved, batch_mean, batch_var)
    batch_norm_backward(g, saved, needs) -> BatchNormGrads(dx, dgamma, dbeta)    needs = (x, gamma, beta)
    local_response_norm_forward(x, size, alpha, beta, k) -> LocalResponseNormForward(y, saved)
    local_response_norm_backward(g, saved) -> dx

``batch_mean``/``batch_var`` are the biased batch statistics in training mode, None in eval mode.
``saved`` is what one implementation's forward keeps for its own backward (``GenericBatchNormSaved``,
``GenericLocalResponseNormSaved`` here).

The batch statistics leave ``BatchNormFunction`` as outputs: in training mode it returns
(y, batch_mean, batch_var), and ``batch_norm`` updates the running buffers from those arrays. The
Function's context is no place for them: no node (and so no context) is recorded under ``no_grad``
or when nothing requires a gradient, and the running statistics are updated there too.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from ...autodiff.function import Function, forward_mode_active, is_autocast_enabled
from ...backends import backend_of, dtype_name, kernels, unwrap
from ...backends.kernels import BatchNormForward, BatchNormGrads, LocalResponseNormForward
from ._arrays import as_input, namespace, raw, require_float, shape_text

__all__ = ["batch_norm", "local_response_norm", "BatchNormFunction", "LocalResponseNormFunction",
           "batch_norm_forward_generic", "batch_norm_backward_generic", "lrn_forward_generic",
           "lrn_backward_generic", "GenericBatchNormSaved", "GenericLocalResponseNormSaved"]


def _channel_shape(ndim: int, c: int) -> tuple:
    return (1, c) + (1,) * (ndim - 2)


class GenericBatchNormSaved(NamedTuple):
    """What the generic batch-norm forward keeps for its backward."""

    xhat: Any  # (x - mu) / sigma, x's shape
    invstd: Any  # 1 / sigma per channel
    gamma: Any  # the scale, or None
    training: bool


def batch_norm_forward_generic(x, gamma, beta, mean, var, training, eps):
    xp = namespace(x)
    axes = (0,) + tuple(range(2, x.ndim))
    shape = _channel_shape(x.ndim, x.shape[1])
    if training:
        mean = xp.mean(x, axis=axes)
        xc = x - xp.reshape(mean, shape)
        var = xp.mean(xc * xc, axis=axes)
    else:
        xc = x - xp.reshape(mean, shape)
    invstd = 1.0 / xp.sqrt(var + eps)
    xhat = xc * xp.reshape(invstd, shape)
    y = xhat if gamma is None else xhat * xp.reshape(gamma, shape)
    if beta is not None:
        y = y + xp.reshape(beta, shape)
    saved = GenericBatchNormSaved(xhat, invstd, gamma, training)
    return BatchNormForward(y, saved, (mean if training else None), (var if training else None))


def batch_norm_backward_generic(g, saved, needs):
    xhat, invstd, gamma, training = saved.xhat, saved.invstd, saved.gamma, saved.training
    xp = namespace(g)
    axes = (0,) + tuple(range(2, g.ndim))
    shape = _channel_shape(g.ndim, g.shape[1])
    m = math.prod(g.shape) // g.shape[1]
    sum_g = xp.sum(g, axis=axes)
    sum_gx = xp.sum(g * xhat, axis=axes)
    dx = None
    if needs[0]:
        scale = invstd if gamma is None else gamma * invstd
        if training:
            dx = xp.reshape(scale / m, shape) * (m * g - xp.reshape(sum_g, shape) - xhat * xp.reshape(sum_gx, shape))
        else:
            dx = g * xp.reshape(scale, shape)
    return BatchNormGrads(dx, (sum_gx if needs[1] else None), (sum_g if needs[2] else None))


class BatchNormFunction(Function):
    """y = gamma * x_hat + beta,  x_hat = (x - mu) / sigma,  sigma = sqrt(var + eps), per channel c (axis 1).

    Training: mu, var are the batch mean and biased variance over the m = N*H*W values of each channel.
    Eval: the running statistics are used, so y is affine in x.

    Backward (training), with g = dL/dy and sums over the m values of a channel:
        dL/dx = (1/m) * gamma/sigma * (m*g - sum(g) - x_hat * sum(g * x_hat))
        dL/dgamma = sum(g * x_hat)        dL/dbeta = sum(g)
    Backward (eval): dL/dx = g * gamma / sigma, same dL/dgamma and dL/dbeta.

    Outputs: y in eval mode; (y, batch_mean, batch_var) in training mode, the biased batch statistics
    per channel, for the running averages (``batch_norm``). The statistics are not differentiated
    through (as PyTorch's running-statistics update): backward ignores gradients that reach them and
    jvp gives them no tangent.
    """

    forward_kernel = kernels.BATCH_NORM_FORWARD
    backward_kernel = kernels.BATCH_NORM_BACKWARD

    @staticmethod
    def forward(ctx, x, gamma, beta, mean=None, var=None, training=True, eps=1e-5):
        fast = backend_of(x).kernel(BatchNormFunction.forward_kernel)
        run = fast if fast is not None else batch_norm_forward_generic
        y, ctx.saved, batch_mean, batch_var = run(x, gamma, beta, mean, var, training, eps)
        ctx.affine = (gamma is not None, beta is not None)
        if forward_mode_active():  # the jvp rule needs the inputs; otherwise do not keep them alive
            ctx.inputs = (x, gamma, mean, var, training, eps)
        return (y, batch_mean, batch_var) if training else y

    @staticmethod
    def backward(ctx, g, *statistics_grads):
        needs = tuple(ctx.needs_input_grad) + (False,) * 3
        needs = (needs[0], needs[1] and ctx.affine[0], needs[2] and ctx.affine[1])
        fast = backend_of(g).kernel(BatchNormFunction.backward_kernel)
        saved, ctx.saved = ctx.saved, None
        dx, dgamma, dbeta = (fast or batch_norm_backward_generic)(g, saved, needs)
        return dx, dgamma, dbeta

    @staticmethod
    def jvp(ctx, tx, tgamma, tbeta):
        # training: d x_hat = (t_c - x_hat mean(x_hat t_c)) / sigma with t_c = t - mean(t); eval: t / sigma
        x, gamma, mean, var, training, eps = ctx.inputs
        xp = namespace(x)
        saved = batch_norm_forward_generic(x, None, None, mean, var, training, eps).saved
        xhat, invstd = saved.xhat, saved.invstd
        axes = (0,) + tuple(range(2, x.ndim))
        shape = _channel_shape(x.ndim, x.shape[1])
        out = None
        if tx is not None:
            if training:
                tc = tx - xp.mean(tx, axis=axes, keepdims=True)
                dxhat = (tc - xhat * xp.mean(xhat * tc, axis=axes, keepdims=True)) * xp.reshape(invstd, shape)
            else:
                dxhat = tx * xp.reshape(invstd, shape)
            out = dxhat if gamma is None else dxhat * xp.reshape(gamma, shape)
        for term in (None if tgamma is None else xhat * xp.reshape(tgamma, shape),
                     None if tbeta is None else xp.reshape(tbeta, shape)):
            if term is not None:
                out = term if out is None else out + term
        if out is not None and tuple(out.shape) != tuple(x.shape):
            out = xp.broadcast_to(out, x.shape)
        return (out, None, None) if training else out


def _update_in_place(buffer, value):
    """Write ``value`` into a running-statistics buffer (a Tensor or a raw array) in place, as PyTorch
    does, so views of it (``state_dict()``) see the new values."""
    data = unwrap(buffer)
    if data.dtype != value.dtype:
        value = namespace(value).astype(value, data.dtype)
    data[...] = value


def _check_channel_vector(v, c, where, what, ref):
    if v is None:
        return
    va = raw(v)
    if tuple(va.shape) != (c,):
        raise ValueError(f"{where}: {what} must have shape ({c},), got {shape_text(va.shape)}")
    if va.dtype != raw(ref).dtype and what in ("weight", "bias") and not is_autocast_enabled():
        raise TypeError(f"{where}: input dtype {dtype_name(raw(ref).dtype)} does not match {what} dtype "
                        f"{dtype_name(va.dtype)}; cast one explicitly (x.float() / model.double()) - xpnet never "
                        "upcasts silently")


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5,
               where: str = "batch_norm"):
    """Batch normalization over axis 1 of (N, C), (N, C, L) or (N, C, H, W) input (PyTorch's
    ``F.batch_norm``). In training mode the batch statistics normalize and, when running buffers are
    given, update them in place: running = (1 - momentum) * running + momentum * batch, with the
    unbiased batch variance (m/(m-1)) as PyTorch. In eval mode the running statistics normalize."""
    input = as_input(input, where)
    require_float(input, where)
    xa = raw(input)
    if xa.ndim < 2:
        raise ValueError(f"{where}: expected input (N, C) or (N, C, ...), got {shape_text(xa.shape)}")
    c = xa.shape[1]
    for v, what in ((running_mean, "running_mean"), (running_var, "running_var"), (weight, "weight"), (bias, "bias")):
        _check_channel_vector(v, c, where, what, input)
    m = math.prod(xa.shape) // c if c else 0
    if training and m <= 1:
        raise ValueError(f"{where}: expected more than 1 value per channel when training, got input "
                         f"{shape_text(xa.shape)}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError(f"{where}: eval mode (training=False) needs running_mean and running_var")
    # under autocast the Function runs in float32 (see xpnet.amp); the statistics must match it
    compute_dtype = namespace(xa).float32 if is_autocast_enabled() else xa.dtype
    mean = None if training else _stat_array(running_mean, compute_dtype)
    var = None if training else _stat_array(running_var, compute_dtype)
    out = BatchNormFunction.apply(input, weight, bias, mean=mean, var=var, training=bool(training), eps=float(eps))
    if not training:
        return out
    y, batch_mean, batch_var = out  # training: the Function also returns the biased batch statistics
    if running_mean is not None:
        batch_mean, batch_var = raw(batch_mean), raw(batch_var)
        unbiased = batch_var * (m / (m - 1))
        _update_in_place(running_mean, (1.0 - momentum) * raw(running_mean) + momentum * batch_mean)
        if running_var is not None:
            _update_in_place(running_var, (1.0 - momentum) * raw(running_var) + momentum * unbiased)
    return y


def _stat_array(v, dtype):
    a = raw(v)
    if a.dtype != dtype:
        a = namespace(a).astype(a, dtype)
    return a


def negative_power(xp, d, beta: float):
    """d^(-beta) without the generic power function for AlexNet's 0.75 (and 0.5, 1): square roots are
    several times faster than pow and as accurate."""
    if beta == 0.75:
        root = xp.sqrt(d)
        return 1.0 / (root * xp.sqrt(root))
    if beta == 0.5:
        return 1.0 / xp.sqrt(d)
    if beta == 1.0:
        return 1.0 / d
    return d ** (-beta)


class GenericLocalResponseNormSaved(NamedTuple):
    """What the generic LRN forward keeps for its backward."""

    x: Any
    scale: Any  # D^(-beta)
    scale_over_d: Any  # D^(-beta-1)
    size: int
    alpha: float
    beta: float
    lo: int  # channels before c in its window: size // 2
    hi: int  # channels after c: (size - 1) // 2


def lrn_forward_generic(x, size, alpha, beta, k):
    """LocalResponseNormForward(y, GenericLocalResponseNormSaved); see LocalResponseNormFunction."""
    xp = namespace(x)
    lo, hi = size // 2, (size - 1) // 2
    d = k + (alpha / size) * _channel_window_sum(xp, x * x, lo, hi)
    scale = negative_power(xp, d, beta)
    return LocalResponseNormForward(x * scale,
                                    GenericLocalResponseNormSaved(x, scale, scale / d, size, alpha, beta, lo, hi))


def lrn_backward_generic(g, saved):
    x, size, alpha, beta = saved.x, saved.size, saved.alpha, saved.beta
    xp = namespace(g)
    back = _channel_window_sum(xp, g * x * saved.scale_over_d, saved.hi, saved.lo)
    return g * saved.scale - (2.0 * alpha * beta / size) * x * back


class LocalResponseNormFunction(Function):
    """AlexNet's LRN across channels, PyTorch's formula: with n = size, lo = n//2, hi = (n-1)//2,
        S_c = sum_{c' = c-lo}^{c+hi} x_{c'}^2   (channels outside [0, C) count as 0)
        D_c = k + (alpha/n) S_c,   y_c = x_c D_c^(-beta)

    Backward, with g = dL/dy and u_c = g_c x_c D_c^(-beta-1):
        dL/dx_j = g_j D_j^(-beta) - (2 alpha beta / n) x_j sum_{c = j-hi}^{j+lo} u_c

    Fast kernels (``local_response_norm_forward(x, size, alpha, beta, k) -> LocalResponseNormForward``,
    ``local_response_norm_backward(g, saved) -> dx``) may replace the generic code per backend.
    """

    forward_kernel = kernels.LOCAL_RESPONSE_NORM_FORWARD
    backward_kernel = kernels.LOCAL_RESPONSE_NORM_BACKWARD

    @staticmethod
    def forward(ctx, x, size=5, alpha=1e-4, beta=0.75, k=1.0):
        fast = backend_of(x).kernel(LocalResponseNormFunction.forward_kernel)
        y, ctx.saved = (fast or lrn_forward_generic)(x, size, alpha, beta, k)
        if forward_mode_active():
            ctx.inputs = (x, size, alpha, beta, k)
        return y

    @staticmethod
    def backward(ctx, g):
        fast = backend_of(g).kernel(LocalResponseNormFunction.backward_kernel)
        saved, ctx.saved = ctx.saved, None
        return (fast or lrn_backward_generic)(g, saved)

    @staticmethod
    def jvp(ctx, tx):
        # dy = t D^(-beta) - (2 alpha beta / n) x D^(-beta-1) sum_{c' near c} x_{c'} t_{c'}
        x, size, alpha, beta, k = ctx.inputs
        saved = lrn_forward_generic(x, size, alpha, beta, k).saved
        near = _channel_window_sum(namespace(tx), x * tx, saved.lo, saved.hi)
        return tx * saved.scale - (2.0 * alpha * beta / size) * x * saved.scale_over_d * near


def _channel_window_sum(xp, a, before: int, after: int):
    """s[:, c] = sum_{c' = c - before}^{c + after} a[:, c'] (zero outside the channel range): one slice
    per window position of the zero-framed array, no loop over channels."""
    n, c = a.shape[0], a.shape[1]
    rest = tuple(a.shape[2:])
    parts = []
    if before:
        parts.append(xp.zeros((n, before) + rest, dtype=a.dtype, device=a.device))
    parts.append(a)
    if after:
        parts.append(xp.zeros((n, after) + rest, dtype=a.dtype, device=a.device))
    framed = xp.concat(parts, axis=1) if len(parts) > 1 else a
    total = framed[:, 0:c, ...]
    for t in range(1, before + after + 1):
        total = total + framed[:, t:t + c, ...]
    return total


def local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0):
    """Local response normalization across channels of (N, C, ...) input (PyTorch's
    ``F.local_response_norm``)."""
    where = "local_response_norm"
    input = as_input(input, where)
    require_float(input, where)
    xa = raw(input)
    if xa.ndim < 3:
        raise ValueError(f"{where}: expected input (N, C, ...) with 3 or more dimensions, got {shape_text(xa.shape)}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"{where}: size must be a positive int, got {size!r}")
    return LocalResponseNormFunction.apply(input, size=size, alpha=float(alpha), beta=float(beta), k=float(k))
