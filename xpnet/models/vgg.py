"""VGG (Simonyan & Zisserman, 2014): stacks of 3x3 convolutions (pad 1) and 2x2 max pools.

Configurations A/B/D/E give VGG-11/13/16/19; ``_bn`` forms put BatchNorm after each convolution.
Every form is torchvision's ``VGG`` module: ``features`` (a Sequential of Conv2d(3x3, pad 1, with
bias), [BatchNorm2d], ReLU and MaxPool2d(2, 2)), ``avgpool``, ``classifier``, and torchvision's
initialisation (Kaiming-normal fan-out convolutions, N(0, 0.01) linear weights, zero biases;
``init_weights=False`` skips it, as ``create(..., weights=PATH)`` does), so
the state_dict keys and shapes equal torchvision's (``features.0.weight``, ``classifier.6.bias``)
and its weights load (``models.create("vgg16", num_classes=1000, input_size=224, weights=PATH)``).

Heads by input size:
  64 pixels and more (ImageNet, 224):  avgpool = AdaptiveAvgPool2d((7, 7)), classifier = fc 4096 ->
      ReLU -> Dropout -> fc 4096 -> ReLU -> Dropout -> fc classes (torchvision's, exactly);
  under 64 (CIFAR, 32):  the five pools leave 1x1x512; avgpool = Identity, classifier = fc 512 ->
      ReLU -> Dropout -> fc classes (the features still load from torchvision's weights).
``vgg_small``: two blocks (32-32-pool, 64-64-pool) with BatchNorm and a 256-wide head, the
default of ``xpnet train`` (fits 28x28 MNIST in seconds per epoch on a CPU); a flat Sequential.
"""

from __future__ import annotations

from .. import nn
from ..nn.functional import flatten
from .registry import register_model

CONFIGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}
IMAGENET_HEAD_MIN_SIZE = 64  # from this input side on, torchvision's 7x7 adaptive pool and 4096-wide head


def make_features(config, in_channels, batch_norm, conv_bias=None):
    """The layers of a VGG feature stack and its output channels. Convolutions carry a bias unless
    ``conv_bias`` is False (None: a bias only without BatchNorm, as ``vgg_small`` has it;
    torchvision's VGG passes True)."""
    if conv_bias is None:
        conv_bias = not batch_norm
    layers = []
    channels = in_channels
    for item in config:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        layers.append(nn.Conv2d(channels, item, 3, padding=1, bias=conv_bias))
        if batch_norm:
            layers.append(nn.BatchNorm2d(item))
        layers.append(nn.ReLU())
        channels = item
    return layers, channels


def _pools(config):
    return sum(1 for item in config if item == "M")


class VGG(nn.Module):
    """torchvision's VGG: y = classifier(flatten(avgpool(features(x)), 1))."""

    def __init__(self, features, avgpool, classifier, init_weights=True):
        super().__init__()
        self.features = features
        self.avgpool = avgpool
        self.classifier = classifier
        if init_weights:
            init_like_torchvision(self)

    def forward(self, x):
        x = self.features(x)
        x = self.avgpool(x)
        return self.classifier(flatten(x, 1))


def init_like_torchvision(model):
    """torchvision's VGG initialisation: convolutions Kaiming-normal (fan_out, relu), BatchNorm
    weight 1 and bias 0, linear weights N(0, 0.01), every bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def build_vgg(name, batch_norm, num_classes=1000, in_channels=3, input_size=224, dropout=0.5, init_weights=True):
    config = CONFIGS[name]
    layers, channels = make_features(config, in_channels, batch_norm, conv_bias=True)
    side = input_size // 2 ** _pools(config)
    if side < 1:
        raise ValueError(f"{name}: input_size {input_size} is too small for {_pools(config)} 2x2 pools "
                         "(use 32 or more)")
    if input_size >= IMAGENET_HEAD_MIN_SIZE:
        avgpool = nn.AdaptiveAvgPool2d((7, 7))
        classifier = nn.Sequential(
            nn.Linear(channels * 7 * 7, 4096), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(4096, num_classes))
    else:
        avgpool = nn.Identity()
        classifier = nn.Sequential(
            nn.Linear(channels * side * side, 512), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(512, num_classes))
    return VGG(nn.Sequential(*layers), avgpool, classifier, init_weights=init_weights)


def _register(name, batch_norm):
    def builder(num_classes=1000, in_channels=3, input_size=224, dropout=0.5, init_weights=True):
        return build_vgg(name, batch_norm, num_classes, in_channels, input_size, dropout, init_weights)

    builder.__name__ = builder.__qualname__ = name + ("_bn" if batch_norm else "")
    builder.__doc__ = (f"{name.upper()}{' with BatchNorm' if batch_norm else ''} in torchvision's layout "
                       "(ImageNet head from 64 pixels, CIFAR head below).")
    # create() without input_size builds the 32-pixel (CIFAR) form, as before
    register_model(builder.__name__, default_input_size=32)(builder)
    return builder


BUILDERS = {}
for _name in CONFIGS:
    for _bn in (False, True):
        _builder = _register(_name, _bn)
        BUILDERS[_builder.__name__] = _builder


@register_model("vgg_small", default_input_size=28)
def vgg_small(num_classes=10, in_channels=1, input_size=28, widths=(32, 64), hidden=256, dropout=0.3):
    config = [widths[0], widths[0], "M", widths[1], widths[1], "M"]
    features, channels = make_features(config, in_channels, batch_norm=True)
    side = input_size // 4
    return nn.Sequential(*features, nn.Flatten(), nn.Dropout(dropout),
                         nn.Linear(channels * side * side, hidden), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(hidden, num_classes))
