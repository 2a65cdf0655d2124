"""Loss functions, each one fused Function over raw arrays, with PyTorch's semantics.

``reduction``: 'none' gives one value per element (per sample for the classification losses),
'sum' their sum, 'mean' their mean — for the class-index losses a weighted mean,
sum_i w[y_i] l_i / sum_i w[y_i] over the samples that are not ``ignore_index``, as in PyTorch.

In the formulas below, s = 1 for 'none' and 'sum', s = 1/n (or 1 / sum of weights) for 'mean';
G is the upstream gradient (a scalar unless reduction is 'none').
"""

from __future__ import annotations

import math

from ...autodiff.function import Function
from ...autodiff.tensor import Tensor
from ...backends import backend_of, dtype_name, is_float_dtype, kernels, to_numpy
from ._arrays import INTEGER_DTYPES, array_like, as_input, namespace, raw, require_float, same_dtype, shape_text

REDUCTIONS = ("none", "mean", "sum")

# PyTorch clamps log(x) at -100 in binary_cross_entropy and keeps x (1 - x) above 1e-12 in its
# gradient, so saturated probabilities give large finite values rather than inf/nan.
_BCE_LOG_FLOOR = -100.0
_BCE_GRAD_EPS = 1e-12


def check_reduction(reduction, where: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{where}: reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    return reduction


def legacy_reduction(size_average, reduce, reduction: str) -> str:
    """PyTorch's deprecated ``size_average``/``reduce`` flags, mapped onto ``reduction``."""
    if size_average is None and reduce is None:
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if not reduce:
        return "none"
    return "mean" if size_average else "sum"


def _reduce(xp, values, reduction, count):
    if reduction == "none":
        return values
    total = xp.sum(values)
    return total / count if reduction == "mean" else total


def _scale(g, reduction, count):
    """The factor that multiplies each element's local gradient: G, or G / count for 'mean'."""
    return g / count if reduction == "mean" else g


def _check_pair(input, target, where):
    """Regression-style losses: input and target of one shape and one floating dtype."""
    input = as_input(input, where)
    require_float(input, where)
    if not isinstance(target, Tensor):
        target = array_like(target, raw(input), where, "target")
    x, t = raw(input), raw(target)
    if tuple(x.shape) != tuple(t.shape):
        raise ValueError(f"{where}: input shape {shape_text(x.shape)} and target shape {shape_text(t.shape)} differ; "
                         "reshape the target to the input's shape (xpnet does not broadcast losses)")
    same_dtype(input, target, where)
    return input, target


# -- regression ------------------------------------------------------------------------------------

class MseLoss(Function):
    """l_i = (x_i - t_i)^2, reduced.

    Backward: dL/dx_i = 2 (x_i - t_i) s G,   dL/dt_i = -dL/dx_i.
    """

    @staticmethod
    def forward(ctx, x, t, reduction="mean"):
        d = x - t
        ctx.save_for_backward(d)
        ctx.reduction, ctx.count = reduction, math.prod(x.shape)
        return _reduce(namespace(x), d * d, reduction, ctx.count)

    @staticmethod
    def backward(ctx, g):
        (d,) = ctx.saved_tensors
        dx = (2.0 * d) * _scale(g, ctx.reduction, ctx.count)
        return dx, (-dx if ctx.needs_input_grad[1] else None)


class L1Loss(Function):
    """l_i = |x_i - t_i|, reduced.

    Backward: dL/dx_i = sign(x_i - t_i) s G (0 where x_i = t_i),   dL/dt_i = -dL/dx_i.
    """

    @staticmethod
    def forward(ctx, x, t, reduction="mean"):
        xp = namespace(x)
        d = x - t
        ctx.save_for_backward(d)
        ctx.reduction, ctx.count = reduction, math.prod(x.shape)
        return _reduce(xp, xp.abs(d), reduction, ctx.count)

    @staticmethod
    def backward(ctx, g):
        (d,) = ctx.saved_tensors
        dx = namespace(d).sign(d) * _scale(g, ctx.reduction, ctx.count)
        return dx, (-dx if ctx.needs_input_grad[1] else None)


def mse_loss(input, target, reduction: str = "mean"):
    """Mean squared error between ``input`` and ``target`` of the same shape."""
    check_reduction(reduction, "mse_loss")
    input, target = _check_pair(input, target, "mse_loss")
    return MseLoss.apply(input, target, reduction=reduction)


def l1_loss(input, target, reduction: str = "mean"):
    """Mean absolute error between ``input`` and ``target`` of the same shape."""
    check_reduction(reduction, "l1_loss")
    input, target = _check_pair(input, target, "l1_loss")
    return L1Loss.apply(input, target, reduction=reduction)


# -- binary classification -------------------------------------------------------------------------

class BinaryCrossEntropy(Function):
    """l_i = -w_i [t_i log x_i + (1 - t_i) log(1 - x_i)] for probabilities x, logs floored at -100.

    Backward: dL/dx_i = w_i (x_i - t_i) / max(x_i (1 - x_i), 1e-12) s G,
              dL/dt_i = -w_i [log x_i - log(1 - x_i)] s G.
    """

    @staticmethod
    def forward(ctx, x, t, weight, reduction="mean"):
        xp = namespace(x)
        log_x = xp.clip(xp.log(xp.clip(x, min=math.exp(_BCE_LOG_FLOOR))), min=_BCE_LOG_FLOOR)
        log_1mx = xp.clip(xp.log(xp.clip(1.0 - x, min=math.exp(_BCE_LOG_FLOOR))), min=_BCE_LOG_FLOOR)
        values = -(t * log_x + (1.0 - t) * log_1mx)
        if weight is not None:
            values = values * weight
        ctx.save_for_backward(x, t, weight, log_x, log_1mx)
        ctx.reduction, ctx.count = reduction, math.prod(x.shape)
        return _reduce(xp, values, reduction, ctx.count)

    @staticmethod
    def backward(ctx, g):
        x, t, weight, log_x, log_1mx = ctx.saved_tensors
        xp = namespace(x)
        scale = _scale(g, ctx.reduction, ctx.count)
        if weight is not None:
            scale = scale * weight
        dx = (x - t) / xp.clip(x * (1.0 - x), min=_BCE_GRAD_EPS) * scale
        dt = (log_1mx - log_x) * scale if ctx.needs_input_grad[1] else None
        return dx, dt, None


def _sigmoid(xp, z):
    e = xp.exp(-xp.abs(z))
    return xp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


class BinaryCrossEntropyWithLogits(Function):
    """l_i = w_i [(1 - t_i) z_i + c_i softplus(-z_i)],  c_i = 1 + (p - 1) t_i  (p = pos_weight, 1 if None),
    with softplus(-z) = log(1 + e^-|z|) + max(-z, 0), stable for any z.

    Backward (sigma = sigmoid): dL/dz_i = w_i [(1 - t_i) - c_i (1 - sigma(z_i))] s G
                                         (= w_i (sigma(z_i) - t_i) s G when p = 1),
                                dL/dt_i = w_i [-z_i + (p - 1) softplus(-z_i)] s G.
    """

    @staticmethod
    def forward(ctx, z, t, weight, pos_weight, reduction="mean"):
        xp = namespace(z)
        softplus_neg = xp.log1p(xp.exp(-xp.abs(z))) + xp.clip(-z, min=0.0)
        c = 1.0 if pos_weight is None else 1.0 + (pos_weight - 1.0) * t
        values = (1.0 - t) * z + c * softplus_neg
        if weight is not None:
            values = values * weight
        ctx.save_for_backward(z, t, weight, pos_weight, softplus_neg)
        ctx.reduction, ctx.count = reduction, math.prod(z.shape)
        return _reduce(xp, values, reduction, ctx.count)

    @staticmethod
    def backward(ctx, g):
        z, t, weight, pos_weight, softplus_neg = ctx.saved_tensors
        xp = namespace(z)
        scale = _scale(g, ctx.reduction, ctx.count)
        if weight is not None:
            scale = scale * weight
        sig = _sigmoid(xp, z)
        if pos_weight is None:
            dz = (sig - t) * scale
        else:
            dz = ((1.0 - t) - (1.0 + (pos_weight - 1.0) * t) * (1.0 - sig)) * scale
        dt = None
        if ctx.needs_input_grad[1]:
            dt = -z if pos_weight is None else (pos_weight - 1.0) * softplus_neg - z
            dt = dt * scale
        return dz, dt, None, None


def _broadcasts_to(shape, target) -> bool:
    """Whether an array of ``shape`` broadcasts to ``target`` without enlarging it."""
    if len(shape) > len(target):
        return False
    return all(s in (1, t) for s, t in zip(shape[::-1], target[::-1]))


def _broadcast_weight(weight, input, where, what):
    if weight is None:
        return None
    x = raw(input)
    w = array_like(weight, x, where, what, dtype=x.dtype)
    if not _broadcasts_to(tuple(w.shape), tuple(x.shape)):
        raise ValueError(f"{where}: {what} of shape {shape_text(w.shape)} does not broadcast to the input "
                         f"shape {shape_text(x.shape)}")
    return w


def binary_cross_entropy(input, target, weight=None, reduction: str = "mean"):
    """Binary cross-entropy between probabilities ``input`` (in [0, 1]) and ``target``."""
    where = "binary_cross_entropy"
    check_reduction(reduction, where)
    input, target = _check_pair(input, target, where)
    x = raw(input)
    xp = namespace(x)
    if math.prod(x.shape) and bool(xp.any((x < 0.0) | (x > 1.0))):
        raise ValueError(f"{where}: input values must be probabilities in [0, 1], found min "
                         f"{float(xp.min(x))} and max {float(xp.max(x))}; for logits use "
                         "binary_cross_entropy_with_logits (BCEWithLogitsLoss)")
    w = _broadcast_weight(weight, input, where, "weight")
    return BinaryCrossEntropy.apply(input, target, w, reduction=reduction)


def binary_cross_entropy_with_logits(input, target, weight=None, reduction: str = "mean", pos_weight=None):
    """Sigmoid + binary cross-entropy in one stable step, from logits ``input``."""
    where = "binary_cross_entropy_with_logits"
    check_reduction(reduction, where)
    input, target = _check_pair(input, target, where)
    w = _broadcast_weight(weight, input, where, "weight")
    pw = _broadcast_weight(pos_weight, input, where, "pos_weight")
    return BinaryCrossEntropyWithLogits.apply(input, target, w, pw, reduction=reduction)


# -- multi-class classification ----------------------------------------------------------------------

def _rows(xp, x):
    """x of shape (C,), (N, C) or (N, C, d1, ..., dk) as a (M, C) matrix with the class axis last,
    and the permutation that undoes it (None when no permutation was needed)."""
    if x.ndim == 1:
        return xp.reshape(x, (1, x.shape[0])), None
    if x.ndim == 2:
        return x, None
    perm = (0,) + tuple(range(2, x.ndim)) + (1,)
    moved = xp.permute_dims(x, perm)
    return xp.reshape(moved, (-1, x.shape[1])), tuple(moved.shape)


def _unrows(xp, rows, x_shape, moved_shape):
    """Inverse of ``_rows`` for a (M, C) gradient."""
    if moved_shape is None:
        return xp.reshape(rows, x_shape)
    k = len(x_shape)
    inverse = (0, k - 1) + tuple(range(1, k - 1))
    return xp.permute_dims(xp.reshape(rows, moved_shape), inverse)


def _target_shape(x_shape):
    return () if len(x_shape) == 1 else (x_shape[0],) + tuple(x_shape[2:])


def _class_coefficients(xp, t, n_classes, weight, ignore_index, smoothing, dtype):
    """A (M, C) with loss_i = -sum_c A_ic log p_ic, and D = sum_i w[t_i] over non-ignored samples.

    A_ic = (1 - eps) w[t_i] [c = t_i] + (eps / C) w_c, zero on rows whose target is ignore_index;
    PyTorch divides both terms of the 'mean' by the same D.
    """
    valid = t != ignore_index
    safe = xp.where(valid, t, 0)
    classes = xp.arange(n_classes, dtype=t.dtype, device=t.device)
    onehot = classes[None, :] == safe[:, None]
    if weight is None:
        w_t = xp.astype(valid, dtype)
    else:
        w_t = xp.where(valid, xp.take(weight, safe, axis=0), 0.0)
    coef = xp.where(onehot, w_t[:, None], 0.0)
    if smoothing:
        coef = coef * (1.0 - smoothing)
        spread = xp.ones((n_classes,), dtype=dtype, device=t.device) if weight is None else weight
        coef = coef + xp.where(valid[:, None], spread[None, :] * (smoothing / n_classes), 0.0)
    return coef, xp.sum(w_t)


class CrossEntropyLoss(Function):
    """Softmax cross-entropy from logits x (C classes along axis 1), in one step.

    log p = x - m - log sum_c e^(x_c - m)  (m = max_c x_c, stable);  l_i = -sum_c A_ic log p_ic, with
      class targets:       A_ic = (1 - eps) w[y_i] [c = y_i] + (eps / C) w_c   (0 if y_i = ignore_index),
                           'mean' divides by D = sum_i w[y_i] over the non-ignored samples;
      probability targets: A_ic = w_c ((1 - eps) t_ic + eps / C),  'mean' divides by the sample count.
    Backward: dL/dx_ic = s_i (p_ic sum_c' A_ic' - A_ic),  s_i = G_i ('none'), G ('sum') or G / D ('mean');
              dL/dt_ic = -s_i w_c (1 - eps) log p_ic   (probability targets only).

    Class targets with no weight and no smoothing (A one-hot, D the count of kept samples) run the
    backend's ``cross_entropy_forward`` / ``cross_entropy_backward`` kernels where it has them, with
    the same results: l_i = -log p_{i, y_i};  dL/dx_ic = s_i (p_ic - [c = y_i]), 0 on ignored rows.
    """

    forward_kernel = kernels.CROSS_ENTROPY_FORWARD
    backward_kernel = kernels.CROSS_ENTROPY_BACKWARD

    @staticmethod
    def forward(ctx, x, target, weight, ignore_index=-100, reduction="mean", label_smoothing=0.0,
                probabilities=False):
        xp = namespace(x)
        x2, moved_shape = _rows(xp, x)
        ctx.reduction, ctx.x_shape, ctx.moved_shape = reduction, tuple(x.shape), moved_shape
        fast = None
        if not (probabilities or label_smoothing or weight is not None):
            fast = backend_of(x).kernel(CrossEntropyLoss.forward_kernel)
        ctx.fast = fast is not None
        if fast is not None:
            t2 = target if target.ndim == 1 else xp.reshape(target, (-1,))
            rows, ctx.denominator, bad, saved = fast(x2, t2, ignore_index)
            if bad >= 0:  # cross_entropy checks the targets before: only a direct apply gets here
                raise ValueError(f"target class index {int(t2[bad])} of row {bad} is out of range for "
                                 f"{x2.shape[1]} classes")
            ctx.save_for_backward(saved, t2)
            ctx.ignore_index = ignore_index
            if reduction == "none":
                return xp.reshape(rows, _target_shape(x.shape))
            return _reduce(xp, rows, reduction, ctx.denominator)
        n_classes = x2.shape[1]
        shifted = x2 - xp.max(x2, axis=1, keepdims=True)
        log_p = shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
        if probabilities:
            t2, _ = _rows(xp, target)
            spread = t2 * (1.0 - label_smoothing) + label_smoothing / n_classes if label_smoothing else t2
            coef = spread if weight is None else spread * weight[None, :]
            denominator = x2.shape[0]
        else:
            t2 = xp.reshape(target, (-1,))
            coef, denominator = _class_coefficients(xp, t2, n_classes, weight, ignore_index, label_smoothing, x.dtype)
        if probabilities:
            rows = -xp.sum(coef * log_p, axis=1)
        else:  # a class with no coefficient adds nothing, even where log p is -inf or NaN (as in PyTorch)
            rows = -xp.sum(xp.where(coef != 0, log_p, 0.0) * coef, axis=1)
        ctx.save_for_backward(log_p, coef, weight)
        ctx.denominator, ctx.probabilities, ctx.smoothing = denominator, probabilities, label_smoothing
        if reduction == "none":
            return xp.reshape(rows, _target_shape(x.shape))
        return _reduce(xp, rows, reduction, denominator)

    @staticmethod
    def backward(ctx, g):
        if ctx.fast:
            saved, t2 = ctx.saved_tensors
            xp = namespace(g)
            scale = xp.reshape(g, (-1,)) if ctx.reduction == "none" else _scale(g, ctx.reduction, ctx.denominator)
            dx2 = backend_of(g).kernel(CrossEntropyLoss.backward_kernel)(scale, saved, t2, ctx.ignore_index)
            return (dx2 if len(ctx.x_shape) == 2 else _unrows(xp, dx2, ctx.x_shape, ctx.moved_shape)), None, None
        log_p, coef, weight = ctx.saved_tensors
        xp = namespace(log_p)
        scale = xp.reshape(g, (-1, 1)) if ctx.reduction == "none" else _scale(g, ctx.reduction, ctx.denominator)
        dx2 = scale * (xp.exp(log_p) * xp.sum(coef, axis=1, keepdims=True) - coef)
        dx = _unrows(xp, dx2, ctx.x_shape, ctx.moved_shape)
        dt = None
        if ctx.probabilities and ctx.needs_input_grad[1]:
            dt2 = -scale * (1.0 - ctx.smoothing) * log_p
            if weight is not None:
                dt2 = dt2 * weight[None, :]
            dt = _unrows(xp, dt2, ctx.x_shape, ctx.moved_shape)
        return dx, dt, None


class NllLoss(Function):
    """Negative log-likelihood of log-probabilities x (C classes along axis 1): l_i = -w[y_i] x_{i, y_i}
    (0 when y_i = ignore_index); 'mean' divides by D = sum_i w[y_i] over the non-ignored samples.

    Backward: dL/dx_ic = -s_i w[y_i] [c = y_i],  s_i = G_i ('none'), G ('sum') or G / D ('mean').
    """

    @staticmethod
    def forward(ctx, x, target, weight, ignore_index=-100, reduction="mean"):
        xp = namespace(x)
        x2, moved_shape = _rows(xp, x)
        coef, denominator = _class_coefficients(xp, xp.reshape(target, (-1,)), x2.shape[1], weight,
                                                ignore_index, 0.0, x.dtype)
        rows = -xp.sum(xp.where(coef != 0, x2, 0.0) * coef, axis=1)  # other classes add nothing, even -inf
        ctx.save_for_backward(coef)
        ctx.reduction, ctx.denominator = reduction, denominator
        ctx.x_shape, ctx.moved_shape = tuple(x.shape), moved_shape
        if reduction == "none":
            return xp.reshape(rows, _target_shape(x.shape))
        return _reduce(xp, rows, reduction, denominator)

    @staticmethod
    def backward(ctx, g):
        (coef,) = ctx.saved_tensors
        xp = namespace(coef)
        scale = xp.reshape(g, (-1, 1)) if ctx.reduction == "none" else _scale(g, ctx.reduction, ctx.denominator)
        return _unrows(xp, -scale * coef, ctx.x_shape, ctx.moved_shape), None, None


class MultiMarginLoss(Function):
    """Multi-class hinge loss: l_i = sum_{j != y_i} w[y_i] max(0, margin - x_{i, y_i} + x_ij)^p / C,
    p in {1, 2}; 'mean' averages over samples.

    Backward, with h_ij = margin - x_{i, y_i} + x_ij and H_ij = w[y_i] p h_ij^(p-1) [h_ij > 0, j != y_i] / C:
        dL/dx_ij = s_i H_ij  for j != y_i,     dL/dx_{i, y_i} = -s_i sum_j H_ij.
    """

    @staticmethod
    def forward(ctx, x, target, weight, p=1, margin=1.0, reduction="mean"):
        xp = namespace(x)
        x2 = xp.reshape(x, (1, x.shape[0])) if x.ndim == 1 else x
        n_samples, n_classes = x2.shape
        t = xp.reshape(target, (-1, 1))
        onehot = xp.arange(n_classes, dtype=t.dtype, device=t.device)[None, :] == t
        x_true = xp.take_along_axis(x2, t, axis=1)
        h = xp.where(onehot, 0.0, margin - x_true + x2)
        active = h > 0
        hinge = xp.where(active, h, 0.0)
        values = hinge * hinge if p == 2 else hinge
        w_t = None if weight is None else xp.take(weight, xp.reshape(target, (-1,)), axis=0)[:, None]
        if w_t is not None:
            values = values * w_t
        rows = xp.sum(values, axis=1) / n_classes
        ctx.save_for_backward(hinge, onehot, w_t)
        ctx.p, ctx.n_classes, ctx.reduction, ctx.count = p, n_classes, reduction, n_samples
        ctx.x_shape = tuple(x.shape)
        if reduction == "none":
            return xp.reshape(rows, _target_shape(x.shape))
        return _reduce(xp, rows, reduction, n_samples)

    @staticmethod
    def backward(ctx, g):
        hinge, onehot, w_t = ctx.saved_tensors
        xp = namespace(hinge)
        scale = xp.reshape(g, (-1, 1)) if ctx.reduction == "none" else _scale(g, ctx.reduction, ctx.count)
        local = 2.0 * hinge if ctx.p == 2 else xp.astype(hinge > 0, hinge.dtype)
        if w_t is not None:
            local = local * w_t
        local = local * (scale / ctx.n_classes)
        dx2 = local - xp.where(onehot, xp.sum(local, axis=1, keepdims=True), 0.0)
        return xp.reshape(dx2, ctx.x_shape), None, None


def _class_target(input, target, where, n_classes, ignore_index=None):
    """The raw integer target, checked: dtype, shape (N,) / (N, d1, ...) / (), and range."""
    x = raw(input)
    t = array_like(target, x, where, "target")
    if dtype_name(t.dtype) not in INTEGER_DTYPES:
        raise TypeError(f"{where}: target must hold integer class indices (int64), got dtype {dtype_name(t.dtype)}")
    expected = _target_shape(tuple(x.shape))
    if tuple(t.shape) != expected:
        raise ValueError(f"{where}: expected a target of shape {shape_text(expected)} for input of shape "
                         f"{shape_text(x.shape)} (classes along dim {0 if x.ndim == 1 else 1}), "
                         f"got {shape_text(t.shape)}")
    xp = namespace(t)
    if not math.prod(t.shape) or (bool(xp.min(t) >= 0) and bool(xp.max(t) < n_classes)):
        return t  # every target a class: two reductions, no mask (the common case)
    bad = (t < 0) | (t >= n_classes)
    if ignore_index is not None:
        bad = bad & (t != ignore_index)
    if bool(xp.any(bad)):
        bad_host, t_host = to_numpy(bad), to_numpy(t)
        position = tuple(int(i[0]) for i in bad_host.nonzero()) if bad_host.ndim else ()
        value = int(t_host[position])
        allowed = f"0..{n_classes - 1}" + ("" if ignore_index is None else f" or ignore_index={ignore_index}")
        raise ValueError(f"{where}: target class index {value} at position {position} is out of range for "
                         f"{n_classes} classes (allowed: {allowed})")
    return t


def _class_weight(weight, input, where, n_classes):
    if weight is None:
        return None
    x = raw(input)
    w = array_like(weight, x, where, "weight", dtype=x.dtype)
    if tuple(w.shape) != (n_classes,):
        raise ValueError(f"{where}: weight must have one entry per class, shape ({n_classes},), got "
                         f"{shape_text(w.shape)}")
    return w


def _class_input(input, where):
    input = as_input(input, where)
    require_float(input, where)
    x = raw(input)
    if x.ndim < 1:
        raise ValueError(f"{where}: expected input of shape (C,), (N, C) or (N, C, d1, ...), got a 0-d array")
    return input, (x.shape[0] if x.ndim == 1 else x.shape[1])


def cross_entropy(input, target, weight=None, ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0):
    """Cross-entropy from logits ``input`` (N, C) / (N, C, d1, ...) / (C,) and integer class ``target``
    (or, as in PyTorch, float class probabilities of the input's shape)."""
    where = "cross_entropy"
    check_reduction(reduction, where)
    label_smoothing = float(label_smoothing)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{where}: label_smoothing must be in [0, 1], got {label_smoothing}")
    input, n_classes = _class_input(input, where)
    w = _class_weight(weight, input, where, n_classes)
    target_data = raw(target)
    if hasattr(target_data, "dtype") and is_float_dtype(target_data.dtype):
        if not isinstance(target, Tensor):
            target = array_like(target, raw(input), where, "target")
        if tuple(raw(target).shape) != tuple(raw(input).shape):
            raise ValueError(f"{where}: a floating target holds class probabilities and must have the input's "
                             f"shape {shape_text(raw(input).shape)}, got {shape_text(raw(target).shape)}; "
                             "class indices must be an integer array")
        same_dtype(input, target, where)
        return CrossEntropyLoss.apply(input, target, w, reduction=reduction, label_smoothing=label_smoothing,
                                      probabilities=True)
    t = _class_target(input, target, where, n_classes, ignore_index)
    return CrossEntropyLoss.apply(input, t, w, ignore_index=int(ignore_index), reduction=reduction,
                                  label_smoothing=label_smoothing)


def nll_loss(input, target, weight=None, ignore_index: int = -100, reduction: str = "mean"):
    """Negative log-likelihood of log-probabilities ``input`` (e.g. from log_softmax) at integer ``target``."""
    where = "nll_loss"
    check_reduction(reduction, where)
    input, n_classes = _class_input(input, where)
    w = _class_weight(weight, input, where, n_classes)
    t = _class_target(input, target, where, n_classes, ignore_index)
    return NllLoss.apply(input, t, w, ignore_index=int(ignore_index), reduction=reduction)


def multi_margin_loss(input, target, p: int = 1, margin: float = 1.0, weight=None, reduction: str = "mean"):
    """Multi-class hinge loss on scores ``input`` (N, C) or (C,) with integer ``target``."""
    where = "multi_margin_loss"
    check_reduction(reduction, where)
    if p not in (1, 2):
        raise ValueError(f"{where}: only p=1 and p=2 are supported, got p={p!r}")
    input, n_classes = _class_input(input, where)
    if raw(input).ndim > 2:
        raise ValueError(f"{where}: expected input of shape (N, C) or (C,), got {shape_text(raw(input).shape)}")
    w = _class_weight(weight, input, where, n_classes)
    t = _class_target(input, target, where, n_classes)
    return MultiMarginLoss.apply(input, t, w, p=int(p), margin=float(margin), reduction=reduction)
