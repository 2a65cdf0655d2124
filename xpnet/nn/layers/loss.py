"""Loss modules: ``loss_fn = nn.CrossEntropyLoss(); loss = loss_fn(logits, target)``.

Constructor signatures are PyTorch's, including the deprecated ``size_average``/``reduce`` flags (so
positional arguments port unchanged). Class and position weights are registered as buffers: they
move with ``.to()`` and appear in ``state_dict()`` as in PyTorch.
"""

from __future__ import annotations

from ...autodiff.tensor import Tensor
from ...backends import backend_name_of, get_backend
from ..functional import loss as L
from ..functional._arrays import raw
from ..module import Module


def _as_buffer(value, where, what):
    if value is None or isinstance(value, Tensor):
        return value
    if backend_name_of(value) is not None:
        return Tensor(value)
    if isinstance(value, (list, tuple)):
        return Tensor(get_backend().asarray([float(v) for v in value]))
    raise TypeError(f"{where}: {what} must be a Tensor, an array or a list of numbers, got {type(value).__name__}")


class _Loss(Module):
    def __init__(self, size_average=None, reduce=None, reduction: str = "mean"):
        super().__init__()
        self.reduction = L.check_reduction(L.legacy_reduction(size_average, reduce, reduction), type(self).__name__)

    def extra_repr(self) -> str:
        return "" if self.reduction == "mean" else f"reduction={self.reduction!r}"


class _WeightedLoss(_Loss):
    def __init__(self, weight=None, size_average=None, reduce=None, reduction: str = "mean"):
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", _as_buffer(weight, type(self).__name__, "weight"))

    def _weight(self):
        return None if self.weight is None else raw(self.weight)


class MSELoss(_Loss):
    """Mean squared error: mean((input - target)^2)."""

    def forward(self, input, target):
        return L.mse_loss(input, target, reduction=self.reduction)


class L1Loss(_Loss):
    """Mean absolute error: mean(|input - target|)."""

    def forward(self, input, target):
        return L.l1_loss(input, target, reduction=self.reduction)


class BCELoss(_WeightedLoss):
    """Binary cross-entropy on probabilities in [0, 1] (logs floored at -100, as PyTorch)."""

    def forward(self, input, target):
        return L.binary_cross_entropy(input, target, weight=self._weight(), reduction=self.reduction)


class BCEWithLogitsLoss(_Loss):
    """Sigmoid + binary cross-entropy from logits, computed stably; ``pos_weight`` weights positives."""

    def __init__(self, weight=None, size_average=None, reduce=None, reduction: str = "mean", pos_weight=None):
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", _as_buffer(weight, "BCEWithLogitsLoss", "weight"))
        self.register_buffer("pos_weight", _as_buffer(pos_weight, "BCEWithLogitsLoss", "pos_weight"))

    def forward(self, input, target):
        return L.binary_cross_entropy_with_logits(
            input, target, weight=None if self.weight is None else raw(self.weight), reduction=self.reduction,
            pos_weight=None if self.pos_weight is None else raw(self.pos_weight))


class NLLLoss(_WeightedLoss):
    """Negative log-likelihood of log-probabilities at integer class targets."""

    def __init__(self, weight=None, size_average=None, ignore_index: int = -100, reduce=None,
                 reduction: str = "mean"):
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = int(ignore_index)

    def forward(self, input, target):
        return L.nll_loss(input, target, weight=self._weight(), ignore_index=self.ignore_index,
                          reduction=self.reduction)


class CrossEntropyLoss(_WeightedLoss):
    """Softmax cross-entropy from logits, one fused and stable step, with PyTorch's ``weight``,
    ``ignore_index`` and ``label_smoothing`` semantics."""

    def __init__(self, weight=None, size_average=None, ignore_index: int = -100, reduce=None,
                 reduction: str = "mean", label_smoothing: float = 0.0):
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = int(ignore_index)
        self.label_smoothing = float(label_smoothing)
        if not 0.0 <= self.label_smoothing <= 1.0:
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be in [0, 1], got {label_smoothing}")

    def forward(self, input, target):
        return L.cross_entropy(input, target, weight=self._weight(), ignore_index=self.ignore_index,
                               reduction=self.reduction, label_smoothing=self.label_smoothing)

    def extra_repr(self) -> str:
        parts = [super().extra_repr()] if self.reduction != "mean" else []
        if self.label_smoothing:
            parts.append(f"label_smoothing={self.label_smoothing}")
        return ", ".join(parts)


class MultiMarginLoss(_WeightedLoss):
    """Multi-class hinge loss summed over the wrong classes (the Weston-Watkins form, as PyTorch)."""

    def __init__(self, p: int = 1, margin: float = 1.0, weight=None, size_average=None, reduce=None,
                 reduction: str = "mean"):
        super().__init__(weight, size_average, reduce, reduction)
        if p not in (1, 2):
            raise ValueError(f"MultiMarginLoss: only p=1 and p=2 are supported, got p={p!r}")
        self.p = int(p)
        self.margin = float(margin)

    def forward(self, input, target):
        return L.multi_margin_loss(input, target, p=self.p, margin=self.margin, weight=self._weight(),
                                   reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"p={self.p}, margin={self.margin}" + (f", reduction={self.reduction!r}" if self.reduction != "mean" else "")
