#!/usr/bin/env python
"""Train AlexNet (227x227, LRN) on an image folder (or synthetic data) — the GPU example.

    XPNET_BACKEND=cupy python scripts/train_alexnet.py --dataset folder:/data/imagenet-subset --image-size 227
    XPNET_BACKEND=cupy python scripts/train_alexnet.py --dataset synthetic --epochs 1

Any ``xpnet train`` option may be given; this script only changes the defaults.
"""

import sys

from xpnet.cli import main

DEFAULTS = ["--model", "alexnet", "--batch-size", "128", "--epochs", "30", "--lr", "0.02",
            "--synthetic-size", "1024"]

if __name__ == "__main__":
    args = sys.argv[1:]
    given = {a.split("=")[0] for a in args if a.startswith("--")}
    extra = []
    for flag, value in zip(DEFAULTS[::2], DEFAULTS[1::2]):
        if flag not in given:
            extra += [flag, value]
    sys.exit(main(["train", *extra, *args]))
