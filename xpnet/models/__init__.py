"""Model zoo: ``create(name, num_classes, in_channels, input_size)``.

Families: ``mlp``, ``lenet5``, ``alexnet`` (227x227 ImageNet net with LRN, and a 32x32 variant),
``zfnet``, ``vgg11/13/16/19`` and ``_bn`` forms (224 and 32-pixel variants), ``vgg_small`` (the
default of ``xpnet train``).
"""

from __future__ import annotations

from .registry import MODELS, create, default_input_size, list_models, register_model
from . import alexnet as _alexnet  # noqa: F401  (registers)
from . import lenet as _lenet  # noqa: F401
from . import mlp as _mlp  # noqa: F401
from . import vgg as _vgg  # noqa: F401

__all__ = ["MODELS", "create", "default_input_size", "list_models", "register_model"]
