"""Optimizers, gradient clipping and learning-rate schedules (torch.optim's names and semantics).

``SGD``, ``Adagrad``, ``Adadelta``, ``RMSprop``, ``Adam``, ``AdamW``, ``Adamax``, ``NAdam`` and
``RAdam`` update any object with ``.data`` (a raw array, written in place by each step) and ``.grad``
(a Tensor or None); ``LBFGS`` does too, over the flat vector of all its parameters, and its
``step(closure)`` needs the closure that re-evaluates the loss. ``lr_scheduler`` holds the
schedules; ``clip_grad_norm_`` / ``clip_grad_value_`` (also in ``xpnet.nn.utils``) clip gradients.
"""

from . import lr_scheduler
from .adadelta import Adadelta
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .adamax import Adamax
from .clip import clip_grad_norm_, clip_grad_value_
from .lbfgs import LBFGS
from .nadam import NAdam
from .optimizer import Optimizer
from .radam import RAdam
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW", "Adamax", "NAdam", "RAdam",
           "LBFGS", "lr_scheduler", "clip_grad_norm_", "clip_grad_value_"]
