#!/usr/bin/env python
"""A training step fed from JPEG files against the same step on a batch already on the device.

    python scripts/bench_feed.py                                          # AlexNet-227, batch 64
    XPNET_BACKEND=cupy python scripts/bench_feed.py --workers 15 --pin-memory --steps 60
    XPNET_BACKEND=cupy python scripts/bench_feed.py --decode-on-device     # JPEGs decoded on the GPU
    python scripts/bench_feed.py --size 32 --steps 6 --warmup 2           # a quick CPU run

Does the input pipeline keep the model busy? Writes (or reuses, ``--dir``) a folder of
``--images`` 500x375 JPEGs in 4 classes (``bench_input.make_folder``) and builds
``xpnet.models.create(--model, num_classes=4, in_channels=3, input_size=--size)`` with SGD
(momentum 0.9) and cross-entropy. Then, alternating, each ``--rounds`` times:

synthetic   one uint8 batch of random pixels, uploaded once, normalized on the device every step
            (``NormalizeOnDevice``, ImageNet's mean and std) and trained on: the step alone
fed         ``DataLoader(ImageFolder(DIR, transform=RandomResizedCrop + RandomHorizontalFlip +
            ToUint8CHW), batch, shuffle, num_workers=--workers, persistent_workers, pin_memory,
            device_transform=NormalizeOnDevice)``: the same step on the batches it delivers (with
            ``--decode-on-device``: ``decode_on_device=True``, the JPEGs decoded and augmented on the GPU)

Each round times ``--steps`` steps after ``--warmup`` untimed ones (the workers started and their
queue filled), synchronizing the device at both ends; the figures are the best round's images/s
and the ratio fed / synthetic. On a GPU the input pipeline should hold that ratio at 0.9 or more
(the issue on the input pipeline); on a CPU both share the cores, so the ratio mostly tells what
decoding costs next to the step.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import xpnet  # noqa: E402
from xpnet import data, models, nn, optim  # noqa: E402
from xpnet.data import augment  # noqa: E402

import bench_input  # noqa: E402  (the JPEG folder)

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def training_step(model, opt, loss_fn):
    def step(x, y):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return step


def endless(loader):
    """The loader's batches, epoch after epoch."""
    for _ in itertools.count():
        yield from loader


def timed(step, batches, warmup, steps, batch_size):
    """Images/s of ``steps`` steps on ``next(batches)`` after ``warmup`` untimed ones."""
    backend = xpnet.get_backend()
    for _ in range(warmup):
        step(*next(batches))
    backend.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step(*next(batches))
    backend.synchronize()
    return steps * batch_size / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None, help="JPEG folder to write (and reuse); default: a temporary one")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--model", default="alexnet")
    parser.add_argument("--size", type=int, default=227)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader worker processes (default: the CPUs this process may use, minus one)")
    parser.add_argument("--pin-memory", action="store_true", help="page-locked staging and a copy stream (CuPy)")
    parser.add_argument("--decode-on-device", action="store_true",
                        help="decode and augment on the GPU (nvImageCodec; no worker processes)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before each round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    for name in ("images", "size", "batch_size", "steps", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0 or (args.workers is not None and args.workers < 0):
        parser.error("--warmup and --workers must be non-negative")
    if args.images < args.batch_size:
        parser.error(f"--images ({args.images}) must be at least --batch-size ({args.batch_size})")
    workers = args.workers
    if args.decode_on_device:
        if workers:
            parser.error("--decode-on-device reads files in the loader's thread: it takes no --workers")
        workers = 0
    elif workers is None:
        workers = max(0, len(os.sched_getaffinity(0)) - 1) if hasattr(os, "sched_getaffinity") else 0

    root = args.dir or tempfile.mkdtemp(prefix="xpnet_feed_")
    try:
        os.makedirs(root, exist_ok=True)
        made = bench_input.make_folder(root, args.images)
        backend = xpnet.get_backend()
        xpnet.manual_seed(0)
        model = models.create(args.model, num_classes=bench_input.CLASSES, in_channels=3, input_size=args.size)
        step = training_step(model, optim.SGD(model.parameters(), lr=0.01, momentum=0.9), nn.CrossEntropyLoss())
        normalize = data.NormalizeOnDevice(IMAGENET_MEAN, IMAGENET_STD)

        rng = np.random.default_rng(0)
        pixels = xpnet.tensor(rng.integers(0, 256, (args.batch_size, 3, args.size, args.size), dtype=np.uint8))
        labels = xpnet.tensor(rng.integers(0, bench_input.CLASSES, args.batch_size))
        synthetic = itertools.repeat((pixels, labels))

        def normalized(batches):
            for x, y in batches:
                yield normalize(x), y

        transform = augment.Compose([augment.RandomResizedCrop(args.size), augment.RandomHorizontalFlip(),
                                     augment.ToUint8CHW()])
        loader = data.DataLoader(data.ImageFolder(root, transform=transform), batch_size=args.batch_size,
                                 shuffle=True, drop_last=True, seed=0, num_workers=workers,
                                 persistent_workers=workers > 0, pin_memory=args.pin_memory,
                                 device_transform=normalize, decode_on_device=args.decode_on_device)
        decoder = "nvImageCodec on the device" if args.decode_on_device else data.decoder_name()
        print(f"folder {root}: {args.images} JPEGs of {bench_input.WIDTH}x{bench_input.HEIGHT} ({made} written); "
              f"decoder {decoder}")
        print(f"model {args.model} at {args.size}x{args.size}, batch {args.batch_size}; backend {backend}; "
              f"{workers} worker(s), pin_memory={args.pin_memory}; {args.rounds} rounds of {args.steps} steps "
              f"after {args.warmup}")
        best = {"synthetic": 0.0, "fed": 0.0}
        fed = endless(loader)
        try:
            for round_index in range(args.rounds):
                rates = {"synthetic": timed(step, normalized(synthetic), args.warmup, args.steps, args.batch_size),
                         "fed": timed(step, fed, args.warmup, args.steps, args.batch_size)}
                for name, rate in rates.items():
                    best[name] = max(best[name], rate)
                print(f"  round {round_index + 1}: synthetic {rates['synthetic']:.1f} images/s, "
                      f"fed from JPEGs {rates['fed']:.1f} images/s")
        finally:
            fed.close()
            loader.close()
        print(f"best: synthetic {best['synthetic']:.1f} images/s, fed {best['fed']:.1f} images/s, "
              f"fed / synthetic {best['fed'] / best['synthetic']:.2f}")
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
