"""Classification metrics over raw arrays or Tensors of any backend."""

from __future__ import annotations

from array_api_compat import array_namespace

from ..backends import unwrap


def accuracy(logits, target) -> float:
    """Fraction of rows whose arg-max equals the integer target."""
    logits, target = unwrap(logits), unwrap(target)
    xp = array_namespace(logits)
    pred = xp.argmax(logits, axis=-1)
    return float(xp.mean(xp.astype(pred == xp.astype(target, pred.dtype), xp.float32)))


def correct_count(logits, target) -> int:
    logits, target = unwrap(logits), unwrap(target)
    xp = array_namespace(logits)
    pred = xp.argmax(logits, axis=-1)
    return int(xp.sum(xp.astype(pred == xp.astype(target, pred.dtype), xp.int64)))


def top_k_correct(logits, target, k=5) -> int:
    """Rows whose target is among the k largest logits (ties count as in argsort's order)."""
    logits, target = unwrap(logits), unwrap(target)
    xp = array_namespace(logits)
    k = min(k, logits.shape[-1])
    target_score = xp.take_along_axis(logits, xp.reshape(xp.astype(target, xp.int64), (-1, 1)), axis=1)
    # the target is in the top k when fewer than k logits beat it
    better = xp.sum(xp.astype(logits > target_score, xp.int64), axis=1)
    return int(xp.sum(xp.astype(better < k, xp.int64)))


def top_k_accuracy(logits, target, k=5) -> float:
    return top_k_correct(logits, target, k) / max(1, unwrap(target).shape[0])


def confusion_matrix(pred, target, num_classes):
    """C[i, j] = number of samples of true class i predicted as j (int64, same namespace)."""
    pred, target = unwrap(pred), unwrap(target)
    xp = array_namespace(pred)
    classes = xp.arange(num_classes, device=pred.device)
    true_onehot = xp.astype(xp.reshape(target, (-1, 1)) == classes, xp.float64 if _has_f64(xp) else xp.float32)
    pred_onehot = xp.astype(xp.reshape(pred, (-1, 1)) == classes, true_onehot.dtype)
    return xp.astype(xp.round(true_onehot.mT @ pred_onehot), xp.int64)


def _has_f64(xp):
    return hasattr(xp, "float64")
