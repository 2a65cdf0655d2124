"""SyncBatchNorm: batch normalization whose training statistics span every rank's batch.

PyTorch's ``nn.SyncBatchNorm`` names, arguments and ``convert_sync_batchnorm``. Outside a
process group, or with one rank, in eval mode, or without running statistics in eval, it is
BatchNorm over axis 1 exactly (the same code path as ``BatchNorm2d``). Each training forward on
several ranks is a collective: every rank must call it, in the same order.
"""

from __future__ import annotations

import math

from ...autodiff.function import Function
from ..functional._arrays import as_input, namespace, raw, require_float, shape_text
from ..functional.norm import _channel_shape, _check_channel_vector, _update_in_place
from .normalization import BatchNorm1d, BatchNorm2d, _BatchNorm

__all__ = ["SyncBatchNorm", "SyncBatchNormFunction"]


def _dist():
    from ... import distributed

    return distributed


def _group_size() -> int:
    """The world size of the default process group, 1 outside one."""
    try:
        dist = _dist()
    except ImportError:  # pragma: no cover - xpnet.distributed ships with xpnet
        return 1
    return dist.get_world_size() if dist.is_initialized() else 1


class SyncBatchNormFunction(Function):
    """y = gamma * x_hat + beta,  x_hat = (x - mu) / sigma,  sigma = sqrt(var + eps), per channel c
    (axis 1), where mu and var are the mean and biased variance over the M = sum_r m_r values of
    the channel on all ranks r (m_r = N_r * spatial size on rank r).

    Forward statistics, one ``all_gather`` of (m_r, mu_r, S_r) per rank with the local mean mu_r
    and S_r = sum (x - mu_r)^2 over the rank's values (Chan's parallel combination, free of the
    cancellation that sum(x^2)/M - mu^2 suffers when |mu| >> sigma):
        M = sum_r m_r     mu = sum_r m_r mu_r / M     var = (sum_r S_r + sum_r m_r (mu_r - mu)^2) / M

    Backward, with g = dL_r/dy on this rank, sums over this rank's values and, for the two
    per-channel sums, one ``all_reduce(SUM)`` over the ranks:
        Sg = sum_ranks sum(g)        Sgx = sum_ranks sum(g * x_hat)
        dL/dx = (gamma / sigma) * (g - Sg / M - x_hat * Sgx / M)
        dL/dgamma = sum(g * x_hat)   dL/dbeta = sum(g)     (this rank's sums, as torch: DDP
                                                           averages parameter gradients over ranks)
    dL/dx is the derivative of sum_r L_r with respect to this rank's x (the statistics couple the
    ranks), so with losses that are per-rank means and DDP's averaging, every parameter gradient
    equals single-process training on the concatenated batch.

    Outputs: (y, mu, var, M); mu, var (biased) and M are for the running statistics and are not
    differentiated (backward ignores gradients reaching them).
    """

    autocast = "float32"

    @staticmethod
    def forward(ctx, x, gamma, beta, eps=1e-5, world_size=1):
        dist = _dist()
        xp = namespace(x)
        c = x.shape[1]
        axes = (0,) + tuple(range(2, x.ndim))
        shape = _channel_shape(x.ndim, c)
        m_local = math.prod(x.shape) // c
        if m_local:
            mean_local = xp.mean(x, axis=axes)
            xc = x - xp.reshape(mean_local, shape)
            sq_local = xp.sum(xc * xc, axis=axes)
        else:  # an empty batch on this rank: it adds nothing
            mean_local = xp.zeros((c,), dtype=x.dtype, device=x.device)
            sq_local = xp.zeros((c,), dtype=x.dtype, device=x.device)
        count = xp.full((1,), float(m_local), dtype=x.dtype, device=x.device)
        local = xp.concat([count, mean_local, sq_local])
        gathered = [xp.zeros_like(local) for _ in range(world_size)]
        dist.all_gather(gathered, local)
        stacked = xp.stack(gathered)  # (world, 1 + 2C)
        counts = stacked[:, 0:1]
        total = xp.sum(counts, axis=0)  # shape (1,)
        means, sqs = stacked[:, 1:1 + c], stacked[:, 1 + c:]
        mean = xp.sum(counts * means, axis=0) / total
        dev = means - xp.reshape(mean, (1, c))
        var = (xp.sum(sqs, axis=0) + xp.sum(counts * dev * dev, axis=0)) / total
        invstd = 1.0 / xp.sqrt(var + eps)
        xhat = (x - xp.reshape(mean, shape)) * xp.reshape(invstd, shape)
        y = xhat if gamma is None else xhat * xp.reshape(gamma, shape)
        if beta is not None:
            y = y + xp.reshape(beta, shape)
        ctx.saved = (xhat, invstd, gamma, total, world_size)
        ctx.affine = (gamma is not None, beta is not None)
        return y, mean, var, total

    @staticmethod
    def backward(ctx, g, *statistics_grads):
        xhat, invstd, gamma, total, world_size = ctx.saved
        ctx.saved = None
        xp = namespace(g)
        c = g.shape[1]
        axes = (0,) + tuple(range(2, g.ndim))
        shape = _channel_shape(g.ndim, c)
        sum_g = xp.sum(g, axis=axes)
        sum_gx = xp.sum(g * xhat, axis=axes)
        needs = tuple(ctx.needs_input_grad) + (False,) * 3
        dx = None
        if needs[0]:
            both = xp.concat([sum_g, sum_gx])
            _dist().all_reduce(both)
            all_g, all_gx = both[:c], both[c:]
            scale = invstd if gamma is None else gamma * invstd
            dx = xp.reshape(scale, shape) * (g - xp.reshape(all_g / total, shape)
                                             - xhat * xp.reshape(all_gx / total, shape))
        dgamma = sum_gx if needs[1] and ctx.affine[0] else None
        dbeta = sum_g if needs[2] and ctx.affine[1] else None
        return dx, dgamma, dbeta


class SyncBatchNorm(_BatchNorm):
    """BatchNorm over axis 1 of (N, C, ...) input whose training statistics are those of the
    global batch: every rank's batch together (see ``SyncBatchNormFunction`` for the math).

    Arguments, buffers, parameters and ``state_dict`` keys are BatchNorm's (torch's
    ``SyncBatchNorm(num_features, eps, momentum, affine, track_running_stats, process_group)``; only
    the default process group). The running variance is updated with the unbiased global variance
    var * M / (M - 1). Outside a process group, with one rank, or when the running statistics
    normalize (eval mode) it is BatchNorm.
    ``SyncBatchNorm.convert_sync_batchnorm(model)`` swaps every BatchNorm1d/2d of a model for one.
    """

    _dims = (2, 3, 4, 5)
    _layout = "(N, {c}, ...)"

    def __init__(self, num_features: int, eps: float = 1e-5, momentum=0.1, affine: bool = True,
                 track_running_stats: bool = True, process_group=None, device=None, dtype=None):
        if process_group is not None:
            raise ValueError(f"SyncBatchNorm: only the default process group is supported, got "
                             f"process_group={process_group!r}")
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine,
                         track_running_stats=track_running_stats, device=device, dtype=dtype)
        self.process_group = None

    def forward(self, input):
        world = _group_size()
        use_batch = self.training or (self.running_mean is None and self.running_var is None)
        if not use_batch or world == 1:
            return super().forward(input)
        where = self._where()
        input = as_input(input, where)
        require_float(input, where)
        xa = raw(input)
        if xa.ndim < 2 or xa.shape[1] != self.num_features:
            raise ValueError(f"{where}: expected input {self._layout.format(c=self.num_features)}, "
                             f"got {shape_text(xa.shape)}")
        for v, what in ((self.running_mean, "running_mean"), (self.running_var, "running_var"),
                        (self.weight, "weight"), (self.bias, "bias")):
            _check_channel_vector(v, self.num_features, where, what, input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            count = raw(self.num_batches_tracked)
            count[...] = count + 1
            factor = 1.0 / float(count) if self.momentum is None else self.momentum
        y, mean, var, total = SyncBatchNormFunction.apply(input, self.weight, self.bias, eps=self.eps,
                                                          world_size=world)
        m = float(raw(total)[0])
        if m <= 1:
            raise ValueError(f"{where}: expected more than 1 value per channel over all ranks when training, "
                             f"got {int(m)}")
        if self.training and self.track_running_stats and self.running_mean is not None:
            mean, var = raw(mean), raw(var)
            _update_in_place(self.running_mean, (1.0 - factor) * raw(self.running_mean) + factor * mean)
            if self.running_var is not None:
                unbiased = var * (m / (m - 1))
                _update_in_place(self.running_var, (1.0 - factor) * raw(self.running_var) + factor * unbiased)
        return y

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """``module`` with every BatchNorm1d/BatchNorm2d replaced by a SyncBatchNorm that holds the same
        Parameters and buffers (the same objects) and training flag; a BatchNorm given directly comes
        back converted. Returns the (converted) module, as torch."""
        if process_group is not None:
            raise ValueError("SyncBatchNorm.convert_sync_batchnorm: only the default process group is supported")
        if isinstance(module, (BatchNorm1d, BatchNorm2d)) and not isinstance(module, SyncBatchNorm):
            converted = cls(module.num_features, eps=module.eps, momentum=module.momentum, affine=module.affine,
                            track_running_stats=module.track_running_stats)
            if module.affine:
                converted.weight = module.weight
                converted.bias = module.bias
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                converted._buffers[name] = module._buffers.get(name)
            converted.train(module.training)
            return converted
        for name, child in list(module.named_children()):
            if child is None:
                continue
            new = cls.convert_sync_batchnorm(child)
            if new is not child:
                setattr(module, name, new)
        return module
