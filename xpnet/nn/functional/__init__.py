"""xpnet.nn.functional (``import xpnet.nn.functional as F``): the functional form of every layer and loss."""

from ...autodiff.ops.shape import pad
from .activation import elu, leaky_relu, log_softmax, relu, sigmoid, softmax, tanh
from .conv import conv2d
from .dropout import dropout
from .linear import flatten, linear
from .loss import (binary_cross_entropy, binary_cross_entropy_with_logits, cross_entropy, l1_loss, mse_loss,
                   multi_margin_loss, nll_loss)
from .norm import batch_norm, local_response_norm
from .pool import adaptive_avg_pool2d, avg_pool2d, max_pool2d

__all__ = [
    "linear", "flatten", "conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "batch_norm",
    "local_response_norm", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "softmax", "log_softmax", "dropout",
    "mse_loss", "l1_loss", "binary_cross_entropy", "binary_cross_entropy_with_logits", "cross_entropy",
    "nll_loss", "multi_margin_loss", "pad",
]
