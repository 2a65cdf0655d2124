#!/usr/bin/env python
"""Train a VGG on CIFAR-10 (or synthetic data): the GPU example.

    XPNET_BACKEND=cupy python scripts/train_vgg.py --dataset cifar10:/data/cifar-10-batches-bin
    XPNET_BACKEND=cupy python scripts/train_vgg.py --dataset synthetic --epochs 1

Any ``xpnet train`` option may be given; this script only changes the defaults.
"""

import sys

from xpnet.train.cli import main_with_defaults

if __name__ == "__main__":
    sys.exit(main_with_defaults({"--model": "vgg16_bn", "--batch-size": 128, "--epochs": 30, "--lr": 0.1,
                                 "--synthetic-size": 2048}))
