#!/usr/bin/env python
"""Train AlexNet (227x227 with LRN) on an image folder (or synthetic data): the GPU example.

    XPNET_BACKEND=cupy python scripts/train_alexnet.py --dataset folder:/data/imagenet-subset --image-size 227
    XPNET_BACKEND=cupy python scripts/train_alexnet.py --dataset synthetic --epochs 1

Any ``xpnet train`` option may be given; this script only changes the defaults.
"""

import sys

from xpnet.train.cli import main_with_defaults

if __name__ == "__main__":
    sys.exit(main_with_defaults({"--model": "alexnet", "--batch-size": 128, "--epochs": 30, "--lr": 0.02,
                                 "--synthetic-size": 1024}))
