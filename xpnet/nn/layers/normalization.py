"""BatchNorm1d/BatchNorm2d and LocalResponseNorm (PyTorch's names, defaults and state_dict keys)."""

from __future__ import annotations

from ...autodiff.tensor import Tensor
from ..functional._arrays import as_input, raw, shape_text
from ..functional.norm import batch_norm, local_response_norm
from ..module import Module, factory_backend
from ..parameter import Parameter


class _BatchNorm(Module):
    """y = gamma * (x - mu) / sqrt(var + eps) + beta per channel (axis 1).

    Training: mu and var are the batch statistics; the running buffers follow
    running = (1 - momentum) * running + momentum * batch (unbiased batch variance), or the cumulative
    average when ``momentum`` is None; ``num_batches_tracked`` counts the updates. Eval: the running
    statistics normalize. Without ``track_running_stats`` the batch statistics are used in both modes.
    Buffers: running_mean (zeros), running_var (ones), num_batches_tracked (int64 0); parameters
    weight (ones) and bias (zeros) when ``affine``.
    """

    _dims: tuple = ()
    _layout: str = ""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum=0.1, affine: bool = True,
                 track_running_stats: bool = True, device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"{name}: num_features must be a positive int, got {num_features!r}")
        self.num_features = num_features
        self.eps = float(eps)
        self.momentum = momentum
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        backend = factory_backend(device)
        native = backend.dtype(dtype)
        xp = backend.xp
        if self.affine:
            self.weight = Parameter(xp.ones((num_features,), dtype=native, device=backend.device))
            self.bias = Parameter(xp.zeros((num_features,), dtype=native, device=backend.device))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats:
            self.register_buffer("running_mean", Tensor(xp.zeros((num_features,), dtype=native, device=backend.device)))
            self.register_buffer("running_var", Tensor(xp.ones((num_features,), dtype=native, device=backend.device)))
            self.register_buffer("num_batches_tracked",
                                 Tensor(xp.asarray(0, dtype=xp.int64, device=backend.device)))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            for name, fill in (("running_mean", 0), ("running_var", 1), ("num_batches_tracked", 0)):
                buf = getattr(self, name)
                data = raw(buf)
                data[...] = fill

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            raw(self.weight)[...] = 1
            raw(self.bias)[...] = 0

    def _where(self) -> str:
        return f"{type(self).__name__}({self.num_features})"

    def forward(self, input):
        where = self._where()
        input = as_input(input, where)
        xa = raw(input)
        if xa.ndim not in self._dims or xa.shape[1] != self.num_features:
            raise ValueError(f"{where}: expected input {self._layout.format(c=self.num_features)}, "
                             f"got {shape_text(xa.shape)}")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            count = raw(self.num_batches_tracked)
            count[...] = count + 1
            factor = 1.0 / float(count) if self.momentum is None else self.momentum
        use_batch = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        return batch_norm(input, self.running_mean if track else None, self.running_var if track else None,
                          self.weight, self.bias, use_batch, factor, self.eps, where=where)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    __doc__ = _BatchNorm.__doc__ + "\n    Input (N, C) or (N, C, L).\n"
    _dims = (2, 3)
    _layout = "(N, {c}) or (N, {c}, L)"


class BatchNorm2d(_BatchNorm):
    __doc__ = _BatchNorm.__doc__ + "\n    Input (N, C, H, W).\n"
    _dims = (4,)
    _layout = "(N, {c}, H, W)"


class LocalResponseNorm(Module):
    """AlexNet's LRN across channels: y_c = x_c (k + alpha/size * sum_{c' near c} x_{c'}^2)^(-beta)."""

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
        super().__init__()
        self.size = size
        self.alpha = alpha
        self.beta = beta
        self.k = k

    def forward(self, input):
        return local_response_norm(input, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
