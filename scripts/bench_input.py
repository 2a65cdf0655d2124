#!/usr/bin/env python
"""Input-pipeline throughput: DataLoader images/s over an image folder, for 0..CPUs worker processes.

    python scripts/bench_input.py                   # a temporary folder, removed at the end
    python scripts/bench_input.py --dir /tmp/jpegs  # kept (and reused by the next run)

Writes a folder of ``--images`` (400) 500x375 JPEGs (Pillow, quality 90) in 4 class folders,
then reads it as ``folder:DIR`` does (``ImageFolder``) with the AlexNet training augmentation
(``RandomResizedCrop(227)``, ``RandomHorizontalFlip()``, ``ToUint8CHW()`` from
``xpnet.data.augment``; without that module, a plain resize to 227), batches of 64, and measures
images/s for ``num_workers`` = 0, 1, ... up to the CPUs this process may use. Batches stay uint8
through the upload (as with ``NormalizeOnDevice``; ``--normalize`` adds it, computed on the
backend). Next to it, measured in the same run on one core: the decode rate of the chosen decoder
(``xpnet.data.decoder_name()``) and the rate of one whole sample (decode + augmentation). The
ratio columns compare the loader with N times those single-core rates (N = max(1, num_workers)):
1.0 would be perfect scaling. The ceiling column is what N independent processes decoding and
augmenting the folder at the same moment reach together (no loader at all): the most any loader
with N workers can deliver on this machine, which two hyperthreads of one core, or a busy host,
keep under N times the one-core rate; the last column is the loader against it. Other jobs on the
machine lower every figure; repeat to be sure.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import xpnet  # noqa: E402
from xpnet import data  # noqa: E402

WIDTH, HEIGHT, CLASSES = 500, 375, 4


def make_folder(root, count, quality=90, seed=0):
    """``count`` JPEGs of WIDTH x HEIGHT in CLASSES class folders: smooth random colour fields with
    noise (a photograph-like size and decode cost, not a flat image). Existing files are reused."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    made = 0
    for index in range(count):
        folder = os.path.join(root, f"class{index % CLASSES}")
        path = os.path.join(folder, f"{index:05d}.jpg")
        if os.path.exists(path):
            continue
        os.makedirs(folder, exist_ok=True)
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((WIDTH, HEIGHT), Image.BICUBIC), dtype=np.float32)
        pixels = np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(path, "JPEG", quality=quality)
        made += 1
    return made


def pipeline(size):
    """(per-sample transform or None, description): the AlexNet augmentation when it exists."""
    if importlib.util.find_spec("xpnet.data.augment") is None:
        return None, f"plain resize to {size} (xpnet.data.augment not found)"
    from xpnet.data import augment

    transform = augment.Compose([augment.RandomResizedCrop(size), augment.RandomHorizontalFlip(),
                                 augment.ToUint8CHW()])
    return transform, f"RandomResizedCrop({size}) + RandomHorizontalFlip + ToUint8CHW"


def open_folder(root, size, transform):
    if transform is None:
        return data.ImageFolder(root, size=size)
    return data.ImageFolder(root, transform=transform)


def decoder_label():
    name = getattr(data, "decoder_name", None)
    return name() if name is not None else "Pillow (ImageFolder.load)"


def single_core_rates(dataset, repeats):
    """(decode-only images/s, decode + augmentation images/s) in this process, on one core."""
    count = len(dataset)
    decode = getattr(dataset, "decode", None) or dataset.load
    best_decode = best_sample = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(count):
            decode(i)
        best_decode = min(best_decode, time.perf_counter() - start)
        start = time.perf_counter()
        sample = getattr(dataset, "sample", None)
        for i in range(count):
            if sample is not None:
                sample(i, np.random.default_rng(i))
            else:
                dataset[i]
        best_sample = min(best_sample, time.perf_counter() - start)
    return count / best_decode, count / best_sample


def _samples_in_child(dataset, barrier, out, slot):
    """One child of parallel_ceiling: decode + augment every image once after the barrier."""
    barrier.wait()
    start = time.perf_counter()
    sample = getattr(dataset, "sample", None)
    for i in range(len(dataset)):
        if sample is not None:
            sample(i, np.random.default_rng(i))
        else:
            dataset[i]
    out[slot] = time.perf_counter() - start


def parallel_ceiling(dataset, n):
    """Images/s of ``n`` independent processes each decoding and augmenting the whole folder at once
    (no loader, no batches, nothing shared): what this machine gives ``n`` such jobs in parallel,
    the ceiling for any loader with ``n`` workers (cores that share a physical core, or a busy host,
    keep it under ``n`` times the one-core rate)."""
    import multiprocessing as mp

    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    barrier, out = ctx.Barrier(n), ctx.Array("d", n)
    children = [ctx.Process(target=_samples_in_child, args=(dataset, barrier, out, k)) for k in range(n)]
    for child in children:
        child.start()
    for child in children:
        child.join()
    if any(child.exitcode != 0 for child in children):
        raise RuntimeError("bench_input: a ceiling process failed")
    return n * len(dataset) / max(out[:])


def loader_rate(dataset, workers, batch_size, epochs, device_transform, pin_memory):
    """Images/s of the loader over ``epochs`` timed epochs, after one untimed (workers start)."""
    loader = data.DataLoader(dataset, batch_size=batch_size, shuffle=True, seed=0, num_workers=workers,
                             persistent_workers=workers > 0, device_transform=device_transform,
                             pin_memory=pin_memory)
    try:
        for _ in loader:
            pass
        seen = 0
        start = time.perf_counter()
        for _ in range(epochs):
            for xb, _ in loader:
                seen += xb.shape[0]
        xpnet.get_backend().synchronize()
        return seen / (time.perf_counter() - start)
    finally:
        loader.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None, help="image folder to write (and reuse); default: a temporary one")
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--size", type=int, default=227)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per worker count")
    parser.add_argument("--workers", default=None, help="comma-separated counts (default: 0..CPUs)")
    parser.add_argument("--normalize", action="store_true", help="NormalizeOnDevice after the upload")
    parser.add_argument("--pin-memory", action="store_true", help="page-locked staging (CuPy backend)")
    args = parser.parse_args(argv)

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    counts = [int(w) for w in args.workers.split(",")] if args.workers else list(range(cpus + 1))
    root = args.dir or tempfile.mkdtemp(prefix="xpnet-bench-input-")
    try:
        start = time.perf_counter()
        made = make_folder(root, args.images)
        print(f"folder {root}: {args.images} JPEGs of {WIDTH}x{HEIGHT}, quality 90, {CLASSES} classes "
              f"({made} written in {time.perf_counter() - start:.1f} s)")
        transform, described = pipeline(args.size)
        dataset = open_folder(root, args.size, transform)
        device_transform = None
        if args.normalize:
            device_transform = data.NormalizeOnDevice(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
        elif transform is not None:
            device_transform = _keep_uint8
        print(f"pipeline: {described}; batch {args.batch_size}; backend {xpnet.get_backend()}; "
              f"{cpus} CPUs; uint8 upload: {device_transform is not None}")
        decode_rate, sample_rate = single_core_rates(dataset, repeats=2)
        print(f"one core, {decoder_label()}: decode {decode_rate:.0f} images/s; "
              f"decode + augmentation {sample_rate:.0f} images/s")
        print()
        print(f"{'workers':>8} {'images/s':>10} {'/ (N x decode)':>16} {'/ (N x sample)':>16} "
              f"{'ceiling':>9} {'/ ceiling':>10}")
        for workers in counts:
            rate = loader_rate(dataset, workers, args.batch_size, args.epochs, device_transform, args.pin_memory)
            n = max(1, workers)
            ceiling = parallel_ceiling(dataset, n)
            print(f"{workers:>8} {rate:>10.0f} {rate / (n * decode_rate):>16.2f} {rate / (n * sample_rate):>16.2f} "
                  f"{ceiling:>9.0f} {rate / ceiling:>10.2f}", flush=True)
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


def _keep_uint8(x):
    """A device_transform that does nothing: its presence keeps uint8 batches uint8 (see DataLoader)."""
    return x


if __name__ == "__main__":
    sys.exit(main())
