"""Model zoo: ``create(name, num_classes, in_channels, input_size)``.

Families: ``mlp``, ``lenet5``, ``alexnet`` (227x227 ImageNet net with LRN, and a 32x32 variant),
``zfnet``, ``vgg11/13/16/19`` and ``_bn`` forms (torchvision's layout; 224 and 32-pixel heads),
``alexnet_owt`` (torchvision's alexnet), ``vgg_small`` (the default of ``xpnet train``).
``vgg16(...)``, ``alexnet_owt(...)`` etc. are torchvision-style constructors (1000 classes, 224
pixels); ``create(..., weights=PATH)`` loads checked weights (``weights.py``).
"""

from __future__ import annotations

from .registry import MODELS, create, default_input_size, list_models, register_model
from . import alexnet as _alexnet  # noqa: F401  (registers)
from . import lenet as _lenet  # noqa: F401
from . import mlp as _mlp  # noqa: F401
from . import vgg as _vgg  # noqa: F401
from .alexnet import AlexNetOWT
from .vgg import VGG

__all__ = ["MODELS", "create", "default_input_size", "list_models", "register_model", "VGG", "AlexNetOWT",
           "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "alexnet_owt"]


def _torchvision_style(name, weights, kwargs):
    # torchvision's defaults: 1000 classes, the 224-pixel (ImageNet) head; weights is a file path here
    kwargs.pop("progress", None)
    kwargs.setdefault("num_classes", 1000)
    kwargs.setdefault("input_size", 224)
    return create(name, weights=weights, **kwargs)


def vgg11(*, weights=None, **kwargs):
    """torchvision.models.vgg11 (``weights``: a file path, see ``create``)."""
    return _torchvision_style("vgg11", weights, kwargs)


def vgg11_bn(*, weights=None, **kwargs):
    """torchvision.models.vgg11_bn."""
    return _torchvision_style("vgg11_bn", weights, kwargs)


def vgg13(*, weights=None, **kwargs):
    """torchvision.models.vgg13."""
    return _torchvision_style("vgg13", weights, kwargs)


def vgg13_bn(*, weights=None, **kwargs):
    """torchvision.models.vgg13_bn."""
    return _torchvision_style("vgg13_bn", weights, kwargs)


def vgg16(*, weights=None, **kwargs):
    """torchvision.models.vgg16."""
    return _torchvision_style("vgg16", weights, kwargs)


def vgg16_bn(*, weights=None, **kwargs):
    """torchvision.models.vgg16_bn."""
    return _torchvision_style("vgg16_bn", weights, kwargs)


def vgg19(*, weights=None, **kwargs):
    """torchvision.models.vgg19."""
    return _torchvision_style("vgg19", weights, kwargs)


def vgg19_bn(*, weights=None, **kwargs):
    """torchvision.models.vgg19_bn."""
    return _torchvision_style("vgg19_bn", weights, kwargs)


def alexnet_owt(*, weights=None, **kwargs):
    """torchvision.models.alexnet (the paper's net is ``create("alexnet")``)."""
    return _torchvision_style("alexnet_owt", weights, kwargs)
