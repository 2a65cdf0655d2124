"""The embedded 5,000-image MNIST sample (see ``xpnet/data/embedded/PROVENANCE.md``).

Host-side module: it imports NumPy and returns host arrays. The file ships inside the package, so
``xpnet train`` works offline on a fresh machine.
"""

from __future__ import annotations

import numpy as np

from .embedded import MNIST_SAMPLE, resource

MNIST_SAMPLE_CLASSES = [str(d) for d in range(10)]


def load_mnist_sample():
    """``((x_train, y_train), (x_test, y_test))``: 4,000 and 1,000 MNIST digits.

    x: uint8 (N, 1, 28, 28), grey levels 0..255; y: int64 (N,), digits 0..9. The split is stratified
    (400 train and 100 test images per digit) and fixed: it is stored in the file. Images keep the
    file's order (sorted by digit): shuffle when training (``DataLoader(..., shuffle=True)``).
    MNIST is by Yann LeCun, Corinna Cortes and Christopher J.C. Burges, CC BY-SA 3.0.
    """
    with resource(MNIST_SAMPLE).open("rb") as handle:
        with np.load(handle, allow_pickle=False) as archive:
            images = archive["images"]
            labels = archive["labels"].astype(np.int64)
            split = archive["split"]
    images = images[:, None, :, :]
    train, test = split == 0, split == 1
    return (images[train], labels[train]), (images[test], labels[test])
