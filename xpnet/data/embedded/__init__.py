"""Data files that ship inside the package (see PROVENANCE.md and LICENSE.txt here).

Only ``mnist_sample.npz`` lives here now; ``xpnet.data.load_mnist_sample`` reads it. Host-side:
nothing in this package touches a compute backend.
"""

from __future__ import annotations

import importlib.resources

MNIST_SAMPLE = "mnist_sample.npz"


def resource(name: str):
    """A Traversable for a file of this package (works from a wheel as well as a checkout)."""
    return importlib.resources.files(__name__).joinpath(name)
