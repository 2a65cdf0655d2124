"""AlexNet (Krizhevsky et al., 2012) and ZFNet (Zeiler & Fergus, 2013), single-tower forms.

AlexNet at 227x227: conv1 96@11x11/4 -> 55x55x96, LRN, maxpool 3/2 -> 27x27x96; conv2 256@5x5 pad 2
-> 27x27x256, LRN, maxpool -> 13x13x256; conv3 384@3x3, conv4 384@3x3, conv5 256@3x3 (pad 1) ->
13x13x256, maxpool -> 6x6x256; fc 4096 -> fc 4096 -> classes, dropout 0.5 before each fc.
The 32x32 variant keeps the five-conv/three-fc shape with 5x5 and 3x3 kernels sized for CIFAR.

ZFNet at 224x224: conv1 96@7x7/2 -> 110x110, maxpool 3/2 -> 55x55, LRN; conv2 256@5x5/2 -> 26x26,
maxpool -> 13x13, LRN; conv3 384, conv4 384, conv5 256 (3x3 pad 1), maxpool -> 6x6x256;
fc 4096 -> fc 4096 -> classes.

``alexnet_owt`` is torchvision's ``alexnet``: the "one weird trick" single-tower net (Krizhevsky,
2014) with 64-192-384-256-256 filters, no LRN, ``features`` / ``avgpool`` = AdaptiveAvgPool2d((6, 6))
/ ``classifier`` modules whose state_dict keys and shapes equal torchvision's (``features.0.weight``
... ``classifier.6.bias``), so its weights load with ``weights=PATH``. The paper's ``alexnet``
above keeps its own layout.
"""

from __future__ import annotations

from .. import nn
from ..nn.functional import flatten
from .registry import register_model


def _lrn():
    return nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)


def _classifier(in_features, hidden, num_classes, dropout=0.5):
    return [
        nn.Flatten(),
        nn.Dropout(dropout), nn.Linear(in_features, hidden), nn.ReLU(),
        nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, num_classes),
    ]


@register_model("alexnet", default_input_size=227)
def alexnet(num_classes=1000, in_channels=3, input_size=227):
    if input_size >= 200:
        features = [
            nn.Conv2d(in_channels, 96, 11, stride=4), nn.ReLU(), _lrn(), nn.MaxPool2d(3, 2),
            nn.Conv2d(96, 256, 5, padding=2), nn.ReLU(), _lrn(), nn.MaxPool2d(3, 2),
            nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
        ]
        side = ((((input_size - 11) // 4 + 1 - 3) // 2 + 1) - 3) // 2 + 1
        side = (side - 3) // 2 + 1
        return nn.Sequential(*features, *_classifier(256 * side * side, 4096, num_classes))
    if input_size < 16:
        raise ValueError(f"alexnet: input_size {input_size} is too small (32 or 227 expected)")
    features = [
        nn.Conv2d(in_channels, 64, 5, padding=2), nn.ReLU(), _lrn(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), _lrn(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
    ]
    side = input_size
    for _ in range(3):
        side = (side - 3) // 2 + 1
    return nn.Sequential(*features, *_classifier(256 * side * side, 1024, num_classes))


@register_model("zfnet", default_input_size=224)
def zfnet(num_classes=1000, in_channels=3, input_size=224):
    features = [
        nn.Conv2d(in_channels, 96, 7, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1), _lrn(),
        nn.Conv2d(96, 256, 5, stride=2), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1), _lrn(),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
    ]
    side = (input_size + 2 - 7) // 2 + 1
    side = (side + 2 - 3) // 2 + 1
    side = (side - 5) // 2 + 1
    side = (side + 2 - 3) // 2 + 1
    side = (side - 3) // 2 + 1
    if side < 1:
        raise ValueError(f"zfnet: input_size {input_size} is too small (224 expected)")
    return nn.Sequential(*features, *_classifier(256 * side * side, 4096, num_classes))


class AlexNetOWT(nn.Module):
    """torchvision's AlexNet: y = classifier(flatten(avgpool(features(x)), 1)).

    features: conv 64@11x11/4 pad 2, ReLU, maxpool 3/2; conv 192@5x5 pad 2, ReLU, maxpool 3/2;
    conv 384, 256, 256 @3x3 pad 1 with ReLU; maxpool 3/2 (224 -> 55 -> 27 -> 13 -> 6).
    classifier: Dropout, fc 256*6*6 -> 4096, ReLU, Dropout, fc 4096 -> 4096, ReLU, fc -> classes.
    """

    def __init__(self, num_classes=1000, in_channels=3, dropout=0.5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(4096, 4096), nn.ReLU(),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x):
        x = self.features(x)
        x = self.avgpool(x)
        return self.classifier(flatten(x, 1))


@register_model("alexnet_owt", default_input_size=224)
def alexnet_owt(num_classes=1000, in_channels=3, input_size=224, dropout=0.5):
    side = (input_size + 4 - 11) // 4 + 1
    for kernel, pad in ((3, 0), (5, 2), (3, 0), (3, 1), (3, 1), (3, 1), (3, 0)):
        side = (side + 2 * pad - kernel) // (2 if (kernel, pad) == (3, 0) else 1) + 1
    if side < 1:
        raise ValueError(f"alexnet_owt: input_size {input_size} is too small (63 or more; 224 expected)")
    return AlexNetOWT(num_classes=num_classes, in_channels=in_channels, dropout=dropout)
