"""VGG (Simonyan & Zisserman, 2014): stacks of 3x3 convolutions (pad 1) and 2x2 max pools.

Configurations A/B/D/E give VGG-11/13/16/19; ``_bn`` forms put BatchNorm after each convolution.
At 224 pixels the head is AdaptiveAvgPool(7) -> fc 4096 -> fc 4096 -> classes (the paper's); at
32 pixels (CIFAR) the five pools leave 1x1x512 and the head is fc 512 -> classes.
``vgg_small``: two blocks (32-32-pool, 64-64-pool) with BatchNorm and a 256-wide head, the
default of ``xpnet train`` (fits 28x28 MNIST in seconds per epoch on a CPU).
"""

from __future__ import annotations

from .. import nn
from .registry import register_model

CONFIGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


def make_features(config, in_channels, batch_norm):
    layers = []
    channels = in_channels
    for item in config:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        layers.append(nn.Conv2d(channels, item, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(item))
        layers.append(nn.ReLU())
        channels = item
    return layers, channels


def _pools(config):
    return sum(1 for item in config if item == "M")


def _vgg(name, batch_norm, num_classes, in_channels, input_size):
    config = CONFIGS[name]
    features, channels = make_features(config, in_channels, batch_norm)
    side = input_size // 2 ** _pools(config)
    if side < 1:
        raise ValueError(f"{name}: input_size {input_size} is too small for {_pools(config)} 2x2 pools "
                         "(use 32 or more)")
    if input_size >= 64:
        head = [nn.AdaptiveAvgPool2d(7), nn.Flatten(),
                nn.Linear(channels * 49, 4096), nn.ReLU(), nn.Dropout(0.5),
                nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5),
                nn.Linear(4096, num_classes)]
    else:
        head = [nn.Flatten(), nn.Linear(channels * side * side, 512), nn.ReLU(), nn.Dropout(0.5),
                nn.Linear(512, num_classes)]
    return nn.Sequential(*features, *head)


def _register(name, batch_norm):
    def builder(num_classes=10, in_channels=3, input_size=32):
        return _vgg(name, batch_norm, num_classes, in_channels, input_size)

    builder.__name__ = name + ("_bn" if batch_norm else "")
    builder.__doc__ = f"{name.upper()}{' with BatchNorm' if batch_norm else ''} (224- or 32-pixel variant)."
    register_model(builder.__name__, default_input_size=32)(builder)


for _name in CONFIGS:
    _register(_name, False)
    _register(_name, True)


@register_model("vgg_small", default_input_size=28)
def vgg_small(num_classes=10, in_channels=1, input_size=28, widths=(32, 64), hidden=256, dropout=0.3):
    config = [widths[0], widths[0], "M", widths[1], widths[1], "M"]
    features, channels = make_features(config, in_channels, batch_norm=True)
    side = input_size // 4
    return nn.Sequential(*features, nn.Flatten(), nn.Dropout(dropout),
                         nn.Linear(channels * side * side, hidden), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(hidden, num_classes))
