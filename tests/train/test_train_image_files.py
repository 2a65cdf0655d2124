"""``xpnet train`` on a folder of JPEGs, as an ImageNet user runs it: per-image RandomResizedCrop and
flips for training, a resize and a center crop for the test split, decoded by worker processes; the
same seed gives the same history for every --workers."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from xpnet.cli import main
from xpnet.train.cli import image_transforms

Image = pytest.importorskip("PIL.Image")


def _jpeg_folder(root, per_class=12):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for label, colour in enumerate(((200, 40, 40), (40, 40, 200))):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = np.clip(rng.normal(colour, 30, (30, 40, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:03d}.jpg", quality=90)
    return root


def _history(run_dir):
    with open(run_dir / "history.csv") as f:
        return [dict(row) for row in csv.DictReader(f)]


def test_image_transforms_give_the_side_asked():
    train, test = image_transforms(24, augment=True)
    rng = np.random.default_rng(0)
    img = np.zeros((30, 40, 3), dtype=np.uint8)
    assert train(img, rng).shape == (24, 24, 3)
    assert test(img, rng).shape == (24, 24, 3)


def test_train_on_jpeg_folder_with_workers_repeats_the_in_process_run(tmp_path, capsys):
    data = _jpeg_folder(tmp_path / "images")
    runs = {}
    for workers in (0, 2):
        out = tmp_path / f"run{workers}"
        code = main(["train", "--model", "lenet5", "--dataset", f"folder:{data}", "--image-size", "32",
                     "--epochs", "2", "--batch-size", "8", "--workers", str(workers), "--out", str(out),
                     "--seed", "3"])
        assert code == 0, capsys.readouterr()
        runs[workers] = _history(out)
    timing = ("seconds", "images_per_s")
    first, second = ([{k: v for k, v in row.items() if k not in timing} for row in runs[w]] for w in (0, 2))
    assert first == second and len(first) == 2
