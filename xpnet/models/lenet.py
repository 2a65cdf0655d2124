"""LeNet-5 (LeCun et al., 1998) on 28x28 or 32x32 images.

conv 6@5x5 -> pool 2 -> conv 16@5x5 -> pool 2 -> fc 120 -> fc 84 -> fc classes. A 28x28 input is
padded by 2 in the first convolution so that the feature maps have the paper's sizes
(28x28x6, 14x14x6, 10x10x16, 5x5x16). ``classic=True`` uses tanh and average pooling as in the
paper; the default uses ReLU and max pooling, which train faster.
"""

from __future__ import annotations

from .. import nn
from .registry import register_model


@register_model("lenet5", default_input_size=28)
def lenet5(num_classes=10, in_channels=1, input_size=28, classic=False):
    act = nn.Tanh if classic else nn.ReLU
    pool = nn.AvgPool2d if classic else nn.MaxPool2d
    pad = 2 if input_size == 28 else 0
    side = (input_size + 2 * pad - 4) // 2
    side = (side - 4) // 2
    if side < 1:
        raise ValueError(f"lenet5: input_size {input_size} is too small (28 or 32 expected)")
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=pad), act(), pool(2),
        nn.Conv2d(6, 16, 5), act(), pool(2),
        nn.Flatten(),
        nn.Linear(16 * side * side, 120), act(),
        nn.Linear(120, 84), act(),
        nn.Linear(84, num_classes),
    )
