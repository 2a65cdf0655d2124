"""Optimizers, gradient clipping and learning-rate schedules (torch.optim's names and semantics).

``SGD``, ``Adagrad``, ``RMSprop``, ``Adam``, ``AdamW`` update any object with ``.data`` (a raw
array, written in place by each step) and ``.grad`` (a Tensor or None); ``lr_scheduler`` holds the
schedules; ``clip_grad_norm_`` / ``clip_grad_value_`` (also in ``xpnet.nn.utils``) clip gradients.
"""

from . import lr_scheduler
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .clip import clip_grad_norm_, clip_grad_value_
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "lr_scheduler", "clip_grad_norm_",
           "clip_grad_value_"]
