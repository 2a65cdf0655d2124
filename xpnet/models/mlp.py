"""Multilayer perceptron: Flatten -> [Linear -> ReLU (-> Dropout)] * k -> Linear."""

from __future__ import annotations

from .. import nn
from .registry import register_model


class MLP(nn.Sequential):
    """y = W_L relu(... relu(W_1 x + b_1) ...) + b_L on flattened inputs."""


@register_model("mlp", default_input_size=28)
def mlp(num_classes=10, in_channels=1, input_size=28, hidden=(1024, 1024), dropout=0.0):
    layers = [nn.Flatten()]
    width = in_channels * input_size * input_size
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, num_classes))
    return MLP(*layers)
